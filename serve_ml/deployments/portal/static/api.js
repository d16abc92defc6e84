// The HTTP API and its WebSockets, with the token the user gave (kept for this tab only).
export const PREFIX = "/api/v1/serve-ml";
const KEY = "serve-ml-token";

export const token = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (t) => (t ? sessionStorage.setItem(KEY, t) : sessionStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// `accept`: error statuses whose JSON body the caller reads instead of an ApiError.
export async function api(path, { method = "GET", body, query, accept = [] } = {}) {
  const url = new URL(PREFIX + path, location.origin);
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  const headers = {};
  if (token.get()) headers.Authorization = `Bearer ${token.get()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch { doc = null; }
  if (!r.ok && !accept.includes(r.status)) throw new ApiError(r.status, (doc && doc.message) || `${r.status} ${r.statusText}`);
  return doc;
}

// Browsers cannot set headers on a WebSocket: the token goes as the first message.
export function socket(path, onMessage, onState) {
  let ws, closed = false, retry = 500;
  const open = () => {
    ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${PREFIX}${path}`);
    ws.onopen = () => { retry = 500; ws.send(JSON.stringify({ token: token.get() })); onState && onState("live"); };
    ws.onmessage = (ev) => { try { onMessage(JSON.parse(ev.data)); } catch (e) { console.warn("bad message", e); } };
    ws.onclose = (ev) => {
      if (closed) return;
      onState && onState(ev.code === 4401 ? "refused: token" : "reconnecting");
      if (ev.code !== 4401 && ev.code !== 1011) setTimeout(open, (retry = Math.min(retry * 2, 10000)));
    };
  };
  open();
  return { close: () => { closed = true; ws && ws.close(); } };
}

export const can = { operate: (role) => role === "operator" || role === "admin", manage: (role) => role === "admin" };

// Build elements node by node (never from HTML strings), so nothing from the API is ever parsed as markup.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

const ICONS = { normal: "●", warning: "▲", critical: "■", no_data: "○", major: "■", minor: "▲" };
export const LABELS = { normal: "normal", warning: "warning", critical: "critical", no_data: "no data" };
export function badge(status) {
  return h("span", { class: `badge b-${status}` }, `${ICONS[status] || ""} ${LABELS[status] || status}`);
}

export function toast(text) {
  const el = h("div", {}, text);
  document.getElementById("toast").append(el);
  setTimeout(() => el.remove(), 5000);
}

export function when(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }
