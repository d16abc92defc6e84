// The portal's shell: token and role, hash routes, one page module each.
import { api, token, h } from "./api.js";
import { fleetPage } from "./fleet.js";
import { equipmentPage } from "./equipment.js";
import { alarmsPage } from "./alarms.js";
import { bundlesPage } from "./bundles.js";
import { pipelinePage } from "./pipeline.js";
import { reportPage } from "./report.js";

const PAGES = { fleet: fleetPage, equipment: equipmentPage, alarms: alarmsPage, bundles: bundlesPage, pipeline: pipelinePage, report: reportPage };
const view = document.getElementById("view");
let role = "viewer", current = null;

async function whoami() {
  try { role = (await api("/whoami")).role; } catch (e) { role = "refused"; }
  document.getElementById("role").textContent =
    role === "refused" ? "token refused" : role === "anonymous" ? "enter a token to sign in" : `signed in as ${role}`;
}

async function route() {
  if (current && current.stop) current.stop();
  const [, name = "fleet", ...rest] = location.hash.split("/");
  const page = PAGES[name] || fleetPage;
  const section = { equipment: "fleet", report: "bundles" }[name] || name;  // where each detail page is reached from
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === section) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (role === "anonymous" || role === "refused") {
    view.replaceChildren(h("h1", {}, "Sign in"), h("p", {}, "This server needs a token to read: enter yours above."));
    document.getElementById("token").focus();
    current = null;
    return;
  }
  view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  const ctx = { role, args: rest.map(decodeURIComponent), view };
  try { current = await page(ctx); } catch (e) { view.replaceChildren(h("p", { class: "error" }, e.message)); current = null; }
  document.title = `serve-ml — ${name}`;
}

document.getElementById("token").value = token.get();
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  token.set(document.getElementById("token").value.trim());
  await whoami();
  route();
});
window.addEventListener("hashchange", route);
await whoami();
route();
