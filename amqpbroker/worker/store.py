"""MessageStore: the messages of one classic queue on disk, apart from what the queue does.

Theory of operation
-------------------
As in LavinMQ's ``message_store.cr``, the store only keeps messages: it appends them, reads
them back, and forgets them once they are settled. Which message is next, priorities, requeue
to the original position, TTL, length limits, dead-lettering and consumers are the queue's
business (queue.py); the store never reorders anything and knows a message only by its offset.

Parts, all in the queue's directory:

* ``log`` (storage.PartitionLog): segments of record batches; appending assigns offsets;
* ``acks`` (storage.AckLog, ``acks.log``): the settled offsets (acked, rejected, expired,
  dropped, dead-lettered, purged);
* ``cache``: offset -> Record of recent appends, bounded by ``cache_limit`` bytes across every
  store of the process (counted in ``budget.cache_used``), plus a readahead of records read back
  from disk (a batch is decoded whole, so one record per read would cost a batch each);
  ``cache_bytes`` is this store's share of ``budget.cache_used`` (a queue's ``memory``,
  worker/memory.py);
* ``settled``: per segment (by base offset) how many of its offsets are settled.

Writes are group-committed by the worker's Committer: ``append`` and ``settle`` only buffer (an
appended message gets its offset at once: the log's end plus what is buffered); ``flush``
writes the buffered records as one batch and the settled offsets as one ack-log entry
(event-loop thread); ``sync`` fsyncs per the fsync policy (worker thread); ``after_sync`` drops
cached bodies over the budget and deletes segments (event-loop thread). ``read`` serves a
cached body at once, durable or not (a consumer may get a message before its fsync, as from
RabbitMQ; the publisher's confirm still waits for it); from disk it reads only below the log's
durable offset and returns None above it (evicted under "interval" before its fsync came).
The log's and the ack log's files are handles of the process's file cache
(storage/filecache.py): a store holds descriptors only while the cache has room, and a file
closed between ``flush`` and ``sync`` was fsynced as it was closed, so ``sync`` still makes
everything flushed durable.

Write-behind (non-durable queues)
---------------------------------
A non-durable queue's messages are wiped at start, so its log is only where bodies go when
memory is short: RabbitMQ, too, pages transient messages out only under memory pressure. Its
store (``write_behind=<bytes>``) writes at each ``flush`` only the oldest buffered records that
are due (``_due``, the one rule for when a transient record reaches the log):

* every record before one that is due, in order (offsets stay contiguous);
* unsettled records, oldest first, while this store holds more than ``write_behind`` bytes of
  unsettled bodies or more than ``WRITE_BEHIND_RECORDS`` *light* records; all of them once
  the process's cached bodies (``budget.cache_used``, which counts them) pass that limit;
* a settled one, whatever its body was, only as a light record over the bound, and then
  down to half of it: a lone message of any size published, delivered and acked writes
  nothing (as RabbitMQ writes nothing for a transient message acked before it paged out),
  and 2048 of them share a write.

A settled record is written without its body if that was ``ELIDE_BODY`` or more (nothing
reads a settled record back, and no recovery follows): the body is dropped at the settle, so
a held settled record costs no more memory than a small one.

A light record is one whose memory its body's bytes do not describe: a body under
``ELIDE_BODY``, or a settled one. A big unsettled body is bounded by the bytes alone: 64 KiB
bodies of a queue with no consumer stay in memory up to the limit, as RabbitMQ keeps them up
to its paging ratio, and are not written 4096 messages in. A message consumed within the
window is never copied into the page cache. A settle of an offset not yet written goes to the
ack log after it. ``write_owed`` (O(1): a bound passed, a settle of a written offset) says
whether a flush may write anything: the committer starts no round for
a non-durable queue that owes none (committer.py), so a queue whose records are all held
costs no round either. Before this rule the committer also held non-durable queues' rounds
back (2 ms, for latency_1) on top of it: two deferrals of the same writes, now one.

Deleting settled segments
-------------------------
A segment is deleted as soon as all of its messages are settled, whatever older or newer
segments still hold: one unacked message keeps its own segment on disk, not every later one.
The active segment is never deleted (it is still appended to); it is checked again when it
rolls. A segment is deleted only once the ack-log entry that settled its last offset is
durable (``acks.durable``), so its offsets stay recorded as done in the ack log (as one run:
see acklog.py) for as long as the floor has not passed them. That record is what recovery uses
to tell a deleted segment from a lost one: a gap in the offsets between two segments is
accepted only if the ack log says every offset in it is done (``gap_settled``, recovery.py).

Crash states (what a kill -9 or power cut can leave), and what opening does with them:

* ack-log entries written, not fsynced, segment intact: a torn tail is cut (acklog.py), the
  messages whose acks were lost are redelivered (at-least-once);
* ack entries durable, segment not deleted yet (crash before the unlink, whether or not the
  ack log was compacted since): the segment is found all settled at open and deleted then;
* segment deleted, ack log not compacted (its DONE entries cover the gap) or compacted (a
  snapshot run covers it): the gap is accepted; ``.deleted`` leftovers of an unlink cut in the
  middle are removed by log recovery;
* ack log ahead of the log (the OS kept the ack log's unsynced entries but not the log's
  tail): the ack log forgets offsets from the log's end, or new messages reusing those offsets
  would count as settled.
There is no other file and no other ordering: those are all the states the writers leave.
With fsync "never" a power cut may keep a deletion and lose the acks that justified it; the
gap then reads as damage and the later segments are dropped, as unsynced data may be anyway.
"""
from __future__ import annotations

