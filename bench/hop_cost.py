"""What this machine charges for a hop between two processes: the price the split layouts pay
per wake-up, beside what one process pays for a system call.

    python bench/hop_cost.py [--round-trips 20000] [--json FILE]

Measures, in Python as the broker's processes run (``os`` calls, no event loop):

* ``syscall``: one ``os.getppid()`` less one call of a builtin that stays in the process
  (``abs``), per call: the kernel entry and exit the broker pays on every read and write;
* ``ping-pong``: two processes hand a token back and forth through two eventfds (the rings'
  wake-ups are eventfds, ``shm/ring.c``): each side blocks in ``read`` until the other
  ``write``s, so every hand-over is a sleep and a wake-up. Three placements: both processes
  pinned to one CPU (a hand-over is a context switch on that CPU), pinned to two CPUs (a
  hand-over wakes the other CPU, idle in between), and unpinned (the scheduler's choice).
  Per round trip (two hand-overs): wall time, and CPU time (user + system of both processes,
  ``os.times``), which is what the shared harness counts as broker CPU.

The split layouts' extra CPU per message is, to a first approximation, their extra wake-ups
per message times the CPU of a hand-over measured here (bench/RESULTS.md, "What a hop costs
on this machine").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def syscall_ns(n: int = 1_000_000) -> float:
    getppid = os.getppid
    t = time.perf_counter()
    for _ in range(n):
        getppid()
    sys_time = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(n):
        abs(1)
    base = time.perf_counter() - t
    return (sys_time - base) / n * 1e9


def ping_pong(round_trips: int, cpus: tuple[int, int] | None) -> dict:
    """Round trips through two eventfds between this process and a child; ``cpus`` pins
    (parent, child)."""
    to_child, to_parent = os.eventfd(0), os.eventfd(0)
    one = (1).to_bytes(8, sys.byteorder)
    pid = os.fork()
    if pid == 0:
        try:
            if cpus is not None:
                os.sched_setaffinity(0, {cpus[1]})
            read, write = os.read, os.write
            for _ in range(round_trips):
                read(to_child, 8)
                write(to_parent, one)
        finally:
            os._exit(0)
    if cpus is not None:
        os.sched_setaffinity(0, {cpus[0]})
    read, write = os.read, os.write
    before = os.times()
    t = time.perf_counter()
    for _ in range(round_trips):
        write(to_child, one)
        read(to_parent, 8)
    wall = time.perf_counter() - t
    os.waitpid(pid, 0)
    after = os.times()
    os.sched_setaffinity(0, range(os.cpu_count()))
    os.close(to_child)
    os.close(to_parent)
    cpu = ((after.user - before.user) + (after.system - before.system)
           + (after.children_user - before.children_user)
           + (after.children_system - before.children_system))
    return {"wall_us": wall / round_trips * 1e6, "cpu_us": cpu / round_trips * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--round-trips", type=int, default=20000)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    placements = {"one CPU": (0, 0), "two CPUs": (0, 1), "unpinned": None}
    if os.cpu_count() < 2:
        del placements["two CPUs"]
    out = {"cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
           "syscall_ns": round(syscall_ns(), 1), "ping_pong": {}}
    for name, cpus in placements.items():
        r = ping_pong(args.round_trips, cpus)
        out["ping_pong"][name] = {k: round(v, 2) for k, v in r.items()}
    print(f"{out['cpus']} CPUs, load average {out['load_average']:.2f}")
    print(f"a system call (os.getppid, over a builtin call): {out['syscall_ns']:.0f} ns")
    print("| eventfd ping-pong | wall µs per round trip | CPU µs per round trip (both) | "
          "CPU µs per hand-over |")
    print("|---|---:|---:|---:|")
    for name, r in out["ping_pong"].items():
        print(f"| {name} | {r['wall_us']:.1f} | {r['cpu_us']:.1f} | {r['cpu_us'] / 2:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
