"""PartitionLog: the durable, append-only log of one queue partition.

Theory of operation
-------------------
A partition is a directory of segments (segment.py; batch format in record.py; indexes in
index.py). The last segment is active; append() encodes the records as one batch and writes
it with one writev() call, rolling first to a new segment when the batch would push the active
one past `segment_bytes`, when the batch's newest timestamp is `segment_ms` or more past the
segment's first record, or when relative offsets would overflow u32. Rolling writes the last
time-index entry of the old segment and creates the new files; it does not fsync.

Durability is group commit. append() never fsyncs; sync() fsyncs every descriptor written
since the previous sync (the active segment's log, segments rolled since with their indexes,
and the directory if files were created) and then advances `durable_offset` to the end offset
it saw before fsyncing. The active segment's indexes are fsynced only at the first sync after
it rolled (they owe nothing before: an idle queue's handles close without an fsync):
recovery always rescans the last segment and rebuilds its indexes from the log, so a round
does not pay two more fdatasyncs for them (~3.5 ms of a
~21 ms round of 8 MiB here, bench/RESULTS.md). The broker appends many batches on the
event-loop thread, runs one sync() in a worker thread, then confirms everything below the
returned offset. Locking:
  * `_lock` guards all in-memory state and every descriptor open/close; held by append, read,
    retention and the two short bookkeeping phases of sync, never across an fsync;
  * `_sync_lock` serialises sync()/close(); rolled segments keep their write handles until
    a sync has fsynced them.
Descriptors live in a FileCache (filecache.py; by default the process's), which closes the
least recently used when the process holds its limit: a handle written since its last fsync
is fsynced before it is closed, and sync() pins what it fsyncs, so neither a closed nor a
reused descriptor number is ever fsynced in place of the file that owes it. sync() fsyncs
only the handles that owe it; a handle that was closed since owes nothing.
Policies: "always" fsyncs on every sync(); "interval" only when `fsync_interval_ms` has passed
since the last fsync (or `sync(force=True)`); "never" never fsyncs and `durable_offset` is
simply the end offset (data reaches the page cache, which survives kill -9 but not power loss).

read() never returns records at or past `durable_offset`, so a consumer never sees a message
that a crash could take back. Retention and delete_before() delete whole closed segments from
the front (never the active one); the start offset is the first remaining segment's base.
delete_segment() deletes one closed segment anywhere, leaving a gap in the offsets: a classic
queue's store does that when every message of the segment is settled; roll_to() makes one at
the end (a follower copying its leader's gap, cluster/replication.py). read() steps over gaps;
recovery accepts a gap only where the `gap_settled` callback vouches for it (recovery.py).
Opening runs recovery (recovery.py) and exposes its RecoveryReport as `self.recovery`.

The page cache. What a sync has made durable stays in the page cache only for the newest
`PAGE_CACHE_KEEP` bytes of each log; older pages are dropped (`POSIX_FADV_DONTNEED`, in the
sync's thread, right after the fdatasync: they are clean then). The kernel then hands the
same pages to the next writes. On this VM a page the guest has not used lately costs the
write's copy ~60-150 µs per 64 KiB instead of ~16 (bench/RESULTS.md, "64 KiB"): a durable
queue with no consumer wrote into fresh pages all the time, and the copy into the page cache
was half of the broker's CPU. Records are read back from the log only when the store's body
cache (worker/store.py) no longer has them, or by stream consumers: a reader within the newest
32 MiB of a log still reads from memory, an older one from the disk.

Creating and destroying. A new partition (recovery found no segment) costs its directory
and no file and no fsync: its first segment's `.log` is made by the first append (the
indexes' files by their first entries, index.py), and the first sync that finds records
fsyncs them, then the partition's
directory and its parent (the names; dirsync.py shares those fsyncs with the names made
beside them) before `durable_offset` moves. A crash before that leaves the files, or the
directory, missing or short, which recovery makes into an empty partition again: nothing in
them was durable. An existing partition's active files are fsynced once at open (what a killed
process left in the page cache). destroy() fsyncs nothing: the directory is renamed to a
trash name and removed in the background (trash.py).
"""
from __future__ import annotations

import os
import threading
import time
from array import array
from bisect import bisect_right
from typing import Callable

from crc32c import crc32c

