"""``RingEndpoint`` on small rings: big messages cut into fragments, a full ring drained in
order, what follows a reply held for a loop turn, and when a lone message is pushed."""
from __future__ import annotations

import asyncio
import contextlib

import pytest

from amqpbroker import contract as c
from amqpbroker.links.ring import RingEndpoint
from amqpbroker.protocol import fastpath as fp
from amqpbroker.storage.record import Record, RecordRun
from shm._ring import lib
from shm.ring import Ring
from shm.wakeup import close_fds, make_eventfds


@contextlib.asynccontextmanager
async def pair(capacity: int, on_a, on_b, *, yield_after_b=None, lend_runs_b=False):
    """Endpoints a and b over two rings of ``capacity`` bytes each (b reads as a front-end
    does with ``lend_runs_b``)."""
    fds = [*make_eventfds(), *make_eventfds()]
    ab, ab_fd = Ring.create_unnamed(capacity, data_fd=fds[0], space_fd=fds[1])
    ba, ba_fd = Ring.create_unnamed(capacity, data_fd=fds[2], space_fd=fds[3])
    ab_reader = Ring.attach_fd(ab_fd, data_fd=fds[0], space_fd=fds[1])
    ba_reader = Ring.attach_fd(ba_fd, data_fd=fds[2], space_fd=fds[3])
    close_fds(ab_fd, ba_fd)
    a = RingEndpoint(ab, ba_reader, on_a)
    b = RingEndpoint(ba, ab_reader, on_b, yield_after=yield_after_b, lend_runs=lend_runs_b)
    a.start()
    b.start()
    try:
        yield a, b
    finally:
        a.close()
        b.close()
        await asyncio.sleep(0)
        close_fds(*fds)


def pub(i: int, size: int) -> c.Pub:
    return c.Pub(qid=1, seq=i, priority=0, track=True, flags=0,
                 record=Record(i, "ex", f"k{i}", b"", bytes([i % 251]) * size, 0))


async def until(predicate, timeout=10.0):
    async def wait():
        while not predicate():
            await asyncio.sleep(0.001)
    await asyncio.wait_for(wait(), timeout)


async def test_big_messages_and_a_full_ring_arrive_whole_and_in_order():
    """4 KiB rings (records up to 2 KiB): bodies up to 12 KiB are fragmented, and 300
    messages sent in one turn overflow the ring, so most wait for the reader to make room."""
    got = []
    async with pair(4096, lambda batch: None, got.extend) as (a, _b):
        sent = []
        for i in range(300):
            size = (0, 10, 1500, 2100, 12_000)[i % 5]
            msg = pub(i, size) if i % 7 else c.Ack(qid=1, seq=i, offsets=[i, i + 1])
            sent.append(msg)
            a.send(msg)
        await until(lambda: len(got) >= len(sent))
        assert got == sent


async def test_sends_during_a_drain_queue_behind_it():
    got = []
    async with pair(4096, lambda batch: None, got.extend) as (a, _b):
        sent = [pub(i, 1000) for i in range(50)]
        for msg in sent[:40]:
            a.send(msg)
        await asyncio.sleep(0)          # the flush: the ring fills, a drain starts
        assert a._draining is not None
        for msg in sent[40:]:
            a.send(msg)
        await until(lambda: len(got) >= len(sent))
        assert got == sent


async def test_what_follows_a_reply_is_handed_over_a_turn_later():
    """A reply resumes its waiter on the next turn; the deliveries read after it in the same
    batch must reach the receiver only after the waiter ran (as ``hand_over`` does)."""
    log = []
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def on_b(batch):
        for m in batch:
            if type(m) is c.Reply:
                waiter.set_result(m.value)
            log.append(type(m).__name__)

    async def wait_for_reply():
        await waiter
        log.append("waiter resumed")
    task = loop.create_task(wait_for_reply())
    async with pair(1 << 16, lambda batch: None, on_b, yield_after_b=c.Reply) as (a, _b):
        a.send(c.Dlv(cid=1, qid=1, offset=0, redelivered=False, record=pub(0, 5).record))
        a.send(c.Reply(req=1, ok=True, value=None))
        a.send(c.Dlv(cid=1, qid=1, offset=1, redelivered=False, record=pub(1, 5).record))
        a.send(c.Dlv(cid=1, qid=1, offset=2, redelivered=False, record=pub(2, 5).record))
        await until(lambda: len(log) >= 5)
        await task
    assert log == ["Dlv", "Reply", "waiter resumed", "Dlv", "Dlv"]


async def test_a_reader_asleep_is_woken_by_the_next_send():
    """After the ring ran empty the reader sleeps on its eventfd; a send much later (the
    reader long asleep) still arrives."""
    got = []
    async with pair(1 << 16, lambda batch: None, got.extend) as (a, b):
        a.send(pub(1, 10))
        await until(lambda: len(got) == 1)
        await until(lambda: b.in_ring._r.hdr.reader_waiting == 1)
        a.send(pub(2, 10))
        await until(lambda: len(got) == 2)
        assert got == [pub(1, 10), pub(2, 10)]


