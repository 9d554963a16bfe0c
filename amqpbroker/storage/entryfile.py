"""An entry file: the durable, compacted state files beside a partition's log — the ack
log of a classic queue (``acklog.py``) and the group offsets of a stream
(``groups/offset_store.py``).

Theory of operation
-------------------
The file is a header (``fileformat.file_header``) and then entries, each ``u32 length,
u32 crc32c(payload), payload`` (``fileformat.entry``), only ever appended. What the entries
mean is the subclass's: it says how to apply one (``_apply``, used at open) and what a
compacted file holds (it builds the bytes and calls ``_rewrite``).

* Open: a leftover ``.tmp`` (a compaction that did not reach its rename) is deleted — the old
  file is intact; every entry is read and applied in order and the file is cut after the last
  good one (``fileformat.load_entry_file``); then the descriptor is fsynced once, since a
  killed process may have left written bytes only in the page cache. A file that does not
  exist is not made at open but by the first append (``_make``; a queue declared and never
  written to costs no file), as its header alone, with no fsync (an empty file owes nothing:
  a crash that takes it back leaves what the next open reads as empty, which it was); the
  first ``sync`` that finds it written fsyncs it and then its directory (and the directory's
  parent if it made the directory; unless an fsync of them since did: ``dirsync.py``), so its
  name is durable by the time its first entry is counted durable.
* Append (``_append``): one write per round of entries; a failed write (ENOSPC) truncates the
  file back, so half an entry never stands in front of later good ones (recovery would cut
  there and lose them).
* Sync (``sync``): fdatasync (appends change nothing else that reading needs), per the fsync
  policy (``always`` each call, ``interval`` when due, ``never``);
  ``written`` counts appends since open, ``durable`` those known on disk. Called from the
  committer's thread: the descriptor is taken under the lock and fsynced outside it.
* Compaction (``_rewrite``): the new contents go to ``.tmp``, are fsynced and renamed over the
  file, and the directory is fsynced (``fileformat.write_file_atomically``); rename is atomic,
  so a crash leaves the old file or the new one, never a mix. After the rename the handle is
  reset (appends go to the new file) and everything written is durable.

The descriptor comes from the process's file cache (``filecache.py``), so an idle file
holds none.
"""
from __future__ import annotations

import os
import threading

from . import dirsync
from .errors import LogClosedError
from .filecache import FileCache, process_cache
from .fileformat import (HEADER_SIZE, FsyncPolicy, file_header, load_entry_file, write_all,
                         write_file_atomically)

# appends only: fdatasync covers the data and the size that reaches it, and skips the
# timestamps, whose journal commit costs an fsync ~3x as long on ext4 under load
_fsync = getattr(os, "fdatasync", os.fsync)


