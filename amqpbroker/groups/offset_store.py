"""OffsetStore: the committed offsets of every consumer group on one partition, on disk.

Theory of operation
-------------------
Kafka keeps group offsets in a compacted topic (`__consumer_offsets`): an append-only log of
(group, offset) records where only the last record per group matters, rewritten from time to
time to drop the superseded ones. Here the worker that owns a partition owns its groups'
offsets too, so each partition directory holds one such log, `group-offsets.log`, beside its
segments (recovery.py leaves names that are not segment names alone).

File format (big-endian, as every storage file): the 8-byte header of storage/fileformat.py
with magic b"AQGO" and schema version 1, then entries:

    length   u32   bytes of payload
    crc      u32   CRC32C of payload
    payload  kind u8 (1 COMMIT, 2 DELETE), offset u64 (0 for DELETE), group name (UTF-8, rest)

Reading keeps the last entry per group (a DELETE removes the group). Writing follows the
worker's commit round (worker/committer.py), like the MessageStore: `commit(group, offset)`
only buffers (the last offset per group wins, so a burst of acks costs one entry per group),
`flush()` appends every buffered entry with one write() on the event loop, and `sync()` fsyncs
per the fsync policy in the committer's thread. `written` counts entries appended since open
and `durable` how many of them are known to be on disk.

Compaction: when the file exceeds `compact_ratio` times its live size (one COMMIT per live
group, plus the header) and at least `compact_bytes`, flush() rewrites it as exactly the live
entries: `<path>.tmp`, fsync, rename over the file, fsync the directory
(fileformat.write_file_atomically). rename(2) replaces the file atomically, so there is no
half-done rename to finish: a crash leaves either the old file (plus a `.tmp` of any length,
deleted at open; the old file holds the same state) or the new one. These are the only
states the writer can leave, and the only ones recovery handles.

Crash states: a torn or garbled tail (short entry, CRC mismatch, unknown kind, bad name) is
cut at open at the end of the last good entry, so commits flushed after the last sync() may be
lost: those groups resume at an older commit and see redeliveries (at-least-once), never a
commit past what was acked. A file whose header is unreadable (not a crash state: damage) is
replaced by an empty one and logged as an error: every group then resumes at its start offset.
"""
from __future__ import annotations

import logging
import os
import struct

from ..storage.entryfile import EntryFile
from ..storage.filecache import FileCache
from ..storage.fileformat import ENTRY_HEAD, HEADER_SIZE, entry, file_header

log = logging.getLogger("amqpbroker.groups")

FILE_NAME = "group-offsets.log"
MAGIC_GROUP_OFFSETS = b"AQGO"

_BODY = struct.Struct(">BQ")
KIND_COMMIT = 1
KIND_DELETE = 2
MAX_GROUP_BYTES = 255           # an AMQP short string: what x-consumer-group can carry


def _entry(group: str, offset: int | None) -> bytes:
    payload = (_BODY.pack(KIND_DELETE, 0) if offset is None
               else _BODY.pack(KIND_COMMIT, offset)) + group.encode()
    return entry(payload)


def _entry_size(group: str) -> int:
    return ENTRY_HEAD.size + _BODY.size + len(group.encode())


