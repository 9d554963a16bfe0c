"""The link between processes: partition messages as bytes through two shared-memory rings.

One ``RingEndpoint`` at each end: it writes its messages into its outgoing ring and reads the
other side's from the incoming one (``shm.ring``: the reader sleeps on an eventfd only when
the ring is empty, so under load there is no syscall per message).

Wire format: each message is encoded by the contract's codec (``amqpbroker/contract.py``): a
publish or a delivery is a small fixed header followed by the record in the log's layout;
cold messages are pickled. A message larger than the ring's largest record (a big body) is
cut into fragments: every ring record starts with one byte, ``0`` = a whole message, ``1`` =
a fragment with more to come, ``2`` = the last fragment.

Writes are batched: ``send`` appends the message to a list that is encoded and pushed once
per loop turn (sooner for a reader asleep: "A lone message" below), straight into the ring:
``contract.size_many`` sizes the lot (one C call),
``Ring.push_with`` reserves their space in the ring, ``contract.write_many`` packs each
message where it goes (one C call; a body is copied once, from its bytes into the shared
mapping) and one release store publishes them. The message object is
kept until then, as ``LocalLink`` hands it over: what a sender sent, it must not change (a
list inside a message is the receiver's once sent). If the ring is full, the rest waits, in
order, for the reader to make room.

Reads are batched the same way: the records are decoded where they lie in the shared
mapping (``contract.decode_many``, one C call per batch; the space goes back to the writer
after), and handed to ``on_batch``. The incoming ring's eventfd stays registered with the
loop for the link's life; the reader drains the ring until it is empty, then sets its
"waiting" flag (``ring_reader_prepare_sleep``) and returns to the loop: the writer writes the
eventfd only when it sees that flag, so a busy link costs no wake-up per message.

A lone message. What a read makes for a link whose reader sleeps is pushed once that read is
handled: the end of a socket read (``release``, called by ``PartitionClient``) or of a batch
read from another link (``_hand``: a worker's deliveries, made while it handles a front-end's
publishes, go to the consumer's front-end at once). It would be woken by the turn's flush
anyway, a loop turn (every other ready read of the turn) later. A link whose reader is awake
(busy: it drains the ring and will see what lands) still gets one push per loop turn.

Deliveries framed where they lie. An endpoint made with ``lend_runs`` (a front-end's link
to a worker) decodes a ``Dlvs`` without copying its run out of the ring
(``contract.decode_many(..., lend=True)``): the run's ``data`` is a read-only memoryview of
the ring's mapping, and a batch holding such a run is handed to ``on_batch`` before its
space goes back to the writer (inside ``Ring.pop_with``), so the channel builds the frames
straight from the ring (``fastpath.build_deliver_run`` copies every body of a view into the
frames, never a slice of it): one copy of each record on the front-end instead of two.
What outlives the handler is copied out first: the messages held for the next turn after a
``yield_after`` (``RecordRun.keep``); every other lent view is released when the handler
returns, before the space is, so a run kept by mistake raises on its next use instead of
reading records the writer has written since. A global prefetch's held deliveries and a
stream's are ``Record``s decoded from the run (``RecordRun.__iter__`` copies), never the
view. Not for a link whose handler keeps the events (the cluster's ``WorkerRelay`` sends
them on a TCP link, encoded later): it copies, as before.

Quiet messages. What nothing waits for (``send_quiet``: a consumer's ack; the credit it may
return goes as its own ``Credit``) is pushed without waking a reader asleep on the ring
(``ring_commit_quiet``).
The reader reads it when it wakes for anything else: after any wake-up an endpoint reads
every ring of its process that holds records, the others' first (``_on_wake``), so whatever
woke it (the next publish, a management request) finds the ack handled. If nothing has woken
the reader ``QUIET_WAKE`` after the push, the writer wakes it. A lone message's ack thus
costs the worker no wake-up of its own; a busy reader never sleeps and sees no difference.
"""
from __future__ import annotations

import asyncio
import logging
import os
from functools import partial

from shm._ring import lib
from shm.ring import DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, OK, Ring
from shm.wakeup import RingWriter, close_fds, make_eventfds

