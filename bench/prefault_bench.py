"""CPU per 64 KiB body held in memory, with and without amqpbroker/prefault.py's thread.

What a queue with no consumer does to the heap, without the network: a loop copies bodies
out of a reused read buffer into new ``bytes`` and keeps them, at a steady rate (bursts of
``--batch`` bodies, a short sleep between them, as a loop that waits for the socket). Each
mode runs in a fresh interpreter (glibc's parameters are per process); reported per body: the
main thread's CPU and minor faults (RUSAGE_THREAD), the whole process's CPU (RUSAGE_SELF:
the prefault thread included). Rounds alternate the modes; medians.

    python bench/prefault_bench.py --mib 512 --rounds 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
mode, mib, batch, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if mode == "on":
    from amqpbroker.prefault import HeapPrefaulter
    HeapPrefaulter().start()
buf = bytearray(b"r" * (4 * body))
view = memoryview(buf)
keep = []
n = (mib << 20) // body
t0 = resource.getrusage(resource.RUSAGE_THREAD)
s0 = resource.getrusage(resource.RUSAGE_SELF)
for i in range(n):
    keep.append(bytes(view[body:2 * body]))
    if i % batch == batch - 1:
        time.sleep(0.001)
t1 = resource.getrusage(resource.RUSAGE_THREAD)
s1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = lambda a, b: (b.ru_utime + b.ru_stime) - (a.ru_utime + a.ru_stime)
print(json.dumps({"main_us": cpu(t0, t1) / n * 1e6, "process_us": cpu(s0, s1) / n * 1e6,
                  "main_faults": (t1.ru_minflt - t0.ru_minflt) / n}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=512, help="MiB of bodies held per run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64, help="bodies between two 1 ms sleeps")
    ap.add_argument("--body", type=int, default=65536)
    args = ap.parse_args()
    got = {"off": [], "on": []}
    for _ in range(args.rounds):
        for mode in ("off", "on"):
            out = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.mib),
                                  str(args.batch), str(args.body)],
                                 capture_output=True, text=True, check=True)
            got[mode].append(json.loads(out.stdout))
    print(f"{args.mib} MiB of {args.body} B bodies, {args.rounds} rounds, medians (all runs)")
    print("| prefault | main thread µs/body | process µs/body | main-thread faults/body |")
    print("|---|---:|---:|---:|")
    for mode in ("off", "on"):
        rs = got[mode]
        cols = []
        for key, fmt in (("main_us", "{:.1f}"), ("process_us", "{:.1f}"), ("main_faults", "{:.2f}")):
            vals = [r[key] for r in rs]
            cols.append(fmt.format(statistics.median(vals)) + " (" +
                        ", ".join(fmt.format(v) for v in vals) + ")")
        print(f"| {mode} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
