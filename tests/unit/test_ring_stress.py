"""Two-process stress: a forked writer pushes millions of sequence-numbered, checksummed
records (sleeping on the space eventfd when the ring is full); the parent reads them in an
asyncio loop with RingReader (sleeping on the data eventfd when empty) and verifies every one.

RING_STRESS_RECORDS overrides the record count (default 2,000,000, about 10 s on 2 cores)."""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import struct
import uuid
import zlib

import pytest

from amqpbroker.testing import leaks

from shm.ring import Ring
from shm.wakeup import RingReader, RingWriter, close_fds, make_eventfds

RECORDS = int(os.environ.get("RING_STRESS_RECORDS", "2000000"))
CAPACITY = 1 << 16
HDR = struct.Struct("<QII")  # seq, payload length, crc32(payload)
POOL = 512


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail on leaked shm segments or file descriptors (eventfds, shm fds)."""
    with leaks.no_new_shm("amqptest-"), leaks.no_new_files():
        yield


def payload_pool(max_record: int) -> list[bytes]:
    rnd = random.Random(1234)
    sizes = [rnd.choice((0, 1, 7, 8, 9, 50, 100, 200, 1000)) for _ in range(POOL - 4)]
    sizes += [max_record - HDR.size] * 2 + [max_record - HDR.size - 1, 4000]  # some huge ones
    rnd.shuffle(sizes)
    return [rnd.randbytes(n) for n in sizes]


def count_wakes(ring: Ring) -> list[int]:
    """Count the eventfd writes this ring makes (instance override of Ring._wake)."""
    real, counter = Ring._wake, [0]

    def wake(fd):
        counter[0] += 1
        real(fd)

    ring._wake = wake
    return counter


def writer_main(name: str, data_fd: int, space_fd: int, total: int, report) -> None:
    ring = Ring.attach(name, data_fd=data_fd, space_fd=space_fd)
    wakes = count_wakes(ring)
    writer = RingWriter(ring)
    pool = payload_pool(ring.max_record)
    framed = [(HDR.size, len(p), zlib.crc32(p), p) for p in pool]
    pack = HDR.pack
    seq, batch = 0, 256
    while seq < total:
        recs = []
        for s in range(seq, min(seq + batch, total)):
            _, n, crc, p = framed[s % POOL]
            recs.append(pack(s, n, crc) + p)
        assert writer.put_many_blocking(recs, timeout=30) == len(recs)
        seq += len(recs)
    ring.close()
    report.send(wakes[0])
    report.close()


async def read_all(ring: Ring, total: int) -> tuple[int, int]:
    reader = RingReader(ring, max_records=4096)
    expected, nbytes, batches = 0, 0, 0
    unpack, crc32, hsz = HDR.unpack_from, zlib.crc32, HDR.size
    while expected < total:
        batch = await reader.get_batch(timeout=30)
        assert batch, "writer stalled"
        batches += 1
        for rec in batch:
            seq, n, crc = unpack(rec)
            assert seq == expected, (seq, expected)
            assert len(rec) == hsz + n
            assert crc32(rec[hsz:]) == crc
            expected += 1
            nbytes += len(rec)
    return nbytes, batches


def test_two_process_stress():
    name = "amqptest-" + uuid.uuid4().hex[:12]
    data_fd, space_fd = make_eventfds()
    ctx = multiprocessing.get_context("fork")
    report_r, report_w = ctx.Pipe(duplex=False)
    with Ring.create(name, CAPACITY, data_fd=data_fd, space_fd=space_fd) as ring:
        space_wakes = count_wakes(ring)
        proc = ctx.Process(target=writer_main,
                           args=(name, data_fd, space_fd, RECORDS, report_w))
        proc.start()
        report_w.close()
        try:
            nbytes, batches = asyncio.run(read_all(ring, RECORDS))
            assert report_r.poll(30)
            data_wakes = report_r.recv()
            proc.join(30)
            assert proc.exitcode == 0
            assert ring.pop() is None and ring.valid()
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join()
            report_r.close()
    close_fds(data_fd, space_fd)
    assert nbytes > RECORDS * HDR.size
    assert batches < RECORDS / 4  # batching really happens
    # wake-ups are per sleep, not per record: no syscall per record under load
    assert data_wakes + space_wakes[0] < RECORDS / 100, (data_wakes, space_wakes[0])
    assert not os.path.exists("/dev/shm/" + name)
