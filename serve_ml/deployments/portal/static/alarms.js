// Alarms: filters, each alarm's timeline, acknowledge and clear with a comment.
// Buttons are shown only to roles that may use them; the server checks anyway.
import { api, badge, can, h, socket, toast, when } from "./api.js";

const STATES = ["active_unack", "active_ack", "cleared_unack", "cleared_ack"];
const SEVERITIES = ["critical", "major", "minor", "warning"];
const TYPES = ["anomaly", "threshold", "sensor_fault", "rul", "pipeline_fault", "no_data"];

export async function alarmsPage({ view, role, args }) {
  const f = { state: "", severity: "", type: "", location: "", start: "" };
  const table = h("table", { id: "alarms" });
  const detail = h("section", { id: "alarm-detail", "aria-live": "polite" });
  const sel = (name, options) => h("label", { for: `a-${name}` }, name,
    h("select", { id: `a-${name}`, onchange: (e) => { f[name] = e.target.value; load(); } },
      h("option", { value: "" }, "all"), ...options.map((o) => h("option", { value: o }, o))));
  view.replaceChildren(h("h1", {}, "Alarms"),
    h("div", { class: "filters" }, sel("state", STATES), sel("severity", SEVERITIES), sel("type", TYPES),
      h("label", { for: "a-location" }, "location", h("input", { id: "a-location", placeholder: "site-a/hall-1", onchange: (e) => { f.location = e.target.value.trim(); load(); } })),
      h("label", { for: "a-start" }, "opened since", h("input", { id: "a-start", type: "datetime-local", onchange: (e) => { f.start = e.target.value ? new Date(e.target.value).toISOString() : ""; load(); } }))),
    table, detail);

  async function act(id, action, comment) {
    try {
      await api(`/alarms/${id}/${action}`, { method: "POST", body: { comment: comment || null } });
      toast(`alarm ${id}: ${action === "ack" ? "acknowledged" : "cleared"}`);
      await load(); await show(id);
    } catch (e) { toast(`alarm ${id}: ${e.message}`); }
  }

  async function show(id) {
    const a = await api(`/alarms/${id}`);
    const comment = h("input", { id: "alarm-comment", "aria-label": "Comment", placeholder: "comment (kept in the timeline)" });
    const buttons = can.operate(role) ? h("div", { class: "actions" }, comment,
      a.acked_at ? null : h("button", { type: "button", id: "alarm-ack", onclick: () => act(id, "ack", comment.value) }, "Acknowledge"),
      a.status === "open" ? h("button", { type: "button", id: "alarm-clear", onclick: () => act(id, "clear", comment.value) }, "Clear") : null) : null;
    detail.replaceChildren(h("h2", {}, `Alarm ${a.id}: ${a.type} on ${a.equipment_id} `, badge(a.severity)),
      h("p", {}, `state ${a.state}; opened ${when(a.opened_at)}`), buttons,
      h("table", {}, h("tr", {}, h("th", {}, "when"), h("th", {}, "event"), h("th", {}, "by"), h("th", {}, "comment")),
        ...a.timeline.map((e) => h("tr", {}, h("td", {}, when(e.at)), h("td", {}, e.event), h("td", {}, e.actor || "—"), h("td", {}, e.comment || "")))));
  }

  async function load() {
    const rows = (await api("/alarms", { query: { ...f, limit: 200 } })).alarms;
    table.replaceChildren(h("tr", {}, ...["#", "equipment", "type", "severity", "state", "opened", ""].map((c) => h("th", {}, c))),
      ...rows.map((a) => h("tr", { "data-alarm": a.id },
        h("td", {}, a.id), h("td", {}, h("a", { href: `#/equipment/${encodeURIComponent(a.equipment_id)}` }, a.equipment_id)),
        h("td", {}, a.type), h("td", {}, badge(a.severity)), h("td", {}, a.state), h("td", {}, when(a.opened_at)),
        h("td", {}, h("button", { type: "button", onclick: () => show(a.id) }, "Timeline")))));
    if (!rows.length) table.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "no alarm matches")));
  }
  await load();
  if (args[0]) await show(Number(args[0]));
  let pending = null;
  const ws = socket("/ws/alarms", () => { clearTimeout(pending); pending = setTimeout(() => load().catch(() => {}), 300); });
  return { stop: () => { ws.close(); clearTimeout(pending); } };
}
