"""A stream (``x-queue-type: stream``): an append-only partition read by cursors, as
RabbitMQ's stream queues behave over AMQP 0-9-1.

Theory of operation
-------------------
A stream is a ``PartitionLog`` (storage/log.py) and nothing else on disk: no ack log, no
ready list. A message's offset in the log is its offset in the stream, the one every delivery
carries in header ``x-stream-offset`` (the front-end adds the header when it builds
basic.deliver: it knows the queue is a stream and ``Dlv`` has the offset, so the record
crosses the link untouched). Nothing is deleted on ack; retention deletes whole closed
segments from the front, by age (``x-max-age``: a segment goes once its newest message is
older) and by size (``x-max-length-bytes``: the oldest go while the log is larger). It runs
when a segment rolls and on a timer.

Writes are group-committed like a classic queue's (committer.py): ``publish`` buffers the
record and marks the stream dirty; the round's ``flush`` appends the buffered records as one
batch (one ``writev``), ``sync`` fsyncs in the committer's thread, ``after_sync`` feeds the
readers. Every publish to a stream waits for its round before it is confirmed, persistent or
not: a stream keeps transient messages too (as RabbitMQ's does), so a confirm means durable.
Readers see only what is durable (the log never returns records past ``durable_offset``), so
no consumer ever sees a message a crash could take back.

Readers: the ``Cursor``
~~~~~~~~~~~~~~~~~~~~~~~
Every reader of the stream is an object with a ``cursor`` (a ``Cursor``: the next offset to
read, the credit left, an optional filter) and a ``deliver(stream, offset, record)`` method
that spends one credit. ``dispatch`` feeds each reader from its cursor while it has credit:
records a filter refuses are stepped over without spending credit. A cursor below the log's
start (retention removed what it was about to read) moves up to the start; a cursor past the
end simply waits there. Acks, nacks and rejects only return credit (the front-end grants it
back, ``host.on_credit``); a stream never redelivers, and unacked deliveries of a closed
channel are not "requeued" (RabbitMQ 3.13 does the same).

For the next engineer (consumer groups): a group member's share of this partition is one
more reader. Give it a ``Cursor`` starting at the group's committed offset (``resolve`` turns
an ``x-stream-offset`` spec into an offset when there is no commit), add it with
``add_consumer`` and take it out with ``remove_consumer``; its ``deliver`` may do what the
group needs (record the delivered offset for the commit logic, add ``x-partition``). A
revoked assignment is ``remove_consumer`` plus whatever grace the group gives the in-flight
deliveries; the stream itself keeps no per-reader state beyond the cursor.

Replication (cluster/replication.py, docs/CLUSTER.md "As built (step 6)"): in a cluster a
stream with ``x-initial-cluster-size`` > 1 has a leader and followers. Replication sees the
stream through ``self.store`` (``ReplicaStore``: the log, an empty ack log), and sets
``visible_end`` to the high watermark on the leader: readers get nothing at or past it. A
follower's log is appended by the replication code directly; its group commits come from the
leader (``apply_offsets``).

``x-stream-offset`` (queue_args.parse_stream_offset): ``first`` is the log's start; ``next``
(the default) the offset the next publish will get; ``last`` the first offset of the last
batch written (our batches are a commit round's appends to this stream, the counterpart of
RabbitMQ's chunks, so ``last`` delivers what RabbitMQ's does for the same publishes); an
integer is clamped up to the start (and, past the end, waits for that offset to exist, as
RabbitMQ's consumer skips everything below the offset it asked for); a timestamp or an
interval (``30m``) is the first message stored at or after that time.

Filtering (``x-stream-filter``, ``x-stream-match-unfiltered``; the publisher sets header
``x-stream-filter-value``): RabbitMQ 3.13 filters whole chunks with a Bloom filter and
leaves the exact filtering to the client. We filter each message exactly on the worker: a
consumer gets only the messages that match, and never a false positive.
"""
from __future__ import annotations

import logging
import weakref
from operator import attrgetter, itemgetter

