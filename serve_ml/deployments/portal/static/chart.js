// A small canvas line chart: enough for live scores against thresholds, raw sensors
// against their warning/critical levels and history from the aggregates, with no
// library to ship. Redraws at most once per animation frame, however fast points arrive.
const COLOURS = ["#0b57d0", "#8e24aa", "#00897b", "#ef6c00", "#6d4c41", "#3949ab"];
// A limit line's look by kind; the legend says which is which, so colour is not the only signal.
const LIMITS = {
  threshold: { dash: [5, 4], colour: null, label: "- - threshold" },
  warning: { dash: [6, 3], colour: "#b06000", label: "- - warning" },
  critical: { dash: [2, 2], colour: "#c5221f", label: "··· critical" },
};

export class LiveChart {
  // zero: the value axis starts at 0 (scores); false fits it to the data (a temperature near 300 K).
  // span: a fixed [tMin, tMax] instead of a window ending at the newest point (history).
  constructor(canvas, { windowMs = 120000, maxPoints = 3000, zero = true, unit = "" } = {}) {
    this.canvas = canvas; this.windowMs = windowMs; this.maxPoints = maxPoints; this.zero = zero; this.unit = unit;
    this.series = new Map(); this.limits = new Map(); this.pending = false; this.frames = 0; this.span = null;
  }
  add(name, ts, values) {
    let s = this.series.get(name);
    if (!s) this.series.set(name, (s = { t: [], v: [], colour: COLOURS[this.series.size % COLOURS.length] }));
    for (let i = 0; i < ts.length; i++) if (values[i] !== null && values[i] !== undefined) { s.t.push(ts[i]); s.v.push(values[i]); }
    const excess = s.t.length - this.maxPoints;
    if (excess > 0) { s.t.splice(0, excess); s.v.splice(0, excess); }
    this.schedule();
  }
  // A horizontal line for series ``name`` (kind: threshold, or warning/critical with an
  // optional _min/_max suffix); null removes it.
  limit(name, value, kind = "threshold") {
    const key = `${name}\u0000${kind}`;
    if (value === null || value === undefined) this.limits.delete(key); else this.limits.set(key, { name, value, kind });
    this.schedule();
  }
  clear() { this.series.clear(); this.schedule(); }
  setSpan(tMin, tMax) { this.span = [tMin, tMax]; this.schedule(); }
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
    let tMin, tMax;
    if (this.span) [tMin, tMax] = this.span;
    else {
      // the window ends at the newest point; until it is full it starts at the oldest
      tMax = 0;
      let tFirst = Infinity;
      for (const s of this.series.values()) if (s.t.length) { tMax = Math.max(tMax, s.t[s.t.length - 1]); tFirst = Math.min(tFirst, s.t[0]); }
      tMin = Math.max(tMax - this.windowMs, tFirst === Infinity ? tMax - this.windowMs : tFirst);
    }
    let vMin = this.zero ? 0 : Infinity, vMax = this.zero ? 0 : -Infinity;
    for (const s of this.series.values()) {
      for (let i = 0; i < s.t.length; i++) if (s.t[i] >= tMin && s.t[i] <= tMax) { vMin = Math.min(vMin, s.v[i]); vMax = Math.max(vMax, s.v[i]); }
    }
    for (const l of this.limits.values()) { vMin = Math.min(vMin, l.value); vMax = Math.max(vMax, l.value); }
    if (!Number.isFinite(vMin) || !Number.isFinite(vMax)) { vMin = 0; vMax = 1; }
    const headroom = (vMax - vMin) * 0.1 || Math.abs(vMax) * 0.1 || 1;
    vMax += headroom;
    if (!this.zero) vMin -= headroom;
    const pad = 44, tSpan = Math.max(tMax - tMin, 1);
    const x = (t) => pad + ((t - tMin) / tSpan) * (w - pad - 6), y = (v) => hgt - 16 - ((v - vMin) / (vMax - vMin)) * (hgt - 28);
    g.font = "11px system-ui"; g.fillStyle = "#555";
    g.fillText(`${vMax.toPrecision(4)}${this.unit}`, 2, 12); g.fillText(`${vMin.toPrecision(4)}${this.unit}`, 2, hgt - 16);
    let legend = pad;
    const kinds = new Set();
    for (const [name, s] of this.series) {
      g.strokeStyle = s.colour; g.lineWidth = 1.5; g.beginPath();
      let started = false, shown = 0;
      for (let i = 0; i < s.t.length; i++) {
        if (s.t[i] < tMin || s.t[i] > tMax) continue;
        started ? g.lineTo(x(s.t[i]), y(s.v[i])) : g.moveTo(x(s.t[i]), y(s.v[i]));
        started = true;
        shown++;
      }
      g.stroke();
      if (shown <= 48) { // few points (hourly history): each one visible, even alone
        g.fillStyle = s.colour;
        for (let i = 0; i < s.t.length; i++) {
          if (s.t[i] < tMin || s.t[i] > tMax) continue;
          g.beginPath(); g.arc(x(s.t[i]), y(s.v[i]), 2.5, 0, 2 * Math.PI); g.fill();
        }
      }
      for (const l of this.limits.values()) {
        if (l.name !== name) continue;
        const kind = l.kind.split("_")[0]; // warning_min and warning_max look alike
        const look = LIMITS[kind] || LIMITS.threshold;
        kinds.add(kind);
        g.strokeStyle = look.colour || s.colour; g.setLineDash(look.dash);
        g.beginPath(); g.moveTo(pad, y(l.value)); g.lineTo(w - 6, y(l.value)); g.stroke(); g.setLineDash([]);
      }
      g.fillStyle = s.colour; g.fillText(name, legend, hgt - 3);
      legend += g.measureText(name).width + 16;
    }
    g.fillStyle = "#555";
    const key = [...kinds].map((k) => (LIMITS[k] || LIMITS.threshold).label).join(", ");
    if (key) g.fillText(`(${key})`, legend, hgt - 3);
  }
  points() { let n = 0; for (const s of this.series.values()) n += s.t.length; return n; }
}