class OffsetStore(EntryFile):
    MAGIC = MAGIC_GROUP_OFFSETS
    WHAT = "group offsets"
    LOST = "every group resumes at its start offset"

    def __init__(self, directory: str | os.PathLike, *, fsync: str = "always",
                 fsync_interval_ms: int = 1000, compact_ratio: int = 4,
                 compact_bytes: int = 64 << 10, files: FileCache | None = None):
        """Open (creating if needed) the group offsets of the partition in `directory`;
        a torn tail is cut, a leftover compaction `.tmp` deleted."""
        self.compact_ratio = compact_ratio
        self.compact_bytes = compact_bytes
        self._offsets: dict[str, int] = {}
        self._pending: dict[str, int | None] = {}   # None: delete
        self._open_file(os.path.join(os.fspath(directory), FILE_NAME), fsync,
                        fsync_interval_ms, files)
        self._live = HEADER_SIZE + sum(map(_entry_size, self._offsets))

    # -- opening ---------------------------------------------------------------------------------
    def _apply(self, payload: bytes) -> bool:
        """Apply one verified entry; False if its structure is wrong (treated as corrupt)."""
        if len(payload) < _BODY.size:
            return False
        kind, offset = _BODY.unpack_from(payload)
        try:
            group = payload[_BODY.size:].decode()
        except UnicodeDecodeError:
            return False
        if kind == KIND_COMMIT:
            self._offsets[group] = offset
        elif kind == KIND_DELETE:
            self._offsets.pop(group, None)
        else:
            return False
        return True

    # -- reading ---------------------------------------------------------------------------------
    def get(self, group: str) -> int | None:
        """The group's committed offset (buffered or written), None if it has none."""
        with self._lock:
            if group in self._pending:
                return self._pending[group]
            return self._offsets.get(group)

    def groups(self) -> dict[str, int]:
        """{group: committed offset} of every group with a commit (buffered ones included)."""
        with self._lock:
            merged = dict(self._offsets)
            for group, offset in self._pending.items():
                if offset is None:
                    merged.pop(group, None)
                else:
                    merged[group] = offset
            return merged

    def in_file(self) -> dict[str, int]:
        """{group: committed offset} as written to the file: what a kill -9 of this process
        cannot take back (the page cache keeps a write), and what the management API reports
        as a group's committed offset, as Kafka reports a commit only once it is in the log.
        (Not ``written``: that counts entries appended since open.)"""
        with self._lock:
            return dict(self._offsets)

    # -- writing ---------------------------------------------------------------------------------
    def commit(self, group: str, offset: int) -> None:
        """Buffer `group`'s committed offset (the next offset to read) for the next flush()."""
        if len(group.encode()) > MAX_GROUP_BYTES:
            raise ValueError(f"consumer group name longer than {MAX_GROUP_BYTES} bytes")
        if offset < 0:
            raise ValueError(f"negative offset {offset} for group {group!r}")
        with self._lock:
            self._check_open()
            self._pending[group] = offset

    def delete(self, group: str) -> None:
        """Buffer the removal of `group`'s commit (the group was deleted)."""
        with self._lock:
            self._check_open()
            self._pending[group] = None

    def reset(self, group: str, to: int) -> None:
        """Set `group`'s offset to `to` (earlier or later: an offset reset, which the caller
        resolved from earliest/latest/a time/an offset and allows only while the group has no
        members), written and fsynced before returning."""
        self.commit(group, to)
        self.flush()
        self.sync(force=True)

    def flush(self) -> None:
        """Write the buffered commits with one write() (event-loop thread, no fsync); compact
        if the file has grown past `compact_ratio` times its live size."""
        with self._lock:
            self._check_open()
            if not self._pending:
                return
            changes = [(g, o) for g, o in self._pending.items() if self._offsets.get(g) != o]
            if changes:
                self._append(b"".join(_entry(g, o) for g, o in changes))
            # taken only once written: a failed write (ENOSPC) leaves them for the retry
            self._pending.clear()
            for g, o in changes:
                if o is None:
                    self._offsets.pop(g, None)
                    self._live -= _entry_size(g)
                else:
                    if g not in self._offsets:
                        self._live += _entry_size(g)
                    self._offsets[g] = o
            if self._size > max(self.compact_bytes, self.compact_ratio * self._live):
                try:
                    self._compact_locked()
                except OSError as exc:  # the entries are written: report, compact next time
                    log.warning("%s: compaction failed, retried on the next flush: %s",
                                self.path, exc)

    def _compact_locked(self) -> None:
        data = file_header(MAGIC_GROUP_OFFSETS) + b"".join(
            _entry(g, o) for g, o in sorted(self._offsets.items()))
        self._rewrite(data)

    def _rewritten(self, size: int) -> None:
        self._live = size

    def sync_owed(self) -> bool:
        """Buffered commits, or written ones not yet known durable."""
        return bool(self._pending) or self.durable < self.written

    # -- lifecycle -------------------------------------------------------------------------------
    def _before_close(self) -> None:
        self.flush()