from ..contract import LENT_RUNS, decode, decode_many, encode_bytes, size_many, write_many

log = logging.getLogger("amqpbroker.partition")

WHOLE, MORE, LAST = b"\x00", b"\x01", b"\x02"

# the endpoints of this process with messages sent and not yet pushed (``push_if_asleep``)
_unsent: dict = {}
# the endpoints of this process reading a ring: each reads the others' after a wake-up
_readers: dict = {}
# seconds after a quiet push whose reader has not read it yet: the reader is woken
QUIET_WAKE = 0.005
# ``_parse_lending``'s answer for a batch it handled itself, while its records were in the ring
HANDLED = object()


async def hand_over(batch: list, on_batch, yield_after) -> None:
    """Give ``batch`` to ``on_batch``, a turn of the loop after each ``yield_after`` message:
    a reply resumes a waiting handler on the next turn, and what follows it (e.g. deliveries
    to the consumer it just registered) must come after. Every link reads this way (the ring
    link in ``RingEndpoint._deliver``, without a task)."""
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

    def __init__(self, out_ring, in_ring, on_batch, *, yield_after=None,
                 lend_runs: bool = False):
        self.loop = asyncio.get_running_loop()
        self.writer = RingWriter(out_ring)
        self.out_ring = out_ring
        self.in_ring = in_ring
        self.on_batch = on_batch
        self.yield_after = yield_after      # a message class after which others wait a turn
        self.lend_runs = lend_runs          # a Dlvs's run lent from the ring while handled
        self.max_piece = out_ring.max_record - 1
        self._msgs: list = []               # sent this turn, not yet encoded
        self._out: list[bytes] = []         # encoded ring records waiting for room
        self._flush_scheduled = False
        self._urgent = False                # a message sent this turn wakes a sleeping reader
        self._quiet_timer = False           # a quiet push's ``QUIET_WAKE`` is pending
        self._draining = None               # task pushing a backlog into a full ring
        self._parts: list[bytes] = []       # fragments of a big incoming message
        self._held = None                   # messages read after a ``yield_after``: next turn
        self._reading = False
        self.eventfds: tuple = ()           # closed with the endpoint (see ``attach`` below)
        self.closed = False

    def start(self) -> None:
        self.loop.add_reader(self.in_ring.data_fd, self._on_wake)
        self._reading = True
        _readers[self] = None
        self.loop.call_soon(self._pump)     # records may be waiting already

    # ------------------------------------------------------------ out
    def send(self, msg) -> None:
        if self.closed:
            return
        self._msgs.append(msg)
        self._urgent = True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            _unsent[self] = None
            self.loop.call_soon(self.flush)

    emit = send

    def send_quiet(self, msg) -> None:
        """``send`` for a message nothing waits for: it goes with the turn's push, but does
        not wake the reader (see "Quiet messages" above); in order with the others."""
        if self.closed:
            return
        self._msgs.append(msg)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            _unsent[self] = None
            self.loop.call_soon(self.flush)

    def hold(self) -> None:
        """A session handles what it read until ``release``: ``PartitionClient`` gathers the
        read's publishes to one queue into one ``Pubs``, one ring record (the host appends
        it as one). Nothing to do here: what is sent waits for ``release``."""

    def release(self) -> None:
        """The end of ``hold``: the read's messages go now if the reader sleeps."""
        self.push_if_asleep()

    def push_if_asleep(self) -> None:
        """Push what was sent if the other side sleeps on the ring: a lone message is not
        kept for the end of the loop turn. A reader that is awake is left to the turn's
        ``flush``, which pushes the turn's messages at once."""
        if self._flush_scheduled and self._urgent and not self.closed \
                and self.out_ring._r.hdr.reader_waiting:
            self.flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        _unsent.pop(self, None)
        if self._draining is not None or not self._msgs or self.closed:
            return
        msgs, self._msgs = self._msgs, []
        wake, self._urgent = self._urgent, False
        left = self._push(msgs, wake)
        if not wake and not self._quiet_timer:
            self._quiet_timer = True
            self.loop.call_later(QUIET_WAKE, self._wake_if_unread)
        if left:
            self._out = left
            self._draining = self.loop.create_task(self._drain())

    def _push(self, msgs: list, wake: bool = True) -> list[bytes]:
        """Push ``msgs`` in order as far as the ring has room; the ring records left over.
        ``wake=False``: quiet messages only, a sleeping reader is not woken for them."""
        ring = self.out_ring
        while msgs:
            sized, lens, count = size_many(msgs, WHOLE, self.max_piece)
            done = ring.push_with(partial(write_many, sized), lens, count, wake)
            if done < count:
                return self._records(msgs[done:])
            if count == len(msgs):
                return []
            pieces = self._records(msgs[count:count + 1])     # too big: fragments
            done = ring.push_many(pieces)
            if done < len(pieces):
                return pieces[done:] + self._records(msgs[count + 1:])
            msgs = msgs[count + 1:]
        return []

    def _records(self, msgs: list) -> list[bytes]:
        """``msgs`` as ring records, one at a time (the slow path: a full ring, a big body)."""
        out = []
        for msg in msgs:
            data = encode_bytes(msg, WHOLE)
            if len(data) <= self.max_piece:
                out.append(data)
                continue
            view = memoryview(data)[1:]
            step = self.max_piece
            for start in range(0, len(view), step):
                end = start + step
                out.append((MORE if end < len(view) else LAST) + view[start:end])
        return out

    async def _drain(self) -> None:
        """The ring is full: wait for room, keeping order (later sends queue behind)."""
        try:
            while (self._out or self._msgs) and not self.closed:
                if not self._out:
                    self._out, self._msgs = self._records(self._msgs), []
                out, self._out = self._out, []
                await self.writer.put_many(out)
        finally:
            self._draining = None

    def _wake_if_unread(self) -> None:
        """``QUIET_WAKE`` after a quiet push: wake the reader if the ring still holds
        records (a spurious wake-up costs the reader a look at an empty ring, never a lost
        record)."""
        self._quiet_timer = False
        if not self.closed and not self.out_ring.closed \
                and lib.ring_used_bytes(self.out_ring._r):
            self.out_ring._wake(self.out_ring.data_fd)

    # ------------------------------------------------------------ in
    def _on_wake(self) -> None:
        try:
            os.eventfd_read(self.in_ring.data_fd)
        except BlockingIOError:
            pass
        for endpoint in list(_readers):     # quiet records pushed to us on other links
            if endpoint is not self and not endpoint.closed and not endpoint.in_ring.closed \
                    and lib.ring_used_bytes(endpoint.in_ring._r):
                endpoint._pump()
        self._pump()

    def _parse(self, mapping, offs, n: int) -> list:
        return decode_many(mapping, offs, n, self._other)

    def _parse_lending(self, mapping, offs, n: int):
        """``_parse``, a ``Dlvs``'s run lent from the ring (see "Deliveries framed where they
        lie"): a batch holding one is handled here, while the records are in the ring, and
        ``HANDLED`` returned; any other batch is returned to be handled after the pop."""
        batch = decode_many(mapping, offs, n, self._other, True)
        lent = [m.records for m in batch if type(m) in LENT_RUNS]
        if not lent:
            return batch
        try:
            self._deliver(batch)
        finally:
            if self._held:                  # handled next turn: after the space is reused
                for m in self._held:
                    if type(m) in LENT_RUNS:
                        m.records.keep()
            for run in lent:
                if type(run.data) is memoryview:
                    run.data.release()      # a use after this raises, never reads stale
        return HANDLED

    def _other(self, raw: bytes):
        """A ring record that is not a whole hot message (``decode_many`` decoded those)."""
        kind = raw[0]
        if kind == 0:
            return decode(raw, 1)
        self._parts.append(raw[1:])
        if kind == 1:
            return None
        data = b"".join(self._parts)
        self._parts = []
        return decode(data)

    def _pump(self) -> None:
        """Read until the ring is empty, then ask for a wake-up and return to the loop."""
        ring = self.in_ring
        pop = ring.pop_with
        parse = self._parse_lending if self.lend_runs else self._parse
        hdr = ring._r.hdr
        while not self.closed and self._held is None:
            batch = pop(parse, DEFAULT_MAX_RECORDS, DEFAULT_MAX_BYTES)
            if batch is None:
                if lib.ring_reader_prepare_sleep(ring._r) == OK:
                    return                  # asleep: the writer writes data_fd
                continue                    # a record landed meanwhile
            if batch:
                if batch is not HANDLED:
                    self._deliver(batch)
                # nothing landed while it was handled (a lone message): straight to sleep,
                # without another pop's look at an empty ring (prepare_sleep looks again,
                # after its fence; a record it sees is popped as before)
                if not self.closed and self._held is None and hdr.head == hdr.tail \
                        and lib.ring_reader_prepare_sleep(ring._r) == OK:
                    return

    def _deliver(self, batch: list) -> None:
        """``on_batch``, holding what follows a ``yield_after`` message until the next turn
        (as ``hand_over`` does)."""
        kind = self.yield_after
        if kind is None or kind not in map(type, batch):
            self._hand(batch)
            return
        for i, msg in enumerate(batch):
            if type(msg) is kind:
                self._hand(batch[:i + 1])
                self._held = batch[i + 1:]
                self.loop.call_soon(self._resume)
                return

    def _hand(self, batch: list) -> None:
        """A handler that raises loses the rest of its batch, not the link. What the batch
        made for links whose readers sleep goes now (``push_if_asleep``)."""
        try:
            self.on_batch(batch)
        except Exception:
            log.exception("handling a batch of %d link messages failed", len(batch))
        if _unsent:
            for endpoint in list(_unsent):
                endpoint.push_if_asleep()

    def _resume(self) -> None:
        held, self._held = self._held, None
        if self.closed:
            return
        if held:
            self._deliver(held)
        if self._held is None:
            self._pump()

    def close(self) -> None:
        self.closed = True
        _unsent.pop(self, None)
        _readers.pop(self, None)
        if self._reading:
            self._reading = False
            self.loop.remove_reader(self.in_ring.data_fd)
        if self._draining is not None:
            self._draining.cancel()
        self.out_ring.close()
        self.in_ring.close()
        if self.eventfds:
            # after the cancelled writer has removed its eventfd from the loop
            self.loop.call_soon(close_fds, *self.eventfds)
            self.eventfds = ()


