"""Replication (issue 12 steps 5 and 6, docs/CLUSTER.md section 4): Kafka's rules for the
queues whose partition has more than one replica (quorum queues, streams, topics' partitions
with ``x-replication-factor`` > 1). A stream answers what this module asks of a queue's store
through ``Stream.store`` (``worker/stream.ReplicaStore``: its log, no acks); its consumer
groups' commits ride each reply (``FetchReply.offsets``) as a queue's acks do.

Theory of operation
-------------------
Every replica node has its own copy of the queue's files open in its host (``forward.py``
keeps a forwarded queue's local copy open). ``Replication.review`` runs on every change of
the etcd mirror, *before* the forwarder's pass, and gives each replicated queue of this node
whose keys the change touched (``follow_view``: its partition's key, its object; every queue
after a fresh list of etcd, fencing, a node's registration or a vhost that changed) a role
from its ``partitions/`` key:

* **Leader** (``Leader``): the hook of the host's queue (``Queue.replication``). Followers
  ``Fetch`` from it over the cluster link (``ForwardedLink`` hands the request here); it
  records each one's log end offset (LEO: the fetch offset, durable on the follower) and
  answers with whole batches of its log below its log end (``read_batches(written=True)``:
  what it wrote, fsynced or not), its settled offsets (the ack log's runs: acks replicate),
  a quorum queue's delivery counts (``counts``: a new leader goes on counting returns) and
  the properties ``modified`` outcomes gave its messages (``modified``: a new leader
  delivers them with the annotations),
  the idempotent producers' sequences stored in the batches it sends (``producers``: the
  follower keeps them in its ``producers.log``, so it leads with them),
  the high watermark and its epoch; a fetch with nothing new waits (long poll) until the
  next commit round has written (``on_written``, written to the followers' sockets just
  before the leader's fsync starts: the followers' fsyncs overlap it), or FETCH_WAIT.
  The high watermark (HW) is the minimum LEO over the ISR, the leader's being its durable
  offset (so a record a follower fetched before the leader's fsync is confirmed only once
  that fsync is done too); it only grows. The host confirms a publish when the HW passes its offset
  (``PartitionHost.replicated``), and nacks it at once when the ISR is smaller than
  ``min_isr`` (``accepting``); consumers see only offsets below it (``Queue.visible_end``).
  The HW moves only while this node holds its etcd lease (fencing). A publish the HW has not
  passed within ``--replica-confirm-timeout`` is nacked (``_expire``: Kafka's
  ``request.timeout.ms``; the message stays in the log).
* **Follower** (``Follower``): a task that dials the leader's cluster port, opens the queue
  and long-polls ``Fetch(offset = its log end, last_epoch = the epoch it follows,
  fetched_epoch = the epoch of its last batch)``; it appends each fetched batch as one batch
  (same base offset, same records, same leader epoch stamp: the same bytes),
  settles what the leader settled, fsyncs (so its next fetch offset means durable here) and
  fetches again. A reply of a lower epoch than the one it follows is refused.
* **Held** (``Held``): a copy with no leader to be or follow, of a queue the controller
  will replicate but has not placed yet (a declare answered after
  ``--cluster-place-timeout``; ``UNPLACED``) or of a partition with no leader (no ISR
  member alive). Its hook nacks every publish (nothing stored) and delivers nothing, as a
  follower's does (``Guard``): alone it would confirm what no other replica has.
* **Promotion**: a follower that becomes the leader stops fetching and reopens its copy
  (``PartitionHost.reopen``): what it fetched is recovered as after a restart, every message
  flagged redelivered (it may have been delivered by the old leader); its HW starts at the
  last one the old leader told it, and rises as the remaining followers fetch from it.
  Publishes that waited on a leader that lost its leadership are nacked.
* **A restarted replica** (its worker died alone, or the node restarted): a ``Leader`` told
  no HW, and every new ``Follower``, start at the HW each replica checkpoints in its
  queue's directory (checkpoint.py: written at most every 5 s and at a clean stop, used
  only while the log still holds it), else at the log start.

* **Epochs and divergence** (Kafka's KIP-101/279, as KIP-595 carries them in the fetch): a
  leader stamps its epoch into every batch it appends (``PartitionLog.leader_epoch``), and
  each log knows where each of its epochs starts (storage/epochs.py). A fetch names the
  epoch of the follower's last batch; the leader checks that its own log holds that epoch
  up to the fetch offset (``epochs.diverging``). When not (a tail the follower got, or
  wrote as an old leader, that the new leader never had), the leader answers ``diverged``
  with its largest epoch <= the follower's and where that epoch ends in its log, and the
  follower truncates to the lower of that and the end of its own such epoch
  (``epochs.truncation_offset``; ``_truncate``: the queue closed, the files cut, reopened:
  recovery rebuilds the indexes and trims the ack log), then fetches again naming the epoch
  its log now ends with, until the leader finds no divergence. Batches of one epoch were
  all written by its one leader, so logs that agree on their epochs agree byte for byte.
* **Behind the log start**: a follower whose log ends below the leader's log start (the
  leader deleted settled segments, or a stream's retention did; a replica added by a
  reassignment) gets ``behind`` and empties its log to start there (``_restart_at``: Kafka's
  OffsetOutOfRange reset to the log start), then fetches from it.
* **A gap in the middle**: a reply's next batch starting past the follower's log end, the
  offsets between all settled by the leader's ack runs (it deleted that segment), rolls the
  follower's log to a segment at the batch's base (``PartitionLog.roll_to``): the same gap,
  vouched for at recovery by the ack log, which the same sync makes say so.

Process layouts (docs/CLUSTER.md "As built (layouts)"): the roles live next to the host
that owns the queue. With ``--workers 0`` that is the supervisor (``Replication``); with
worker processes it is the worker (``WorkerReplicas``), which the supervisor's
``Replication`` feeds what it reads from etcd through contract messages on its ring link
to the worker (in order with its own commands): each queue's role (``ReplicaRole``: its
partition state and the leader's address), the lease (``LeaseUntil``); the worker's leaders
send ISR changes back on the control channel (``IsrChange``) for the supervisor to write. Fetches reach the leader's worker over the
cluster link relayed by the supervisor (``forward.WorkerRelay``); followers dial the leader
node from the worker.
"""
from __future__ import annotations

import asyncio
import collections
import glob
import itertools
import json
import logging
import os
import time
from urllib.parse import unquote

from .. import contract as c
from .. import errors
from ..links.tcp import StreamEndpoint
from ..storage.epochs import diverging, truncation_offset
from ..storage.errors import OffsetOutOfRange
from ..storage.fileformat import MAGIC_LOG, file_header, fsync_dir
from ..storage.record import LOG_VERSION
from ..storage.segment import segment_name
from ..worker.queue import Queue
from ..worker.stream import Stream
from .checkpoint import Checkpoints, start_hw
from .etcd import EtcdError, compare, put_op
from .metadata import meta_key
from .placement import PARTITIONS, partition_keys, partitions_wanted, queue_entry

log = logging.getLogger("amqpbroker.cluster")

FETCH_WAIT = 0.5            # seconds a fetch with nothing new waits (long poll)
FETCH_BYTES = 1 << 20       # record bytes per fetch reply
REPLY_TIMEOUT = 5.0         # a fetch unanswered this long: the link is dialled again
RETRY = 0.3                 # seconds between attempts after a failure
LEASE_TICK = 0.2            # seconds between looks at the lease for the worker processes

