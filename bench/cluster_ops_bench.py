"""The operator's side of a cluster: what an import, a reassignment and a drain take.

    python bench/cluster_ops_bench.py [--queues 300] [--nodes 3]

Starts a single node and a local cluster (etcd and N nodes, ``amqpbroker.testing.cluster``)
and reports, wall clock:

- ``POST /api/definitions`` of ``--queues`` durable queues, a direct exchange and one binding
  per queue: the request's round trip on the single node, and on n1 of the cluster (which
  answers once n1 has applied it all), then until n2's ``/api/bindings`` lists the last;
- ``ctl reassign`` of one quorum queue to other replicas: the PUT until
  ``/api/reassignments`` is empty (three guarded controller txns: add, finish, preferred);
- ``ctl drain`` of the last node after ``--quorum`` quorum queues were imported (a replica
  of each on every node): the PUT until it holds no replica, polled every 20 ms.

Wall clock on a shared machine: only the order of magnitude holds (docs/CLUSTER.md).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

sys.path.insert(0, ".")
from amqpbroker.testing import BrokerProcess          # noqa: E402
from amqpbroker.testing.cluster import LocalCluster  # noqa: E402


def call(node, method, path, body=None):
    status, value = node.request(method, path, body, timeout=120)
    assert status < 400, (status, value)
    return value


def document(n: int, prefix: str) -> dict:
    return {"exchanges": [{"name": f"{prefix}-x", "vhost": "/", "type": "direct",
                           "durable": True, "auto_delete": False, "internal": False,
                           "arguments": {}}],
            "queues": [{"name": f"{prefix}-{i}", "vhost": "/", "durable": True,
                        "auto_delete": False, "arguments": {}} for i in range(n)],
            "bindings": [{"source": f"{prefix}-x", "vhost": "/", "destination": f"{prefix}-{i}",
                          "destination_type": "queue", "routing_key": str(i), "arguments": {}}
                         for i in range(n)]}


def until(condition, timeout=120.0, interval=0.02) -> float:
    t = time.perf_counter()
    while not condition():
        if time.perf_counter() - t > timeout:
            raise SystemExit("timed out")
        time.sleep(interval)
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--queues", type=int, default=300)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--quorum", type=int, default=100, help="quorum queues for the drain")
    args = p.parse_args()
    n = args.queues
    with tempfile.TemporaryDirectory(prefix="bench-single-") as data, \
            BrokerProcess(data, management=True) as single:
        t = time.perf_counter()
        call(single, "POST", "definitions", document(n, "imp"))
        print(f"import of {n} queues + bindings, single node: "
              f"{time.perf_counter() - t:6.2f} s")
    with LocalCluster(args.nodes, lease_ttl=3) as cluster:
        n1, n2, last = cluster.nodes[0], cluster.nodes[1], cluster.nodes[-1]
        t = time.perf_counter()
        call(n1, "POST", "definitions", document(n, "imp"))
        answered = time.perf_counter() - t
        seen = answered + until(lambda: any(b["destination"] == f"imp-{n - 1}"
                                            for b in call(n2, "GET", "bindings")))
        print(f"import of {n} queues + bindings, cluster n1: {answered:6.2f} s; "
              f"listed by n2 after {seen:6.2f} s")
        call(n1, "PUT", "queues/%2F/moving", {"durable": True,
                                               "arguments": {"x-queue-type": "quorum",
                                                             "x-quorum-initial-group-size": 2}})
        until(lambda: any(q["name"] == "moving" and q.get("leader")
                          for q in call(n1, "GET", "queues")))
        members = next(q["members"] for q in call(n1, "GET", "queues") if q["name"] == "moving")
        names = [node["node_name"] for node in call(n1, "GET", "nodes")]
        target = [x for x in names if f"amqpbroker@{x}" not in members] + \
            [members[1].split("@")[1]]
        t = time.perf_counter()
        call(n1, "PUT", "reassignments/%2F/moving", {"replicas": target})
        until(lambda: not call(n1, "GET", "reassignments"))
        took = time.perf_counter() - t
        print(f"reassign of one quorum queue to {','.join(target)}: {took * 1e3:6.0f} ms")
        quorum = {"queues": [{"name": f"qq-{i}", "vhost": "/", "durable": True,
                              "auto_delete": False, "arguments": {"x-queue-type": "quorum"}}
                             for i in range(args.quorum)]}
        call(n1, "POST", "definitions", quorum)
        until(lambda: sum(1 for q in call(n1, "GET", "queues")
                          if q["name"].startswith("qq-") and q.get("leader")) == args.quorum)
        name = last.api("nodes")[-1]["node_name"]
        print("replicas per node before the drain:", ", ".join(
            f"{x['node_name']} {x['partition_replicas']}" for x in call(n1, "GET", "nodes")))
        holds = next(x["partition_replicas"] for x in call(n1, "GET", "nodes")
                     if x["node_name"] == name)
        t = time.perf_counter()
        call(n1, "PUT", f"nodes/{name}/drain")
        until(lambda: next(x["partition_replicas"] for x in call(n1, "GET", "nodes")
                           if x["node_name"] == name) == 0)
        took = time.perf_counter() - t
        print(f"drain of {name} holding {holds} replicas: {took:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
