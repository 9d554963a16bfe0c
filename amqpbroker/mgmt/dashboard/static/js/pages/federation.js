// Federation: the status of every federation link (/api/federation-links, RabbitMQ's
// "Federation Status") with a Restart button per link, the upstreams
// (/api/parameters/federation-upstream, RabbitMQ's "Federation Upstreams") with a Delete
// button each, and a form that defines or changes an upstream (its value as JSON). What is
// federated is a policy (the Policies page). The broker checks every upstream and the form
// shows its refusal as it words it.
import * as api from "../api.js";
import { el, errorNote, fill, table, unavailableNote } from "../dom.js";
import { action, dangerButton, field, jsonObject, report } from "./forms.js";
import { vhostNames } from "./queues.js";

const upstreamPath = (u) =>
  `/api/parameters/federation-upstream/${api.seg(u.vhost)}/${api.seg(u.name)}`;

function linkColumns(out, onDone) {
  return [
    { title: "Virtual host", value: (l) => l.vhost },
    { title: "Federated", value: (l) => `${l.type} ${l.name}`, key: "federated" },
    { title: "Upstream", value: (l) => l.upstream, key: "upstream" },
    { title: "URI", value: (l) => l.uri },
    { title: "State", value: (l) => (l.error ? `${l.status}: ${l.error}` : l.status),
      key: "state" },
    { title: "Since", value: (l) => l.timestamp },
    { title: "", value: (l) => dangerButton(null, "Restart",
        `Restart the link of ${l.type} '${l.name}' from '${l.upstream}'?`, "DELETE",
        `/api/federation-links/vhost/${api.seg(l.vhost)}/${api.seg(l.id)}/${api.seg(l.node)}/restart`,
        out, `Restarted the link of ${l.type} '${l.name}'.`, onDone) },
  ];
}

function upstreamColumns(out, onDone) {
  return [
    { title: "Virtual host", value: (u) => u.vhost },
    { title: "Name", value: (u) => u.name, key: "name" },
    { title: "URI", value: (u) => [u.value.uri].flat().join(", "), key: "uri" },
    { title: "Value", value: (u) => JSON.stringify(u.value) },
    { title: "", value: (u) => dangerButton(null, "Delete",
        `Delete the upstream '${u.name}'?`, "DELETE", upstreamPath(u), out,
        `Deleted the upstream '${u.name}'.`, onDone) },
  ];
}

function upstreamForm(vhosts, onDone) {
  const vhost = el("select", { name: "vhost" }, vhosts.map((v) => el("option", { value: v }, v)));
  const name = el("input", { name: "name", required: true });
  const value = el("textarea", { name: "value", placeholder:
    '{"uri": "amqp://user:pass@rabbit-host/%2F", "max-hops": 1, "ack-mode": "on-confirm"}' });
  return action("set-upstream", "Add / update an upstream", [
    field("Virtual host", vhost), field("Name", name), field("Value (JSON)", value),
  ], "Set upstream", async (out) => {
    const parsed = jsonObject(value.value, "Value");
    const r = await api.call("PUT", upstreamPath({ vhost: vhost.value, name: name.value }),
      { value: parsed });
    report(out, r, r.status === 201 ? `Set the upstream '${name.value}'.`
      : `Updated the upstream '${name.value}'.`, { name: "Setting the upstream" });
    if (r.ok) onDone();
  });
}

export function mount(root) {
  const links = el("div", { id: "federation-links" });
  const upstreams = el("div", { id: "federation-upstreams" });
  const out = el("div", { class: "result", id: "federation-result" });
  const forms = el("div", { class: "forms" });
  root.append(el("h1", {}, "Federation"), el("h2", {}, "Links"), links,
    el("h2", {}, "Upstreams"), upstreams, out, forms);
  let refresh;
  vhostNames().then((names) => forms.append(upstreamForm(names, () => refresh())));
  refresh = async () => {
    const [l, u] = await Promise.all([api.get("/api/federation-links"),
      api.get("/api/parameters/federation-upstream")]);
    if (l.status === 404) fill(links, unavailableNote("Federation", l));
    else if (!l.ok) fill(links, errorNote("Federation links", l));
    else {
      const rows = l.data.map((x) => ({ ...x, name: x.exchange ?? x.queue }));
      fill(links, table(linkColumns(out, () => refresh()), rows,
        { empty: "No links: a policy with federation-upstream, federation-upstream-set or federation-upstream-pattern federates exchanges and queues." }));
    }
    if (!u.ok) fill(upstreams, errorNote("Federation upstreams", u));
    else fill(upstreams, table(upstreamColumns(out, () => refresh()), u.data,
      { empty: "No upstreams." }));
  };
  return { refresh };
}
