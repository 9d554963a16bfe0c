"""A lone message's round trip, counted rather than timed: broker CPU and syscalls per round trip.

    python bench/lone_message.py --url amqp://guest:guest@127.0.0.1:5672/ --broker-pid P \
        [--round-trips 10000] [--size 16] [--rounds 3] [--strace] [--harness ../shared/bench]

``latency_1`` of ``../shared/bench`` (publish on one connection, wait for its delivery on
another, ack it, publish the next), with the harness's raw client, against any broker. Per
round: round trips/s and latency percentiles (publish -> receipt, noisy on a shared machine),
and what does not depend on the machine's other load as much: the broker's CPU per round
trip over its whole process tree (user and system, from /proc), and with ``--strace`` the
broker's syscalls per round trip (``strace -c -f`` on every process of the tree; strace slows
the broker several times, so its rounds give counts, not times). Several ``--url``s (each
with its ``--broker-pid``) are run round after round, interleaved.

bench/RESULTS.md, "latency_1 on 0be596d": what the counts were before and after.

``--grow-heap MIB`` publishes that many MiB of 64 KiB bodies to a scratch queue before each
round and deletes it, so the round starts on a heap that has just grown, as latency_1 does
in the harness's ``all`` after the throughput scenarios. Each round also counts the wake-ups
(voluntary context switches) of the broker's threads other than the loops' (the heap-prefault
thread: each of its wake-ups takes the GIL from a loop) per round trip (bench/RESULTS.md,
"latency_1: the prefault thread's GIL"), and the wake-ups of each process's loop (its main
thread's voluntary context switches) per round trip: in a split layout, how many process hops
a lone message makes (bench/RESULTS.md, "The split layouts against RabbitMQ").
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid

# ../shared/bench from the main checkout (--harness elsewhere, e.g. from a worktree)
HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                       "bench")
TCK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = [int(x) for x in out.split()]
    return [pid] + [p for k in kids for p in tree(k)]


def cpu(pid: int) -> tuple[float, float]:
    """(user, system) seconds of the process tree."""
    user = system = 0.0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / TCK
        system += int(fields[12]) / TCK
    return user, system


async def ping_pong(url: str, n: int, size: int, warmup: int = 200) -> tuple[float, list]:
    from rawamqp import build_publish, connect
    queue = "bench.lone." + uuid.uuid4().hex[:8]
    pub, sub = await connect(url), await connect(url)
    pch, sch = await pub.channel(), await sub.channel()
    await pch.queue_declare(queue)
    loop = asyncio.get_running_loop()
    waiting = None
    sch.want_ts = True

    def on_message(tag, ts, now, length):
        if waiting is not None and not waiting.done():
            waiting.set_result((tag, now))
    sch.on_message = on_message
    await sch.consume(queue, no_ack=False)
    prefix, suffix = build_publish(pch.number, "", queue, size, pub.frame_max, None, True)
    write = pub.transport.write
    lat = []
    start = 0.0
    for i in range(warmup + n):
        if i == warmup:
            start = time.perf_counter()
        sent = time.monotonic_ns()
        waiting = loop.create_future()
        write(prefix + sent.to_bytes(8, "big") + suffix)
        tag, received = await waiting
        sch.ack(tag)
        if i >= warmup:
            lat.append(received - sent)
    elapsed = time.perf_counter() - start
    await pch.queue_delete(queue)
    await pub.close()
    await sub.close()
    return elapsed, sorted(lat)


def loop_wakeups(pid: int) -> dict[int, int]:
    """Voluntary context switches of each process's main thread (its event loop), by pid:
    each is a wake-up of that process (bench/RESULTS.md, "The split layouts")."""
    out = {}
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                out[p] = int(next(line for line in f
                                  if line.startswith("voluntary_ctxt_switches")).split()[1])
        except (OSError, StopIteration):
            pass
    return out


def thread_wakeups(pid: int) -> int:
    """Voluntary context switches of the tree's threads other than each process's main one."""
    total = 0
    for p in tree(pid):
        try:
            tids = [t for t in os.listdir(f"/proc/{p}/task") if t != str(p)]
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/status") as f:
                    total += int(next(line for line in f
                                      if line.startswith("voluntary_ctxt_switches")).split()[1])
            except (OSError, StopIteration):
                pass
    return total


async def grow_heap(url: str, mib: int) -> None:
    """``mib`` MiB of 64 KiB bodies into a scratch queue with no consumer, then deleted."""
    from rawamqp import build_publish, connect
    queue = "bench.lone.grow." + uuid.uuid4().hex[:8]
    conn = await connect(url)
    ch = await conn.channel()
    await ch.queue_declare(queue)
    prefix, suffix = build_publish(ch.number, "", queue, 65536, conn.frame_max, None, True)
    message = prefix + bytes(8) + suffix
    for _ in range(mib * 16):
        conn.write(message)
        await conn.wait_writable()
    await ch.queue_declare(queue, passive=True)     # after the publishes on this connection
    await ch.queue_delete(queue)
    await conn.close()


def strace_counts(pid: int, run) -> dict:
    """Syscall counts of the broker tree while ``run()`` runs."""
    out = f"/tmp/lone_message_strace.{os.getpid()}"
    args = ["strace", "-c", "-f", "-o", out]
    for p in tree(pid):
        args += ["-p", str(p)]
    tracer = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    time.sleep(1.0)                         # attached
    try:
        run()
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
    counts = {}
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if m and m.group(2) != "total":
                counts[m.group(2)] = int(m.group(1))
    os.unlink(out)
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", action="append", required=True)
    p.add_argument("--broker-pid", action="append", type=int, required=True)
    p.add_argument("--round-trips", type=int, default=10_000)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--strace", action="store_true", help="count syscalls (one more round each)")
    p.add_argument("--harness", default=HARNESS, help="the shared harness's directory (rawamqp)")
    p.add_argument("--grow-heap", type=int, default=0, metavar="MIB",
                   help="grow the broker's heap before each round (MiB of 64 KiB bodies)")
    args = p.parse_args()
    if len(args.url) != len(args.broker_pid):
        raise SystemExit("one --broker-pid per --url")
    sys.path.insert(0, os.path.abspath(args.harness))
    n = args.round_trips
    rows = {u: [] for u in args.url}
    for _ in range(args.rounds):
        for url, pid in zip(args.url, args.broker_pid):
            if args.grow_heap:
                asyncio.run(grow_heap(url, args.grow_heap))
            u0, s0 = cpu(pid)
            w0 = thread_wakeups(pid)
            l0 = loop_wakeups(pid)
            elapsed, lat = asyncio.run(ping_pong(url, n, args.size))
            u1, s1 = cpu(pid)
            w1 = thread_wakeups(pid)
            l1 = loop_wakeups(pid)
            loops = sorted(((l1[p] - l0[p]) / n for p in l1 if p in l0), reverse=True)
            pct = {q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000
                   for q in (0.5, 0.99, 0.999)}
            rows[url].append((n / elapsed, pct, (u1 - u0) / n * 1e6, (s1 - s0) / n * 1e6,
                              (w1 - w0) / n, loops))
    for url, pid in zip(args.url, args.broker_pid):
        r = rows[url]
        med = lambda f: statistics.median(f(x) for x in r)     # noqa: E731
        print(f"{url}  size {args.size}, {args.rounds} x {n} round trips, medians:")
        print(f"  round trips/s {med(lambda x: x[0]):,.0f}"
              f"  p50 {med(lambda x: x[1][0.5]):.0f} µs  p99 {med(lambda x: x[1][0.99]):.0f} µs"
              f"  p99.9 {med(lambda x: x[1][0.999]):.0f} µs")
        print(f"  broker CPU per round trip: user {med(lambda x: x[2]):.1f} µs, "
              f"system {med(lambda x: x[3]):.1f} µs "
              f"(per round: {', '.join(f'{x[2] + x[3]:.0f}' for x in r)})")
        print(f"  wake-ups of the broker's other threads per round trip: "
              f"{med(lambda x: x[4]):.3f} (per round: {', '.join(f'{x[4]:.3f}' for x in r)})")
        print("  wake-ups of each process's loop per round trip (per round, the busiest first): "
              + "; ".join(", ".join(f"{w:.2f}" for w in x[5] if w >= 0.01) for x in r))
        if args.strace:
            counts = strace_counts(pid, lambda: asyncio.run(ping_pong(url, n, args.size)))
            per = sorted(((c / n, name) for name, c in counts.items()), reverse=True)
            print("  syscalls per round trip: " + ", ".join(
                f"{name} {c:.2f}" for c, name in per if c >= 0.01))


if __name__ == "__main__":
    main()