import logging
import os
from bisect import bisect_left
from itertools import repeat
from typing import Iterator

from ..storage.acklog import AckLog
from ..storage.log import PartitionLog
from ..storage.record import Record, RecordRun, bodyless_at, decode_record, encode_record

log = logging.getLogger("amqpbroker.store")

# bodies not in the cache are read from the log this many at a time: a batch is decoded
# whole, so reading one record per delivery costs a whole batch (up to ~1000 records) each
READAHEAD_RECORDS = 512
READAHEAD_BYTES = 1 << 20
# write-behind: at most this many light records stay buffered (small or settled bodies, whose
# memory the byte bound does not see)
WRITE_BEHIND_RECORDS = 4096
ELIDE_BODY = 1024            # settled bodies at least this big are written empty
_new_tuple = tuple.__new__


class StoredRun:
    """The records of one ``Pubs`` kept as the bytes the ring carried them in (the log's
    layout, back to back: ``RecordRun``), at offsets ``base`` to ``base + count - 1``.

    A store holds the same object for each of its offsets (in ``cache`` and ``_pending``,
    and the queue in ``outstanding``), so a publish costs no ``Record``: the log appends
    the bytes as they are (``_write``) and a dispatch run hands them on as a ``RecordRun``
    (``take_run``). ``record(offset)`` decodes one where a ``Record`` is needed (a single
    delivery, a requeue, dead-lettering). ``starts`` (each record's position, then the
    end) and ``sizes`` (each body's length) are ``_record.scan_run``'s. A run pins its bytes
    while any of its offsets is held, so only runs of small bodies are kept this way
    (``Queue.publish_many``)."""
    __slots__ = ("data", "base", "count", "starts", "sizes")

    def __init__(self, data: bytes, base: int, count: int, starts: bytes, sizes: bytes):
        self.data = data
        self.base = base
        self.count = count
        self.starts = memoryview(starts).cast("I")
        self.sizes = memoryview(sizes).cast("I")

    def record(self, offset: int) -> Record:
        return decode_record(self.data, self.starts[offset - self.base])[0]

    def body_size(self, offset: int) -> int:
        return self.sizes[offset - self.base]

    def span(self, first: int, stop: int) -> bytes | memoryview:
        """The bytes of the records at offsets ``first`` to ``stop - 1``: the run's own
        bytes if that is all of them, else a view of them, not a copy (a dispatch run goes
        on into a ring, whose write is then the one copy of its bodies; the view keeps the
        run's bytes alive as a slice would its copy)."""
        i, j = first - self.base, stop - self.base
        if i == 0 and j == self.count:
            return self.data
        return memoryview(self.data)[self.starts[i]:self.starts[j]]

    def bodyless(self, offset: int) -> bytes:
        """The record at ``offset`` with an empty body (a settled one, write-behind)."""
        return bodyless_at(self.data, self.starts, self.sizes, offset - self.base)


