// Pipeline: stream health (scorer state, lag, rates, dead letters), the serving
// deployments and their replicas, and the notification delivery log. Polled every few seconds.
import { api, h, when } from "./api.js";

const COLUMNS = ["state", "lag", "consumed", "stored", "readings/s", "dead_lettered", "restarts", "db_errors", "broker_errors"];

export async function pipelinePage({ view }) {
  const summary = h("p", { id: "stream-status" });
  const actors = h("table", { id: "stream-actors" });
  const serving = h("table", { id: "serving" });
  const replicas = h("table", { id: "replicas" });
  const deliveries = h("table", { id: "deliveries" });
  const dead = h("table", { id: "dead-letters" });
  view.replaceChildren(h("h1", {}, "Pipeline"), h("h2", {}, "Stream scorers"), summary, actors,
    h("h2", {}, "Dead letters"), dead, h("h2", {}, "Serving"), serving, replicas,
    h("h2", {}, "Notifications"), deliveries);
  let timer = null, stopped = false;
  const before = new Map();  // actor -> [consumed, ms], for a rate between polls

  async function poll() {
    try {
      // 503 while a scorer is starting or degraded: its body still says which, so show it
      const s = await api("/stream/health", { accept: [503] });
      summary.textContent = `stream: ${s.status}`;
      const now = Date.now();
      actors.replaceChildren(h("tr", {}, h("th", {}, "scorer"), ...COLUMNS.map((c) => h("th", {}, c))),
        ...Object.entries(s.actors || {}).map(([name, a]) => {
          const prev = before.get(name);
          before.set(name, [a.consumed, now]);
          const rate = prev && a.consumed !== undefined ? ((a.consumed - prev[0]) * 1000 / (now - prev[1])).toFixed(1) : "…";
          return h("tr", {}, h("td", {}, name), ...COLUMNS.map((c) => h("td", {}, c === "readings/s" ? rate : (a[c] ?? "—"))));
        }));
    } catch (e) { summary.textContent = `stream health: ${e.message}`; }
    try {
      const r = await fetch("/api/v1/serve-ml/health/ready");
      const d = await r.json();
      serving.replaceChildren(h("tr", {}, h("th", {}, "ready"), h("th", {}, "live bundles"), h("th", {}, "unavailable deployments")),
        h("tr", {}, h("td", {}, d.status), h("td", {}, d.live_bundles ?? "—"), h("td", {}, (d.unavailable_deployments || []).join(", ") || "none")));
    } catch (e) { serving.replaceChildren(h("tr", {}, h("td", { class: "error" }, e.message))); }
    try {
      const rows = (await api("/stream/dead-letters", { query: { limit: 20 } })).dead_letters || [];
      dead.replaceChildren(h("tr", {}, ...["when", "reason", "from", "record"].map((c) => h("th", {}, c))),
        ...rows.map((d) => h("tr", {}, h("td", {}, when(d.at)), h("td", {}, d.reason),
          h("td", {}, `${d.headers.source_topic || "?"}#${d.headers.source_partition ?? "?"}@${d.headers.source_offset ?? "?"}`),
          h("td", { class: "mono" }, d.value_preview + (d.value_bytes > d.value_preview.length ? " …" : "")))));
      if (!rows.length) dead.append(h("tr", {}, h("td", { colspan: 4, class: "muted" }, "nothing refused")));
    } catch (e) { dead.replaceChildren(h("tr", {}, h("td", { class: "muted" }, `dead letters: ${e.message}`))); }
    try {
      const d = await api("/deployments");
      const entries = Object.entries(d.deployments || {});
      replicas.replaceChildren(h("tr", {}, ...["deployment", "status", "replicas"].map((c) => h("th", {}, c))),
        ...entries.map(([name, dep]) => h("tr", {}, h("td", {}, name), h("td", {}, dep.status),
          h("td", {}, Object.entries(dep.replicas).map(([state, n]) => `${n} ${state.toLowerCase()}`).join(", ") || "none"))));
      if (!entries.length) replicas.append(h("tr", {}, h("td", { colspan: 3, class: "muted" }, `no Serve deployments (${d.app})`)));
    } catch (e) { replicas.replaceChildren(h("tr", {}, h("td", { class: "error" }, e.message))); }
    try {
      const rows = (await api("/notifications", { query: { limit: 50 } })).deliveries || [];
      deliveries.replaceChildren(h("tr", {}, ...["created", "sink", "status", "attempts", "last error"].map((c) => h("th", {}, c))),
        ...rows.map((d) => h("tr", {}, h("td", {}, when(d.created_at)), h("td", {}, d.sink), h("td", {}, d.status), h("td", {}, d.attempts), h("td", {}, d.last_error || ""))));
      if (!rows.length) deliveries.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "nothing delivered yet")));
    } catch (e) { deliveries.replaceChildren(h("tr", {}, h("td", { class: "error" }, e.message))); }
    if (!stopped) timer = setTimeout(poll, 3000);
  }
  await poll();
  return { stop: () => { stopped = true; clearTimeout(timer); } };
}
