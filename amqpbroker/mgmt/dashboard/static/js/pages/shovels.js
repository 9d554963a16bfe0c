// Shovels: the status of every dynamic shovel (/api/shovels, RabbitMQ's "Shovel Status"),
// a form that defines or changes one (PUT /api/parameters/shovel/..., RabbitMQ's "Add a new
// shovel" with the definition as JSON), and per row Restart and Delete buttons. The broker
// checks every definition and the form shows its refusal as it words it.
import * as api from "../api.js";
import { el, errorNote, fill, table, unavailableNote } from "../dom.js";
import { action, dangerButton, field, jsonObject, report } from "./forms.js";
import { vhostNames } from "./queues.js";

const base = (s) => `/api/shovels/vhost/${api.seg(s.vhost)}/${api.seg(s.name)}`;

const where = (s, end) => {
  const parts = end === "src" ? [s.src_queue, s.src_exchange, s.src_exchange_key]
    : [s.dest_queue, s.dest_exchange, s.dest_exchange_key];
  const uri = s[`${end}_uri`];
  return uri === undefined ? "–" : `${uri} ${parts.filter((p) => p !== undefined).join(" ")}`;
};

function columns(out, onDone) {
  return [
    { title: "Virtual host", value: (s) => s.vhost },
    { title: "Name", value: (s) => s.name, key: "name" },
    { title: "State", value: (s) => (s.reason ? `${s.state}: ${s.reason}` : s.state),
      key: "state" },
    { title: "Source", value: (s) => where(s, "src"), key: "source" },
    { title: "Destination", value: (s) => where(s, "dest"), key: "destination" },
    { title: "Since", value: (s) => s.timestamp },
    { title: "", value: (s) => el("span", {},
        dangerButton(null, "Restart", `Restart the shovel '${s.name}'?`, "DELETE",
          `${base(s)}/restart`, out, `Restarted the shovel '${s.name}'.`, onDone),
        dangerButton(null, "Delete", `Delete the shovel '${s.name}'?`, "DELETE", base(s), out,
          `Deleted the shovel '${s.name}'.`, onDone)) },
  ];
}

function shovelForm(vhosts, onDone) {
  const vhost = el("select", { name: "vhost" }, vhosts.map((v) => el("option", { value: v }, v)));
  const name = el("input", { name: "name", required: true });
  const definition = el("textarea", { name: "definition", placeholder:
    '{"src-uri": "amqp://user:pass@rabbit-host", "src-queue": "jobs", "dest-uri": "amqp://", "dest-queue": "jobs"}' });
  return action("set-shovel", "Add / update a shovel", [
    field("Virtual host", vhost), field("Name", name), field("Definition (JSON)", definition),
  ], "Set shovel", async (out) => {
    const value = jsonObject(definition.value, "Definition");
    const r = await api.call("PUT",
      `/api/parameters/shovel/${api.seg(vhost.value)}/${api.seg(name.value)}`, { value });
    report(out, r, r.status === 201 ? `Set the shovel '${name.value}'.`
      : `Updated the shovel '${name.value}'.`, { name: "Setting the shovel" });
    if (r.ok) onDone();
  });
}

export function mount(root) {
  const list = el("div", { id: "shovels" });
  const out = el("div", { class: "result", id: "shovels-result" });
  const forms = el("div", { class: "forms" });
  root.append(el("h1", {}, "Shovels"), list, out, forms);
  let refresh;
  vhostNames().then((names) => forms.append(shovelForm(names, () => refresh())));
  refresh = async () => {
    const r = await api.get("/api/shovels");
    if (r.status === 404) fill(list, unavailableNote("Shovels", r));
    else if (!r.ok) fill(list, errorNote("Shovels", r));
    else fill(list, table(columns(out, () => refresh()), r.data, { empty: "No shovels." }));
  };
  return { refresh };
}