# the partition state of a queue the controller will replicate but has not placed yet: no
# leader, so its copy here is held (``Held``)
UNPLACED = {"replicas": [], "isr": [], "leader": None, "leader_epoch": 0, "unplaced": True}
NOT_LEADER = "not leader"
STALE_EPOCH = "epoch"
DIVERGED = "diverged"
BEHIND = "behind"           # the fetch offset is below the leader's log start


def _acks(q) -> tuple[int, list]:
    acks = q.store.acks
    return acks.floor, acks.done_runs()


def _offsets(q) -> dict | None:
    """A stream's group commits as written to its offset file (what the leader would
    resume from itself); None for a queue."""
    return q.offsets.in_file() if type(q) is Stream else None


def _values(q, name: str) -> dict | None:
    """A quorum queue's offset log ``name`` (worker/quorum.py): its delivery counts
    (``counts``: offset -> returns, so a new leader goes on counting where this one is) or
    modified properties (``modified``: so a new leader delivers them), of messages not
    settled; None for other queues and when there are none (most queues never requeue:
    nothing to copy or send)."""
    log_ = getattr(q, name, None)
    return dict(log_.counts) if log_ is not None and log_.counts else None


def _counts_version(q) -> tuple | None:
    counts = getattr(q, "counts", None)
    if counts is None:
        return None
    return counts.version, q.modified.version


def _all_settled(acks, first: int, end: int) -> bool:
    """The leader's ack state (``FetchReply.acks``: floor, done runs) says every offset of
    [first, end) is settled: a gap its log may have (a deleted segment), ours may copy."""
    floor, runs = acks or (0, [])
    first = max(first, floor)
    for a, b in sorted(runs):
        if a > first:
            break
        first = max(first, b)
    return first >= end


def _settled(q) -> tuple:
    """What a follower must have besides the log: the ack runs, a stream's commits, a
    quorum queue's delivery counts (by their version here: a change answers a parked
    fetch; the reply carries them whole, ``_counts``)."""
    return _acks(q), _offsets(q), _counts_version(q)


def _apply_values(q, name: str, values: dict | None, end: int):
    """Take the leader's values of offset log ``name`` (``FetchReply.counts`` or
    ``.modified``) for the messages we have (below ``end``); the log when that changed it,
    to flush and fsync, else None. A value the leader forgot (its message settled) stays
    here until a reopen drops it (``QuorumQueue._recover``: settled offsets go)."""
    mine = getattr(q, name, None)
    if values is None or mine is None:
        return None
    changed = False
    for offset, value in values.items():
        if offset < end and mine.counts.get(offset) != value:
            mine.set(offset, value)
            changed = True
    return mine if changed else None


def _sync(store, counts, producers, modified=None) -> None:
    """A follower's fsync of what a reply changed (in the executor)."""
    store.sync()
    if counts is not None:
        counts.sync()
    if modified is not None:
        modified.sync()
    if producers is not None:
        producers.sync()


class Roles:
    """One ``Leader`` or ``Follower`` per replicated queue of one host, and what they ask
    of the node (``me``, ``lag_time``, ``loop``, ``holds_lease``, ``leader_address``,
    ``write_isr``): the supervisor's ``Replication`` (``--workers 0``) or a worker's
    ``WorkerReplicas``."""

    me = ""
    lag_time = 10.0
    confirm_timeout = 30.0
    loop = None

    def __init__(self):
        self.leading: dict[tuple[str, str], Leader] = {}
        self.following: dict[tuple[str, str], Follower] = {}
        self.held: dict[tuple[str, str], Held] = {}
        self.closed = False
        self._checkpoints: Checkpoints | None = None

    @property
    def checkpoints(self) -> Checkpoints:
        """The HW checkpoint writes of this host's roles (checkpoint.py)."""
        if self._checkpoints is None:
            self._checkpoints = Checkpoints(self.loop)
        return self._checkpoints

    def _lead(self, key, pkey: str, host, q: Queue, p: dict) -> None:
        self._unhold(key)
        leader = self.leading.get(key)
        hw = None
        if leader is not None and leader.queue is not q:
            leader.stop()
            hw, leader = leader.hw, None    # the same leadership over a reopened copy
        if leader is None:
            follower = self.following.pop(key, None)
            if follower is not None:        # promoted: what it fetched becomes the queue
                follower.stop()
                hw = follower.hw
                log.info("queue '%s' in vhost '%s': this node leads at epoch %s (log end "
                         "%d, high watermark %d)", key[1], key[0], p.get("leader_epoch"),
                         q.store.log.end_offset, hw)
                q = host.reopen(q)
            leader = self.leading[key] = Leader(self, pkey, host, q, p, hw)
        leader.update(p)

    def _follow(self, key, q: Queue, p: dict, leader_at=None) -> None:
        self._unhold(key)
        leader = self.leading.pop(key, None)
        if leader is not None:
            leader.stop()                   # what waited on it is nacked
        follower = self.following.get(key)
        if follower is not None and follower.queue is not q:
            follower.stop()
            follower = None
        if follower is None:
            follower = self.following[key] = Follower(self, key, q)
        follower.leader_at = leader_at
        follower.update(p)

    def _hold(self, key, q: Queue) -> None:
        """No leader to be or follow (not placed yet, or no in-sync replica alive): our copy
        refuses what reaches it (``Held``)."""
        held = self.held.get(key)
        if held is not None and held.queue is q:
            return
        self._stop(key)                     # what waited on a leader here is nacked
        self.held[key] = Held(self, q)

    def _unhold(self, key) -> None:
        held = self.held.pop(key, None)
        if held is not None:
            held.stop()

    def _stop(self, key) -> None:
        self._unhold(key)
        leader = self.leading.pop(key, None)
        if leader is not None:
            leader.stop()
        follower = self.following.pop(key, None)
        if follower is not None:
            follower.stop()

    def _fetch(self, link, m: c.Fetch, q) -> None:
        """A follower's fetch for our queue ``q`` (None: not here)."""
        leader = q.replication if q is not None else None
        if not isinstance(leader, Leader):  # not replicated here, or our copy follows
            link.emit(c.FetchReply(req=m.req, hw=0, leader_epoch=0, log_start=0, log_end=0,
                                   error=NOT_LEADER, batches=None, acks=None, offsets=None,
                                   diverging_epoch=0, diverging_end=0, counts=None,
                                   producers=None, modified=None))
            return
        leader.fetch(link, m)

    def stop_all(self) -> None:
        self.closed = True
        # a clean stop: every HW in its file
        self.checkpoints.write_now(list(self.leading.values()) + list(self.following.values()))
        for key in list(self.leading) + list(self.following) + list(self.held):
            self._stop(key)


