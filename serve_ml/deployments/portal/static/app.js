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

// Each render gets a box of its own inside #view: a page still loading for the previous
// token or hash then fills a box no longer shown, and never lands over the newer page.
// #view's data-role and data-page say what the shown box was rendered for.
async function route() {
  if (current && current.stop) current.stop();
  current = null;
  const box = h("div");
  view.replaceChildren(box);
  delete view.dataset.role;
  delete view.dataset.page;
  const [, name = "fleet", ...rest] = location.hash.split("/");
  const page = PAGES[name] || fleetPage;
  const section = { equipment: "fleet", report: "bundles" }[name] || name;  // where each detail page is reached from
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === section) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const shown = () => view.firstChild === box;
  const as = role;
  if (as === "anonymous" || as === "refused") {
    box.replaceChildren(h("h1", {}, "Sign in"), h("p", {}, "This server needs a token to read: enter yours above."));
    document.getElementById("token").focus();
  } else {
    box.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    let loaded = null;
    try { loaded = await page({ role: as, args: rest.map(decodeURIComponent), view: box }); }
    catch (e) { box.replaceChildren(h("p", { class: "error" }, e.message)); }
    if (!shown()) {  // a newer route took the view meanwhile
      if (loaded && loaded.stop) loaded.stop();
      return;
    }
    current = loaded;
  }
  document.title = `serve-ml — ${name}`;
  Object.assign(view.dataset, { role: as, page: name });
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
