"""The broker as a front-end sees it: vhosts, users, sessions, alarms, and the partition
clients that reach the queues.

Two roles share this class's parts (see ``supervisor/owner.py``):

* ``Broker`` — a front-end process's *copy* of the metadata. It never changes metadata
  itself: channels ask ``self.metadata`` (``frontend/metadata_copy.RemoteMetadata``) and the
  supervisor's ops keep the copy current (``metadata_copy.apply_op``). Nothing is persisted.
* ``supervisor.owner.MetadataOwner`` — the supervisor's (or the only process's): it owns the
  metadata, persists it, places queues on workers and tells front-ends of every change.
"""
from __future__ import annotations

import hashlib
import logging

from .. import contract as c
from .. import errors
from ..config import Config
from ..protocol import properties as props_mod
from .alarms import Alarms
from .auth import Users
from .vhost import VirtualHost

log = logging.getLogger("amqpbroker.broker")


class Broker:
    def __init__(self, config: Config, loop, metadata=None):
        self.config = config
        self.loop = loop
        self.users = Users()
        self.vhosts: dict[str, VirtualHost] = {}
        self.sessions: set = set()
        self.cache_used = 0
        self.alarms = Alarms(self)
        self.partitions: list = []          # PartitionClient per worker
        self.metadata = metadata            # how channels change metadata
        self.admission = None               # how sessions are counted (frontend/admission.py)
        self.forward_reply = None           # direct reply-to for another front-end's connection

    # ------------------------------------------------------------ hooks of the owner
    def changed(self, op) -> None:
        """Metadata changed: a copy has nobody to tell."""

    def persist(self) -> None:
        """Durable metadata changed: a copy does not persist."""

    def alarm_changed(self, name: str, detail) -> None:
        """An alarm was set or cleared here: a copy has nobody to tell."""

    def child_pids(self) -> list[int]:
        return []

    def drop_queue_of_deleted_vhost(self, vh: VirtualHost, q) -> None:
        vh.forget_queue(q, "vhost deleted")     # the supervisor deletes it

    # ------------------------------------------------------------ vhosts
    def add_vhost(self, name: str, description: str = "", tags=()) -> VirtualHost:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = VirtualHost(self, name, description, tags)
            self.vhosts[name] = vh
            self.changed(c.VhostOp(name=name, description=description, tags=list(tags)))
            self.persist()
        return vh

    def delete_vhost(self, name: str) -> bool:
        vh = self.vhosts.pop(name, None)
        if vh is None:
            return False
        for s in list(self.sessions):
            if s.vhost is vh:
                s.force_close(f"vhost '{name}' is deleted")
        for q in list(vh.queues.values()):
            self.drop_queue_of_deleted_vhost(vh, q)
        for key in [k for k in self.users.permissions if k[0] == name]:
            del self.users.permissions[key]
        self.changed(c.VhostDeleted(name=name))
        self.persist()
        return True

    # ------------------------------------------------------------ partitions
    def place(self, vhost: VirtualHost, name: str):
        """The partition client of the worker that owns queue ``name`` (stable by name)."""
        digest = hashlib.sha1(f"{vhost.name}\x00{name}".encode()).digest()
        return self.partitions[int.from_bytes(digest[:4], "big") % len(self.partitions)]

    async def queue_stats(self, refs) -> dict:
        """QueueRef -> (ready, consumers, unacked, ready bytes), one request per host."""
        by_client: dict = {}
        for ref in refs:
            by_client.setdefault(ref.client, []).append(ref)
        out = {}
        for client, group in by_client.items():
            try:
                stats = await client.request(c.Stats, qids=[r.qid for r in group])
            except errors.AMQPError:
                stats = {}          # the worker is restarting
            for r in group:
                out[r] = stats.get(r.qid, (0, 0, 0, 0))
        return out

    def route_dead_letter(self, vhost_name: str, exchange: str, keys, record, skip) -> None:
        """A host dead-lettered ``record``: route it through ``exchange`` as a publish."""
        vhost = self.vhosts.get(vhost_name)
        ex = vhost.exchanges.get(exchange) if vhost is not None else None
        if ex is None:
            return
        scan = props_mod.scan(record.properties)
        headers = props_mod.decode(record.properties).headers if scan.has_headers else None
        priority = scan.priority or 0
        for ref in vhost.route(ex, keys, headers):
            if ref is not skip:
                ref.publish(record, priority, False)
