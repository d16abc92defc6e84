// A small canvas line chart: enough for live scores against thresholds, with no library
// to ship. Redraws at most once per animation frame, however fast points arrive.
const COLOURS = ["#0b57d0", "#8e24aa", "#00897b", "#ef6c00", "#6d4c41", "#3949ab"];

export class LiveChart {
  constructor(canvas, { windowMs = 120000, maxPoints = 3000 } = {}) {
    this.canvas = canvas; this.windowMs = windowMs; this.maxPoints = maxPoints;
    this.series = new Map(); this.limits = new Map(); this.pending = false; this.frames = 0;
  }
  add(name, ts, values) {
    let s = this.series.get(name);
    if (!s) this.series.set(name, (s = { t: [], v: [], colour: COLOURS[this.series.size % COLOURS.length] }));
    for (let i = 0; i < ts.length; i++) if (values[i] !== null && values[i] !== undefined) { s.t.push(ts[i]); s.v.push(values[i]); }
    const excess = s.t.length - this.maxPoints;
    if (excess > 0) { s.t.splice(0, excess); s.v.splice(0, excess); }
    this.schedule();
  }
  limit(name, value) { this.limits.set(name, value); this.schedule(); }
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }
  draw() {
    this.frames++;
    this.canvas.dataset.points = String(this.points());
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, hgt = c.clientHeight;
    if (c.width !== w * dpr) { c.width = w * dpr; c.height = hgt * dpr; }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, hgt);
    let tMax = 0;
    for (const s of this.series.values()) if (s.t.length) tMax = Math.max(tMax, s.t[s.t.length - 1]);
    const tMin = tMax - this.windowMs;
    let vMax = 0;
    for (const s of this.series.values()) for (let i = 0; i < s.t.length; i++) if (s.t[i] >= tMin) vMax = Math.max(vMax, s.v[i]);
    for (const v of this.limits.values()) vMax = Math.max(vMax, v * 1.1);
    vMax = vMax || 1;
    const pad = 28, x = (t) => pad + ((t - tMin) / this.windowMs) * (w - pad - 6), y = (v) => hgt - 16 - (v / vMax) * (hgt - 28);
    g.font = "11px system-ui"; g.fillStyle = "#555";
    g.fillText(vMax.toPrecision(3), 2, 12); g.fillText("0", 2, hgt - 16);
    let legend = pad;
    for (const [name, s] of this.series) {
      g.strokeStyle = s.colour; g.lineWidth = 1.5; g.beginPath();
      let started = false;
      for (let i = 0; i < s.t.length; i++) {
        if (s.t[i] < tMin) continue;
        started ? g.lineTo(x(s.t[i]), y(s.v[i])) : g.moveTo(x(s.t[i]), y(s.v[i]));
        started = true;
      }
      g.stroke();
      const lim = this.limits.get(name);
      if (lim !== undefined) { g.setLineDash([5, 4]); g.beginPath(); g.moveTo(pad, y(lim)); g.lineTo(w - 6, y(lim)); g.stroke(); g.setLineDash([]); }
      g.fillStyle = s.colour; g.fillText(`${name}${lim !== undefined ? " (dashed: threshold)" : ""}`, legend, hgt - 3);
      legend += g.measureText(name).width + (lim !== undefined ? 140 : 20);
    }
  }
  points() { let n = 0; for (const s of this.series.values()) n += s.t.length; return n; }
}
