"""The link between processes: partition messages as bytes through two shared-memory rings.

One ``RingEndpoint`` at each end: it writes its messages into its outgoing ring and reads the
other side's from the incoming one (``shm.ring`` / ``shm.wakeup``: the reader sleeps on an
eventfd only when the ring is empty, so under load there is no syscall per message).

Wire format: each message is encoded by the contract's codec (``amqpbroker/contract.py``): a
publish or a delivery is a small fixed header followed by the record in the log's layout;
cold messages are pickled. A message larger than the ring's largest record (a big body) is
cut into fragments: every ring record starts with one byte, ``0`` = a whole message, ``1`` =
a fragment with more to come, ``2`` = the last fragment.

Writes are batched: ``send`` appends to a list that is pushed once per loop turn with
``push_many`` (one release store for the lot). If the ring is full, the rest waits, in order,
for the reader to make room.

Reads are driven by a callback, not a task: the incoming ring's eventfd is registered with the
loop once, for the endpoint's life, and ``_read`` pops until the ring is empty, then sets the
reader's "waiting" flag (``ring_reader_prepare_sleep``) and returns. A wake-up is then one
``epoll_wait`` and one ``read`` of the eventfd, and the batch is handled in the loop turn the
wake-up arrived in. (Registering the eventfd per sleep, with a future a task awaits, cost a
dozen syscalls and one more loop turn per wake-up: bench/RESULTS.md, "latency_1".)
"""
from __future__ import annotations

import asyncio
import logging
import os

from shm._ring import lib
from shm.ring import DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, OK, Ring
from shm.wakeup import RingWriter, close_fds, make_eventfds

from ..contract import decode

log = logging.getLogger("amqpbroker.partition")

WHOLE, MORE, LAST = b"\x00", b"\x01", b"\x02"


async def hand_over(batch: list, on_batch, yield_after) -> None:
    """Give ``batch`` to ``on_batch``, a turn of the loop after each ``yield_after`` message:
    a reply resumes a waiting handler on the next turn, and what follows it (e.g. deliveries
    to the consumer it just registered) must come after. Every link reads this way."""
    start = 0
    for i, msg in enumerate(batch):
        if type(msg) is yield_after:
            on_batch(batch[start:i + 1])
            start = i + 1
            await asyncio.sleep(0)
    if start < len(batch):
        on_batch(batch[start:])


