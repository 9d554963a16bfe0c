"""AckLog: which offsets of a partition are done (acked, expired, dead-lettered).

Theory of operation
-------------------
Classic queues delete on ack, but the partition log is append-only, so "deleted" is a durable
set of done offsets kept beside it. After a restart the broker redelivers every offset that is
not done; PartitionLog.delete_before(floor) drops segments that are done entirely.

In memory: `floor` (every offset < floor is done) and a SortedSet of done offsets >= floor.
Recording an offset equal to the floor advances the floor over the run of done offsets above it.

File format: the 8-byte header (magic b"AQAK", schema version; fileformat.py), then entries:

    length   u32   bytes of payload
    crc      u32   CRC32C of payload
    payload  kind u8, then
             kind 1 (DONE):     n u32, n x (first offset u64, run length u32)
             kind 2 (SNAPSHOT): floor u64, n u32, n x (first offset u64, run length u32)

record() appends one DONE entry with one write(); runs of consecutive offsets cost 12 bytes.
A SNAPSHOT raises the floor to its value and marks its runs done. compact() writes a new file
holding one SNAPSHOT of the current state to `<path>.tmp`, fsyncs it, renames it over the old
file and fsyncs the directory; record() calls it when the file passes `compact_bytes` and has
doubled since the last compaction.

Crash states: a torn or garbled tail (short entry, CRC mismatch, unknown kind) is cut on open
at the end of the last good entry, so acks recorded after the last sync() may be lost, and
those messages are redelivered (at-least-once). A crash during compaction leaves the old file
intact plus a `<path>.tmp`, which open deletes. A file whose header is unreadable (not a
crash state: damage) is replaced by an empty one and logged, which means redelivery of
everything, never loss.
"""
from __future__ import annotations

import logging
import os
import struct
import threading
from typing import Iterable

from crc32c import crc32c
from sortedcontainers import SortedSet

from .errors import LogClosedError
from .fileformat import (HEADER_SIZE, MAGIC_ACKLOG, FsyncPolicy, file_header,
                         header_ok, write_all, write_file_atomically)

log = logging.getLogger("amqpbroker.storage")

_ENTRY_HEAD = struct.Struct(">II")
_RUN = struct.Struct(">QI")
_COUNT = struct.Struct(">I")
_FLOOR = struct.Struct(">Q")
KIND_DONE = 1
KIND_SNAPSHOT = 2
MAX_RUN = (1 << 32) - 1


def _runs(offsets: Iterable[int]) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for o in offsets:  # sorted, distinct
        if runs and o == runs[-1][0] + runs[-1][1] and runs[-1][1] < MAX_RUN:
            runs[-1][1] += 1
        else:
            runs.append([o, 1])
    return [(a, n) for a, n in runs]


def _entry(kind: int, runs: list[tuple[int, int]], floor: int | None = None) -> bytes:
    payload = bytes([kind]) + (b"" if floor is None else _FLOOR.pack(floor)) \
        + _COUNT.pack(len(runs)) + b"".join(_RUN.pack(a, n) for a, n in runs)
    return _ENTRY_HEAD.pack(len(payload), crc32c(payload)) + payload