from .. import errors
from ..contract import PUB_LATEST, PUB_PRODUCER, PUB_SUBSEQUENCE, Dlv
from ..groups.offset_store import OffsetStore
from ..protocol import properties as props_mod
from ..queue_args import QueueArgs, StreamFilter, parse_stream_offset
from ..storage.errors import OffsetOutOfRange
from ..storage.log import MAX_SEGMENT_BYTES, PartitionLog
from ..storage.record import Record, RecordRun, new_record, now_ms
from ..stats import queue_counters
from . import dedup
from .subscription import emit_runs
from .memory import stream_memory

log = logging.getLogger("amqpbroker.stream")

FILTER_HEADER = "x-stream-filter-value"
READ_RECORDS = 256               # records one reader is fed per turn before the others
TAIL_BYTES = 4 << 20             # recent appends kept in memory for readers at the tail
TAIL_RECORD_COST = 64            # what a kept record costs besides its body and properties
RETENTION_CHECK_MAX_S = 60.0     # retention runs at least this often when it is configured


def is_stream(arguments) -> bool:
    qtype = (arguments or {}).get("x-queue-type")
    if isinstance(qtype, bytes):
        qtype = qtype.decode(errors="replace")
    return qtype == "stream"


class Cursor:
    """Where one reader of a stream is: the next offset to read, its credit, its filter."""
    __slots__ = ("next_offset", "credit", "filter")

    def __init__(self, next_offset: int, credit: int, filter: StreamFilter | None = None):
        self.next_offset = next_offset
        self.credit = credit
        self.filter = filter

    def __repr__(self) -> str:
        return f"Cursor(next={self.next_offset}, credit={self.credit})"


class StreamSubscription:
    """A basic.consume on a stream: the host's view of the consumer (tag, link) and its
    cursor. ``credit`` is the cursor's (the host grants to it)."""
    __slots__ = ("state", "queue", "cid", "tag", "no_ack", "exclusive", "priority", "cursor")

    def __init__(self, state, stream: "Stream", cid: int, tag: str, *, no_ack: bool,
                 exclusive: bool, arguments: dict, credit: int):
        self.state = state
        self.queue = stream
        self.cid = cid
        self.tag = tag
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = 0
        spec = parse_stream_offset(arguments.get("x-stream-offset"), now_ms())
        self.cursor = Cursor(stream.resolve(spec), credit, StreamFilter.from_arguments(arguments))

    @property
    def credit(self) -> int:
        return self.cursor.credit

    @credit.setter
    def credit(self, n: int) -> None:
        self.cursor.credit = n

    def deliver(self, stream, offset: int, record) -> None:
        self.cursor.credit -= 1
        stream.stats.on_deliver(False, False)
        self.state.emit(Dlv(cid=self.cid, qid=stream.qid, offset=offset, redelivered=False,
                            record=record))

    def deliver_run(self, stream, first: int, records: list) -> None:
        """``deliver`` for ``records``, at offsets ``first``, ``first + 1``, ...: cut into
        ``Dlvs`` as a queue's run is (``subscription.emit_runs``; the front-end takes each as
        one run, ``Channel.deliver_run``), no message per delivery."""
        n = len(records)
        self.cursor.credit -= n
        stream.stats.on_deliveries(n, 0, 0)
        emit_runs(self.state.emit, self.cid, stream.qid, range(first, first + n), records)

    def __repr__(self) -> str:
        return f"<StreamSubscription {self.tag} on {self.queue.name} at {self.cursor}>"


class ReplicaStore:
    """What replication (cluster/replication.py) asks of a partition's store, for a stream:
    its log, no ack log (nothing is settled on a stream), the offset the next publish gets,
    and the commit round's write / fsync / wake-up. The stream's group offsets ride the
    fetch beside the log (``FetchReply.offsets``) and are applied by ``apply_offsets``."""
    __slots__ = ("_stream", "log")

    class _NoAcks:
        floor = 0

        @staticmethod
        def done_runs() -> list:
            return []

        @staticmethod
        def not_done(first: int, end: int) -> list:
            return []

    acks = _NoAcks()
    write_behind = False        # the committer asks every queue's store (committer.mark)

    def __init__(self, stream: "Stream"):
        self._stream = weakref.ref(stream)     # no cycle: a deleted stream is freed at once
        self.log = stream.log

    @property
    def next_offset(self) -> int:
        return self._stream().end_offset

    def settle(self, offset: int) -> None:      # never called: no acks (see _NoAcks)
        raise AssertionError("a stream settles nothing")

    def rolled_from(self, active: int) -> None:
        """Nothing is deleted on settling a stream (retention deletes its segments)."""

    def flush(self) -> None:
        self._stream().offsets.flush()

    def sync(self) -> None:
        self._stream().sync()

    def after_sync(self) -> None:
        self._stream().after_sync()