class RingEndpoint:
    """One end of a link. ``on_batch(messages)`` is called with each batch read."""

    def __init__(self, out_ring, in_ring, on_batch, *, yield_after=None):
        self.loop = asyncio.get_running_loop()
        self.writer = RingWriter(out_ring)
        self.out_ring = out_ring
        self.in_ring = in_ring
        self.on_batch = on_batch
        self.yield_after = yield_after      # a message class after which others wait a turn
        self.max_piece = out_ring.max_record - 1
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._draining = None               # task pushing a backlog into a full ring
        self._parts: list[bytes] = []
        self._data_fd = None                # the incoming ring's eventfd, while registered
        self._held = None                   # messages waiting a turn behind ``yield_after``
        self.eventfds: tuple = ()           # closed with the endpoint (see ``attach`` below)
        self.closed = False

    def start(self) -> None:
        self._data_fd = self.in_ring.data_fd
        self.loop.add_reader(self._data_fd, self._readable)
        self.loop.call_soon(self._read)      # what the other side pushed before we listened

    # ------------------------------------------------------------ out
    def send(self, msg) -> None:
        if self.closed:
            return
        pieces = msg.ENCODE(msg, WHOLE)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if len(data) <= self.max_piece:
            self._out.append(data)
        else:
            view = memoryview(data)[1:]
            step = self.max_piece
            for start in range(0, len(view), step):
                end = start + step
                self._out.append((MORE if end < len(view) else LAST) + view[start:end])
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    emit = send

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._draining is not None or not self._out or self.closed:
            return
        out = self._out
        done = self.writer.push_many(out)
        if done == len(out):
            self._out = []
            return
        self._out = out[done:]
        self._draining = self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        """The ring is full: wait for room, keeping order (later sends queue behind)."""
        try:
            while self._out and not self.closed:
                out, self._out = self._out, []
                await self.writer.put_many(out)
        finally:
            self._draining = None

    # ------------------------------------------------------------ in
    def _readable(self) -> None:
        try:
            os.eventfd_read(self._data_fd)   # level-triggered: clear it before reading
        except BlockingIOError:
            pass
        try:
            self._read()
        except BaseException:
            # a handler failed (a bug; the loop logs it): the ring may hold more, and with
            # the waiting flag unset no wake-up would come for it, so read on next turn
            self.loop.call_soon(self._read)
            raise

    def _read(self) -> None:
        """Handle everything in the ring, then sleep (flag set: the writer's next push
        writes the eventfd). Stops early, for a turn, after a ``yield_after`` message."""
        ring = self.in_ring
        while not self.closed and self._held is None:
            raw = ring.pop_many(DEFAULT_MAX_RECORDS, DEFAULT_MAX_BYTES)
            if not raw:
                if lib.ring_reader_prepare_sleep(ring._r) == OK:
                    return
                continue                     # a record landed between the pop and the flag
            batch = []
            for item in raw:
                kind = item[:1]
                if kind == WHOLE:
                    batch.append(decode(item, 1))
                elif kind == MORE:
                    self._parts.append(item[1:])
                else:
                    self._parts.append(item[1:])
                    batch.append(decode(b"".join(self._parts)))
                    self._parts = []
            self._hand_over(batch)

    def _hand_over(self, batch: list) -> None:
        """``hand_over`` without a task: after a ``yield_after`` message the rest of the
        batch, and any later read, waits for the next turn (``_resume``)."""
        yield_after = self.yield_after
        if yield_after is not None:
            for i, msg in enumerate(batch):
                if type(msg) is yield_after:
                    self.on_batch(batch[:i + 1])
                    self._held = batch[i + 1:]
                    self.loop.call_soon(self._resume)
                    return
        if batch:
            self.on_batch(batch)

    def _resume(self) -> None:
        held, self._held = self._held, None
        if self.closed or held is None:
            return
        self._hand_over(held)
        if self._held is None:
            self._read()

    def close(self) -> None:
        self.closed = True
        if self._data_fd is not None:
            self.loop.remove_reader(self._data_fd)
            self._data_fd = None
        if self._draining is not None:
            self._draining.cancel()
        self.out_ring.close()
        self.in_ring.close()
        if self.eventfds:
            # a turn later, as before: nothing of this turn still holds them
            self.loop.call_soon(close_fds, *self.eventfds)
            self.eventfds = ()


# ---------------------------------------------------------------- descriptors
# A link between two processes: two unnamed shared-memory rings and their four eventfds.
#
# ``make_link`` returns the descriptors for each side, in the order ``attach`` expects:
# (out ring, out data fd, out space fd, in ring, in data fd, in space fd). The creator sends
# them (``ControlChannel.send_fds`` or ``pass_fds``) and closes its own copies; the segments
# have no name, so they vanish when the last process holding them exits.

RING_BYTES = 8 << 20          # per direction; records up to 4 MiB, bigger ones are fragmented


def make_link() -> tuple[list[int], list[int]]:
    """(front-end side fds, worker side fds); the caller closes both lists after sending."""
    d_fw, s_fw = make_eventfds()          # front-end -> worker ring
    d_wf, s_wf = make_eventfds()          # worker -> front-end ring
    fw, fw_fd = Ring.create_unnamed(RING_BYTES)
    wf, wf_fd = Ring.create_unnamed(RING_BYTES)
    fw.close()
    wf.close()
    front = [fw_fd, d_fw, s_fw, wf_fd, d_wf, s_wf]
    worker = [os.dup(wf_fd), os.dup(d_wf), os.dup(s_wf), os.dup(fw_fd), os.dup(d_fw),
              os.dup(s_fw)]
    return front, worker


def attach(fds: list[int], on_batch, *, yield_after=None) -> RingEndpoint:
    """Map one side of a link (fds from ``make_link``) and start reading it."""
    out_fd, out_data, out_space, in_fd, in_data, in_space = fds
    out_ring = Ring.attach_fd(out_fd, data_fd=out_data, space_fd=out_space)
    in_ring = Ring.attach_fd(in_fd, data_fd=in_data, space_fd=in_space)
    os.close(out_fd)
    os.close(in_fd)
    endpoint = RingEndpoint(out_ring, in_ring, on_batch, yield_after=yield_after)
    endpoint.eventfds = (out_data, out_space, in_data, in_space)
    endpoint.start()
    return endpoint


def close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
