"""AckLog: which offsets of a partition are done (acked, expired, dead-lettered).

Theory of operation
-------------------
Classic queues delete on ack, but the partition log is append-only, so "deleted" is a durable
set of done offsets kept beside it. After a restart the broker redelivers every offset that is
not done; the message store (worker/store.py) deletes each segment whose offsets are all done.

In memory: `floor` (every offset < floor is done) and the done offsets >= floor as `OffsetRuns`,
sorted disjoint runs [first, end). Recording an offset equal to the floor advances the floor
over the run above it. A run costs the same for 1 offset or 10 million, so the state grows with
the number of gaps between done offsets (at most the number of messages still live), not with
how many messages went through: a stuck message at the floor and a billion acked after it is
one floor and one run. A segment the store deleted is inside a run, and stays recorded as done
there until the floor passes it; that is what lets recovery tell a deleted segment from a lost
one (recovery.py).

File format: the 8-byte header (magic b"AQAK", schema version; fileformat.py), then entries:

    length   u32   bytes of payload
    crc      u32   CRC32C of payload
    payload  kind u8, then
             kind 1 (DONE):     n u32, n x (first offset u64, run length u32)
             kind 2 (SNAPSHOT): floor u64, n u32, n x (first offset u64, run length u32)

record() appends one DONE entry with one write(); runs of consecutive offsets cost 12 bytes (a
run longer than 2^32 - 1 is written as several).
A SNAPSHOT raises the floor to its value and marks its runs done. compact() writes a new file
holding one SNAPSHOT of the current state to `<path>.tmp`, fsyncs it, renames it over the old
file and fsyncs the directory; record() calls it when the file passes `compact_bytes` and has
doubled since the last compaction.

Durability: `written` counts the entries appended since open and `durable` how many of them
are known to be on disk (fsynced by sync() or by compaction; with fsync "never", written is as
durable as it gets). The store deletes a segment only once the entry that settled its last
offset is durable, so no crash can leave a deleted segment whose offsets are not recorded done.
Opening fsyncs the file once (what a killed process left in the page cache), like the log;
a new file is made without an fsync (its first sync fsyncs it and its name: entryfile.py).
The descriptor is a handle of a FileCache (filecache.py), opened when used and closed (fsynced
first if owed) when the process needs the room; sync() fsyncs it only if an fsync is owed.

Crash states: a missing file, or one shorter than its header (made, never synced), opens as
an empty ack log, which it was. A torn or garbled tail (short entry, CRC mismatch, unknown
kind) is cut on open at the end of the last good entry, so acks recorded after the last sync() may be lost, and
those messages are redelivered (at-least-once). A crash during compaction leaves the old file
intact plus a `<path>.tmp`, which open deletes. A file whose header is unreadable (not a
crash state: damage) is replaced by an empty one and logged, which means redelivery of
everything, never loss.
"""
from __future__ import annotations

import logging
import os
import struct
from bisect import bisect_left, bisect_right
from typing import Iterable, Iterator

from .entryfile import EntryFile
from .filecache import FileCache
from .fileformat import MAGIC_ACKLOG, entry, file_header

log = logging.getLogger("amqpbroker.storage")

_RUN = struct.Struct(">QI")
_COUNT = struct.Struct(">I")
_FLOOR = struct.Struct(">Q")
KIND_DONE = 1
KIND_SNAPSHOT = 2
MAX_RUN = (1 << 32) - 1


def _runs(offsets: Iterable[int]) -> list[tuple[int, int]]:
    """(first offset, run length) of sorted, distinct offsets."""
    runs: list[list[int]] = []
    for o in offsets:
        if runs and o == runs[-1][0] + runs[-1][1] and runs[-1][1] < MAX_RUN:
            runs[-1][1] += 1
        else:
            runs.append([o, 1])
    return [(a, n) for a, n in runs]


def _split(first: int, end: int) -> Iterator[tuple[int, int]]:
    """[first, end) as (first offset, run length) pieces that fit the u32 length field."""
    while first < end:
        n = min(end - first, MAX_RUN)
        yield first, n
        first += n