class Replication(Roles):
    """This node's replicas, run by the supervisor: the roles themselves when the queues
    live here (``--workers 0``), else the etcd view sent to the workers hosting them."""

    def __init__(self, node, broker, forwarder):
        super().__init__()
        self.node = node                    # ClusterNode
        self.broker = broker
        self.forwarder = forwarder
        self.loop = broker.loop
        self.lag_time = float(getattr(node.cfg, "replica_lag_time", 10.0) or 10.0)
        self.confirm_timeout = float(getattr(node.cfg, "replica_confirm_timeout", 30.0) or 30.0)
        self._parsed: dict[str, tuple[int, dict]] = {}      # key -> (mod rev, state)
        self._retry = None
        self._whole_next = False            # a pass failed: the next looks at every queue
        # worker processes: what each was told, (worker index, qid) -> ReplicaRole, and
        # the control channel it was told on (a restarted worker is told again)
        self._told: dict[tuple[int, int], c.ReplicaRole] = {}
        self._told_on: dict[int, object] = {}
        self._lease_told: dict[int, float] = {}
        self._ticker = None

    @property
    def me(self) -> str:
        return self.node.name

    def holds_lease(self) -> bool:
        return self.node.holds_lease()

    def leader_address(self, follower) -> tuple | None:
        reg = self.forwarder.registration(follower.leader or "")
        if not reg or not reg.get("cluster_port"):
            return None
        return (reg["host"], reg["cluster_port"],
                self.forwarder.worker_on(follower.leader, *follower.key))

    def write_isr(self, leader, isr: list[str], seq: int):
        return self.loop.create_task(write_isr(self.node.membership, leader.pkey, leader.me,
                                               leader.epoch, isr, seq))

    def on_isr_change(self, m: c.IsrChange) -> None:
        """A worker's leader changes its ISR (``WorkerReplicas.write_isr``)."""
        self.loop.create_task(write_isr(self.node.membership, m.key, m.leader, m.epoch,
                                        list(m.isr), m.seq))

    # ------------------------------------------------------------ roles
    def follow_view(self) -> None:
        """The membership's callback after each change of the etcd mirror: the roles of the
        queues whose keys it touched (``forward.queues_touched``: a partition key's queue,
        a queue object's), or of every queue (a fresh list of etcd, fencing, a node's
        registration or a vhost that changed, a pass that failed)."""
        from .forward import queues_touched
        queues = None if self._whole_next else queues_touched(self.node.membership.touched)
        self._whole_next = False
        self.review(queues)

    def review(self, queues=None) -> None:
        """Give the replicated queues named in ``queues`` ((vhost, name) pairs), or every
        queue (None), the role their partition state says."""
        try:
            self._review(queues)
        except Exception:
            self._whole_next = True         # what this pass left undone: the next does all
            log.exception("replication: following partition states")

    def _partition(self, vhost: str, queue: str) -> tuple[str, dict] | tuple[None, None]:
        key, kv = queue_entry(self.node.membership.view, vhost, queue)
        if kv is None:
            return None, None
        cached = self._parsed.get(key)
        if cached is None or cached[0] != kv.mod_revision:
            try:
                state = json.loads(kv.value)
            except ValueError:
                state = None
            cached = self._parsed[key] = (kv.mod_revision, state)
        return key, cached[1]

    def _replicated_here(self, queues=None):
        """(vhost, ref, partitions/ key, partition state) of each queue replicated with a
        replica on this node (two replicas or more; exclusive queues are never replicated),
        of those named in ``queues`` ((vhost, name) pairs; None: every queue). A queue the
        controller will place with two replicas or more but has not placed yet comes with
        ``UNPLACED`` (no leader: its copy here is held)."""
        me = self.node.name
        for vh, ref in self._queues(queues):
            if ref.deleted or ref.exclusive_owner is not None:
                continue
            pkey, p = self._partition(vh.name, ref.name)
            if p is None:
                pkey = self._unplaced(vh.name, ref.name)
                if pkey is not None:
                    yield vh, ref, pkey, UNPLACED
            elif len(p.get("replicas", ())) >= 2 and me in p["replicas"]:
                yield vh, ref, pkey, p

    def _unplaced(self, vhost: str, queue: str) -> str | None:
        """The partitions/ key of a queue not placed yet that the controller will place with
        two replicas or more (``placement.wanted``, over the live nodes: a quorum queue, a
        stream, a topic's partition with ``x-replication-factor`` > 1); else None."""
        view = self.node.membership.view
        nodes = max(len(self.node.membership.nodes()), 1)
        topic, _, i = queue.rpartition("-")
        for kv in (view.get(meta_key("queue", vhost, queue)),
                   view.get(meta_key("exchange", vhost, topic)) if i.isdigit() else None):
            if kv is None:
                continue
            for pkey, (_, _, _, replicas) in partitions_wanted(kv, nodes).items():
                if replicas >= 2 and pkey in partition_keys(vhost, queue):
                    return pkey
        return None

    def _queues(self, queues):
        """(vhost, ref) of the queues named in ``queues`` that exist here; every queue when
        ``queues`` is None."""
        vhosts = self.broker.vhosts
        if queues is None:
            for vh in list(vhosts.values()):
                for ref in list(vh.queues.values()):
                    yield vh, ref
            return
        for vhost, name in sorted(queues):
            vh = vhosts.get(vhost)
            ref = vh.queues.get(name) if vh is not None else None
            if ref is not None:
                yield vh, ref

    def _review(self, queues=None) -> None:
        if self.closed:
            return
        fences = self.node.membership.on_fence
        if self._unfenced not in fences:
            fences.append(self._unfenced)
        host = self.forwarder.local_host()
        if host is None:
            self._tell_workers(queues)
            return
        me = self.node.name
        seen = set()
        pending = False
        for vh, ref, pkey, p in self._replicated_here(queues):
            key = (vh.name, ref.name)
            q = host.queues.get(self._local_qid(ref))
            if not isinstance(q, (Queue, Stream)) or q.deleted:
                pending = True          # not open here yet: look again shortly
                continue
            seen.add(key)
            if p.get("leader") == me:
                self._lead(key, pkey, host, q, p)
            elif p.get("leader"):
                self._follow(key, q, p)
            else:
                self._hold(key, q)
        had = set(self.leading) | set(self.following) | set(self.held)
        for key in had if queues is None else had & set(queues):
            if key not in seen:
                self._stop(key)         # no longer replicated here, or deleted
        if pending and self._retry is None:
            self._retry = self.broker.loop.call_later(RETRY, self._retried)

    def _unfenced(self, fenced: bool) -> None:
        """The lease is held again: what ``Leader.serving`` held back may go (when the
        node still leads; a review follows the view's change otherwise)."""
        if not fenced:
            for leader in list(self.leading.values()):
                if leader.serving() and not leader.queue.deleted:
                    leader.queue.schedule_dispatch()

    def _retried(self) -> None:
        self._retry = None
        self.review()

    def _local_qid(self, ref) -> int | None:
        """The qid of this node's copy: the forwarder keeps it open when it forwards."""
        saved = self.forwarder.local_copies.get(ref)
        if saved is not None:
            return saved[1]
        from .forward import RemoteClient
        return None if isinstance(ref.client, RemoteClient) else ref.qid

    def _tell_workers(self, queues=None) -> None:
        """Worker processes host the queues: tell each worker the role of its copies
        (``ReplicaRole``) when it changed, or the worker restarted since; of the queues
        named in ``queues`` (None: every queue, as after a worker's restart)."""
        from .forward import RemoteClient
        workers = getattr(self.broker, "workers", None) or ()
        me = self.node.name
        for w in workers:
            if w.client.link is not None and self._told_on.get(w.index) is not w.control:
                self._told_on[w.index] = w.control      # a new worker: tell it all again
                self._lease_told.pop(w.index, None)
                for told in [k for k in self._told if k[0] == w.index]:
                    del self._told[told]
                queues = None
        self._tell_lease()
        seen = set()
        for vh, ref, pkey, p in self._replicated_here(queues):
            saved = self.forwarder.local_copies.get(ref)
            client, qid = saved if saved is not None else (ref.client, ref.qid)
            if isinstance(client, RemoteClient) or client.index >= len(workers):
                continue
            leader = p.get("leader")
            at = None
            if leader and leader != me:
                reg = self.forwarder.registration(leader) or {}
                at = [reg.get("host"), reg.get("cluster_port"),
                      self.forwarder.worker_on(leader, vh.name, ref.name)]
            self._tell(workers[client.index], qid,
                       c.ReplicaRole(qid=qid, node=me, key=pkey, state=p, leader_at=at),
                       seen)
        # what no longer is (deleted, no replica here any more): of the queues named, those
        # told under one of their partition keys
        pkeys = None if queues is None else {k for v, n in queues for k in partition_keys(v, n)}
        for (index, qid), told in list(self._told.items()):
            if (index, qid) not in seen and told.state is not None \
                    and (pkeys is None or told.key in pkeys):
                self._tell(workers[index], qid, told._replace(state=None, leader_at=None),
                           seen)

    def _tell(self, worker, qid: int, role: c.ReplicaRole, seen: set) -> None:
        seen.add((worker.index, qid))
        if self._told.get((worker.index, qid)) != role and worker.client.link is not None:
            self._told[worker.index, qid] = role
            worker.client.link.send(role)

    def _tell_lease(self) -> None:
        """Every worker learns until when this node holds its lease (0: fenced); checked
        every LEASE_TICK, so a renewal reaches the workers within it."""
        m = self.node.membership
        until = m.deadline if m.holds_lease() else 0.0     # 0: fenced, or the view is stale
        for w in getattr(self.broker, "workers", None) or ():
            if w.client.link is not None and self._lease_told.get(w.index) != until:
                self._lease_told[w.index] = until
                w.client.link.send(c.LeaseUntil(until=until))

    def start_workers(self) -> None:
        """With worker processes: the lease and restarted workers are looked at every
        LEASE_TICK (a renewal changes no key of the view), their ISR changes taken."""
        workers = getattr(self.broker, "workers", None) or ()
        if not workers or self.forwarder.local_host() is not None:
            return
        for w in workers:
            w.handlers[c.IsrChange] = self.on_isr_change
        self._tick()

    def _tick(self) -> None:
        if self.closed:
            return
        self._ticker = self.loop.call_later(LEASE_TICK, self._tick)
        workers = getattr(self.broker, "workers", None) or ()
        if any(w.client.link is not None and self._told_on.get(w.index) is not w.control
               for w in workers):
            self.review()                   # a restarted worker: its roles again
        else:
            self._tell_lease()
        self.forwarder.tell_frontends()     # a restarted front-end: where queues are led

    def on_fetch(self, link, m: c.Fetch, local_qid: int | None) -> None:
        """A follower's fetch on a cluster link (``ForwardedLink``), its qid mapped."""
        host = self.forwarder.local_host()
        self._fetch(link, m, host.queues.get(local_qid) if host is not None and local_qid
                    else None)

    def describe(self, vhost: str, queue: str, checksum: bool = False):
        """``replica`` below; with worker processes, a coroutine asking the worker that
        hosts the queue (``ReplicaDescribe``)."""
        if self.forwarder.local_host() is None:
            return self._ask_worker(vhost, queue, checksum)
        return self.replica(vhost, queue, checksum)

    async def _ask_worker(self, vhost: str, queue: str, checksum: bool) -> dict | None:
        from .forward import RemoteClient
        vh = self.broker.vhosts.get(vhost)
        ref = vh.queues.get(queue) if vh is not None else None
        saved = self.forwarder.local_copies.get(ref) if ref is not None else None
        client, qid = saved if saved is not None else (getattr(ref, "client", None),
                                                       getattr(ref, "qid", 0))
        workers = getattr(self.broker, "workers", None) or ()
        if client is None or isinstance(client, RemoteClient) or client.index >= len(workers) \
                or workers[client.index].control is None:
            return None
        try:
            return await workers[client.index].control.request(
                c.ReplicaDescribe, qid=qid, checksum=checksum)
        except errors.AMQPError:
            return None                     # the worker is restarting

    def replica(self, vhost: str, queue: str, checksum: bool = False) -> dict | None:
        """This node's replica of a replicated queue, for ``/api/partitions``: role, epoch,
        log end, high watermark, the epochs its log holds and where each starts
        (``leader_epochs``, storage/epochs.py: replicas that agree list the same up to the
        HW); the leader adds each follower's LEO, lag and ISR
        membership; ``checksum``: CRC32C of the log's batches from its start to the HW."""
        key = (vhost, queue)
        role = self.leading.get(key) or self.following.get(key)
        if role is None:
            return None
        q = role.queue
        if q.deleted:
            return None
        log_ = q.store.log
        leader = isinstance(role, Leader)
        out = {"node": self.me, "role": "leader" if leader else "follower",
               "leader": self.me if leader else role.leader,
               "leader_epoch": role.epoch, "log_start_offset": log_.start_offset,
               "log_end_offset": log_.end_offset, "high_watermark": role.hw,
               "high_watermark_checkpoint": role.checkpointed,
               "leader_epochs": [list(e) for e in log_.epochs.entries]}
        if leader:
            now = time.monotonic()
            end = log_.durable_offset
            out["replicas"] = list(role.replicas)
            out["isr"] = list(role.isr)
            out["min_isr"] = role.min_isr
            out["followers"] = {
                r: {"log_end_offset": role.leo.get(r), "lag": max(0, end - role.leo.get(r, 0)),
                    "in_sync": r in role.isr,
                    "last_fetch_ms_ago": (round((now - role.fetched[r]) * 1000)
                                          if r in role.fetched else None)}
                for r in role.replicas if r != self.me}
        else:
            out["diverged"] = role.diverged
        if type(q) is Stream:
            out["group_offsets"] = q.offsets.in_file()
        if checksum:
            out["crc32c"] = log_.checksum(log_.start_offset, role.hw)
        return out

    async def led_partitions(self) -> list[dict]:
        """The replicated partitions this node leads, for the metrics (``mgmt/prometheus.py``):
        vhost, topic (the queue, or a topic's name) and partition, the replicas, the ISR,
        and per follower the messages it is behind our durable log end and the seconds since
        its last fetch (None: none yet). Each leader reports its partitions: a scrape of
        every node sees each led partition once. With worker processes (the roles live
        there), asked of the worker of each queue this node leads (``ReplicaDescribe``, as
        ``describe``)."""
        if self.forwarder.local_host() is None:
            return await self._workers_led()
        now = time.monotonic()
        out = []
        for role in list(self.leading.values()):
            q = role.queue
            if role.stopped or q.deleted:
                continue
            end = q.store.log.durable_offset
            out.append(_led(role.pkey, self.node.name, role.replicas, role.isr, {
                r: (max(0, end - role.leo.get(r, 0)),
                    now - role.fetched[r] if r in role.fetched else None)
                for r in role.replicas if r != self.node.name}))
        return out

    async def _workers_led(self) -> list[dict]:
        me = self.node.name
        led = [(vh.name, ref.name, pkey) for vh, ref, pkey, p in self._replicated_here()
               if p.get("leader") == me]
        replies = await asyncio.gather(*(self._ask_worker(vhost, queue, False)
                                         for vhost, queue, _ in led))
        out = []
        for (_, _, pkey), r in zip(led, replies):
            if r and r.get("role") == "leader":
                out.append(_led(pkey, me, r["replicas"], r["isr"], {
                    f: (max(0, d["lag"]), None if d["last_fetch_ms_ago"] is None
                        else d["last_fetch_ms_ago"] / 1000)
                    for f, d in r["followers"].items()}))
        return out

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._ticker is not None:
            self._ticker.cancel()
        self.stop_all()


