"""Python side of the SPSC shared-memory ring (C in ring.c, binding built by cffi_build/).

A ``Ring`` maps one POSIX shared memory segment.  One process pushes, one pops; either may be
the creator.  Records are ``bytes``; nothing but bytes crosses the ring.

    with Ring.create("/amqp-fe0-w1", 1 << 20) as ring:      # creator unlinks on exit
        ring.push(b"hello")
        ring.pop_many(max_records=512)                      # -> [b"hello"]

Wake-ups (see wakeup.py) use two optional eventfds held by the ring: ``data_fd`` (written by
the producer when the consumer sleeps) and ``space_fd`` (written by the consumer when the
producer sleeps).  The C side tells us when a wake-up is due (``RING_OK_WAKE``), so under load
there is no syscall per record.
"""
from __future__ import annotations

import mmap
import os
from array import array

import posix_ipc

from shm._ring import ffi, lib

__all__ = ["Ring", "RingError", "RingCorrupt"]

OK = lib.RING_OK
OK_WAKE = lib.RING_OK_WAKE
AGAIN = lib.RING_AGAIN
TOO_BIG = lib.RING_TOO_BIG
ECORRUPT = lib.RING_ECORRUPT
HDR_SIZE = lib.RING_HDR_SIZE

DEFAULT_MAX_RECORDS = 1024
DEFAULT_MAX_BYTES = 1 << 20
_JOIN_LIMIT = 16 * 1024  # push_many joins records averaging less than this (one C call)


class RingError(Exception):
    """A ring call failed for a reason other than full/empty."""


class RingCorrupt(RingError):
    """The shared header or a record header is malformed."""


def _shm_name(name: str) -> str:
    return name if name.startswith("/") else "/" + name


