"""A classic queue: the queue semantics over a MessageStore.

Theory of operation
-------------------
Every message routed to the queue is appended to the queue's ``MessageStore`` (store.py); its
offset is the message's identity from then on. The store keeps the messages (log, ack log,
body cache); the queue keeps only offsets and decides what happens to them:

* ``ready``: per priority level a deque of offsets, in delivery order (by offset within a
  level, so a requeued message goes back to its original position);
* ``outstanding``: offset -> ``Unacked`` (priority level, body size) of deliveries not yet
  acked (the channel that holds them has only the offset). Their bodies stay in the log, as
  queued ones do: a requeue needs only the level and size, dead-lettering reads the record
  back. A message delivered before its commit round made it durable cannot be read back yet:
  its Record is held until ``after_sync`` (``_unacked_bodies``);
* ``redelivered`` / ``redeliver_below``: which offsets were delivered before.

A message leaves the queue when it is acked, expired, dropped by a length limit, dead-lettered
or purged: the queue then settles its offset in the store, which records it in the ack log and
deletes each segment once all of its messages are settled. The store buffers appends and
settles; the broker's ``Committer`` calls ``flush`` / ``sync`` / ``after_sync`` once per
event-loop turn (one batch, one write, fsyncs in a thread), then confirms (group commit).

Recovery: a durable queue reopens its store; every persistent message not settled is ready
again and flagged redelivered (it may have been delivered before the crash). Transient ones
in a durable queue are settled, as RabbitMQ drops them on restart (a quorum queue keeps them:
``persists_all``).
"""
from __future__ import annotations

import bisect
import logging
from collections import deque
from itertools import islice
from typing import NamedTuple

from .. import errors
from ..contract import PUB_LATEST, PUB_PRODUCER, PUB_SUBSEQUENCE
from ..protocol import properties as props_mod
from ..storage.record import SEPARATE_BODY, Record, RecordRun, now_ms, scan_run
from ..queue_args import QueueArgs
from ..logs import context
from ..stats import queue_counters
from . import dedup, ttls
from .memory import queue_memory
from .store import ELIDE_BODY, MessageStore, StoredRun, body_size

log = logging.getLogger("amqpbroker.queue")


def name_of(q) -> str:
    return f"{q.name}' in vhost '{q.vhost_name}"


class Unacked(NamedTuple):
    """A delivered message whose body is in the log: what a requeue needs of it."""
    level: int              # priority level (0 without x-max-priority)
    size: int               # body bytes (ready_bytes)


