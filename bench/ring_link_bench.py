"""CPU per message through the ring link itself: ``links.ring`` end to end, in one process.

Two endpoints joined by ``ring.make_link`` / ``ring.attach`` (as a front-end and a worker are)
on one uvloop loop: each round ``send``s a batch of messages on one end and waits until the
other end's ``on_batch`` has them all (encode, push, wake-up, pop, decode, hand-over: the
whole crossing, both sides). Prints CPU µs per message (process time, median of rounds), for
``contract.Pub`` and ``contract.Dlv``. Runs against any checkout with the same ring API, so
two trees compare directly:

    PYTHONPATH=/path/to/before python bench/ring_link_bench.py
    PYTHONPATH=. python bench/ring_link_bench.py [--batch 100] [--messages 200000]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import uvloop

from amqpbroker import contract as c
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", default="16,1024,65536")
    args = p.parse_args()
    uvloop.install()
    print(f"| message | size | CPU µs per message (batch {args.batch}) |")
    print("|---|---:|---:|")
    for size in [int(s) for s in args.size.split(",")]:
        for kind in ("pub", "dlv"):
            n = args.messages if size < 65536 else args.messages // 10
            us = asyncio.run(measure(kind, size, args.batch, n, args.rounds))
            print(f"| {kind} | {size} | {us:.2f} |")


if __name__ == "__main__":
    main()