class OffsetRuns:
    """A set of offsets as sorted, disjoint, non-adjacent runs [starts[i], ends[i])."""

    __slots__ = ("starts", "ends")

    def __init__(self):
        self.starts: list[int] = []
        self.ends: list[int] = []

    def __contains__(self, offset: int) -> bool:
        i = bisect_right(self.starts, offset) - 1
        return i >= 0 and offset < self.ends[i]

    def __bool__(self) -> bool:
        return bool(self.starts)

    def __iter__(self) -> Iterator[int]:
        for a, b in zip(self.starts, self.ends):
            yield from range(a, b)

    def runs(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends))

    def add(self, first: int, end: int) -> None:
        """Add [first, end), merging with every run it overlaps or touches."""
        starts, ends = self.starts, self.ends
        i = bisect_left(ends, first)       # first run that ends at or after `first`
        j = bisect_right(starts, end)      # runs before j start at or before `end`
        if i < j:
            first, end = min(first, starts[i]), max(end, ends[j - 1])
        starts[i:j] = [first]
        ends[i:j] = [end]

    def count(self, first: int, end: int) -> int:
        """How many offsets of [first, end) are in the set."""
        starts, ends = self.starts, self.ends
        i = max(bisect_right(starts, first) - 1, 0)
        n = 0
        while i < len(starts) and starts[i] < end:
            n += max(0, min(end, ends[i]) - max(first, starts[i]))
            i += 1
        return n

    def gaps(self, first: int, end: int) -> Iterator[tuple[int, int]]:
        """The runs of [first, end) that are not in the set."""
        starts, ends = self.starts, self.ends
        i = max(bisect_right(starts, first) - 1, 0)
        while first < end:
            while i < len(starts) and ends[i] <= first:
                i += 1
            if i == len(starts) or starts[i] >= end:
                yield first, end
                return
            if starts[i] > first:
                yield first, starts[i]
            first = ends[i]

    def drop_below(self, offset: int) -> None:
        i = bisect_right(self.ends, offset)         # runs before i end at or below `offset`
        del self.starts[:i], self.ends[:i]
        if self.starts and self.starts[0] < offset:
            self.starts[0] = offset

    def drop_from(self, offset: int) -> None:
        i = bisect_left(self.starts, offset)        # runs from i start at or after `offset`
        del self.starts[i:], self.ends[i:]
        if self.ends and self.ends[-1] > offset:
            self.ends[-1] = offset


def _entry(kind: int, runs: list[tuple[int, int]], floor: int | None = None) -> bytes:
    payload = bytes([kind]) + (b"" if floor is None else _FLOOR.pack(floor)) \
        + _COUNT.pack(len(runs)) + b"".join(_RUN.pack(a, n) for a, n in runs)
    return entry(payload)


