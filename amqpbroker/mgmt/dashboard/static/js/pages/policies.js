// Policies: the user policies and the operator policies of every virtual host the user may
// see, a form that sets one (PUT: adds it or replaces the one of that name, as RabbitMQ's
// "Add / update a policy"), and a delete button per row. The broker validates every body
// (policies.py) and the form shows its refusal as it words it; an operator policy is an
// administrator's, so a policymaker sees the list and gets the broker's 401 from the form.
import * as api from "../api.js";
import { el, errorNote, fill, table } from "../dom.js";
import { action, dangerButton, field, jsonObject, report } from "./forms.js";
import { vhostNames } from "./queues.js";

const KINDS = [
  { path: "policies", id: "policies", title: "User policies", what: "policy",
    empty: "No policies.", applyTo: ["all", "queues", "exchanges"] },
  { path: "operator-policies", id: "operator-policies", title: "Operator policies",
    what: "operator policy", empty: "No operator policies.",
    applyTo: ["queues", "all", "exchanges"] },
];

const pathOf = (kind, vhost, name) => `/api/${kind.path}/${api.seg(vhost)}/${api.seg(name)}`;

function columns(kind, out, onDone) {
  return [
    { title: "Virtual host", value: (p) => p.vhost },
    { title: "Name", value: (p) => p.name, key: "name" },
    { title: "Pattern", value: (p) => p.pattern, key: "pattern" },
    { title: "Apply to", value: (p) => p["apply-to"], key: "apply-to" },
    { title: "Definition", value: (p) => JSON.stringify(p.definition), key: "definition" },
    { title: "Priority", value: (p) => p.priority, num: true, key: "priority" },
    { title: "", value: (p) => dangerButton(null, "Delete", `Delete the ${kind.what} '${p.name}'?`,
        "DELETE", pathOf(kind, p.vhost, p.name), out, `Deleted the ${kind.what} '${p.name}'.`,
        onDone) },
  ];
}

function policyForm(vhosts, onDone) {
  const kind = el("select", { name: "kind" },
    KINDS.map((k, i) => el("option", { value: String(i) }, k.what)));
  const vhost = el("select", { name: "vhost" }, vhosts.map((v) => el("option", { value: v }, v)));
  const name = el("input", { name: "name", required: true });
  const pattern = el("input", { name: "pattern", required: true, placeholder: "^orders\\." });
  const applyTo = el("select", { name: "apply-to" });
  const priority = el("input", { type: "number", name: "priority", value: "0" });
  const definition = el("textarea", { name: "definition",
    placeholder: '{"max-length": 1000, "overflow": "reject-publish"}' });
  const showApplyTo = () => fill(applyTo,
    KINDS[Number(kind.value)].applyTo.map((a) => el("option", { value: a }, a)));
  kind.addEventListener("change", showApplyTo);
  showApplyTo();
  return action("set-policy", "Add / update a policy", [
    field("Kind", kind), field("Virtual host", vhost), field("Name", name),
    field("Pattern (regular expression)", pattern), field("Apply to", applyTo),
    field("Priority", priority), field("Definition (JSON)", definition),
  ], "Set policy", async (out) => {
    const k = KINDS[Number(kind.value)];
    const body = { pattern: pattern.value, "apply-to": applyTo.value,
                   priority: Number(priority.value) || 0,
                   definition: jsonObject(definition.value, "Definition") };
    const r = await api.call("PUT", pathOf(k, vhost.value, name.value), body);
    report(out, r, r.status === 201 ? `Set the ${k.what} '${name.value}'.`
      : `Updated the ${k.what} '${name.value}'.`, { name: `Setting the ${k.what}` });
    if (r.ok) onDone();
  });
}

export function mount(root) {
  const lists = KINDS.map((k) => el("div", { id: k.id }));
  const out = el("div", { class: "result", id: "policies-result" });
  const forms = el("div", { class: "forms" });
  root.append(el("h1", {}, "Policies"),
    ...KINDS.flatMap((k, i) => [el("h2", {}, k.title), lists[i]]), out, forms);
  let refresh;
  vhostNames().then((names) => forms.append(policyForm(names, () => refresh())));
  refresh = async () => {
    for (const [i, k] of KINDS.entries()) {
      const r = await api.get(`/api/${k.path}`);
      if (!r.ok) fill(lists[i], errorNote(k.title, r));
      else fill(lists[i], table(columns(k, out, () => refresh()), r.data, { empty: k.empty }));
    }
  };
  return { refresh };
}
