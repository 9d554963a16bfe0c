// The forms several pages share: publish, get, declare, and the buttons that purge and
// delete. Each reports in its own result line, and says so plainly when the broker does not
// offer the operation (404/405 from an API that lacks the endpoint).
import * as api from "../api.js";
import { el, fill, props } from "../dom.js";

/** The answer to a form, shown under it: ok text, or the broker's refusal. */
export function report(out, r, okText, what) {
  if (r.ok) return fill(out, el("p", { class: "ok" }, okText));
  if (r.status === 405 || (r.status === 404 && what.endpointMayBeMissing)) {
    return fill(out, el("p", { class: "error unavailable" },
      `${what.name} is not available from this broker (${r.status} ${r.reason}).`));
  }
  fill(out, el("p", { class: "error" }, `${what.name} failed: ${r.status || ""} ${r.reason}`));
}

export function field(label, input) { return el("label", {}, label, input); }

/** JSON object from a textarea ({} when empty), or throws with a readable message. */
export function jsonObject(text, what) {
  if (!text.trim()) return {};
  let v;
  try { v = JSON.parse(text); } catch (err) { throw new Error(`${what}: not JSON (${err.message})`); }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error(`${what}: not a JSON object`);
  return v;
}

/** A form with a title, its inputs and a submit button; onSubmit(out) reports in `out`. */
export function action(id, title, inputs, submit, onSubmit) {
  const out = el("div", { class: "result", id: `${id}-result` });
  const form = el("form", { class: "action card", id }, el("strong", {}, title), ...inputs,
    el("button", { type: "submit" }, submit), out);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await onSubmit(out); } catch (err) { fill(out, el("p", { class: "error" }, err.message)); }
  });
  return form;
}

/** POST /api/exchanges/{vhost}/{exchange}/publish. */
export function publishForm(vhost, exchange, routingKey = "") {
  const key = el("input", { name: "routing_key", value: routingKey });
  const payload = el("textarea", { name: "payload" });
  const persistent = el("input", { type: "checkbox", name: "persistent" });
  const headers = el("textarea", { name: "headers", placeholder: '{"x-key": "value"}' });
  const contentType = el("input", { name: "content_type", placeholder: "text/plain" });
  return action("publish", "Publish message", [
    field("Routing key", key), field("Payload", payload),
    el("label", { class: "inline" }, persistent, "Persistent (delivery mode 2)"),
    field("Headers (JSON)", headers), field("Content type", contentType),
  ], "Publish", async (out) => {
    const properties = { delivery_mode: persistent.checked ? 2 : 1,
                         headers: jsonObject(headers.value, "Headers") };
    if (contentType.value) properties.content_type = contentType.value;
    const r = await api.call("POST",
      `/api/exchanges/${api.seg(vhost)}/${api.seg(exchange || "amq.default")}/publish`,
      { properties, routing_key: key.value, payload: payload.value, payload_encoding: "string" });
    report(out, r, r.data && r.data.routed === false ? "Message published, but not routed."
      : "Message published.", { name: "Publishing", endpointMayBeMissing: true });
  });
}

/** POST /api/queues/{vhost}/{name}/get; the messages are shown under the form. */
export function getForm(vhost, queue) {
  const mode = el("select", { name: "ackmode" },
    el("option", { value: "ack_requeue_true" }, "Nack, requeue"),
    el("option", { value: "ack_requeue_false" }, "Ack, remove from queue"),
    el("option", { value: "reject_requeue_true" }, "Reject, requeue"),
    el("option", { value: "reject_requeue_false" }, "Reject, do not requeue"));
  const count = el("input", { type: "number", name: "count", value: "1", min: "1" });
  return action("get", "Get messages", [field("Ack mode", mode), field("Messages", count)],
    "Get", async (out) => {
      const r = await api.call("POST", `/api/queues/${api.seg(vhost)}/${api.seg(queue)}/get`,
        { count: Number(count.value) || 1, ackmode: mode.value, encoding: "auto", truncate: 50000 });
      if (!r.ok) return report(out, r, "", { name: "Getting messages", endpointMayBeMissing: true });
      if (!r.data.length) return fill(out, el("p", { class: "ok" }, "Queue is empty."));
      fill(out, r.data.map((m, i) => el("div", { class: "message" },
        el("strong", {}, `Message ${i + 1}`),
        props({ exchange: m.exchange || "(AMQP default)", routing_key: m.routing_key, redelivered: m.redelivered,
                remaining: m.message_count, properties: m.properties,
                payload_bytes: m.payload_bytes, encoding: m.payload_encoding }),
        el("pre", { class: "payload" }, m.payload))));
    });
}

