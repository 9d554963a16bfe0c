"""The metadata owner: the supervisor's broker (or the only process's, with ``--workers 0``).

It is a ``frontend.broker.Broker`` (with ``--frontends 0`` it serves AMQP itself) that also
owns the metadata: it loads and persists the definitions, creates queue directories, places
queues on workers, tells every front-end process of each change (``changed``: an op) and of
each alarm, and answers management requests about the whole node.

Queue directories: ``queues/<sha256 of the length-prefixed vhost and name>``, so no two
(vhost, name) pairs share one; directories named the old way (``sha1(vhost NUL name)``, which
two pairs could share) are renamed at start. A start never removes a queue's files unless the
definitions say the queue was deleted (a tombstone, ``definitions.py``) or a removal had begun
(``*.deleted``: a worker renames a deleted queue's directory to such a trash name and removes
it in the background, ``storage/trash.py``); a directory no defined queue owns is otherwise
kept and reported. A queue that cannot be opened stays defined, down
(``frontend/queue_ref.py``), with its files. A defined queue whose directory is missing (made
without an fsync, then a crash: the journal is what says the queue exists) opens empty.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import uuid

from .. import contract as c, prefault
from ..frontend.admission import Admission
from ..frontend.broker import Broker, worker_of
from ..frontend.events import INTERNAL_USER, acting, emit_metadata
from ..frontend.session import NODE, connection_name, session_json
from ..frontend.vhost import VirtualHost
from ..federation.registry import Federation
from ..shovel.shovels import Shovels
from ..storage.fileformat import fsync_dir, remove_directory
from ..tracing import Traces
from .definitions import Definitions
from .delayed import DelayedMessages
from .groups import Groups
from .metadata import LocalMetadata, global_parameters_op, queue_op, snapshot
from .recent_history import RecentHistory
from .tally import LocalCounts, Tally
from .topics import Topics

log = logging.getLogger("amqpbroker.broker")

# a management call asks every front-end at once and waits at most this long for each, so a
# front-end that is restarting or stalled does not hang the API
CHILD_ANSWER_TIMEOUT = 2.0


class MetadataOwner(Broker):
    owns_metadata = True            # its changes are the events (frontend/events.py)

    def __init__(self, config, loop):
        super().__init__(config, loop)
        self.metadata = LocalMetadata(self)
        self.tally = Tally(self)            # the node's connections and channels
        self.admission = Admission(self, LocalCounts(self.tally))
        self.data_dir = os.path.abspath(config.data_dir)
        self.definitions = Definitions(self, os.path.join(self.data_dir, "definitions.json"))
        self.workers: list = []             # WorkerProcess per worker (none: in-process)
        self.frontends: list = []           # FrontendProcess per front-end
        self.topics = Topics(self)          # partitioned exchanges and their partitions
        self.groups = Groups(self)          # consumer groups' membership
        self.cluster = None                 # cluster.node.ClusterNode with --cluster
        self.delayed = None                 # delayed.DelayedMessages, from ``start``
        self.shovels = Shovels(self)        # dynamic shovels (amqpbroker/shovel)
        self.federation = Federation(self)  # federation links (amqpbroker/federation)
        self.mqtt = None                    # the MQTT listener (amqpbroker/mqtt), when on
        self.stomp = None                   # the STOMP listener (amqpbroker/stomp), when on
        self.stream = None                  # the stream protocol's (amqpbroker/stream_protocol)
        self.recent = RecentHistory(self)   # x-recent-history exchanges' histories
        self.traces = Traces(self)          # the rabbitmq_tracing plugin's (tracing.py)
        self._batch: list | None = None     # ops of the change being made (one_change)
        self.listeners: list[dict] = []     # {"protocol", "ip_address", "port"} (management)

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
        else:
            self._rename_old_queue_dirs(data.get("queues", []))
            self.definitions.apply(data, recovering=True)
        self._sweep_queue_dirs()
        self.recent.load()
        self.definitions.compact()      # a new snapshot of all of it; the journal starts empty
        self.alarms.start()
        # messages held by x-delayed-message exchanges (their timer starts with the ready
        # line: cli.py)
        self.delayed = DelayedMessages(self, self.data_dir)

    def _rename_old_queue_dirs(self, queues: list) -> None:
        """Give each stored durable queue's directory its new name, unless two queues claim
        the same old one (names the old naming did not tell apart): that one stays as it is
        (kept, reported) and those queues start empty."""
        root = os.path.join(self.data_dir, "queues")
        claims: dict[str, list] = {}
        for q in queues:
            if q.get("durable", True):
                claims.setdefault(old_queue_dir_name(q["vhost"], q["name"]), []).append(q)
        renamed = False
        for old, owners in claims.items():
            if not os.path.isdir(os.path.join(root, old)):
                continue
            if len(owners) > 1:
                log.error("queue directory %s is claimed by %s: left as it is, those queues "
                          "start empty", old, ", ".join(f"queue {q['name']!r} in vhost "
                                                        f"{q['vhost']!r}" for q in owners))
                continue
            q = owners[0]
            new = queue_dir_name(q["vhost"], q["name"])
            if os.path.exists(os.path.join(root, new)):
                log.error("queue %r in vhost %r has two directories, %s and %s (old naming): "
                          "the old one is left as it is", q["name"], q["vhost"], new, old)
                continue
            os.rename(os.path.join(root, old), os.path.join(root, new))
            renamed = True
            log.info("queue %r in vhost %r: directory %s renamed to %s", q["name"], q["vhost"],
                     old, new)
        if renamed:
            fsync_dir(root)

    def _sweep_queue_dirs(self) -> None:
        """Remove the files of deleted queues and nothing else: a directory no defined queue
        owns goes only if a tombstone names it or its removal had begun (``*.deleted``); any
        other is kept — it may hold the only copy of messages — and reported."""
        owned = {os.path.basename(q.directory) for vh in self.vhosts.values()
                 for q in vh.queues.values() if q.durable}
        root = os.path.join(self.data_dir, "queues")
        tombstones = self.definitions.tombstones
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if name in owned:
                continue
            if name in tombstones or name.endswith(".deleted"):
                log.info("removing the files of a deleted queue: %s", path)
                remove_directory(path)
            else:
                log.warning("queue directory %s belongs to no defined queue: kept (remove it "
                            "by hand if its messages are not wanted)", path)
        tombstones.clear()              # the compaction that follows stores that

    def delete_vhost(self, name: str) -> bool:
        """Its shovels stop and go with it."""
        deleted = super().delete_vhost(name)
        if deleted:
            self.shovels.vhost_deleted(name)
            self.federation.vhost_deleted(name)
            if self.mqtt is not None:
                self.mqtt.retained.vhost_deleted(name)
        return deleted

    def _local_partition(self):
        """``--workers 0``: the queues' host runs in this process, joined by a LocalLink."""
        from ..frontend.partition_client import PartitionClient
        from ..links.local import LocalLink
        from ..worker.host import PartitionHost
        client = PartitionClient.of(self, 0)
        LocalLink(PartitionHost(self.config, self.loop), client)
        return client

    def close(self) -> None:
        """Shutdown: hosts write and fsync what is pending and close their logs."""
        self.alarms.stop()
        self.traces.close()
        self.recent.save()
        self.definitions.close()
        if self.delayed is not None:
            self.delayed.close()
        for client in self.partitions:
            if client.link is not None:
                client.send(c.Close())

    # ------------------------------------------------------------ hooks
    def changed(self, op) -> None:
        """Metadata changed here: tell every front-end (``metadata.py``), and the journal
        (``definitions.py``)."""
        self.stats.on_metadata_op(op)           # queues created / deleted (amqpbroker/stats)
        if isinstance(op, c.ExchangeDeleted):   # its recent history goes with it
            self.recent.forget(op.vhost, op.name)
        elif isinstance(op, c.VhostDeleted):
            self.recent.forget(op.name)
            self.traces.vhost_deleted(op.name)
        self.definitions.touched(op)
        self.metadata.changed(op)               # a cluster's: users, vhosts go to etcd
        self.federation.changed(op)             # which links run may change
        if self._batch is not None:
            self._batch.append(op)
            return
        for fe in self.frontends:
            fe.notify(c.ApplyOp(op=op))

    def persist(self) -> None:
        """Durable metadata changed: the journal commits at the end of this loop turn (what
        changed it learnt from ``changed``); ``definitions.durable()`` waits for it."""
        self.definitions.commit_soon()

    @contextlib.contextmanager
    def one_change(self):
        """The metadata changes made inside (without suspending) are one change: every
        front-end gets their ops in one ``ApplyOps`` and applies them together, and the
        definitions commit them once (as they do all changes of a loop turn). Nested, it is
        part of the outer change."""
        if self._batch is not None:
            yield
            return
        self._batch = []
        try:
            yield
        finally:
            ops = self._batch
            self._batch = None
            if ops:
                for fe in self.frontends:
                    fe.notify(c.ApplyOps(ops=ops))

    def history_bound(self, vh, ex, destination) -> None:
        """A new binding to an x-recent-history exchange, made here: its history goes to
        the destination (not to a binding restored at start or imported)."""
        if not self.events_quiet and not self.definitions.loading:
            self.recent.deliver(vh, ex, destination)

    def alarm_changed(self, name: str, detail) -> None:
        with acting(self, INTERNAL_USER):
            emit_metadata(self, "alarm.set" if detail is not None else "alarm.cleared",
                          {"source": name, "node": NODE})
        if name == "memory":               # its heap prefaulter's, where it holds queues
            prefault.hold(detail is not None)
        for fe in self.frontends:          # the node's alarms hold in every process
            fe.notify(c.Alarm(name=name, detail=detail))
        for w in self.workers:             # a worker trims its heap while memory's is on
            if w.control is not None and not w.control.closed:
                w.control.notify(c.Alarm(name=name, detail=detail))

    def child_pids(self) -> list[int]:
        return [c.pid for c in (*self.workers, *self.frontends) if c.pid]

    def group_revoked(self, client, m) -> None:
        self.groups.revoked(client, m)

    def drop_queue_of_deleted_vhost(self, vh: VirtualHost, q,
                                    reason: str = "vhost deleted") -> None:
        if not q.durable:
            vh.delete_queue(q, reason)
            return
        # the definitions forget the queue before its worker removes its files: a tombstone,
        # saved with them, says the files are owed a removal until the worker has done it
        tombstone = os.path.basename(q.directory)
        self.definitions.add_tombstone(tombstone)
        vh.forget_queue(q, reason)
        if q.client.link is not None:       # else its worker is restarting: the next start
            done = q.client.request(c.Delete, qid=q.qid, if_unused=False, if_empty=False)
            done.add_done_callback(functools.partial(self._queue_files_removed, tombstone))

    def _queue_files_removed(self, tombstone: str, done) -> None:
        if not done.cancelled() and done.exception() is None:
            self.definitions.discard_tombstone(tombstone)

    # ------------------------------------------------------------ vhost tracing, parameters
    def set_tracing(self, vh: VirtualHost, on: bool) -> None:
        """Firehose tracing of a vhost on or off (frontend/trace.py): not stored."""
        if vh.tracing != on:
            vh.tracing = on
            self.changed(c.VhostTracingOp(name=vh.name, on=on))

    def set_global_parameter(self, name: str, value) -> None:
        """Set (``value`` not None) or clear a global runtime parameter, and persist it."""
        if value is None:
            self.global_parameters.pop(name, None)
        else:
            self.global_parameters[name] = value
        self.changed(global_parameters_op(self))
        self.persist()

    # ------------------------------------------------------------ a queue's expiry
    def set_queue_expires(self, q, expires_ms: int) -> None:
        """A queue's own ``x-expires`` changed after its declare: an MQTT 5 client changed
        its session's expiry (RabbitMQ's ``update_session_expiry_interval`` rewrites the
        queue's arguments the same way). Its host takes it at once (the timer counts again
        from now), the definitions store it, the front-ends' copies learn it."""
        if q.arguments.get("x-expires") == expires_ms or q.deleted:
            return
        q.arguments = dict(q.arguments, **{"x-expires": expires_ms})
        q.apply_policy()                # the effective arguments, sent to its hosts
        if q.durable:
            self.definitions.queue_made(q.vhost.name, q.name)
        self.changed(queue_op(q))
        self.persist()

    # ------------------------------------------------------------ limits
    def set_vhost_limits(self, vh: VirtualHost, limits: dict) -> None:
        """Replace a vhost's limits (max-connections, max-queues) and persist them."""
        vh.limits = dict(limits)
        self.changed(c.VhostLimitsOp(name=vh.name, limits=vh.limits))
        self.persist()
        emit_metadata(self, "vhost.limits.set", {"name": "limits", "vhost": vh.name,
                                                 **vh.limits})

    async def sync_frontends(self, skip=None) -> None:
        """Wait until every front-end (but ``skip``) has applied the ops sent so far."""
        others = [fe.control.request(c.Sync) for fe in self.frontends
                  if fe is not skip and fe.control is not None]
        if others:
            await asyncio.gather(*others, return_exceptions=True)

    # ------------------------------------------------------------ placement
    def place(self, vhost: VirtualHost, name: str):
        """A topic's partitions go round the workers from the topic's own place
        (``topics.py``); any other queue where its name hashes."""
        worker = self.topics.partition_worker(vhost, name)
        if worker is None:
            worker = worker_of(vhost.name, name, len(self.partitions))
        return self.partitions[worker]

    def queue_directory(self, vhost: VirtualHost, name: str, durable: bool) -> str:
        if not durable:
            return os.path.join(self.data_dir, "transient", uuid.uuid4().hex)
        directory = queue_dir_name(vhost.name, name)
        self.definitions.discard_tombstone(directory)      # the name is in use again
        self.definitions.queue_made(vhost.name, name)
        return os.path.join(self.data_dir, "queues", directory)

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
        asked = [fe.control.request(c.Connections) for fe in self.frontends
                 if fe.control is not None]
        for answer in await asyncio.gather(*(asyncio.wait_for(a, CHILD_ANSWER_TIMEOUT)
                                             for a in asked), return_exceptions=True):
            if isinstance(answer, list):
                out.extend(answer)              # else it is restarting, or too busy to say
        return out

    async def close_connection(self, name: str, reason: str, local_sessions=()) -> bool:
        """Close the AMQP connection named ``name`` (320 CONNECTION_FORCED with ``reason``),
        in this process or in whichever front-end has it; False if none has it."""
        for s in list(local_sessions):
            if connection_name(s) == name:
                s.force_close(reason)
                return True
        asked = [fe.control.request(c.CloseConnection, name=name, reason=reason)
                 for fe in self.frontends if fe.control is not None]
        answers = await asyncio.gather(*(asyncio.wait_for(a, CHILD_ANSWER_TIMEOUT)
                                         for a in asked), return_exceptions=True)
        return any(a is True for a in answers)

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


def queue_dir_name(vhost: str, name: str) -> str:
    """A durable queue's directory: a hash of the length-prefixed vhost and name, so that no
    two (vhost, name) pairs share one (both may hold any character, NUL included)."""
    v, n = vhost.encode(), name.encode()
    return hashlib.sha256(len(v).to_bytes(4, "big") + v + n).hexdigest()


def old_queue_dir_name(vhost: str, name: str) -> str:
    """The directory name before ``queue_dir_name``: ``("a", "b\\0c")`` and ``("a\\0b", "c")``
    shared one."""
    return hashlib.sha1(f"{vhost}\x00{name}".encode()).hexdigest()
