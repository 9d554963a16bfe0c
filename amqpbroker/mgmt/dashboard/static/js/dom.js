// Building the page: every datum goes in as text (textContent), never as HTML.

/** el("td", {class: "num"}, "3") -> <td class="num">3</td>; children may be nodes or text. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

export function fmtNumber(n) {
  if (n === undefined || n === null || n === "") return "–";
  if (typeof n !== "number") return String(n);
  return Number.isInteger(n) ? n.toLocaleString("en") : n.toFixed(1);
}

export function fmtBool(b) { return b === undefined ? "–" : b ? "yes" : "no"; }

export function fmtBytes(n) {
  if (typeof n !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** The rate RabbitMQ reports under message_stats.<key>_details.rate, or undefined. */
export function rate(stats, key) {
  const d = stats && stats[`${key}_details`];
  return d && typeof d.rate === "number" ? d.rate : undefined;
}

export const fmtRate = (r) => (r === undefined ? "–" : `${r.toFixed(1)}/s`);

/** A table: columns are {title, value(row) -> text | Node, num?, key?}; rows get
 *  data-name (and data-vhost) so a person, or a test, can find one. */
export function table(columns, rows, { empty = "None." } = {}) {
  if (!rows.length) return el("p", { class: "empty" }, empty);
  const head = el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : null }, c.title)));
  const body = rows.map((row) => el("tr", {
    dataset: { name: row.name ?? "", vhost: row.vhost ?? "" },
  }, columns.map((c) => {
    const v = c.value(row);
    return el("td", { class: [c.num ? "num" : "", c.key ? `col-${c.key}` : ""].join(" ").trim() || null },
      v instanceof Node ? v : (c.num ? fmtNumber(v) : v ?? "–"));
  })));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, body));
}

/** A placeholder for what this broker does not offer (yet). */
export function unavailableNote(what, r) {
  return el("p", { class: "unavailable" },
    `${what}: not available from this broker (${r.status} ${r.reason}).`);
}

export function errorNote(what, r) {
  return el("p", { class: "error" }, `${what}: ${r.status || "no answer"} ${r.reason}`);
}

/** Replace a container's children. */
export function fill(node, ...children) { node.replaceChildren(...children.flat()); }

/** One-line messages under the header: ok or error, kept until the next one. */
export function flash(text, kind = "ok") {
  fill(document.getElementById("flash"), el("p", { class: kind }, text));
}

/** A link to a page of the dashboard, e.g. link("#/queues", vhost, name). */
export function link(text, base, ...parts) {
  return el("a", { href: [base, ...parts.map(encodeURIComponent)].join("/") }, text);
}

export function props(obj) {
  return el("dl", { class: "props" }, Object.entries(obj).flatMap(([k, v]) => [
    el("dt", {}, k), el("dd", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : fmtNumber(v)),
  ]));
}