def _led(pkey: str, leader: str, replicas, isr, followers: dict) -> dict:
    """One row of ``led_partitions``; ``followers``: {replica: (lag, seconds since fetch)}."""
    vhost, topic, i = (unquote(x) for x in pkey[len(PARTITIONS):].split("/"))
    return {"vhost": vhost, "topic": topic, "partition": i, "leader": leader,
            "replicas": list(replicas), "isr": list(isr), "followers": followers}


async def write_isr(m, pkey: str, me: str, epoch: int, isr: list[str], seq: int) -> None:
    """One txn: the partition key as read (``MOD``), still led by ``me`` at ``epoch``; the
    controller's changes (a new leader, an epoch) make it fail, as they should. The key
    records which of the leader's writes it holds (``isr_write``: [epoch, seq]), so the
    leader knows when its view has caught up with it (``Leader.update``)."""
    kv = m.view.get(pkey)
    if kv is None:
        return
    p = json.loads(kv.value)
    if p.get("leader") != me or p.get("leader_epoch") != epoch:
        return
    new = dict(p, isr=isr, isr_write=[epoch, seq])
    try:
        held, _, _ = await m.etcd.transact(
            [compare(pkey, "MOD", "EQUAL", kv.mod_revision)],
            [put_op(pkey, json.dumps(new))])
    except (EtcdError, OSError) as exc:
        log.warning("%s: ISR change not written: %s", pkey, exc)
        return
    if held:
        log.info("%s: ISR %s -> %s (leader %s, epoch %d)", pkey, ",".join(p["isr"]),
                 ",".join(isr), me, epoch)


