"""Durable metadata: users, vhosts, permissions, durable exchanges, queues and bindings.

Stored as a snapshot and a journal of the changes since (``journal.py`` says how the journal
reads and why a crash cannot lose an acknowledged change):

* ``definitions.json``, the snapshot: one JSON document in RabbitMQ's definitions format (what
  ``rabbitmqctl export_definitions`` writes), so the same file can be imported into either
  broker. Written whole only by a compaction: to ``definitions.json.tmp``, fsynced, renamed
  over ``definitions.json``, then the directory is fsynced. A crash leaves either the old or
  the new file, plus perhaps a stale ``.tmp`` that the next load removes.
* ``definitions.journal``: each change to durable metadata is noted (``touched``: the keys an
  op names, resolved against the live objects when written; deletions in order) and written as
  one entry per loop turn, fsynced once for all the changes of that turn (group commit).
  ``durable()`` waits for that fsync: a channel's declare-ok, bind-ok and delete-ok go out
  after it (``metadata.LocalMetadata``), so what a client was told is on disk.

A start loads the snapshot, replays the journal over it, recreates the objects and compacts
(a new snapshot, an empty journal); so does a clean shutdown, and a running broker whose
journal has grown past ``COMPACT_AT`` (checked after a commit, run in its own loop turn).

The definitions also say how a queue was deleted: a durable queue deleted before its worker
removed its files (with its vhost) leaves a tombstone, its directory's name under
``amqpbroker_deleted_queues`` (a key RabbitMQ's import ignores; journalled as its own change),
until the files are gone. A start removes a queue directory only if a tombstone names it
(``owner.py``).
"""
from __future__ import annotations

import json
import logging
import os

from crc32c import crc32c

from .. import contract as c
from ..federation.upstreams import COMPONENTS as FEDERATION
from ..frontend.exchange import _args_key
from ..parameter_validation import Invalid as ParameterInvalid
from ..policies import PolicyInvalid, make_policy, warn_without_effect
from ..shovel.shovels import COMPONENT as SHOVEL
from ..storage.fileformat import ENTRY_HEAD, HEADER_SIZE, header_ok, write_file_atomically
from .journal import TOMBSTONES, DefinitionsJournal, DefinitionsState, global_parameter_items
from .metadata import global_parameters_op, users_op

log = logging.getLogger("amqpbroker.definitions")

# compact once the journal is this many times the snapshot's size (and at least COMPACT_MIN):
# a compaction costs O(objects), so it comes after O(objects) changes
COMPACT_AT = 4
COMPACT_MIN = 1 << 20


def journal_path(path: str) -> str:
    """``definitions.journal`` beside ``definitions.json``."""
    return os.path.splitext(path)[0] + ".journal"


