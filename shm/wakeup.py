"""Sleeping on a ring without busy-waiting: eventfds plus "waiting" flags in the shared header.

Protocol (consumer side; the producer side is symmetric with ``writer_waiting``/``space_fd``):

1. pop; if something came back, return it (no syscall at all under load);
2. ``ring_reader_prepare_sleep``: set ``reader_waiting`` in the header, full fence, re-read head.
   If a record arrived meanwhile, clear the flag and go to 1 (this re-check after the fence is
   what prevents a lost wake-up; see the comments on the fences in ring.c);
3. sleep on ``data_fd`` (``loop.add_reader`` in asyncio, ``poll`` when blocking), drain it, go
   to 1.

The producer, after its release store of head, fences and looks at ``reader_waiting``; only if
it is set does it clear it and write ``data_fd``.  Wake-ups may be spurious (a stale eventfd
count), never lost.

The eventfds are created by the process that sets things up (``make_eventfds``) and reach the
other process by fork or ``pass_fds``.  They are non-blocking.
"""
from __future__ import annotations

import asyncio
import os
import select
import time

from shm._ring import lib
from shm.ring import DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, OK, Ring

__all__ = ["make_eventfds", "close_fds", "RingReader", "RingWriter"]


def make_eventfds(cloexec: bool = False) -> tuple[int, int]:
    """Return ``(data_fd, space_fd)``: two non-blocking eventfds for one ring.

    Not close-on-exec by default so they survive into a ``subprocess`` (pass them in
    ``pass_fds``) as well as a fork."""
    flags = os.EFD_NONBLOCK | (os.EFD_CLOEXEC if cloexec else 0)
    return os.eventfd(0, flags), os.eventfd(0, flags)


def close_fds(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _drain(fd: int) -> None:
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        pass


async def _sleep_on(fd: int, timeout: float | None) -> bool:
    """Wait until ``fd`` is readable (True) or the timeout passes (False)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        if timeout is None:
            await fut
        else:
            try:
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                return False
    finally:
        loop.remove_reader(fd)
    _drain(fd)
    return True


def _block_on(fd: int, timeout: float | None) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    ready = p.poll(None if timeout is None else max(0, int(timeout * 1000)))
    if ready:
        _drain(fd)
    return bool(ready)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class RingReader:
    """Consumer end of a ring, asyncio-friendly: ``await reader.get_batch()``."""

    def __init__(self, ring: Ring, *, max_records: int = DEFAULT_MAX_RECORDS,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        if ring.data_fd is None:
            raise ValueError("RingReader needs a ring with data_fd (see make_eventfds)")
        self.ring = ring
        self.max_records = max_records
        self.max_bytes = max_bytes

    def get_batch_nowait(self) -> list[bytes]:
        return self.ring.pop_many(self.max_records, self.max_bytes)

    async def get_batch(self, timeout: float | None = None) -> list[bytes]:
        """Return the next non-empty batch, sleeping on the eventfd while the ring is empty.
        Returns [] only if ``timeout`` seconds pass with nothing to read."""
        ring = self.ring
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = ring.pop_many(self.max_records, self.max_bytes)
            if batch:
                return batch
            if lib.ring_reader_prepare_sleep(ring._r) != OK:
                continue  # a record landed between the pop and the flag: no sleep
            if not await _sleep_on(ring.data_fd, _remaining(deadline)):
                lib.ring_reader_cancel_sleep(ring._r)
                return ring.pop_many(self.max_records, self.max_bytes)

    def get_batch_blocking(self, timeout: float | None = None) -> list[bytes]:
        """Same as ``get_batch`` for a thread or process without an event loop."""
        ring = self.ring
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = ring.pop_many(self.max_records, self.max_bytes)
            if batch:
                return batch
            if lib.ring_reader_prepare_sleep(ring._r) != OK:
                continue
            if not _block_on(ring.data_fd, _remaining(deadline)):
                lib.ring_reader_cancel_sleep(ring._r)
                return ring.pop_many(self.max_records, self.max_bytes)


class RingWriter:
    """Producer end of a ring: ``push`` never blocks; ``put``/``put_many`` wait for space
    (asyncio), ``put_blocking``/``put_many_blocking`` without an event loop."""

    def __init__(self, ring: Ring):
        self.ring = ring
        self.push = ring.push
        self.push_many = ring.push_many

    def _prepare(self, size: int) -> bool:
        """True if the caller should sleep on space_fd (flag set, still no room)."""
        if self.ring.space_fd is None:
            raise ValueError("waiting for space needs a ring with space_fd (see make_eventfds)")
        return lib.ring_writer_prepare_sleep(self.ring._r, size) == OK

    async def put(self, data: bytes, timeout: float | None = None) -> bool:
        """Push, waiting for room.  False if ``timeout`` passes first."""
        return await self.put_many([data], timeout) == 1

    async def put_many(self, records: list[bytes], timeout: float | None = None) -> int:
        """Push all records in order, waiting for room as needed; returns how many went
        (fewer only if ``timeout`` passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done, n = 0, len(records)
        while done < n:
            k = self.ring.push_many(records[done:] if done else records)
            done += k
            if done == n or k:
                continue
            if not self._prepare(len(records[done])):
                continue
            if not await _sleep_on(self.ring.space_fd, _remaining(deadline)):
                lib.ring_writer_cancel_sleep(self.ring._r)
                return done + self.ring.push_many(records[done:])
        return done

    def put_blocking(self, data: bytes, timeout: float | None = None) -> bool:
        return self.put_many_blocking([data], timeout) == 1

    def put_many_blocking(self, records: list[bytes], timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        done, n = 0, len(records)
        while done < n:
            k = self.ring.push_many(records[done:] if done else records)
            done += k
            if done == n or k:
                continue
            if not self._prepare(len(records[done])):
                continue
            if not _block_on(self.ring.space_fd, _remaining(deadline)):
                lib.ring_writer_cancel_sleep(self.ring._r)
                return done + self.ring.push_many(records[done:])
        return done
