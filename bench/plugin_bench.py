"""What ``mqtt_bench.py`` and ``stomp_bench.py`` share: the targets (``label=host:port[:pid]``,
interleaved run by run), the runs, the broker CPU per message (its process group, from /proc,
``many_durable_queues.tree_cpu``), and the markdown table of medians with the first target's
ratio to each of the others."""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys

from many_durable_queues import tree_cpu


def main(doc: str, mode_name: str, modes: str, run_once, parse_mode=str) -> None:
    """``run_once(host, port, mode, size, count, window)`` -> messages per second."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--target", action="append", required=True,
                    help="label=host:port[:pid] (repeatable; interleaved)")
    ap.add_argument(f"--{mode_name.lower()}", dest="modes", default=modes)
    ap.add_argument("--size", default="16,1024")
    ap.add_argument("--count", type=int, default=50_000)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    targets = []
    for t in args.target:
        label, rest = t.split("=", 1)
        parts = rest.split(":")
        targets.append((label, parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else 0))
    modes_, sizes = [parse_mode(x) for x in args.modes.split(",")], \
        [int(x) for x in args.size.split(",")]
    results: dict = {}
    for mode in modes_:
        for size in sizes:
            for r in range(args.repeat):
                for label, host, port, pid in targets:
                    cpu0 = tree_cpu(pid) if pid else 0.0
                    rate = asyncio.run(run_once(host, port, mode, size, args.count, args.window))
                    cpu = (tree_cpu(pid) - cpu0) / args.count * 1e6 if pid else float("nan")
                    results.setdefault((mode, size, label), []).append((rate, cpu))
                    print(f"[{r + 1}/{args.repeat}] {label} {mode_name}={mode} size={size}: "
                          f"{rate:,.0f} msg/s, broker {cpu:.1f} µs/msg", file=sys.stderr)
    labels = [t[0] for t in targets]
    others = labels[1:]
    print(f"| {mode_name} | size B | " + " | ".join(f"{lb} msg/s | {lb} µs/msg" for lb in labels)
          + "".join(f" | {labels[0]}/{lb}" for lb in others) + " |")
    print("|---|---:|" + "---:|---:|" * len(labels) + "---:|" * len(others))
    for mode in modes_:
        for size in sizes:
            row, rates = [f"{mode}", f"{size}"], []
            for lb in labels:
                runs = results[(mode, size, lb)]
                rates.append(statistics.median(x[0] for x in runs))
                row += [f"{rates[-1]:,.0f}", f"{statistics.median(x[1] for x in runs):.1f}"]
            row += [f"{rates[0] / rate:.2f}" for rate in rates[1:]]
            print("| " + " | ".join(row) + " |")