/** PUT /api/queues/{vhost}/{name} (kind "queues") or /api/exchanges/... ("exchanges");
 *  exchangeTypes: the types the broker offers (/api/overview), else the four of AMQP. */
export function declareForm(kind, vhosts, onDone,
                            exchangeTypes = ["direct", "fanout", "topic", "headers"]) {
  const vhost = el("select", { name: "vhost" }, vhosts.map((v) => el("option", { value: v }, v)));
  const name = el("input", { name: "name", required: true });
  const durable = el("input", { type: "checkbox", name: "durable", checked: true });
  const autoDelete = el("input", { type: "checkbox", name: "auto_delete" });
  const args = el("textarea", { name: "arguments", placeholder: '{"x-max-length": 1000}' });
  const type = kind === "queues"
    ? el("select", { name: "type" }, ["classic", "quorum", "stream"].map((t) => el("option", { value: t }, t)))
    : el("select", { name: "type" }, exchangeTypes.map((t) => el("option", { value: t }, t)));
  const internal = el("input", { type: "checkbox", name: "internal" });
  const what = kind === "queues" ? "queue" : "exchange";
  return action(`declare-${what}`, `Add a new ${what}`, [
    field("Virtual host", vhost), field("Type", type), field("Name", name),
    el("label", { class: "inline" }, durable, "Durable"),
    el("label", { class: "inline" }, autoDelete, "Auto delete"),
    kind === "exchanges" ? el("label", { class: "inline" }, internal, "Internal") : null,
    field("Arguments (JSON)", args),
  ], `Add ${what}`, async (out) => {
    const body = { durable: durable.checked, auto_delete: autoDelete.checked,
                   arguments: jsonObject(args.value, "Arguments") };
    if (kind === "queues") {
      if (type.value !== "classic") body.arguments["x-queue-type"] = type.value;
    } else {
      body.type = type.value;
      body.internal = internal.checked;
    }
    const r = await api.call("PUT", `/api/${kind}/${api.seg(vhost.value)}/${api.seg(name.value)}`, body);
    report(out, r, r.status === 201 ? `Declared ${what} '${name.value}'.`
      : `The ${what} '${name.value}' exists already; nothing changed.`,
      { name: `Declaring a ${what}` });
    if (r.ok) onDone();
  });
}

/** A button that confirms, calls `method path`, and reports in `out`. */
// before(): awaited once the person confirmed and before the call; it may return a function
// to undo itself, run when the call fails (a page that stops refreshing what it deletes).
// id may be null: a button per table row is found by its row (class "danger").
export function dangerButton(id, label, question, method, path, out, okText, onDone, before) {
  return el("button", { type: "button", class: "danger", id, onclick: async () => {
    if (!window.confirm(question)) return;
    const undo = before ? await before() : null;
    const r = await api.call(method, path);
    report(out, r, okText, { name: label, endpointMayBeMissing: true });
    if (r.ok && onDone) onDone();
    if (!r.ok && undo) undo();
  } }, label);
}

// A details page's refresh that deleting the object stops: once stop() resolved, no refresh
// asks for the object (one still in flight is awaited first), so none reads a 404 for what
// the person just deleted. stop() returns its undo, for a delete that failed.
export function stoppableRefresh(draw) {
  let stopped = false;
  let drawing = null;
  async function refresh() {
    if (stopped) return;
    drawing = draw();
    try { await drawing; } finally { drawing = null; }
  }
  async function stop() {
    stopped = true;
    if (drawing) await drawing.catch(() => {});
    return () => { stopped = false; };
  }
  return { refresh, stop };
}