class WorkerReplicas(Roles):
    """The roles of a worker process's replicated queues (``worker/main.py`` makes one when
    the node is in a cluster): told by the supervisor (``ReplicaRole``, ``LeaseUntil``),
    answering fetches that reach this worker over a relayed cluster link, sending its
    leaders' ISR changes to the supervisor (``IsrChange``)."""

    def __init__(self, host, control):
        super().__init__()
        self.host = host
        self.control = control              # to the supervisor
        self.loop = host.loop
        self.lag_time = float(getattr(host.config, "replica_lag_time", 10.0) or 10.0)
        self.confirm_timeout = float(getattr(host.config, "replica_confirm_timeout", 30.0)
                                     or 30.0)
        self.until = 0.0                    # LeaseUntil
        self.told: dict[int, c.ReplicaRole] = {}            # qid -> its latest role
        host.table[c.Fetch] = self.on_fetch
        host.table[c.NodeHello] = self.on_node_hello
        # on the supervisor's ring link, in order with its commands (contract.py)
        host.table[c.ReplicaRole] = lambda state, m: self.on_replica_role(m)
        host.table[c.LeaseUntil] = lambda state, m: self.on_lease_until(m)

    def holds_lease(self) -> bool:
        return self.loop.time() < self.until

    def leader_address(self, follower) -> tuple | None:
        at = follower.leader_at
        return tuple(at) if at and at[0] and at[1] else None

    def write_isr(self, leader, isr: list[str], seq: int) -> None:
        self.control.notify(c.IsrChange(key=leader.pkey, leader=leader.me,
                                        epoch=leader.epoch, isr=isr, seq=seq))

    # ------------------------------------------------------------ from the supervisor
    def on_lease_until(self, m: c.LeaseUntil) -> None:
        self.until = m.until
        if self.holds_lease():
            for leader in list(self.leading.values()):
                leader.advance()            # a HW held while we could not tell
                if not leader.queue.deleted:
                    leader.queue.schedule_dispatch()    # consumers held back meanwhile

    def on_replica_role(self, m: c.ReplicaRole) -> None:
        self.me = m.node
        self.told[m.qid] = m
        q = self.host.queues.get(m.qid)
        if q is None:                       # its Open (on the supervisor's ring) is behind
            self.loop.call_later(RETRY, self._again, m)
            return
        key = (q.vhost_name, q.name)
        p = m.state
        if p is None or not isinstance(q, (Queue, Stream)) or q.deleted:
            self._stop(key)
        elif p.get("leader") == self.me:
            self._lead(key, m.key, self.host, q, p)
        elif p.get("leader"):
            self._follow(key, q, p, m.leader_at)
        else:
            self._hold(key, q)

    def _again(self, m: c.ReplicaRole) -> None:
        if self.told.get(m.qid) is m and not self.closed:
            self.on_replica_role(m)

    def on_replica_describe(self, m: c.ReplicaDescribe) -> dict | None:
        q = self.host.queues.get(m.qid)
        if q is None:
            return None
        # the supervisor's ``replica`` (one copy): it reads only the roles and ``me``
        return Replication.replica(self, q.vhost_name, q.name, m.checksum)

    # ------------------------------------------------------------ on relayed links
    @staticmethod
    def on_node_hello(state, m: c.NodeHello) -> None:
        state.node = m.node                 # the follower, for its fetches

    def on_fetch(self, state, m: c.Fetch) -> None:
        self._fetch(state, m, self.host.queues.get(m.qid) if m.qid else None)


