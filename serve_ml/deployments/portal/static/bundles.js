// Bundles: versions per equipment and power class, which is live or pinned, the change
// history with reasons; activate, roll back, unpin, upload and sync for admins.
import { api, can, h, toast, token, PREFIX, when } from "./api.js";

export async function bundlesPage({ view, role }) {
  const body = h("div", { id: "bundles" });
  const hist = h("table", { id: "bundle-history" });
  const admin = can.manage(role);
  const upload = admin ? h("form", { id: "upload", class: "filters", onsubmit: async (ev) => {
    ev.preventDefault();
    const file = ev.target.elements.archive.files[0];
    if (!file) return;
    const r = await fetch(`${PREFIX}/bundles/upload`, { method: "POST", body: file,
      headers: { Authorization: `Bearer ${token.get()}`, "Content-Type": "application/gzip" } });
    const doc = await r.json().catch(() => ({}));
    toast(r.ok ? `installed ${doc.installed}` : `upload refused: ${doc.message || r.status}`);
    load();
  } }, h("label", { for: "archive" }, "Bundle archive (.tar.gz)", h("input", { id: "archive", name: "archive", type: "file", accept: ".gz,.tgz" })),
    h("button", { type: "submit" }, "Upload"),
    h("button", { type: "button", id: "sync", onclick: async () => { try { const r = await api("/sync", { method: "POST" }); toast(`sync: ${r.added.length} added, ${r.removed.length} removed`); load(); } catch (e) { toast(e.message); } } }, "Rescan bundle root")) : null;
  view.replaceChildren(...[h("h1", {}, "Bundles"), upload, body].filter(Boolean), h("h2", {}, "Change history"), hist);

  async function change(b, action) {
    const reason = prompt(`${action} ${b.equipment_id}/${b.power}${action === "activate" ? ` → ${b.model_version}` : ""}: reason`) ?? null;
    if (reason === null) return;
    try {
      const path = `/bundles/${encodeURIComponent(b.equipment_id)}/${encodeURIComponent(b.power)}/${action}`;
      await api(path, { method: "POST", body: action === "activate" ? { model_version: b.model_version, reason } : { reason } });
      toast(`${action}: done`);
    } catch (e) { toast(`${action} refused: ${e.message}`); }
    load();
  }

  async function load() {
    const doc = await api("/bundles");
    const groups = new Map();
    for (const b of doc.bundles) {
      const k = `${b.equipment_id}/${b.power}`;
      groups.has(k) || groups.set(k, []);
      groups.get(k).push(b);
    }
    body.replaceChildren(h("table", {},
      h("tr", {}, ...["equipment / power", "version", "live", "modalities", "classifier", ""].map((c) => h("th", {}, c))),
      ...[...groups.entries()].flatMap(([k, bs]) => bs.map((b) => h("tr", { "data-bundle": `${k}/${b.model_version}` },
        h("td", {}, k), h("td", {}, h("a", { href: `#/report/${[b.equipment_id, b.power, b.model_version].map(encodeURIComponent).join("/")}`,
          title: "the version's report" }, b.model_version)),
        h("td", {}, b.live ? (b.pinned ? "✔ live (pinned)" : "✔ live (newest)") : "—"),
        h("td", {}, Object.keys(b.modalities).join(", ")), h("td", {}, b.classifier ? b.classifier.classes.join(", ") : "—"),
        h("td", {}, admin ? h("div", { class: "actions" },
          b.live ? null : h("button", { type: "button", class: "activate", onclick: () => change(b, "activate") }, "Activate"),
          b.live ? h("button", { type: "button", onclick: () => change(b, "rollback") }, "Roll back") : null,
          b.live && b.pinned ? h("button", { type: "button", onclick: () => change(b, "unpin") }, "Unpin") : null) : ""))))));
    hist.replaceChildren(h("tr", {}, ...["when", "action", "equipment / power", "from", "to", "reason"].map((c) => h("th", {}, c))),
      ...doc.history.slice().reverse().map((e) => h("tr", {}, h("td", {}, when(new Date(e.at * 1000).toISOString())), h("td", {}, e.action),
        h("td", {}, `${e.equipment_id}/${e.power}`), h("td", {}, e.from ?? "—"), h("td", {}, e.to ?? "—"), h("td", {}, e.reason || ""))));
  }
  await load();
  return null;
}
