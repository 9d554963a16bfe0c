// The management API as the pages use it. Credentials live in sessionStorage (gone when the
// tab closes) and go out in our own Authorization header with credentials: "omit": the
// browser neither caches them nor prompts on a 401, and no cookie is ever involved.
const KEY = "amqpbroker.credentials";
const listeners = new Set();

function basic(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return "Basic " + btoa(bin);
}

export function loggedIn() { return sessionStorage.getItem(KEY) !== null; }

export function logout() {
  sessionStorage.removeItem(KEY);
  for (const f of listeners) f();
}

/** Call f when the session ends (log out, or the API refuses the stored credentials). */
export function onLogout(f) { listeners.add(f); }

/** Quote one path segment ("/" is %2F), as RabbitMQ's paths want. */
export const seg = (s) => encodeURIComponent(s);

async function send(method, path, body, authorization) {
  const headers = { Authorization: authorization };
  const init = { method, headers, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    return { status: 0, ok: false, data: null, reason: `the broker did not answer (${err.message})` };
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  const reason = data && typeof data === "object" && data.reason ? data.reason : resp.statusText;
  return { status: resp.status, ok: resp.ok, data, reason };
}

/** Check credentials against /api/whoami; keep them only if the broker accepts them. */
export async function login(user, password) {
  const auth = basic(user, password);
  const r = await send("GET", "/api/whoami", undefined, auth);
  if (r.ok) sessionStorage.setItem(KEY, auth);
  return r;
}

/** One API call: {status, ok, data, reason}. A 401 on stored credentials ends the session. */
export async function call(method, path, body) {
  const auth = sessionStorage.getItem(KEY);
  if (auth === null) return { status: 401, ok: false, data: null, reason: "Not logged in" };
  const r = await send(method, path, body, auth);
  if (r.status === 401 && r.data && r.data.error === "not_authorized") logout();
  return r;
}

export const get = (path) => call("GET", path);

/** A 404 on a list path or a 405: the broker does not offer this (yet). */
export const unavailable = (r) => r.status === 404 || r.status === 405;
