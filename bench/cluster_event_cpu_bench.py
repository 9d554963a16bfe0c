"""CPU per etcd event on each node of a local cluster with many queues.

    python bench/cluster_event_cpu_bench.py [--queues 1000] [--changes 200] [--nodes 3]
                                            [--touch partitions|exchanges]

Starts a ``LocalCluster`` (etcd and ``--nodes`` one-process nodes, ``--workers 0``, on
loopback), imports ``--queues`` durable classic queues, each bound to ``amq.direct``
(``POST /api/definitions`` on n1: they go through etcd to every node), and waits until the
controller has placed them all and every node has them. Then ``--changes`` etcd events, one
at a time: a partition key of a queue written again as it is (a new mod revision, the same
state: what an ISR or leader change costs a node beyond the change itself); with
``--touch exchanges`` the import adds 50 durable direct exchanges, and each event writes
one's object key (``meta/exchange/...``) again as it is instead. Each node's
process CPU (``/proc/<pid>/stat``) over the changes, less its idle CPU over as long a time
before them, is reported per event. The nodes run the checkout of the current directory:
run it from a checkout's root to measure that checkout.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, ".")
from amqpbroker.cluster.metadata import META                    # noqa: E402
from amqpbroker.cluster.placement import PARTITIONS              # noqa: E402
from amqpbroker.testing.cluster import LocalCluster             # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK      # utime + stime


def etcd(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


EXCHANGES = 50          # with --touch exchanges


def partitions(url: str, prefix: str = PARTITIONS) -> list:
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    out = etcd(url, "/v3/kv/range", {"key": b64(prefix), "range_end": b64(end)})
    return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv["value"]).decode())
            for kv in out.get("kvs", [])]


def quiet(pids: list, span: float = 2.0) -> dict:
    """Wait until the nodes' CPU is at rest (less than 5% of a CPU each over ``span``);
    their CPU per second then. (The sleep is the measuring window, not a wait for an event.)"""
    while True:
        before = {p: cpu(p) for p in pids}
        time.sleep(span)
        rates = {p: (cpu(p) - before[p]) / span for p in pids}
        if max(rates.values()) < 0.05:
            return rates


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--queues", type=int, default=1000)
    p.add_argument("--changes", type=int, default=200)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--touch", choices=("partitions", "exchanges"), default="partitions",
                   help="the keys the events write again")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp, \
            LocalCluster(args.nodes, tmp, lease_ttl=10, args=("--workers", "0")) as cluster:
        n1 = cluster.nodes[0]
        names = [f"q{i}" for i in range(args.queues)]
        defs = {"queues": [{"name": n, "vhost": "/", "durable": True, "auto_delete": False,
                            "arguments": {}} for n in names],
                "bindings": [{"source": "amq.direct", "vhost": "/", "destination": n,
                              "destination_type": "queue", "routing_key": n, "arguments": {}}
                             for n in names]}
        if args.touch == "exchanges":
            defs["exchanges"] = [{"name": f"x{i}", "vhost": "/", "type": "direct",
                                  "durable": True, "auto_delete": False, "internal": False,
                                  "arguments": {}} for i in range(EXCHANGES)]
        status, value = n1.request("POST", "definitions", defs, timeout=600)
        assert status in (200, 201, 204), (status, value)
        url = cluster.etcd.url
        cluster.wait_until(lambda: len(partitions(url)) >= args.queues, timeout=600,
                           interval=0.5)        # the controller's placements

        def has_all(node) -> bool:
            return node.api("overview")["object_totals"]["queues"] >= args.queues
        for node in cluster.nodes:
            cluster.wait_until(lambda: has_all(node), timeout=600, interval=0.5)
        pids = [node.proc.pid for node in cluster.nodes]
        idle = quiet(pids)
        keys = sorted(partitions(url) if args.touch == "partitions"
                      else partitions(url, META + "exchange/"))
        before = {pid: cpu(pid) for pid in pids}
        t = time.monotonic()
        for i in range(args.changes):
            key, value = keys[(i * 7) % len(keys)]
            etcd(url, "/v3/kv/put", {"key": b64(key), "value": b64(value)})
        # every node's watch has seen the last put: its CPU comes back to rest
        quiet(pids, 1.0)
        span = time.monotonic() - t
        print(f"queues {args.queues}, nodes {args.nodes}, changes {args.changes} of "
              f"{args.touch} ({len(keys)} keys) "
              f"({span:.1f} s with the settling)")
        for node, pid in zip(cluster.nodes, pids):
            used = cpu(pid) - before[pid] - idle[pid] * span
            print(f"  {node.node}: CPU per event {used * 1e3 / args.changes:.3f} ms "
                  f"(idle {idle[pid] * 1e3:.1f} ms/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
