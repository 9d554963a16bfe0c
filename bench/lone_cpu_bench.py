"""A lone message's Python cost, in one process without sockets: latency_1's round trip
(publish on one connection, its delivery on another, the ack, the next publish) driven
through the sessions' ``get_buffer`` / ``buffer_updated`` as uvloop drives them, for
checkouts compared in alternation.

For each round and checkout, a child process (the checkout first on PYTHONPATH) builds a
one-process broker (``amqpbroker.testing.inprocess``, its ``LocalLink`` passing message
objects as ``--workers 0`` does), opens a publishing and a consuming connection (no prefetch,
manual acks, as the shared harness's ``pingpong``), and runs ``--round-trips`` lone round
trips, each one read of the publish and one read of the ack, checking that each delivery was
written within its publish's read. What it leaves out is the kernel's and uvloop's part
(the sockets, ``epoll_pwait``): what is left is the broker's Python per round trip, which
this measures as CPU time (``time.process_time``) or, under callgrind, as instructions::

    python bench/lone_cpu_bench.py --checkout before=/work/wt/cleanmain --checkout after=. \
        [--round-trips 20000] [--size 16] [--rounds 5]
    # instructions: the difference of two lengths, so the set-up cancels out
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/lone_cpu_bench.py \
        --child 2000 16   # and 4000

``--child N SIZE`` runs one child in this process (for callgrind or a profiler).
bench/RESULTS.md, "latency_1: a lone message's Python".
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r'''
import asyncio, json, struct, sys, tempfile, time
from pamqp import commands as C, frame as pframe
import amqpbroker.testing.inprocess as ip
from amqpbroker.cli import tune_gc
_link = ip.LocalLink
ip.LocalLink = lambda host, client, codec: _link(host, client, codec=False)   # as --workers 0

n, size = int(sys.argv[1]), int(sys.argv[2])
m = lambda ch, x: pframe.marshal(x, ch)
hello = (b"AMQP\x00\x00\x09\x01"
         + m(0, C.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"))
         + m(0, C.Connection.TuneOk(channel_max=8, frame_max=131072, heartbeat=0))
         + m(0, C.Connection.Open(virtual_host="/")) + m(1, C.Channel.Open()))
# the shared harness's publish (rawamqp.build_publish): no properties, a body of zeros
method = m(1, C.Basic.Publish(exchange="", routing_key="lone"))
header = b"\x02\x00\x01" + struct.pack(">IHHQH", 14, 60, 0, size, 0) + b"\xce"
one = method + header + b"\x03\x00\x01" + struct.pack(">I", size) + bytes(size) + b"\xce"
ACK = b"\x01\x00\x01\x00\x00\x00\x0d\x00\x3c\x00\x50"      # basic.ack, then tag + multiple
DELIVER = b"\x00\x3c\x00\x3c"


def feed(session, data):
    """What uvloop does on a readable socket: get_buffer, copy, buffer_updated."""
    view = session.get_buffer(65536)
    view[:len(data)] = data
    view.release()
    session.buffer_updated(len(data))


with tempfile.TemporaryDirectory() as d:
    broker = ip.InProcessBroker(d)
    pub = broker.connect()
    pub.send(hello + m(1, C.Queue.Declare(queue="lone")))
    sub = broker.connect()
    sub.send(hello + m(1, C.Basic.Consume(queue="lone")))
    broker.settle([pub, sub])
    pub.take()
    sub.take()
    tune_gc()                                     # the collector as the broker sets it up
    ps, ss = pub.session, sub.session
    out = sub.transport.out

    def run(count, first_tag):
        for tag in range(first_tag, first_tag + count):
            feed(ps, one)
            turns = 0
            while not out and turns < 10:      # credit came back through the loop
                broker.run(asyncio.sleep(0))
                turns += 1
            if out.count(DELIVER) != 1:
                raise SystemExit(f"round trip {tag}: {out.count(DELIVER)} deliveries written in its publish's read")
            out.clear()
            feed(ss, ACK + struct.pack(">QB", tag, 0) + b"\xce")

    run(500, 1)                                  # warm-up
    start = time.process_time()
    run(n, 501)
    spent = time.process_time() - start
    broker.settle([pub, sub], quiet_turns=3)
    if sub.session.channels[1].unacked:
        raise SystemExit("deliveries left unacked")
    broker.close()
print(json.dumps({"us": spent / n * 1e6}))
'''


def sample(path: str, n: int, size: int) -> float:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(size)], env=env,
                         cwd=os.path.abspath(path), capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{path}: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["us"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkout", action="append", help="label=path")
    p.add_argument("--round-trips", type=int, default=20000)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--child", nargs=2, type=int, metavar=("N", "SIZE"),
                   help="run one child here (callgrind, a profiler)")
    args = p.parse_args()
    if args.child:
        sys.argv = ["child", *map(str, args.child)]
        sys.path.insert(0, os.getcwd())
        exec(compile(CHILD, "lone_cpu_child", "exec"), {"__name__": "__main__"})
        return
    checkouts = [c.split("=", 1) for c in args.checkout or ["this=."]]
    got: dict = {}
    for r in range(args.rounds):
        for label, path in (checkouts if r % 2 == 0 else checkouts[::-1]):
            us = sample(path, args.round_trips, args.size)
            got.setdefault(label, []).append(us)
            print(f"round {r} {label}: {us:.2f} µs per round trip", file=sys.stderr)
    labels = [lbl for lbl, _ in checkouts]
    meds = [statistics.median(got[lbl]) for lbl in labels]
    print(f"| {args.size} B, µs CPU per lone round trip (median of {args.rounds}) | "
          + " | ".join(labels) + " | change |")
    print("|---|" + "---:|" * (len(labels) + 1))
    change = f"{(meds[-1] / meds[0] - 1) * 100:+.1f} %" if len(meds) > 1 else ""
    print("| | " + " | ".join(f"{v:.2f}" for v in meds) + f" | {change} |")


if __name__ == "__main__":
    main()
