// Equipment: live scores against thresholds over a WebSocket, the latest verdict and
// readings, hourly/daily history from the aggregates, its bundle and its alarms.
import { api, badge, h, socket, when } from "./api.js";
import { LiveChart } from "./chart.js";

export async function equipmentPage({ view, args }) {
  const id = args[0];
  if (!id) throw new Error("no equipment named in the address");
  const q = encodeURIComponent(id);
  const [status, bundles, alarms, limits] = await Promise.all([
    api(`/equipment/${q}/status`).catch(() => null),
    api("/bundles", { query: { equipment_id: id } }),
    api("/alarms", { query: { equipment_id: id, limit: 20 } }),
    api(`/equipment/${q}/thresholds`).catch(() => null),
  ]);
  const statusEl = h("span", { id: "eq-status" }, badge(status ? status.status : "no_data"));
  const reasons = h("ul", { id: "eq-reasons" });
  const verdict = h("dl", { id: "eq-verdict" });
  const sensors = h("dl", { id: "eq-sensors" });
  const liveState = h("span", { class: "muted", id: "eq-live" }, "connecting…");
  const canvas = h("canvas", { class: "chart", id: "eq-chart", role: "img", "aria-label": "Anomaly score per modality against its threshold, last two minutes" });
  const chart = new LiveChart(canvas);
  const received = h("span", { id: "eq-points" }, "0");
  let messages = 0;

  const showReasons = (rs) => (rs && rs.length ? reasons.replaceChildren(...rs.map((r) =>
    h("li", {}, badge(r.level === "critical" ? "critical" : "warning"), " ", r.type, r.sensor ? ` ${r.sensor}` : "",
      r.value !== undefined ? ` = ${Number(r.value).toPrecision(4)}` : "")))
    : reasons.replaceChildren(h("li", { class: "muted" }, "nothing out of bounds")));
  showReasons(status && status.reasons);

  const live = bundles.bundles.filter((b) => b.live);
  const history = h("table", { id: "eq-history" });
  const intervalSel = h("select", { id: "agg-interval" }, h("option", { value: "1h" }, "hourly, last 24 h"), h("option", { value: "1d" }, "daily, last 30 days"));
  async function loadHistory() {
    const interval = intervalSel.value;
    const start = new Date(Date.now() - (interval === "1h" ? 86400e3 : 30 * 86400e3)).toISOString();
    try {
      const agg = await api(`/equipment/${q}/aggregates`, { query: { interval, start } });
      history.replaceChildren(h("tr", {}, h("th", {}, "bucket"), h("th", {}, "readings"), h("th", {}, "anomalies")),
        ...agg.buckets.slice(-48).reverse().map((b) => h("tr", {}, h("td", {}, when(b.bucket)), h("td", {}, b.readings ?? b.count ?? "—"), h("td", {}, b.anomalies ?? "—"))));
    } catch (e) { history.replaceChildren(h("tr", {}, h("td", { class: "error" }, e.message))); }
  }
  intervalSel.addEventListener("change", loadHistory);

  view.replaceChildren(
    h("h1", {}, id, " ", statusEl),
    h("div", { class: "cards" },
      h("section", { class: "card", "aria-labelledby": "h-why" }, h("h2", { id: "h-why" }, "Why"), reasons),
      h("section", { class: "card", "aria-labelledby": "h-verdict" }, h("h2", { id: "h-verdict" }, "Latest verdict"), verdict),
      h("section", { class: "card", "aria-labelledby": "h-sensors" }, h("h2", { id: "h-sensors" }, "Last readings"), sensors),
      h("section", { class: "card", "aria-labelledby": "h-bundle" }, h("h2", { id: "h-bundle" }, "Bundle"),
        live.length ? h("dl", {}, ...live.flatMap((b) => [h("dt", {}, b.power), h("dd", {}, `${b.model_version} ${b.pinned ? "(pinned)" : "(newest)"}`)]))
          : h("p", { class: "muted" }, "no bundle serves it"))),
    h("h2", {}, "Live scores ", liveState, " — messages: ", received),
    canvas,
    h("h2", {}, "History"), h("label", { for: "agg-interval" }, "Range ", intervalSel), history,
    h("h2", {}, "Alarms"),
    alarms.alarms.length ? h("table", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "type"), h("th", {}, "severity"), h("th", {}, "state"), h("th", {}, "opened")),
      ...alarms.alarms.map((a) => h("tr", {}, h("td", {}, h("a", { href: `#/alarms/${a.id}` }, a.id)), h("td", {}, a.type), h("td", {}, badge(a.severity)), h("td", {}, a.state), h("td", {}, when(a.opened_at)))))
      : h("p", { class: "muted" }, "no alarms"),
  );
  loadHistory();
  const sensorLimits = (limits && limits.thresholds) || {};
  const level = (sensor, v) => {
    const l = (sensorLimits[sensor] || {}).limits || {};
    if ((l.critical_max !== undefined && v > l.critical_max) || (l.critical_min !== undefined && v < l.critical_min)) return "critical";
    if ((l.warning_max !== undefined && v > l.warning_max) || (l.warning_min !== undefined && v < l.warning_min)) return "warning";
    return l.warning_max !== undefined || l.warning_min !== undefined || l.critical_max !== undefined || l.critical_min !== undefined ? "normal" : null;
  };
  const range = (sensor) => {
    const l = (sensorLimits[sensor] || {}).limits || {};
    const part = (lo, hi) => (lo !== undefined && hi !== undefined ? `outside ${lo}…${hi}`
      : hi !== undefined ? `> ${hi}` : lo !== undefined ? `< ${lo}` : null);
    const w = part(l.warning_min, l.warning_max), c = part(l.critical_min, l.critical_max);
    return [w && `warning ${w}`, c && `critical ${c}`].filter(Boolean).join(", ");
  };

  const ws = socket(`/ws/equipment/${q}`, (m) => {
    if (m.type !== "verdicts") return;
    messages++;
    received.textContent = String(messages);
    statusEl.replaceChildren(badge(m.status));
    showReasons(m.reasons);
    for (const [name, vals] of Object.entries(m.points.modalities || {})) chart.add(name, m.points.t_ms, vals);
    if (!Object.keys(m.points.modalities || {}).length) chart.add("score", m.points.t_ms, m.points.score);
    for (const [name, t] of Object.entries(m.thresholds || {})) chart.limit(name, t);
    verdict.replaceChildren(h("dt", {}, "version"), h("dd", {}, m.model_version), h("dt", {}, "anomalies"), h("dd", {}, `${m.anomalies} of ${m.n}`),
      h("dt", {}, "fault"), h("dd", {}, m.last.fault_label ?? "—"), h("dt", {}, "RUL"), h("dd", {}, m.last.rul === null ? "—" : m.last.rul.toFixed(1)));
    sensors.replaceChildren(...Object.entries(m.last.sensors).flatMap(([k, v]) => {
      const lv = level(k, v);
      return [h("dt", {}, k), h("dd", {}, Number(v).toPrecision(5), " ", lv ? badge(lv) : null, range(k) ? h("small", { class: "muted" }, ` ${range(k)}`) : null)];
    }));
  }, (s) => { liveState.textContent = s; });
  return { stop: () => ws.close(), chart };
}