def read_definitions(path: str) -> dict | None:
    """What a data directory's definitions hold (snapshot and journal), without changing the
    files; None if there is no snapshot. For tools and tests: the broker's own load is
    ``Definitions.load_file``."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        state = DefinitionsState(json.load(f))
    jpath = journal_path(path)
    if os.path.exists(jpath):
        with open(jpath, "rb") as f:
            data = f.read()
        if header_ok(data, DefinitionsJournal.MAGIC):
            pos = HEADER_SIZE
            while pos + ENTRY_HEAD.size <= len(data):
                length, crc = ENTRY_HEAD.unpack_from(data, pos)
                payload = data[pos + 8:pos + 8 + length]
                if len(payload) != length or crc32c(payload) != crc:
                    break
                state.replay(json.loads(payload))
                pos += 8 + length
    return state.document()


# the entries of the definitions format, one per object
def permission_item(key: tuple, p) -> dict:
    """A permission of ``Users.permissions`` (key: vhost, user), as the definitions format,
    the management API and etcd show it."""
    vhost, user = key
    return {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write,
            "read": p.read}


def topic_permission_item(key: tuple, p) -> dict:
    """A topic permission of ``Users.topic_permissions`` (key: vhost, user, exchange)."""
    vhost, user, exchange = key
    return {"user": user, "vhost": vhost, "exchange": exchange, "write": p.write,
            "read": p.read}


def user_items(users) -> tuple[list, list, list]:
    """Users, permissions and topic permissions, as the definitions format lists them."""
    out = [{"name": u.name, "password_hash": u.password_hash,
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": u.tags, "limits": u.limits} for u in users.users.values()]
    return (out, [permission_item(k, p) for k, p in users.permissions.items()],
            [topic_permission_item(k, p) for k, p in users.topic_permissions.items()])


def vhost_item(vh) -> dict:
    out = {"name": vh.name, "description": vh.description, "tags": vh.tags,
           "metadata": vh.metadata(), "limits": vh.limits}
    if vh.default_queue_type is not None:       # RabbitMQ 3.11+'s export: beside too
        out["default_queue_type"] = vh.default_queue_type
    return out


def exchange_item(vh, ex) -> dict:
    return {"name": ex.name, "vhost": vh.name, "type": ex.type, "durable": ex.durable,
            "auto_delete": ex.auto_delete, "internal": ex.internal, "arguments": ex.arguments}


def queue_item(vh, q) -> dict:
    return {"name": q.name, "vhost": vh.name, "durable": q.durable,
            "auto_delete": q.auto_delete, "arguments": q.arguments}


def binding_item(vhost: str, source: str, destination: str, dtype: str, key: str,
                 args) -> dict:
    return {"source": source, "vhost": vhost, "destination": destination,
            "destination_type": dtype, "routing_key": key, "arguments": args}


def stored_exchange(ex) -> bool:
    return ex.durable and ex.name != "" and not ex.name.startswith("amq.")


def stored_queue(q) -> bool:
    return q.durable and q.exclusive_owner is None and not q.deleted


def stored_binding(ex, dest) -> bool:
    return ex.durable and getattr(dest, "durable", False) \
        and getattr(dest, "exclusive_owner", None) is None



def _policy_kind(operator: bool) -> str:
    """A policy's kind in the journal (journal.py)."""
    return "operator-policy" if operator else "policy"

