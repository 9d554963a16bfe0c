"""Broker CPU per message on the hot path, in one process without sockets, for checkouts
compared in alternation (so the load of a shared machine hits them alike).

For each round, scenario and checkout, a child process (the checkout first on PYTHONPATH)
builds a one-process broker (``amqpbroker.testing.inprocess``, its ``LocalLink`` passing
message objects as ``--workers 0`` does, not through the codec), opens a connection, declares
a non-durable queue and feeds it ``--messages`` pre-encoded publishes in 64 KiB reads,
turning the loop between reads. Scenarios: ``publish`` (no consumer), ``confirm``
(confirm.select), ``pubsub`` (a consumer on a second connection, prefetch 500, one multiple
ack after each turn for everything delivered so far), ``fanout`` (a fanout exchange to 4
queues, a no-ack consumer on each, on a second connection). The garbage collector is set up as ``cli.py`` does. The CPU time (``time.process_time``) of feeding and settling divided by the messages
published is one sample; the table gives medians::

    python bench/hotpath_cpu_bench.py --checkout before=/path/to/main --checkout after=. \
        [--messages 50000] [--size 16] [--rounds 5] [--scenario publish,confirm,pubsub,fanout]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r'''
import json, sys, tempfile, time
from pamqp import commands as C, frame as pframe
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
import amqpbroker.testing.inprocess as ip
from amqpbroker.cli import tune_gc
_link = ip.LocalLink
ip.LocalLink = lambda host, client, codec: _link(host, client, codec=False)   # as --workers 0

scenario, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = lambda ch, x: pframe.marshal(x, ch)
hello = (b"AMQP\x00\x00\x09\x01"
         + m(0, C.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"))
         + m(0, C.Connection.TuneOk(channel_max=8, frame_max=131072, heartbeat=0))
         + m(0, C.Connection.Open(virtual_host="/")) + m(1, C.Channel.Open()))
setup, consume = hello, hello                  # the publisher's connection, the consumer's
exchange, key = "", "bench"
if scenario == "fanout":
    exchange, key = "fan", ""
    setup += m(1, C.Exchange.Declare(exchange="fan", exchange_type="fanout"))
    for i in range(4):
        setup += m(1, C.Queue.Declare(queue=f"q{i}")) + m(1, C.Queue.Bind(queue=f"q{i}", exchange="fan"))
        consume += m(1, C.Basic.Consume(queue=f"q{i}", no_ack=True))
else:
    setup += m(1, C.Queue.Declare(queue="bench"))
if scenario == "confirm":
    setup += m(1, C.Confirm.Select())
if scenario == "pubsub":
    consume += m(1, C.Basic.Qos(prefetch_count=500)) + m(1, C.Basic.Consume(queue="bench"))
one = (m(1, C.Basic.Publish(exchange=exchange, routing_key=key)) + m(1, ContentHeader(0, size))
       + m(1, ContentBody(b"x" * size)))
data = one * n
DELIVER = b"\x00\x3c\x00\x3c"
with tempfile.TemporaryDirectory() as d:
    broker = ip.InProcessBroker(d)
    peer = broker.connect()
    peer.send(setup)
    broker.settle([peer])
    consumer = broker.connect()
    consumer.send(consume)
    broker.settle([peer, consumer])
    peer.take()
    consumer.take()
    tune_gc()                                     # the collector as the broker sets it up
    delivered = 0

    def take_deliveries():
        global delivered
        got = consumer.transport.out.count(DELIVER)
        consumer.transport.out.clear()
        if got and scenario == "pubsub":
            delivered += got
            consumer.send(m(1, C.Basic.Ack(delivery_tag=delivered, multiple=True)))
        else:
            delivered += got
        return got

    start = time.process_time()
    for i in range(0, len(data), 65536):
        peer.send(data[i:i + 65536])
        broker.settle([peer, consumer], quiet_turns=1, max_turns=4)
        take_deliveries()
        peer.transport.out.clear()
    while True:
        broker.settle([peer, consumer], quiet_turns=3)
        peer.transport.out.clear()
        if not take_deliveries():
            break
    spent = time.process_time() - start
    broker.close()
    expected = n * 4 if scenario == "fanout" else n if scenario == "pubsub" else 0
    if delivered != expected:
        raise SystemExit(f"{scenario}: {delivered} delivered, {expected} expected")
print(json.dumps({"us": spent / n * 1e6, "delivered": delivered}))
'''


def sample(path: str, scenario: str, n: int, size: int) -> float:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
    out = subprocess.run([sys.executable, "-c", CHILD, scenario, str(n), str(size)], env=env,
                         cwd=os.path.abspath(path), check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["us"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkout", action="append", required=True, help="label=path")
    p.add_argument("--messages", type=int, default=50000)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--scenario", default="publish,confirm,pubsub,fanout")
    args = p.parse_args()
    checkouts = [c.split("=", 1) for c in args.checkout]
    scenarios = args.scenario.split(",")
    got: dict = {}
    for r in range(args.rounds):
        order = checkouts if r % 2 == 0 else checkouts[::-1]
        for sc in scenarios:
            for label, path in order:
                us = sample(path, sc, args.messages, args.size)
                got.setdefault((sc, label), []).append(us)
                print(f"round {r} {sc} {label}: {us:.2f} µs/msg", file=sys.stderr)
    labels = [lbl for lbl, _ in checkouts]
    print(f"| scenario ({args.size} B, µs CPU per message published) | "
          + " | ".join(labels) + " | change |")
    print("|---|" + "---:|" * (len(labels) + 1))
    for sc in scenarios:
        meds = [statistics.median(got[(sc, lbl)]) for lbl in labels]
        change = f"{(meds[-1] / meds[0] - 1) * 100:+.0f} %" if len(meds) > 1 else ""
        print(f"| {sc} | " + " | ".join(f"{v:.2f}" for v in meds) + f" | {change} |")


if __name__ == "__main__":
    main()