class Queue:
    # publisher flow control: a queue with consumers and more ready messages than FLOW_HIGH
    # (or bytes than FLOW_HIGH_BYTES) stops reading from its publishers until it is back under
    # half of both
    FLOW_HIGH = 5000
    FLOW_HIGH_BYTES = 8 << 20
    # every message is kept (and confirmed once durable) whatever its delivery mode: quorum
    # queues; a classic queue keeps only persistent ones across a restart
    persists_all = False
    ALL_VISIBLE = 1 << 62
    # a publish of a higher priority than this takes ``_publish``'s way, not publish's fast
    # path nor ``publish_many`` (a quorum queue's high priority: worker/quorum.py)
    plain_priority_max = 255

    def __init__(self, host, vhost_name: str, name: str, *, durable: bool,
                 auto_delete: bool = False, arguments: dict | None = None, directory: str,
                 qid: int = 0):
        self.host = host
        self.qid = qid
        self.vhost_name = vhost_name
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.args = QueueArgs(name, vhost_name, arguments or {})
        self.arguments = self.args.arguments
        self.directory = directory
        # durable queues fsync per x-fsync (default: every batch); non-durable queues never
        # (they are wiped at start anyway)
        self.fsync = self.args.fsync if durable else "never"
        config = host.config
        self.store = MessageStore(directory, fsync=self.fsync,
                                  fsync_interval_ms=config.fsync_interval_ms,
                                  segment_bytes=config.segment_bytes, budget=host,
                                  cache_limit=config.cache_limit,
                                  label=f"queue '{name_of(self)}'",
                                  write_behind=None if durable else config.transient_limit())
        # idempotent producers and x-message-deduplication (dedup.py)
        self.producers = dedup.ProducerTable(directory if durable else None,
                                             end_offset=self.store.end_offset,
                                             fsync=self.fsync != "never")
        self.producers.catch_up(self.store.log)
        self.dedup_keys = dedup.QueueKeys() if self.args.dedup else None
        self._interval_timer = None
        self.ready: list[deque] = [deque() for _ in range(self._priority_levels())]
        self.ready_count = 0
        self.ready_bytes = 0
        self.redelivered: set[int] = set()
        self.redeliver_below = 0
        self.consumers: list = []                 # Subscriptions: by priority, then arrival
        self.flow_on = False                      # publishers were told to wait (backlog)
        self.outstanding: dict[int, Record | Unacked] = {}  # delivered, not yet acked
        # outstanding held whole (not durable yet), ascending: ``_hold_bodies``
        self._unacked_bodies: list[int] = []
        self._released_below = 0                  # the durable offset they were checked at
        self.deleted = False
        # replication (cluster/replication.py): the leader's hook of a replicated partition
        # (None: not replicated, today's path), and the end of what consumers may see (the
        # high watermark); instance attributes: read per publish and per delivery
        self.replication = None
        self.visible_end = self.ALL_VISIBLE
        self.had_consumers = False
        self._dispatch_scheduled = False
        self._dispatching = False
        self._expiry_timer = None
        self._expires_timer = None
        self.stats = queue_counters(config)     # message_stats (amqpbroker/stats)
        # the message TTL by the offset it applies from: a policy's TTL applies to messages
        # published after it is set, as RabbitMQ stamps a message's expiry when it is queued
        # (ttls.py: kept across restarts by a durable queue)
        stored = ttls.load(directory) if durable else None
        self._set_ttls(stored or [(0, self.args.message_ttl)])
        if self._ttls[-1][1] != self.args.message_ttl:      # a policy changed meanwhile
            self._set_ttls([*self._ttls, (self.store.next_offset, self.args.message_ttl)])
            self._save_ttls()
        self._recover()
        if len(self._ttls) > 1:         # regimes no queued message is under: gone
            self._set_ttls(ttls.live(self._ttls, self._lowest_queued()))
        self.stats.count_appends(self.store)    # publishes: the offsets appended from here
        self.touch()

    def _set_ttls(self, regimes: list) -> None:
        """The TTL regimes (ttls.py), and what follows from them: whether any message may
        expire, and so whether publish's fast path applies."""
        self._ttls = regimes
        self._has_ttl = any(ttl is not None for _, ttl in regimes)
        self._plain = self._is_plain()
        # earlier regimes may still have messages: once the queue is empty only the last
        # applies (``_settled``), and a TTL removed at runtime gives the fast path back
        self._older_ttls = len(regimes) > 1

    def _settled(self) -> None:
        """After a settle: an empty queue keeps only its current TTL regime."""
        if not self.ready_count and not self.outstanding:
            self._set_ttls(self._ttls[-1:])

    def _is_plain(self) -> bool:
        """Whether publish's fast path applies: no limits, TTL, priorities or de-duplication."""
        a = self.args
        return (a.max_length is None and a.max_length_bytes is None and not self._has_ttl
                and not a.max_priority and self.dedup_keys is None)

    def apply_arguments(self, arguments: dict) -> None:
        """A policy was set, changed or deleted (policies.py): run with ``arguments`` from
        now on. What they change applies at once, as RabbitMQ applies a policy: a message
        TTL expires the head, a length limit with drop-head drops from the head, ``x-expires``
        counts again from now. (Policies change none of what is fixed at declare: the queue
        type, priorities, de-duplication, x-fsync.)"""
        try:
            args = QueueArgs(self.name, self.vhost_name, arguments)
        except errors.AMQPError as exc:
            log.error("queue '%s': new arguments refused, the old ones stay: %s",
                      name_of(self), exc.text)
            return
        self.args, self.arguments = args, args.arguments
        if args.message_ttl != self._ttls[-1][1]:
            self._set_ttls([*ttls.live(self._ttls, self._lowest_queued()),
                            (self.store.next_offset, args.message_ttl)])
            if self.durable:
                self._save_ttls()
        self._plain = self._is_plain()          # a length limit may have come or gone
        if self._expires_timer is not None:
            self._expires_timer.cancel()
            self._expires_timer = None
        self.touch()
        if args.overflow == "drop-head":
            self._drop_over_limit()
        if self._has_ttl and self.ready_count:
            self.expire_head()
        self.schedule_dispatch()

    def _save_ttls(self) -> None:
        if self.deleted:                # its directory is in the trash
            return
        try:
            ttls.save(self.directory, self._ttls)
        except OSError as exc:
            log.error("queue '%s': its message TTLs not written (%s): after a restart its "
                      "TTL applies to every message", name_of(self), exc)

    def _lowest_queued(self) -> int:
        """The lowest offset of a message still queued (ready or delivered), or the next
        offset when there is none."""
        heads = [level[0] for level in self.ready if level]
        if self.outstanding:
            heads.append(min(self.outstanding))
        return min(heads, default=self.store.next_offset)

    # ---------------------------------------------------------------- recovery
    def _recover(self) -> None:
        skipped = False
        discarded = self._discarded_at_start()
        for off, rec in self.store.unsettled():
            if discarded and off in discarded:
                self._recover_discard(off, rec, discarded[off])
                continue
            if not rec.flags & 1 and not self.persists_all:
                self.store.settle(off)      # transient: dropped at restart, as in RabbitMQ
                skipped = True
                continue
            self.ready[self._level(rec.properties)].append(off)
            if self.dedup_keys is not None:
                key = dedup.dedup_key(rec.properties)
                if key is not None:
                    self.dedup_keys.add(key, off)
            self.ready_count += 1
            self.ready_bytes += len(rec.body)
        self.redeliver_below = self.store.end_offset
        if skipped:
            self.store.commit()
        if self.ready_count:
            log.info("queue '%s' in vhost '%s': recovered %d messages", self.name,
                     self.vhost_name, self.ready_count,
                     extra=context(queue=self.name, vhost=self.vhost_name))

    def _discarded_at_start(self) -> dict:
        """offset -> reason of the dead letters held at least once (worker/discards.py: a
        quorum queue's)."""
        return {}

    def _recover_discard(self, offset: int, rec: Record, reason: str) -> None:
        raise NotImplementedError       # only a queue with ``_discarded_at_start`` has them

    def _hold(self, offset: int, rec: Record) -> None:
        """Delivered, not acked: keep what a requeue needs; the body stays in the log."""
        if self.store.on_disk(offset):
            self.outstanding[offset] = Unacked(self._level(rec.properties), len(rec.body))
        else:
            self.outstanding[offset] = rec
            self._hold_bodies((offset,))

    def _hold_bodies(self, offsets) -> None:
        """Note ``offsets`` (ascending) as held whole until durable. Deliveries come in
        offset order, so they usually go at the end; a redelivery goes in its place."""
        bodies = self._unacked_bodies
        if not bodies or offsets[0] > bodies[-1]:
            bodies.extend(offsets)
            return
        for offset in offsets:
            i = bisect.bisect_left(bodies, offset)
            if i == len(bodies) or bodies[i] != offset:
                bodies.insert(i, offset)

    def _release_unacked_bodies(self) -> None:
        """After a commit round: what it made durable is read back from the log if needed.
        Only the offsets below the durable one are visited (the list is sorted): those
        delivered since stay, however many, at no cost per round."""
        durable, outstanding = self.store.log.durable_offset, self.outstanding
        if durable <= self._released_below:
            return                   # nothing new on disk (write-behind holds them longer)
        self._released_below = durable
        bodies = self._unacked_bodies
        i = bisect.bisect_left(bodies, durable)
        if not i:
            return
        released = bodies[:i]
        del bodies[:i]
        for offset in released:
            rec = outstanding.get(offset)
            if type(rec) is StoredRun:          # a plain queue's: one priority level
                outstanding[offset] = Unacked(0, rec.body_size(offset))
            elif isinstance(rec, Record):
                outstanding[offset] = Unacked(self._level(rec.properties), len(rec.body))

    def _unacked_record(self, offset: int, entry) -> Record | None:
        """The whole message of an outstanding entry (None once the queue's files are gone)."""
        if isinstance(entry, Record):
            return entry
        if type(entry) is StoredRun:
            return entry.record(offset)
        return None if self.store.closed else self.store.read(offset)

    def _priority_levels(self) -> int:
        """How many ready lists (``ready``): one per priority of x-max-priority."""
        return (self.args.max_priority or 0) + 1

    def _publish_level(self, priority: int) -> int:
        """The ready list of a publish of ``priority`` (its ``basic.publish``'s)."""
        return min(priority, self.args.max_priority) if self.args.max_priority else 0

    def _level(self, raw_props: bytes) -> int:
        if self.args.max_priority is None:
            return 0
        try:
            p = props_mod.scan(raw_props).priority
        except ValueError:
            p = 0
        return min(p, self.args.max_priority)

    # ---------------------------------------------------------------- publish
    @property
    def message_count(self) -> int:
        return self.ready_count

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    def _full(self, extra_bytes: int) -> bool:
        a = self.args
        if a.max_length is not None and self.ready_count + 1 > a.max_length:
            return True
        if a.max_length_bytes is not None and self.ready_bytes + extra_bytes > a.max_length_bytes:
            return True
        return False

    def publish(self, record: Record, priority: int = 0, flags: int = 0) -> bool:
        """Append a message; False if the queue rejected it (x-overflow reject-publish, or a
        producer's sequence out of order). A duplicate (dedup.py) is not appended and counts
        as stored: True, once the message it repeats is durable. ``flags``: ``PUB_*`` of
        contract.py."""
        if self._plain and not flags and priority <= self.plain_priority_max \
                and not (record.properties and record.properties[0] & 1):
            # the usual message (no producer id, no expiration) to a queue with no limit,
            # TTL, priorities or de-duplication: ``_publish``'s steps without its checks
            size = len(record.body)
            offset = self.store.append(record)
            self.stats.publish_bytes += size    # the count is the store's (count_appends)
            self.host.committer.mark(self)
            self.ready[0].append(offset)
            self.ready_count += 1
            self.ready_bytes += size
            if self.ready_count == 1 and self.consumers and not self._dispatch_scheduled \
                    and not self._dispatching:
                if self.host.dispatch_soon(self):     # after the batch's publishes, once
                    self._dispatch_scheduled = True     # (no loop callback as well)
                else:
                    self.dispatch()
            else:
                self.schedule_dispatch()
            return True
        return self._publish(record, priority, flags)

    def publish_many(self, records) -> int | None:
        """``publish`` (no flags, priority 0) of a batch to a ``_plain`` queue: appended as
        one when none has an expiration, else one by one. Returns the index of the first
        message that must be durable before it is confirmed (persistent, or every message
        of a queue that persists all), None if none must.

        ``records`` is a list, or a ``RecordRun`` (a ``Pubs`` read from a ring): a run of
        bodies under SEPARATE_BODY is kept as its bytes (``MessageStore.append_run``), no
        ``Record`` made; any other is decoded."""
        if type(records) is RecordRun:
            (starts, sizes, bodies, light, first_persistent, expiring, _first_ts, _max_ts,
             max_body) = scan_run(records.data, records.count, ELIDE_BODY)
            if expiring or max_body >= SEPARATE_BODY or not records.count:
                records = list(records)
            else:
                n = records.count
                offset = self.store.append_run(records.data, n, starts, sizes, bodies, light)
                self._appended(offset, n, bodies)
                if not self.durable:
                    return None
                if self.persists_all:
                    return 0
                return None if first_persistent < 0 else first_persistent
        for record in records:
            if record.properties and record.properties[0] & 1:
                for r in records:
                    self.publish(r)
                break
        else:
            offset, size = self.store.append_many(records)
            self._appended(offset, len(records), size)
        if not self.durable:
            return None
        if self.persists_all:
            return 0
        for i, record in enumerate(records):
            if record.flags & 1:
                return i
        return None

    def _appended(self, offset: int, n: int, size: int) -> None:
        """``publish_many``'s steps after the store appended ``n`` messages from ``offset``
        (``size`` bytes of bodies)."""
        self.stats.publish_bytes += size    # the count is the store's (count_appends)
        self.host.committer.mark(self)
        self.ready[0].extend(range(offset, offset + n))
        self.ready_count += n
        self.ready_bytes += size
        if self.ready_count == n and self.consumers and not self._dispatch_scheduled \
                and not self._dispatching:
            if self.host.dispatch_soon(self):     # after the batch's publishes, once
                self._dispatch_scheduled = True
            else:
                self.dispatch()
        else:
            self.schedule_dispatch()

    def _publish(self, record: Record, priority: int, flags: int) -> bool:
        producer = key = None
        if flags & PUB_PRODUCER:
            producer = dedup.producer_of(record.properties)
            if producer is not None:
                pid, seq, continues = producer
                producer = None if continues else (pid, seq)    # recorded with the last
                verdict = self.producers.check(pid, seq, bool(flags & PUB_SUBSEQUENCE),
                                               bool(flags & PUB_LATEST))
                if verdict == dedup.DUPLICATE:
                    return self._duplicate(self.producers.offset_of(pid, seq))
                if verdict != dedup.STORE:
                    log.warning("queue '%s': publish refused: producer %r sequence %r is %s "
                                "(last stored: %s)", name_of(self), pid, seq, verdict,
                                [s for s, _ in self.producers.producers.get(pid, ())])
                    return False
        if self.dedup_keys is not None:
            key = dedup.dedup_key(record.properties)
            if key is not None and key in self.dedup_keys:
                return self._duplicate(self.dedup_keys.offsets[key])
        size = len(record.body)
        if (self.args.max_length is not None or self.args.max_length_bytes is not None) \
                and self.args.overflow != "drop-head" and self._full(size):
            if self.args.overflow == "reject-publish-dlx":
                self.count_dead("maxlen", 1)
                self.host.dead_letter(self, [record], "maxlen")
            return False
        if self._expires_now(record):
            # TTL 0: delivered only to a consumer that can take it right now (RabbitMQ)
            if self.ready_count or self._next_consumer() is None:
                if producer is not None:     # taken: its retry is a duplicate
                    self.producers.stored(*producer, self.store.next_offset)
                    self.host.committer.mark(self)
                self._expired_at_publish(record)
                return True
            immediate = True
        else:
            immediate = False
        offset = self.store.append(record)
        self.stats.publish_bytes += size        # the count is the store's (count_appends)
        self.host.committer.mark(self)
        if producer is not None:
            self.producers.stored(*producer, offset)
        if key is not None:
            self.dedup_keys.add(key, offset)
        self.ready[self._publish_level(priority)].append(offset)
        self.ready_count += 1
        self.ready_bytes += size
        if self.args.overflow == "drop-head":
            self._drop_over_limit()
        if immediate:
            self.dispatch(check_expiry=False)
            return True
        if self.args.message_ttl is not None or (record.properties and record.properties[0] & 1):
            self._schedule_expiry()              # 0x01 of the first flag byte: expiration
        if self.ready_count == 1 and self.consumers and not self._dispatch_scheduled \
                and not self._dispatching:
            # nothing queued ahead of it: a consumer with credit gets it in this turn, before
            # the commit round's writes (a burst from one read is dispatched once, after
            # its publishes: PartitionHost.dispatch_soon)
            if self.host.dispatch_soon(self):
                self._dispatch_scheduled = True
            else:
                self.dispatch()
        else:
            self.schedule_dispatch()
        return True

    def _expired_at_publish(self, record: Record) -> None:
        """A message that expires as it arrives (TTL 0, no consumer to take it now)."""
        self.count_dead("expired", 1)
        self.host.dead_letter(self, [record], "expired")

    def _duplicate(self, offset: int | None) -> bool:
        """A publish repeats the message at ``offset``: not stored again, confirmed once that
        one is durable (a round is owed for it if it is not yet on disk)."""
        if offset is not None and self.durable and not self.store.on_disk(offset):
            self.host.committer.mark(self)
        return True

    def _expires_now(self, record: Record) -> bool:
        if self.args.message_ttl == 0:
            return True
        if record.properties and record.properties[0] & 1:
            return self._expires_at(record, self.store.next_offset) == record.timestamp
        return False

    def _drop_over_limit(self) -> None:
        a = self.args
        dropped = []
        while self.ready_count and (
                (a.max_length is not None and self.ready_count > a.max_length)
                or (a.max_length_bytes is not None and self.ready_bytes > a.max_length_bytes)):
            offset, rec = self._pop_head()
            if offset is None:
                break             # head not readable until the next commit round
            dropped.append(rec)
            self._done(offset)
        if dropped:
            self.count_dead("maxlen", len(dropped))
            self.host.dead_letter(self, dropped, "maxlen")

    # ---------------------------------------------------------------- reading
    def _head(self):
        for level in range(len(self.ready) - 1, -1, -1):
            d = self.ready[level]
            if d:
                return level, d[0]
        return None, None

    def _pop_head(self):
        level, offset = self._head()
        if offset >= self.visible_end:
            return None, None       # not below the high watermark yet (replication)
        if self.replication is not None and not self.replication.serving():
            return None, None       # a leader without its etcd lease serves nothing (fencing)
        rec = self.store.take(offset)
        if rec is None:
            return None, None
        self.ready[level].popleft()
        self.ready_count -= 1
        self.ready_bytes -= len(rec.body)
        if not self.ready_count:
            self.store.forget_readahead()
        return offset, rec

    def _ttl_of(self, offset: int) -> int | None:
        ttls = self._ttls
        if len(ttls) == 1:
            return ttls[0][1]
        return ttls[bisect.bisect_right(ttls, offset, key=lambda t: t[0]) - 1][1]

    def _expires_at(self, rec: Record, offset: int) -> int | None:
        ttl = self._ttl_of(offset)
        if rec.properties and rec.properties[0] & 0x01:   # expiration flag (0x0100 of the word)
            try:
                exp = props_mod.scan(rec.properties).expiration
                if exp is not None:
                    exp = int(exp)
                    ttl = exp if ttl is None else min(ttl, exp)
            except ValueError:
                pass
        return None if ttl is None else rec.timestamp + ttl

    def expire_head(self) -> None:
        """Drop expired messages at the head (RabbitMQ expires only from the head)."""
        if self.deleted:
            return
        now = now_ms()
        expired = []
        while self.ready_count:
            level, offset = self._head()
            rec = self.store.read(offset) if offset < self.visible_end else None
            if rec is None:
                break
            at = self._expires_at(rec, offset)
            if at is None or at >= now:
                if at is not None:
                    self._schedule_expiry(at - now + 1)
                break
            self._pop_head()
            expired.append((offset, rec))
        if expired:
            self._died(expired, "expired")

    def _schedule_expiry(self, delay_ms: int | None = None) -> None:
        if self._expiry_timer is not None and delay_ms is None:
            return
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        loop = self.host.loop
        if delay_ms is None:
            self._expiry_timer = loop.call_soon(self._expiry_fired)
        else:
            self._expiry_timer = loop.call_later(delay_ms / 1000, self._expiry_fired)

    def _expiry_fired(self) -> None:
        self._expiry_timer = None
        self.expire_head()

    # ---------------------------------------------------------------- consumers
    def add_consumer(self, consumer) -> None:
        self.consumers.append(consumer)
        self.consumers.sort(key=lambda c: -c.priority)     # stable: keeps arrival order
        self.had_consumers = True
        self.touch()
        self.schedule_dispatch()

    def remove_consumer(self, consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        self.touch()
        if self.consumers:
            self.schedule_dispatch()
        else:
            self.release_publishers()        # nobody to wait for
            if self.auto_delete and self.had_consumers and not self.deleted:
                self.host.queue_gone(self, "auto-delete")

    def schedule_dispatch(self) -> None:
        if not self._dispatch_scheduled and self.consumers and not self.deleted:
            self._dispatch_scheduled = True
            self.host.loop.call_soon(self.host.dispatch_held, self)

    def _next_consumer(self):
        if self.args.single_active:
            c = self.consumers[0] if self.consumers else None
            return c if c is not None and c.can_take() else None
        for c in self.consumers:
            if c.can_take():
                return c
        return None

    def _rotate(self, consumer) -> None:
        cs = self.consumers
        i = cs.index(consumer)
        j = i
        while j + 1 < len(cs) and cs[j + 1].priority == consumer.priority:
            j += 1
        if j > i:
            cs.insert(j, cs.pop(i))

    def dispatch(self, check_expiry: bool = True) -> None:
        self._dispatch_scheduled = False
        if self.deleted:
            return
        # a publish made while this runs (a message expired here and dead-lettered back to
        # this queue) waits for the loop it is in, not for a dispatch nested inside it
        self._dispatching = True
        try:
            self._dispatch(check_expiry)
        finally:
            self._dispatching = False

    def _dispatch(self, check_expiry: bool) -> None:
        if check_expiry and (self._has_ttl or self._expiry_timer is not None):
            self.expire_head()
        consumers = self.consumers
        if len(consumers) == 1 and self._plain and not self.redelivered and self.ready_count:
            deliver_many = getattr(consumers[0], "deliver_many", None)
            if deliver_many is not None and consumers[0].credit > 0:
                self._dispatch_run(consumers[0], deliver_many)
        # counted per run, not per delivery (amqpbroker/stats): locals, added up at the end
        sent = no_ack = redelivered_n = 0
        try:
            while self.ready_count:
                consumer = self._next_consumer()
                if consumer is None:
                    break
                offset, rec = self._pop_head()
                if offset is None:
                    break           # head not durable yet; the commit round re-dispatches
                redelivered = offset < self.redeliver_below or offset in self.redelivered
                if not consumer.no_ack:
                    self._hold(offset, rec)
                sent += 1
                if redelivered:
                    redelivered_n += 1
                    self.redelivered.discard(offset)
                    consumer.deliver(self, offset, self._redelivery(offset, rec), True)
                else:
                    consumer.deliver(self, offset, rec, False)
                if consumer.no_ack:
                    no_ack += 1
                    self._done(offset)
                if len(self.consumers) > 1 and not self.args.single_active:
                    self._rotate(consumer)
        finally:
            if sent:
                self.stats.on_deliveries(sent - no_ack, no_ack, redelivered_n)
        if self.flow_on and self.ready_count < self.FLOW_HIGH // 2 \
                and self.ready_bytes < self.FLOW_HIGH_BYTES // 2:
            self.release_publishers()

    def _dispatch_run(self, consumer, deliver_many) -> None:
        """``_dispatch``'s loop for the usual case, as one run: a plain queue (one priority
        level, no TTL) with one consumer (a ``Subscription``) and nothing to redeliver gets
        the head of its ready list up to the consumer's credit in one ``deliver_many``. It
        stops where the loop would look closer (a redelivery, a head not readable yet), and
        ``_dispatch`` goes on from there."""
        if self.replication is not None and not self.replication.serving():
            return                  # fenced, as ``_pop_head`` (the loop after us stops there)
        if len(self.ready) > 1 and self.ready[1]:
            return                  # a quorum queue's high priority ones: ``_head`` decides
        d = self.ready[0]
        n = min(consumer.credit, self.ready_count)
        # the level's deque is sorted by offset: what is below ``redeliver_below`` is at its
        # head, what is not visible yet (replication) at its tail
        offsets = list(islice(d, n))
        if not offsets:
            return
        if offsets[-1] >= self.visible_end:
            del offsets[bisect.bisect_left(offsets, self.visible_end):]
        if not offsets or offsets[0] < self.redeliver_below:
            return
        # a run of publishes kept as their bytes goes on as them (``StoredRun``): ``held``
        # is what ``outstanding`` keeps of each offset until it is durable
        taken = self.store.take_run(offsets)
        if taken is not None:
            records, held, size = taken
        else:
            records, size = self.store.take_many(offsets)
            held = records
        k = len(held)
        if not k:
            return
        if k < len(offsets):
            del offsets[k:]
        if k == len(d):
            d.clear()
        else:
            popleft = d.popleft
            for _ in range(k):
                popleft()
        self.ready_count -= k
        self.ready_bytes -= size
        if not self.ready_count:
            self.store.forget_readahead()
        if consumer.no_ack:
            deliver_many(self, offsets, records, size)
            # ``_done`` for each, as ``ack`` settles a multiple ack: a plain queue keeps no
            # de-duplication keys, the store settles the run at once, the committer is
            # marked once
            if self.redelivered:
                self.redelivered.difference_update(offsets)
            self.store.settle_many(offsets)
            self.host.committer.mark(self)
            self.stats.on_deliveries(0, k, 0)
            return
        # ``_hold`` for each: one priority level (plain), so the level is 0
        durable = self.store.log.durable_offset
        outstanding = self.outstanding
        if offsets[0] >= durable:           # none on disk yet: held whole until it is
            if k == 1:                      # a lone message: no zip, no update
                outstanding[offsets[0]] = held[0]
            else:
                outstanding.update(zip(offsets, held))
            self._hold_bodies(offsets)
        else:
            whole = []
            for offset, rec in zip(offsets, held):
                if offset < durable:
                    outstanding[offset] = Unacked(0, body_size(rec, offset))
                else:
                    outstanding[offset] = rec
                    whole.append(offset)
            if whole:
                self._hold_bodies(whole)
        deliver_many(self, offsets, records, size)
        self.stats.on_deliveries(k, 0, 0)

    @property
    def backlogged(self) -> bool:
        """Publishers should wait: consumers are attached and cannot keep up."""
        return bool(self.consumers) and (self.ready_count > self.FLOW_HIGH
                                         or self.ready_bytes > self.FLOW_HIGH_BYTES)

    @property
    def unacked(self) -> int:
        return len(self.outstanding)

    memory = queue_memory       # bytes this queue holds in the worker, estimated (memory.py)

    def check_backlog(self) -> None:
        """After publishes: tell publishers to wait if this queue just became backlogged
        (``backlogged`` spelt out: this runs once per publish)."""
        if not self.flow_on and self.consumers and (self.ready_count > self.FLOW_HIGH
                                                    or self.ready_bytes > self.FLOW_HIGH_BYTES):
            self.flow_on = True
            self.host.flow(self, True)

    def release_publishers(self) -> None:
        if self.flow_on:
            self.flow_on = False
            self.host.flow(self, False)

    def get(self, no_ack: bool):
        """basic.get: (offset, record, redelivered, remaining) or None."""
        self.touch()
        self.expire_head()
        if not self.ready_count:
            return None
        offset, rec = self._pop_head()
        if offset is None:
            return None
        redelivered = offset < self.redeliver_below or offset in self.redelivered
        self.redelivered.discard(offset)
        self.stats.on_get(no_ack, redelivered)
        out = self._redelivery(offset, rec) if redelivered else rec
        if no_ack:
            self._done(offset)
        else:
            self._hold(offset, rec)
        return offset, out, redelivered, self.ready_count

    def _redelivery(self, offset: int, rec: Record) -> Record:
        """The record as a redelivery carries it (a quorum queue adds x-delivery-count)."""
        return rec

    # ---------------------------------------------------------------- settling
    def _done(self, offset: int) -> None:
        self.redelivered.discard(offset)     # a requeued message dropped or purged while ready
        if self.dedup_keys is not None:
            self.dedup_keys.discard(offset)
        self.store.settle(offset)
        self.host.committer.mark(self)
        if self._older_ttls:
            self._settled()

    def ack(self, offsets) -> None:
        """A multiple ack settles many at once: ``_done``'s work per offset is only what
        each offset needs (the store's settle); the committer is marked once."""
        outstanding = self.outstanding
        self.stats.on_ack(len(offsets))
        pop = outstanding.pop
        if len(offsets) == 1:               # a lone message's ack: no list comprehension
            done = offsets if pop(offsets[0], None) is not None else None
        else:
            done = [o for o in offsets if pop(o, None) is not None]
        if not done:
            return
        if self.redelivered:
            self.redelivered.difference_update(done)
        if self.dedup_keys is not None:
            for offset in done:
                self.dedup_keys.discard(offset)
        self.store.settle_many(done)
        self.host.committer.mark(self)
        if self._older_ttls:
            self._settled()

    def reject(self, offsets, requeue: bool) -> None:
        """basic.reject / basic.nack, or unacked messages of a closed channel (requeue)."""
        taken = [(o, self.outstanding.pop(o)) for o in offsets if o in self.outstanding]
        if requeue:
            self.requeue(taken)
        elif taken:
            self._died(taken, "rejected")

    def modify(self, offset: int, requeue: bool, properties: bytes) -> None:
        """An AMQP 1.0 consumer's ``modified`` outcome with message annotations
        (``properties``: the message's with them merged in). As RabbitMQ's classic queues, a
        classic queue does not keep them: a reject (quorum.py keeps them)."""
        self.reject([offset], requeue)

    def _died(self, taken: list, reason: str) -> None:
        """Messages out of the ready list and the outstanding table that died for
        ``reason``: ``taken`` is (offset, outstanding entry or Record). They leave the queue
        and go to its dead-letter exchange, if it has one (at most once: a quorum queue may
        hold them until confirmed, worker/discards.py)."""
        records = []
        if self.args.dlx is not None:
            records = [self._unacked_record(o, entry) for o, entry in taken]
        for offset, _ in taken:
            self._done(offset)
        self.count_dead(reason, len(taken))
        if records:
            self.host.dead_letter(self, [r for r in records if r is not None], reason)

    def count_dead(self, reason: str, n: int, strategy: str | None = None) -> None:
        """RabbitMQ's global dead-letter counters (``rabbitmq_global_messages_dead_lettered_
        *_total``, mgmt/prometheus.py): by reason, queue type and strategy (``disabled``:
        the queue has no dead-letter exchange; ``confirmed``: at-least-once letters settled)."""
        if strategy is None:
            strategy = "at_most_once" if self.args.dlx is not None else "disabled"
        key = f"{reason} {self.args.queue_type} {strategy}"
        counts = self.host.dead_lettered
        counts[key] = counts.get(key, 0) + n

    def requeue(self, items: list[tuple[int, Record | Unacked]]) -> None:
        """Put messages back at their original position (by offset within their priority),
        as RabbitMQ's classic queue does: not simply at the head, which would put a message
        requeued later ahead of an older one requeued earlier."""
        if self.deleted:
            return
        for offset, entry in sorted(items, key=lambda x: x[0], reverse=True):
            if type(entry) is StoredRun:
                entry = entry.record(offset)
            if isinstance(entry, Record):        # not durable yet: its body goes back in cache
                level, size = self._level(entry.properties), len(entry.body)
                self.store.recache(offset, entry)
            else:
                level, size = entry
            d = self.ready[level]
            if not d or offset < d[0]:
                d.appendleft(offset)             # the usual case: older than all ready
            else:
                bisect.insort(d, offset)         # each level's deque is sorted by offset
            self.ready_count += 1
            self.ready_bytes += size
            self.redelivered.add(offset)
        if self.args.overflow == "drop-head":
            # RabbitMQ drops from the head after a requeue too (requeue_and_run ->
            # maybe_drop_head), which may drop the requeued messages themselves
            self._drop_over_limit()
        self.schedule_dispatch()

    def purge(self) -> int:
        count = self.ready_count
        for d in self.ready:
            for offset in d:
                self._done(offset)
            d.clear()
        self.ready_count = 0
        self.ready_bytes = 0
        self.store.forget_readahead()
        return count

    # ---------------------------------------------------------------- commit round
    def flush(self) -> None:
        """Write buffered appends and settles (event-loop thread, no fsync), then the producer
        state of this round (after its messages: dedup.py)."""
        self.store.flush()
        self.producers.flush()

    def sync(self) -> None:
        """fsync per policy (worker thread)."""
        self.store.sync()
        self.producers.sync()

    def after_sync(self) -> None:
        """Back on the loop: drop settled segments and cached bodies over the budget, dispatch
        what became durable."""
        if self.deleted:
            return
        self.store.after_sync()
        if self._unacked_bodies:
            self._release_unacked_bodies()
        if self.fsync == "interval" and self.store.sync_owed and self._interval_timer is None:
            # an fsync is still owed: make sure a round comes when the interval is up
            self._interval_timer = self.host.loop.call_later(
                self.host.config.fsync_interval_ms / 1000, self._interval_due)
        if self.ready_count or self.flow_on:
            # not for an empty queue: a lone message's ack on a durable queue costs a round,
            # and a dispatch left scheduled by it made the next publish wait a loop turn for
            # it (tests/unit/worker/test_lone_big_message.py)
            self.schedule_dispatch()

    def _interval_due(self) -> None:
        self._interval_timer = None
        if not self.deleted:
            self.host.committer.mark(self)

    # ---------------------------------------------------------------- lifecycle
    def touch(self) -> None:
        """Reset the x-expires timer (queue used)."""
        if self.args.expires is None or self.deleted:
            return
        if self._expires_timer is not None:
            self._expires_timer.cancel()
        self._expires_timer = self.host.loop.call_later(self.args.expires / 1000,
                                                          self._expires_fired)

    def _expires_fired(self) -> None:
        self._expires_timer = None
        if self.consumers or self.deleted:
            self.touch()
            return
        self.host.queue_gone(self, "expired")

    def close_storage(self, destroy: bool) -> None:
        self.deleted = True
        self.release_publishers()
        for t in (self._expiry_timer, self._expires_timer, self._interval_timer):
            if t is not None:
                t.cancel()
        self.store.close(destroy)
        try:
            if not destroy:
                self.producers.flush()
                self.producers.sync()
        except OSError as exc:
            log.error("queue '%s': producer state not written at shutdown: %s", name_of(self),
                      exc)
        finally:
            self.producers.close()