class Leader:
    """The leader's side of one replicated queue: followers' LEOs, the HW, parked fetches."""

    def __init__(self, repl: Replication, pkey: str, host, q: Queue, p: dict,
                 hw: int | None):
        self.repl = repl
        self.pkey = pkey                        # its partitions/ key in etcd
        self.host = host
        self.queue = q
        self.me = repl.me
        self.epoch = p.get("leader_epoch", 0)
        self.replicas: list[str] = list(p.get("replicas", ()))
        self.isr: list[str] = list(p.get("isr", ()))
        self.min_isr = int(p.get("min_isr", 1))
        self.leo: dict[str, int] = {}           # follower -> its log end offset
        self.caught_up: dict[str, float] = {}   # follower -> when it last reached our end
        self.fetched: dict[str, float] = {}     # follower -> when it last fetched
        self.started = time.monotonic()
        self.lag_time = repl.lag_time
        # publishes still below the HW this long after they were stored are nacked
        # (Kafka's request.timeout.ms): (log end, when) marks, one per ISR check
        self.confirm_timeout = repl.confirm_timeout
        self._marks: collections.deque = collections.deque()
        self.expired_below = 0                  # offsets below it, above the HW: nacked
        self._isr_write: asyncio.Task | None = None
        # Kafka's "maximal ISR" (KIP-497): the replicas each ISR write of ours adds, by the
        # write's number, until the view shows the key holding that write or a later one.
        # The HW counts them as in-sync from the moment the write is sent: once it is in
        # etcd the controller may elect any of them, so nothing may be confirmed without
        # them meanwhile (the checker's seed 302: a follower added to the ISR, elected at
        # once as the preferred leader, lacked a message the old leader had just confirmed).
        self._isr_seq = 0
        self._adding: dict[int, set[str]] = {}
        self._isr_timer = host.loop.call_later(self._isr_every, self._check_isr)
        self.sent_acks: dict[str, tuple] = {}   # follower -> the ack state last sent
        self.parked: dict = {}                  # (link, req) -> (link, Fetch, timer)
        self.stopped = False
        # a leader told no HW (a restarted process: its worker died alone, or the node
        # restarted) starts at its checkpointed HW (checkpoint.py), else at its log start:
        # not at its durable end, its tail may be one the followers never got
        log_ = q.store.log
        # idempotent producers: a follower fetched the leader's records, not its producer
        # state; rebuilt from the log's tail as Kafka does, so a producer's retry of what
        # the old leader confirmed is a duplicate here too, not stored twice
        q.producers.catch_up(log_, always=True)
        self.checkpointed = None                # the HW its checkpoint file holds
        if hw is None:
            hw, self.checkpointed = start_hw(log_)
        self.hw = min(hw, log_.durable_offset)
        log_.leader_epoch = self.epoch              # what we append carries our epoch
        q.replication = self
        q.visible_end = self.hw
        pump = getattr(q, "pump_discards", None)
        if pump is not None:                # its held dead letters are ours to send now
            host.loop.call_soon(pump)
        host.replicating += 1
        host.committer.listeners.add(self)
        host.committer.write_listeners.add(self)

    def update(self, p: dict) -> None:
        self.epoch = p.get("leader_epoch", self.epoch)
        self.queue.store.log.leader_epoch = self.epoch
        self.replicas = list(p.get("replicas", ()))
        self.isr = list(p.get("isr", ()))
        self.min_isr = int(p.get("min_isr", 1))
        written = p.get("isr_write") or (0, 0)
        if written[0] == self.epoch:        # our writes up to written[1] are in the view
            for seq in [s for s in self._adding if s <= written[1]]:
                del self._adding[seq]
        self.advance()
        if self.serving() and not self.queue.deleted:
            self.queue.schedule_dispatch()  # consumers held back while the lease was in doubt

    # ------------------------------------------------------------ the host's questions
    def accepting(self) -> bool:
        """A publish may be stored: enough in-sync replicas, and this node is not fenced."""
        return (not self.stopped and len(self.isr) >= self.min_isr
                and self.repl.holds_lease())

    def serving(self) -> bool:
        """Consumers may be given messages: this node holds its etcd lease. A leader paused
        past its lease (SIGSTOP) wakes deposed, and must not hand out its copy's messages
        before its membership notices (the fence timer runs after the socket reads that
        woke with it): the new leader delivers them."""
        return not self.stopped and self.repl.holds_lease()

    def passed(self, offset: int) -> bool | None:
        """Confirm (True), nack (False: leadership lost), or wait (None)."""
        if self.stopped:
            return False
        if offset < self.hw:
            return True
        return False if offset < self.expired_below else None

    def _expire(self, now: float) -> None:
        """Nack the publishes waiting for a HW that has not passed them within
        ``confirm_timeout`` of being stored (the ISR fell below ``min_isr`` after they were
        accepted, the lease is gone, followers stall): a mark (end, t) says every offset below
        ``end`` was stored by ``t``, so the nack comes between the timeout and the timeout plus
        one ISR check (``_isr_every``). As Kafka's timed-out produce, a nacked message stays
        in the log: the HW may still pass it later, and consumers then get it."""
        marks = self._marks
        hw = self.hw
        while marks and marks[0][0] <= hw:
            marks.popleft()
        end = self.queue.store.log.end_offset
        if end > max(hw, marks[-1][0] if marks else 0):
            marks.append((end, now))
        expired = self.expired_below
        while marks and now - marks[0][1] >= self.confirm_timeout:
            expired = max(expired, marks.popleft()[0])
        if expired > self.expired_below:
            log.warning("%s: publishes at offsets %d..%d not replicated within %.0f s (ISR %s, "
                        "min %d): nacked", self.pkey, max(hw, self.expired_below), expired - 1,
                        self.confirm_timeout, ",".join(self.isr), self.min_isr)
            self.expired_below = expired
            self.host.replicated()

    # ------------------------------------------------------------ high watermark
    def advance(self) -> None:
        if self.stopped or not self.repl.holds_lease():
            return
        q = self.queue
        hw = q.store.log.durable_offset
        for r in self.maximal_isr():
            if r != self.me:
                hw = min(hw, self.leo.get(r, 0))
        if hw > self.hw and len(self.isr) >= self.min_isr:
            self.hw = hw
            q.visible_end = hw
            q.schedule_dispatch()
            self.host.replicated()
            self.repl.checkpoints.mark(self)

    def on_commit(self, gen: int) -> None:
        """A commit round made more of the log durable (and settled more): the HW may move,
        parked fetches have something to take."""
        if self.stopped:
            return
        self.advance()
        end = self.queue.store.log.end_offset
        acks = _settled(self.queue)
        for key, (link, m, timer) in list(self.parked.items()):
            if m.offset < end or acks != self.sent_acks.get(link.node):
                timer.cancel()
                del self.parked[key]
                self._answer(link, m)

    def on_written(self) -> None:
        """A commit round wrote and is about to fsync: parked fetches take what it wrote
        now, so the followers' fsyncs run beside ours (the HW still waits for ours:
        ``advance``). The answers are written to their sockets here, before the fsync
        thread is woken (a link without ``flush``, a worker's ring, writes at its turn)."""
        if self.stopped or not self.parked:
            return
        end = self.queue.store.log.end_offset
        answered = []
        for key, (link, m, timer) in list(self.parked.items()):
            if m.offset < end:
                timer.cancel()
                del self.parked[key]
                self._answer(link, m)
                answered.append(link)
        for link in answered:           # on the wire now, not at the loop's next turn
            flush = getattr(link, "flush", None)
            if flush is not None:
                flush()

    # ------------------------------------------------------------ fetches
    def fetch(self, link, m: c.Fetch) -> None:
        if self.stopped or not self.repl.holds_lease():
            self._error(link, m, NOT_LEADER)
            return
        if m.last_epoch != self.epoch:
            self._error(link, m, STALE_EPOCH)
            return
        q = self.queue
        log_ = q.store.log
        node = link.node
        diverged = diverging(log_, m.fetched_epoch, m.offset)
        if diverged is not None:
            self._error(link, m, DIVERGED, diverged)
            return
        end = log_.durable_offset
        self.leo[node] = m.offset
        now = self.fetched[node] = time.monotonic()
        if m.offset >= end:
            self.caught_up[node] = now
        self.advance()
        if m.offset < log_.end_offset or _settled(q) != self.sent_acks.get(node):
            self._answer(link, m)
            return
        key = (link, m.req)
        timer = q.host.loop.call_later(FETCH_WAIT, self._expired, key)
        self.parked[key] = (link, m, timer)

    def _expired(self, key) -> None:
        got = self.parked.pop(key, None)
        if got is not None and not self.stopped:
            self._answer(got[0], got[1])

    def _answer(self, link, m: c.Fetch) -> None:
        q = self.queue
        log_ = q.store.log
        try:
            batches = log_.read_batches(m.offset, min(m.max_bytes or FETCH_BYTES, FETCH_BYTES),
                                        written=True)
        except OffsetOutOfRange as exc:     # behind our log start: it restarts its log there
            self._error(link, m, f"{BEHIND}: {exc}")
            return
        acks, offsets, _ = self.sent_acks[link.node] = _settled(q)
        counts = _values(q, "counts")
        # the idempotent producers' sequences stored in these batches: the follower keeps
        # them, so it leads with the producers' state (worker/dedup.py)
        producers = (q.producers.stored_between(m.offset, batches[-1][0] + batches[-1][2].count)
                     if batches and q.producers.recent else None)
        link.emit(c.FetchReply(req=m.req, hw=self.hw, leader_epoch=self.epoch,
                               log_start=log_.start_offset, log_end=log_.durable_offset,
                               error="", batches=[(base, epoch, run.count, run.data, crc)
                                                  for base, epoch, run, crc in batches],
                               acks=acks, offsets=offsets,
                               diverging_epoch=0, diverging_end=0, counts=counts,
                               producers=producers, modified=_values(q, "modified")))

    def _error(self, link, m: c.Fetch, error: str, diverged=(0, 0)) -> None:
        log_ = self.queue.store.log
        link.emit(c.FetchReply(req=m.req, hw=self.hw, leader_epoch=self.epoch,
                               log_start=log_.start_offset, log_end=log_.end_offset,
                               error=error, batches=None, acks=None, offsets=None,
                               diverging_epoch=diverged[0], diverging_end=diverged[1],
                               counts=None, producers=None, modified=None))

    # ------------------------------------------------------------ the ISR (through etcd)
    @property
    def _isr_every(self) -> float:
        return max(0.1, min(1.0, self.lag_time / 4, self.confirm_timeout / 4))

    def maximal_isr(self) -> set[str]:
        """The ISR in etcd, with what our ISR writes not yet in the view may have added."""
        return set(self.isr).union(*self._adding.values())

    def _check_isr(self) -> None:
        """A follower that has not reached our log end for ``replica_lag_time`` leaves the
        ISR; one that has fetched up to the HW meanwhile comes back (Kafka's rules)."""
        if self.stopped:
            return
        self._isr_timer = self.host.loop.call_later(self._isr_every, self._check_isr)
        now = time.monotonic()
        self._expire(now)
        if self._isr_write is not None and not self._isr_write.done():
            return
        if not self.repl.holds_lease():
            return
        maximal = self.maximal_isr()
        lagging = {r for r in maximal if r != self.me
                   and now - self.caught_up.get(r, self.started) > self.lag_time}
        back = {r for r in self.replicas if r not in maximal and r in self.leo
                and self.leo[r] >= self.hw and now - self.fetched.get(r, 0) < self.lag_time}
        if not lagging and not back:
            return
        isr = [r for r in self.replicas
               if (r in maximal and r not in lagging) or r in back]
        self._isr_seq += 1
        self._adding[self._isr_seq] = set(isr) - set(self.isr)
        # the supervisor's etcd write (a task), or a notice to it from a worker (None)
        self._isr_write = self.repl.write_isr(self, isr, self._isr_seq)

    def stop(self) -> None:
        """Leadership ended: publishes waiting for the HW are nacked, fetches refused."""
        if self.stopped:
            return
        self.stopped = True
        self._isr_timer.cancel()
        if self._isr_write is not None:
            self._isr_write.cancel()
        q = self.queue
        # the node leaving (``stop_all``): the copy stays guarded by this stopped leader, which
        # refuses every publish and delivery, until the host closes. Unguarded, it was a plain
        # queue meanwhile: a publish still reaching it (the AMQP listener closes after the
        # cluster is left) was confirmed after its own commit round and cut later as a
        # divergent tail (the checker, seed 2, a rolling restart: 106 confirmed lost)
        if not (self.repl.closed and q.replication is self):
            if q.replication is self:
                q.replication = None
                q.visible_end = Queue.ALL_VISIBLE
                if not q.deleted:
                    q.schedule_dispatch()
            self.host.replicating -= 1
        self.host.committer.listeners.discard(self)
        self.host.committer.write_listeners.discard(self)
        self.host.replicated()
        for link, m, timer in self.parked.values():
            timer.cancel()
            self._error(link, m, NOT_LEADER)
        self.parked.clear()


