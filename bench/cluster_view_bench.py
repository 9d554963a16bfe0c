"""CPU of one etcd event on a node, split by who follows the etcd mirror: the metadata applier
(``cluster/metadata.py``), the replication (``cluster/replication.py``) and the forwarder
(``cluster/forward.py``).

    python bench/cluster_view_bench.py [--queues 1000] [--changes 200] [--replicated 100]
                                       [--controller]

In one process, without etcd or sockets to other nodes: a ``--workers 0`` node's broker (a
``MetadataOwner`` over a ``LocalLink`` host) and its three followers wired as
``cluster/node.py`` wires them, called back by a real ``Membership`` whose view the bench
changes as the etcd watch does (``amqpbroker/testing/etcdview.py``). The view holds a vhost,
two nodes' keys, an exchange, ``--queues`` durable queues each bound to it, and each queue's
partition key: ``--replicated`` of them with two replicas led by this node (a ``Leader`` role
here), the others one replica, half of them this node's, half another's (forwarded). After
the start (a fresh list: every follower's whole pass), ``--changes`` events each move one
unreplicated queue's leader to the other node (a node loss moves leaders one event at a
time). Reports the CPU per event of each follower's callback. ``--controller``: the node is
the controller too (``Controller`` and ``Placement`` first, as ``cluster/node.py`` wires them;
its writes change the view and come back as events), and "placement" adds the passes the
event started (``ViewNode.settle``). The harness is read from this
file's checkout; everything else from the current directory's: run it from a checkout's
root to measure that checkout.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, ".")
from amqpbroker.config import Config                            # noqa: E402
from amqpbroker.frontend.partition_client import PartitionClient   # noqa: E402
from amqpbroker.links.local import LocalLink                    # noqa: E402
from amqpbroker.supervisor.owner import MetadataOwner           # noqa: E402
from amqpbroker.worker.host import PartitionHost                # noqa: E402

_spec = importlib.util.spec_from_file_location("etcdview", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "amqpbroker", "testing", "etcdview.py"))
etcdview = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(etcdview)


async def run(args) -> None:
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))       # dialled, never answers
    port = listener.getsockname()[1]
    names = [f"q{i}" for i in range(args.queues)]
    replicated = set(names[:args.replicated])
    with tempfile.TemporaryDirectory(prefix="bench-view-") as tmp:
        config = Config(data_dir=tmp)
        broker = MetadataOwner(config, loop)
        partition = PartitionClient.of(broker, 0)
        LocalLink(PartitionHost(config, loop), partition)
        broker.start([partition])
        node = etcdview.ViewNode(broker, controller=args.controller)
        node.put_vhost("/")
        node.put_node("n1", port)
        node.put_node("n2", port)
        node.put_exchange("/", "x")
        for name in names:
            node.put_queue("/", name)
            node.put_binding("/", "x", name, name)
        node.fresh_list()                   # the start: every follower's whole pass
        await node.metadata._settle()       # the queues open here
        for i, name in enumerate(names):    # then the controller places them
            if name in replicated:
                node.put_partition("/", name, ["n1", "n2"], "n1")
            else:
                leader = "n1" if i % 2 else "n2"
                node.put_partition("/", name, [leader], leader)
        node.fresh_list()
        if args.controller:
            await node.settle()
        assert len(node.replication.leading) == len(replicated), node.replication.leading

        clock = dict.fromkeys((name for name, _ in node.followers), 0.0)
        callbacks = node.membership.on_view

        def timed(name, cb):
            def call():
                t = time.process_time()
                cb()
                clock[name] += time.process_time() - t
            return call
        callbacks[:] = [timed(name, cb) for name, cb in node.followers]
        moving = [name for name in names if name not in replicated]
        t = time.process_time()
        for i in range(args.changes):
            name = moving[(i * 7) % len(moving)]
            p = node.state(etcdview.partition_key("/", name, 0))
            leader = "n2" if p["leader"] == "n1" else "n1"
            node.put_partition("/", name, [leader], leader, p["leader_epoch"] + 1)
            node.event()
            if args.controller:
                c = time.process_time()
                await node.settle()
                clock["placement"] += time.process_time() - c
        total = time.process_time() - t
        assert len(node.replication.leading) == len(replicated)
        if args.controller:
            assert node.controller.active
        forwarded = sum(len(r.refs) for r in node.forwarder.remotes.values())
        per = 1e3 / args.changes
        print(f"queues {args.queues} ({len(replicated)} replicated, {forwarded} forwarded), "
              f"meta/ keys {sum(1 for k in node.membership.view if '/meta/' in k)}, "
              f"changes {args.changes}")
        print("CPU per event: " + ", ".join(f"{name} {clock[name] * per:.3f} ms"
                                            for name in clock)
              + f"; total {total * per:.3f} ms")
        await node.close()
        broker.close()
    listener.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--queues", type=int, default=1000)
    p.add_argument("--changes", type=int, default=200)
    p.add_argument("--replicated", type=int, default=100,
                   help="queues with two replicas, led by this node")
    p.add_argument("--controller", action="store_true",
                   help="the node is the controller too: its placement's passes counted")
    asyncio.run(run(p.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
