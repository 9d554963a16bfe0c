// Queues: the list with a declare form, and a page per queue (depth over time, rates when
// the broker reports them, consumers, bindings, publish / get / purge / delete).
import * as api from "../api.js";
import { History, LineChart } from "../linechart.js";
import { el, errorNote, fill, fmtBool, fmtBytes, fmtRate, link, props, rate, table,
         unavailableNote } from "../dom.js";
import { dangerButton, declareForm, getForm, publishForm, stoppableRefresh } from "./forms.js";

const COLUMNS = [
  { title: "Virtual host", value: (q) => q.vhost },
  { title: "Name", value: (q) => link(q.name, "#/queues", q.vhost, q.name), key: "name" },
  { title: "Type", value: (q) => q.type },
  { title: "State", value: (q) => q.state, key: "state" },
  { title: "Ready", value: (q) => q.messages_ready, num: true, key: "messages_ready" },
  { title: "Unacked", value: (q) => q.messages_unacknowledged, num: true, key: "messages_unacknowledged" },
  { title: "Total", value: (q) => q.messages, num: true, key: "messages" },
  { title: "Consumers", value: (q) => q.consumers, num: true, key: "consumers" },
  { title: "Policy", value: (q) => policies(q), key: "policy" },
  { title: "Incoming", value: (q) => fmtRate(rate(q.message_stats, "publish")), num: true },
  { title: "Deliver / get", value: (q) => fmtRate(rate(q.message_stats, "deliver_get")), num: true },
  { title: "Ack", value: (q) => fmtRate(rate(q.message_stats, "ack")), num: true },
];

// its policy, and its operator policy when it has one (policies.py)
function policies(q) {
  const op = q.operator_policy ? `operator: ${q.operator_policy}` : "";
  return [q.policy || "", op].filter(Boolean).join(", ");
}

export async function vhostNames() {
  const r = await api.get("/api/vhosts");
  return r.ok ? r.data.map((v) => v.name) : ["/"];
}

export function mountList(root) {
  const list = el("div", { id: "queues" });
  const forms = el("div", { class: "forms" });
  root.append(el("h1", {}, "Queues"), list, forms);
  let refresh;
  vhostNames().then((names) => forms.append(declareForm("queues", names, () => refresh())));
  refresh = async () => {
    const r = await api.get("/api/queues");
    if (!r.ok) return fill(list, errorNote("Queues", r));
    fill(list, table(COLUMNS, r.data, { empty: "No queues." }));
  };
  return { refresh };
}