class Guard:
    """The hook (``Queue.replication``) of a copy that must not store or deliver on its own:
    a publish that reaches it is nacked, consumers get nothing from it. Only the leader
    stores: a copy that took a publish would confirm it after its own commit, and lose it
    when it follows a leader that never had it (cut as a divergent tail, or not in the log
    of a leader placed elsewhere)."""

    stopped = False

    def __init__(self, repl, q: Queue):
        self.repl = repl
        self.queue = q
        self._guard(q)

    def _guard(self, q) -> None:
        if q.replication is None:
            q.replication = self
            q.host.replicating += 1

    def _unguard(self) -> None:
        q = self.queue
        if q.replication is self:
            q.replication = None
            q.host.replicating -= 1

    def accepting(self) -> bool:
        return False                        # a publish here is nacked: the leader stores

    def passed(self, offset: int) -> bool:
        return False

    def serving(self) -> bool:
        return False                        # consumers are the leader's (forward.py moves them)

    def stop(self) -> None:
        self.stopped = True
        if not self.repl.closed:        # leaving (``stop_all``): stays guarded (``Leader.stop``)
            self._unguard()


class Held(Guard):
    """A replicated queue's copy with no leader to be or follow: the controller has not
    placed it yet (its declare was answered after ``--cluster-place-timeout``; a topic's
    partition made before its key), or no in-sync replica is alive to lead it. Held, not a
    plain queue: a publish the declaring node's copy confirmed alone before the placement
    was missing from the leader the controller then chose (one CI failure, docs/CLUSTER.md
    "As built (step 4)")."""


