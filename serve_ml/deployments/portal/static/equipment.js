// Equipment: live scores against thresholds and each raw sensor against its levels
// over a WebSocket, the latest verdict (fault probabilities, RUL band) and readings,
// history from the aggregates, its bundle and its alarms.
import { api, badge, h, socket, when } from "./api.js";
import { LiveChart } from "./chart.js";
import { SensorCharts, historySection, renderVerdict, sensorLevels } from "./equipment_parts.js";

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
  const levels = sensorLevels(limits);
  const statusEl = h("span", { id: "eq-status" }, badge(status ? status.status : "no_data"));
  const reasons = h("ul", { id: "eq-reasons" });
  const verdict = h("dl", { id: "eq-verdict" });
  const sensors = h("dl", { id: "eq-sensors" });
  const liveState = h("span", { class: "muted", id: "eq-live" }, "connecting…");
  const canvas = h("canvas", { class: "chart", id: "eq-chart", role: "img", "aria-label": "Anomaly score per modality against its threshold, last two minutes" });
  const chart = new LiveChart(canvas);
  const sensorBox = h("div", { class: "sensor-charts", id: "eq-sensor-charts" });
  const sensorCharts = new SensorCharts(sensorBox, levels);
  const received = h("span", { id: "eq-points" }, "0");
  const history = historySection(q);
  let messages = 0;
  let classified = null; // the newest verdict the classifier ran on, of any message so far

  const showReasons = (rs) => (rs && rs.length ? reasons.replaceChildren(...rs.map((r) =>
    h("li", {}, badge(r.level === "critical" ? "critical" : "warning"), " ", r.type, r.sensor ? ` ${r.sensor}` : "",
      r.value !== undefined ? ` = ${Number(r.value).toPrecision(4)}` : "")))
    : reasons.replaceChildren(h("li", { class: "muted" }, "nothing out of bounds")));
  showReasons(status && status.reasons);

  const live = bundles.bundles.filter((b) => b.live);
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
    h("h2", {}, "Live sensors"), sensorBox,
    history.section,
    h("h2", {}, "Alarms"),
    alarms.alarms.length ? h("table", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "type"), h("th", {}, "severity"), h("th", {}, "state"), h("th", {}, "opened")),
      ...alarms.alarms.map((a) => h("tr", {}, h("td", {}, h("a", { href: `#/alarms/${a.id}` }, a.id)), h("td", {}, a.type), h("td", {}, badge(a.severity)), h("td", {}, a.state), h("td", {}, when(a.opened_at)))))
      : h("p", { class: "muted" }, "no alarms"),
  );
  history.load();

  const ws = socket(`/ws/equipment/${q}`, (m) => {
    if (m.type !== "verdicts") return;
    messages++;
    received.textContent = String(messages);
    statusEl.replaceChildren(badge(m.status));
    showReasons(m.reasons);
    for (const [name, vals] of Object.entries(m.points.modalities || {})) chart.add(name, m.points.t_ms, vals);
    if (!Object.keys(m.points.modalities || {}).length) chart.add("score", m.points.t_ms, m.points.score);
    for (const [name, t] of Object.entries(m.thresholds || {})) chart.limit(name, t);
    sensorCharts.add(m.points.t_ms, m.points.sensors);
    if (m.classified && (!classified || m.classified.t_ms >= classified.t_ms)) classified = m.classified;
    renderVerdict(verdict, m, classified);
    sensors.replaceChildren(...Object.entries(m.last.sensors).flatMap(([k, v]) => {
      const lv = levels.level(k, v), range = levels.describe(k);
      return [h("dt", {}, k), h("dd", {}, Number(v).toPrecision(5), " ", lv ? badge(lv) : null, range ? h("small", { class: "muted" }, ` ${range}`) : null)];
    }));
  }, (s) => { liveState.textContent = s; });
  return { stop: () => ws.close(), chart };
}