class Stream:
    ALL_VISIBLE = 1 << 62
    # replication (cluster/replication.py): the leader's hook of a replicated stream (None:
    # not replicated), and the end of what readers may see (the high watermark)
    replication = None
    visible_end = ALL_VISIBLE

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
        sa = self.args.stream
        self.max_age_ms = sa.max_age_ms
        self.max_bytes = sa.max_length_bytes
        config = host.config
        segment_bytes = sa.segment_bytes or config.segment_bytes
        self.fsync = self.args.fsync
        self.log = PartitionLog(directory, segment_bytes=max(1, min(segment_bytes,
                                                                     MAX_SEGMENT_BYTES)),
                                fsync=self.fsync, fsync_interval_ms=config.fsync_interval_ms)
        self.directory = directory
        # consumer groups (worker/groups.py): their commits on this partition, and the
        # groups reading it here
        self.offsets = OffsetStore(directory, fsync=self.fsync,
                                   fsync_interval_ms=config.fsync_interval_ms)
        self.groups: dict = {}                   # group name -> GroupPartition
        self.store = ReplicaStore(self)          # replication's view (cluster/replication.py)
        self.pending: list[Record] = []          # published, not yet written (next round)
        # idempotent producers (dedup.py), as a classic queue has them
        self.producers = dedup.ProducerTable(directory if durable else None,
                                             end_offset=self.log.end_offset,
                                             fsync=self.fsync != "never")
        self.producers.catch_up(self.log)
        self.last_batch = self.log.last_batch_offset()
        self._tail: list[tuple[int, Record]] = []   # recent appends, contiguous offsets
        self._tail_bytes = 0
        self.consumers: list = []                # readers: StreamSubscription (or a group's)
        self.deleted = False
        self._dispatch_scheduled = False
        self._retention_timer = None
        self._interval_timer = None
        self.stats = queue_counters(config)     # message_stats (amqpbroker/stats)
        if self.max_age_ms is not None or self.max_bytes is not None:
            self.enforce_retention()
            self._schedule_retention()
        if self.log.end_offset:
            log.info("stream '%s' in vhost '%s': offsets %d..%d", name, vhost_name,
                     self.log.start_offset, self.log.end_offset)

    # ---------------------------------------------------------------- counts
    @property
    def end_offset(self) -> int:
        """The offset the next publish gets."""
        return self.log.end_offset + len(self.pending)

    @property
    def ready_count(self) -> int:
        """Messages in the stream (log end - log start), as RabbitMQ counts a stream's."""
        return self.end_offset - self.log.start_offset

    @property
    def message_count(self) -> int:
        return self.ready_count

    @property
    def ready_bytes(self) -> int:
        return self.log.size_bytes()

    memory = stream_memory      # bytes this stream holds in the worker, estimated (memory.py)

    unacked = 0                      # a stream holds nothing for its consumers
    persists_all = True              # keeps transient messages too: every publish waits for
                                     # its commit round before it is confirmed
    outstanding: dict = {}           # ... nor unacked messages (statistics read this)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    # ---------------------------------------------------------------- publish
    def publish(self, record: Record, priority: int = 0, flags: int = 0) -> bool:
        """Append a message at the next round; False if a producer's sequence is out of
        order. A duplicate of a producer's earlier publish is not appended and counts as
        stored (confirmed once the one it repeats is durable)."""
        producer = None
        if flags & PUB_PRODUCER:
            producer = dedup.producer_of(record.properties)
            if producer is not None:
                pid, seq, continues = producer
                verdict = self.producers.check(pid, seq, bool(flags & PUB_SUBSEQUENCE),
                                               bool(flags & PUB_LATEST))
                if verdict == dedup.DUPLICATE:
                    offset = self.producers.offset_of(pid, seq)
                    if offset is not None and offset >= self.log.durable_offset:
                        self.host.committer.mark(self)      # confirmed with its round
                    return True
                if verdict != dedup.STORE:
                    log.warning("stream '%s': publish refused: producer %r sequence %r is %s",
                                self.name, pid, seq, verdict)
                    return False
                if not continues:       # a sub-entry's id is recorded with its last
                    self.producers.stored(pid, seq, self.end_offset)
        self.stats.on_publish(len(record.body))
        self.pending.append(record)
        self.host.committer.mark(self)
        return True

    # ``PartitionHost.on_pubs`` hands a read's publishes without flags (no producer
    # reference) to ``publish_many`` as one; a stream takes any priority (and ignores it)
    _plain = True
    plain_priority_max = 255

    def publish_many(self, records) -> int | None:
        """``publish`` of a batch without flags: appended at the next round, each one
        waiting for it (``persists_all``): 0, the index of the first that does, or None for
        a stream that is not durable. ``records`` may be a ``RecordRun`` (from a ring)."""
        if type(records) is RecordRun:
            records = list(records)
        if not records:
            return None
        self.stats.on_publishes(len(records), sum(map(len, map(_body, records))))
        self.pending += records
        self.host.committer.mark(self)
        return 0 if self.durable else None

    def check_backlog(self) -> None:
        """Readers go at their own pace: a stream never asks publishers to wait for them."""

    # ---------------------------------------------------------------- offsets
    def resolve(self, spec: tuple) -> int:
        """The offset a reader starting at ``spec`` (queue_args.parse_stream_offset) reads
        first."""
        kind = spec[0]
        start = self.log.start_offset
        if kind == "first":
            return start
        if kind == "next":
            return self.end_offset
        if kind == "last":
            return self.last_batch if self.last_batch is not None else self.end_offset
        if kind == "offset":
            return max(spec[1], start)
        if kind == "timestamp":
            return max(self.log.offset_for_timestamp(spec[1]), start)
        raise ValueError(f"unknown offset spec {spec!r}")

    # ---------------------------------------------------------------- readers
    def add_consumer(self, reader) -> None:
        self.consumers.append(reader)
        self.schedule_dispatch()

    def remove_consumer(self, reader) -> None:
        if reader in self.consumers:
            self.consumers.remove(reader)

    def schedule_dispatch(self) -> None:
        if not self._dispatch_scheduled and self.consumers and not self.deleted:
            self._dispatch_scheduled = True
            self.host.loop.call_soon(self.dispatch)

    def dispatch(self) -> None:
        self._dispatch_scheduled = False
        if self.deleted:
            return
        more = False
        for reader in list(self.consumers):
            if self._feed(reader):
                more = True
        if more:
            self.schedule_dispatch()          # the others' turn first, then the rest

    def _feed(self, reader) -> bool:
        """Deliver from the reader's cursor while it has credit, at most READ_RECORDS read;
        True if it stopped with credit left and more to read."""
        cur = reader.cursor
        limit = min(self.log.durable_offset, self.visible_end)
        start = self.log.start_offset
        if cur.next_offset < start:
            cur.next_offset = start           # retention removed what it had not read
        flt = cur.filter
        # a plain consumer's deliveries go as runs; a group member's one by one (its
        # tracker sees each), and a filter's (the records it passes are not consecutive)
        runs = flt is None and type(reader) is StreamSubscription
        budget = READ_RECORDS
        while cur.credit > 0 and cur.next_offset < limit and budget > 0:
            records = self._read(cur.next_offset, min(budget, limit - cur.next_offset))
            if not records:
                return False
            budget -= len(records)
            if runs and records[-1][0] - records[0][0] == len(records) - 1:   # no gap
                if len(records) > cur.credit:
                    records = records[:cur.credit]
                cur.next_offset = records[-1][0] + 1
                reader.deliver_run(self, records[0][0], list(map(itemgetter(1), records)))
                if reader not in self.consumers:
                    return False
                continue
            for offset, rec in records:
                cur.next_offset = offset + 1
                if flt is not None and not flt.accepts(_filter_value(rec)):
                    continue
                reader.deliver(self, offset, rec)
                if cur.credit <= 0 or reader not in self.consumers:
                    return False
        return cur.credit > 0 and cur.next_offset < limit

    def _read(self, offset: int, n: int) -> list[tuple[int, Record]]:
        tail = self._tail
        if tail and offset >= tail[0][0]:
            i = offset - tail[0][0]
            limit = min(self.log.durable_offset, self.visible_end)
            return [(o, r) for o, r in tail[i:i + n] if o < limit]
        try:
            return self.log.read(offset, max_records=n)
        except OffsetOutOfRange:                 # retention ran meanwhile: from the start
            return self.log.read(self.log.start_offset, max_records=n)

    def apply_offsets(self, offsets: dict) -> bool:
        """A follower: the leader's group commits (``OffsetStore.in_file``) as its own, for
        the next flush; True if any changed. A group reading here (none on a follower) keeps
        its tracker."""
        mine = self.offsets.groups()
        changed = False
        for group, offset in offsets.items():
            if mine.get(group) != offset:
                self.offsets.commit(group, offset)
                changed = True
        for group in mine.keys() - offsets.keys():
            self.offsets.delete(group)
            changed = True
        return changed

    # ---------------------------------------------------------------- acks: credit only
    def ack(self, offsets) -> None:
        """Nothing to keep: the front-end returns the consumer's credit."""
        self.stats.on_ack(len(offsets))

    def reject(self, offsets, requeue: bool) -> None:
        """basic.nack / basic.reject: credit only, as RabbitMQ 3.13 settles them."""

    def modify(self, offset: int, requeue: bool, properties: bytes) -> None:
        """An AMQP 1.0 ``modified`` outcome: a stream is immutable (RabbitMQ: it "doesn't
        make sense"), so a reject."""

    def get(self, no_ack: bool):
        raise errors.NotImplemented_(
            f"basic.get not supported by stream queues queue '{self.name}' in vhost "
            f"'{self.vhost_name}'", 60, 70)

    def purge(self) -> int:
        raise errors.NotImplemented_(
            f"queue.purge not supported by stream queues queue '{self.name}' in vhost "
            f"'{self.vhost_name}'", 50, 30)

    # ---------------------------------------------------------------- commit round
    def flush(self) -> None:
        """Append what was published since the last round as one batch (no fsync), and the
        groups' new commits to the offset store."""
        if self.groups:
            offsets = self.offsets
            for part in self.groups.values():
                committed = part.take_commit()
                if committed is not None:
                    offsets.commit(part.group, committed)
        self.offsets.flush()
        if not self.pending:
            return
        # a round's messages carry the time it was written, as osiris stamps a chunk: the
        # stream protocol's chunks (one per stored time) follow the rounds, as RabbitMQ's
        # follow its writes, where each publish's own millisecond cut a round in hundreds
        now = now_ms()
        records = [new_record((now, *r[1:])) for r in self.pending]
        self.pending = []
        before = self.log.active_base
        base = self.log.append(records)
        self.producers.flush()
        self.last_batch = base
        self._remember(base, records)
        if self.log.active_base != before and (self.max_age_ms is not None
                                               or self.max_bytes is not None):
            self.enforce_retention()

    def _remember(self, base: int, records: list[Record]) -> None:
        tail = self._tail
        if tail and tail[-1][0] + 1 != base:
            tail.clear()
            self._tail_bytes = 0
        tail.extend(zip(range(base, base + len(records)), records))
        self._tail_bytes += _tail_size(records)
        if self._tail_bytes > TAIL_BYTES:
            cut = len(tail) // 2
            self._tail_bytes -= _tail_size(list(map(itemgetter(1), tail[:cut])))
            del tail[:cut]

    def sync(self) -> None:
        """fsync per policy (the committer's thread), then the producer state of the
        round (after its messages: dedup.py)."""
        self.log.sync()
        self.producers.sync()
        self.offsets.sync()

    def after_sync(self) -> None:
        if self.deleted:
            return
        if self.fsync == "interval" and self.log.durable_offset < self.log.end_offset \
                and self._interval_timer is None:
            self._interval_timer = self.host.loop.call_later(
                self.host.config.fsync_interval_ms / 1000, self._interval_due)
        self.schedule_dispatch()

    def _interval_due(self) -> None:
        self._interval_timer = None
        if not self.deleted:
            self.host.committer.mark(self)

    # ---------------------------------------------------------------- retention
    def apply_arguments(self, arguments: dict) -> None:
        """A policy was set, changed or deleted (policies.py): its retention (``max-age``,
        ``max-length-bytes``) applies from now on."""
        try:
            args = QueueArgs(self.name, self.vhost_name, arguments)
        except errors.AMQPError as exc:
            log.error("stream '%s' in vhost '%s': new arguments refused, the old ones stay: "
                      "%s", self.name, self.vhost_name, exc.text)
            return
        self.args, self.arguments = args, args.arguments
        self.max_age_ms, self.max_bytes = args.stream.max_age_ms, args.stream.max_length_bytes
        if self._retention_timer is not None:
            self._retention_timer.cancel()
            self._retention_timer = None
        if self.max_age_ms is not None or self.max_bytes is not None:
            self._retention_due()           # now, and every period from now

    def enforce_retention(self) -> int:
        removed = self.log.enforce_retention(self.max_age_ms, self.max_bytes)
        if removed:
            start = self.log.start_offset
            if self._tail and self._tail[0][0] < start:
                keep = [(o, r) for o, r in self._tail if o >= start]
                self._tail = keep
                self._tail_bytes = _tail_size([r for _, r in keep])
            for part in self.groups.values():
                part.clamp(start)
            log.info("stream '%s' in vhost '%s': retention removed %d messages, first "
                     "offset now %d", self.name, self.vhost_name, removed, start)
        return removed

    def _schedule_retention(self) -> None:
        period = RETENTION_CHECK_MAX_S
        if self.max_age_ms is not None:
            period = min(period, max(1.0, self.max_age_ms / 4000))
        self._retention_timer = self.host.loop.call_later(period, self._retention_due)

    def _retention_due(self) -> None:
        self._retention_timer = None
        if self.deleted:
            return
        try:
            self.enforce_retention()
        except OSError as exc:
            log.error("stream '%s' in vhost '%s': retention failed: %s", self.name,
                      self.vhost_name, exc)
        self._schedule_retention()

    # ---------------------------------------------------------------- lifecycle
    def touch(self) -> None:
        """Streams have no x-expires."""

    def close_storage(self, destroy: bool) -> None:
        self.deleted = True
        for t in (self._retention_timer, self._interval_timer):
            if t is not None:
                t.cancel()
        if self.pending and not destroy:
            try:
                self.log.append(self.pending)
            except OSError as exc:
                log.error("stream '%s': writing at close failed: %s", self.name, exc)
            self.pending = []
        try:
            if not destroy:
                self.producers.flush()
                self.producers.sync()
        except OSError as exc:
            log.error("stream '%s': producer state not written at close: %s", self.name, exc)
        finally:
            self.producers.close()
        try:
            if destroy:                     # the files go with the directory: no fsync
                self.offsets.discard()
            else:
                for part in self.groups.values():
                    committed = part.take_commit()
                    if committed is not None:
                        self.offsets.commit(part.group, committed)
                self.offsets.close()        # flushes and fsyncs
        except OSError as exc:
            log.error("stream '%s': writing group offsets at close failed: %s", self.name, exc)
        if destroy:
            self.log.destroy()
        else:
            self.log.close()


_body = attrgetter("body")
_properties = attrgetter("properties")


def _tail_size(records: list) -> int:
    """About the bytes ``records`` keep in the tail (its bound, TAIL_BYTES): bodies and
    properties and a fixed cost each, summed without a Python call per record."""
    return (sum(map(len, map(_body, records))) + sum(map(len, map(_properties, records)))
            + TAIL_RECORD_COST * len(records))


def _filter_value(rec: Record):
    """The message's ``x-stream-filter-value`` header (None without one)."""
    raw = rec.properties
    if not raw or not raw[0] & 0x20:              # 0x2000 of the flag word: headers
        return None
    try:
        headers = props_mod.decode(raw).headers
    except ValueError:
        return None
    return headers.get(FILTER_HEADER) if headers else None
