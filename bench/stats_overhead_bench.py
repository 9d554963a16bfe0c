"""CPU per message of the broker with statistics on (``--collect-statistics fine``) and off
(``none``), measured in one process without sockets or clients, so that the load of a shared
machine disturbs it as little as possible.

Each round builds a whole one-process broker (``amqpbroker.testing.inprocess``: session,
channel, routing, partition client and host through the contract's codec, the queue's log on
disk), opens a connection, declares a non-durable queue, then feeds it ``--messages``
pre-encoded ``basic.publish`` frames (16-byte bodies) in 64 KiB reads and turns the loop until
everything is stored; with ``--consume`` a no-ack consumer takes every message too. The CPU
time (``time.process_time``) of feeding and settling, divided by the messages, is one sample;
rounds alternate on, off, on, off, ... and the medians are compared::

    python bench/stats_overhead_bench.py --messages 50000 --rounds 7
    python bench/stats_overhead_bench.py --messages 50000 --rounds 7 --consume
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time

from pamqp import commands as C
from pamqp import frame as pframe
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

sys.path.insert(0, ".")
from amqpbroker.testing.inprocess import InProcessBroker  # noqa: E402

HANDSHAKE = (b"AMQP\x00\x00\x09\x01"
             + pframe.marshal(C.Connection.StartOk(mechanism="PLAIN",
                                                   response="\0guest\0guest"), 0)
             + pframe.marshal(C.Connection.TuneOk(channel_max=8, frame_max=131072,
                                                  heartbeat=0), 0)
             + pframe.marshal(C.Connection.Open(virtual_host="/"), 0)
             + pframe.marshal(C.Channel.Open(), 1)
             + pframe.marshal(C.Queue.Declare(queue="bench"), 1))
CONSUME = pframe.marshal(C.Basic.Consume(queue="bench", no_ack=True), 1)


def publishes(n: int, size: int) -> bytes:
    body = b"x" * size
    one = (pframe.marshal(C.Basic.Publish(exchange="", routing_key="bench"), 1)
           + pframe.marshal(ContentHeader(0, size), 1)
           + pframe.marshal(ContentBody(body), 1))
    return one * n


def one_round(mode: str, data: bytes, n: int, consume: bool) -> float:
    with tempfile.TemporaryDirectory() as d:
        broker = InProcessBroker(d, collect_statistics=mode)
        peer = broker.connect()
        peer.send(HANDSHAKE + (CONSUME if consume else b""))
        broker.settle([peer])
        peer.take()
        gc.collect()
        start = time.process_time()
        for i in range(0, len(data), 65536):
            peer.send(data[i:i + 65536])
            broker.settle([peer], quiet_turns=1, max_turns=4)
            peer.transport.out.clear()
        broker.settle([peer])
        spent = time.process_time() - start
        broker.close()
    return spent / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=50000)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--consume", action="store_true")
    args = ap.parse_args()
    data = publishes(args.messages, args.size)
    samples = {"fine": [], "none": []}
    for r in range(args.rounds):
        for mode in ("fine", "none") if r % 2 == 0 else ("none", "fine"):
            samples[mode].append(one_round(mode, data, args.messages, args.consume))
            print(f"round {r} {mode}: {samples[mode][-1]:.2f} µs/msg", file=sys.stderr)
    on, off = statistics.median(samples["fine"]), statistics.median(samples["none"])
    what = "publish + no-ack consume" if args.consume else "publish"
    print(f"| {what}, {args.size} B | {off:.2f} | {on:.2f} | {(on / off - 1) * 100:+.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