class Follower(Guard):
    """One replicated queue this node follows: a task fetching from the leader. Its copy is
    guarded (``Guard``): a publish forwarded across a leader move, or sent by a node whose
    view is behind, is nacked (found by the checker's cuts)."""

    _reqs = itertools.count(1)

    def __init__(self, repl: Replication, key: tuple[str, str], q: Queue):
        super().__init__(repl, q)
        self.key = key
        self.leader: str | None = None
        self.leader_at = None               # [host, port, worker] (WorkerReplicas)
        self.epoch = 0
        # the HW the leader last told us (a restarted replica: its checkpoint's)
        self.hw, self.checkpointed = start_hw(q.store.log)
        self.diverged = False
        self.end: StreamEndpoint | None = None
        self.waiting: dict[int, asyncio.Future] = {}
        self.task = repl.loop.create_task(self._run(), name=f"follow-{key[1]}")

    def update(self, p: dict) -> None:
        leader, epoch = p.get("leader"), p.get("leader_epoch", 0)
        if leader != self.leader and self.end is not None:
            self.end.close()                # the next fetch dials the new leader
            self._lost(self.end)
        self.leader, self.epoch = leader, epoch

    def stop(self) -> None:
        super().stop()
        self.task.cancel()
        if self.end is not None:
            self.end.close()
            self._lost(self.end)

    # ------------------------------------------------------------ the link
    async def _dial(self) -> StreamEndpoint | None:
        at = self.repl.leader_address(self)
        if at is None:
            return None
        host, port, worker = at
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), REPLY_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            log.debug("replication link to %s: %s", self.leader, exc)
            return None
        end = StreamEndpoint(reader, writer, self._on_batch, on_close=self._lost)
        end.send(c.NodeHello(node=self.repl.me, worker=worker))
        end.start()
        q = self.queue
        req = next(self._reqs)
        fut = self.waiting[req] = self.repl.loop.create_future()
        end.send(c.Open(req=req, qid=q.qid, vhost=q.vhost_name, name=q.name, durable=q.durable,
                        auto_delete=q.auto_delete, arguments=q.arguments, directory=""))
        self.end = end
        try:
            reply = await asyncio.wait_for(fut, REPLY_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError):
            reply = None
        if reply is None or not reply.ok:
            end.close()
            self._lost(end)
            return None
        return end

    def _on_batch(self, batch) -> None:
        for m in batch:
            fut = self.waiting.pop(getattr(m, "req", 0), None)
            if fut is not None and not fut.done():
                fut.set_result(m)

    def _lost(self, end) -> None:
        if self.end is end:
            self.end = None
        for fut in self.waiting.values():
            if self.stopped:
                fut.cancel()                # nobody awaits it any more
            elif not fut.done():
                fut.set_exception(ConnectionError("replication link lost"))
        self.waiting.clear()

    # ------------------------------------------------------------ fetching
    async def _run(self) -> None:
        loop = self.repl.loop
        while not self.stopped and not self.diverged:
            try:
                if self.end is None:
                    if await self._dial() is None:
                        await asyncio.sleep(RETRY)
                        continue
                q = self.queue
                req = next(self._reqs)
                fut = self.waiting[req] = loop.create_future()
                log_ = q.store.log
                self.end.send(c.Fetch(req=req, qid=q.qid, offset=log_.end_offset,
                                      last_epoch=self.epoch, fetched_epoch=log_.last_epoch(),
                                      max_bytes=FETCH_BYTES))
                try:
                    reply = await asyncio.wait_for(fut, REPLY_TIMEOUT)
                except asyncio.TimeoutError:
                    if self.end is not None:
                        end = self.end
                        end.close()
                        self._lost(end)
                    continue
                if reply.error == DIVERGED and reply.leader_epoch >= self.epoch:
                    self._truncate(q, reply)
                    continue
                if reply.error.startswith(BEHIND) and reply.leader_epoch >= self.epoch \
                        and reply.log_start > q.store.log.end_offset:
                    self._restart_at(q, reply.log_start)
                    continue
                if reply.error:
                    await asyncio.sleep(RETRY / 3)     # the etcd view catches up meanwhile
                    continue
                if reply.leader_epoch < self.epoch:
                    continue                # a deposed leader's answer
                await self._apply(q, reply)
            except asyncio.CancelledError:
                raise
            except ConnectionError:
                await asyncio.sleep(RETRY / 3)
            except Exception:
                if self.stopped:
                    return
                log.exception("replication of queue '%s' in vhost '%s' from %s",
                              self.key[1], self.key[0], self.leader)
                await asyncio.sleep(RETRY)

    async def _apply(self, q: Queue, reply: c.FetchReply) -> None:
        """Append the batches as they are, settle what the leader settled, fsync: the next
        fetch offset is durable here."""
        if self.stopped or q.deleted:
            return
        store, log_ = q.store, q.store.log
        changed = False
        active = log_.active_base
        for base, epoch, count, data, crc in reply.batches or ():
            if base > log_.end_offset and _all_settled(reply.acks, log_.end_offset, base):
                log_.roll_to(base)          # the leader's gap (all settled, deleted there)
            if base != log_.end_offset:
                break                       # not contiguous: fetched again from our end
            # the leader's records as its batch holds them, its stamp, as fetched: no record
            # decoded or encoded again (append_raw checks the run's layout, and that the
            # batch has the leader's CRC: the same bytes)
            log_.append_raw([(data, count)], epoch, crc)
            changed = True
        if log_.active_base != active:
            store.rolled_from(active)       # what rolled may be settled already
        floor, runs = reply.acks or (0, [])
        end = log_.end_offset
        acks = store.acks
        for first, stop in ([(0, floor)] if floor else []) + list(runs):
            for a, b in acks.not_done(max(first, log_.start_offset), min(stop, end)):
                for o in range(a, b):
                    store.settle(o)
                changed = True
        if reply.offsets is not None and type(q) is Stream and q.apply_offsets(reply.offsets):
            changed = True
        counts = _apply_values(q, "counts", reply.counts, end)
        modified = _apply_values(q, "modified", reply.modified, end)
        producers = q.producers if q.producers.copy(reply.producers, end) else None
        if changed or counts is not None or producers is not None or modified is not None:
            store.flush()
            if counts is not None:
                counts.flush()
            if modified is not None:
                modified.flush()
            if producers is not None:
                producers.flush()
            await self.repl.loop.run_in_executor(None, _sync, store, counts, producers,
                                                 modified)
            if not q.deleted and not self.stopped:
                store.after_sync()
        hw = min(reply.hw, log_.end_offset)
        if hw > self.hw:
            self.hw = hw
            self.repl.checkpoints.mark(self)

    def _truncate(self, q: Queue, reply: c.FetchReply) -> None:
        """Our log has batches the leader's has not (a tail this replica got, or wrote as a
        leader, that was never confirmed): cut it where the leader's answer says
        (``epochs.truncation_offset``) and fetch from there."""
        log_ = q.store.log
        cut = truncation_offset(log_, reply.diverging_epoch, reply.diverging_end)
        if cut >= log_.end_offset:
            self.diverged = True            # nothing of ours to cut: a bug, not a loop
            log.error("queue '%s' in vhost '%s': the leader %s refuses this replica's log "
                      "(end %d, epoch %d) but its epoch %d ends at %d; it stops following",
                      self.key[1], self.key[0], self.leader, log_.end_offset,
                      log_.last_epoch(), reply.diverging_epoch, reply.diverging_end)
            return
        log.warning("queue '%s' in vhost '%s': this replica's log (end %d, epoch %d) diverges "
                    "from the leader %s's at offset %d (its epoch %d ends there): truncated "
                    "there", self.key[1], self.key[0], log_.end_offset, log_.last_epoch(),
                    self.leader, cut, reply.diverging_epoch)
        cuts = log_.cut_points(cut)
        host = q.host
        self._unguard()
        self.queue = host.reopen(q, lambda: truncate_files(cuts))
        self._guard(self.queue)
        self.hw = min(self.hw, cut)
        self.checkpointed = None            # its file may name a cut offset: written again

    def _restart_at(self, q, start: int) -> None:
        """Our log ends below the leader's log start (it deleted what we lack: settled
        segments, a stream's retention; we are a new replica, or were away): Kafka's
        OffsetOutOfRange reset. Our log is emptied to start at the leader's log start (what
        is below it is gone there: settled or retained out) and fetched from there."""
        log_ = q.store.log
        log.warning("queue '%s' in vhost '%s': this replica's log (%d..%d) ends below the "
                    "leader %s's log start %d: emptied, following from there", self.key[1],
                    self.key[0], log_.start_offset, log_.end_offset, self.leader, start)
        directory = log_.directory
        self._unguard()
        self.queue = q.host.reopen(q, lambda: restart_files(directory, start))
        self._guard(self.queue)
        self.checkpointed = None


def restart_files(directory: str, start: int) -> None:
    """Make a closed log's directory an empty log starting at ``start``: every segment's
    files removed, one empty segment ``start`` made (what retention leaves once it deleted
    everything but a fresh active segment, so recovery knows it), fsynced. The queue's
    other files (ack log, group offsets, producers) stay: they name offsets below ``start``
    that are settled anyway, and the leader's next replies bring theirs."""
    for path in glob.glob(os.path.join(directory, "[0-9]*.*")):
        base = os.path.basename(path).split(".", 1)[0]     # a segment's: 20 digits
        if base.isdigit() and len(base) == len(segment_name(0)):
            os.unlink(path)
    if not os.path.isdir(directory):        # a partition never written to has none yet
        os.makedirs(directory)
        fsync_dir(os.path.dirname(os.path.abspath(directory)))
    path = os.path.join(directory, segment_name(start) + ".log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, file_header(MAGIC_LOG, LOG_VERSION))
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(directory)


def truncate_files(cuts) -> None:
    """Cut a closed log's segment files (``PartitionLog.cut_points``): keep a length, or
    remove a segment (its indexes are orphans recovery deletes), fsynced."""
    dirs = set()
    for path, keep in cuts:
        if keep is None:
            os.unlink(path)
        else:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, keep)
                os.fsync(fd)
            finally:
                os.close(fd)
        dirs.add(os.path.dirname(path))
    for d in dirs:
        fsync_dir(d)
