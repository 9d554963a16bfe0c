"""The split's own code per message, in one process: a front-end and a host joined by a ring
link, against the same two joined by the in-process link (``--workers 0``).

Both halves of the broker run on one event loop without sockets (``testing/inprocess.py``'s
``Peer`` feeds a ``Session`` and collects what it writes): the metadata owner as front-end,
its ``PartitionClient`` and a ``PartitionHost``, joined either by ``LocalLink`` (``local``,
the message objects handed over, as one process does) or by a pair of ``RingEndpoint`` on
two unnamed rings (``ring``, what ``--workers 1`` runs: the contract's codec, the rings, the
eventfds, a loop turn per hop). The difference is what the split's code costs per message,
without what two processes cost (context switches, cold caches, the other core's lines):

* ``pubsub``: a consumer with prefetch 500 on a second connection, one multiple ack for
  everything delivered after each 64 KiB read of publishes (the shape of pubsub_e2e);
* ``publish``: no consumer; ``confirm``: confirm.select, no consumer.

Prints one JSON line: CPU µs per message (``time.process_time``) and, with ``--calls``, the
calls per 1,000 messages of the link's, the client's and the host's functions (``sys.
setprofile``: slows the run, counts only). For instructions, run it under callgrind with N
and 0 messages and divide the difference by N::

    PY=$(python -c 'import sys; print(sys.executable)')
    for mode in local ring; do for n in 0 20000; do PYTHONPATH=. valgrind --tool=callgrind \
        --callgrind-out-file=/dev/null $PY bench/split_cycle_cpu.py $mode pubsub $n 16 2>&1 \
        | grep Collected; done; done
"""
from __future__ import annotations

import asyncio
import collections
import functools
import json
import sys
import tempfile
import time

from pamqp import commands as C, frame as pframe
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from amqpbroker import contract as c
from amqpbroker.cli import tune_gc
from amqpbroker.config import Config
from amqpbroker.frontend.listener import AMQPServer
from amqpbroker.frontend.partition_client import PartitionClient
from amqpbroker.links import ring
from amqpbroker.links.local import LocalLink
from amqpbroker.supervisor.owner import MetadataOwner
from amqpbroker.testing.inprocess import Peer, turns
from amqpbroker.worker.host import PartitionHost

DELIVER = b"\x00\x3c\x00\x3c"
READ = 65536


def marshal(ch, x):
    return pframe.marshal(x, ch)


def build(mode: str, data_dir: str):
    """The owner (the front-end), its client and a host, joined as ``mode`` says; run inside
    the loop (a ring endpoint takes the running loop)."""
    loop = asyncio.get_running_loop()
    config = Config(data_dir=data_dir)
    owner = MetadataOwner(config, loop)
    client = PartitionClient.of(owner, 0)
    host = PartitionHost(config, loop)
    endpoints = []
    if mode == "local":
        LocalLink(host, client)
    else:
        front, worker = ring.make_link()
        state = None

        def on_batch(batch):
            host.handle(state, batch)
        worker_end = ring.attach(worker, on_batch)
        state = host.attach(worker_end)
        front_end = ring.attach(front, functools.partial(owner.handle_events, client),
                                yield_after=c.Reply, lend_runs=True)   # as frontend/main.py
        client.connect(front_end)
        endpoints = [worker_end, front_end]
    owner.start([client])
    return owner, host, endpoints


async def run(mode: str, scenario: str, n: int, size: int, calls: bool) -> dict:
    hello = (b"AMQP\x00\x00\x09\x01"
             + marshal(0, C.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"))
             + marshal(0, C.Connection.TuneOk(channel_max=8, frame_max=131072, heartbeat=0))
             + marshal(0, C.Connection.Open(virtual_host="/")) + marshal(1, C.Channel.Open()))
    setup = hello + marshal(1, C.Queue.Declare(queue="bench"))
    if scenario == "confirm":
        setup += marshal(1, C.Confirm.Select())
    consume = hello + marshal(1, C.Basic.Qos(prefetch_count=500)) \
        + marshal(1, C.Basic.Consume(queue="bench"))
    one = (marshal(1, C.Basic.Publish(exchange="", routing_key="bench"))
           + marshal(1, ContentHeader(0, size)) + marshal(1, ContentBody(b"x" * size)))
    data = one * n
    with tempfile.TemporaryDirectory() as d:
        owner, host, endpoints = build(mode, d)
        server = AMQPServer(owner)
        peer = Peer(server)
        peer.send(setup)
        await turns([peer], 30, 5000)
        consumer = None
        peers = [peer]
        if scenario == "pubsub":
            consumer = Peer(server)
            consumer.send(consume)
            peers.append(consumer)
            await turns(peers, 30, 5000)
            consumer.take()
        peer.take()
        tune_gc()                                     # the collector as the broker sets it up
        delivered = 0

        def take_deliveries() -> int:
            nonlocal delivered
            if consumer is None:
                return 0
            got = consumer.transport.out.count(DELIVER)
            consumer.transport.out.clear()
            if got:
                delivered += got
                consumer.send(marshal(1, C.Basic.Ack(delivery_tag=delivered, multiple=True)))
            return got

        counts: collections.Counter = collections.Counter()

        def profile(frame, event, arg):
            if event == "call":
                co = frame.f_code
                f = co.co_filename
                if "/amqpbroker/" in f or "/shm/" in f:
                    counts[f"{f.rsplit('/', 2)[-2]}/{f.rsplit('/', 1)[-1]}:{co.co_name}"] += 1
            elif event == "c_call" and getattr(arg, "__module__", None) in (
                    "shm._ring", "amqpbroker.storage._record", "amqpbroker.protocol._fastpath"):
                counts[f"C {arg.__module__}.{arg.__name__}"] += 1

        start = time.process_time()
        if calls:
            sys.setprofile(profile)
        for i in range(0, len(data), READ):
            peer.send(data[i:i + READ])
            await turns(peers, 2, 50)
            take_deliveries()
            peer.transport.out.clear()
        while True:
            await turns(peers, 3, 200)
            peer.transport.out.clear()
            if not take_deliveries():
                if consumer is None or delivered >= n:
                    break
        await turns(peers, 3, 200)
        sys.setprofile(None)
        spent = time.process_time() - start
        for p in peers:
            p.close()
        await turns(peers, 5, 50)
        for e in endpoints:             # a closed link sends nothing: the host closes here
            e.close()
        owner.close()                   # the in-process link hands the host its Close
        if endpoints:
            host.close()
        if consumer is not None and delivered != n:
            raise SystemExit(f"{delivered} delivered, {n} expected")
    out = {"mode": mode, "scenario": scenario, "size": size, "n": n,
           "us": spent / max(n, 1) * 1e6, "delivered": delivered}
    if calls:
        out["calls_per_1000"] = {k: round(v * 1000 / max(n, 1), 1)
                                 for k, v in counts.most_common(60)}
    return out


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    mode = args[0] if args else "ring"
    scenario = args[1] if len(args) > 1 else "pubsub"
    n = int(args[2]) if len(args) > 2 else 20000
    size = int(args[3]) if len(args) > 3 else 16
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    out = loop.run_until_complete(run(mode, scenario, n, size, "--calls" in sys.argv))
    loop.close()
    print(json.dumps(out, indent=1 if "--calls" in sys.argv else None))


if __name__ == "__main__":
    main()
