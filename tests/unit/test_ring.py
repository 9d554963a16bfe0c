"""Unit tests of the shared-memory SPSC ring (shm/ring.c through the CFFI module shm._ring)."""
from __future__ import annotations

import asyncio
import os
import struct
import uuid

import posix_ipc
import pytest

from amqpbroker.testing import leaks

from shm._ring import ffi, lib
from shm.ring import Ring, RingCorrupt
from shm.wakeup import RingReader, RingWriter, close_fds, make_eventfds

# this module's ring names, in this process: its leak checks look at its own segments only
# (pytest-xdist runs other ring tests, in other processes, at the same time)
PREFIX = f"amqptest-{uuid.uuid4().hex[:8]}-"


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail on leaked shm segments or file descriptors (eventfds, shm fds)."""
    with leaks.no_new_shm(PREFIX), leaks.no_new_files():
        yield


@pytest.fixture
def name():
    before = leaks.shm_segments(PREFIX)
    yield PREFIX + uuid.uuid4().hex[:12]
    assert leaks.shm_segments(PREFIX) - before == set(), "leaked shm segment"


@pytest.fixture
def ring(name):
    with Ring.create(name, 1024) as r:
        yield r


# ---------------------------------------------------------------------- build / layout
def test_cffi_build_smoke():
    assert lib.RING_OK == 0 and lib.RING_AGAIN == -1 and lib.RING_TOO_BIG == -2
    assert ffi.sizeof("struct ring_hdr") <= lib.RING_HDR_SIZE
    head = ffi.offsetof("struct ring_hdr", "head")
    tail = ffi.offsetof("struct ring_hdr", "tail")
    rw = ffi.offsetof("struct ring_hdr", "reader_waiting")
    ww = ffi.offsetof("struct ring_hdr", "writer_waiting")
    # producer and consumer indices (and the two flags) each on their own cache line
    assert len({o // 64 for o in (0, head, tail, rw, ww)}) == 5
    assert lib.ring_mem_size(4096) == lib.RING_HDR_SIZE + 4096
    assert lib.ring_max_record_for(4096) == 2048 - 4


def test_create_rejects_bad_capacity(name):
    for cap in (0, 32, 1000, 4097):
        with pytest.raises(ValueError):
            Ring.create(name, cap)


def test_create_twice_fails_and_attach_shares(ring, name):
    with pytest.raises(posix_ipc.ExistentialError):
        Ring.create(name, 1024)
    with Ring.attach(name) as other:
        assert other.capacity == 1024 and not other.owner
        assert ring.push(b"from creator")
        assert other.pop() == b"from creator"
        assert other.push(b"from attacher")
    assert ring.pop() == b"from attacher"


def test_context_manager_unlinks(name):
    with Ring.create(name, 256) as r:
        assert os.path.exists("/dev/shm/" + name)
    assert r.closed
    assert not os.path.exists("/dev/shm/" + name)
    r.close()  # idempotent
    r.unlink()


# ---------------------------------------------------------------------- push / pop
def test_push_pop_fifo(ring):
    assert ring.pop() is None
    assert ring.pop_many() == []
    msgs = [b"", b"a", b"hello world", bytes(range(256))[:200]]
    for m in msgs:
        assert ring.push(m)
    assert [ring.pop() for _ in msgs] == msgs
    assert ring.pop() is None
    assert ring.used_bytes() == 0


def test_push_accepts_buffer_types(ring):
    assert ring.push(bytearray(b"ba"))
    assert ring.push(memoryview(b"mv"))
    assert ring.pop_many() == [b"ba", b"mv"]


def test_batch_ops(ring):
    recs = [bytes([i]) * i for i in range(20)]
    assert ring.push_many(recs) == 20
    assert ring.pop_many(max_records=5) == recs[:5]
    # max_bytes is a soft cap on payload bytes: 5+6+7 = 18 <= 20, +8 would exceed
    assert ring.pop_many(max_bytes=20) == recs[5:8]
    # the first record is returned even if it alone exceeds max_bytes
    assert ring.pop_many(max_bytes=1) == [recs[8]]
    assert ring.pop_many() == recs[9:]
    assert ring.push_many([]) == 0


def test_full_and_empty(ring):
    rec = b"x" * 100  # 4-byte header + 100 = 104 bytes, already 8-aligned
    n = 0
    while ring.push(rec):
        n += 1
    assert n == 1024 // 104
    assert not ring.can_push(100)
    assert ring.push_many([rec, rec]) == 0
    assert ring.pop() == rec
    assert ring.push(rec)
    got = ring.pop_many(max_records=100)
    assert got == [rec] * n
    assert ring.pop() is None


def test_push_many_partial_when_full(ring):
    recs = [b"y" * 60] * 100  # 64 bytes each in the ring
    assert ring.push_many(recs) == 1024 // 64
    assert len(ring.pop_many(max_records=1000)) == 16


def test_too_big(ring):
    assert ring.max_record == 1024 // 2 - 4
    assert ring.push(b"m" * ring.max_record)
    with pytest.raises(ValueError):
        ring.push(b"m" * (ring.max_record + 1))
    with pytest.raises(ValueError):
        ring.push_many([b"ok", b"m" * (ring.max_record + 1)])
    assert ring.pop_many() == [b"m" * ring.max_record]  # the failing batch pushed nothing


def test_wrap_around(ring):
    # sizes chosen so records straddle the end of the data area at many different offsets
    seq = 0
    for rnd in range(200):
        batch = []
        for k in range(1 + rnd % 5):
            size = (rnd * 37 + k * 101) % (ring.max_record + 1)
            batch.append(struct.pack("<I", seq) + b"w" * max(0, size - 4))
            seq += 1
        pushed = ring.push_many(batch)
        got = ring.pop_many(max_records=1000)
        assert got == batch[:pushed]
        for rec in batch[pushed:]:  # ring was empty after the pop: each must fit now
            assert ring.push(rec)
            assert ring.pop() == rec
        assert ring.valid()
    hdr = ffi.cast("struct ring_hdr *", ffi.from_buffer(ring._mm))
    assert hdr.head > 50 * ring.capacity  # really went round many times


def test_max_record_fits_in_empty_ring_at_any_offset(ring):
    hdr = ring._r.hdr
    for target in range(0, ring.capacity, 8):
        while hdr.head % ring.capacity != target:  # 8-byte records walk head to target
            assert ring.push(b"1234")
            assert ring.pop() == b"1234"
        assert ring.push(b"M" * ring.max_record)
        assert ring.pop() == b"M" * ring.max_record


def _write_copies(records):
    """A ``push_with`` writer that copies ``records`` to the offsets it is given."""
    def write(mapping, offs, k):
        for off, rec in zip(struct.unpack(f"={k}Q", bytes(offs)), records[:k]):
            mapping[off:off + len(rec)] = rec
    return write


def _lens(records):
    return struct.pack(f"={len(records)}I", *map(len, records))


def test_push_with_writes_in_place_what_push_many_would(ring):
    """Records written into their reserved space are popped as if pushed (across many
    wraps, with a partial push when the ring is full, and every record header sane)."""
    seq = 0
    for rnd in range(200):
        batch = []
        for k in range(1 + rnd % 7):
            size = (rnd * 37 + k * 101) % (ring.max_record + 1)
            batch.append(struct.pack("<I", seq) + b"w" * max(0, size - 4))
            seq += 1
        pushed = ring.push_with(_write_copies(batch), _lens(batch), len(batch))
        assert 1 <= pushed <= len(batch)
        assert ring.pop_many(max_records=1000) == batch[:pushed]
        assert ring.valid()
    hdr = ffi.cast("struct ring_hdr *", ffi.from_buffer(ring._mm))
    assert hdr.head > 50 * ring.capacity


def test_a_ring_closed_while_its_records_are_parsed_is_unmapped_after_the_parse(name):
    """``pop_with``'s parse may run handlers (a front-end's ring link frames deliveries
    where they lie) and one may close the ring: its records stay readable until the parse
    returns, and the ring is unmapped then (never under the parse, nor released after)."""
    with Ring.create(name, 4096) as r:
        reader = Ring.attach(name)
        r.push_many([b"first", b"second"])
        seen = []

        def parse(mapping, offs, n):
            pairs = struct.unpack(f"={2 * n}Q", bytes(offs))
            reader.close()
            assert reader.closed
            seen.extend(bytes(mapping[pairs[2 * i]:pairs[2 * i + 1]]) for i in range(n))
            return n
        assert reader.pop_with(parse) == 2
        assert seen == [b"first", b"second"]
        assert reader.closed and reader._mm.closed
        reader.close()                  # idempotent
        assert r.used_bytes() > 0       # a closed reader gives no space back


def test_push_with_reserves_only_what_fits_and_nothing_shows_before_the_commit(ring):
    recs = [bytes([i]) * 60 for i in range(100)]      # 64 bytes each in the ring
    seen = []

    def write(mapping, offs, k):
        seen.append(ring.used_bytes())                  # head has not moved yet
        _write_copies(recs)(mapping, offs, k)
    assert ring.push_with(write, _lens(recs), len(recs)) == 1024 // 64
    assert seen == [0]
    assert ring.push_with(write, _lens(recs), len(recs)) == 0      # full: write not called
    assert seen == [0]
    assert ring.pop_many(max_records=1000) == recs[:16]


def test_push_with_publishes_nothing_if_the_writer_raises(ring):
    def broken(mapping, offs, k):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        ring.push_with(broken, _lens([b"abc", b"def"]), 2)
    assert ring.pop() is None and ring.valid()
    assert ring.push_with(_write_copies([b"xyz"]), _lens([b"xyz"]), 1) == 1
    assert ring.pop_many() == [b"xyz"]


def test_push_with_too_big(ring):
    big = b"m" * (ring.max_record + 1)
    with pytest.raises(ValueError):
        ring.push_with(_write_copies([big]), _lens([big]), 1)
    # a record too big after others: the others go, as push_packed's leading records do
    assert ring.push_with(_write_copies([b"ok", big]), _lens([b"ok", big]), 2) == 1
    assert ring.pop_many() == [b"ok"]


# ---------------------------------------------------------------------- valid()
def test_valid_on_good_ring(ring):
    assert ring.valid()
    ring.push_many([b"abc"] * 10)
    assert ring.valid()
    ring.pop_many(max_records=3)
    assert ring.valid()


def test_valid_detects_corrupt_header(ring):
    ring.push(b"abc")
    ring._mm[0:8] = b"BADMAGIC"
    assert not ring.valid()


def test_valid_detects_bad_indices(ring):
    hdr = ffi.cast("struct ring_hdr *", ffi.from_buffer(ring._mm))
    hdr.head = ring.capacity * 3  # head - tail > capacity
    assert not ring.valid()
    hdr.head = 3  # not 8-aligned
    assert not ring.valid()


def test_valid_detects_corrupt_record_header(ring):
    ring.push_many([b"a" * 10, b"b" * 10])
    # second record header (at offset 16 of the data area) claims a huge length
    off = lib.RING_HDR_SIZE + 16
    ring._mm[off:off + 4] = struct.pack("<I", 100000)
    assert not ring.valid()
    assert ring.pop() == b"a" * 10
    with pytest.raises(RingCorrupt):
        ring.pop()


def test_attach_rejects_garbage(name):
    shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, size=4096)
    shm.close_fd()
    try:
        with pytest.raises(RingCorrupt):
            Ring.attach(name)
    finally:
        shm.unlink()


# ---------------------------------------------------------------------- wake-ups
@pytest.fixture
def wring(name):
    data_fd, space_fd = make_eventfds()
    with Ring.create(name, 1024, data_fd=data_fd, space_fd=space_fd) as r:
        yield r
    close_fds(data_fd, space_fd)


async def test_reader_sleeps_and_is_woken(wring):
    reader = RingReader(wring)
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(reader.get_batch())
    for _ in range(3):  # let the reader reach its sleep (flag set, fd registered)
        await asyncio.sleep(0)
    assert wring._r.hdr.reader_waiting == 1
    loop.call_soon(wring.push, b"wake")
    assert await asyncio.wait_for(task, 5) == [b"wake"]
    assert wring._r.hdr.reader_waiting == 0


async def test_no_wakeup_syscall_when_reader_awake(wring, monkeypatch):
    calls = []
    monkeypatch.setattr(Ring, "_wake", staticmethod(lambda fd: calls.append(fd)))
    for _ in range(10):
        assert wring.push(b"x")
    assert calls == []


async def test_reader_timeout_returns_empty(wring):
    reader = RingReader(wring)
    assert await reader.get_batch(timeout=0.01) == []
    assert wring._r.hdr.reader_waiting == 0
    assert reader.get_batch_blocking(timeout=0.01) == []


async def test_writer_waits_for_space(wring):
    writer = RingWriter(wring)
    big = b"B" * wring.max_record
    assert writer.push(big) and writer.push(big)  # each takes exactly half the ring
    assert not writer.push(big)  # full
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(writer.put(big))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done() and wring._r.hdr.writer_waiting == 1
    loop.call_soon(wring.pop)
    assert await asyncio.wait_for(task, 5) is True
    assert wring.pop_many() == [big, big]


async def test_writer_put_many_timeout(wring):
    writer = RingWriter(wring)
    recs = [b"r" * 200] * 10
    assert await writer.put_many(recs, timeout=0.01) == 1024 // 208
    assert wring._r.hdr.writer_waiting == 0
    assert writer.put_many_blocking(recs, timeout=0.01) == 0


def test_pop_many_into_caller_buffer(ring):
    """The C batch pop (ring_pop_many): payloads copied back to back into the caller's buffer,
    one acquire of head and one release of tail."""
    recs = [b"one", b"", b"three", b"x" * 300]
    assert ring.push_many(recs) == 4
    buf = bytearray(4096)
    ends = ring.pop_many_into(buf, max_records=3)
    assert ends == [3, 3, 8]
    assert bytes(buf[:8]) == b"onethree"
    with pytest.raises(ValueError):
        ring.pop_many_into(bytearray(10))  # next record (300 bytes) does not fit
    ends = ring.pop_many_into(buf)
    assert ends == [300] and bytes(buf[:300]) == b"x" * 300
    assert ring.pop_many_into(buf) == []
    assert ring.valid()
