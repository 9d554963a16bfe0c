"""One confirmed publish at a time on two running clusters at once, in turns (issue 12
"Speed"): the A/B comparison of a change to the replication path on a loaded machine.

    python bench/paired_confirm_bench.py MGMT_A MGMT_B [MGMT_C ...] [--messages 1000]
        [--size 1024] [--group-size 3]

MGMT_A, MGMT_B: the management URLs of each cluster's nodes, comma-separated
(``http://127.0.0.1:PORT,...``, as ``python -m amqpbroker.testing.cluster`` prints them;
start one from each checkout), or for B an AMQP URL of a RabbitMQ node
(``amqp://guest:guest@127.0.0.1:5701/``, ``bench/rabbitmq_cluster.py``'s first node: the
quorum queue is declared through it, so it leads), our rf3 against RabbitMQ's qq3 under the
same load; further sides (C, ...) join the same turns, each
compared with A. A
quorum queue ``paired-rfN`` (``x-quorum-initial-group-size`` N) is declared on each; pika
connects to its leader (the management API's ``leader``) and publishes persistent messages
with confirms, one at a time, alternating A, B, A, B ...: both clusters see the machine's
load of the same seconds, so on a machine shared with others the ratio of the two holds
where each one's absolute numbers do not. Prints p50 / p90 / p99 of each and B / A.
"""
from __future__ import annotations

import argparse
import base64
import json
import time
import urllib.request

import pika


def api(mgmt: str, path: str):
    req = urllib.request.Request(
        f"{mgmt}/api/{path}",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def amqp_port(mgmt: str) -> tuple[str, int]:
    """(node name, AMQP port) of the node serving management URL ``mgmt``."""
    for x in api(mgmt, "overview")["listeners"]:
        if x["protocol"] == "amqp":
            return x["node"], x["port"]
    raise LookupError(f"{mgmt}: no amqp listener")


def rabbitmq_channel(url: str, queue: str, group: int):
    """A RabbitMQ node (``amqp://...``, e.g. ``bench/rabbitmq_cluster.py``'s first): the quorum
    queue declared through it, so it leads (``client-local``); a channel there."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments={
        "x-queue-type": "quorum", "x-quorum-initial-group-size": group})
    ch.confirm_delivery()
    ch.queue_purge(queue)
    return conn, ch


def leader_channel(mgmts: list[str], queue: str, group: int):
    """Declare the queue, wait until it has a leader and a full ISR, connect to the leader.
    An ``amqp://`` URL instead of management URLs: a RabbitMQ node (``rabbitmq_channel``)."""
    if mgmts[0].startswith("amqp://"):
        return rabbitmq_channel(mgmts[0], queue, group)
    ports = dict(amqp_port(m) for m in mgmts)
    url = "amqp://guest:guest@127.0.0.1:%d/"
    conn = pika.BlockingConnection(pika.URLParameters(url % next(iter(ports.values()))))
    conn.channel().queue_declare(queue, durable=True, arguments={
        "x-queue-type": "quorum", "x-quorum-initial-group-size": group})
    conn.close()
    deadline = time.monotonic() + 60
    while True:
        q = api(mgmts[0], f"queues/%2F/{queue}")
        if q.get("leader") in ports and len(q.get("isr", ())) == group:
            break
        assert time.monotonic() < deadline, f"{queue}: no leader with a full ISR"
        time.sleep(0.2)
    conn = pika.BlockingConnection(pika.URLParameters(url % ports[q["leader"]]))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_purge(queue)
    return conn, ch


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mgmt_a")
    p.add_argument("mgmt_b")
    p.add_argument("more", nargs="*", help="further sides C, D ... (as MGMT_B), in the same "
                   "turns: e.g. this branch, main and RabbitMQ's qq3 in the same seconds")
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--group-size", type=int, default=3)
    args = p.parse_args()
    queue = f"paired-rf{args.group_size}"
    body = b"x" * args.size
    props = pika.BasicProperties(delivery_mode=2)
    urls = [args.mgmt_a, args.mgmt_b, *args.more]
    names = [chr(ord("A") + i) for i in range(len(urls))]
    sides = {n: leader_channel(u.split(","), queue, args.group_size)
             for n, u in zip(names, urls)}
    lat = {n: [] for n in names}
    for i in range(args.messages):
        k = i % len(names)              # each side first in turn (two sides: A B, B A, ...)
        for side in names[k:] + names[:k]:
            _, ch = sides[side]
            t = time.perf_counter()
            ch.basic_publish("", queue, body, props)
            lat[side].append(time.perf_counter() - t)
    for conn, ch in sides.values():
        ch.queue_purge(queue)
        conn.close()
    print(f"{args.messages} persistent {args.size} B messages each, confirm one at a time, "
          f"{queue}, {', '.join(names)} in turns")
    print("| | p50 | p90 | p99 |")
    print("|---|---:|---:|---:|")
    for side in names:
        print(f"| {side} | " + " | ".join(f"{pct(lat[side], q) * 1e3:.2f} ms"
                                          for q in (0.5, 0.9, 0.99)) + " |")
    for side in names[1:]:
        print(f"| {side} / A | " + " | ".join(f"{pct(lat[side], q) / pct(lat['A'], q):.2f}"
                                              for q in (0.5, 0.9, 0.99)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