class AckLog:
    def __init__(self, path: str | os.PathLike, *, fsync: str = "always",
                 fsync_interval_ms: int = 1000, compact_bytes: int = 1 << 20):
        """Open (creating if needed) the ack log at `path`; a torn tail is dropped."""
        self.path = os.fspath(path)
        self._policy = FsyncPolicy(fsync, fsync_interval_ms)
        self.compact_bytes = compact_bytes
        self.floor = 0
        self._done: SortedSet = SortedSet()
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._retired_fds: list[int] = []  # replaced by compaction; closed by the next sync
        self.truncated_bytes = self._recover()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size
        self._compacted_size = self._size

    # -- opening ---------------------------------------------------------------------------------
    def _recover(self) -> int:
        """Load the file into memory, cutting a torn tail; returns the bytes cut."""
        if os.path.exists(self.path + ".tmp"):
            os.unlink(self.path + ".tmp")  # unfinished compaction; the old file is intact
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            write_file_atomically(self.path, file_header(MAGIC_ACKLOG))
            return 0
        if not header_ok(data, MAGIC_ACKLOG):
            write_file_atomically(self.path, file_header(MAGIC_ACKLOG))
            if len(data) > HEADER_SIZE or not file_header(MAGIC_ACKLOG).startswith(data):
                log.warning("%s: unreadable ack log header; starting empty (%d bytes dropped): "
                            "every message will be redelivered", self.path, len(data))
            return len(data)
        pos = HEADER_SIZE
        while pos + _ENTRY_HEAD.size <= len(data):
            length, crc = _ENTRY_HEAD.unpack_from(data, pos)
            payload = data[pos + 8:pos + 8 + length]
            if len(payload) != length or crc32c(payload) != crc or not self._apply(payload):
                break
            pos += 8 + length
        if pos < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(pos)
                os.fsync(f.fileno())
            log.warning("%s: cut %d byte(s) of torn ack log tail at position %d",
                        self.path, len(data) - pos, pos)
        return len(data) - pos

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
            self._mark(range(a, a + count))
        return True

    # -- state -----------------------------------------------------------------------------------
    def _mark(self, offsets: Iterable[int]) -> None:
        floor = self.floor
        self._done.update(o for o in offsets if o >= floor)
        done = self._done
        while done and done[0] == floor:
            done.pop(0)
            floor += 1
        self.floor = floor

    def _raise_floor(self, offset: int) -> None:
        if offset > self.floor:
            self.floor = offset
            del self._done[:self._done.bisect_left(offset)]
            self._mark(())

    def is_done(self, offset: int) -> bool:
        return offset < self.floor or offset in self._done

    def done_above_floor(self) -> SortedSet:
        """Done offsets >= floor (a copy)."""
        return SortedSet(self._done)

    # -- writing ---------------------------------------------------------------------------------
    def record(self, offsets: Iterable[int]) -> None:
        """Mark `offsets` done: one appended entry, one write(), no fsync."""
        with self._lock:
            self._check_open()
            new = sorted({o for o in offsets if o >= self.floor and o not in self._done})
            if not new:
                return
            self._append(_entry(KIND_DONE, _runs(new)))
            self._mark(new)
            if self._size > max(self.compact_bytes, 2 * self._compacted_size):
                self._compact_locked()

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
            del self._done[self._done.bisect_left(offset):]
            self._compact_locked()

    def _append(self, entry: bytes) -> None:
        try:
            write_all(self._fd, entry)
        except OSError:
            # never leave half an entry (ENOSPC) in front of later good ones: recovery would
            # cut the file there and lose every ack recorded after it
            os.ftruncate(self._fd, self._size)
            raise
        self._size += len(entry)

    def compact(self) -> None:
        """Rewrite the file as one snapshot (tmp file + fsync + rename + directory fsync)."""
        with self._lock:
            self._check_open()
            self._compact_locked()

    def _compact_locked(self) -> None:
        data = file_header(MAGIC_ACKLOG) + _entry(KIND_SNAPSHOT, _runs(self._done), floor=self.floor)
        write_file_atomically(self.path, data)
        self._retired_fds.append(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = self._compacted_size = len(data)

    def sync(self, force: bool = False) -> None:
        """Fsync per policy ("always": every call; "interval": when due or forced)."""
        with self._sync_lock:
            with self._lock:
                if self._fd is None or not self._policy.due(force):
                    return
                fd = self._fd
            os.fsync(fd)
            with self._lock:
                self._policy.done()
                retired, self._retired_fds = self._retired_fds, []
                for old in retired:
                    os.close(old)

    # -- lifecycle -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._fd is None:
            raise LogClosedError(f"ack log {self.path} is closed")

    def close(self) -> None:
        """Sync per policy, then close the file."""
        with self._sync_lock:
            if self._fd is None:
                return
        self.sync(force=True)
        self._release()

    def _release(self) -> None:
        with self._sync_lock, self._lock:
            for fd in self._retired_fds + ([self._fd] if self._fd is not None else []):
                os.close(fd)
            self._retired_fds, self._fd = [], None

    def _simulate_crash(self) -> None:
        """Tests only: drop the descriptor as kill -9 would (written bytes stay)."""
        self._release()

    def __enter__(self) -> "AckLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
