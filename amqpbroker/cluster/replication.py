"""Replication (issue 12 step 5, docs/CLUSTER.md section 4): Kafka's rules for the queues
whose partition has more than one replica (quorum queues, topics' partitions with
``x-replication-factor`` > 1). Streams are not replicated yet.

Theory of operation
-------------------
Every replica node has its own copy of the queue's files open in its host (``forward.py``
keeps a forwarded queue's local copy open). ``Replication.review`` runs on every change of
the etcd mirror, *before* the forwarder's pass, and gives each replicated queue of this node
a role from its ``partitions/`` key:

* **Leader** (``Leader``): the hook of the host's queue (``Queue.replication``). Followers
  ``Fetch`` from it over the cluster link (``ForwardedLink`` hands the request here); it
  records each one's log end offset (LEO: the fetch offset, durable on the follower) and
  answers with whole batches of its log below its own durable offset (``read_batches``), its
  settled offsets (the ack log's runs: acks replicate), the high watermark and its epoch; a
  fetch with nothing new waits (long poll) for the next commit round, or FETCH_WAIT.
  The high watermark (HW) is the minimum LEO over the ISR, the leader's being its durable
  offset; it only grows. The host confirms a publish when the HW passes its offset
  (``PartitionHost.replicated``), and nacks it at once when the ISR is smaller than
  ``min_isr`` (``accepting``); consumers see only offsets below it (``Queue.visible_end``).
  The HW moves only while this node holds its etcd lease (fencing).
* **Follower** (``Follower``): a task that dials the leader's cluster port, opens the queue
  and long-polls ``Fetch(offset = its log end, last_epoch = the epoch it follows)``; it
  appends each fetched batch as one batch (same base offset, same records: the same bytes),
  settles what the leader settled, fsyncs (so its next fetch offset means durable here) and
  fetches again. A reply of a lower epoch than the one it follows is refused.
* **Promotion**: a follower that becomes the leader stops fetching and reopens its copy
  (``PartitionHost.reopen``): what it fetched is recovered as after a restart, every message
  flagged redelivered (it may have been delivered by the old leader); its HW starts at the
  last one the old leader told it, and rises as the remaining followers fetch from it.
  Publishes that waited on a leader that lost its leadership are nacked.

* **Divergence**: each fetch names the CRC of the follower's last batch; the leader checks
  that its own batch ending at that offset has it (``_agrees``). When not (a tail the
  follower got, or wrote as an old leader, that the new leader never had), the leader
  answers ``diverged`` with its batches' (base, end, CRC), and the follower truncates to the
  last batch both hold (``_truncate``: the queue closed, the files cut, reopened: recovery
  rebuilds the indexes and trims the ack log) before fetching again. This is KIP-101/279's
  outcome found by content rather than by a leader-epoch checkpoint (docs/CLUSTER.md).

Not built yet (docs/CLUSTER.md "As built (step 5)"): a follower behind the leader's log
start (segments the leader deleted once acked) stops following, logged.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time

from .. import contract as c
from ..links.tcp import StreamEndpoint
from ..storage.errors import OffsetOutOfRange
from ..storage.fileformat import fsync_dir
from ..worker.queue import Queue
from .etcd import EtcdError, compare, put_op
from .placement import queue_entry

log = logging.getLogger("amqpbroker.cluster")

FETCH_WAIT = 0.5            # seconds a fetch with nothing new waits (long poll)
FETCH_BYTES = 1 << 20       # record bytes per fetch reply
REPLY_TIMEOUT = 5.0         # a fetch unanswered this long: the link is dialled again
RETRY = 0.3                 # seconds between attempts after a failure

NOT_LEADER = "not leader"
STALE_EPOCH = "epoch"
DIVERGED = "diverged"


def _acks(q) -> tuple[int, list]:
    acks = q.store.acks
    return acks.floor, acks.done_runs()


class Replication:
    """This node's replicas: one ``Leader`` or ``Follower`` per replicated queue."""

    def __init__(self, node, broker, forwarder):
        self.node = node                    # ClusterNode
        self.broker = broker
        self.forwarder = forwarder
        self.leading: dict[tuple[str, str], Leader] = {}
        self.following: dict[tuple[str, str], Follower] = {}
        self.closed = False
        self._parsed: dict[str, tuple[int, dict]] = {}      # key -> (mod rev, state)
        self._retry = None

    # ------------------------------------------------------------ roles
    def review(self) -> None:
        try:
            self._review()
        except Exception:
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

    def _review(self) -> None:
        if self.closed:
            return
        fences = self.node.membership.on_fence
        if self._unfenced not in fences:
            fences.append(self._unfenced)
        host = self.forwarder.local_host()
        if host is None:
            return                          # worker processes: not served (forward.py)
        me = self.node.name
        seen = set()
        pending = False
        for vh in list(self.broker.vhosts.values()):
            for ref in list(vh.queues.values()):
                if ref.deleted or ref.exclusive_owner is not None:
                    continue
                pkey, p = self._partition(vh.name, ref.name)
                if p is None or len(p.get("replicas", ())) < 2 or me not in p["replicas"]:
                    continue
                key = (vh.name, ref.name)
                q = host.queues.get(self._local_qid(ref))
                if not isinstance(q, Queue) or q.deleted:
                    pending = True          # not open here yet: look again shortly
                    continue
                seen.add(key)
                if p.get("leader") == me:
                    self._lead(key, pkey, host, q, p)
                elif p.get("leader"):
                    self._follow(key, ref, q, p)
                else:
                    self._stop(key)
        for key in set(self.leading) | set(self.following):
            if key not in seen:
                self._stop(key)
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

    def _lead(self, key, pkey: str, host, q: Queue, p: dict) -> None:
        leader = self.leading.get(key)
        if leader is not None and leader.queue is not q:
            leader.stop()
            leader = None
        if leader is None:
            hw = None
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

    def _follow(self, key, ref, q: Queue, p: dict) -> None:
        leader = self.leading.pop(key, None)
        if leader is not None:
            leader.stop()                   # what waited on it is nacked
        follower = self.following.get(key)
        if follower is not None and follower.queue is not q:
            follower.stop()
            follower = None
        if follower is None:
            follower = self.following[key] = Follower(self, key, q)
        follower.update(p)

    def _stop(self, key) -> None:
        leader = self.leading.pop(key, None)
        if leader is not None:
            leader.stop()
        follower = self.following.pop(key, None)
        if follower is not None:
            follower.stop()

    def on_fetch(self, link, m: c.Fetch, local_qid: int | None) -> None:
        """A follower's fetch on a cluster link (``ForwardedLink``), its qid mapped."""
        host = self.forwarder.local_host()
        q = host.queues.get(local_qid) if host is not None and local_qid else None
        leader = q.replication if q is not None else None
        if leader is None:
            link.emit(c.FetchReply(req=m.req, hw=0, leader_epoch=0, log_start=0, log_end=0,
                                   error=NOT_LEADER, batches=None, acks=None))
            return
        leader.fetch(link, m)

    def describe(self, vhost: str, queue: str, checksum: bool = False) -> dict | None:
        """This node's replica of a replicated queue, for ``/api/partitions``: role, epoch,
        log end, high watermark; the leader adds each follower's LEO, lag and ISR
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
        out = {"node": self.node.name, "role": "leader" if leader else "follower",
               "leader": self.node.name if leader else role.leader,
               "leader_epoch": role.epoch, "log_start_offset": log_.start_offset,
               "log_end_offset": log_.end_offset, "high_watermark": role.hw}
        if leader:
            now = time.monotonic()
            end = log_.durable_offset
            out["isr"] = list(role.isr)
            out["min_isr"] = role.min_isr
            out["followers"] = {
                r: {"log_end_offset": role.leo.get(r), "lag": end - role.leo.get(r, 0),
                    "in_sync": r in role.isr,
                    "last_fetch_ms_ago": (round((now - role.fetched[r]) * 1000)
                                          if r in role.fetched else None)}
                for r in role.replicas if r != self.node.name}
        else:
            out["diverged"] = role.diverged
        if checksum:
            out["crc32c"] = log_.checksum(log_.start_offset, role.hw)
        return out

    async def close(self) -> None:
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
        for key in list(self.leading) + list(self.following):
            self._stop(key)


class Leader:
    """The leader's side of one replicated queue: followers' LEOs, the HW, parked fetches."""

    def __init__(self, repl: Replication, pkey: str, host, q: Queue, p: dict,
                 hw: int | None):
        self.repl = repl
        self.pkey = pkey                        # its partitions/ key in etcd
        self.host = host
        self.queue = q
        self.me = repl.node.name
        self.epoch = p.get("leader_epoch", 0)
        self.replicas: list[str] = list(p.get("replicas", ()))
        self.isr: list[str] = list(p.get("isr", ()))
        self.min_isr = int(p.get("min_isr", 1))
        self.leo: dict[str, int] = {}           # follower -> its log end offset
        self.caught_up: dict[str, float] = {}   # follower -> when it last reached our end
        self.fetched: dict[str, float] = {}     # follower -> when it last fetched
        self.started = time.monotonic()
        self.lag_time = float(getattr(repl.node.cfg, "replica_lag_time", 10.0) or 10.0)
        self._isr_write: asyncio.Task | None = None
        self._isr_timer = host.loop.call_later(self._isr_every, self._check_isr)
        self.sent_acks: dict[str, tuple] = {}   # follower -> the ack state last sent
        self.sent_ends: dict[str, tuple] = {}   # follower -> (next offset, CRC) of the
        #                                         last batch sent: its next fetch's check
        self.parked: dict = {}                  # (link, req) -> (link, Fetch, timer)
        self.stopped = False
        durable = q.store.log.durable_offset
        self.hw = durable if hw is None else min(hw, durable)
        q.replication = self
        q.visible_end = self.hw
        host.replicating += 1
        host.committer.listeners.add(self)

    def update(self, p: dict) -> None:
        self.epoch = p.get("leader_epoch", self.epoch)
        self.replicas = list(p.get("replicas", ()))
        self.isr = list(p.get("isr", ()))
        self.min_isr = int(p.get("min_isr", 1))
        self.advance()
        if self.serving() and not self.queue.deleted:
            self.queue.schedule_dispatch()  # consumers held back while the lease was in doubt

    # ------------------------------------------------------------ the host's questions
    def accepting(self) -> bool:
        """A publish may be stored: enough in-sync replicas, and this node is not fenced."""
        return (not self.stopped and len(self.isr) >= self.min_isr
                and self.repl.node.holds_lease())

    def serving(self) -> bool:
        """Consumers may be given messages: this node holds its etcd lease. A leader paused
        past its lease (SIGSTOP) wakes deposed, and must not hand out its copy's messages
        before its membership notices (the fence timer runs after the socket reads that
        woke with it): the new leader delivers them."""
        return not self.stopped and self.repl.node.holds_lease()

    def passed(self, offset: int) -> bool | None:
        """Confirm (True), nack (False: leadership lost), or wait (None)."""
        if self.stopped:
            return False
        return True if offset < self.hw else None

    # ------------------------------------------------------------ high watermark
    def advance(self) -> None:
        if self.stopped or not self.repl.node.holds_lease():
            return
        q = self.queue
        hw = q.store.log.durable_offset
        for r in self.isr:
            if r != self.me:
                hw = min(hw, self.leo.get(r, 0))
        if hw > self.hw and len(self.isr) >= self.min_isr:
            self.hw = hw
            q.visible_end = hw
            q.schedule_dispatch()
            self.host.replicated()

    def on_commit(self, gen: int) -> None:
        """A commit round made more of the log durable (and settled more): the HW may move,
        parked fetches have something to take."""
        if self.stopped:
            return
        self.advance()
        end = self.queue.store.log.durable_offset
        acks = _acks(self.queue)
        for key, (link, m, timer) in list(self.parked.items()):
            if m.offset < end or acks != self.sent_acks.get(link.node):
                timer.cancel()
                del self.parked[key]
                self._answer(link, m)

    # ------------------------------------------------------------ fetches
    def fetch(self, link, m: c.Fetch) -> None:
        if self.stopped or not self.repl.node.holds_lease():
            self._error(link, m, NOT_LEADER)
            return
        if m.last_epoch != self.epoch:
            self._error(link, m, STALE_EPOCH)
            return
        q = self.queue
        log_ = q.store.log
        node = link.node
        if not self._agrees(node, m):
            self._error(link, m, DIVERGED, log_.batch_bounds(log_.start_offset))
            return
        end = log_.durable_offset
        self.leo[node] = m.offset
        now = self.fetched[node] = time.monotonic()
        if m.offset >= end:
            self.caught_up[node] = now
        self.advance()
        if m.offset < end or _acks(q) != self.sent_acks.get(node):
            self._answer(link, m)
            return
        key = (link, m.req)
        timer = q.host.loop.call_later(FETCH_WAIT, self._expired, key)
        self.parked[key] = (link, m, timer)

    def _agrees(self, node: str, m: c.Fetch) -> bool:
        """The follower's log ends where one of our batches ends, with the same CRC (its
        last batch is ours): read from our headers unless it is the one we last sent it."""
        log_ = self.queue.store.log
        if m.offset > log_.end_offset:
            return False
        if m.offset <= log_.start_offset or self.sent_ends.get(node) == (m.offset, m.last_crc):
            return True
        last = log_.batch_bounds(m.offset - 1, limit=1)
        return bool(last) and last[0][1] == m.offset and last[0][2] == m.last_crc

    def _expired(self, key) -> None:
        got = self.parked.pop(key, None)
        if got is not None and not self.stopped:
            self._answer(got[0], got[1])

    def _answer(self, link, m: c.Fetch) -> None:
        q = self.queue
        log_ = q.store.log
        try:
            batches = log_.read_batches(m.offset, min(m.max_bytes or FETCH_BYTES, FETCH_BYTES))
        except OffsetOutOfRange as exc:     # behind our log start: not built (module doc)
            self._error(link, m, f"behind: {exc}")
            return
        acks = _acks(q)
        self.sent_acks[link.node] = acks
        if batches:
            base, crc, records = batches[-1]
            self.sent_ends[link.node] = (base + len(records), crc)
        link.emit(c.FetchReply(req=m.req, hw=self.hw, leader_epoch=self.epoch,
                               log_start=log_.start_offset, log_end=log_.durable_offset,
                               error="", batches=batches, acks=acks))

    def _error(self, link, m: c.Fetch, error: str, batches=None) -> None:
        log_ = self.queue.store.log
        link.emit(c.FetchReply(req=m.req, hw=self.hw, leader_epoch=self.epoch,
                               log_start=log_.start_offset, log_end=log_.end_offset,
                               error=error, batches=batches, acks=None))

    # ------------------------------------------------------------ the ISR (through etcd)
    @property
    def _isr_every(self) -> float:
        return max(0.1, min(1.0, self.lag_time / 4))

    def _check_isr(self) -> None:
        """A follower that has not reached our log end for ``replica_lag_time`` leaves the
        ISR; one that has fetched up to the HW meanwhile comes back (Kafka's rules)."""
        if self.stopped:
            return
        self._isr_timer = self.host.loop.call_later(self._isr_every, self._check_isr)
        if self._isr_write is not None and not self._isr_write.done():
            return
        if not self.repl.node.holds_lease():
            return
        now = time.monotonic()
        lagging = {r for r in self.isr if r != self.me
                   and now - self.caught_up.get(r, self.started) > self.lag_time}
        back = {r for r in self.replicas if r not in self.isr and r in self.leo
                and self.leo[r] >= self.hw and now - self.fetched.get(r, 0) < self.lag_time}
        if not lagging and not back:
            return
        isr = [r for r in self.replicas
               if (r in self.isr and r not in lagging) or r in back]
        self._isr_write = self.host.loop.create_task(self._write_isr(isr))

    async def _write_isr(self, isr: list[str]) -> None:
        """One txn: the partition key as read (``MOD``), still led by us at our epoch; the
        controller's changes (a new leader, an epoch) make it fail, as they should."""
        m = self.repl.node.membership
        kv = m.view.get(self.pkey)
        if kv is None:
            return
        p = json.loads(kv.value)
        if p.get("leader") != self.me or p.get("leader_epoch") != self.epoch:
            return
        new = dict(p, isr=isr)
        try:
            held, _, _ = await m.etcd.transact(
                [compare(self.pkey, "MOD", "EQUAL", kv.mod_revision)],
                [put_op(self.pkey, json.dumps(new))])
        except (EtcdError, OSError) as exc:
            log.warning("%s: ISR change not written: %s", self.pkey, exc)
            return
        if held:
            log.info("%s: ISR %s -> %s (leader %s, epoch %d)", self.pkey, ",".join(p["isr"]),
                     ",".join(isr), self.me, self.epoch)

    def stop(self) -> None:
        """Leadership ended: publishes waiting for the HW are nacked, fetches refused."""
        if self.stopped:
            return
        self.stopped = True
        self._isr_timer.cancel()
        if self._isr_write is not None:
            self._isr_write.cancel()
        q = self.queue
        if q.replication is self:
            q.replication = None
            q.visible_end = Queue.ALL_VISIBLE
            if not q.deleted:
                q.schedule_dispatch()
        self.host.replicating -= 1
        self.host.committer.listeners.discard(self)
        self.host.replicated()
        for link, m, timer in self.parked.values():
            timer.cancel()
            self._error(link, m, NOT_LEADER)
        self.parked.clear()


class Follower:
    """One replicated queue this node follows: a task fetching from the leader."""

    _reqs = itertools.count(1)

    def __init__(self, repl: Replication, key: tuple[str, str], q: Queue):
        self.repl = repl
        self.key = key
        self.queue = q
        self.leader: str | None = None
        self.epoch = 0
        self.hw = 0
        self.stopped = False
        self.diverged = False
        self.last_crc = self._last_crc(q)   # of the batch ending at our log end
        self.end: StreamEndpoint | None = None
        self.waiting: dict[int, asyncio.Future] = {}
        self.task = repl.broker.loop.create_task(self._run(), name=f"follow-{key[1]}")

    def update(self, p: dict) -> None:
        leader, epoch = p.get("leader"), p.get("leader_epoch", 0)
        if leader != self.leader and self.end is not None:
            self.end.close()                # the next fetch dials the new leader
            self._lost(self.end)
        self.leader, self.epoch = leader, epoch

    def stop(self) -> None:
        self.stopped = True
        self.task.cancel()
        if self.end is not None:
            self.end.close()
            self._lost(self.end)

    @staticmethod
    def _last_crc(q: Queue) -> int:
        log_ = q.store.log
        end = log_.end_offset
        if end <= log_.start_offset:
            return 0
        last = log_.batch_bounds(end - 1, limit=1)
        return last[0][2] if last else 0

    # ------------------------------------------------------------ the link
    async def _dial(self) -> StreamEndpoint | None:
        node = self.repl.node
        reg = node.membership.nodes().get(self.leader or "")
        if not reg or not reg.get("cluster_port"):
            return None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(reg["host"], reg["cluster_port"]), REPLY_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            log.debug("replication link to %s: %s", self.leader, exc)
            return None
        end = StreamEndpoint(reader, writer, self._on_batch, on_close=self._lost)
        end.send(c.NodeHello(node=node.name, worker=0))
        end.start()
        q = self.queue
        req = next(self._reqs)
        fut = self.waiting[req] = self.repl.broker.loop.create_future()
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
        loop = self.repl.broker.loop
        while not self.stopped and not self.diverged:
            try:
                if self.end is None:
                    if await self._dial() is None:
                        await asyncio.sleep(RETRY)
                        continue
                q = self.queue
                req = next(self._reqs)
                fut = self.waiting[req] = loop.create_future()
                self.end.send(c.Fetch(req=req, qid=q.qid, offset=q.store.log.end_offset,
                                      last_crc=self.last_crc, last_epoch=self.epoch,
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
                if reply.error:
                    if reply.error.startswith("behind"):
                        self.diverged = True
                        log.warning("queue '%s' in vhost '%s': this replica (log end %d) "
                                    "cannot follow the leader %s: %s; copying from a later "
                                    "log start is not built yet", self.key[1], self.key[0],
                                    q.store.log.end_offset, self.leader, reply.error)
                        return
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
        for base, crc, records in reply.batches or ():
            if base != log_.end_offset:
                break                       # not contiguous: fetched again from our end
            log_.append(records)
            self.last_crc = crc
            changed = True
        floor, runs = reply.acks or (0, [])
        end = log_.end_offset
        acks = store.acks
        for first, stop in ([(0, floor)] if floor else []) + list(runs):
            for a, b in acks.not_done(max(first, log_.start_offset), min(stop, end)):
                for o in range(a, b):
                    store.settle(o)
                changed = True
        if changed:
            store.flush()
            await self.repl.broker.loop.run_in_executor(None, store.sync)
            if not q.deleted and not self.stopped:
                store.after_sync()
        self.hw = max(self.hw, min(reply.hw, log_.end_offset))

    def _truncate(self, q: Queue, reply: c.FetchReply) -> None:
        """Our log has batches the leader's has not (a tail this replica got, or wrote as a
        leader, that was never confirmed): cut it back to the last batch both logs hold
        (same base, end and CRC) and fetch from there. Below the leader's log start both
        logs are taken to agree (settled, deleted there)."""
        log_ = q.store.log
        theirs = {base: (nxt, crc) for base, nxt, crc in reply.batches or ()}
        cut = max(log_.start_offset, min(reply.log_start, log_.end_offset))
        for base, nxt, crc in log_.batch_bounds(cut):
            if theirs.get(base) != (nxt, crc):
                break
            cut = nxt
        if cut >= log_.end_offset:
            self.diverged = True            # nothing of ours to cut: a bug, not a loop
            log.error("queue '%s' in vhost '%s': the leader %s refuses this replica's log "
                      "(end %d) but no batch differs; it stops following", self.key[1],
                      self.key[0], self.leader, log_.end_offset)
            return
        log.warning("queue '%s' in vhost '%s': this replica's log (end %d) diverges from the "
                    "leader %s's at offset %d: truncated there", self.key[1], self.key[0],
                    log_.end_offset, self.leader, cut)
        cuts = log_.cut_points(cut)
        host = q.host
        self.queue = host.reopen(q, lambda: truncate_files(cuts))
        self.last_crc = self._last_crc(self.queue)
        self.hw = min(self.hw, cut)


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
