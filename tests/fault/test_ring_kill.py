"""A writer SIGKILLed mid-push leaves the ring valid(), and every record the reader gets is
intact and in order; a new writer can then attach and carry on (what the supervisor does)."""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import struct
import uuid
import zlib

import pytest

from amqpbroker.testing import leaks

from shm._ring import lib
from shm.ring import Ring
from shm.wakeup import RingReader, RingWriter, close_fds, make_eventfds

# no broker here: CI's split pass would repeat it unchanged (.ci/run)
pytestmark = pytest.mark.own_layout

HDR = struct.Struct("<QII")  # seq, payload length, crc32(payload)

# this module's ring names, in this process: its leak checks look at its own segments only
# (pytest-xdist runs other ring tests, in other processes, at the same time)
PREFIX = f"amqptest-{uuid.uuid4().hex[:8]}-"


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail on leaked shm segments or file descriptors (eventfds, shm fds)."""
    with leaks.no_new_shm(PREFIX), leaks.no_new_files():
        yield


def make_record(seq: int, big: bool = False) -> bytes:
    n = (seq * 7919) % (1900 if big else 300)
    payload = (seq.to_bytes(8, "little") * (n // 8 + 1))[:n]
    return HDR.pack(seq, n, zlib.crc32(payload)) + payload


def check(rec: bytes, expected_seq: int) -> None:
    seq, n, crc = HDR.unpack_from(rec)
    assert seq == expected_seq
    assert len(rec) == HDR.size + n
    assert zlib.crc32(rec[HDR.size:]) == crc


def writer_forever(name: str, data_fd: int, space_fd: int, batched: bool, big: bool) -> None:
    ring = Ring.attach(name, data_fd=data_fd, space_fd=space_fd)
    writer = RingWriter(ring)
    seq = 0
    # big records make the C memcpy a large share of each push, so kills land inside it too
    pending = [make_record(s, big) for s in range(16)]
    while True:  # tight loop of pushes until SIGKILL
        if batched:
            k = writer.put_many_blocking(pending)
            seq += k
            pending = pending[k:] + [make_record(s, big) for s in range(seq + 16 - k, seq + 16)]
        else:
            if writer.push(pending[0]):
                seq += 1
                pending = pending[1:] + [make_record(seq + 15, big)]


@pytest.mark.parametrize("batched,big", [(False, False), (True, False), (True, True)])
def test_writer_killed_mid_push_leaves_ring_valid(batched, big):
    rnd = random.Random(42 + batched + 2 * big)
    ctx = multiprocessing.get_context("fork")
    for _ in range(8):
        name = PREFIX + uuid.uuid4().hex[:12]
        data_fd, space_fd = make_eventfds()
        with Ring.create(name, 4096, data_fd=data_fd, space_fd=space_fd) as ring:
            reader = RingReader(ring, max_records=rnd.randint(1, 64))
            proc = ctx.Process(target=writer_forever,
                               args=(name, data_fd, space_fd, batched, big))
            proc.start()
            try:
                # read a random amount while the writer is busy, then kill it mid-stream
                kill_after = rnd.randint(1, 20000)
                seq = 0
                while seq < kill_after:
                    for rec in reader.get_batch_blocking(timeout=30):
                        check(rec, seq)
                        seq += 1
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(10)
                assert proc.exitcode == -signal.SIGKILL
                # the supervisor's check after a peer died
                assert ring.valid()
                # every record left is intact and in sequence; a partial one is invisible
                while rec_batch := ring.pop_many(max_records=100):
                    for rec in rec_batch:
                        check(rec, seq)
                        seq += 1
                assert ring.valid()
                # a restarted writer attaches and continues where the published head is
                with Ring.attach(name) as again:
                    assert again.push_many([make_record(seq), make_record(seq + 1)]) == 2
                got = ring.pop_many()
                check(got[0], seq)
                check(got[1], seq + 1)
            finally:
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        close_fds(data_fd, space_fd)
        assert not os.path.exists("/dev/shm/" + name)


def reader_forever(name: str, data_fd: int, space_fd: int) -> None:
    ring = Ring.attach(name, data_fd=data_fd, space_fd=space_fd)
    reader = RingReader(ring, max_records=32)
    seq = None
    while True:  # tight loop of pops until SIGKILL
        for rec in reader.get_batch_blocking():
            s = HDR.unpack_from(rec)[0]
            if seq is not None:
                assert s == seq + 1
            check(rec, s)
            seq = s


def test_reader_killed_mid_pop_leaves_ring_valid():
    """A dead reader: the ring stays valid, and a new reader resumes at the released tail
    (records the dead one copied but had not released come again: at-least-once)."""
    rnd = random.Random(7)
    ctx = multiprocessing.get_context("fork")
    for _ in range(6):
        name = PREFIX + uuid.uuid4().hex[:12]
        data_fd, space_fd = make_eventfds()
        with Ring.create(name, 4096, data_fd=data_fd, space_fd=space_fd) as ring:
            writer = RingWriter(ring)
            proc = ctx.Process(target=reader_forever, args=(name, data_fd, space_fd))
            proc.start()
            try:
                total = rnd.randint(100, 20000)
                seq = 0
                while seq < total:  # the child drains; we block only while the ring is full
                    recs = [make_record(s) for s in range(seq, min(seq + 8, total))]
                    assert writer.put_many_blocking(recs, timeout=30) == len(recs)
                    seq += len(recs)
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(10)
                assert proc.exitcode == -signal.SIGKILL
                assert ring.valid()
                left = []
                with Ring.attach(name) as again:
                    while batch := again.pop_many():
                        left.extend(batch)
                if left:
                    first = HDR.unpack_from(left[0])[0]
                    for i, rec in enumerate(left):
                        check(rec, first + i)
                    assert first + len(left) == total
                assert ring.valid() and ring.used_bytes() == 0
            finally:
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        close_fds(data_fd, space_fd)
        assert not os.path.exists("/dev/shm/" + name)


def test_partial_record_is_invisible():
    """Deterministic version: bytes written past head (a push interrupted before its release
    store of head) are neither seen by the reader nor flagged by valid()."""
    name = PREFIX + uuid.uuid4().hex[:12]
    with Ring.create(name, 1024) as ring:
        assert ring.push(b"complete")
        head = ring._r.hdr.head
        data = lib.RING_HDR_SIZE  # start of the data area
        off = data + head % ring.capacity
        ring._mm[off:off + 4] = struct.pack("<I", 100)  # header of a record never published
        ring._mm[off + 4:off + 20] = b"half-written...."
        assert ring.valid()
        assert ring.pop_many() == [b"complete"]
        assert ring.pop() is None
        assert ring.push(b"next")  # the next push simply overwrites the partial bytes
        assert ring.pop() == b"next"
        assert ring.valid()