async def test_a_handler_that_raises_does_not_stop_the_link(caplog):
    got = []

    def on_b(batch):
        for m in batch:
            if m.seq == 1:
                raise RuntimeError("handler bug")
            got.append(m)
    async with pair(1 << 16, lambda batch: None, on_b) as (a, _b):
        a.send(pub(1, 10))
        await until(lambda: "handler bug" in caplog.text)
        a.send(pub(2, 10))
        await until(lambda: len(got) == 1)
        assert got == [pub(2, 10)]


async def test_a_lone_send_goes_at_release_if_the_reader_sleeps():
    """The end of a socket read (``release``): what it sent is pushed at once when the reader
    sleeps on the ring (a lone message is not kept for the end of the loop turn); a reader
    that is awake gets it with the turn's one push (a busy ring still batches)."""
    got = []
    async with pair(1 << 16, lambda batch: None, got.extend) as (a, b):
        a.send(pub(1, 10))
        await until(lambda: len(got) == 1)
        await until(lambda: b.in_ring._r.hdr.reader_waiting == 1)
        a.send(pub(2, 10))
        a.release()
        assert a.out_ring.used_bytes() > 0          # pushed, no loop turn since the send
        await until(lambda: len(got) == 2)

        await until(lambda: b.in_ring._r.hdr.reader_waiting == 1)
        b.in_ring._r.hdr.reader_waiting = 0     # as if b were awake, draining the ring
        a.send(pub(3, 10))
        a.release()
        assert a.out_ring.used_bytes() == 0     # left for the turn's flush
        b.in_ring._r.hdr.reader_waiting = 1     # b does sleep: the flush wakes it
        await until(lambda: len(got) == 3)
        assert got == [pub(1, 10), pub(2, 10), pub(3, 10)]


async def test_what_a_batch_sends_to_a_sleeping_reader_goes_when_the_batch_is_handled():
    """A worker's delivery, made while it handles a front-end's publish, goes to the
    consumer's front-end (another link, its reader asleep) when that batch is handled,
    not a loop turn later."""
    loop = asyncio.get_running_loop()
    seen = []
    got = []
    async with pair(1 << 16, lambda batch: None, got.extend) as (c_out, d_in):
        def on_b(batch):
            # runs after the handler, before the loop turns: the turn's flush comes later
            loop.call_soon(lambda: seen.append(c_out.out_ring.used_bytes()))
            for m in batch:
                c_out.send(c.Dlv(cid=1, qid=1, offset=m.seq, redelivered=False,
                                 record=m.record))
        async with pair(1 << 16, lambda batch: None, on_b) as (a, _b):
            c_out.send(pub(0, 5))                   # d's reader runs, then sleeps
            await until(lambda: len(got) == 1)
            await until(lambda: d_in.in_ring._r.hdr.reader_waiting == 1)
            a.send(pub(1, 5))
            await until(lambda: len(got) == 2)
    assert seen and seen[0] > 0
    assert [type(m) for m in got] == [c.Pub, c.Dlv]


async def test_a_quiet_message_waits_for_the_readers_next_wake_up():
    """``send_quiet`` (an ack nothing waits for) does not wake a reader asleep on the ring:
    it is read when the reader's process wakes for something else, on any link, before
    what woke it; else ``QUIET_WAKE`` after the push."""
    got_b, got_d = [], []
    async with pair(1 << 16, lambda batch: None, got_b.extend) as (a, b), \
            pair(1 << 16, lambda batch: None,
                 lambda batch: got_d.extend((len(got_b), m) for m in batch)) as (c_, d):
        a.send(pub(1, 10))
        c_.send(pub(2, 10))
        await until(lambda: len(got_b) == 1 and len(got_d) == 1)
        await until(lambda: b.in_ring._r.hdr.reader_waiting == 1
                    and d.in_ring._r.hdr.reader_waiting == 1)
        ack = c.Ack(qid=1, seq=3, offsets=[1])
        a.send_quiet(ack)
        for _ in range(20):
            await asyncio.sleep(0)
        assert got_b == [pub(1, 10)]            # pushed, not read: b still asleep
        assert a.out_ring.used_bytes() > 0
        c_.send(pub(4, 10))                     # d's wake-up reads b's ring first
        await until(lambda: len(got_d) == 2)
        assert got_b == [pub(1, 10), ack]
        assert got_d[1] == (2, pub(4, 10))

        await until(lambda: b.in_ring._r.hdr.reader_waiting == 1)
        a.send_quiet(c.Ack(qid=1, seq=5, offsets=[2]))     # nothing else: the timer wakes b
        await until(lambda: len(got_b) == 3)


async def test_a_quiet_message_goes_with_the_next_urgent_one_in_order():
    got = []
    async with pair(1 << 16, lambda batch: None, got.extend) as (a, b):
        a.send(pub(1, 10))
        await until(lambda: len(got) == 1)
        await until(lambda: b.in_ring._r.hdr.reader_waiting == 1)
        ack = c.Ack(qid=1, seq=2, offsets=[1])
        a.send_quiet(ack)
        a.send(pub(3, 10))
        await until(lambda: len(got) == 3)
        assert got == [pub(1, 10), ack, pub(3, 10)]


