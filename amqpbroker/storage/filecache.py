"""FileCache: a bound on the storage files a process keeps open (RabbitMQ's file handle cache).

Theory of operation
-------------------
Every file a queue keeps using — each segment's `.log` (written while active, read while
closed), `.index` and `.timeindex`, and the ack log — is a `CachedFile`: a path, the flags to
open it with, and a descriptor only while it is open. The process holds at most `limit` of
those descriptors: opening one more first closes the least recently used handle (RabbitMQ's
"soft close"). The handle keeps everything but the descriptor, and its next use reopens the
file. Nothing needs a file position: reads are `pread`, writes are appends on `O_APPEND`
descriptors, so a reopened descriptor is as good as the old one and what is on disk does not
change. An idle queue therefore costs descriptors only while the cache has room for them.

Durability. A handle written since its last fsync, when its owner's fsync policy is not
"never" (`durable`), is *dirty*: an fsync is owed on it. Closing a dirty handle, to make room
or by its owner, fsyncs it first; if that fsync fails the handle stays open and dirty and the
error goes to the caller. A closed handle therefore never owes an fsync. The owner's sync()
(the committer's fsync thread) calls `take_for_sync()`, which returns the descriptor of an
open, dirty handle pinned and marked clean (a write from now on dirties it again), or None
when no fsync is owed; `synced()` unpins it, dirty again if the fsync failed.

Pins. A pinned handle is never closed to make room: the fsync thread pins what it fsyncs (so
a descriptor number is never closed, and perhaps reused for another file, under an fsync), and
code that holds a descriptor across another open pins it (a segment across its index writes, a
reader across the batches it walks). A handle its owner closes while pinned gives up its
descriptor at once, but the descriptor is closed only when the last pin goes. When every
handle is pinned the cache opens past its limit rather than fail (`over_limit` counts that).

Threads. Every change of state is made under the cache's lock, and the os.open / fsync /
close of making room happen under it too. Only the thread that opens files closes others to
make room — in the broker the event loop; the fsync thread only pins and unpins handles that
are open, so a descriptor the loop got from `fd()` stays valid until the loop itself opens
another file.

The limit: by default half of RLIMIT_NOFILE, at least 64; the other half is left to sockets,
rings, eventfds and short-lived opens (recovery, compaction, directory fsyncs). `configure()`
sets it (`--open-files-limit`). If an open still fails with EMFILE or ENFILE (other
descriptors took more than their half), the cache closes its least recently used handles
until the open succeeds or none is left to close.

Crash states: none of its own. The cache writes nothing; a crash drops its descriptors as it
would drop any other, and every write handed to the kernel stays.
"""
from __future__ import annotations

import errno
import logging
import os
import resource
import threading
import time
from collections import OrderedDict

from .fileformat import write_all

log = logging.getLogger("amqpbroker.storage")

MIN_LIMIT = 64


