"""The definitions journal: every durable metadata change since the last snapshot.

Theory of operation
-------------------
The durable metadata is ``definitions.json`` (the *snapshot*, RabbitMQ's definitions format,
``definitions.py``) plus ``definitions.journal``, an entry file (``storage/entryfile.py``: an
8-byte header with magic ``AQMD`` and schema version, then entries ``u32 length, u32
crc32c, payload``). Each entry is one group commit: a JSON list of changes, each a list
``[kind, ...]``:

    ["vhost+", item]      ["vhost-", name]            a vhost and everything in it
    ["exchange+", item]   ["exchange-", vhost, name]  an exchange and its bindings both ways
    ["queue+", item]      ["queue-", vhost, name]     a queue and the bindings to it
    ["binding+", item]    ["binding-", item]
    ["policy+", item]     ["policy-", vhost, name]    a policy
    ["operator-policy+", item]  ["operator-policy-", vhost, name]    an operator policy
    ["users", users, permissions, topic_permissions]  all users and permissions, whole
                                                      (no topic_permissions: before 2026-12)
    ["global-parameters", {name: value}]              the global parameters, whole
    ["parameter+", item]  ["parameter-", vhost, component, name]    a runtime parameter (a
                                                      shovel's; a vhost's limits are its own)
    ["tombstone+", dir]   ["tombstone-", dir]         ``TOMBSTONES`` (definitions.py)

``item`` is the object's entry exactly as the snapshot holds it. A ``-`` removes what the
object owns as RabbitMQ's deletes do (an exchange's bindings, a vhost's contents), so a name
deleted and made again does not get its old bindings back. Replaying a change over a state
that already holds it changes nothing, which is what makes the compaction below safe.

Compaction (``definitions.Definitions.compact``): a new snapshot of the whole state is written
(``.tmp``, fsync, rename, directory fsync), then the journal is replaced by an empty one the
same way. A crash between the two leaves a snapshot that already holds the journal's changes:
replaying them again is harmless.

What a crash can leave: a journal whose last entry is torn or fails its CRC (cut at start, with
a log line; that entry's changes were never acknowledged, since a reply waits for the fsync);
a journal with an unreadable header (a warning; it starts empty); a stray ``.tmp`` of either
file (removed).
"""
from __future__ import annotations

import json
import logging

from ..storage.entryfile import EntryFile
from ..storage.fileformat import MAGIC_DEFINITIONS, entry, file_header

log = logging.getLogger("amqpbroker.definitions")

TOMBSTONES = "amqpbroker_deleted_queues"    # the definitions' key of the tombstones


def global_parameter_items(parameters: dict) -> list:
    """``{name: value}`` as the definitions format lists global parameters."""
    return [{"name": k, "value": v} for k, v in parameters.items()]


class DefinitionsJournal(EntryFile):
    MAGIC = MAGIC_DEFINITIONS
    WHAT = "definitions journal"
    LOST = "the metadata changes since the last snapshot are lost"

    def __init__(self, path: str):
        self.changes: list = []         # what the file held at open, in order
        self._open_file(path, "always", 0, None)

    @property
    def size(self) -> int:
        return self._size

    def _apply(self, payload: bytes) -> bool:
        try:
            changes = json.loads(payload)
        except ValueError:
            return False
        if not isinstance(changes, list) or not all(isinstance(ch, list) and ch
                                                    for ch in changes):
            return False
        self.changes.extend(changes)
        return True

    def append(self, changes: list) -> None:
        """Write one entry of ``changes`` and fsync it (raises OSError if the disk refuses:
        nothing of the entry is left in the file then)."""
        with self._lock:
            self._check_open()
            self._append(entry(json.dumps(changes, default=str,
                                          separators=(",", ":")).encode()))
        self.sync()

    def _compact_locked(self) -> None:
        self._rewrite(file_header(self.MAGIC))      # the snapshot holds everything


# ------------------------------------------------------------------ replay
def binding_key(item: dict) -> tuple:
    return (item["vhost"], item["source"], item.get("destination_type", "queue"),
            item["destination"], item.get("routing_key", ""),
            json.dumps(item.get("arguments") or {}, default=str, sort_keys=True))


