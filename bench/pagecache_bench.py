"""CPU of writing 64 KiB records into the page cache: fresh pages, or the file's own older
pages dropped after each fdatasync (what storage/log.py does past PAGE_CACHE_KEEP).

Each round is one ``writev`` of ``--per-round`` 64 KiB bodies and an ``fdatasync``, as a
commit round of a durable queue with no consumer; "drop" then advises POSIX_FADV_DONTNEED on
the fsynced range older than ``--keep-mib``. Reported: the writing thread's CPU per body
(``thread_time`` around the ``writev`` only), modes alternating, medians.

    python bench/pagecache_bench.py --rounds 128 --repeat 4
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def run(path: str, drop: bool, rounds: int, per: int, keep: int) -> float:
    bodies = [bytes([i % 256]) * 65536 for i in range(per)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
    cpu, pos, size = 0.0, 0, per * 65536
    try:
        for _ in range(rounds):
            t = time.thread_time()
            os.writev(fd, bodies)
            cpu += time.thread_time() - t
            os.fdatasync(fd)
            pos += size
            if drop and pos - size >= keep:
                os.posix_fadvise(fd, pos - size - keep, size, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
        os.unlink(path)
    return cpu / (rounds * per) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=128)
    ap.add_argument("--per-round", type=int, default=128, help="64 KiB bodies per round")
    ap.add_argument("--keep-mib", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--dir", default=None, help="where the file goes (default: tmp)")
    args = ap.parse_args()
    got = {False: [], True: []}
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        for _ in range(args.repeat):
            for drop in (False, True):
                got[drop].append(run(os.path.join(d, "log"), drop, args.rounds,
                                     args.per_round, args.keep_mib << 20))
    for drop in (False, True):
        vals = got[drop]
        print(f"{'drop' if drop else 'keep'}: {statistics.median(vals):.1f} µs of CPU per "
              f"64 KiB written ({', '.join(f'{v:.1f}' for v in vals)})")


if __name__ == "__main__":
    main()
