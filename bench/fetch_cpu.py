"""Replication's fetch, in one process (issue 12 "Speed"): the CPU a leader spends answering
a follower's fetch and the follower spends taking the answer, per message, without the
sockets, loops and fsyncs around them.

    python bench/fetch_cpu.py [--messages 20000] [--size 16,1024,65536] [--batch 1,64]
        [--repeat 5] [--checkout DIR ...]

A leader's log gets ``--messages`` records of ``--size`` bytes in batches of ``--batch``
(a lone confirm's batch is one record; under load one commit round's batch is many); then,
timed with ``time.process_time``: the leader's side, ``read_batches`` in fetches of up to
``FETCH_BYTES`` and each ``FetchReply`` built as ``Leader._answer`` builds it and encoded by
the contract's codec; and the follower's side, each reply decoded and its batches appended
to a fresh log as ``Follower._apply`` appends them (no fsync: ``fsync="never"``). Prints µs
per message of each side, the best of ``--repeat``.

``--checkout DIR`` runs the same in a child process importing ``DIR``'s amqpbroker (built
in place: ``python setup.py build_ext --inplace``), for a before/after of two commits in
one run; the fetch's shape is taken from what ``read_batches`` returns there (decoded
``Record`` lists before the fetch carried the log's bytes, ``RecordRun``s after, and
later each with its batch's CRC, which the follower checks).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


def measure(messages: int, size: int, batch: int, repeat: int) -> dict:
    from amqpbroker import contract as c
    from amqpbroker.cluster.replication import FETCH_BYTES
    from amqpbroker.storage import PartitionLog, Record

    tmp = tempfile.mkdtemp(prefix="fetchcpu")
    try:
        leader = PartitionLog(os.path.join(tmp, "leader"), fsync="never")
        body = b"x" * size
        for i in range(0, messages, batch):
            leader.append([Record(1_700_000_000_000 + i, "", "q", b"\x10\x00\x02", body, 1)
                           for _ in range(min(batch, messages - i))], 1)
        best_lead = best_follow = None
        for r in range(repeat):
            t0 = time.process_time()
            replies, offset = [], 0
            while offset < leader.end_offset:
                batches = leader.read_batches(offset, FETCH_BYTES, written=True)
                if batches and len(batches[0]) == 4:        # the log's bytes and the CRC
                    batches = [(b, e, run.count, run.data, crc) for b, e, run, crc in batches]
                elif batches and not isinstance(batches[0][2], list):   # the bytes (483e247)
                    batches = [(b, e, run.count, run.data) for b, e, run in batches]
                replies.append(c.encode_bytes(c.FetchReply(
                    req=1, hw=offset, leader_epoch=1, log_start=0, log_end=leader.end_offset,
                    error="", batches=batches, acks=(offset, []), offsets=None,
                    diverging_epoch=0, diverging_end=0,
                    **{f: None for f in ("counts", "producers")
                       if f in c.FetchReply._fields})))
                last = batches[-1]
                offset = last[0] + (last[2] if type(last[2]) is int else len(last[2]))
            t1 = time.process_time()
            follower = PartitionLog(os.path.join(tmp, f"f{r}"), fsync="never")
            for data in replies:
                reply = c.decode(data)
                for got in reply.batches:
                    if len(got) == 5:
                        follower.append_raw([(got[3], got[2])], got[1], got[4])
                    elif len(got) == 4:
                        follower.append_raw([(got[3], got[2])], got[1])
                    else:
                        follower.append(got[2], got[1])
            t2 = time.process_time()
            assert follower.end_offset == messages
            follower.close()
            shutil.rmtree(os.path.join(tmp, f"f{r}"))
            lead, follow = (t1 - t0) / messages * 1e6, (t2 - t1) / messages * 1e6
            best_lead = lead if best_lead is None else min(best_lead, lead)
            best_follow = follow if best_follow is None else min(best_follow, follow)
        leader.close()
        return {"leader": best_lead, "follower": best_follow}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--size", default="16,1024,65536")
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--checkout", action="append", default=[])
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    cases = [(s, b) for s in map(int, a.size.split(",")) for b in map(int, a.batch.split(","))]
    if a.json:
        import amqpbroker
        print(amqpbroker.__file__, file=sys.stderr)
        print(json.dumps([measure(min(a.messages, (64 << 20) // max(s, 64)), s, b, a.repeat)
                          for s, b in cases]))
        return
    checkouts = a.checkout or [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    print("| checkout | size B | records per batch | leader µs/msg | follower µs/msg |")
    print("|---|---:|---:|---:|---:|")
    for d in checkouts:
        out = subprocess.run([sys.executable, "-c",
                              "import sys, runpy; f, d = sys.argv[1:3]; "
                              "sys.path.insert(0, d); sys.argv = [f, *sys.argv[3:]]; "
                              "runpy.run_path(f, run_name='__main__')",
                              os.path.abspath(__file__), d, "--json", "--messages",
                              str(a.messages), "--size", a.size, "--batch", a.batch,
                              "--repeat", str(a.repeat)],
                             check=True, capture_output=True, text=True, cwd=d)
        assert out.stderr.startswith(os.path.abspath(d)), out.stderr    # that checkout's code
        for (s, b), got in zip(cases, json.loads(out.stdout)):
            print(f"| {d} | {s} | {b} | {got['leader']:.2f} | {got['follower']:.2f} |")


if __name__ == "__main__":
    main()
