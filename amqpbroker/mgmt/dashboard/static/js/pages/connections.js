// Connections and channels, as /api/connections and /api/channels list them.
import * as api from "../api.js";
import { el, errorNote, fill, fmtBool, table, unavailableNote } from "../dom.js";

function client(c) {
  const p = c.client_properties || {};
  return [p.product, p.version].filter(Boolean).join(" ") || "–";
}

function closeButton(c, out, onDone) {
  return el("button", { type: "button", class: "danger", onclick: async () => {
    if (!window.confirm(`Close the connection ${c.name}?`)) return;
    const r = await api.call("DELETE", `/api/connections/${api.seg(c.name)}`);
    if (r.ok) { fill(out, el("p", { class: "ok" }, `Closed ${c.name}.`)); onDone(); } else if (api.unavailable(r)) {
      fill(out, el("p", { class: "error unavailable" },
        `Closing connections is not available from this broker (${r.status} ${r.reason}).`));
    } else fill(out, el("p", { class: "error" }, `Closing failed: ${r.status} ${r.reason}`));
  } }, "Close");
}

export function mountConnections(root) {
  const list = el("div", { id: "connections" });
  const out = el("div", { class: "result" });
  root.append(el("h1", {}, "Connections"), list, out);
  async function refresh() {
    const r = await api.get("/api/connections");
    if (!r.ok) return fill(list, errorNote("Connections", r));
    fill(list, table([
      { title: "Name", value: (c) => c.name, key: "name" },
      { title: "User", value: (c) => c.user, key: "user" },
      { title: "Virtual host", value: (c) => c.vhost },
      { title: "Client", value: client, key: "client" },
      { title: "Channels", value: (c) => c.channels, num: true, key: "channels" },
      { title: "TLS", value: (c) => fmtBool(c.ssl) },
      { title: "Auth", value: (c) => c.auth_mechanism },
      { title: "State", value: (c) => c.state ?? "running" },
      { title: "", value: (c) => closeButton(c, out, refresh) },
    ], r.data, { empty: "No connections." }));
  }
  return { refresh };
}

export function mountChannels(root) {
  const list = el("div", { id: "channels" });
  root.append(el("h1", {}, "Channels"), list);
  async function refresh() {
    const r = await api.get("/api/channels");
    if (api.unavailable(r)) return fill(list, unavailableNote("Channels", r));
    if (!r.ok) return fill(list, errorNote("Channels", r));
    fill(list, table([
      { title: "Channel", value: (c) => c.name, key: "name" },
      { title: "User", value: (c) => c.user },
      { title: "Virtual host", value: (c) => c.vhost },
      { title: "Mode", value: (c) => [c.confirm ? "confirm" : "", c.transactional ? "transactional" : ""]
        .filter(Boolean).join(", ") || "–" },
      { title: "Consumers", value: (c) => c.consumer_count, num: true },
      { title: "Prefetch", value: (c) => c.prefetch_count, num: true },
      { title: "Unacked", value: (c) => c.messages_unacknowledged, num: true },
      { title: "State", value: (c) => c.state },
    ], r.data, { empty: "No channels." }));
  }
  return { refresh };
}

