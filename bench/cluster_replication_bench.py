"""Replication (issue 12 step 5): what the in-sync replicas cost a confirmed publish.

    python bench/cluster_replication_bench.py [--messages 2000] [--size 1024] [--rounds 3]
                                              [--type quorum|stream]

Starts a local cluster of three nodes (etcd, ``amqpbroker.testing.cluster``) and two quorum
queues: one with ``x-quorum-initial-group-size`` 1 (one replica: no replication, today's
path) and one with 3 (replication factor 3: a confirm waits until both followers fetched
the message and fsynced it). Per round, interleaved, each queue from a client on its
leader:

* ``publish``: confirmed publishes, one at a time (pika waits for each confirm): median and
  p99 round trip, msg/s;
* ``consume``: the same number consumed with prefetch 200 and acks: msg/s;

and the CPU seconds the three broker processes spent per message (``/proc/<pid>/stat``:
the followers' fetching counts). On a shared machine only the ratios hold.

``--type stream`` (step 6): the same with two streams (``x-initial-cluster-size`` 1 and 3);
``consume`` reads the round's messages from their first offset (``x-stream-offset``), acking
every 50 (credit).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import pika

sys.path.insert(0, ".")
from amqpbroker.testing.cluster import LocalCluster  # noqa: E402
from bench.cluster_forward_bench import consume, cpu, publish  # noqa: E402


def consume_stream(node, queue: str, n: int, first: int) -> float:
    """Read ``n`` messages of a stream from offset ``first``; seconds taken."""
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=200)
    got = [0]

    def on_message(ch, method, props, body):
        got[0] += 1
        if got[0] % 50 == 0 or got[0] == n:
            ch.basic_ack(method.delivery_tag, multiple=True)
    t = time.perf_counter()
    ch.basic_consume(queue, on_message, arguments={"x-stream-offset": first})
    while got[0] < n:
        conn.process_data_events(time_limit=0.1)
    elapsed = time.perf_counter() - t
    conn.close()
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--type", choices=("quorum", "stream"), default="quorum")
    args = p.parse_args()
    size_arg = ("x-quorum-initial-group-size" if args.type == "quorum"
                else "x-initial-cluster-size")
    body = b"x" * args.size
    results: dict[str, list] = {}
    with LocalCluster(3, lease_ttl=3) as cluster:
        pids = [n.proc.pid for n in cluster.nodes]
        conn = pika.BlockingConnection(pika.URLParameters(cluster.nodes[0].url))
        for name, size in (("bench-rf1", 1), ("bench-rf3", 3)):
            conn.channel().queue_declare(name, durable=True, arguments={
                "x-queue-type": args.type, size_arg: size})
        conn.close()

        def leader(name):
            def agreed():
                seen = [{q["name"]: q for q in n.api("queues")}.get(name, {})
                        for n in cluster.nodes]
                ls = {q.get("leader") for q in seen}
                return (len(ls) == 1 and None not in ls
                        and all(len(q.get("isr", ())) == len(q.get("members", ()))
                                for q in seen) and ls.pop())
            return cluster.node(cluster.wait_until(agreed).split("@")[1])
        leaders = {"rf1": leader("bench-rf1"), "rf3": leader("bench-rf3")}
        published: dict[str, int] = {}
        for _ in range(args.rounds):
            for label, node in leaders.items():
                queue = f"bench-{label}"
                c0 = cpu(pids)
                lat = publish(node, queue, args.messages, body)
                c1 = cpu(pids)
                took = (consume(node, queue, args.messages) if args.type == "quorum" else
                        consume_stream(node, queue, args.messages, published.get(label, 0)))
                published[label] = published.get(label, 0) + args.messages
                c2 = cpu(pids)
                results.setdefault(label, []).append(
                    (statistics.median(lat), sorted(lat)[int(len(lat) * 0.99)],
                     len(lat) / sum(lat), (c1 - c0) / args.messages,
                     args.messages / took, (c2 - c1) / args.messages))
    print(f"{args.type}: {args.messages} messages of {args.size} B, {args.rounds} rounds; "
          f"medians of the "
          f"rounds; CPU of all three nodes")
    print(f"{'queue':<8}{'confirm p50':>12}{'p99':>9}{'pub msg/s':>11}"
          f"{'pub CPU/msg':>13}{'cons msg/s':>12}{'cons CPU/msg':>14}")
    for label, rows in results.items():
        med = [statistics.median(col) for col in zip(*rows)]
        print(f"{label:<8}{med[0] * 1e3:>10.2f}ms{med[1] * 1e3:>7.2f}ms{med[2]:>11.0f}"
              f"{med[3] * 1e6:>11.0f}us{med[4]:>12.0f}{med[5] * 1e6:>12.0f}us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