class AckLog(EntryFile):
    MAGIC = MAGIC_ACKLOG
    WHAT = "ack log"
    LOST = "every message will be redelivered"

    def __init__(self, path: str | os.PathLike, *, fsync: str = "always",
                 fsync_interval_ms: int = 1000, compact_bytes: int = 1 << 20,
                 files: FileCache | None = None):
        """Open (creating if needed) the ack log at `path`; a torn tail is dropped.
        `files`: the descriptor cache (default: the process's)."""
        self.compact_bytes = compact_bytes
        self.floor = 0
        self._done = OffsetRuns()
        self._open_file(os.fspath(path), fsync, fsync_interval_ms, files)
        self._compacted_size = self._size

    # -- opening ---------------------------------------------------------------------------------
    def _apply(self, payload: bytes) -> bool:
        """Apply one verified entry; False if its structure is wrong (treated as corrupt)."""
        kind, p = payload[0] if payload else 0, 1
        if kind == KIND_SNAPSHOT and len(payload) >= 1 + 8:
            floor = _FLOOR.unpack_from(payload, 1)[0]
            p = 9
        elif kind != KIND_DONE:
            return False
        if len(payload) < p + 4:
            return False
        n = _COUNT.unpack_from(payload, p)[0]
        if len(payload) != p + 4 + n * _RUN.size:
            return False
        if kind == KIND_SNAPSHOT:
            self._raise_floor(floor)
        for a, count in _RUN.iter_unpack(payload[p + 4:]):
            if count:
                self._mark(a, a + count)
        return True

    # -- state -----------------------------------------------------------------------------------
    def _mark(self, first: int, end: int) -> None:
        """Mark [first, end) done and advance the floor over what became contiguous."""
        first = max(first, self.floor)
        if first >= end:
            return
        done = self._done
        done.add(first, end)
        if done.starts[0] == self.floor:
            self.floor = done.ends[0]
            del done.starts[0], done.ends[0]

    def _raise_floor(self, offset: int) -> None:
        if offset > self.floor:
            self.floor = offset
            self._done.drop_below(offset)
            done = self._done
            if done and done.starts[0] == offset:
                self.floor = done.ends[0]
                del done.starts[0], done.ends[0]

    def is_done(self, offset: int) -> bool:
        return offset < self.floor or offset in self._done

    def count_done(self, first: int, end: int) -> int:
        """How many offsets of [first, end) are done."""
        below = max(0, min(end, self.floor) - first)
        return below + self._done.count(max(first, self.floor), end)

    def all_done(self, first: int, end: int) -> bool:
        """True if every offset of [first, end) is done."""
        return self.count_done(first, end) == max(0, end - first)

    def not_done(self, first: int, end: int) -> Iterator[tuple[int, int]]:
        """The runs [a, b) of [first, end) that are not done, in order."""
        return self._done.gaps(max(first, self.floor), end)

    def last_done(self) -> int:
        """The highest done offset (floor - 1 when nothing above the floor is done)."""
        return self._done.ends[-1] - 1 if self._done else self.floor - 1

    def done_runs(self) -> list[tuple[int, int]]:
        """The done offsets >= floor as runs [first, end) (a copy)."""
        return self._done.runs()

    def done_above_floor(self) -> list[int]:
        """Done offsets >= floor, one by one (for tests and small sets: this expands runs)."""
        return list(self._done)

    # -- writing ---------------------------------------------------------------------------------
    def record(self, offsets: Iterable[int]) -> list[int]:
        """Mark `offsets` done: one appended entry, one write(), no fsync. Returns the offsets
        that were not done before, sorted."""
        with self._lock:
            self._check_open()
            new = self._not_done(offsets)
            if not new:
                return new
            if new[-1] - new[0] == len(new) - 1 and len(new) <= MAX_RUN:
                runs = [(new[0], len(new))]         # one run (distinct and sorted)
            else:
                runs = _runs(new)
            self._append(_entry(KIND_DONE, runs))
            for a, n in runs:
                self._mark(a, a + n)
            if self._size > max(self.compact_bytes, 2 * self._compacted_size):
                try:
                    self._compact_locked()
                except OSError as exc:  # the entry is written: report it, compact next time
                    log.warning("%s: compaction failed, retried on the next record: %s",
                                self.path, exc)
            return new

    def _not_done(self, offsets: Iterable[int]) -> list[int]:
        """``offsets`` that are at or above the floor and not done yet, sorted, distinct.
        Acks usually come after every settlement before them: when the lowest is above
        the floor and past the last done run, none is done and none needs looking up."""
        new = sorted(set(offsets))
        if not new:
            return new
        floor, done = self.floor, self._done
        if new[0] >= floor and (not done or new[0] >= done.ends[-1]):
            return new
        return [o for o in new if o >= floor and o not in done]

    def advance_floor(self, offset: int) -> None:
        """Mark every offset < `offset` done (e.g. after retention deleted them)."""
        with self._lock:
            self._check_open()
            if offset > self.floor:
                self._append(_entry(KIND_SNAPSHOT, [], floor=offset))
                self._raise_floor(offset)

    def forget_from(self, offset: int) -> None:
        """Un-done every offset >= `offset` (they are not in the log: its tail was lost).
        Rewrites the file atomically (compaction)."""
        with self._lock:
            self._check_open()
            if self.floor > offset:
                self.floor = offset
                self._done = OffsetRuns()
            self._done.drop_from(offset)
            self._compact_locked()

    def _compact_locked(self) -> None:
        runs = [piece for a, b in zip(self._done.starts, self._done.ends) for piece in _split(a, b)]
        data = file_header(MAGIC_ACKLOG) + _entry(KIND_SNAPSHOT, runs, floor=self.floor)
        self._rewrite(data)

    def _rewritten(self, size: int) -> None:
        self._compacted_size = size
