// Topics (ours: /api/topics): the list, and a page per topic with its partitions.
// A broker without the endpoint answers 404, shown as "not available".
import * as api from "../api.js";
import { el, errorNote, fill, link, props, table, unavailableNote } from "../dom.js";

export function mountList(root) {
  const list = el("div", { id: "topics" });
  root.append(el("h1", {}, "Topics"), list);
  async function refresh() {
    const r = await api.get("/api/topics");
    if (api.unavailable(r)) return fill(list, unavailableNote("Topics", r));
    if (!r.ok) return fill(list, errorNote("Topics", r));
    fill(list, table([
      { title: "Virtual host", value: (t) => t.vhost },
      { title: "Name", value: (t) => link(t.name, "#/topics", t.vhost, t.name), key: "name" },
      { title: "Partitions", value: (t) => t.partitions, num: true, key: "partitions" },
      { title: "Partition type", value: (t) => t.partition_type },
    ], r.data, { empty: "No topics." }));
  }
  return { refresh };
}

export function mountOne(root, [vhost, name]) {
  const details = el("div", { id: "topic-details" });
  const parts = el("div", { id: "topic-partitions" });
  root.append(el("h1", {}, `Topic ${name}`, el("small", {}, ` in virtual host ${vhost}`)),
    details, el("h2", {}, "Partitions"), parts);
  async function refresh() {
    const r = await api.get(`/api/topics/${api.seg(vhost)}/${api.seg(name)}`);
    if (r.status === 405) return fill(details, unavailableNote("Topics", r));
    if (!r.ok) return fill(details, errorNote("Topic", r));
    const t = r.data;
    fill(details, el("div", { class: "card" }, props({ partitions: t.partitions,
      partition_type: t.partition_type, arguments: t.arguments })));
    fill(parts, table([
      { title: "Partition", value: (p) => p.partition, num: true },
      { title: "Queue", value: (p) => link(p.name, "#/queues", vhost, p.name), key: "name" },
      { title: "Worker", value: (p) => p.worker, num: true },
      { title: "State", value: (p) => p.state },
      { title: "Ready", value: (p) => p.messages_ready, num: true },
      { title: "Unacked", value: (p) => p.messages_unacknowledged, num: true },
      { title: "Total", value: (p) => p.messages, num: true, key: "messages" },
      { title: "Consumers", value: (p) => p.consumers, num: true },
    ], t.queues || [], { empty: "No partitions." }));
  }
  return { refresh };
}
