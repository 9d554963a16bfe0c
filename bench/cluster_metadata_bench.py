"""Metadata in etcd: what a declare costs and how soon the other nodes see it.

    python bench/cluster_metadata_bench.py [--queues 200] [--nodes 3]

Starts a local cluster (etcd and N nodes, ``amqpbroker.testing.cluster``) and a single node
without ``--cluster``; declares durable queues one after the other with pika on n1 (and on
the single node), and reports the median and p99 declare round trip on each, and how long
until n2's management API lists the last queue (propagation, polled every 5 ms). Then
SIGKILLs the leader of a quorum queue and reports the time until another node's
``/api/queues`` shows a new leader (failover: the lease TTL plus etcd's expiry check).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import pika

sys.path.insert(0, ".")
from amqpbroker.testing import BrokerProcess          # noqa: E402
from amqpbroker.testing.cluster import LocalCluster  # noqa: E402


def declares(node, prefix: str, n: int) -> list[float]:
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    ch = conn.channel()
    out = []
    for i in range(n):
        t = time.perf_counter()
        ch.queue_declare(f"{prefix}-{i}", durable=True)
        out.append(time.perf_counter() - t)
    for i in range(n):
        ch.queue_delete(f"{prefix}-{i}")
    conn.close()
    return out


def show(name: str, times: list[float]) -> None:
    times = sorted(times)
    print(f"{name:<28} median {statistics.median(times) * 1e3:6.2f} ms   "
          f"p99 {times[int(len(times) * 0.99) - 1] * 1e3:6.2f} ms")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--queues", type=int, default=200)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--lease-ttl", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-single-") as data, \
            BrokerProcess(data, management=True) as single:
        show("single node declare", declares(single, "b", args.queues))
    with LocalCluster(args.nodes, lease_ttl=args.lease_ttl) as cluster:
        n1, n2 = cluster.nodes[:2]
        show("cluster declare (n1)", declares(n1, "b", args.queues))
        conn = pika.BlockingConnection(pika.URLParameters(n1.url))
        ch = conn.channel()
        t = time.perf_counter()
        ch.queue_declare("seen-elsewhere", durable=True)
        cluster.wait_until(lambda: any(q["name"] == "seen-elsewhere"
                                       for q in n2.api("queues")), interval=0.005)
        print(f"{'declare on n1 -> in n2 API':<28} {(time.perf_counter() - t) * 1e3:6.1f} ms")
        ch.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum"})
        conn.close()
        leader = cluster.wait_until(lambda: {q["name"]: q for q in n2.api("queues")}
                                    .get("qq", {}).get("leader"))
        victim = cluster.node(leader.split("@")[1])
        other = next(n for n in cluster.nodes if n is not victim)
        t = time.perf_counter()
        victim.kill()
        victim.proc = None
        cluster.wait_until(lambda: {q["name"]: q for q in other.api("queues")}["qq"]
                           .get("leader") not in (None, leader), interval=0.01)
        print(f"{'leader failover (SIGKILL)':<28} {time.perf_counter() - t:6.2f} s "
              f"(lease TTL {args.lease_ttl} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