class Ring:
    """One SPSC ring in a POSIX shared memory segment (see module docstring)."""

    def __init__(self, name: str, mm: mmap.mmap, owner: bool,
                 data_fd: int | None = None, space_fd: int | None = None):
        self.name = name
        self.owner = owner
        self.data_fd = data_fd
        self.space_fd = space_fd
        self._mm = mm
        self._parsing = False               # inside pop_with's parse: close waits for it
        self._mem = ffi.from_buffer(mm)
        self._r = ffi.new("ring_t *")
        rc = lib.ring_attach(self._r, self._mem, len(mm))
        if rc != OK:
            self._release()
            raise RingCorrupt(f"cannot attach ring {name}: status {rc}")
        self.capacity = self._r.capacity
        self.max_record = self._r.max_record
        self._np = ffi.new("size_t *")
        self._nt = ffi.new("uint64_t *")
        self._offs = ffi.new("uint64_t[]", 2 * DEFAULT_MAX_RECORDS)
        self._ends = ffi.new("uint32_t[]", DEFAULT_MAX_RECORDS + 1)
        self._woffs = ffi.new("uint64_t[]", DEFAULT_MAX_RECORDS)   # reserve's payload offsets
        self._wn = ffi.new("size_t *")
        self._whead = ffi.new("uint64_t *")
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, name: str, capacity: int, *, data_fd: int | None = None,
               space_fd: int | None = None) -> "Ring":
        """Create and initialise a new segment (fails if ``name`` exists).

        ``capacity`` is the data area in bytes: a power of two >= 64.  The largest record is
        ``capacity // 2 - 4`` bytes (``max_record``).
        """
        if capacity < lib.RING_MIN_CAPACITY or capacity & (capacity - 1):
            raise ValueError("capacity must be a power of two >= %d" % lib.RING_MIN_CAPACITY)
        name = _shm_name(name)
        size = lib.ring_mem_size(capacity)
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
        try:
            mm = mmap.mmap(shm.fd, size)
        except BaseException:
            shm.close_fd()
            shm.unlink()
            raise
        shm.close_fd()
        mem = ffi.from_buffer(mm)
        rc = lib.ring_init(mem, size, capacity)
        ffi.release(mem)
        if rc != OK:
            mm.close()
            posix_ipc.unlink_shared_memory(name)
            raise RingError(f"ring_init failed: status {rc}")
        try:
            return cls(name, mm, True, data_fd, space_fd)
        except BaseException:
            mm.close()
            posix_ipc.unlink_shared_memory(name)
            raise

    @classmethod
    def attach(cls, name: str, *, data_fd: int | None = None,
               space_fd: int | None = None) -> "Ring":
        """Map an existing ring created by another process (or this one)."""
        name = _shm_name(name)
        shm = posix_ipc.SharedMemory(name)
        try:
            mm = mmap.mmap(shm.fd, shm.size)
        finally:
            shm.close_fd()
        try:
            return cls(name, mm, False, data_fd, space_fd)
        except BaseException:
            mm.close()
            raise

    @classmethod
    def create_unnamed(cls, capacity: int, *, data_fd: int | None = None,
                       space_fd: int | None = None) -> tuple["Ring", int]:
        """Create a ring whose segment has no name once this returns: it is created under a
        random name, mapped, and unlinked at once, so no crash of any process can leave it in
        /dev/shm. Returns ``(ring, fd)``; pass ``fd`` to the other process (``pass_fds``),
        which maps it with ``attach_fd``, then close it here."""
        name = "/amqpbroker-ring-" + os.urandom(8).hex()
        ring = cls.create(name, capacity, data_fd=data_fd, space_fd=space_fd)
        try:
            fd = os.open("/dev/shm" + name, os.O_RDWR)
        finally:
            ring.unlink()
        ring.owner = False
        return ring, fd

    @classmethod
    def attach_fd(cls, fd: int, *, data_fd: int | None = None,
                  space_fd: int | None = None) -> "Ring":
        """Map a ring from a descriptor of its segment (see ``create_unnamed``)."""
        mm = mmap.mmap(fd, os.fstat(fd).st_size)
        try:
            return cls(f"fd:{fd}", mm, False, data_fd, space_fd)
        except BaseException:
            mm.close()
            raise

    def _release(self) -> None:
        ffi.release(self._mem)
        self._mm.close()

    def close(self) -> None:
        """Unmap (idempotent).  Does not unlink: see ``unlink``."""
        if not getattr(self, "_closed", True):
            self._closed = True
            if self._parsing:
                return                      # pop_with unmaps it once its parse returns
            self._r = None
            self._release()

    def unlink(self) -> None:
        """Remove the segment's name (mappings stay valid until closed).  Idempotent."""
        try:
            posix_ipc.unlink_shared_memory(self.name)
        except posix_ipc.ExistentialError:
            pass

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        if self.owner:
            self.unlink()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ producer
    def push(self, data: bytes) -> bool:
        """Append one record; False if the ring is full.  ValueError if len > max_record."""
        try:
            rc = lib.ring_push(self._r, data, len(data))
        except TypeError:  # bytearray, memoryview...: pass the buffer without copying
            rc = lib.ring_push(self._r, ffi.from_buffer(data), len(data))
        if rc == OK:
            return True
        if rc == OK_WAKE:
            self._wake(self.data_fd)
            return True
        if rc == AGAIN:
            return False
        if rc == TOO_BIG:
            raise ValueError(f"record of {len(data)} bytes > max_record {self.max_record}")
        raise RingError(f"ring_push: status {rc}")

    def push_many(self, records: list[bytes]) -> int:
        """Append as many leading records as fit (one release store); return how many."""
        n = len(records)
        if not n:
            return 0
        lens = array("I", map(len, records))
        if max(lens) > self.max_record:
            raise ValueError(f"record of {max(lens)} bytes > max_record {self.max_record}")
        total = sum(lens)
        if total >= _JOIN_LIMIT * n:
            # Big records: copying each straight from its bytes beats joining them first
            # (one copy instead of two; each push has its own release store of head).
            done = 0
            for rec in records:
                if not self.push(rec):
                    break
                done += 1
            return done
        return self.push_packed(b"".join(records), lens, n)

    def push_packed(self, data, lens, n: int) -> int:
        """``push_many`` for ``n`` records already back to back in ``data`` (``lens``: their
        lengths as native uint32, e.g. ``array("I").tobytes()``): each is copied once, from
        ``data`` into the ring, with one release store for the lot. Returns how many went
        (the leading ones that fit)."""
        if not n:
            return 0
        rc = lib.ring_push_many(self._r, data, ffi.from_buffer("uint32_t[]", lens), n, self._np)
        if rc == OK:
            return self._np[0]
        if rc == OK_WAKE:
            self._wake(self.data_fd)
            return self._np[0]
        if rc == AGAIN:
            return 0
        if rc == TOO_BIG:
            raise ValueError(f"a record > max_record {self.max_record}")
        raise RingError(f"ring_push_many: status {rc}")

    def push_with(self, write, lens, n: int, wake: bool = True) -> int:
        """``push_packed`` without the packed buffer: room is reserved for the leading ones
        of ``n`` records that fit (``lens``: their lengths as native uint32), then
        ``write(mapping, offs, k)`` writes those ``k`` payloads straight into the mapping
        (``offs``: native uint64 offset of each payload), then one release store publishes
        them. Returns ``k`` (0 if the ring is full). If ``write`` raises, nothing is
        published. ``wake=False``: a reader asleep on the ring is not woken for them
        (``ring_commit_quiet``)."""
        if not n:
            return 0
        if n > len(self._woffs):
            self._woffs = ffi.new("uint64_t[]", n)
        rc = lib.ring_reserve_many(self._r, ffi.from_buffer("uint32_t[]", lens), n,
                                   self._woffs, self._wn, self._whead)
        if rc != OK:
            if rc == AGAIN:
                return 0
            if rc == TOO_BIG:
                raise ValueError(f"a record > max_record {self.max_record}")
            raise RingError(f"ring_reserve_many: status {rc}")
        k = self._wn[0]
        write(self._mm, ffi.buffer(self._woffs, 8 * k), k)
        if not wake:
            lib.ring_commit_quiet(self._r, self._whead[0])
        elif lib.ring_commit(self._r, self._whead[0]) == OK_WAKE:
            self._wake(self.data_fd)
        return k

    def can_push(self, size: int) -> bool:
        """Would a record of ``size`` bytes fit now?"""
        return lib.ring_can_push(self._r, size) == OK

    # ------------------------------------------------------------------ consumer
    def pop(self) -> bytes | None:
        """Remove and return the oldest record, or None if the ring is empty."""
        recs = self.pop_many(max_records=1)
        return recs[0] if recs else None

    def _peek_batch(self, max_records: int, max_bytes: int):
        """Reserve up to ``max_records`` records (``ring_peek_many``): their [start, end)
        offsets into the mapping, the count in ``self._np[0]``; None if the ring is empty.
        ``_free_batch`` gives their space back."""
        if 2 * max_records > len(self._offs):
            self._offs = ffi.new("uint64_t[]", 2 * max_records)
        offs = self._offs
        rc = lib.ring_peek_many(self._r, max_bytes, offs, max_records, self._np, self._nt)
        if rc != OK:
            if rc == AGAIN:
                return None
            if rc == ECORRUPT:
                raise RingCorrupt(f"ring {self.name}: corrupt record")
            raise RingError(f"ring_peek_many: status {rc}")
        return offs

    def _free_batch(self) -> None:
        """One release store of tail for the whole peeked batch; wake a waiting producer."""
        rc = lib.ring_release(self._r, self._nt[0])
        if rc == OK_WAKE:
            self._wake(self.space_fd)
        elif rc != OK:
            raise RingError(f"ring_release: status {rc}")

    def pop_many(self, max_records: int = DEFAULT_MAX_RECORDS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> list[bytes]:
        """Remove up to ``max_records`` records totalling at most ``max_bytes`` payload bytes
        (the first record is always returned, whatever its size) with one acquire of head and
        one release of tail.  Returns [] if the ring is empty."""
        offs = self._peek_batch(max_records, max_bytes)
        if offs is None:
            return []
        # One copy per record, straight from the shared mapping into a bytes object.
        n = self._np[0]
        if n == 1:
            recs = [self._mm[offs[0]:offs[1]]]
        elif n:
            o = ffi.unpack(offs, 2 * n)
            recs = list(map(self._mm.__getitem__, map(slice, o[0::2], o[1::2])))
        else:
            recs = []  # only a wrap marker was consumed
        # One release store of tail for the whole batch, after the copies.
        self._free_batch()
        return recs

    def pop_with(self, parse, max_records: int = DEFAULT_MAX_RECORDS,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        """Like ``pop_many``, without copying the records out: ``parse(mapping, offs, n)`` reads
        the ``n`` records where they lie (``offs``: native uint64 ``[start, end)`` pairs into
        ``mapping``) and its result is returned; the records' space is given back to the
        producer after it returns (or raises). None if the ring is empty. ``parse`` may close
        the ring (a handler run while the records are read: links/ring.py): it is unmapped
        once ``parse`` returns, not under it."""
        offs = self._peek_batch(max_records, max_bytes)
        if offs is None:
            return None
        n = self._np[0]
        self._parsing = True
        try:
            return parse(self._mm, ffi.buffer(offs, 16 * n), n)
        finally:
            self._parsing = False
            if self._closed:                # closed by parse: nobody reads this ring now
                self._r = None
                self._release()
            else:
                self._free_batch()

    def pop_many_into(self, buf, max_records: int = DEFAULT_MAX_RECORDS,
                      max_bytes: int | None = None) -> list[int]:
        """C-side batch pop (``ring_pop_many``): copy up to ``max_records`` payloads back to
        back into the writable buffer ``buf``; return the end offset of each.  For callers
        that parse records in place without creating a bytes object per record."""
        if max_records >= len(self._ends):
            self._ends = ffi.new("uint32_t[]", max_records + 1)
        cbuf = ffi.from_buffer(buf, require_writable=True)
        size = len(cbuf)
        rc = lib.ring_pop_many(self._r, cbuf, size, size if max_bytes is None else max_bytes,
                               self._ends, max_records, self._np)
        if rc == OK_WAKE:
            self._wake(self.space_fd)
        elif rc != OK:
            if rc == AGAIN:
                return []
            if rc == ECORRUPT:
                raise RingCorrupt(f"ring {self.name}: corrupt record")
            if rc == lib.RING_EBUFSIZE:
                raise ValueError("buffer too small for the next record")
            raise RingError(f"ring_pop_many: status {rc}")
        return ffi.unpack(self._ends, self._np[0] + 1)[1:]

    # ------------------------------------------------------------------ both / supervisor
    def valid(self) -> bool:
        """ck_ring-style check after a peer died: header sane, indices sane, every record
        header in [tail, head) well formed.  Safe while at most one side is running."""
        return lib.ring_valid(self._r) == OK

    def used_bytes(self) -> int:
        """Bytes between tail and head (records, padding and wrap areas)."""
        return lib.ring_used_bytes(self._r)

    @staticmethod
    def _wake(fd: int | None) -> None:
        if fd is not None:
            try:
                os.eventfd_write(fd, 1)
            except BlockingIOError:  # counter saturated: the peer is awake anyway
                pass

    def __repr__(self) -> str:
        return f"<Ring {self.name} capacity={self.capacity} closed={self._closed}>"
