"""CPU of telling front-end processes about leadership changes (``contract.Leaders``).

    python bench/cluster_leaders_bench.py [--queues 1000] [--changes 200] [--frontends 2]
                                          [--whole]

In one process, without sockets: a node's supervisor side (an in-process broker,
``MetadataOwner`` over a ``LocalLink`` host, with the cluster's ``Forwarder``) and its
front-ends' side (another in-process broker with a ``FrontendForwarder``), ``--queues``
durable queues declared on both. Which node leads each queue is a table of the bench's
(half of them another node's, so forwarded). Every message the supervisor sends a front-end
is encoded and decoded (the bytes the control channel carries) and handled by
``frontend/main.py``'s handler; the front-ends share one broker, each handled message is
applied to it (as many applies as front-ends). Then ``--changes`` leadership changes, one
queue at a time, each followed by the supervisor's pass (a node loss that moves leaders
one etcd event at a time): over the queues the event's key names (``queues_touched`` of the
partition key, as the etcd watch calls it), or with ``--whole`` over every queue (as every
event did before). Reports process CPU per change: the supervisor's pass and sends, and the
front-ends' decode and apply. Run it from a checkout's root to measure that checkout.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
import types

sys.path.insert(0, ".")
from amqpbroker import contract as c                            # noqa: E402
from amqpbroker.cluster.forward import queues_touched          # noqa: E402
from amqpbroker.cluster.placement import partition_key         # noqa: E402
from amqpbroker.config import Config                            # noqa: E402
from amqpbroker.frontend.main import Frontend                   # noqa: E402
from amqpbroker.frontend.partition_client import PartitionClient   # noqa: E402
from amqpbroker.links.local import LocalLink                    # noqa: E402
from amqpbroker.supervisor.owner import MetadataOwner           # noqa: E402
from amqpbroker.testing.forwarding import TableForwarder         # noqa: E402
from amqpbroker.worker.host import PartitionHost                # noqa: E402


class FakeFrontend:
    """A front-end as the supervisor sees it: its control channel's notices are encoded,
    decoded and handled by ``Frontend``'s handler on the front-ends' broker."""

    def __init__(self, index: int, receiver, clock: dict):
        self.index = index
        self.receiver = receiver
        self.control = self
        self.clock = clock

    def notify(self, msg) -> None:
        t = time.process_time()
        data = c.encode_bytes(msg)
        self.clock["bytes"] += len(data)
        m = c.decode(data)
        getattr(Frontend, m.HANDLER)(self.receiver, m)
        self.clock["frontends"] += time.process_time() - t


async def broker_with_queues(data_dir: str, names: list[str]) -> MetadataOwner:
    loop = asyncio.get_running_loop()
    config = Config(data_dir=data_dir)
    owner = MetadataOwner(config, loop)
    partition = PartitionClient.of(owner, 0)
    LocalLink(PartitionHost(config, loop), partition)
    owner.start([partition])
    vh = owner.vhosts["/"]
    for name in names:
        q = vh.declare_queue(name, owner=None, durable=True, arguments={})
        await q.opened
    return owner


async def run(args) -> None:
    names = [f"q{i}" for i in range(args.queues)]
    table = {name: ("n2" if i % 2 else "n1") for i, name in enumerate(names)}
    listener = socket.create_server(("127.0.0.1", 0))       # dialled, never answers
    port = listener.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="bench-leaders-") as tmp:
        sup = await broker_with_queues(os.path.join(tmp, "sup"), names)
        fe_broker = await broker_with_queues(os.path.join(tmp, "fe"), names)
        clock = {"frontends": 0.0, "bytes": 0}
        asked = []
        receiver = types.SimpleNamespace(broker=fe_broker, control=None)
        fwd = TableForwarder(sup, table, port)
        sup.frontends = [FakeFrontend(i, receiver, clock) for i in range(args.frontends)]
        # a front-end asking for the whole table (LeadersWanted) would be counted here
        receiver.control = types.SimpleNamespace(notify=asked.append)
        fwd.review()                    # the first pass: every queue pointed, whole tables
        clock.update(frontends=0.0, bytes=0)
        t = time.process_time()
        for i in range(args.changes):
            name = names[(i * 7) % len(names)]
            table[name] = "n3" if table[name] != "n3" else "n2"
            fwd.review(None if args.whole else queues_touched({partition_key("/", name, 0)}))
        total = time.process_time() - t
        forwarded = sum(len(r.refs) for r in fwd.remotes.values())
        fe_forwarded = sum(len(r.refs) for r in fe_broker.forwarder.remotes.values())
        assert forwarded == fe_forwarded, (forwarded, fe_forwarded)
        assert not asked, asked
        per = 1e3 / args.changes
        print(f"queues {args.queues}, forwarded {forwarded}, changes {args.changes}, "
              f"front-ends {args.frontends}")
        print(f"CPU per change: total {total * per:.3f} ms, supervisor "
              f"{(total - clock['frontends']) * per:.3f} ms, front-ends "
              f"{clock['frontends'] * per:.3f} ms; bytes sent per change "
              f"{clock['bytes'] / args.changes:,.0f}")
        for fw in (fwd, fe_broker.forwarder):
            fw.closed = True
            for client in fw.remotes.values():
                client.close()
        sup.close()
        fe_broker.close()
    listener.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--queues", type=int, default=1000)
    p.add_argument("--changes", type=int, default=200)
    p.add_argument("--frontends", type=int, default=2)
    p.add_argument("--whole", action="store_true",
                   help="a pass over every queue after each change (as before the watch "
                        "named the keys it touched)")
    asyncio.run(run(p.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