from . import dirsync
from .errors import CorruptRecordError, LogClosedError, OffsetOutOfRange
from .filecache import FileCache, process_cache
from .fileformat import FsyncPolicy, fsync_dir
from .epochs import EpochCache
from .index import OffsetIndex, TimeIndex
from .record import (LOG_VERSION, BatchHeader, Record, RecordRun, crc_ok, decode_header,
                     decode_records, encode_batch_parts, encode_raw_batch_parts, record_size)
from .recovery import RecoveryReport, recover_partition
from .segment import Segment
from .trash import discard_directory

# bytes of one entry of each sparse index in memory (its two arrays), for index_bytes
OFFSET_ENTRY = array(OffsetIndex.KEY_TYPE).itemsize + array(OffsetIndex.VALUE_TYPE).itemsize
TIME_ENTRY = array(TimeIndex.KEY_TYPE).itemsize + array(TimeIndex.VALUE_TYPE).itemsize

_fsync = getattr(os, "fdatasync", os.fsync)  # the log's size change is covered by fdatasync
# a log keeps this many of its newest bytes in the page cache; older ones are dropped once
# fsynced (see "The page cache" above)
PAGE_CACHE_KEEP = 32 << 20
_fadvise = getattr(os, "posix_fadvise", None)


def _encode_records(base: int, records: list, epoch: int) -> tuple:
    parts, size, first_ts, max_ts = encode_batch_parts(base, records, epoch)
    return parts, size, first_ts, max_ts, len(records)


def _encode_raw(base: int, chunks: list, epoch: int) -> tuple:
    parts, size, count, first_ts, max_ts = encode_raw_batch_parts(base, chunks, epoch)
    return parts, size, first_ts, max_ts, count


def _drop_cached(fd: int, seg, end: int) -> None:
    """Drop the page cache of ``seg``'s log below ``end`` (fsynced: clean pages), from where
    the last drop stopped. Advice only: a failure changes nothing but the cache."""
    start = seg.cache_dropped
    if _fadvise is None or end <= start:
        return
    try:
        _fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
    except OSError:
        return
    seg.cache_dropped = end
MAX_SEGMENT_BYTES = (1 << 31) - 1  # index positions are u32; keep a wide margin


