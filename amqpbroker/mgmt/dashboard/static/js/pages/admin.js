// Admin: users, virtual hosts, permissions and topic permissions, as RabbitMQ's Admin tab
// has them. Each list
// comes with a form that adds (or updates) one and a Delete / Clear button per row. The
// API asks for the administrator tag for all of it; a user without it sees the broker's
// 401 in place of each list.
import * as api from "../api.js";
import { el, errorNote, fill, table } from "../dom.js";
import { action, dangerButton, field, report } from "./forms.js";

const tagsOf = (u) => [].concat(u.tags || []).join(", ");

function userForm(onDone) {
  const name = el("input", { name: "name", required: true, autocomplete: "off" });
  const password = el("input", { name: "password", type: "password", autocomplete: "new-password" });
  const none = el("input", { type: "checkbox", name: "no_password" });
  const tags = el("input", { name: "tags", placeholder: "administrator, management" });
  return action("add-user", "Add / update a user", [
    field("Username", name), field("Password", password),
    el("label", { class: "inline" }, none, "No password (password login refused)"),
    field("Tags (comma-separated)", tags),
  ], "Set user", async (out) => {
    // as RabbitMQ's API: a PUT without a password clears the user's password, so the
    // form asks for one unless "No password" says so
    if (!password.value && !none.checked) throw new Error("Give a password, or tick No password.");
    const body = { tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean).join(",") };
    if (none.checked) body.password_hash = "";
    else body.password = password.value;
    const r = await api.call("PUT", `/api/users/${api.seg(name.value)}`, body);
    report(out, r, r.status === 201 ? `Added the user '${name.value}'.`
      : `Updated the user '${name.value}'.`, { name: "Setting the user" });
    if (r.ok) { password.value = ""; onDone(); }
  });
}

function vhostForm(onDone) {
  const name = el("input", { name: "name", required: true });
  const description = el("input", { name: "description" });
  return action("add-vhost", "Add a virtual host", [
    field("Name", name), field("Description", description),
  ], "Add virtual host", async (out) => {
    const r = await api.call("PUT", `/api/vhosts/${api.seg(name.value)}`,
      { description: description.value });
    report(out, r, r.status === 201 ? `Added the virtual host '${name.value}'.`
      : `The virtual host '${name.value}' exists already.`, { name: "Adding the virtual host" });
    if (r.ok) onDone();
  });
}

/** A select of ``values``, named ``name``. */
const choice = (name, values) => el("select", { name }, values.map((v) => el("option", { value: v }, v)));
/** A regexp input, ".*" to begin with. */
const regex = (name) => el("input", { name, value: ".*" });

function permissionForm(users, vhosts, onDone) {
  const [user, vhost] = [choice("user", users), choice("vhost", vhosts)];
  const [configure, write, read] = ["configure", "write", "read"].map(regex);
  return action("set-permission", "Set permission", [
    field("User", user), field("Virtual host", vhost), field("Configure regexp", configure),
    field("Write regexp", write), field("Read regexp", read),
  ], "Set permission", async (out) => {
    const r = await api.call("PUT", `/api/permissions/${api.seg(vhost.value)}/${api.seg(user.value)}`,
      { configure: configure.value, write: write.value, read: read.value });
    report(out, r, `Set the permissions of '${user.value}' in '${vhost.value}'.`,
      { name: "Setting the permission" });
    if (r.ok) onDone();
  });
}

function topicPermissionForm(users, vhosts, onDone) {
  const [user, vhost] = [choice("user", users), choice("vhost", vhosts)];
  const exchange = el("input", { name: "exchange", value: "amq.topic", required: true });
  const [write, read] = ["write", "read"].map(regex);
  return action("set-topic-permission", "Set topic permission", [
    field("User", user), field("Virtual host", vhost), field("Topic exchange", exchange),
    field("Write regexp (routing keys published)", write),
    field("Read regexp (binding keys)", read),
  ], "Set topic permission", async (out) => {
    const r = await api.call("PUT",
      `/api/topic-permissions/${api.seg(vhost.value)}/${api.seg(user.value)}`,
      { exchange: exchange.value, write: write.value, read: read.value });
    report(out, r, `Set the topic permission of '${user.value}' on '${exchange.value}' in ` +
      `'${vhost.value}'.`, { name: "Setting the topic permission", endpointMayBeMissing: true });
    if (r.ok) onDone();
  });
}

