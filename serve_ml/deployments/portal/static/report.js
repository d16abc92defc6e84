// A bundle version's report: each gate's held-out reconstruction errors (normal and
// fault rows) against its threshold, the RUL fit, held-out metrics and provenance.
import { api, h } from "./api.js";

function histogram(canvas, hist) {
  const g = canvas.getContext("2d"), w = (canvas.width = 560), ht = (canvas.height = 220), pad = 30;
  const n = hist.normal.length, top = Math.max(1, ...hist.normal, ...hist.fault);
  const lo = Math.log(hist.edges[0]), hi = Math.log(hist.edges[n]);
  const x = (v) => pad + ((Math.log(v) - lo) / (hi - lo)) * (w - pad - 8), y = (c) => ht - 20 - (c / top) * (ht - 40);
  g.font = "11px system-ui";
  for (const [counts, colour] of [[hist.normal, "rgba(11,87,208,.55)"], [hist.fault, "rgba(179,38,30,.55)"]]) {
    g.fillStyle = colour;
    counts.forEach((c, i) => { const x0 = x(hist.edges[i]), x1 = x(hist.edges[i + 1]); g.fillRect(x0, y(c), Math.max(1, x1 - x0 - 1), ht - 20 - y(c)); });
  }
  g.strokeStyle = "#222"; g.setLineDash([5, 4]); g.beginPath(); g.moveTo(x(hist.threshold), 8); g.lineTo(x(hist.threshold), ht - 20); g.stroke(); g.setLineDash([]);
  g.fillStyle = "#222";
  g.fillText(`threshold ${hist.threshold.toPrecision(3)}`, Math.min(x(hist.threshold) + 4, w - 110), 18);
  g.fillText(hist.edges[0].toPrecision(2), pad, ht - 5); g.fillText(hist.edges[n].toPrecision(2), w - 50, ht - 5);
  g.fillText("blue: normal rows, red: fault rows (log scale)", pad + 60, ht - 5);
}

function scatter(canvas, rul) {
  const g = canvas.getContext("2d"), w = (canvas.width = 360), ht = (canvas.height = 300), pad = 30;
  const top = Math.max(1, ...rul.truth, ...rul.predicted);
  const x = (v) => pad + (v / top) * (w - pad - 8), y = (v) => ht - 20 - (v / top) * (ht - 30);
  g.strokeStyle = "#999"; g.beginPath(); g.moveTo(x(0), y(0)); g.lineTo(x(top), y(top)); g.stroke();
  g.fillStyle = "rgba(11,87,208,.5)";
  rul.truth.forEach((t, i) => g.fillRect(x(t) - 1.5, y(rul.predicted[i]) - 1.5, 3, 3));
  g.fillStyle = "#222"; g.font = "11px system-ui";
  g.fillText(`truth (${rul.unit}) →`, w - 110, ht - 5); g.fillText(`predicted, up to ${top.toPrecision(3)}`, 2, 12);
}

const table = (obj) => h("table", {}, ...Object.entries(obj).map(([k, v]) =>
  h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)))));

export async function reportPage({ view, args }) {
  const [eq, power, version] = args;
  if (!version) throw new Error("name a bundle as #/report/<equipment>/<power>/<version>");
  const r = await api(`/bundles/${encodeURIComponent(eq)}/${encodeURIComponent(power)}/${encodeURIComponent(version)}/report`);
  const { metrics = {}, ...provenance } = r.provenance || {};
  const figures = [];
  for (const [name, hist] of Object.entries((r.evaluation && r.evaluation.modalities) || {})) {
    const c = h("canvas", { class: "figure", "data-gate": name, role: "img",
      "aria-label": `Gate ${name}: held-out errors of normal and fault rows against the threshold ${hist.threshold}` });
    histogram(c, hist);
    figures.push(h("figure", {}, c, h("figcaption", {}, `Gate ${name}`)));
  }
  if (r.evaluation && r.evaluation.rul && r.evaluation.rul.truth.length) {
    const c = h("canvas", { class: "figure", id: "rul-fit", role: "img", "aria-label": "RUL predicted against truth on held-out units" });
    scatter(c, r.evaluation.rul);
    figures.push(h("figure", {}, c, h("figcaption", {}, "RUL on units the head never saw")));
  }
  view.replaceChildren(h("h1", { id: "report" }, `${eq} / ${power} / ${version}`, r.live ? (r.pinned ? " — live (pinned)" : " — live") : ""),
    h("p", {}, h("a", { href: "#/bundles" }, "← all bundles")),
    h("h2", {}, "Held-out figures"),
    figures.length ? h("div", { class: "cards" }, figures)
      : h("p", { class: "muted" }, "This bundle records no held-out errors (no evaluation.json)."),
    h("h2", {}, "Metrics (held out)"), table(metrics),
    h("h2", {}, "Provenance"), table(provenance),
    h("h2", {}, "Gates"), table(Object.fromEntries(Object.entries(r.modalities).map(([n, m]) => [n, `threshold ${m.threshold}; ${m.features.join(", ")}`]))),
    h("p", { class: "muted" }, `sha256 ${r.sha256}`));
  return null;
}
