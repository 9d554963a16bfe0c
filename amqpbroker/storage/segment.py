"""A segment: one `<base>.log` of record batches plus its `.index` and `.timeindex`.

Theory of operation
-------------------
A partition is a directory of segments named by the 20-digit base offset of their first
record (`00000000000000000000.log`). Only the last segment is active (appended to); the others
are closed and never change again except by being deleted whole. `<base>.log` is the 8-byte
file header (magic b"AQLG", schema version) followed by record batches back to back (format
in record.py; `version` is the file's: a version 1 segment's batch headers have no leader
epoch, and only version 2 segments are written). The segment keeps in memory only its counters and its sparse index entries.

Writes: one batch = one os.writev() of its parts on an O_APPEND descriptor; the index entries
it earns are written right after. Nothing here fsyncs on append; PartitionLog.sync() fsyncs
what `take_unsynced` hands it: the log only while the segment is active (recovery rebuilds
the last segment's indexes from its log whatever they hold), all three files at the first
sync after it rolled (a closed segment's indexes are trusted at open after checks).

Reads: os.pread() of just the bytes needed, starting at the offset index's floor entry and
walking batch headers forward in chunks (`iter_batches`).

Descriptors: every file is a `CachedFile` (filecache.py) of the process's cache, opened when
used and closed when the cache needs the room: the writer (`O_RDWR | O_APPEND`) while the
segment is active or its writes await an fsync, then a read-only handle; each index has an
append handle while the segment is active. Nothing depends on a file position, so a closed
handle reopens where it was.

Crash states of `<base>.log` (what a kill -9 or power cut can leave):
  * a torn last batch (length/CRC do not match) or trailing zeros/garbage -> recovery cuts the
    file at the end of the last valid batch (ftruncate + fsync);
  * a file shorter than its header (crash while creating during a roll, or after a new
    partition's first segment was made, which is not fsynced until records are) -> header
    rewritten; a new partition's files missing altogether (they are made lazily, by the first
    append: `create_lazily`) -> a first segment with no files again;
  * a corrupt batch in a closed segment (bit rot) -> recovery cuts there and deletes every
    later segment, because offsets must stay contiguous;
  * `.deleted` suffix (crash during retention) -> the deletion is finished;
  * `.swap` suffix (a completed replacement whose final rename did not happen) -> renamed into
    place and its indexes rebuilt; `.cleaned` / `.tmp` (unfinished rewrite) -> deleted.
Index crash states are listed in index.py.
"""
from __future__ import annotations

import os
from typing import Iterator

from .filecache import CachedFile, FileCache
from .fileformat import HEADER_SIZE, MAGIC_LOG, file_header, write_all, writev_all
from .index import OffsetIndex, TimeIndex
from .record import LAYOUTS, LOG_VERSION, BatchHeader, decode_header, header_plausible

READ_CHUNK = 64 * 1024
MAX_REL_OFFSET = (1 << 32) - 1
WRITE_FLAGS = os.O_RDWR | os.O_APPEND


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


