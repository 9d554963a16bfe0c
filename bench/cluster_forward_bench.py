"""Forwarding over the cluster link: what a hop to the leader costs.

    python bench/cluster_forward_bench.py [--messages 3000] [--size 1024] [--rounds 3]
                                          [--layout "--workers 2 --frontends 2"]

Starts a local cluster of two nodes (etcd, ``amqpbroker.testing.cluster``) and a durable
classic queue led by n1. Per round, interleaved, each scenario:

* ``publish``: confirmed publishes, one at a time (pika waits for each confirm), from a
  client on n1 (local) and on n2 (forwarded to n1): median and p99 round trip, msg/s;
* ``consume``: the same number of messages consumed with prefetch 200 and acks from n1
  and from n2: msg/s;

and the CPU seconds both broker processes spent per message (``/proc/<pid>/stat``: the
forwarded path costs on both nodes; with ``--layout``, the nodes' serve arguments, every
process of both nodes). On a shared machine only the ratios hold.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import pika

sys.path.insert(0, ".")
from amqpbroker.testing.cluster import LocalCluster  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu(pids) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])      # utime, stime
    return total / TICKS


def publish(url: str, queue: str, n: int, body: bytes) -> list[float]:
    """Persistent publishes, each waiting for its confirm; the seconds each took."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        ch.basic_publish("", queue, body, props)
        out.append(time.perf_counter() - t)
    conn.close()
    return out


def consume(node, queue: str, n: int) -> float:
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=200)
    got = [0]

    def on_message(ch, method, props, body):
        got[0] += 1
        if got[0] % 50 == 0 or got[0] == n:
            ch.basic_ack(method.delivery_tag, multiple=True)
    t = time.perf_counter()
    ch.basic_consume(queue, on_message)
    while got[0] < n:
        conn.process_data_events(time_limit=0.1)
    elapsed = time.perf_counter() - t
    conn.close()
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--layout", default="", help="both nodes' process layout, e.g. "
                                                "\"--workers 2 --frontends 2\"")
    args = p.parse_args()
    body = b"x" * args.size
    results: dict[str, list] = {}
    with LocalCluster(2, lease_ttl=3, args=tuple(args.layout.split())) as cluster:
        n1, n2 = cluster.nodes
        pids = [pid for n in (n1, n2)
                for pid in (n.proc.pid, *n.worker_pids, *n.frontend_pids)]
        conn = pika.BlockingConnection(pika.URLParameters(n1.url))
        conn.channel().queue_declare("bench-fwd", durable=True)
        conn.close()
        cluster.wait_until(lambda: all(
            {q["name"]: q for q in n.api("queues")}.get("bench-fwd", {}).get("leader")
            == "amqpbroker@n1" for n in cluster.nodes))
        for _ in range(args.rounds):
            for label, node in (("local (n1)", n1), ("forwarded (n2)", n2)):
                c0 = cpu(pids)
                lat = publish(node.url, "bench-fwd", args.messages, body)
                c1 = cpu(pids)
                took = consume(node, "bench-fwd", args.messages)
                c2 = cpu(pids)
                r = results.setdefault(label, [])
                r.append((statistics.median(lat), sorted(lat)[int(len(lat) * 0.99)],
                          len(lat) / sum(lat), (c1 - c0) / args.messages,
                          args.messages / took, (c2 - c1) / args.messages))
    print(f"{args.messages} messages of {args.size} B, {args.rounds} rounds; medians of the "
          f"rounds")
    print(f"{'client on':<16}{'confirm p50':>12}{'p99':>9}{'pub msg/s':>11}"
          f"{'pub CPU/msg':>13}{'cons msg/s':>12}{'cons CPU/msg':>14}")
    for label, rows in results.items():
        med = [statistics.median(col) for col in zip(*rows)]
        print(f"{label:<16}{med[0] * 1e3:>10.2f}ms{med[1] * 1e3:>7.2f}ms{med[2]:>11.0f}"
              f"{med[3] * 1e6:>11.0f}us{med[4]:>12.0f}{med[5] * 1e6:>12.0f}us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
