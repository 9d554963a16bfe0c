"""The broker core: vhosts, users, durable metadata, group commit, alarms, dead-lettering.

It is I/O-free apart from storage; connections (``server/session.py``) call into it.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import uuid

from .. import errors
from ..config import Config
from ..protocol import properties as props_mod
from .alarms import Alarms
from .auth import Users
from .definitions import Definitions
from .vhost import VirtualHost

log = logging.getLogger("amqpbroker.broker")


class Broker:
    def __init__(self, config: Config, loop):
        self.config = config
        self.loop = loop
        self.users = Users()
        self.vhosts: dict[str, VirtualHost] = {}
        self.sessions: set = set()
        self.cache_used = 0
        self.data_dir = os.path.abspath(config.data_dir)
        self.definitions = Definitions(self, os.path.join(self.data_dir, "definitions.json"))
        self.alarms = Alarms(self)
        self.partitions: list = []          # PartitionClient per worker (see start)
        self.workers: list = []             # WorkerProcess per worker (none: in-process)
        self.frontends: list = []           # FrontendProcess per front-end (see supervisor/)
        self.replica = False                # a front-end's copy: the supervisor owns this
        self.forward_reply = None           # front-end: direct reply-to for another one
        from ..supervisor.metadata import LocalMetadata
        self.metadata = LocalMetadata(self)

    # ------------------------------------------------------------ lifecycle
    def start(self, partitions=None) -> None:
        """Load metadata and open every queue. ``partitions``: the clients of the worker
        processes; by default one in-process host (``--workers 0``)."""
        self.partitions = partitions or [self._local_partition()]
        os.makedirs(os.path.join(self.data_dir, "queues"), exist_ok=True)
        transient = os.path.join(self.data_dir, "transient")
        shutil.rmtree(transient, ignore_errors=True)     # non-durable queues die with the node
        os.makedirs(transient, exist_ok=True)
        data = self.definitions.load_file()
        if data is None:
            cfg = self.config
            self.definitions.loading = True
            self.users.add_user(cfg.default_user, cfg.default_pass, tags=["administrator"])
            self.add_vhost("/", "Default virtual host")
            self.users.set_permissions("/", cfg.default_user)
            self.definitions.loading = False
            self.definitions.save()
        else:
            self.definitions.apply(data)
        self._remove_orphan_queue_dirs()
        self.alarms.start()

    def _remove_orphan_queue_dirs(self) -> None:
        """A crash between deleting a queue and saving definitions can leave its directory."""
        known = {os.path.basename(q.directory) for vh in self.vhosts.values()
                 for q in vh.queues.values() if q.durable}
        root = os.path.join(self.data_dir, "queues")
        for name in os.listdir(root):
            if name not in known:
                log.warning("removing orphan queue directory %s", name)
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)

    def _local_partition(self):
        from ..partition.client import PartitionClient
        from ..partition.host import PartitionHost
        from ..partition.link import LocalLink
        client = PartitionClient(self, 0)
        LocalLink(PartitionHost(self.config, self.loop), client)
        return client

    def close(self) -> None:
        """Shutdown: hosts write and fsync what is pending and close their logs."""
        self.alarms.stop()
        self.definitions.close()
        for client in self.partitions:
            if client.link is not None:
                client.send(("close",))

    # ------------------------------------------------------------ vhosts
    def frontend_of(self, token: str):
        """The front-end process whose connection holds a reply-to token or owns a queue."""
        try:
            return self.frontends[int(token.split(".", 1)[0])]
        except (ValueError, IndexError):
            return None

    async def connection_list(self, local_sessions=()) -> list[dict]:
        """Every AMQP connection: this process's, and each front-end's."""
        from ..supervisor.frontend import session_json
        out = [session_json(s) for s in local_sessions]
        for fe in self.frontends:
            if fe.control is not None:
                try:
                    out.extend(await fe.control.request("connections"))
                except errors.AMQPError:
                    pass                        # it is restarting
        return out

    async def open_all(self) -> None:
        """Wait until every queue's worker has it open (front-ends may then use it)."""
        refs = [q for vh in self.vhosts.values() for q in vh.queues.values()]
        await asyncio.gather(*(q.opened for q in refs), return_exceptions=True)
        for q in refs:
            q.announced = True

    async def resync_frontends(self) -> None:
        """After a bulk change (definitions import): every front-end gets the whole picture
        again (ops are idempotent), once the new queues are open."""
        if self.frontends:
            from ..supervisor.metadata import snapshot
            await self.open_all()
            ops = snapshot(self)
            for fe in self.frontends:
                fe.notify("snapshot", ops)

    def changed(self, op: tuple) -> None:
        """Metadata changed here (the owner): tell every front-end (supervisor/metadata.py)."""
        for fe in self.frontends:
            fe.notify("op", op)

    def add_vhost(self, name: str, description: str = "", tags=()) -> VirtualHost:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = VirtualHost(self, name, description, tags)
            self.vhosts[name] = vh
            self.changed(("vhost", name, description, list(tags)))
            self.definitions.save()
        return vh

    def delete_vhost(self, name: str) -> bool:
        vh = self.vhosts.pop(name, None)
        if vh is None:
            return False
        for s in list(self.sessions):
            if s.vhost is vh:
                s.force_close(f"vhost '{name}' is deleted")
        for q in list(vh.queues.values()):
            if self.replica:
                vh.forget_queue(q, "vhost deleted")   # the supervisor deletes it
            else:
                vh.delete_queue(q)
        for key in [k for k in self.users.permissions if k[0] == name]:
            del self.users.permissions[key]
        self.changed(("vhost-", name))
        self.definitions.save()
        return True

    def queue_directory(self, vhost: VirtualHost, name: str, durable: bool) -> str:
        if not durable:
            return os.path.join(self.data_dir, "transient", uuid.uuid4().hex)
        digest = hashlib.sha1(f"{vhost.name}\x00{name}".encode()).hexdigest()
        return os.path.join(self.data_dir, "queues", digest)

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
                stats = await client.request("stats", [r.qid for r in group])
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