class Definitions:
    def __init__(self, broker, path: str):
        self.broker = broker
        self.path = path
        self.journal: DefinitionsJournal | None = None     # opened by load_file
        self.loading = False
        self.tombstones: set[str] = set()   # directories of deleted queues, not yet removed
        # owed to the journal: deletions and tombstones in order, then the keys touched
        # (resolved against the live objects when written), then the users if they changed
        self._ordered: list = []
        self._dirty: dict = {}
        self._users_owed = False
        self._commit = None                 # the loop's handle of the commit owed
        self._waiters: list = []            # futures of durable()
        self._retry = None                  # the disk refused: retry every second
        self._compact_owed = False
        self._snapshot_size = 0
        # the durable exchanges and queues the files hold: deleting another one is no change
        self._stored_exchanges: set = set()
        self._stored_queues: set = set()

    def export(self, include_transient: bool = False) -> dict:
        b = self.broker
        users, permissions, topic_permissions = user_items(b.users)
        out = {"rabbit_version": "3.13.0", "rabbitmq_version": "3.13.0",
               "product_name": "amqpbroker", "users": users, "vhosts": [],
               "permissions": permissions, "exchanges": [], "queues": [], "bindings": [],
               "parameters": [], "policies": [],
               "global_parameters": global_parameter_items(b.global_parameters),
               "topic_permissions": topic_permissions, "operator_policies": []}
        for vh in b.vhosts.values():
            out["vhosts"].append(vhost_item(vh))
            out["policies"] += [p.item() for p in vh.policies.values()]
            out["operator_policies"] += [p.item() for p in vh.operator_policies.values()]
            if vh.limits:           # where RabbitMQ 3.10 keeps them, and imports them from
                out["parameters"].append({"vhost": vh.name, "component": "vhost-limits",
                                          "name": "limits", "value": vh.limits})
            out["parameters"] += b.shovels.items(vh.name)
            out["parameters"] += b.federation.items(vh.name)
            for ex in vh.exchanges.values():
                if ex.name == "" or ex.name.startswith("amq."):
                    continue
                if ex.durable or include_transient:
                    out["exchanges"].append(exchange_item(vh, ex))
            for q in vh.queues.values():
                if (q.durable and q.exclusive_owner is None) or include_transient:
                    out["queues"].append(queue_item(vh, q))
            for ex, dest, dtype, key, args in vh.bindings():
                if include_transient or stored_binding(ex, dest):
                    out["bindings"].append(binding_item(vh.name, ex.name, dest.name, dtype,
                                                        key, args))
        return out

    # ------------------------------------------------------------ changes
    def touched(self, op) -> None:
        """The owner made metadata op ``op`` (``owner.changed``): note what it changes of
        the durable state."""
        if self.loading:
            return
        t = type(op)            # a new queue's QueueOp comes after its queue_made
        if t is c.QueueDeleted:
            self._deleted(self._stored_queues, ["queue-", op.vhost, op.name])
        elif t is c.BindOp or t is c.UnbindOp:
            vh = self.broker.vhosts.get(op.vhost)
            ex = vh.exchanges.get(op.source) if vh is not None else None
            dest = (vh.queues if op.dest_kind == "queue" else vh.exchanges).get(
                op.destination) if vh is not None else None
            if ex is not None and dest is not None and stored_binding(ex, dest):
                self._touch(("binding", op.vhost, op.source, op.dest_kind, op.destination,
                             op.key, json.dumps(op.arguments, default=str, sort_keys=True)),
                            op.arguments)
        elif t is c.ExchangeOp:
            # not the predeclared amq.* ones (a policy's alternate exchange changes them):
            # never stored, their change resolves to a deletion that would take their
            # bindings at the next start
            if op.durable and op.name and not op.name.startswith("amq."):
                self._touch(("exchange", op.vhost, op.name))
        elif t is c.ExchangeDeleted:
            self._deleted(self._stored_exchanges, ["exchange-", op.vhost, op.name])
        elif t is c.VhostOp or t is c.VhostLimitsOp:
            self._touch(("vhost", op.name))
        elif t is c.PolicyOp:
            self._touch((_policy_kind(op.operator), op.vhost, op.name))
        elif t is c.PolicyDeleted:
            kind = _policy_kind(op.operator)
            self._dirty.pop((kind, op.vhost, op.name), None)
            self._ordered.append([kind + "-", op.vhost, op.name])
            self.commit_soon()
        elif t is c.ParameterOp:
            self._ordered.append(["parameter+", parameter_item(op)])
            self.commit_soon()
        elif t is c.ParameterDeleted:
            self._ordered.append(["parameter-", op.vhost, op.component, op.name])
            self.commit_soon()
        elif t is c.GlobalParametersOp:
            self._ordered.append(["global-parameters", op.parameters])
            self.commit_soon()
        elif t is c.VhostDeleted:
            self._ordered.append(["vhost-", op.name])
            for stored in (self._stored_exchanges, self._stored_queues):
                stored.difference_update([k for k in stored if k[0] == op.name])
            self._users_owed = True         # its permissions went with it
            self.commit_soon()

    def queue_made(self, vhost: str, name: str) -> None:
        """A durable queue is being made (its ``QueueOp`` comes once it is open)."""
        if not self.loading:
            self._touch(("queue", vhost, name))

    def add_tombstone(self, directory: str) -> None:
        self.tombstones.add(directory)
        self._ordered.append(["tombstone+", directory])
        self.commit_soon()

    def discard_tombstone(self, directory: str) -> None:
        if directory in self.tombstones:
            self.tombstones.discard(directory)
            if not self.loading:
                self._ordered.append(["tombstone-", directory])
                self.commit_soon()

    def _touch(self, key: tuple, value=None) -> None:
        self._dirty[key] = value
        self.commit_soon()

    def _deleted(self, stored: set, change: list) -> None:
        key = (change[1], change[2])
        if key in stored:
            stored.discard(key)
            self._ordered.append(change)
            self.commit_soon()

    def _resolve(self, key: tuple, value) -> list:
        """The change that brings the stored object ``key`` to what it is now."""
        vh = self.broker.vhosts.get(key[1])
        kind = key[0]
        if kind == "queue":
            q = vh.queues.get(key[2]) if vh is not None else None
            if q is not None and stored_queue(q):
                self._stored_queues.add(key[1:])
                return ["queue+", queue_item(vh, q)]
            self._stored_queues.discard(key[1:])
            return ["queue-", key[1], key[2]]
        if kind == "binding":
            _, vhost, source, dtype, destination, rk, _ = key
            ex = vh.exchanges.get(source) if vh is not None else None
            dest = (vh.queues if dtype == "queue" else vh.exchanges).get(destination) \
                if vh is not None else None
            args = ex.bindings.get((dest, rk, _args_key(value))) if ex is not None \
                and dest is not None else None
            present = args is not None and stored_binding(ex, dest)
            return ["binding+" if present else "binding-",
                    binding_item(vhost, source, destination, dtype, rk,
                                 args if present else value)]
        if kind == "exchange":
            ex = vh.exchanges.get(key[2]) if vh is not None else None
            if ex is not None and stored_exchange(ex):
                self._stored_exchanges.add(key[1:])
                return ["exchange+", exchange_item(vh, ex)]
            self._stored_exchanges.discard(key[1:])
            return ["exchange-", key[1], key[2]]
        if kind in ("policy", "operator-policy"):
            table = None if vh is None else \
                vh.operator_policies if kind == "operator-policy" else vh.policies
            policy = table.get(key[2]) if table is not None else None
            return [kind + "+", policy.item()] if policy is not None \
                else [kind + "-", key[1], key[2]]
        return ["vhost+", vhost_item(vh)] if vh is not None else ["vhost-", key[1]]

    # ------------------------------------------------------------ commits
    def commit_soon(self) -> None:
        """Commit what is owed at the end of this loop turn (the changes made until then
        share one fsync)."""
        if self._commit is None and self._retry is None and not self.loading:
            self._commit = self.broker.loop.call_soon(self.commit)

    def commit(self) -> None:
        """Write what is owed to the journal and fsync it; then wake ``durable()``. If the
        disk refuses, the changes stay owed (and in memory): the disk alarm is raised and the
        commit retried every second."""
        if self._commit is not None:
            self._commit.cancel()
            self._commit = None
        if self.journal is None or self.loading:
            return
        if self._ordered or self._dirty or self._users_owed:
            changes = self._ordered + [self._resolve(k, v) for k, v in self._dirty.items()]
            if self._users_owed:
                changes.append(["users", *user_items(self.broker.users)])
            try:
                self.journal.append(changes)
            except OSError as exc:
                self._failed(exc)
                return
            except Exception:       # a bug: answer the waiters; the next commit tries again
                log.exception("writing the definitions journal failed")
                self._wake()
                return
            self._ordered, self._dirty, self._users_owed = [], {}, False
            if self.journal.size > max(COMPACT_MIN, COMPACT_AT * self._snapshot_size) \
                    and not self._compact_owed:
                self._compact_owed = True
                self.broker.loop.call_soon(self._compact_if_owed)
        self._saved()

    async def durable(self) -> None:
        """Return once every change made so far is on disk (or the disk refused it: the
        change is kept in memory, and the disk alarm says so)."""
        if self._commit is None:
            return
        fut = self.broker.loop.create_future()
        self._waiters.append(fut)
        await fut

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _saved(self) -> None:
        self._wake()
        if "disk_definitions" in self.broker.alarms.active:
            log.warning("definitions saved")
            self.broker.alarms.clear("disk_definitions")

    def _failed(self, exc: OSError) -> None:
        self._wake()
        if self._retry is None:
            log.error("saving definitions failed: %s; retrying every second", exc)
            self.broker.alarms.set("disk_definitions", f"saving definitions failed: {exc}")
            self._retry = self.broker.loop.call_later(1.0, self._retry_save)

    def _retry_save(self) -> None:
        self._retry = None
        if self._compact_owed:
            self.compact()
        else:
            self.commit()

    def save(self) -> None:
        """Users or permissions changed (and perhaps more): tell the front-ends, and commit
        now, before the caller answers."""
        if self.loading:
            return
        # users and permissions have no ops of their own: front-ends get them whole
        self.broker.changed(users_op(self.broker.users))
        self._users_owed = True
        if self._retry is None:
            self.commit()

    # ------------------------------------------------------------ snapshots
    def _compact_if_owed(self) -> None:
        if self._compact_owed and self._retry is None:
            self.compact()

    def compact(self) -> None:
        """Write the whole state as the snapshot, then empty the journal; everything owed is
        then on disk. If the disk refuses, the journal stays as it is (it still holds every
        change) and the compaction is retried every second."""
        if self._commit is not None:
            self._commit.cancel()
            self._commit = None
        self._compact_owed = True
        out = self.export()
        if self.tombstones:
            out[TOMBSTONES] = sorted(self.tombstones)
        # no indent: that keeps json on its C encoder (indent switches to the Python one)
        data = json.dumps(out, default=str, separators=(",", ":")).encode()
        try:
            write_file_atomically(self.path, data)
        except OSError as exc:
            self._failed(exc)
            return
        self._compact_owed = False
        self._snapshot_size = len(data)
        self._ordered, self._dirty, self._users_owed = [], {}, False
        self._stored_exchanges = {(e["vhost"], e["name"]) for e in out["exchanges"]}
        self._stored_queues = {(q["vhost"], q["name"]) for q in out["queues"]}
        try:
            if self.journal is not None:
                self.journal.compact()
        except OSError as exc:      # the journal keeps changes the snapshot holds: harmless
            log.error("emptying the definitions journal failed: %s", exc)
        self._saved()

    def close(self) -> None:
        """Shutdown: commit what is owed and compact, so the snapshot holds everything."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.compact()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
            log.error("definitions not compacted at shutdown; the journal holds the changes")
            self._compact_owed = False
            self.commit()
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
                log.error("definitions not saved at shutdown")
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    def load_file(self) -> dict | None:
        """The stored definitions (the snapshot, the journal replayed over it), or None on a
        first start; opens the journal (cutting a torn tail)."""
        if os.path.exists(self.path + ".tmp"):
            os.unlink(self.path + ".tmp")
        self.journal = DefinitionsJournal(journal_path(self.path))
        changes, self.journal.changes = self.journal.changes, []
        if not os.path.exists(self.path):
            return None     # the start compacts: a journal without a snapshot is dropped
        with open(self.path, "rb") as f:
            raw = f.read()
        self._snapshot_size = len(raw)
        state = DefinitionsState(json.loads(raw))
        state.replay(changes)
        if changes:
            log.info("definitions: %d change(s) replayed from %s", len(changes),
                     self.journal.path)
        data = state.document()
        self.tombstones = set(data.get(TOMBSTONES, ()))
        return data

    def apply(self, data: dict, recovering: bool = False) -> None:
        """Recreate what the definitions hold, as stored — no client checks (reserved names,
        equivalence) — and keep what exists. ``recovering``: this broker's own file at start,
        restored whole; otherwise an import, which skips names beginning with ``amq.`` as
        RabbitMQ's does (``rabbit_definitions``)."""
        b = self.broker
        self.loading = True
        try:
            for u in data.get("users", []):
                tags = u.get("tags", [])
                if isinstance(tags, str):
                    tags = [t for t in tags.split(",") if t]
                if "password_hash" in u:
                    user = b.users.add_user(u["name"], password_hash=u["password_hash"],
                                            tags=tags)
                else:
                    user = b.users.add_user(u["name"], u.get("password", ""), tags=tags)
                if "limits" in u:
                    user.limits = dict(u["limits"])
            for v in data.get("vhosts", []):
                b.add_vhost(v["name"], v.get("description", ""), v.get("tags", []),
                            v.get("default_queue_type"))
            for p in data.get("permissions", []):
                b.users.set_permissions(p["vhost"], p["user"], p.get("configure", ".*"),
                                        p.get("write", ".*"), p.get("read", ".*"))
            for p in data.get("global_parameters", []):
                b.global_parameters[p["name"]] = p["value"]
            for p in data.get("topic_permissions", []):
                b.users.set_topic_permissions(p["vhost"], p["user"], p["exchange"],
                                              p.get("write", ".*"), p.get("read", ".*"))
            # before the queues: they open with them
            for p, operator in [*((p, False) for p in data.get("policies", [])),
                                *((p, True) for p in data.get("operator_policies", []))]:
                if p["vhost"] not in b.vhosts:
                    continue
                try:
                    policy = make_policy(p["vhost"], p["name"], p, operator)
                    if not recovering:
                        warn_without_effect(policy, log)   # e.g. RabbitMQ 3.x's ha-mode
                    b.set_policy(policy)
                except PolicyInvalid as exc:      # an import was checked whole: a stored one
                    log.error("policy '%s' in vhost '%s' not restored: %s", p["name"],
                              p["vhost"], exc)
            for e in data.get("exchanges", []):
                if not recovering and _reserved("exchange", e):
                    continue
                vh = b.vhosts.get(e["vhost"]) or b.add_vhost(e["vhost"])
                vh.restore_exchange(e["name"], e.get("type", "direct"),
                                    durable=e.get("durable", True),
                                    auto_delete=e.get("auto_delete", False),
                                    internal=e.get("internal", False),
                                    arguments=e.get("arguments") or {})
            for q in data.get("queues", []):
                if not recovering and _reserved("queue", q):
                    continue
                vh = b.vhosts.get(q["vhost"]) or b.add_vhost(q["vhost"])
                vh.restore_queue(q["name"], durable=q.get("durable", True),
                                 auto_delete=q.get("auto_delete", False),
                                 arguments=q.get("arguments") or {})
            for bd in data.get("bindings", []):
                vh = b.vhosts.get(bd["vhost"])
                if vh is None or bd["source"] not in vh.exchanges:
                    continue
                if bd.get("destination_type", "queue") == "queue":
                    dest = vh.queues.get(bd["destination"])
                else:
                    dest = vh.exchanges.get(bd["destination"])
                if dest is not None:
                    vh.exchanges[bd["source"]].bind(dest, bd.get("routing_key", ""),
                                                    bd.get("arguments") or {})
            for name, limits in vhost_limits(data).items():
                if name in b.vhosts:
                    b.vhosts[name].limits = limits
            for p in data.get("parameters", []):
                if p.get("component") == SHOVEL and p["vhost"] in b.vhosts:
                    self._restore_shovel(p)
                elif p.get("component") in FEDERATION and p["vhost"] in b.vhosts:
                    self._restore_upstream(p)
        finally:
            self.loading = False
        if not recovering:      # an import: front-ends get the users, the files all of it
            self.broker.changed(users_op(b.users))
            self.broker.changed(global_parameters_op(b))
            self.compact()


    def _restore_shovel(self, p: dict) -> None:
        """A shovel stored here, or imported (checked with the import)."""
        b = self.broker
        try:
            b.shovels.set(p["vhost"], p["name"], p["value"])    # loading: not journalled
        except ParameterInvalid as exc:      # stored under other rules
            log.error("shovel '%s' in vhost '%s' not restored: %s", p["name"], p["vhost"],
                      exc)


    def _restore_upstream(self, p: dict) -> None:
        """A federation upstream (or set) stored here, or imported."""
        try:
            self.broker.federation.set(p["vhost"], p["component"], p["name"], p["value"])
        except ParameterInvalid as exc:      # stored under other rules
            log.error("%s '%s' in vhost '%s' not restored: %s", p["component"], p["name"],
                      p["vhost"], exc)


def parameter_item(op: c.ParameterOp) -> dict:
    """A runtime parameter as the definitions (and RabbitMQ's API) list it."""
    return {"value": op.value, "vhost": op.vhost, "component": op.component, "name": op.name}


def _reserved(kind: str, item: dict) -> bool:
    """An import skips the default exchange and ``amq.*`` names, with RabbitMQ's warning."""
    name = item["name"]
    if name and not name.startswith("amq."):
        return False
    log.warning("Skipping import of %s '%s' in vhost '%s': the name is reserved (the default "
                "exchange, or beginning with 'amq.')", kind, name, item.get("vhost"))
    return True


def vhost_limits(data: dict) -> dict:
    """{vhost: limits} that a definitions document sets: a vhost's ``limits`` (RabbitMQ's
    ``rabbitmqctl export_definitions`` writes them as a list of pairs) or its parameter of
    component ``vhost-limits`` (the management export's only place for them)."""
    out = {}
    for v in data.get("vhosts", []):
        if v.get("limits") is not None:
            out[v["name"]] = dict(v["limits"])
    for p in data.get("parameters", []):
        if p.get("component") == "vhost-limits":
            out[p["vhost"]] = dict(p["value"])
    return out
