// The equipment page's parts that stand alone: the verdict with class probabilities
// and the RUL band, one live chart per raw sensor against its warning/critical levels,
// and the history from the aggregates over a chosen range.
import { api, h, when } from "./api.js";
import { LiveChart } from "./chart.js";

const LEVELS = ["warning_min", "warning_max", "critical_min", "critical_max"];

// ``limits``: the equipment's effective thresholds (GET /equipment/{id}/thresholds).
export function sensorLevels(limits) {
  const of = (sensor) => ((limits && limits.thresholds) || {})[sensor]?.limits || {};
  const level = (sensor, v) => {
    const l = of(sensor);
    if ((l.critical_max !== undefined && v > l.critical_max) || (l.critical_min !== undefined && v < l.critical_min)) return "critical";
    if ((l.warning_max !== undefined && v > l.warning_max) || (l.warning_min !== undefined && v < l.warning_min)) return "warning";
    return LEVELS.some((k) => l[k] !== undefined) ? "normal" : null;
  };
  const describe = (sensor) => {
    const l = of(sensor);
    const part = (lo, hi) => (lo !== undefined && hi !== undefined ? `outside ${lo}…${hi}`
      : hi !== undefined ? `> ${hi}` : lo !== undefined ? `< ${lo}` : null);
    const w = part(l.warning_min, l.warning_max), c = part(l.critical_min, l.critical_max);
    return [w && `warning ${w}`, c && `critical ${c}`].filter(Boolean).join(", ");
  };
  return { of, level, describe };
}

// The latest verdict: version, anomalies, the newest reading's fault label, what the
// classifier said last (``classified``: kept across messages by the page, since behind
// a gate it runs on flagged readings only) with its classes' probabilities, highest
// first, and RUL with its band and unit when the bundle has a head.
export function renderVerdict(el, m, classified) {
  const last = m.last || {};
  const probs = Object.entries((classified && classified.fault_probabilities) || {}).sort((a, b) => b[1] - a[1]);
  const rul = last.rul === null || last.rul === undefined ? null : last.rul;
  const band = last.rul_band;
  el.replaceChildren(...[
    h("dt", {}, "version"), h("dd", {}, m.model_version),
    h("dt", {}, "anomalies"), h("dd", {}, `${m.anomalies} of ${m.n}`),
    h("dt", {}, "fault"), h("dd", { id: "eq-fault" }, last.fault_label ?? "—",
      last.classifier === "gate_passed" ? h("small", { class: "muted" }, " the gate passed it: not classified") : null),
    classified ? [h("dt", {}, "last classified"), h("dd", { id: "eq-classified", "data-label": classified.fault_label },
      classified.fault_label, " ", h("small", { class: "muted" }, `at ${new Date(classified.t_ms).toLocaleTimeString()}`))] : null,
    probs.length ? [h("dt", {}, "probabilities"), h("dd", {}, h("ul", { id: "eq-probabilities", class: "plain" },
      ...probs.slice(0, 6).map(([name, p]) => h("li", { "data-class": name },
        h("meter", { min: 0, max: 1, value: p, "aria-label": `${name} probability` }), ` ${name} ${(p * 100).toFixed(1)} %`))))] : null,
    h("dt", {}, "RUL"), h("dd", { id: "eq-rul" }, rul === null ? "—"
      : `${rul.toFixed(1)}${band ? ` ${band.unit}` : ""}${band ? ` (band ${band.lower.toFixed(1)} – ${band.upper.toFixed(1)})` : ""}`),
  ].flat().filter(Boolean));
}

// One small live chart per raw sensor, created as sensors first appear.
export class SensorCharts {
  constructor(container, levels) { this.container = container; this.levels = levels; this.charts = new Map(); }
  add(tMs, sensors) {
    for (const [name, values] of Object.entries(sensors || {})) {
      let chart = this.charts.get(name);
      if (!chart) {
        const canvas = h("canvas", { class: "chart small", "data-sensor": name, role: "img",
          "aria-label": `${name}, last two minutes, against its warning and critical levels` });
        this.container.append(h("figure", {}, h("figcaption", {}, name), canvas));
        chart = new LiveChart(canvas, { zero: false });
        const l = this.levels.of(name);
        for (const k of LEVELS) if (l[k] !== undefined) chart.limit(name, l[k], k);
        this.charts.set(name, chart);
      }
      chart.add(name, tMs, values);
    }
  }
  points() { let n = 0; for (const c of this.charts.values()) n += c.points(); return n; }
}

