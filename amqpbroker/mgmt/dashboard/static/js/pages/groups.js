// Consumer groups (ours: /api/consumer-groups): lag per group, and a page per group with
// its members and, per partition, committed offset, log end offset and lag. The endpoint is
// newer than this page: fields it lacks show as "–", and a 404 as "not available".
import * as api from "../api.js";
import { el, errorNote, fill, link, props, table, unavailableNote } from "../dom.js";

/** The group's partitions, whichever name the API gives the list. */
const partitionsOf = (g) => g.partitions || g.offsets || [];

/** Total lag: the group's own figure, else the sum over its partitions. */
export function lagOf(g) {
  if (typeof g.lag === "number") return g.lag;
  const lags = partitionsOf(g).map((p) => p.lag).filter((v) => typeof v === "number");
  return lags.length ? lags.reduce((a, b) => a + b, 0) : undefined;
}

const memberCount = (g) => (Array.isArray(g.members) ? g.members.length : g.members);
const topicsOf = (g) => [].concat(g.topics ?? g.topic ?? []).join(", ");

export function mountList(root) {
  const list = el("div", { id: "groups" });
  root.append(el("h1", {}, "Consumer groups"), list);
  async function refresh() {
    const r = await api.get("/api/consumer-groups");
    if (api.unavailable(r)) return fill(list, unavailableNote("Consumer groups", r));
    if (!r.ok) return fill(list, errorNote("Consumer groups", r));
    fill(list, table([
      { title: "Virtual host", value: (g) => g.vhost },
      { title: "Name", value: (g) => link(g.name, "#/groups", g.vhost, g.name), key: "name" },
      { title: "Topics", value: topicsOf },
      { title: "State", value: (g) => g.state },
      { title: "Members", value: memberCount, num: true, key: "members" },
      { title: "Lag", value: lagOf, num: true, key: "lag" },
    ], r.data, { empty: "No consumer groups." }));
  }
  return { refresh };
}

export function mountOne(root, [vhost, name]) {
  const details = el("div", { id: "group-details" });
  const members = el("div", { id: "group-members" });
  const parts = el("div", { id: "group-partitions" });
  root.append(el("h1", {}, `Consumer group ${name}`, el("small", {}, ` in virtual host ${vhost}`)),
    details, el("h2", {}, "Members"), members, el("h2", {}, "Partitions"), parts);
  async function refresh() {
    const r = await api.get(`/api/consumer-groups/${api.seg(vhost)}/${api.seg(name)}`);
    if (r.status === 404 || r.status === 405) {       // no such group, or no such endpoint?
      const all = await api.get("/api/consumer-groups");
      return fill(details, api.unavailable(all) ? unavailableNote("Consumer groups", all)
        : el("p", { class: "error" }, `There is no group '${name}' in virtual host '${vhost}'.`));
    }
    if (!r.ok) return fill(details, errorNote("Consumer group", r));
    const g = r.data;
    fill(details, el("div", { class: "totals" },
      el("div", { class: "total", dataset: { total: "lag" } },
        el("div", { class: "value" }, lagOf(g) ?? "–"), el("div", { class: "label" }, "Lag")),
      el("div", { class: "total" }, el("div", { class: "value" }, memberCount(g) ?? "–"),
        el("div", { class: "label" }, "Members"))),
    el("div", { class: "card" }, props({ topics: topicsOf(g), state: g.state ?? "–" })));
    fill(members, Array.isArray(g.members) ? table([
      { title: "Member", value: (m) => m.member_id ?? m.id ?? m.name },
      { title: "Connection", value: (m) => m.connection ?? (m.connection_details || {}).name },
      { title: "Partitions", value: (m) => [].concat(m.assignment ?? m.partitions ?? [])
        .map((p) => (typeof p === "object" ? `${p.topic ?? ""}-${p.partition}` : p)).join(", ") },
    ], g.members, { empty: "No members (the offsets are kept)." }) : el("p", {}, "–"));
    fill(parts, table([
      { title: "Topic", value: (p) => p.topic },
      { title: "Partition", value: (p) => p.partition, num: true },
      { title: "Member", value: (p) => p.member ?? p.member_id },
      { title: "Committed offset", value: (p) => p.committed_offset, num: true },
      { title: "Log end offset", value: (p) => p.log_end_offset, num: true },
      { title: "Lag", value: (p) => p.lag, num: true, key: "lag" },
    ], partitionsOf(g), { empty: "No partitions." }));
  }
  return { refresh };
}
