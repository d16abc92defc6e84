// Fleet: the location tree with each node's worst status, and a tile per equipment.
// Polled; tiles are updated in place (keyed by id), never re-rendered wholesale.
import { api, badge, h, LABELS } from "./api.js";

const POLL_MS = 1000;

export async function fleetPage({ view }) {
  const filters = { location: "", type: "", status: "" };
  const tiles = new Map();
  const grid = h("div", { class: "tiles", id: "tiles", "aria-live": "off" });
  const tree = h("nav", { class: "tree", "aria-label": "Locations" });
  const count = h("p", { class: "muted", id: "fleet-count" });
  const typeSel = h("select", { id: "f-type", onchange: (e) => { filters.type = e.target.value; paint(); } }, h("option", { value: "" }, "all"));
  const statusSel = h("select", { id: "f-status", onchange: (e) => { filters.status = e.target.value; paint(); } },
    h("option", { value: "" }, "all"), ...Object.entries(LABELS).map(([v, l]) => h("option", { value: v }, l)));
  view.replaceChildren(
    h("h1", {}, "Fleet"),
    h("div", { class: "filters" },
      h("label", { for: "f-type" }, "Type", typeSel),
      h("label", { for: "f-status" }, "Status", statusSel)),
    count,
    h("div", { class: "layout" }, tree, grid));

  let last = null, timer = null, stopped = false, rendered = false;
  const types = new Set();

  function paintTree(node) {
    const pressed = filters.location === node.path;
    const label = `${node.name || "All locations"} — ${LABELS[node.status]}, ${node.active_alarms} active alarm${node.active_alarms === 1 ? "" : "s"}`;
    return h("li", {},
      h("button", { type: "button", "aria-pressed": String(pressed), "data-path": node.path, title: label,
                    onclick: () => { filters.location = node.path; paint(); } },
        badge(node.status), " ", node.name || "All locations", node.active_alarms ? ` (${node.active_alarms}⚠)` : ""),
      node.children.length ? h("ul", {}, node.children.map(paintTree)) : null);
  }

  function tileOf(eq) {
    let t = tiles.get(eq.equipment_id);
    if (!t) {
      const a = h("a", { class: "tile", href: `#/equipment/${encodeURIComponent(eq.equipment_id)}`, "data-id": eq.equipment_id });
      t = { el: a, key: "" };
      tiles.set(eq.equipment_id, t);
    }
    const key = `${eq.status}|${eq.active_alarms}|${eq.name}`;
    if (t.key !== key) {
      t.key = key;
      t.el.className = `tile st-${eq.status}`;
      t.el.dataset.status = eq.status;
      t.el.replaceChildren(h("span", { class: "id" }, eq.equipment_id), badge(eq.status),
        h("small", {}, eq.active_alarms ? `${eq.active_alarms} active alarm${eq.active_alarms === 1 ? "" : "s"}` : "no active alarm"),
        eq.name ? h("small", {}, eq.name) : null);
    }
    return t.el;
  }

  function paint() {
    if (!last) return;
    tree.replaceChildren(h("ul", {}, paintTree(last.tree)));
    const shown = last.equipment.filter((e) =>
      (!filters.location || (e.registered ? e.location.join("/") + "/" : "(unregistered)/").startsWith(filters.location + "/"))
      && (!filters.type || e.type === filters.type) && (!filters.status || e.status === filters.status));
    const els = shown.map(tileOf);
    // Move nodes only when the order changed: a steady fleet costs no layout at all.
    if (els.length !== grid.children.length || els.some((el, i) => grid.children[i] !== el)) grid.replaceChildren(...els);
    count.textContent = `${shown.length} of ${last.equipment.length} equipment`;
    if (!rendered) {  // for the render benchmark: the first frame with every tile laid out
      rendered = true;
      requestAnimationFrame(() => performance.mark("serve-ml:fleet-rendered", { detail: { tiles: els.length } }));
    }
  }

  async function poll() {
    try {
      last = await api("/status");
      for (const e of last.equipment) if (e.type && !types.has(e.type)) { types.add(e.type); typeSel.append(h("option", { value: e.type }, e.type)); }
      paint();
    } catch (e) {
      count.textContent = `status unavailable: ${e.message}`;
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  await poll();
  return { stop: () => { stopped = true; clearTimeout(timer); } };
}
