"""CPU per message of each step of a ring crossing, in one process: pack, push, pop, decode.

Where the ring link's own work goes, without sockets, loops or a second process: a batch of
``--batch`` deliveries (``contract.Dlv``, the body ``--size`` bytes) through a 2 MiB ring,
each step timed alone by process time (median of ``--rounds``), in µs per message:

* ``pack into bytes``: ``contract.encode_many``, the batch packed back to back into one bytes
  object (how main packed before the batch went into the ring);
* ``pack into ring``: ``size_many`` + ``Ring.push_with`` + ``write_many``, the batch packed
  straight into the ring's reserved space, then popped (skipped on a checkout without them);
* ``push bytes + pop``: ``push_packed`` of an encoded batch and its pop, no decode (the ring's
  own copy);
* ``push bytes + pop + decode``: as above, decoded where it lies (``decode_many``).

Runs against any checkout; compare two interleaved:

    for co in /path/to/before .; do PYTHONPATH=$co python bench/ring_codec_cpu_bench.py; done
"""
from __future__ import annotations

import argparse
import statistics
import time

from amqpbroker import contract as c
from amqpbroker.storage.record import Record
from shm.ring import Ring


def per_call(fn, calls: int, rounds: int) -> float:
    out = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        out.append((time.process_time() - t0) / calls)
    return statistics.median(out)


def steps(size: int, batch: int, calls: int, rounds: int) -> dict:
    record = Record(1_700_000_000_000, "amq.direct", "bench.key", b"\x80\x00\x02\x01",
                    b"x" * size, 0)
    msgs = [c.Dlv(cid=5, qid=3, offset=12345 + i, redelivered=False, record=record)
            for i in range(batch)]
    writer, fd = Ring.create_unnamed(2 << 20)
    reader = Ring.attach_fd(fd)
    data, lens, n = c.encode_many(msgs, b"\0", 1 << 20)
    out = {}
    try:
        out["pack into bytes"] = per_call(lambda: c.encode_many(msgs, b"\0", 1 << 20), calls,
                                          rounds)
        if hasattr(c, "size_many"):
            def pack_into_ring():
                sized, lens2, n2 = c.size_many(msgs, b"\0", 1 << 20)
                writer.push_with(lambda mm, offs, k: c.write_many(sized, mm, offs, k), lens2,
                                 n2)
                reader.pop_with(lambda mm, offs, k: None)
            out["pack into ring (+ pop)"] = per_call(pack_into_ring, calls, rounds)

        def push_pop():
            writer.push_packed(data, lens, n)
            reader.pop_with(lambda mm, offs, k: None)
        out["push bytes + pop"] = per_call(push_pop, calls, rounds)

        def push_pop_decode():
            writer.push_packed(data, lens, n)
            reader.pop_with(lambda mm, offs, k: c.decode_many(mm, offs, k, None))
        out["push bytes + pop + decode"] = per_call(push_pop_decode, calls, rounds)
    finally:
        writer.close()
        reader.close()
    return {k: v / batch * 1e6 for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="16,1024")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    print("| size | step | CPU µs per message |")
    print("|---:|---|---:|")
    for size in [int(s) for s in args.size.split(",")]:
        for step, us in steps(size, args.batch, args.calls, args.rounds).items():
            print(f"| {size} | {step} | {us:.3f} |")


if __name__ == "__main__":
    main()
