"""The metadata owner: the supervisor's broker (or the only process's, with ``--workers 0``).

It is a ``frontend.broker.Broker`` (with ``--frontends 0`` it serves AMQP itself) that also
owns the metadata: it loads and persists the definitions, creates queue directories, places
queues on workers, tells every front-end process of each change (``changed``: an op) and of
each alarm, and answers management requests about the whole node.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import uuid

from .. import contract as c
from .. import errors
from ..frontend.admission import Admission
from ..frontend.broker import Broker
from ..frontend.session import session_json
from ..frontend.vhost import VirtualHost
from .definitions import Definitions
from .metadata import LocalMetadata, snapshot
from .tally import LocalCounts, Tally

log = logging.getLogger("amqpbroker.broker")


class MetadataOwner(Broker):
    def __init__(self, config, loop):
        super().__init__(config, loop)
        self.metadata = LocalMetadata(self)
        self.tally = Tally(self)            # the node's connections and channels
        self.admission = Admission(self, LocalCounts(self.tally))
        self.data_dir = os.path.abspath(config.data_dir)
        self.definitions = Definitions(self, os.path.join(self.data_dir, "definitions.json"))
        self.workers: list = []             # WorkerProcess per worker (none: in-process)
        self.frontends: list = []           # FrontendProcess per front-end

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
        """``--workers 0``: the queues' host runs in this process, joined by a LocalLink."""
        from ..frontend.partition_client import PartitionClient
        from ..links.local import LocalLink
        from ..worker.host import PartitionHost
        client = PartitionClient(self, 0)
        LocalLink(PartitionHost(self.config, self.loop), client)
        return client

    def close(self) -> None:
        """Shutdown: hosts write and fsync what is pending and close their logs."""
        self.alarms.stop()
        self.definitions.close()
        for client in self.partitions:
            if client.link is not None:
                client.send(c.Close())

    # ------------------------------------------------------------ hooks
    def changed(self, op) -> None:
        """Metadata changed here: tell every front-end (``metadata.py``)."""
        for fe in self.frontends:
            fe.notify(c.ApplyOp(op=op))

    def persist(self) -> None:
        self.definitions.save()

    def alarm_changed(self, name: str, detail) -> None:
        for fe in self.frontends:          # the node's alarms hold in every process
            fe.notify(c.Alarm(name=name, detail=detail))

    def child_pids(self) -> list[int]:
        return [c.pid for c in (*self.workers, *self.frontends) if c.pid]

    def drop_queue_of_deleted_vhost(self, vh: VirtualHost, q) -> None:
        vh.delete_queue(q)

    # ------------------------------------------------------------ limits
    def set_vhost_limits(self, vh: VirtualHost, limits: dict) -> None:
        """Replace a vhost's limits (max-connections, max-queues) and persist them."""
        vh.limits = dict(limits)
        self.changed(c.VhostLimitsOp(name=vh.name, limits=vh.limits))
        self.persist()

    async def sync_frontends(self, skip=None) -> None:
        """Wait until every front-end (but ``skip``) has applied the ops sent so far."""
        others = [fe.control.request(c.Sync) for fe in self.frontends
                  if fe is not skip and fe.control is not None]
        if others:
            await asyncio.gather(*others, return_exceptions=True)

    # ------------------------------------------------------------ placement
    def queue_directory(self, vhost: VirtualHost, name: str, durable: bool) -> str:
        if not durable:
            return os.path.join(self.data_dir, "transient", uuid.uuid4().hex)
        digest = hashlib.sha1(f"{vhost.name}\x00{name}".encode()).hexdigest()
        return os.path.join(self.data_dir, "queues", digest)

    # ------------------------------------------------------------ front-end processes
    def frontend_of(self, token: str):
        """The front-end process whose connection holds a reply-to token or owns a queue."""
        try:
            return self.frontends[int(token.split(".", 1)[0])]
        except (ValueError, IndexError):
            return None

    async def connection_list(self, local_sessions=()) -> list[dict]:
        """Every AMQP connection: this process's, and each front-end's."""
        out = [session_json(s) for s in local_sessions]
        for fe in self.frontends:
            if fe.control is not None:
                try:
                    out.extend(await fe.control.request(c.Connections))
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
            await self.open_all()
            ops = snapshot(self)
            for fe in self.frontends:
                fe.notify(c.Snapshot(ops=ops))