class PartitionLog:
    def __init__(self, directory: str | os.PathLike, *, segment_bytes: int = 64 * 1024 * 1024,
                 segment_ms: int = 7 * 24 * 3600 * 1000, fsync: str = "always",
                 fsync_interval_ms: int = 1000, index_interval_bytes: int = 4096,
                 gap_settled: Callable[[int, int], bool] | None = None,
                 files: FileCache | None = None):
        """Open (creating if needed) and recover the partition stored in `directory`.
        `gap_settled`: see recover_partition. `files`: the descriptor cache (default: the
        process's)."""
        if not 0 < segment_bytes <= MAX_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes must be in 1..{MAX_SEGMENT_BYTES}")
        if segment_ms <= 0 or index_interval_bytes <= 0:
            raise ValueError("segment_ms and index_interval_bytes must be > 0")
        self.directory = os.fspath(directory)
        self.segment_bytes = segment_bytes
        self.segment_ms = segment_ms
        self.index_interval_bytes = index_interval_bytes
        self._policy = FsyncPolicy(fsync, fsync_interval_ms)
        self._lock = threading.Lock()
        # (segment, header, records, position after it) of the batch the last read() stopped
        # inside: the next read takes its records from here instead of reading and decoding
        # the batch again
        self._part_read: tuple | None = None
        self._sync_lock = threading.Lock()
        self._files = files or process_cache()
        self._unsynced: list[Segment] = []  # rolled segments whose writes await an fsync
        self._dir_dirty = False
        self._closed = False
        segments, self.recovery = recover_partition(
            self.directory, index_interval_bytes, gap_settled, files=self._files,
            durable=self._policy.mode != "never")
        self.recovery: RecoveryReport
        self._segments: list[Segment] = segments
        self._bases = [s.base_offset for s in segments]
        self._active.open_for_append()
        # a new partition's files are made by its first append (``_make_files``); its first
        # sync after that makes their names durable, and the directory's own in its parent
        self._names_owed: list[tuple[str, int]] = []   # (directory, dirsync ticket)
        if self._policy.mode != "never" and not self.recovery.created:
            try:
                for f in self._active.write_files():  # what a killed process left in the page
                    f.fsync()                         # cache
            except BaseException:
                self._release_descriptors(fsync=False)
                raise
        self.durable_offset = self.end_offset
        # the leader epoch append() stamps (replication sets it on a leader's log; 0 for a
        # queue that is not replicated), and the epochs of the log (epochs.py), built when
        # first asked
        self.leader_epoch = 0
        self._epochs: EpochCache | None = None

    # -- offsets ---------------------------------------------------------------------------------
    @property
    def _active(self) -> Segment:
        return self._segments[-1]

    @property
    def start_offset(self) -> int:
        """First offset still on disk."""
        return self._segments[0].base_offset

    @property
    def end_offset(self) -> int:
        """Next offset to be assigned."""
        return self._segments[-1].next_offset

    @property
    def active_base(self) -> int:
        """Base offset of the active segment (the one appended to, never deleted)."""
        return self._segments[-1].base_offset

    def last_batch_offset(self) -> int | None:
        """Base offset of the newest batch (None if the log is empty): a stream's ``last``."""
        with self._lock:
            self._check_open()
            for seg in reversed(self._segments):
                if seg.is_empty:
                    continue
                pos, _ = seg.position_for(seg.next_offset - 1)
                last = None
                for _, h, _ in seg.iter_batches(pos, seg.size):
                    last = h.base_offset
                return last
            return None

    def segment_of(self, offset: int) -> tuple[int, int] | None:
        """(base offset, next offset) of the segment holding `offset`, None if none does."""
        with self._lock:
            i = bisect_right(self._bases, offset) - 1
            if i < 0 or offset >= self._segments[i].next_offset:
                return None
            return self._bases[i], self._segments[i].next_offset

    def segment_bounds(self) -> list[tuple[int, int]]:
        """(base offset, next offset) of every segment, oldest first (last = active)."""
        with self._lock:
            return [(s.base_offset, s.next_offset) for s in self._segments]

    def segment_sizes(self) -> list[tuple[int, int, int]]:
        """(base offset, next offset, bytes of its .log file) of every segment, oldest first."""
        with self._lock:
            return [(s.base_offset, s.next_offset, s.size) for s in self._segments]

    def size_bytes(self) -> int:
        """Bytes of all segment .log files (headers included, indexes not)."""
        with self._lock:
            return sum(s.size for s in self._segments)

    def index_bytes(self) -> tuple[int, int]:
        """(segments, bytes of their sparse indexes' entries in memory): a queue's memory.
        Without the lock: an estimate, read on the thread that appends and rolls, for every
        queue of a metrics scrape."""
        segments = self._segments
        if len(segments) == 1:
            s = segments[0]
            return 1, (len(s.offset_index.keys) * OFFSET_ENTRY
                       + len(s.time_index.keys) * TIME_ENTRY)
        entries = timed = 0
        for s in segments:
            entries += len(s.offset_index.keys)
            timed += len(s.time_index.keys)
        return len(segments), entries * OFFSET_ENTRY + timed * TIME_ENTRY

    # -- leader epochs (epochs.py) -----------------------------------------------------------------
    @property
    def epochs(self) -> EpochCache:
        """The epochs of the log and where each starts, rebuilt from the batches the first
        time (a segment all of one epoch costs the reads of its first and last batch)."""
        with self._lock:
            self._check_open()
            if self._epochs is None:
                cache = EpochCache()
                for seg in self._segments:
                    if seg.is_empty:
                        continue
                    first = next(seg.iter_batches(seg.position_for(seg.base_offset)[0]))[1]
                    last = None
                    for _, last, _ in seg.iter_batches(seg.position_for(seg.next_offset - 1)[0]):
                        pass
                    if last is None or last.epoch == first.epoch:
                        cache.assign(first.epoch, first.base_offset)
                        continue
                    for _, h, _ in seg.iter_batches(seg.position_for(seg.base_offset)[0]):
                        cache.assign(h.epoch, h.base_offset)
                self._epochs = cache
            return self._epochs

    def epoch_end(self, epoch: int) -> tuple[int | None, int]:
        """Kafka's ``OffsetsForLeaderEpoch`` on this log: (the largest epoch <= `epoch` in
        it, the offset where that epoch ends); (None, start) if all its epochs are newer."""
        cache = self.epochs
        with self._lock:
            return cache.end_offset_for(epoch, self.end_offset)

    def last_epoch(self) -> int:
        """The epoch of the newest batch (0 for an empty log): a follower's last fetched."""
        latest = self.epochs.latest
        return 0 if latest is None else latest

    # -- writing ---------------------------------------------------------------------------------
    def append(self, records: list[Record], epoch: int | None = None) -> int:
        """Append `records` as one batch with one writev() and no fsync; return the base
        offset. The batch is stamped with `epoch`, by default `leader_epoch`."""
        return self._append(records, epoch, _encode_records)

    def append_raw(self, chunks: list, epoch: int | None = None, crc: int | None = None
                   ) -> int:
        """``append`` of records already in the log's layout: ``chunks`` is a list of (their
        bytes back to back, how many) (``record.encode_raw_batch_parts``: the bytes a ring
        carried are written as they are, no ``Record`` decoded and encoded again). ``crc``:
        the CRC the batch must have (a leader's batch fetched by a follower, ``read_batches``:
        the same base offset, epoch and records give the same); another is a
        ``CorruptRecordError`` and nothing is written (Kafka's follower checks each fetched
        batch's CRC too)."""
        return self._append(chunks, epoch, _encode_raw, crc)

    def _append(self, records: list, epoch: int | None, encode, crc: int | None = None) -> int:
        with self._lock:
            self._check_open()
            if not records:
                return self.end_offset
            active = self._active
            if active.unmade:
                self._make_files(active)
            base = active.next_offset
            if epoch is None:
                epoch = self.leader_epoch
            parts, size, first_ts, max_ts, count = encode(base, records, epoch)
            if crc is not None and (made := decode_header(parts[0]).crc) != crc:
                raise CorruptRecordError(
                    f"{self.directory}: the batch at offset {base} has CRC {made:#010x} "
                    f"here, {crc:#010x} where it came from: not written")
            if not active.is_empty and (
                    active.size + size > self.segment_bytes
                    or max_ts - active.first_timestamp >= self.segment_ms
                    or not active.fits(count)
                    or active.version != LOG_VERSION):      # an older file: not appended to
                active = self._roll()
            active.append(parts, BatchHeader(size - 4, base, count, 0, first_ts, max_ts,
                                             epoch))
            if self._epochs is not None:
                self._epochs.assign(epoch, base)
            if self._policy.mode == "never":
                self.durable_offset = active.next_offset
            return base

    def _make_files(self, seg: Segment) -> None:
        """A new partition's first append: its first segment's `.log` is made now (the
        directory too, if a crash took it); the names are made durable by the first sync
        that finds records (dirsync.py shares that fsync with names made beside them)."""
        try:
            seg.make()
        except FileNotFoundError:
            os.makedirs(self.directory, exist_ok=True)
            seg.make()
        seg.open_for_append()
        if self._policy.mode != "never":
            parent = os.path.dirname(os.path.abspath(self.directory))
            self._names_owed = [(self.directory, dirsync.name_made(self.directory)),
                                (parent, dirsync.name_made(parent))]

    def roll_to(self, offset: int) -> None:
        """Start a new, empty active segment at `offset`, past the end: the offsets between
        become a gap, as delete_segment() leaves one (a follower making the gap its leader's
        log has, cluster/replication.py). Recovery keeps the gap only where `gap_settled`
        vouches for it, so the caller settles its offsets with the same sync. An empty
        active segment is replaced rather than kept closed and empty."""
        with self._lock:
            self._check_open()
            if offset <= self.end_offset:
                raise ValueError(f"{self.directory}: roll to {offset}, not past the end "
                                 f"{self.end_offset}")
            active = self._active
            if active.unmade:
                self._make_files(active)    # the directory, and its names owed a sync
            if not active.is_empty:
                self._roll(offset)
            else:
                new = Segment.create(self.directory, offset, self.index_interval_bytes,
                                     self._files, self._policy.mode != "never")
                new.open_for_append()
                self._segments[-1], self._bases[-1] = new, offset
                self._dir_dirty = True
                active.discard()
                active.delete_files()
            if self._policy.mode == "never":
                self.durable_offset = self.end_offset

    def _roll(self, base: int | None = None) -> Segment:
        old = self._active
        old.seal_time_index()
        if self._policy.mode == "never":
            old.close_writer()
        else:
            old.owe_index_sync()
            self._unsynced.append(old)
        new = Segment.create(self.directory, old.next_offset if base is None else base,
                             self.index_interval_bytes, self._files,
                             self._policy.mode != "never")
        new.open_for_append()
        self._segments.append(new)
        self._bases.append(new.base_offset)
        self._dir_dirty = True
        return new

    def sync(self, force: bool = False) -> int:
        """Fsync per policy and return `durable_offset`. Thread-safe against append()."""
        with self._sync_lock:
            return self._sync_locked(force)

    def _sync_locked(self, force: bool) -> int:
        with self._lock:
            if self._closed or not self._policy.due(force):
                return self.durable_offset
            target = self.end_offset
            # the active segment's indexes are not fsynced: recovery rescans the last segment
            # and rebuilds them from its log; rolled segments' are (trusted at open)
            rolled = list(self._unsynced)
            taken = [pair for seg in rolled for pair in seg.take_unsynced()]
            taken += self._active.take_unsynced(indexes=False)
            # what each written log may drop from the page cache once fsynced
            drops = {seg._writer: (seg, seg.size - PAGE_CACHE_KEEP)
                     for seg in rolled + [self._active] if seg._writer is not None}
            names = ()
            if self._names_owed and target > 0:     # created here: the first records make
                names, self._names_owed = self._names_owed, []    # the names durable too
            dir_dirty, self._dir_dirty = self._dir_dirty, False
        done = 0
        try:
            for f, fd in taken:  # releases the GIL; append() keeps running on the other thread
                _fsync(fd)
                done += 1
                drop = drops.get(f)
                if drop is not None:
                    _drop_cached(fd, *drop)
            if dir_dirty:
                fsync_dir(self.directory)
            for directory, ticket in names:     # an fsync shared with the names made
                dirsync.make_durable(directory, ticket)    # beside them (dirsync.py)
        except BaseException:
            with self._lock:
                self._dir_dirty = self._dir_dirty or dir_dirty
                self._names_owed = self._names_owed or list(names)
            raise
        finally:
            for i, (f, _) in enumerate(taken):
                f.synced(ok=i < done)
        with self._lock:
            self._policy.done()
            for seg in rolled:
                self._unsynced.remove(seg)
                seg.close_writer()
            if target > self.durable_offset:
                self.durable_offset = target
            return self.durable_offset

    # -- reading ---------------------------------------------------------------------------------
    def read(self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20
             ) -> list[tuple[int, Record]]:
        """Records from `offset` on, below `durable_offset`: at most `max_records`, and at most
        `max_bytes` unless the first record alone is larger. [] at or past the end."""
        with self._lock:
            self._check_open()
            if offset < self.start_offset:
                raise OffsetOutOfRange(f"offset {offset} is below the start offset {self.start_offset}")
            out: list[tuple[int, Record]] = []
            limit = self.durable_offset
            size = 0
            i = bisect_right(self._bases, offset) - 1
            while i < len(self._segments) and offset < limit:
                seg = self._segments[i]
                for after, h, records in self._batches_from(seg, offset, cached=True):
                    skip = max(offset - h.base_offset, 0)
                    first = h.base_offset + skip
                    room = min(max_records - len(out), limit - first, h.count - skip)
                    if room > 0 and size + h.size <= max_bytes:
                        # all of the batch would fit (a record costs at most its bytes in
                        # it): the records wanted, without a test per record
                        take = records[skip:skip + room]
                        out.extend(zip(range(first, first + room), take))
                        # a whole batch's records cost its bytes but its header's
                        size += h.size - seg.head_size if room == h.count \
                            else sum(map(record_size, take))
                        if skip + room < h.count:
                            self._part_read = (seg, h, records, after)
                            return out
                        offset = h.next_offset
                        continue
                    for o, r in enumerate(records[skip:] if skip else records, first):
                        sz = record_size(r)
                        if o >= limit or len(out) >= max_records or (out and size + sz > max_bytes):
                            self._part_read = (seg, h, records, after)
                            return out
                        out.append((o, r))
                        size += sz
                    offset = h.next_offset
                i += 1
            self._part_read = None
            return out

    def read_batches(self, offset: int, max_bytes: int = 1 << 20, written: bool = False
                     ) -> list[tuple[int, int, RecordRun, int | None]]:
        """Whole batches from the one starting at `offset` on, below `durable_offset` (with
        `written`: below the end offset, fsynced or not), as (base offset, leader epoch,
        records, CRC): the records as the batch holds them (a ``RecordRun``, CRC-checked, not
        decoded), which a follower appends as they are (``append_raw``) as one batch of that
        epoch, and its log is then byte-identical (cluster/replication.py: a leader ships
        what it wrote while its fsync runs; Kafka's followers fetch the log's bytes the same
        way); the batch's CRC, which the follower's batch must have too (None for a version 1
        segment's batch, whose CRC covers no epoch). At most `max_bytes` of batches unless the
        first alone is larger; [] at or past that end."""
        with self._lock:
            self._check_open()
            if offset < self.start_offset:
                raise OffsetOutOfRange(f"offset {offset} is below the start offset {self.start_offset}")
            out: list[tuple[int, int, RecordRun, int | None]] = []
            limit, size = self.end_offset if written else self.durable_offset, 0
            i = bisect_right(self._bases, offset) - 1
            while i < len(self._segments) and offset < limit:
                seg = self._segments[i]
                current = seg.version == LOG_VERSION
                for _, h, run in self._batches_from(seg, offset, decode=False):
                    if h.next_offset > limit or (out and size + h.size > max_bytes):
                        return out
                    out.append((h.base_offset, h.epoch, run, h.crc if current else None))
                    size += h.size
                    offset = h.next_offset
                i += 1
            return out

    def checksum(self, first: int, end: int) -> int:
        """CRC32C of the bytes of the whole batches from the one at `first` to the one ending
        at `end` (batch boundaries): replicas holding the same batches give the same."""
        crc = 0
        with self._lock:
            self._check_open()
            i = max(0, bisect_right(self._bases, first) - 1)
            for seg in self._segments[i:]:
                pos, _ = seg.position_for(max(first, seg.base_offset))
                for _, h, batch in seg.iter_batches(pos, seg.size):
                    if h.base_offset >= end:
                        return crc
                    if h.base_offset >= first:
                        crc = crc32c(batch, crc)
            return crc

    def cut_points(self, offset: int) -> list[tuple[str, int | None]]:
        """What truncating the log to `offset` (a batch boundary) takes, for a closed log's
        files (``truncate_files``): (segment log path, byte length to keep), None for a
        segment to delete with its indexes. Recovery at the next open rebuilds the indexes
        of the segment cut and the ack log's view of the end (as after a torn write)."""
        with self._lock:
            self._check_open()
            out: list[tuple[str, int | None]] = []
            for seg in self._segments:
                if seg.base_offset >= offset and seg is not self._segments[0]:
                    out.append((seg.log_path, None))
                elif seg.base_offset <= offset < seg.next_offset:
                    pos, _ = seg.position_for(offset)
                    for p, h, _ in seg.iter_batches(pos, seg.size):
                        if h.base_offset >= offset:
                            out.append((seg.log_path, p))
                            break
            return out

    def read_one(self, offset: int) -> Record:
        """The record at `offset`; OffsetOutOfRange if it is deleted or not yet durable."""
        got = self.read(offset, max_records=1)
        if not got or got[0][0] != offset:
            raise OffsetOutOfRange(f"no readable record at offset {offset}")
        return got[0][1]

    def offset_for_timestamp(self, ts_ms: int) -> int:
        """First offset whose record has timestamp >= ts_ms (end_offset if none)."""
        with self._lock:
            self._check_open()
            for seg in self._segments:
                if seg.max_timestamp < ts_ms:
                    continue
                start = seg.base_offset + seg.time_index.start_for(ts_ms)
                for _, h, records in self._batches_from(seg, start, min_ts=ts_ms):
                    for o, r in enumerate(records, h.base_offset):
                        if o >= start and r.timestamp >= ts_ms:
                            return o
            return self.end_offset

    def _batches_from(self, seg: Segment, offset: int, min_ts: int | None = None,
                      decode: bool = True, cached: bool = False):
        """(position after it, header, records) of each batch of `seg` that holds offsets >=
        `offset` (lock held); without `decode`, the records as a ``RecordRun`` of their bytes.
        With `cached`, the batch a ``read`` stopped inside last time is neither read nor decoded
        again (a reader with little credit reads a big batch a few records at a time: each
        read copied and decoded all of it). Its bytes cannot have changed: below the end the
        log is never rewritten while it is open (a follower's truncation closes it and opens
        a new ``PartitionLog``)."""
        part = self._part_read if cached else None
        if part is not None and part[0] is seg and part[1].base_offset <= offset < part[1].next_offset:
            yield part[3], part[1], part[2]
            pos, expected = part[3], part[1].next_offset
        else:
            pos, expected = seg.position_for(offset)
        for at, h, batch in seg.iter_batches(pos, seg.size):
            if h.base_offset != expected:
                raise CorruptRecordError(f"{seg.log_path}: batch at offset {h.base_offset} where "
                                         f"the index promised {expected}")
            expected = h.next_offset
            if expected <= offset or (min_ts is not None and h.max_ts < min_ts):
                continue
            if not crc_ok(batch):
                raise CorruptRecordError(f"{seg.log_path}: CRC mismatch in batch {h.base_offset}")
            if decode:
                yield at + h.size, h, decode_records(batch, seg.head_size)
            else:
                yield at + h.size, h, RecordRun(bytes(batch[seg.head_size:]), h.count)
        if expected != seg.next_offset:
            raise CorruptRecordError(f"{seg.log_path}: unreadable batch at offset {expected}")

    # -- deleting --------------------------------------------------------------------------------
    def enforce_retention(self, max_age_ms: int | None = None, max_bytes: int | None = None,
                          now_ms: int | None = None) -> int:
        """Delete the oldest closed segments while their newest record is older than
        `max_age_ms`, or while the log is larger than `max_bytes`. Returns records removed."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            self._check_open()
            total = sum(s.size for s in self._segments)
            removed = 0
            while len(self._segments) > 1:
                seg = self._segments[0]
                too_old = max_age_ms is not None and now - seg.max_timestamp > max_age_ms
                too_big = max_bytes is not None and total > max_bytes
                if not (too_old or too_big):
                    break
                total -= seg.size
                removed += self._delete_oldest_segment()
            return removed

    def delete_before(self, offset: int) -> int:
        """Delete closed segments all of whose offsets are < `offset`; returns records removed."""
        with self._lock:
            self._check_open()
            removed = 0
            while len(self._segments) > 1 and self._segments[0].next_offset <= offset:
                removed += self._delete_oldest_segment()
            return removed

    def delete_segment(self, base_offset: int) -> int:
        """Delete the closed segment starting at `base_offset` (its offsets become a gap);
        returns its record count. The active segment is never deleted (ValueError)."""
        with self._lock:
            self._check_open()
            i = bisect_right(self._bases, base_offset) - 1
            if i < 0 or self._bases[i] != base_offset:
                raise ValueError(f"{self.directory}: no segment starts at {base_offset}")
            if i == len(self._segments) - 1:
                raise ValueError(f"{self.directory}: segment {base_offset} is the active one")
            return self._delete_segment_at(i)

    def _delete_oldest_segment(self) -> int:
        removed = self._delete_segment_at(0)
        if self._epochs is not None:
            self._epochs.drop_before(self.start_offset)
        return removed

    def _delete_segment_at(self, i: int) -> int:
        seg = self._segments.pop(i)
        self._bases.pop(i)
        seg.discard()   # a handle sync() is fsyncing now is closed when it is done
        seg.delete_files()
        self._dir_dirty = True
        return seg.record_count

    # -- lifecycle -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"partition log {self.directory} is closed")

    def close(self) -> None:
        """Sync per policy (forced for "interval"), then release every descriptor."""
        with self._sync_lock:
            if self._closed:
                return
            self._sync_locked(force=True)
            self._release_descriptors(fsync=True)
            self._part_read = None

    def destroy(self) -> None:
        """Remove the partition's directory (the queue was deleted): its descriptors are
        dropped without the fsyncs they owe, and the directory goes to the trash
        (trash.py: renamed at once, removed in the background)."""
        with self._sync_lock:
            if not self._closed:
                self._release_descriptors(fsync=False)
        discard_directory(self.directory)
        dirsync.forget(self.directory)

    def _release_descriptors(self, fsync: bool) -> None:
        """Close every handle; `fsync`: do the fsyncs still owed first (not on a crash)."""
        with self._lock:
            self._closed = True
            for seg in self._unsynced + self._segments:
                if fsync:
                    seg.close()
                else:
                    seg.discard()
            self._unsynced.clear()

    def _simulate_crash(self) -> None:
        """Tests only: drop every descriptor the way kill -9 would. Whatever write() handed
        to the kernel stays; nothing is synced, sealed or flushed on the way out."""
        self._release_descriptors(fsync=False)

    def __enter__(self) -> "PartitionLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"PartitionLog({self.directory!r}, start={self.start_offset}, "
                f"end={self.end_offset}, durable={self.durable_offset})")
