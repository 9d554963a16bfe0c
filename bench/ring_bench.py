"""Two-process throughput of the shared-memory ring vs multiprocessing.Queue and faster-fifo.

A forked writer sends N records of a given size; the parent reads them all (batch pops where
the transport has them) and we time from the writer's start to the last record received.

    python bench/ring_bench.py                 # all sizes, all transports, prints a table
    python bench/ring_bench.py --sizes 64 --transports ring --scale 2

faster-fifo is optional (pip install faster-fifo; not a project dependency).
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shm.ring import Ring  # noqa: E402
from shm.wakeup import RingReader, RingWriter, close_fds, make_eventfds  # noqa: E402

CTX = mp.get_context("fork")
RING_CAPACITY = 1 << 23  # 8 MiB
# records per run, tuned so each run takes roughly a second on a small machine
COUNTS = {
    "ring": {64: 3_000_000, 1024: 1_000_000, 65536: 40_000},
    "faster-fifo": {64: 1_000_000, 1024: 500_000, 65536: 20_000},
    "mp.Queue": {64: 300_000, 1024: 200_000, 65536: 20_000},
}


def batch_for(size: int) -> int:
    return max(1, min(256, (256 * 1024) // size))


# ---------------------------------------------------------------------- ring
def _ring_writer(name, data_fd, space_fd, size, n, go):
    ring = Ring.attach(name, data_fd=data_fd, space_fd=space_fd)
    writer = RingWriter(ring)
    b = batch_for(size)
    recs = [os.urandom(size)] * b
    go.wait()
    sent = 0
    while sent < n:
        k = min(b, n - sent)
        sent += writer.put_many_blocking(recs if k == b else recs[:k])
    ring.close()


def bench_ring(size: int, n: int) -> float:
    name = "amqpbench-" + uuid.uuid4().hex[:12]
    data_fd, space_fd = make_eventfds()
    go = CTX.Event()
    with Ring.create(name, RING_CAPACITY, data_fd=data_fd, space_fd=space_fd) as ring:
        p = CTX.Process(target=_ring_writer, args=(name, data_fd, space_fd, size, n, go))
        p.start()
        reader = RingReader(ring, max_records=4096, max_bytes=4 << 20)

        async def read() -> int:
            got = nbytes = 0
            while got < n:
                batch = await reader.get_batch()
                got += len(batch)
                nbytes += len(batch[-1])
            return nbytes

        t0 = time.perf_counter()
        go.set()
        asyncio.run(read())
        dt = time.perf_counter() - t0
        p.join()
    close_fds(data_fd, space_fd)
    return dt


# ---------------------------------------------------------------------- faster-fifo
def _ff_writer(q, size, n, go):
    b = batch_for(size)
    recs = [os.urandom(size)] * b
    go.wait()
    sent = 0
    while sent < n:
        k = min(b, n - sent)
        q.put_many(recs[:k], block=True, timeout=60)
        sent += k


def bench_ff(size: int, n: int) -> float:
    import faster_fifo

    q = faster_fifo.Queue(max_size_bytes=RING_CAPACITY)
    go = CTX.Event()
    p = CTX.Process(target=_ff_writer, args=(q, size, n, go))
    p.start()
    t0 = time.perf_counter()
    go.set()
    got = 0
    while got < n:
        got += len(q.get_many(block=True, timeout=60, max_messages_to_get=4096))
    dt = time.perf_counter() - t0
    p.join()
    q.close()
    return dt


# ---------------------------------------------------------------------- multiprocessing.Queue
def _mpq_writer(q, size, n, go):
    rec = os.urandom(size)
    go.wait()
    put = q.put
    for _ in range(n):
        put(rec)


def bench_mpq(size: int, n: int) -> float:
    q = CTX.Queue(maxsize=max(16, RING_CAPACITY // max(size, 1024)))
    go = CTX.Event()
    p = CTX.Process(target=_mpq_writer, args=(q, size, n, go))
    p.start()
    t0 = time.perf_counter()
    go.set()
    get = q.get
    for _ in range(n):
        get()
    dt = time.perf_counter() - t0
    p.join()
    return dt


BENCHES = {"ring": bench_ring, "faster-fifo": bench_ff, "mp.Queue": bench_mpq}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 1024, 65536])
    ap.add_argument("--transports", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply record counts")
    ap.add_argument("--repeat", type=int, default=2, help="runs per cell; best is reported")
    args = ap.parse_args()

    rows = []
    print(f"{'size':>7} {'transport':<12} {'records':>10} {'rec/s':>12} {'GB/s':>8} {'vs mp.Queue':>12}")
    for size in args.sizes:
        base = None
        for t in args.transports:
            n = max(1, int(COUNTS[t][size] * args.scale)) if size in COUNTS[t] else int(
                1e8 / max(size, 64) * args.scale)
            try:
                dt = min(BENCHES[t](size, n) for _ in range(args.repeat))
            except ImportError as e:
                print(f"{size:>7} {t:<12} skipped: {e}")
                continue
            rate = n / dt
            if t == "mp.Queue":
                base = rate
            rows.append((size, t, n, rate, rate * size / 1e9))
        for s, t, n, rate, gbs in [r for r in rows if r[0] == size]:
            ratio = f"{rate / base:.1f}x" if base else "-"
            print(f"{s:>7} {t:<12} {n:>10} {rate:>12,.0f} {gbs:>8.3f} {ratio:>12}", flush=True)


if __name__ == "__main__":
    main()
