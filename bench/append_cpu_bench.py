"""CPU time per message of PartitionLog.append (fsync=never): encoding plus the write syscall.

    python bench/append_cpu_bench.py [--dir /tmp]

Best of 3 runs of ~200 MB each, for 1 KiB and 64 KiB bodies, 1 and several records per batch.
Measures the copies in record.encode_batch_parts / segment.append (bench/RESULTS.md, "Large
messages"); the disk is not synced, so this is CPU (page cache), not disk, throughput.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from amqpbroker.storage import PartitionLog, Record  # noqa: E402

CELLS = ((1024, 1), (1024, 64), (65536, 1), (65536, 16))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=None)
    ap.add_argument("--mbytes", type=int, default=200)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="append-cpu-", dir=args.dir)
    try:
        for size, batch in CELLS:
            best = None
            for rep in range(3):
                log = PartitionLog(os.path.join(d, f"p{size}-{batch}-{rep}"), fsync="never")
                recs = [Record(int(time.time() * 1000), "amq.direct", "bench", b"\x10\x00\x02",
                               os.urandom(size), 1) for _ in range(batch)]
                n = 0
                c0 = time.process_time()
                while n * size < args.mbytes * 1_000_000:
                    log.append(recs)
                    n += batch
                us = (time.process_time() - c0) / n * 1e6
                log.destroy()
                best = us if best is None else min(best, us)
            print(f"body {size:>6} B, {batch:>2} records/batch: {best:7.2f} us CPU/msg "
                  f"({size / best:,.0f} MB/s)", flush=True)
    finally:
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
