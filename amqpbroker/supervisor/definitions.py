"""Durable metadata: users, vhosts, permissions, durable exchanges, queues and bindings.

Stored as one JSON document in RabbitMQ's definitions format (what ``rabbitmqctl
export_definitions`` writes), so the same file can be imported into either broker.
Crash safety: written to ``definitions.json.tmp``, fsynced, renamed over
``definitions.json``, then the directory is fsynced. A crash leaves either the old or the new
file, plus perhaps a stale ``.tmp`` that the next load removes.

The file is also how the definitions say a queue was deleted: a durable queue deleted before
its worker removed its files (with its vhost) leaves a tombstone, its directory's name under
``amqpbroker_deleted_queues`` (a key RabbitMQ's import ignores), until the files are gone. A
start removes a queue directory only if a tombstone names it (``owner.py``).
"""
from __future__ import annotations

import json
import logging
import os

from ..contract import UsersOp

log = logging.getLogger("amqpbroker.definitions")

TOMBSTONES = "amqpbroker_deleted_queues"


class Definitions:
    def __init__(self, broker, path: str):
        self.broker = broker
        self.path = path
        self.loading = False
        self._retry = None
        self.tombstones: set[str] = set()   # directories of deleted queues, not yet removed

    def export(self, include_transient: bool = False) -> dict:
        b = self.broker
        out = {"rabbit_version": "3.13.0", "rabbitmq_version": "3.13.0",
               "product_name": "amqpbroker", "users": [], "vhosts": [], "permissions": [],
               "exchanges": [], "queues": [], "bindings": [], "parameters": [], "policies": [],
               "global_parameters": [], "topic_permissions": []}
        for u in b.users.users.values():
            out["users"].append({"name": u.name, "password_hash": u.password_hash,
                                 "hashing_algorithm": "rabbit_password_hashing_sha256",
                                 "tags": u.tags, "limits": u.limits})
        for (vhost, user), p in b.users.permissions.items():
            out["permissions"].append({"user": user, "vhost": vhost, "configure": p.configure,
                                       "write": p.write, "read": p.read})
        for vh in b.vhosts.values():
            out["vhosts"].append({"name": vh.name, "description": vh.description,
                                  "tags": vh.tags, "metadata": {"description": vh.description,
                                                                "tags": vh.tags},
                                  "limits": vh.limits})
            if vh.limits:           # where RabbitMQ 3.10 keeps them, and imports them from
                out["parameters"].append({"vhost": vh.name, "component": "vhost-limits",
                                          "name": "limits", "value": vh.limits})
            for ex in vh.exchanges.values():
                if ex.name == "" or ex.name.startswith("amq."):
                    continue
                if ex.durable or include_transient:
                    out["exchanges"].append({"name": ex.name, "vhost": vh.name, "type": ex.type,
                                             "durable": ex.durable, "auto_delete": ex.auto_delete,
                                             "internal": ex.internal, "arguments": ex.arguments})
            for q in vh.queues.values():
                if (q.durable and q.exclusive_owner is None) or include_transient:
                    out["queues"].append({"name": q.name, "vhost": vh.name, "durable": q.durable,
                                          "auto_delete": q.auto_delete, "arguments": q.arguments})
            for ex, dest, dtype, key, args in vh.bindings():
                if include_transient or (ex.durable and getattr(dest, "durable", False)
                                         and getattr(dest, "exclusive_owner", None) is None):
                    out["bindings"].append({"source": ex.name, "vhost": vh.name,
                                            "destination": dest.name, "destination_type": dtype,
                                            "routing_key": key, "arguments": args})
        return out

    def save(self) -> None:
        """Write the definitions; if the disk refuses, keep them in memory, raise the disk
        alarm and retry every second until a write succeeds."""
        if self.loading:
            return
        # users and permissions have no ops of their own: front-ends get them whole
        self.broker.changed(UsersOp(users=self.broker.users.users,
                                    permissions=self.broker.users.permissions))
        try:
            self._write()
        except OSError as exc:
            if self._retry is None:
                log.error("saving definitions failed: %s; retrying every second", exc)
                self.broker.alarms.set("disk_definitions", f"saving definitions failed: {exc}")
                self._retry = self.broker.loop.call_later(1.0, self._retry_save)
            return
        if "disk_definitions" in self.broker.alarms.active:
            log.warning("definitions saved")
            self.broker.alarms.clear("disk_definitions")

    def close(self) -> None:
        """Shutdown: one last try at a save that is still owed."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
            try:
                self._write()
            except OSError as exc:
                log.error("definitions not saved at shutdown: %s", exc)

    def _retry_save(self) -> None:
        self._retry = None
        self.save()

    def _write(self) -> None:
        # no indent: that keeps json on its C encoder (indent switches to the Python one)
        out = self.export()
        if self.tombstones:
            out[TOMBSTONES] = sorted(self.tombstones)
        data = json.dumps(out, default=str, separators=(",", ":")).encode()
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def load_file(self) -> dict | None:
        if os.path.exists(self.path + ".tmp"):
            os.unlink(self.path + ".tmp")
        if not os.path.exists(self.path):
            return None
        with open(self.path, "rb") as f:
            data = json.load(f)
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
                b.add_vhost(v["name"], v.get("description", ""), v.get("tags", []))
            for p in data.get("permissions", []):
                b.users.set_permissions(p["vhost"], p["user"], p.get("configure", ".*"),
                                        p.get("write", ".*"), p.get("read", ".*"))
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
        finally:
            self.loading = False
        self.save()


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