class DefinitionsState:
    """A definitions document keyed by object, to replay journal changes over."""

    def __init__(self, doc: dict):
        from .definitions import vhost_limits       # (definitions.py imports this module)
        self.doc = doc
        limits = vhost_limits(doc)
        self.vhosts = {v["name"]: dict(v, limits=limits.get(v["name"], v.get("limits", {})))
                       for v in doc.get("vhosts", [])}
        self.exchanges = {(e["vhost"], e["name"]): e for e in doc.get("exchanges", [])}
        self.queues = {(q["vhost"], q["name"]): q for q in doc.get("queues", [])}
        self.bindings = {binding_key(b): b for b in doc.get("bindings", [])}
        self.policies = {(p["vhost"], p["name"]): p for p in doc.get("policies", [])}
        self.operator_policies = {(p["vhost"], p["name"]): p
                                  for p in doc.get("operator_policies", [])}
        self.tombstones = set(doc.get(TOMBSTONES, ()))
        self.parameters = {(p["vhost"], p["component"], p["name"]): p
                           for p in doc.get("parameters", [])
                           if p.get("component") != "vhost-limits"}

    def replay(self, changes: list) -> None:
        for ch in changes:
            kind = ch[0]
            if kind == "vhost+":
                self.vhosts[ch[1]["name"]] = ch[1]
            elif kind == "vhost-":
                self._drop_vhost(ch[1])
            elif kind == "exchange+":
                self.exchanges[(ch[1]["vhost"], ch[1]["name"])] = ch[1]
            elif kind == "exchange-":
                vhost, name = ch[1], ch[2]
                self.exchanges.pop((vhost, name), None)
                self._drop_bindings(lambda k: k[0] == vhost and (
                    k[1] == name or (k[2] == "exchange" and k[3] == name)))
            elif kind == "queue+":
                self.queues[(ch[1]["vhost"], ch[1]["name"])] = ch[1]
            elif kind == "queue-":
                vhost, name = ch[1], ch[2]
                self.queues.pop((vhost, name), None)
                self._drop_bindings(lambda k: k[0] == vhost and k[2] == "queue"
                                    and k[3] == name)
            elif kind == "binding+":
                self.bindings[binding_key(ch[1])] = ch[1]
            elif kind == "binding-":
                self.bindings.pop(binding_key(ch[1]), None)
            elif kind == "policy+":
                self.policies[(ch[1]["vhost"], ch[1]["name"])] = ch[1]
            elif kind == "policy-":
                self.policies.pop((ch[1], ch[2]), None)
            elif kind == "operator-policy+":
                self.operator_policies[(ch[1]["vhost"], ch[1]["name"])] = ch[1]
            elif kind == "operator-policy-":
                self.operator_policies.pop((ch[1], ch[2]), None)
            elif kind == "users":
                self.doc["users"], self.doc["permissions"] = ch[1], ch[2]
                if len(ch) > 3:
                    self.doc["topic_permissions"] = ch[3]
            elif kind == "global-parameters":
                self.doc["global_parameters"] = global_parameter_items(ch[1])
            elif kind == "parameter+":
                p = ch[1]
                self.parameters[(p["vhost"], p["component"], p["name"])] = p
            elif kind == "parameter-":
                self.parameters.pop((ch[1], ch[2], ch[3]), None)
            elif kind == "tombstone+":
                self.tombstones.add(ch[1])
            elif kind == "tombstone-":
                self.tombstones.discard(ch[1])
            else:
                log.warning("definitions journal: unknown change %r ignored", kind)

    def _drop_vhost(self, name: str) -> None:
        self.vhosts.pop(name, None)
        for table in (self.exchanges, self.queues, self.policies, self.operator_policies,
                      self.parameters):
            for key in [k for k in table if k[0] == name]:
                del table[key]
        self._drop_bindings(lambda k: k[0] == name)

    def _drop_bindings(self, matches) -> None:
        for key in [k for k in self.bindings if matches(k)]:
            del self.bindings[key]

    def document(self) -> dict:
        """The state as a definitions document (``Definitions.apply`` reads it)."""
        out = dict(self.doc)
        out.update(vhosts=list(self.vhosts.values()), exchanges=list(self.exchanges.values()),
                   queues=list(self.queues.values()), bindings=list(self.bindings.values()),
                   policies=list(self.policies.values()),
                   operator_policies=list(self.operator_policies.values()),
                   parameters=list(self.parameters.values()))
        if self.tombstones:
            out[TOMBSTONES] = sorted(self.tombstones)
        else:
            out.pop(TOMBSTONES, None)
        return out