class EntryFile:
    MAGIC = b""             # the file's magic (fileformat.py)
    WHAT = ""               # what the file is, for logs and errors ("ack log")
    LOST = ""               # what an unreadable header costs, for the log line

    def _open_file(self, path: str, fsync: str, fsync_interval_ms: int,
                   files: FileCache | None) -> None:
        """Open (creating if needed) and recover the file; the subclass's state that
        ``_apply`` fills must exist before this is called."""
        self.path = path
        self._policy = FsyncPolicy(fsync, fsync_interval_ms)
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._closed = False
        if os.path.exists(path + ".tmp"):
            os.unlink(path + ".tmp")    # unfinished compaction; the old file is intact
        # a missing file is made by the first append (``_make``), not here: a queue that is
        # declared and never settles anything costs no file
        self._dir = os.path.dirname(os.path.abspath(path))
        self._names_owed: list[tuple[str, int]] = []    # (directory, dirsync ticket)
        self._unmade = not os.path.exists(path)
        self.truncated_bytes = 0 if self._unmade else load_entry_file(
            path, self.MAGIC, self._apply, self.WHAT, self.LOST)
        self._file = (files or process_cache()).handle(
            path, os.O_WRONLY | os.O_APPEND, durable=self._policy.mode != "never")
        try:
            if self._policy.mode != "never" and not self._unmade:
                self._file.fsync()      # what a killed process left in the page cache
            self._size = HEADER_SIZE if self._unmade else os.stat(path).st_size
        except BaseException:
            self._file.discard()
            raise
        self.written = 0                # entries appended since open
        self.durable = 0                # ... of which known to be on disk
        self.compactions = 0

    def _apply(self, payload: bytes) -> bool:
        """Apply one verified entry at open; False if its structure is wrong (corrupt)."""
        raise NotImplementedError

    # -- writing ---------------------------------------------------------------------------
    def _make(self) -> None:
        """Create the file as its header alone, without an fsync: a crash can leave it short
        or missing, which the next open reads as empty, as it was; the first sync makes it
        durable, and its name in the directory (``_names_owed``; and the directory's in its
        parent if a crash took the directory and it is made again here)."""
        header = file_header(self.MAGIC)
        made_dir = False
        try:
            _create_new(self.path, header)
        except FileNotFoundError:
            os.makedirs(self._dir, exist_ok=True)
            made_dir = True
            _create_new(self.path, header)
        self._unmade = False
        self._size = len(header)
        if self._policy.mode != "never":
            self._names_owed = [(self._dir, dirsync.name_made(self._dir))]
            if made_dir:
                parent = os.path.dirname(self._dir)
                self._names_owed.append((parent, dirsync.name_made(parent)))

    def _append(self, data: bytes) -> None:
        if self._unmade:
            self._make()
        f = self._file
        fd = f.fd()
        f.written()
        try:
            write_all(fd, data)
        except OSError:
            os.ftruncate(fd, self._size)    # never leave half an entry before later good ones
            raise
        self._size += len(data)
        self.written += 1
        if self._policy.mode == "never":
            self.durable = self.written

    def compact(self) -> None:
        """Rewrite the file as the live state only (``_compact_locked``: the subclass's
        bytes through ``_rewrite``)."""
        with self._lock:
            self._check_open()
            self._compact_locked()

    def _compact_locked(self) -> None:
        raise NotImplementedError

    def _rewrite(self, data: bytes) -> None:
        """Compaction: ``data`` (header and entries) replaces the file (lock held)."""
        if self._unmade:
            self._make()
        old = os.stat(self.path)
        try:
            write_file_atomically(self.path, data)
        finally:
            if not os.path.samestat(old, os.stat(self.path)):
                # renamed into place (even if the directory fsync then failed): append
                # there, not to the replaced file
                self._file.reset()
                self._size = len(data)
                self._rewritten(len(data))
        self.durable = self.written     # the new file holds all of it, fsynced
        names, self._names_owed = self._names_owed, []   # ... renamed into place, its
        for directory, ticket in names:                   # directory fsynced (and the
            dirsync.make_durable(directory, ticket)       # directory's name, if new)
        self.compactions += 1

    def _rewritten(self, size: int) -> None:
        """Hook: the file was replaced by ``size`` bytes of compacted entries."""

    def sync(self, force: bool = False) -> None:
        """fsync per policy ("always": every call; "interval": when due or forced)."""
        with self._sync_lock:
            with self._lock:
                if self._closed or not self._policy.due(force):
                    return
                fd, written = self._file.take_for_sync(), self.written
                # with its first data (fsynced here, or when the cache closed the file)
                names = self._names_owed if fd is not None or written > 0 else []
                if names:
                    self._names_owed = []
            if fd is not None:          # None: nothing owed (or fsynced when it was closed)
                try:
                    _fsync(fd)
                except BaseException:
                    self._file.synced(ok=False)
                    self._names_owed = self._names_owed or names
                    raise
                self._file.synced()
            for i, (directory, ticket) in enumerate(names):     # shared with the names
                try:                                            # made beside it (dirsync.py)
                    dirsync.make_durable(directory, ticket)
                except BaseException:
                    self._names_owed = self._names_owed or names[i:]
                    raise
            with self._lock:
                self._policy.done()
                self.durable = max(self.durable, written)

    # -- lifecycle -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"{self.WHAT} {self.path} is closed")

    def _before_close(self) -> None:
        """Hook: write what is buffered before the last sync."""

    def close(self) -> None:
        """Write what is buffered, sync per policy, close the file."""
        with self._sync_lock:
            if self._closed:
                return
        self._before_close()
        self.sync(force=True)
        self._release(fsync=True)

    def _release(self, fsync: bool) -> None:
        with self._sync_lock, self._lock:
            self._closed = True
            if fsync:
                self._file.close()
            else:
                self._file.discard()

    def discard(self) -> None:
        """Close without writing or fsyncing anything: the file is being deleted."""
        self._release(fsync=False)

    def _simulate_crash(self) -> None:
        """Tests only: drop the descriptor as kill -9 would (written bytes stay, buffered
        entries are lost)."""
        self._release(fsync=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _create_new(path: str, header: bytes) -> bool:
    """Create ``path`` holding ``header`` if it does not exist (no fsync); True if it did
    not."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        write_all(fd, header)
    except BaseException:       # ENOSPC: no file without its header (a retry makes it again)
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return True
