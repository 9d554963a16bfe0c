"""PartitionLog append throughput per message size, fsync policy and commit style.

    python bench/storage_bench.py [--seconds 1.0] [--dir DIR] [--out bench/STORAGE_RESULTS.md]

For 16 B, 1 KiB and 64 KiB bodies it measures, each for about `--seconds`:
  * raw: a plain Python loop of os.write + os.fsync per message on the same disk (the
    machine's limit for one-fsync-per-message durability);
  * per message: append([msg]) then sync(), i.e. one batch and one sync per message;
  * group commit: 100 append([msg]) calls then one sync(), as the broker does with many
    publishers (and publisher confirms sent after the sync).
with each fsync policy ("always", "interval" at 1000 ms, "never"). The directory defaults to a
temporary directory under the current one (same disk as the repository), removed at the end.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from amqpbroker.storage import PartitionLog, Record  # noqa: E402

SIZES = [16, 1024, 65536]
POLICIES = ["always", "interval", "never"]
GROUP = 100


def raw_fsync_loop(directory: str, size: int, seconds: float) -> tuple[int, float]:
    path = os.path.join(directory, "raw.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    data = b"x" * size
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            os.write(fd, data)
            os.fsync(fd)
            n += 1
    finally:
        os.close(fd)
        os.unlink(path)
    return n, time.perf_counter() - t0


def log_loop(directory: str, size: int, policy: str, group: int, seconds: float) -> tuple[int, float]:
    log = PartitionLog(os.path.join(directory, f"p-{policy}-{size}-{group}"), fsync=policy)
    record = Record(int(time.time() * 1000), "amq.direct", "bench", b"\x10\x00\x02", b"x" * size, 1)
    batch = [record]
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            for _ in range(group):
                log.append(batch)
            log.sync()
            n += group
        elapsed = time.perf_counter() - t0
    finally:
        log.destroy()
    return n, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    parent = args.dir or os.getcwd()
    directory = tempfile.mkdtemp(prefix="storage-bench-", dir=parent)
    rows = []
    try:
        for size in SIZES:
            n, dt = raw_fsync_loop(directory, size, args.seconds)
            raw_rate = n / dt
            rows.append((size, "raw write+fsync per msg", "-", raw_rate, raw_rate * size / 1e6, 1.0))
            print(rows[-1], flush=True)
            for policy in POLICIES:
                for group, label in ((1, "per message: append+sync"), (GROUP, f"group commit: {GROUP} appends/sync")):
                    n, dt = log_loop(directory, size, policy, group, args.seconds)
                    rate = n / dt
                    rows.append((size, label, policy, rate, rate * size / 1e6, rate / raw_rate))
                    print(rows[-1], flush=True)
    finally:
        shutil.rmtree(directory)

    lines = ["| body | mode | fsync | msgs/s | MB/s (body) | x raw fsync/msg |",
             "|---:|---|---|---:|---:|---:|"]
    for size, label, policy, rate, mbs, ratio in rows:
        lines.append(f"| {size} B | {label} | {policy} | {rate:,.0f} | {mbs:,.1f} | {ratio:,.1f} |")
    table = "\n".join(lines)
    by = {(s, l.split(":")[0], p): r for s, l, p, r, _, _ in rows}
    per_msg = by[(1024, "per message", "always")]
    grouped = by[(1024, "group commit", "always")]
    summary = (f"1 KiB, fsync=always: group commit {grouped:,.0f} msgs/s vs one sync per message "
               f"{per_msg:,.0f} msgs/s = {grouped / per_msg:.1f}x "
               f"(raw write+fsync loop: {by[(1024, 'raw write+fsync per msg', '-')]:,.0f} msgs/s)")
    print(table)
    print(summary)
    if args.out:
        cmd = "python bench/storage_bench.py " + " ".join(sys.argv[1:])
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(f"# Storage benchmark\n\nCommand (from the repository root):\n\n    {cmd}\n\n"
                    f"Machine: {platform.platform()}, Python {platform.python_version()}, "
                    f"{os.cpu_count()} cores; files on the repository's disk; "
                    f"{args.seconds:g} s per cell; one record per batch.\n\n{table}\n\n"
                    f"**{summary}**\n")


if __name__ == "__main__":
    main()
