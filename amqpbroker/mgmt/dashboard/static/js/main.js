// The shell: log in, route #/path to a page, refresh the page on a timer.
// A page is mount(root, params) -> {refresh}: it builds its forms once and refresh() redraws
// its data, so a refresh never wipes what a person is typing.
import * as api from "./api.js";
import { el, fill, flash } from "./dom.js";
import * as overview from "./pages/overview.js";
import * as queues from "./pages/queues.js";
import * as exchanges from "./pages/exchanges.js";
import * as connections from "./pages/connections.js";
import * as topics from "./pages/topics.js";
import * as groups from "./pages/groups.js";
import * as policies from "./pages/policies.js";
import * as shovels from "./pages/shovels.js";
import * as federation from "./pages/federation.js";
import * as admin from "./pages/admin.js";

const ROUTES = [
  [/^\/?$/, overview.mount],
  [/^\/connections$/, connections.mountConnections],
  [/^\/channels$/, connections.mountChannels],
  [/^\/exchanges$/, exchanges.mountList],
  [/^\/exchanges\/([^/]+)\/([^/]*)$/, exchanges.mountOne],
  [/^\/queues$/, queues.mountList],
  [/^\/queues\/([^/]+)\/([^/]+)$/, queues.mountOne],
  [/^\/topics$/, topics.mountList],
  [/^\/topics\/([^/]+)\/([^/]+)$/, topics.mountOne],
  [/^\/groups$/, groups.mountList],
  [/^\/groups\/([^/]+)\/([^/]+)$/, groups.mountOne],
  [/^\/policies$/, policies.mount],
  [/^\/shovels$/, shovels.mount],
  [/^\/federation$/, federation.mount],
  [/^\/admin$/, admin.mount],
];

const main = document.getElementById("main");
let page = null;
let timer = null;
let refreshing = false;

function route() {
  const path = location.hash.replace(/^#/, "") || "/";
  for (const [re, mount] of ROUTES) {
    const m = path.match(re);
    if (m) return { mount, params: m.slice(1).map(decodeURIComponent) };
  }
  return null;
}

async function refresh() {
  if (!page || refreshing) return;
  refreshing = true;
  try { await page.refresh(); } finally { refreshing = false; }
}

function schedule() {
  clearInterval(timer);
  const seconds = Number(document.getElementById("refresh").value);
  if (seconds > 0) timer = setInterval(refresh, seconds * 1000);
}

function show() {
  if (!api.loggedIn()) return showLogin();
  const r = route();
  fill(document.getElementById("flash"));
  for (const a of document.querySelectorAll("nav a")) {
    const target = a.getAttribute("href").slice(1);
    const here = location.hash.slice(1) || "/";
    a.classList.toggle("active", target === "/" ? here === "/" : here.startsWith(target));
  }
  main.replaceChildren();
  if (!r) {
    page = null;
    main.append(el("p", { class: "error" }, `No such page: ${location.hash}`));
    return;
  }
  page = r.mount(main, r.params);
  refresh();
  schedule();
}

function showLogin(message) {
  clearInterval(timer);
  page = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("session").hidden = true;
  const form = document.getElementById("login-template").content.cloneNode(true);
  main.replaceChildren(form);
  if (message) document.getElementById("login-error").textContent = message;
  document.getElementById("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = document.getElementById("login-user").value;
    const r = await api.login(user, document.getElementById("login-password").value);
    if (!r.ok) {
      document.getElementById("login-error").textContent =
        r.status === 401 ? `Login failed: ${r.reason}` : `Login failed: ${r.status} ${r.reason}`;
      return;
    }
    startSession(r.data);
  });
  document.getElementById("login-user").focus();
}

function startSession(me) {
  document.getElementById("nav").hidden = false;
  document.getElementById("session").hidden = false;
  document.getElementById("whoami").textContent =
    `${me.name}${me.tags && me.tags.length ? ` (${[].concat(me.tags).join(", ")})` : ""}`;
  show();
}

api.onLogout(() => showLogin("Logged out."));
document.getElementById("logout").addEventListener("click", () => api.logout());
document.getElementById("refresh").addEventListener("change", schedule);
window.addEventListener("hashchange", show);
window.addEventListener("unhandledrejection", (e) => flash(`Error: ${e.reason}`, "error"));

(async () => {
  if (!api.loggedIn()) return showLogin();
  const r = await api.get("/api/whoami");
  if (r.ok) startSession(r.data);
  else showLogin(r.status === 401 ? "" : `${r.status} ${r.reason}`);
})();