class Segment:
    def __init__(self, directory: str, base_offset: int, index_interval_bytes: int,
                 files: FileCache, durable: bool):
        """`files`: the cache its descriptors live in; `durable`: its writes owe fsyncs
        (the log's policy is not "never")."""
        self.directory = directory
        self.base_offset = base_offset
        stem = os.path.join(directory, segment_name(base_offset))
        self.log_path = stem + ".log"
        self.files = files
        self.durable = durable
        self.offset_index = OffsetIndex(stem + ".index", files, durable)
        self.time_index = TimeIndex(stem + ".timeindex", files, durable)
        self.index_interval_bytes = index_interval_bytes
        self.size = HEADER_SIZE            # bytes of .log, header included
        self.cache_dropped = 0             # .log bytes below this left the page cache (log.py)
        self.next_offset = base_offset     # offset the next appended record gets
        self.first_timestamp = -1          # first record's timestamp (age-based roll); -1 empty
        self.max_timestamp = -1            # largest record timestamp; -1 when empty
        self._bytes_since_entry = 0
        self._writer: CachedFile | None = None
        self._reader: CachedFile | None = None
        self.unmade = False                # lazy: no file yet, the first append makes them
        self.version = LOG_VERSION         # the file's schema version (recovery reads it)

    # -- creation and state --------------------------------------------------------------------
    @classmethod
    def create(cls, directory: str, base_offset: int, index_interval_bytes: int,
               files: FileCache, durable: bool) -> "Segment":
        """A new, empty `.log` (truncating any); the write owes an fsync to the next sync.
        The indexes' files come with their first entries (index.py)."""
        seg = cls(directory, base_offset, index_interval_bytes, files, durable)
        seg._writer = files.create(seg.log_path, WRITE_FLAGS, durable,
                                   file_header(MAGIC_LOG, LOG_VERSION))
        seg.offset_index.create()
        seg.time_index.create()
        return seg

    @classmethod
    def create_lazily(cls, directory: str, base_offset: int, index_interval_bytes: int,
                      files: FileCache, durable: bool) -> "Segment":
        """A partition's first segment, with no file at all until ``make`` (its owner calls
        it before the first append): a declared queue that is never written to costs no
        file. Nothing is lost by a crash before that, and what a crash leaves of the files
        once made (short or missing, as they are not fsynced until records are) recovery
        makes into this state again."""
        seg = cls(directory, base_offset, index_interval_bytes, files, durable)
        seg.offset_index.create()
        seg.time_index.create()
        seg.unmade = True
        return seg

    def make(self) -> None:
        """Create the `.log` of a lazily created segment (its header alone, owing no fsync of
        its own: the first batch's fsync makes it durable with the batch)."""
        self._writer = self.files.create(self.log_path, WRITE_FLAGS, self.durable,
                                         file_header(MAGIC_LOG, LOG_VERSION))
        self._writer.dirty = False      # no other thread knows this handle yet
        self.unmade = False

    @property
    def record_count(self) -> int:
        return self.next_offset - self.base_offset

    @property
    def is_empty(self) -> bool:
        return self.next_offset == self.base_offset

    @property
    def head_size(self) -> int:
        """Bytes of a batch header in this segment's layout."""
        return LAYOUTS[self.version].size

    def note_batch(self, pos: int, h: BatchHeader) -> None:
        """Account for a batch at `pos` (appended or found by recovery); adds index entries."""
        rel = h.base_offset - self.base_offset
        if self._bytes_since_entry >= self.index_interval_bytes:
            self.offset_index.append(rel, pos)
            if self.max_timestamp > self.time_index.last_timestamp:
                self.time_index.append(self.max_timestamp, rel)
            self._bytes_since_entry = 0
        self._bytes_since_entry += h.size
        if self.first_timestamp < 0:
            self.first_timestamp = h.first_ts
        if h.max_ts > self.max_timestamp:
            self.max_timestamp = h.max_ts
        self.next_offset = h.next_offset
        self.size = pos + h.size

    def owe_index_sync(self) -> None:
        """The segment has rolled: its indexes are trusted at open from now on, so the next
        sync fsyncs them whole (reopened if the cache closed them)."""
        for index in (self.offset_index, self.time_index):
            f = index.file
            if f is not None:
                f.fd()
                f.written()

    def seal_time_index(self) -> None:
        """Last time entry (segment max timestamp, record count); done when the segment closes.
        Both index files exist from then on (recovery trusts a closed segment's indexes only
        if they are there)."""
        if not self.is_empty:
            self.time_index.append(self.max_timestamp, self.record_count)
            self.offset_index.ensure_file()

    def fits(self, rel_count: int) -> bool:
        return self.record_count + rel_count <= MAX_REL_OFFSET

    # -- writing -------------------------------------------------------------------------------
    def open_for_append(self) -> None:
        """Make the segment writable (its handles open on first use)."""
        if self._writer is None and not self.unmade:
            self._writer = self.files.handle(self.log_path, WRITE_FLAGS, self.durable)
        self.offset_index.open_for_append()
        self.time_index.open_for_append()

    def append(self, batch, h: BatchHeader) -> None:
        """Write one encoded batch, bytes or a list of parts (`encode_batch_parts`), with one
        write() / writev() call (no fsync)."""
        writer = self._writer
        assert writer is not None, "segment is not open for append"
        fd = writer.pin()       # held across the index writes, which may open their files
        try:
            writer.written()
            if type(batch) is list:
                writev_all(fd, batch, h.size)
            else:
                write_all(fd, batch)
            # inside the try: if an index write fails (ENOSPC) the batch must go too, or the
            # retry would append it a second time behind a copy the segment does not know of
            self.note_batch(self.size, h)
        except OSError:
            os.ftruncate(fd, self.size)  # never leave a half batch behind a live log
            raise
        finally:
            writer.unpin()

    def take_unsynced(self, indexes: bool = True) -> list[tuple[CachedFile, int]]:
        """(handle, descriptor) of each file the next fsync must cover — the log and, if
        ``indexes``, the indexes written since they were last fsynced — pinned and marked
        clean. The caller fsyncs each descriptor, then calls the handle's `synced`. Without
        ``indexes`` (the active segment) the indexes owe nothing afterwards either, so an
        idle queue's handles close without an fsync; `owe_index_sync` at the roll makes
        the next sync cover them."""
        taken = []
        files = (self._writer, self.offset_index.file, self.time_index.file)
        if not indexes:
            for f in files[1:]:
                if f is not None:
                    f.forgo_sync()
            files = files[:1]
        for f in files:
            if f is not None:
                fd = f.take_for_sync()
                if fd is not None:
                    taken.append((f, fd))
        return taken

    def write_files(self) -> list[CachedFile]:
        """The handles of a writable segment (log first, then indexes); [] once closed."""
        files = [self._writer, self.offset_index.file, self.time_index.file]
        return [f for f in files if f is not None]

    def close_writer(self) -> None:
        """The segment is written for good: close its write handles (fsynced first if
        owed); reads go through a read-only handle from now on."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.offset_index.close()
        self.time_index.close()

    # -- reading -------------------------------------------------------------------------------
    def log_file(self) -> CachedFile:
        """The handle reads go through: the writer while there is one, else a read-only one."""
        if self._writer is not None:
            return self._writer
        if self._reader is None:
            self._reader = self.files.handle(self.log_path, os.O_RDONLY)
        return self._reader

    def close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def position_for(self, offset: int) -> tuple[int, int]:
        """(position, offset of the batch there) to start scanning for `offset`."""
        entry = self.offset_index.floor(offset - self.base_offset)
        if entry is None:
            return HEADER_SIZE, self.base_offset
        return entry[1], self.base_offset + entry[0]

    def iter_batches(self, pos: int, end: int | None = None, fd: int | None = None
                     ) -> Iterator[tuple[int, BatchHeader, memoryview]]:
        """Yield (position, header, whole batch bytes) for consecutive batches from `pos`.

        Stops silently at `end` (default: the segment size) or at the first batch whose header
        is implausible or that runs past `end`; callers compare the last position reached with
        `end` to tell a clean end from a bad one. CRCs are the caller's business.
        """
        head, version = self.head_size, self.version
        if fd is None:
            if pos + head > (self.size if end is None else end):
                return          # nothing to read (and maybe no file yet: create_lazily)
            f = self.log_file()
            fd = f.pin()        # the caller may open other files between two batches
            try:
                yield from self.iter_batches(pos, end, fd)
            finally:
                f.unpin()
            return
        end = self.size if end is None else end
        if pos + head > end:
            return
        buf = b""
        buf_pos = pos  # file position of buf[0]
        while pos + head <= end:
            rel = pos - buf_pos
            if rel + head > len(buf):
                buf = os.pread(fd, min(READ_CHUNK, end - pos), pos)
                buf_pos, rel = pos, 0
                if len(buf) < head:
                    return
            h = decode_header(buf, rel, version)
            if not header_plausible(h, version) or pos + h.size > end:
                return
            if rel + h.size > len(buf):
                buf = os.pread(fd, max(READ_CHUNK, h.size), pos)
                buf_pos, rel = pos, 0
                if len(buf) < h.size:
                    return
            yield pos, h, memoryview(buf)[rel:rel + h.size]
            pos += h.size

    # -- teardown ------------------------------------------------------------------------------
    def close(self) -> None:
        self.close_writer()
        self.close_reader()

    def discard(self) -> None:
        """Drop every descriptor without the fsyncs owed (the files are being deleted, or a
        test simulates a crash)."""
        for f in (self._writer, self._reader):
            if f is not None:
                f.discard()
        self._writer = None
        self.offset_index.discard()
        self.time_index.discard()

    def paths(self) -> list[str]:
        return [self.log_path, self.offset_index.path, self.time_index.path]

    def delete_files(self) -> None:
        """Rename every file to `.deleted`, then unlink: a crash in between leaves only
        `.deleted` files (recovery finishes the job) or a whole segment, never half of one
        that looks alive. The log is renamed last so it outlives its indexes."""
        renamed = []
        for path in reversed(self.paths()):
            try:
                os.replace(path, path + ".deleted")
                renamed.append(path + ".deleted")
            except FileNotFoundError:
                pass
        for path in renamed:
            os.unlink(path)