def default_limit() -> int:
    """Half of this process's soft RLIMIT_NOFILE, at least MIN_LIMIT."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(MIN_LIMIT, soft // 2)


class CachedFile:
    """One storage file: opened when used, closed when the cache needs the room."""

    __slots__ = ("cache", "path", "flags", "durable", "dirty", "pins", "_fd", "_retired")

    def __init__(self, cache: "FileCache", path: str, flags: int, durable: bool):
        self.cache = cache
        self.path = path
        self.flags = flags          # for every reopen: no O_CREAT, no O_TRUNC
        self.durable = durable      # writes owe an fsync
        self.dirty = False          # an fsync is owed (only ever True while open)
        self.pins = 0
        self._fd: int | None = None
        self._retired: list[int] = []   # given up while pinned: closed at the last unpin

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def fd(self) -> int:
        """An open descriptor, reopening the file if it was closed. Valid until this thread
        opens another cached file (which may close this one): `pin` to hold it longer."""
        cache = self.cache
        with cache._lock:
            fd = self._fd
            if fd is None:
                return cache._open_handle(self, self.flags)
            cache._lru.move_to_end(self)
            return fd

    def pin(self) -> int:
        """`fd()`, kept open until the matching `unpin()`."""
        cache = self.cache
        with cache._lock:
            fd = self._fd
            if fd is None:
                fd = cache._open_handle(self, self.flags)
            else:
                cache._lru.move_to_end(self)
            self.pins += 1
            return fd

    def unpin(self) -> None:
        with self.cache._lock:
            self._unpin_locked()

    def _unpin_locked(self) -> None:
        self.pins -= 1
        if not self.pins and self._retired:
            retired, self._retired = self._retired, []
            for fd in retired:
                os.close(fd)

    def written(self) -> None:
        """A write through this handle's descriptor is about to happen: if the owner's
        policy fsyncs, an fsync is owed. Before the write, because a write that fails half
        way has still changed the file; and under the owner's lock, the one its sync holds
        around `take_for_sync`, so that no fsync can take the flag between the two."""
        if self.durable:
            self.dirty = True

    def forgo_sync(self) -> None:
        """No fsync is owed for what was written so far after all (its owner rebuilds the
        file after a crash); a write from now on owes one again."""
        with self.cache._lock:
            self.dirty = False

    def take_for_sync(self) -> int | None:
        """The descriptor to fsync, pinned and marked clean; None if no fsync is owed (never
        written, already fsynced, or fsynced when it was closed). Call `synced` after."""
        with self.cache._lock:
            if self._fd is None or not self.dirty:
                return None
            self.dirty = False
            self.pins += 1
            return self._fd

    def synced(self, ok: bool = True) -> None:
        """The fsync of a `take_for_sync` descriptor returned (`ok`) or failed (still owed)."""
        with self.cache._lock:
            if not ok and self._fd is not None:
                self.dirty = True
            self._unpin_locked()

    def fsync(self) -> None:
        """fsync now (opening the file if needed), owed or not."""
        fd = self.pin()
        self.dirty = False      # a write from here on owes another fsync
        ok = False
        try:
            os.fsync(fd)
            ok = True
        finally:
            self.synced(ok)

    def close(self) -> None:
        """Close the descriptor, fsyncing it first if an fsync is owed. The handle stays
        usable: its next use reopens the file."""
        with self.cache._lock:
            if self._fd is not None:
                self.cache._close_handle(self, fsync=True)

    def discard(self) -> None:
        """Close without the owed fsync: the file is being deleted (or a test crashes)."""
        with self.cache._lock:
            if self._fd is not None:
                self.cache._close_handle(self, fsync=False)

    def reset(self) -> None:
        """The path now names a new file that holds everything (a compaction renamed it
        into place, fsynced): drop the old descriptor without an fsync; the next use opens
        the new file."""
        self.discard()

    def __repr__(self) -> str:
        return f"CachedFile({self.path!r}, fd={self._fd}, dirty={self.dirty}, pins={self.pins})"


class FileCache:
    """The open descriptors of a process's storage files, at most `limit` of them (LRU)."""

    def __init__(self, limit: int | None = None):
        if limit is not None and limit < 1:
            raise ValueError(f"open files limit must be at least 1, got {limit}")
        self.limit = limit or default_limit()
        self._lock = threading.Lock()
        self._lru: OrderedDict[CachedFile, None] = OrderedDict()   # open handles, oldest first
        self.opens = 0              # descriptors opened (first opens and reopens)
        self.open_ns = 0            # time spent in those opens, closing others included
        self.evictions = 0          # handles closed to make room
        self.evictions_synced = 0   # ... that owed an fsync, done before the close
        self.over_limit = 0         # opens past the limit: every open handle was pinned
        self._warned_emfile = False

    # -- handles ---------------------------------------------------------------------------------
    def handle(self, path: str, flags: int, durable: bool = False) -> CachedFile:
        """A handle on an existing file; nothing is opened until it is used."""
        return CachedFile(self, path, flags, durable)

    def create(self, path: str, flags: int, durable: bool, data: bytes) -> CachedFile:
        """Create (or truncate) `path`, write `data` and return its handle, open and owing an
        fsync if `durable` (the owner's next sync covers the new file)."""
        h = CachedFile(self, path, flags, durable)
        with self._lock:
            fd = self._open_handle(h, flags | os.O_CREAT | os.O_TRUNC)
            h.pins += 1
        try:
            h.written()
            write_all(fd, data)
        except BaseException:       # ENOSPC: no handle is returned, so none may stay open
            h.unpin()
            with self._lock:
                if h._fd is not None:
                    self._close_handle(h, fsync=False)
            raise
        h.unpin()
        return h

    # -- the bound -------------------------------------------------------------------------------
    @property
    def open_count(self) -> int:
        return len(self._lru)

    def set_limit(self, limit: int) -> None:
        """Change the bound; close least recently used handles down to it."""
        if limit < 1:
            raise ValueError(f"open files limit must be at least 1, got {limit}")
        with self._lock:
            self.limit = limit
            while len(self._lru) > limit and self._evict_one():
                pass

    def stats(self) -> dict:
        with self._lock:
            return {"limit": self.limit, "open": len(self._lru), "opens": self.opens,
                    "open_ns": self.open_ns, "evictions": self.evictions,
                    "evictions_synced": self.evictions_synced, "over_limit": self.over_limit}

    # -- under the lock --------------------------------------------------------------------------
    def _open_handle(self, h: CachedFile, flags: int) -> int:
        start = time.perf_counter_ns()
        while len(self._lru) >= self.limit:
            if not self._evict_one():
                self.over_limit += 1
                break
        while True:
            try:
                fd = os.open(h.path, flags, 0o644)
                break
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE) or not self._evict_one():
                    raise
                if not self._warned_emfile:
                    self._warned_emfile = True
                    log.warning("the process ran out of descriptors with %d storage files open "
                                "(--open-files-limit %d): closing storage files to make room; "
                                "a lower --open-files-limit avoids this", len(self._lru) + 1,
                                self.limit)
        h._fd = fd
        self._lru[h] = None
        self.opens += 1
        self.open_ns += time.perf_counter_ns() - start
        return fd

    def _evict_one(self) -> bool:
        """Close the least recently used unpinned handle (fsynced first if owed)."""
        victim = next((h for h in self._lru if not h.pins), None)
        if victim is None:
            return False
        owed = victim.dirty
        self._close_handle(victim, fsync=True)
        self.evictions += 1
        self.evictions_synced += owed
        return True

    def _close_handle(self, h: CachedFile, fsync: bool) -> None:
        fd = h._fd
        if fsync and h.dirty:
            os.fsync(fd)        # raises: the handle stays open and dirty
        h.dirty = False
        h._fd = None
        del self._lru[h]
        if h.pins:
            h._retired.append(fd)
        else:
            os.close(fd)


_process_cache: FileCache | None = None


def process_cache() -> FileCache:
    """The cache every log and ack log of this process uses unless given another."""
    global _process_cache
    if _process_cache is None:
        _process_cache = FileCache()
    return _process_cache


def configure(limit: int = 0) -> FileCache:
    """Set the process cache's limit; 0 derives it from RLIMIT_NOFILE as it is now."""
    cache = process_cache()
    cache.set_limit(limit or default_limit())
    return cache
