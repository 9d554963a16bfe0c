"""Sparse per-segment indexes: offset -> file position, and time -> offset.

Theory of operation
-------------------
Both indexes are sparse: the segment adds an entry at the start of a batch once at least
`index_interval_bytes` of log have been written since the previous entry (Kafka's rule), so a
read seeks to the nearest entry at or below its target and scans at most ~one interval of
batches. Only the entries live in memory (two `array`s, ~8-12 bytes per entry: a 1 GiB log at
the default 4 KiB interval costs ~3 MiB), never the log itself.

On disk, after the 8-byte file header (see fileformat.py):

    <base>.index       entries of 8 bytes:  relative offset u32, file position u32
    <base>.timeindex   entries of 12 bytes: timestamp u64, relative offset u32

Values strictly increase, and so do offset-index keys; time-index keys never decrease (the
sealing entry described below may repeat the previous timestamp). A time-index entry (T, rel)
means "every record before `rel` in this segment has timestamp <= T", i.e. T is the running
maximum timestamp of the records before the batch at `rel`. When a segment is rolled, a last entry (segment max
timestamp, record count) seals it, so a closed segment's last entry gives its max timestamp
without a scan, and recovery can tell a sealed time index from a truncated one.
To find the first record with timestamp >= ts, start at the last entry with T < ts: nothing
before it can qualify, even if producers' timestamps go backwards.

Files are made lazily: a new segment's index has no file until its first entry (most segments
of a small queue never get one), and a segment being sealed makes both (`ensure_file`). No
file reads as no entries.

Crash states: entries are written with write() right after their batch, and fsynced with the
log, so after a crash an index can lack entries, hold entries past a torn log tail, be empty or
missing, or (bit rot, an operator) be garbage. The index is never trusted over the log:
recovery rebuilds the active segment's indexes from a full scan, and for a closed segment
accepts an index only if it parses, is strictly increasing, stays inside the log file, and its
last entry points at a valid batch with the right offset; otherwise it rebuilds it. Rebuilt
files are written to `.tmp` and renamed over the old one.
"""
from __future__ import annotations

import os
import struct
from array import array
from bisect import bisect_left, bisect_right

from .filecache import CachedFile, FileCache
from .fileformat import (HEADER_SIZE, MAGIC_INDEX, MAGIC_TIMEINDEX, file_header, header_ok,
                         write_all, write_file_atomically)

APPEND_FLAGS = os.O_WRONLY | os.O_APPEND


class _SparseIndex:
    MAGIC: bytes
    ENTRY: struct.Struct
    KEY_TYPE: str
    VALUE_TYPE: str
    STRICT_KEYS = True

    def __init__(self, path: str, files: FileCache, durable: bool):
        self.path = path
        self.keys = array(self.KEY_TYPE)
        self.values = array(self.VALUE_TYPE)
        self.files = files
        self.durable = durable             # appends owe an fsync
        self._file: CachedFile | None = None   # the append handle while the segment is active
        self._unmade = False               # no file yet: the first append creates it

    def __len__(self) -> int:
        return len(self.keys)

    def load(self) -> bool:
        """Read the file into memory. False (and empty) if missing, garbled or not increasing."""
        self.keys, self.values = array(self.KEY_TYPE), array(self.VALUE_TYPE)
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return False
        body = len(data) - HEADER_SIZE
        if not header_ok(data, self.MAGIC) or body % self.ENTRY.size:
            return False
        keys, values = array(self.KEY_TYPE), array(self.VALUE_TYPE)
        prev_k = prev_v = -1
        for k, v in self.ENTRY.iter_unpack(memoryview(data)[HEADER_SIZE:]):
            if k < prev_k or (k == prev_k and self.STRICT_KEYS) or v <= prev_v:
                return False
            keys.append(k)
            values.append(v)
            prev_k, prev_v = k, v
        self.keys, self.values = keys, values
        return True

    def clear(self) -> None:
        self.keys, self.values = array(self.KEY_TYPE), array(self.VALUE_TYPE)

    def to_bytes(self) -> bytes:
        pack = self.ENTRY.pack
        return file_header(self.MAGIC) + b"".join(pack(k, v) for k, v in zip(self.keys, self.values))

    def matches_file(self) -> bool:
        """The file holds the entries in memory (no file matches no entries: it is made at
        the first append)."""
        try:
            with open(self.path, "rb") as f:
                return f.read() == self.to_bytes()
        except FileNotFoundError:
            return not self.keys

    def rewrite(self) -> None:
        """Replace the file with the in-memory entries (tmp + fsync + rename)."""
        self.close()
        write_file_atomically(self.path, self.to_bytes())
        self._unmade = False

    def create(self) -> None:
        """Start a new, empty index, appended to from now on; its file is made by the first
        append (most segments of a small queue never get an entry; a file per index at
        every queue.declare cost two file creations)."""
        self.close()
        self.clear()
        self._unmade = True

    def ensure_file(self) -> None:
        """Make the file now if the first append has not (a segment being sealed: recovery
        trusts a closed segment's indexes only if both files are there)."""
        if self._unmade:
            self._make()

    def _make(self) -> None:
        # no fsync and no directory fsync of its own: the log's next sync covers the data,
        # and recovery rebuilds an index whose file a crash took (it never trusts one over
        # the log)
        self._file = self.files.create(self.path, APPEND_FLAGS, self.durable,
                                       file_header(self.MAGIC))
        self._unmade = False

    def open_for_append(self) -> None:
        if self._file is None and not self._unmade:
            if not self.keys and not os.path.exists(self.path):
                self._unmade = True         # never appended to (recovery found no file)
                return
            self._file = self.files.handle(self.path, APPEND_FLAGS, self.durable)

    @property
    def file(self) -> CachedFile | None:
        """The append handle (None unless open for append)."""
        return self._file

    def append(self, key: int, value: int) -> None:
        self.keys.append(key)
        self.values.append(value)
        if self._unmade:
            self._make()
        f = self._file
        if f is not None:
            fd = f.fd()
            f.written()
            write_all(fd, self.ENTRY.pack(key, value))

    def close(self) -> None:
        """Stop appending: close the handle (fsynced first if an fsync is owed)."""
        self._unmade = False        # a later append (recovery) keeps entries in memory only
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self) -> None:
        """Stop appending without the owed fsync (the file is deleted, or a test crashes)."""
        self._unmade = False
        if self._file is not None:
            self._file.discard()
            self._file = None


class OffsetIndex(_SparseIndex):
    """relative offset -> position of the batch starting there."""
    MAGIC = MAGIC_INDEX
    ENTRY = struct.Struct(">II")
    KEY_TYPE = "I"
    VALUE_TYPE = "I"

    def floor(self, rel: int) -> tuple[int, int] | None:
        """The entry with the largest relative offset <= rel, or None."""
        i = bisect_right(self.keys, rel) - 1
        return (self.keys[i], self.values[i]) if i >= 0 else None


class TimeIndex(_SparseIndex):
    """running max timestamp before a batch -> relative offset of that batch."""
    MAGIC = MAGIC_TIMEINDEX
    ENTRY = struct.Struct(">QI")
    KEY_TYPE = "Q"
    VALUE_TYPE = "I"
    STRICT_KEYS = False  # the sealing entry may repeat the previous timestamp

    def start_for(self, ts: int) -> int:
        """A relative offset before which no record has timestamp >= ts (0 if unknown)."""
        i = bisect_left(self.keys, ts) - 1
        return self.values[i] if i >= 0 else 0

    @property
    def last_timestamp(self) -> int:
        return self.keys[-1] if self.keys else -1