const DAY = 86400e3;
const isoDay = (t) => new Date(t).toISOString().slice(0, 10);

// History from the aggregates: anomaly rate per bucket and one chosen sensor's
// min/avg/max, over a range of days (hourly or daily buckets), with the numbers in a table.
export function historySection(q) {
  const interval = h("select", { id: "agg-interval" }, h("option", { value: "1h" }, "hourly"), h("option", { value: "1d" }, "daily"));
  const from = h("input", { type: "date", id: "agg-from", value: isoDay(Date.now() - DAY) });
  const to = h("input", { type: "date", id: "agg-to", value: isoDay(Date.now()) });
  const sensorSel = h("select", { id: "agg-sensor" });
  const rateCanvas = h("canvas", { class: "chart", id: "eq-history-chart", role: "img", "aria-label": "Anomaly rate per bucket over the chosen range" });
  const sensorCanvas = h("canvas", { class: "chart", id: "eq-history-sensor", role: "img", "aria-label": "The chosen sensor's minimum, average and maximum per bucket" });
  const table = h("table", { id: "eq-history" });
  const note = h("p", { class: "muted", id: "agg-note" });
  let buckets = [];
  let latest = 0; // answers can arrive out of order: only the newest request may draw

  const drawSensor = () => {
    const chart = new LiveChart(sensorCanvas, { zero: false });
    const s = sensorSel.value, t = buckets.map((b) => Date.parse(b.bucket));
    for (const k of ["min", "avg", "max"]) chart.add(`${s} ${k}`, t, buckets.map((b) => b.sensors?.[s]?.[k] ?? null));
    chart.setSpan(...span());
  };
  const span = () => [Date.parse(from.value), Date.parse(to.value) + DAY];
  async function load() {
    const [start, end] = span();
    const mine = ++latest, every = interval.value;
    if (!(start < end)) { note.textContent = "the range must start before it ends"; return; }
    try {
      const agg = await api(`/equipment/${q}/aggregates`, { query: { interval: every, start: new Date(start).toISOString(), end: new Date(end).toISOString() } });
      if (mine !== latest) return;
      buckets = agg.buckets;
      note.textContent = `${buckets.length} ${every === "1h" ? "hourly" : "daily"} buckets, ${when(agg.start)} – ${when(agg.end)}`;
      const rate = new LiveChart(rateCanvas, { unit: " %" });
      rate.add("anomaly rate", buckets.map((b) => Date.parse(b.bucket)), buckets.map((b) => (b.anomaly_rate === null ? null : b.anomaly_rate * 100)));
      rate.setSpan(start, end);
      const sensors = [...new Set(buckets.flatMap((b) => Object.keys(b.sensors || {})))].sort();
      const chosen = sensors.includes(sensorSel.value) ? sensorSel.value : sensors[0];
      sensorSel.replaceChildren(...sensors.map((s) => h("option", { value: s, selected: s === chosen }, s)));
      drawSensor();
      table.replaceChildren(h("tr", {}, h("th", {}, "bucket"), h("th", {}, "readings"), h("th", {}, "anomalies"), h("th", {}, "anomaly rate")),
        ...buckets.slice(-48).reverse().map((b) => h("tr", {}, h("td", {}, when(b.bucket)), h("td", {}, b.readings ?? "—"), h("td", {}, b.anomalies ?? "—"),
          h("td", {}, b.anomaly_rate === null ? "—" : `${(b.anomaly_rate * 100).toFixed(2)} %`))));
    } catch (e) {
      if (mine !== latest) return;
      note.textContent = ""; table.replaceChildren(h("tr", {}, h("td", { class: "error" }, e.message))); }
  }
  interval.addEventListener("change", () => {
    if (interval.value === "1d") from.value = isoDay(Date.now() - 30 * DAY);
    else from.value = isoDay(Date.now() - DAY);
    load();
  });
  for (const el of [from, to]) el.addEventListener("change", load);
  sensorSel.addEventListener("change", drawSensor);
  const section = h("section", { "aria-labelledby": "h-history" }, h("h2", { id: "h-history" }, "History"),
    h("div", { class: "filters" }, h("label", { for: "agg-interval" }, "Buckets ", interval), h("label", { for: "agg-from" }, "From ", from),
      h("label", { for: "agg-to" }, "To ", to), h("label", { for: "agg-sensor" }, "Sensor ", sensorSel)),
    note, rateCanvas, sensorCanvas, h("details", {}, h("summary", {}, "The numbers (latest 48 buckets)"), table));
  return { section, load };
}
