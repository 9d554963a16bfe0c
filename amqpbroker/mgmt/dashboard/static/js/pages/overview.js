// Overview: totals, queued messages over time (sampled here from queue_totals), message
// rates as the broker reports them in message_stats (none are computed here: a change in
// queue depth is not a publish rate), and the node's processes.
import * as api from "../api.js";
import { History, LineChart } from "../linechart.js";
import { el, errorNote, fill, fmtBytes, fmtNumber, rate, table } from "../dom.js";

const depth = new History();        // kept while the tab lives, across page switches
const rates = new History();
const RATES = [
  { key: "publish", label: "Publish" }, { key: "deliver_get", label: "Deliver / get" },
  { key: "ack", label: "Ack" }, { key: "confirm", label: "Confirm" },
  { key: "redeliver", label: "Redeliver" }, { key: "return_unroutable", label: "Unroutable" },
];

function total(label, value, key) {
  return el("div", { class: "total", dataset: { total: key } },
    el("div", { class: "value" }, fmtNumber(value)), el("div", { class: "label" }, label));
}

export function mount(root) {
  const totals = el("div", { class: "totals" });
  const depthChart = new LineChart("Queued messages", [
    { key: "ready", label: "Ready" }, { key: "unacked", label: "Unacked" },
    { key: "total", label: "Total" }]);
  const rateChart = new LineChart("Message rates", RATES, { unit: "/s" });
  const rateBox = el("div", { id: "rates-chart" });
  const node = el("div");
  const cluster = el("p", { id: "cluster-name", class: "subtitle" });
  root.append(el("h1", {}, "Overview"), cluster, totals,
    el("h2", {}, "Charts"), el("div", { class: "charts" }, depthChart.node, rateBox),
    el("h2", {}, "Node"), node);

  async function refresh() {
    const r = await api.get("/api/overview");
    if (!r.ok) return fill(totals, errorNote("Overview", r));
    const o = r.data, t = o.object_totals || {}, q = o.queue_totals || {};
    fill(cluster, `Cluster ${o.cluster_name}`);     // PUT /api/cluster-name sets it
    const ready = q.messages_ready ?? 0, unacked = q.messages_unacknowledged ?? 0;
    fill(totals,
      total("Connections", t.connections, "connections"), total("Channels", t.channels, "channels"),
      total("Exchanges", t.exchanges, "exchanges"), total("Queues", t.queues, "queues"),
      total("Consumers", t.consumers, "consumers"),
      total("Ready", ready, "messages_ready"), total("Unacked", unacked, "messages_unacknowledged"),
      total("Total", q.messages ?? ready + unacked, "messages"));
    depth.add({ ready, unacked, total: q.messages ?? ready + unacked });
    depthChart.draw(depth);
    if (o.message_stats) {
      const sample = {};
      for (const { key } of RATES) sample[key] = rate(o.message_stats, key);
      rates.add(sample);
      rateChart.draw(rates);
      if (!rateBox.contains(rateChart.node)) fill(rateBox, rateChart.node);
    } else {
      fill(rateBox, el("div", { class: "chart unavailable" },
        "Message rates: not reported by this broker yet (its /api/overview has no message_stats)."));
    }
    const n = await api.get("/api/nodes");
    if (n.status === 401) return fill(node, el("p", { class: "unavailable" },
      "Node details need the monitoring or administrator tag."));
    if (!n.ok) return fill(node, errorNote("Nodes", n));
    fill(node, n.data.map((nd) => el("div", { class: "card" },
      el("strong", {}, nd.name),
      el("p", {}, `memory ${fmtBytes(nd.mem_used)} of ${fmtBytes(nd.mem_limit)} limit` +
        `${nd.mem_alarm ? " (ALARM)" : ""}; disk free ${fmtBytes(nd.disk_free)}` +
        `${nd.disk_free_alarm ? " (ALARM)" : ""}; file descriptors ${nd.fd_used} / ${nd.fd_total}`),
      nd.workers ? table([
        { title: "Worker", value: (w) => w.index, num: true },
        { title: "PID", value: (w) => w.pid, num: true },
        { title: "Running", value: (w) => (w.running ? "yes" : "no") },
        { title: "Restarts", value: (w) => w.restarts, num: true },
      ], nd.workers, { empty: "No worker processes (one-process layout)." }) : null)));
  }
  return { refresh };
}