export function mountOne(root, [vhost, name]) {
  const path = `/api/queues/${api.seg(vhost)}/${api.seg(name)}`;
  const details = el("div", { id: "queue-details" });
  const depth = new History();
  const rates = new History();
  const depthChart = new LineChart("Queued messages", [
    { key: "ready", label: "Ready" }, { key: "unacked", label: "Unacked" }]);
  const rateChart = new LineChart("Message rates", [
    { key: "publish", label: "Publish" }, { key: "deliver_get", label: "Deliver / get" },
    { key: "ack", label: "Ack" }, { key: "redeliver", label: "Redeliver" }], { unit: "/s" });
  const rateBox = el("div");
  const consumers = el("div", { id: "queue-consumers" });
  const bindings = el("div", { id: "queue-bindings" });
  const dangerOut = el("div", { class: "result", id: "queue-danger-result" });
  const live = stoppableRefresh(draw);
  root.append(
    el("h1", {}, `Queue ${name}`, el("small", {}, ` in virtual host ${vhost}`)),
    details, el("div", { class: "charts" }, depthChart.node, rateBox),
    el("h2", {}, "Consumers"), consumers, el("h2", {}, "Bindings"), bindings,
    el("h2", {}, "Messages"),
    el("div", { class: "forms" }, publishForm(vhost, "", name), getForm(vhost, name),
      el("div", { class: "card" }, el("strong", {}, "Purge or delete"), el("p", {},
        dangerButton("purge", "Purge messages", `Purge every ready message of '${name}'?`,
          "DELETE", `${path}/contents`, dangerOut, "Queue purged.", () => live.refresh()), " ",
        dangerButton("delete", "Delete queue", `Delete the queue '${name}' and its messages?`,
          "DELETE", path, dangerOut, "Queue deleted.", () => { location.hash = "#/queues"; },
          live.stop)),
      dangerOut)));

  async function draw() {
    const r = await api.get(path);
    if (!r.ok) return fill(details, r.status === 404
      ? el("p", { class: "error" }, `There is no queue '${name}' in virtual host '${vhost}'.`)
      : errorNote("Queue", r));
    const q = r.data;
    const totals = [
      ["State", q.state, "state"], ["Ready", q.messages_ready, "messages_ready"],
      ["Unacked", q.messages_unacknowledged, "messages_unacknowledged"],
      ["Total", q.messages, "messages"], ["Consumers", q.consumers, "consumers"],
      ["Ready bytes", fmtBytes(q.message_bytes_ready), "message_bytes_ready"],
    ];
    // a quorum queue's dead letters held until their targets confirm (at-least-once)
    if (q.messages_dlx !== undefined) {
      totals.push(["Dead letters held", q.messages_dlx, "messages_dlx"]);
    }
    const about = { type: q.type, durable: fmtBool(q.durable),
      auto_delete: fmtBool(q.auto_delete), exclusive: fmtBool(q.exclusive), node: q.node,
      worker: q.worker, arguments: q.arguments, policy: q.policy || "–",
      operator_policy: q.operator_policy || "–", effective_policy_definition: q.effective_policy_definition };
    if (Array.isArray(q.members)) {           // a cluster: its replicas
      about.leader = q.leader || "–";
      about.members = q.members.join(", ");
      about.online = (q.online || []).join(", ");
    }
    fill(details, el("div", { class: "totals" }, totals.map(([label, v, key]) =>
      el("div", { class: "total", dataset: { total: key } },
        el("div", { class: "value" }, v ?? "–"), el("div", { class: "label" }, label)))),
    el("div", { class: "card" }, props(about)));
    depth.add({ ready: q.messages_ready, unacked: q.messages_unacknowledged });
    depthChart.draw(depth);
    if (q.message_stats) {
      const s = {};
      for (const { key } of rateChart.series) s[key] = rate(q.message_stats, key);
      rates.add(s);
      rateChart.draw(rates);
      if (!rateBox.contains(rateChart.node)) fill(rateBox, rateChart.node);
    } else {
      fill(rateBox, el("div", { class: "chart unavailable" },
        "Message rates: not reported by this broker yet (no message_stats)."));
    }
    if (Array.isArray(q.consumer_details)) {
      fill(consumers, table([
        { title: "Channel", value: (c) => (c.channel_details || {}).name },
        { title: "Consumer tag", value: (c) => c.consumer_tag },
        { title: "Ack required", value: (c) => fmtBool(c.ack_required) },
        { title: "Exclusive", value: (c) => fmtBool(c.exclusive) },
        { title: "Prefetch", value: (c) => c.prefetch_count, num: true },
        { title: "Active", value: (c) => fmtBool(c.active) },
      ], q.consumer_details, { empty: "No consumers." }));
    } else {
      fill(consumers, el("p", { class: "unavailable" },
        `${q.consumers ?? 0} consumer(s); this broker does not list their details yet.`));
    }
    const b = await api.get(`${path}/bindings`);
    if (api.unavailable(b)) return fill(bindings, unavailableNote("Bindings", b));
    if (!b.ok) return fill(bindings, errorNote("Bindings", b));
    fill(bindings, table([
      { title: "From", value: (x) => x.source || "(default exchange)" },
      { title: "Routing key", value: (x) => x.routing_key },
      { title: "Arguments", value: (x) => JSON.stringify(x.arguments || {}) },
    ], b.data, { empty: "No bindings." }));
  }
  return { refresh: live.refresh };
}