# ---------------------------------------------------------------- Dlvs framed where they lie
def dlvs(i: int, sizes) -> c.Dlvs:
    """A run of deliveries whose bodies are distinct per ``i`` (and per record)."""
    return c.Dlvs(cid=1, qid=1, offset=10 * i, records=[
        Record(i, "ex", f"k{i}.{j}", b"", bytes([(7 * i + j) % 251]) * size, 0)
        for j, size in enumerate(sizes)])


def frames_of(run, first_tag: int = 1) -> list:
    """The parts ``Channel._send_run`` writes for a run (``fastpath.build_deliver_run``)."""
    return fp.build_deliver_run(1, b"ctag", first_tag, run.data, run.count, 131072,
                                fp.COPY_BODY_BELOW)


# a small body, one at COPY_BODY_BELOW (its frames would be slices of a bytes run) and one
# under it: every kind of body the channel frames
SIZES = (100, fp.COPY_BODY_BELOW, 3000)


async def test_a_dlvs_is_framed_from_the_ring_and_its_frames_survive_the_ring_refilled():
    """A front-end's link (``lend_runs``) hands a ``Dlvs`` over while its records are still
    in the ring (the run a view of the ring, the space not yet given back), and the frames
    built from it own their bytes: after the writer has filled the 64 KiB ring many times
    over with other bodies, each run's frames are still its own records' frames."""
    seen = []                           # (run's data type, ring bytes in use, frames)

    def on_b(batch):
        for m in batch:
            run = m.records
            seen.append((type(run.data), lib.ring_used_bytes(b.in_ring._r),
                         frames_of(run, m.offset)))
    async with pair(1 << 16, lambda batch: None, on_b, lend_runs_b=True) as (a, b):
        sent = [dlvs(i, SIZES) for i in range(60)]       # ~11 KiB each: 10 rings' worth
        for i, m in enumerate(sent):
            a.send(m)
            if i % 3 == 2:
                await until(lambda: len(seen) == i + 1)  # the ring's space reused in turn
        await until(lambda: len(seen) == len(sent))
    for (kind, used, parts), m in zip(seen, sent):
        assert kind is memoryview                        # lent, not copied out
        assert used > 0                                  # handled before the space went back
        assert all(type(p) is bytes for p in parts)      # nothing points into the ring
        assert b"".join(parts) == b"".join(fp.build_deliver_run_py(
            1, b"ctag", m.offset, RecordRun.of(m.records).data, len(m.records), 131072,
            fp.COPY_BODY_BELOW))


async def test_a_lent_run_kept_past_its_handler_raises_instead_of_reading_the_ring():
    """A run a handler keeps by mistake is released with the batch: its next use raises,
    it never reads records the writer has written since. Decoded as records in the handler
    (a global prefetch's held deliveries), they own their bodies."""
    kept, decoded = [], []

    def on_b(batch):
        for m in batch:
            kept.append(m.records)
            decoded.append(list(m.records))
    async with pair(1 << 16, lambda batch: None, on_b, lend_runs_b=True) as (a, _b):
        sent = [dlvs(i, SIZES) for i in range(30)]
        for i, m in enumerate(sent):
            a.send(m)
            await until(lambda: len(kept) == i + 1)
    assert decoded == [m.records for m in sent]
    for run in kept:
        with pytest.raises(ValueError):
            bytes(run.data)


async def test_a_dlvs_held_for_the_next_turn_is_copied_out_of_the_ring():
    """What follows a reply in a batch is handed over a turn later, after the ring's space
    went back to the writer: a ``Dlvs`` among it is copied out first, so the records the
    writer puts in that space meanwhile do not show through it."""
    got = []
    loop = asyncio.get_running_loop()

    def refill():                       # before the held run is handed over (``_resume``)
        n = 0
        while not a._push([dlvs(100 + n, SIZES)]):      # until the ring is full
            n += 1
        got.append(("refilled", n))

    def on_b(batch):
        for m in batch:
            if type(m) is c.Reply:
                got.append("reply")
                loop.call_soon(refill)  # scheduled before the endpoint's ``_resume``
            elif m.offset < 1000:
                got.append((m.offset, b"".join(frames_of(m.records, m.offset)),
                            list(m.records)))

    async with pair(1 << 16, lambda batch: None, on_b, yield_after_b=c.Reply,
                    lend_runs_b=True) as (a, b):
        held = dlvs(0, SIZES)
        a.send(c.Reply(req=1, ok=True, value=None))
        a.send(held)                    # one push, one batch with the reply
        await until(lambda: len(got) == 3)
    assert got[0] == "reply"
    assert got[1][0] == "refilled" and got[1][1] >= 5  # the ring's 64 KiB written over
    offset, frames, records = got[2]
    assert offset == 0 and records == held.records
    assert frames == b"".join(fp.build_deliver_run_py(
        1, b"ctag", 0, RecordRun.of(held.records).data, len(held.records), 131072,
        fp.COPY_BODY_BELOW))
