"""CPU per message through the ring link itself: ``links.ring`` end to end, in one process.

Two endpoints joined by ``ring.make_link`` / ``ring.attach`` (as a front-end and a worker are)
on one uvloop loop: each round ``send``s a batch of messages on one end and waits until the
other end's ``on_batch`` has them all (encode, push, wake-up, pop, decode, hand-over: the
whole crossing, both sides). Prints CPU µs per message (process time, median of rounds), for
``contract.Pub`` and ``contract.Dlv``. Runs against any checkout with the same ring API, so
two trees compare directly:

    PYTHONPATH=/path/to/before python bench/ring_link_bench.py
    PYTHONPATH=. python bench/ring_link_bench.py [--batch 100] [--messages 200000]

``--processes 2`` runs the link as the broker does, between two processes on two cores: a
forked child echoes every ``pub`` back as a ``dlv`` of the same record (the worker's side of
a delivered message), and the CPU of both processes is counted per round trip. In one
process the ring's lines stay in one core's cache; across two every record is written by
one core and read by the other, and the ring's size decides whether the lines a writer
reuses are still cached (``--ring-bytes``, comma list, interleaved per round):

    PYTHONPATH=. python bench/ring_link_bench.py --processes 2 --size 1024 \
        --ring-bytes 8388608,1048576 --batch 300
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import uvloop

from amqpbroker import contract as c
from amqpbroker.cli import tune_gc
from amqpbroker.links import ring
from amqpbroker.storage.record import Record


def sample(kind: str, size: int):
    record = Record(1_700_000_000_000, "amq.direct", "bench.key", b"\x80\x00\x02\x01",
                    b"x" * size, 0)
    if kind == "pub":
        return c.Pub(qid=3, seq=1, priority=0, track=False, flags=0, record=record)
    return c.Dlv(cid=5, qid=3, offset=12345, redelivered=False, record=record)


async def measure(kind: str, size: int, batch: int, messages: int, rounds: int) -> float:
    loop = asyncio.get_running_loop()
    front, worker = ring.make_link()
    state = {"got": 0, "want": 0, "done": None}

    def on_batch(msgs):
        state["got"] += len(msgs)
        if state["got"] >= state["want"] and not state["done"].done():
            state["done"].set_result(None)
    b = ring.attach(worker, on_batch)
    a = ring.attach(front, lambda msgs: None)
    msg = sample(kind, size)
    results = []
    try:
        for _ in range(rounds):
            t0 = time.process_time()
            sent = 0
            while sent < messages:
                state["want"] += batch
                state["done"] = loop.create_future()
                for _ in range(batch):
                    a.send(msg)
                sent += batch
                await state["done"]
            results.append((time.process_time() - t0) / sent * 1e6)
    finally:
        a.close()
        b.close()
        await asyncio.sleep(0)
    return statistics.median(results)


def _echo(fds: list[int], report: int) -> None:
    """The forked side of ``--processes 2``: each pub back as a dlv, until ``close``."""
    async def run():
        done = asyncio.get_running_loop().create_future()

        def on_batch(msgs):
            for m in msgs:
                if type(m) is c.Close:
                    done.set_result(None)
                    return
                end.send(c.Dlv(cid=1, qid=m.qid, offset=m.seq, redelivered=False,
                               record=m.record))
        end = ring.attach(fds, on_batch)
        await done
        end.close()
    tune_gc()
    asyncio.run(run())
    os.write(report, repr(time.process_time()).encode())


async def measure_two(size: int, batch: int, messages: int) -> float:
    """CPU µs of both processes per message sent there and back (see the module's doc)."""
    loop = asyncio.get_running_loop()
    front, worker = ring.make_link()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                    # the child: never returns into the caller's loop
        try:
            ring.close_all(front)
            os.close(rfd)
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            _echo(worker, wfd)
        finally:
            os._exit(0)
    ring.close_all(worker)
    os.close(wfd)
    state = {"got": 0, "want": 0, "done": None}

    def on_batch(msgs):
        state["got"] += len(msgs)
        if state["got"] >= state["want"] and not state["done"].done():
            state["done"].set_result(None)
    end = ring.attach(front, on_batch)
    record = sample("pub", size).record
    try:
        t0 = time.process_time()
        seq = 0
        while seq < messages:
            state["want"] += batch
            state["done"] = loop.create_future()
            for _ in range(batch):
                seq += 1
                end.send(c.Pub(qid=3, seq=seq, priority=0, track=False, flags=0,
                               record=record))
            await state["done"]
        mine = time.process_time() - t0
        end.send(c.Close())
    finally:
        end.flush()
        theirs = float(await loop.run_in_executor(None, os.read, rfd, 64) or b"nan")
        os.close(rfd)
        os.waitpid(pid, 0)
        end.close()
        await asyncio.sleep(0)
    return (mine + theirs) / messages * 1e6


def two_processes(args) -> None:
    sizes = [int(s) for s in args.size.split(",")]
    rings = [int(b) for b in args.ring_bytes.split(",")]
    results: dict = {}
    for _ in range(args.rounds):
        for size in sizes:
            for ring_bytes in rings:
                ring.RING_BYTES = ring_bytes
                n = args.messages if size < 65536 else args.messages // 10
                results.setdefault((size, ring_bytes), []).append(
                    asyncio.run(measure_two(size, args.batch, n)))
    print(f"| size | ring bytes | CPU µs per round trip, both processes (batch {args.batch}, "
          f"median of {args.rounds}) |")
    print("|---:|---:|---:|")
    for (size, ring_bytes), runs in results.items():
        print(f"| {size} | {ring_bytes} | {statistics.median(runs):.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", default="16,1024,65536")
    p.add_argument("--processes", type=int, default=1, choices=(1, 2))
    p.add_argument("--ring-bytes", default=str(ring.RING_BYTES),
                   help="--processes 2: each direction's ring size, comma list")
    args = p.parse_args()
    uvloop.install()
    if args.processes == 2:
        tune_gc()
        two_processes(args)
        return
    print(f"| message | size | CPU µs per message (batch {args.batch}) |")
    print("|---|---:|---:|")
    for size in [int(s) for s in args.size.split(",")]:
        for kind in ("pub", "dlv"):
            n = args.messages if size < 65536 else args.messages // 10
            us = asyncio.run(measure(kind, size, args.batch, n, args.rounds))
            print(f"| {kind} | {size} | {us:.2f} |")


if __name__ == "__main__":
    main()
