// Exchanges: the list with a declare form, and a page per exchange (publish, delete).
import * as api from "../api.js";
import { el, errorNote, fill, fmtBool, fmtRate, link, props, rate, table,
         unavailableNote } from "../dom.js";
import { dangerButton, declareForm, publishForm, stoppableRefresh } from "./forms.js";
import { vhostNames } from "./queues.js";

const COLUMNS = [
  { title: "Virtual host", value: (x) => x.vhost },
  { title: "Name", value: (x) => link(x.name || "(AMQP default)", "#/exchanges", x.vhost, x.name), key: "name" },
  { title: "Type", value: (x) => x.type, key: "type" },
  { title: "Durable", value: (x) => fmtBool(x.durable) },
  { title: "Auto delete", value: (x) => fmtBool(x.auto_delete) },
  { title: "Internal", value: (x) => fmtBool(x.internal) },
  { title: "Rate in", value: (x) => fmtRate(rate(x.message_stats, "publish_in")), num: true },
  { title: "Rate out", value: (x) => fmtRate(rate(x.message_stats, "publish_out")), num: true },
];

export function mountList(root) {
  const list = el("div", { id: "exchanges" });
  const forms = el("div", { class: "forms" });
  root.append(el("h1", {}, "Exchanges"), list, forms);
  let refresh;
  Promise.all([vhostNames(), api.get("/api/overview")]).then(([names, o]) => {
    const types = o.ok && Array.isArray(o.data.exchange_types)
      ? o.data.exchange_types.map((t) => t.name) : undefined;
    forms.append(declareForm("exchanges", names, () => refresh(), types));
  });
  refresh = async () => {
    const r = await api.get("/api/exchanges");
    if (!r.ok) return fill(list, errorNote("Exchanges", r));
    fill(list, table(COLUMNS, r.data, { empty: "No exchanges." }));
  };
  return { refresh };
}

export function mountOne(root, [vhost, name]) {
  const path = `/api/exchanges/${api.seg(vhost)}/${api.seg(name || "amq.default")}`;
  const details = el("div", { id: "exchange-details" });
  const bindings = el("div", { id: "exchange-bindings" });
  const out = el("div", { class: "result", id: "exchange-danger-result" });
  const builtin = name === "" || name.startsWith("amq.");
  const live = stoppableRefresh(draw);
  root.append(el("h1", {}, `Exchange ${name || "(AMQP default)"}`,
    el("small", {}, ` in virtual host ${vhost}`)), details,
    el("h2", {}, "Bindings from this exchange"), bindings,
    el("div", { class: "forms" }, publishForm(vhost, name),
      builtin ? null : el("div", { class: "card" }, el("strong", {}, "Delete"), el("p", {},
        dangerButton("delete", "Delete exchange", `Delete the exchange '${name}'?`, "DELETE",
          path, out, "Exchange deleted.", () => { location.hash = "#/exchanges"; },
          live.stop)), out)));

  async function draw() {
    const r = await api.get(path);
    if (!r.ok) return fill(details, errorNote("Exchange", r));
    const x = r.data;
    fill(details, el("div", { class: "card" }, props({ type: x.type, durable: fmtBool(x.durable),
      auto_delete: fmtBool(x.auto_delete), internal: fmtBool(x.internal), arguments: x.arguments })));
    const b = await api.get(`${path}/bindings/source`);
    if (api.unavailable(b)) return fill(bindings, unavailableNote("Bindings", b));
    if (!b.ok) return fill(bindings, errorNote("Bindings", b));
    fill(bindings, table([
      { title: "To", value: (x) => `${x.destination_type} ${x.destination}` },
      { title: "Routing key", value: (x) => x.routing_key },
      { title: "Arguments", value: (x) => JSON.stringify(x.arguments || {}) },
    ], b.data, { empty: "No bindings." }));
  }
  return { refresh: live.refresh };
}