def body_size(entry, offset: int) -> int:
    """The body length of a buffered or cached entry: a ``Record``, a ``StoredRun`` or the
    bytes of a settled record written without its body (none)."""
    if type(entry) is StoredRun:
        return entry.body_size(offset)
    if type(entry) is bytes:
        return 0
    return len(entry[4])


def raw_chunks(entries: list, first: int) -> list[tuple[bytes, int]]:
    """``entries`` (at offsets ``first`` on) as (bytes in the log's record layout, how many
    records): consecutive offsets of one ``StoredRun`` as one slice of its bytes (the whole
    run uncopied), a ``Record`` encoded, a bodyless record's bytes as they are."""
    out = []
    i, n = 0, len(entries)
    while i < n:
        e = entries[i]
        if type(e) is StoredRun:
            offset = first + i
            j = min(n, i + e.base + e.count - offset)
            if entries[i:j].count(e) == j - i:         # the usual case: none settled early
                k = j
            else:
                k = i + 1
                while k < j and entries[k] is e:
                    k += 1
            out.append((e.span(offset, first + k), k - i))
            i = k
            continue
        out.append((e if type(e) is bytes else encode_record(e), 1))
        i += 1
    return out


class MessageStore:
    def __init__(self, directory: str, *, fsync: str, fsync_interval_ms: int,
                 segment_bytes: int, budget, cache_limit: int, label: str = "",
                 write_behind: int | None = None):
        """Open (creating if needed) and recover the store in ``directory``.

        ``budget``: the object whose ``cache_used`` counts the cached body bytes of every store
        of the process (the partition host); ``cache_limit`` caps that count after each commit
        round. ``label`` names the store in log messages. ``write_behind``: bytes of bodies a
        non-durable queue's store (whose messages no recovery reads) may keep unwritten (see
        "Write-behind" above); None writes every record at the next flush."""
        self.label = label or directory
        self.budget = budget
        self.cache_limit = cache_limit
        self.write_behind = write_behind is not None
        self.write_behind_bytes = write_behind or 0
        self._deferred_bytes = 0                   # bodies of buffered records not settled
        self._settled_early: dict[int, int] = {}   # buffered offsets settled before written:
                                                   # their bodies' sizes
        self._light = 0                            # buffered records small or settled
        self._settles_owed = False                 # settles of written offsets to record
        # the ack log is made by its first entry, the directory by the log's recovery (a
        # new one is not listed: storage/recovery.py)
        self.acks = AckLog(os.path.join(directory, "acks.log"), fsync=fsync,
                           fsync_interval_ms=fsync_interval_ms)
        self.cache: dict = {}                      # offset -> Record or StoredRun
        self.cache_bytes = 0                       # this store's share of budget.cache_used
        self._readahead: dict[int, Record] = {}
        # appended at the next flush: a Record, a StoredRun (one per offset it holds), or a
        # settled record's bytes without its body (write-behind)
        self._pending: list = []
        self._runs = False                         # any was a StoredRun: _write writes bytes
        self._pending_settles: list[int] = []      # recorded at the next flush
        self._written: list[tuple[int, int]] = []  # offset ranges appended, not yet synced
        self.settled: dict[int, int] = {}          # segment base -> settled offsets in it
        self._deletable: dict[int, int] = {}       # segment base -> ack entry that completed it
        self.closed = False
        try:
            self.log = PartitionLog(directory, fsync=fsync, fsync_interval_ms=fsync_interval_ms,
                                    segment_bytes=segment_bytes, gap_settled=self.acks.all_done)
        except BaseException:
            self.acks.close()
            raise
        try:
            self._open_state()
        except BaseException:
            self.acks.close()
            self.log.close()
            raise

    # ---------------------------------------------------------------- opening
    def _open_state(self) -> None:
        end = self.log.end_offset
        if self.acks.last_done() >= end:
            log.warning("%s: ack log ahead of the log end %d; trimming", self.label, end)
            self.acks.forget_from(end)
        active = self.log.active_base
        for base, stop in self.log.segment_bounds():
            n = self.acks.count_done(base, stop)
            if n:
                self.settled[base] = n
                if n == stop - base and base != active:
                    self._deletable[base] = 0     # read from disk (fsynced at open): durable
        self._delete_settled_segments()

    def unsettled(self) -> Iterator[tuple[int, Record]]:
        """Every message not settled, in offset order (recovery at open)."""
        for first, stop in self.acks.not_done(self.log.start_offset, self.log.end_offset):
            offset = first
            while offset < stop:
                batch = self.log.read(offset, max_records=4096, max_bytes=8 << 20)
                if not batch:
                    break
                for off, rec in batch:
                    if off >= stop:
                        break
                    yield off, rec
                offset = batch[-1][0] + 1

    # ---------------------------------------------------------------- offsets
    @property
    def next_offset(self) -> int:
        """The offset the next append gets."""
        return self.log.end_offset + len(self._pending)

    @property
    def end_offset(self) -> int:
        """The end of what is written (the offsets a recovery would find)."""
        return self.log.end_offset

    @property
    def sync_owed(self) -> bool:
        """An fsync the policy skipped is still needed: written records not durable, or a
        settled segment waiting for its acks to be durable before it is deleted."""
        return self.log.durable_offset < self.log.end_offset or bool(self._deletable)

    # ---------------------------------------------------------------- messages
    def append(self, record: Record) -> int:
        """Buffer ``record`` for the next flush; return its offset. Its body stays cached."""
        offset = self.next_offset
        self._pending.append(record)
        self.cache[offset] = record
        size = len(record.body)
        self.budget.cache_used += size
        self.cache_bytes += size
        self._deferred_bytes += size
        if size < ELIDE_BODY:
            self._light += 1
        return offset

    def append_many(self, records: list) -> tuple[int, int]:
        """``append`` for each of ``records``: (the first one's offset, their body bytes)."""
        offset = self.next_offset
        self._pending.extend(records)
        self.cache.update(zip(range(offset, offset + len(records)), records))
        size = light = 0
        for record in records:
            n = len(record.body)
            size += n
            if n < ELIDE_BODY:
                light += 1
        self.budget.cache_used += size
        self.cache_bytes += size
        self._deferred_bytes += size
        self._light += light
        return offset, size

    def append_run(self, data: bytes, count: int, starts: bytes, sizes: bytes, bodies: int,
                   light: int) -> int:
        """``append_many`` of ``count`` records kept as their bytes ``data`` (a ``StoredRun``;
        ``starts``, ``sizes``, ``bodies`` and ``light`` as ``scan_run`` gives them, ``light``
        counting bodies under ``ELIDE_BODY``): the first one's offset."""
        offset = self.next_offset
        run = StoredRun(data, offset, count, starts, sizes)
        self._runs = True
        self._pending.extend(repeat(run, count))
        self.cache.update(zip(range(offset, offset + count), repeat(run)))
        self.budget.cache_used += bodies
        self.cache_bytes += bodies
        self._deferred_bytes += bodies
        self._light += light
        return offset

    def on_disk(self, offset: int) -> bool:
        """``read`` can bring the message at ``offset`` back from the log (it is durable)."""
        return offset < self.log.durable_offset

    def read(self, offset: int) -> Record | None:
        """The message at ``offset``: cached (durable or not), else from disk if durable, else
        None (wait for the commit round). OffsetOutOfRange if there is no such message."""
        rec = self.cache.get(offset)
        if rec is not None:
            return rec.record(offset) if type(rec) is StoredRun else rec
        if offset >= self.log.durable_offset:
            return None          # not on disk yet: wait for the commit round
        rec = self._readahead.get(offset)
        if rec is None:
            self._readahead = dict(self.log.read(offset, READAHEAD_RECORDS, READAHEAD_BYTES))
            rec = self._readahead.get(offset)
            if rec is None:
                return self.log.read_one(offset)    # raises OffsetOutOfRange
        return rec

    def take(self, offset: int) -> Record | None:
        """``read``, and drop the body from memory: the caller holds it from now on."""
        rec = self.read(offset)
        if rec is not None:
            if self.cache.pop(offset, None) is not None:
                size = len(rec.body)
                self.budget.cache_used -= size
                self.cache_bytes -= size
            else:
                self._readahead.pop(offset, None)
        return rec

    def take_many(self, offsets: list[int]) -> tuple[list, int]:
        """``take`` for each of ``offsets`` up to the first that cannot be read yet (a
        dispatch run): (the records, their body bytes). A cached body is taken in one step;
        any other goes through ``take``."""
        cache_pop = self.cache.pop
        records: list = []
        append = records.append
        size = cached = 0
        for offset in offsets:
            rec = cache_pop(offset, None)
            if rec is None:
                rec = self.take(offset)          # from disk, or not readable yet
                if rec is None:
                    break
                size += len(rec.body)
            else:
                if type(rec) is StoredRun:
                    rec = rec.record(offset)
                n = len(rec.body)
                size += n
                cached += n
            append(rec)
        if cached:
            self.budget.cache_used -= cached
            self.cache_bytes -= cached
        return records, size

    def take_run(self, offsets: list[int]) -> tuple[RecordRun, list, int] | None:
        """``take_many``'s way for a dispatch run whose ``offsets`` (ascending) are all
        consecutive and cached as ``StoredRun``s: (their records as one ``RecordRun``, the
        ``StoredRun`` of each offset, their body bytes), no ``Record`` made. None, with
        nothing taken, for any other (``take_many`` then)."""
        first, n = offsets[0], len(offsets)
        if offsets[-1] - first != n - 1:
            return None
        cache = self.cache
        stop_all = first + n
        spans = []
        offset = first
        while offset < stop_all:
            run = cache.get(offset)
            if type(run) is not StoredRun:
                return None
            stop = min(stop_all, run.base + run.count)
            spans.append((run, offset, stop))
            offset = stop
        pop = cache.pop
        held: list = []
        size = 0
        for run, offset, stop in spans:
            taken = [pop(o, None) for o in range(offset, stop)]
            held += taken
            if taken.count(run) != stop - offset:     # one of them taken or evicted before
                for o, entry in zip(range(first, first + len(held)), held):
                    if entry is not None:
                        cache[o] = entry
                return None
            size += sum(run.sizes[offset - run.base:stop - run.base])
        self.budget.cache_used -= size
        self.cache_bytes -= size
        if len(spans) == 1:
            run, offset, stop = spans[0]
            data = run.span(offset, stop)
        else:
            data = b"".join([run.span(offset, stop) for run, offset, stop in spans])
        return RecordRun(data, n), held, size

    def recache(self, offset: int, record: Record) -> None:
        """Keep ``record``'s body in memory again (the caller gave it back, e.g. a requeue)."""
        if offset not in self.cache:
            self.cache[offset] = record
            size = len(record.body)
            self.budget.cache_used += size
            self.cache_bytes += size

    def forget_readahead(self) -> None:
        """Drop records read ahead from disk (nothing left to deliver soon)."""
        self._readahead.clear()

    def settle(self, offset: int) -> None:
        """The message at ``offset`` is gone for good: recorded at the next flush; its segment
        is deleted once nothing in it is left."""
        self._pending_settles.append(offset)
        if offset < self.log.end_offset:
            self._settles_owed = True
        rec = self.cache.pop(offset, None)
        if rec is not None:
            size = body_size(rec, offset)
            self.budget.cache_used -= size
            self.cache_bytes -= size
        if not self.write_behind:
            return
        i = offset - self.log.end_offset
        if i >= 0 and offset not in self._settled_early and i < len(self._pending):
            r = self._pending[i]                       # not written yet
            size = body_size(r, offset)
            self._settled_early[offset] = size
            self._deferred_bytes -= size
            if size >= ELIDE_BODY:                     # it is written without its body:
                self._pending[i] = self._bodyless(r, offset)   # free it now
                self._light += 1

    def settle_many(self, offsets: list[int]) -> None:
        """``settle`` for each of ``offsets`` (a multiple ack): the same steps, one pass."""
        if not offsets:
            return
        self._pending_settles.extend(offsets)
        end = self.log.end_offset
        # their bounds (a lone offset is both: no min/max call)
        lo, hi = (offsets[0], offsets[0]) if len(offsets) == 1 else (min(offsets), max(offsets))
        if lo < end:
            self._settles_owed = True
        pop = self.cache.pop
        freed = 0
        for offset in offsets:
            rec = pop(offset, None)
            if rec is not None:
                freed += body_size(rec, offset)
        if freed:
            self.budget.cache_used -= freed
            self.cache_bytes -= freed
        if not self.write_behind or hi < end:
            return
        pending, early = self._pending, self._settled_early
        for offset in offsets:
            i = offset - end
            if i >= 0 and offset not in early and i < len(pending):
                r = pending[i]                         # not written yet: as ``settle``
                size = body_size(r, offset)
                early[offset] = size
                self._deferred_bytes -= size
                if size >= ELIDE_BODY:
                    pending[i] = self._bodyless(r, offset)
                    self._light += 1

    @staticmethod
    def _bodyless(entry, offset: int):
        """A buffered record settled before it was written, as it is written: no body."""
        if type(entry) is StoredRun:
            return entry.bodyless(offset)
        # tuple.__new__: a NamedTuple's own __new__ is a Python frame more per settled message
        return _new_tuple(Record, (entry[0], entry[1], entry[2], entry[3], b"", entry[5]))

    # ---------------------------------------------------------------- commit round
    def flush(self, force: bool = False) -> None:
        """Write buffered records and settled offsets (event-loop thread, no fsync); with
        write-behind, only the records due (all of them if ``force``)."""
        # take the lists only once written: a failed write (ENOSPC) must leave them pending
        # for the committer's retry, or those messages would be confirmed but never written
        if self._pending:
            n = len(self._pending) if force or not self.write_behind else self._due()
            if n:
                self._write(n)
        if self._pending_settles:
            settles, end = self._pending_settles, self.log.end_offset
            if self._settled_early and max(settles) >= end:     # some not written yet
                self._pending_settles = [o for o in settles if o >= end]
                settles = [o for o in settles if o < end]
            else:
                self._pending_settles = []
            new = self.acks.record(settles)
            self._count_settled(new)
        self._settles_owed = False

    @property
    def write_owed(self) -> bool:
        """A ``flush`` may write something now (a store without write-behind: anything
        buffered). O(1), asked at every publish and settle: it says yes when a bound is
        passed, and ``_due`` then walks the buffer once per round."""
        if not self.write_behind:
            return bool(self._pending or self._pending_settles)
        if self._settles_owed:
            return True
        if not self._pending:
            return False
        limit = self.write_behind_bytes
        return bool(self._light > WRITE_BEHIND_RECORDS
                    or self._deferred_bytes > limit
                    or self.budget.cache_used > max(limit, self.cache_limit))

    def _due(self) -> int:
        """Write-behind: how many of the oldest buffered records to write now."""
        pending, count = self._pending, len(self._pending)
        limit = self.write_behind_bytes
        if self.budget.cache_used > max(limit, self.cache_limit):
            return count                     # memory is short: page everything out
        deferred, light = self._deferred_bytes, self._light
        if deferred <= limit and light <= WRITE_BEHIND_RECORDS:
            return 0                         # under both bounds
        end, early = self.log.end_offset, self._settled_early
        # settled records (of any size: big bodies were left out at their settle), once over
        # the bound, go down to half of it: one write per WRITE_BEHIND_RECORDS // 2 lone
        # messages, not one per message past the bound
        floor = WRITE_BEHIND_RECORDS // 2 if light > WRITE_BEHIND_RECORDS else WRITE_BEHIND_RECORDS
        n = due = 0
        while n < count:
            settled = early.get(end + n) if early else None
            if settled is not None:
                if light > floor:
                    due = n + 1
                elif deferred <= limit and light <= WRITE_BEHIND_RECORDS:
                    break                    # nothing after this one can be due
                light -= 1
            else:
                if deferred <= limit and light <= WRITE_BEHIND_RECORDS:
                    break
                size = body_size(pending[n], end + n)
                deferred -= size
                if size < ELIDE_BODY:
                    light -= 1
                due = n + 1
            n += 1
        return due

    def _write(self, n: int) -> None:
        """Append the ``n`` oldest buffered records as one batch; a record already settled
        goes without its body (write-behind only: nothing reads it back)."""
        pending, early = self._pending, self._settled_early
        records = pending[:n] if n < len(pending) else pending
        end = self.log.end_offset
        active = self.log.active_base
        # settled big bodies were left out at their settle; records kept as the bytes they
        # came in (``StoredRun``) are appended as they are
        if self._runs:
            base = self.log.append_raw(raw_chunks(records, end))
        else:
            base = self.log.append(records)
        deferred = heavy = 0                   # unsettled bytes and big ones
        for i, r in enumerate(records if self.write_behind else ()):
            settled = early.pop(end + i, None) if early else None
            if settled is None:
                size = body_size(r, end + i)
                deferred += size
                if size >= ELIDE_BODY:
                    heavy += 1
        self._deferred_bytes -= deferred
        self._light -= n - heavy
        del pending[:n]
        self._written.append((base, base + n))
        if self.log.active_base != active:
            self._check_settled(active)       # rolled: the old active segment is closed

    def sync(self) -> None:
        """fsync per policy (worker thread)."""
        self.log.sync()
        self.acks.sync()

    def after_sync(self) -> None:
        """Back on the loop: drop cached bodies over the budget, delete settled segments."""
        self._evict_written()
        self._delete_settled_segments()

    def commit(self) -> None:
        """flush, fsync (forced) and after_sync at once (outside the commit rounds)."""
        self.flush(force=True)
        self.log.sync(force=True)
        self.acks.sync(force=True)
        self.after_sync()

    def _count_settled(self, offsets: list[int]) -> None:
        """Add newly settled ``offsets`` (sorted) to their segments' counts."""
        i = 0
        while i < len(offsets):
            bounds = self.log.segment_of(offsets[i])
            if bounds is None:       # not in any segment: nothing to count it against
                i += 1
                continue
            base, stop = bounds
            j = bisect_left(offsets, stop, i)
            self.settled[base] = self.settled.get(base, 0) + j - i
            self._check_settled(base, stop)
            i = j

    def rolled_from(self, active: int) -> None:
        """The log rolled past segment ``active`` outside ``flush``: a follower appends the
        leader's batches to the log as they are (cluster/replication.py). The segments it
        closed may be wholly settled already (acks of a segment's messages that arrived
        while it was active): deletable now, as ``flush`` makes them after its roll. (Once
        missed, a follower kept such segments on disk for good.)"""
        stop_at = self.log.active_base
        for base, stop in self.log.segment_bounds():
            if active <= base < stop_at:
                self._check_settled(base, stop)

    def _check_settled(self, base: int, stop: int | None = None) -> None:
        """Mark segment ``base`` deletable if it is closed and all of it is settled."""
        if stop is None:
            bounds = self.log.segment_of(base)
            if bounds is None:
                return
            stop = bounds[1]
        if base != self.log.active_base and self.settled.get(base, 0) == stop - base:
            self._deletable.setdefault(base, self.acks.written)

    def _delete_settled_segments(self) -> None:
        durable = self.acks.durable
        for base, entry in list(self._deletable.items()):
            if entry <= durable:
                self.log.delete_segment(base)
                del self._deletable[base]
                self.settled.pop(base, None)

    def _evict_written(self) -> None:
        """Over the body-cache budget, drop the bodies of what this round made durable, newest
        first (the head is consumed soonest); they are read back from disk in their turn."""
        written, self._written = self._written, []
        budget, limit, cache = self.budget, self.cache_limit, self.cache
        for start, end in reversed(written):
            for offset in range(end - 1, start - 1, -1):
                if budget.cache_used <= limit:
                    return
                rec = cache.pop(offset, None)
                if rec is not None:
                    size = body_size(rec, offset)
                    budget.cache_used -= size
                    self.cache_bytes -= size

    # ---------------------------------------------------------------- lifecycle
    def segments(self) -> list[tuple[int, int, int]]:
        """(base offset, next offset, settled count) of every segment on disk, oldest first."""
        return [(b, e, self.settled.get(b, 0)) for b, e in self.log.segment_bounds()]

    def close(self, destroy: bool = False) -> None:
        """Release the store: write what is buffered (unless ``destroy``: delete the files)."""
        if self.closed:
            return
        self.closed = True
        self.budget.cache_used -= self.cache_bytes
        self.cache_bytes = 0
        self.cache.clear()
        self._readahead.clear()
        if destroy:                 # nothing is written or fsynced for files being deleted
            self.acks.discard()
            self.log.destroy()
            return
        try:
            self.flush(force=True)
        except OSError as exc:      # disk full at shutdown: only unconfirmed data is lost
            log.error("%s: unwritten messages and acks dropped at shutdown: %s", self.label, exc)
        self.acks.close()
        self.log.close()

    def _simulate_crash(self) -> None:
        """Tests only: drop every descriptor as kill -9 would (written bytes stay; nothing
        buffered is written, nothing more is synced or deleted)."""
        self.closed = True
        self.acks._simulate_crash()
        self.log._simulate_crash()