export function mount(root) {
  const users = el("div", { id: "users" });
  const vhosts = el("div", { id: "vhosts" });
  const permissions = el("div", { id: "permissions" });
  const topicPermissions = el("div", { id: "topic-permissions" });
  const out = el("div", { class: "result", id: "admin-result" });
  const forms = el("div", { class: "forms" });
  root.append(el("h1", {}, "Admin"), el("h2", {}, "Users"), users,
    el("h2", {}, "Virtual hosts"), vhosts, el("h2", {}, "Permissions"), permissions,
    el("h2", {}, "Topic permissions"), topicPermissions, out, forms);
  let refresh;
  const again = () => refresh();
  let formsFor = null;         // the user and vhost names the permission forms offer

  async function drawForms(userNames, vhostNames) {
    const key = JSON.stringify([userNames, vhostNames]);
    if (key === formsFor) return;      // rebuilt only when the names change
    formsFor = key;
    const fresh = [permissionForm(userNames, vhostNames, again),
      topicPermissionForm(userNames, vhostNames, again)];
    const kept = [forms.querySelector("#set-permission"),
      forms.querySelector("#set-topic-permission")];
    if (kept[0]) kept.forEach((k, i) => k.replaceWith(fresh[i]));
    else forms.append(userForm(again), vhostForm(again), ...fresh);
  }

  refresh = async () => {
    const [u, v, p, t] = await Promise.all(
      ["/api/users", "/api/vhosts", "/api/permissions", "/api/topic-permissions"]
        .map((path) => api.get(path)));
    if (!u.ok) fill(users, errorNote("Users", u));
    else fill(users, table([
      { title: "Name", value: (x) => x.name, key: "name" },
      { title: "Tags", value: tagsOf, key: "tags" },
      { title: "Can log in with a password", value: (x) => (x.password_hash ? "yes" : "no") },
      { title: "", value: (x) => dangerButton(null, "Delete", `Delete the user '${x.name}'?`,
          "DELETE", `/api/users/${api.seg(x.name)}`, out, `Deleted the user '${x.name}'.`, again) },
    ], u.data, { empty: "No users." }));
    if (!v.ok) fill(vhosts, errorNote("Virtual hosts", v));
    else fill(vhosts, table([
      { title: "Name", value: (x) => x.name, key: "name" },
      { title: "Description", value: (x) => x.description || "" },
      { title: "Messages", value: (x) => x.messages, num: true },
      { title: "", value: (x) => dangerButton(null, "Delete",
          `Delete the virtual host '${x.name}' and everything in it?`, "DELETE",
          `/api/vhosts/${api.seg(x.name)}`, out, `Deleted the virtual host '${x.name}'.`, again) },
    ], v.data, { empty: "No virtual hosts." }));
    if (!p.ok) fill(permissions, errorNote("Permissions", p));
    else fill(permissions, table([
      { title: "User", value: (x) => x.user, key: "user" },
      { title: "Virtual host", value: (x) => x.vhost },
      { title: "Configure", value: (x) => x.configure, key: "configure" },
      { title: "Write", value: (x) => x.write, key: "write" },
      { title: "Read", value: (x) => x.read, key: "read" },
      { title: "", value: (x) => dangerButton(null, "Clear",
          `Clear the permissions of '${x.user}' in '${x.vhost}'?`, "DELETE",
          `/api/permissions/${api.seg(x.vhost)}/${api.seg(x.user)}`, out,
          `Cleared the permissions of '${x.user}' in '${x.vhost}'.`, again) },
    ], p.data.map((x) => ({ ...x, name: x.user })), { empty: "No permissions." }));
    if (!t.ok) fill(topicPermissions, errorNote("Topic permissions", t));
    else fill(topicPermissions, table([
      { title: "User", value: (x) => x.user, key: "user" },
      { title: "Virtual host", value: (x) => x.vhost },
      { title: "Exchange", value: (x) => x.exchange, key: "exchange" },
      { title: "Write", value: (x) => x.write, key: "write" },
      { title: "Read", value: (x) => x.read, key: "read" },
      { title: "", value: (x) => dangerButton(null, "Clear",
          `Clear the topic permission of '${x.user}' on '${x.exchange}' in '${x.vhost}'?`,
          "DELETE", `/api/topic-permissions/${api.seg(x.vhost)}/${api.seg(x.user)}` +
          `?exchange=${encodeURIComponent(x.exchange)}`, out,
          `Cleared the topic permission of '${x.user}' on '${x.exchange}' in '${x.vhost}'.`,
          again) },
    ], t.data.map((x) => ({ ...x, name: `${x.user}/${x.exchange}` })),
    { empty: "No topic permissions: every routing key is allowed." }));
    if (u.ok && v.ok) await drawForms(u.data.map((x) => x.name), v.data.map((x) => x.name));
  };
  return { refresh };
}