# ---------------------------------------------------------------- descriptors
# A link between two processes: two unnamed shared-memory rings and their four eventfds.
#
# ``make_link`` returns the descriptors for each side, in the order ``attach`` expects:
# (out ring, out data fd, out space fd, in ring, in data fd, in space fd). The creator sends
# them (``ControlChannel.send_fds`` or ``pass_fds``) and closes its own copies; the segments
# have no name, so they vanish when the last process holding them exits.

# per direction; records up to 1 MiB, bigger ones are fragmented. Small enough that the lines
# a writer reuses are still in cache (the reader just read them): an 8 MiB ring cost 11-14 %
# more CPU per crossing at 16 B, 1 KiB and 64 KiB (bench/ring_link_bench.py --processes 2,
# bench/RING_RESULTS.md), and F x W links of it are F x W x 4 MiB of shared memory
RING_BYTES = 2 << 20


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


def attach(fds: list[int], on_batch, *, yield_after=None,
           lend_runs: bool = False) -> RingEndpoint:
    """Map one side of a link (fds from ``make_link``) and start reading it. ``lend_runs``:
    see "Deliveries framed where they lie" above."""
    out_fd, out_data, out_space, in_fd, in_data, in_space = fds
    out_ring = Ring.attach_fd(out_fd, data_fd=out_data, space_fd=out_space)
    in_ring = Ring.attach_fd(in_fd, data_fd=in_data, space_fd=in_space)
    os.close(out_fd)
    os.close(in_fd)
    endpoint = RingEndpoint(out_ring, in_ring, on_batch, yield_after=yield_after,
                            lend_runs=lend_runs)
    endpoint.eventfds = (out_data, out_space, in_data, in_space)
    endpoint.start()
    return endpoint


def close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
