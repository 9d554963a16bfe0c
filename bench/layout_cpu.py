"""Broker CPU per message in each process layout, measured with the shared benchmark.

Starts this checkout's broker in each layout (``--workers 0``, ``--workers 1``, ``--workers 2
--frontends 2``; more with ``--layout``), runs ``../shared/bench``'s ``pubsub_e2e`` (raw client:
1 producer, 1 consumer, prefetch 500, multi-ack every 100) against it, and prints broker CPU
per delivered message over the whole process tree (supervisor, workers, front-ends), and its
ratio to one process: what the links between processes cost.

    python bench/layout_cpu.py --bench-python /tmp/bench-venv/bin/python \
        [--bench ../shared/bench/amqp_bench.py] [--seconds 5] [--repeat 3] [--size 16,1024]

Run it from another checkout (e.g. a ``git worktree`` of an older commit) to compare
commits: it benchmarks the ``amqpbroker`` that ``python`` imports from the current
directory.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.getcwd())
from amqpbroker.testing.broker import BrokerProcess  # noqa: E402

LAYOUTS = {"1 process": ["--workers", "0"], "--workers 1": ["--workers", "1"],
           "2 front-ends + 2 workers": ["--workers", "2", "--frontends", "2"]}


def run_bench(args, url: str, pid: int, size: int) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([args.bench_python, args.bench, "--url", url, "--broker-pid", str(pid),
                        "--scenario", "pubsub_e2e", "--size", str(size),
                        "--seconds", str(args.seconds), "--repeat", str(args.repeat),
                        "--json", out.name], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(out.name) as f:
            return json.load(f)["runs"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench-python", default="/tmp/bench-venv/bin/python")
    p.add_argument("--bench", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                   "shared", "bench", "amqp_bench.py"))
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size", default="16,1024")
    args = p.parse_args()
    rows = []
    for size in [int(s) for s in args.size.split(",")]:
        base = None
        for name, layout in LAYOUTS.items():
            with tempfile.TemporaryDirectory() as data:
                broker = BrokerProcess(data, *layout, "--log-level", "warning").start()
                try:
                    runs = run_bench(args, broker.url, broker.proc.pid, size)
                finally:
                    broker.stop()
            rate = statistics.median(r["value"] for r in runs)
            cpu_us = statistics.median(r["cpu"]["broker_pct"] / 100 * 1e6 / r["value"]
                                       for r in runs)
            base = base or cpu_us
            rows.append((size, name, rate, cpu_us, cpu_us / base))
    print("| size | layout | delivered msg/s | broker CPU µs/msg | vs 1 process |")
    print("|---:|---|---:|---:|---:|")
    for size, name, rate, cpu_us, ratio in rows:
        print(f"| {size} | {name} | {rate:,.0f} | {cpu_us:.1f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
