"""A lone confirmed publish on a replicated queue, counted: CPU per confirm on each node (issue 12
"Speed"). Where ``paired_confirm_bench.py`` times two clusters in turns, this runs one cluster
alone and reads each node's CPU (every thread, user and system, from /proc) before and after,
so what a confirm costs each node shows apart from what it waits for.

    python bench/lone_confirm_cpu.py MGMT_URLS --pids P1,P2,P3 [--messages 3000] \
        [--size 1024] [--group-size 3]

MGMT_URLS: our nodes' management URLs, comma-separated (as ``python -m
amqpbroker.testing.cluster`` prints them, with each node's pid), or a RabbitMQ node's AMQP URL
(``bench/rabbitmq_cluster.py``'s first: the quorum queue is declared there, so it leads) with
the ``beam.smp`` pids of its nodes. The queue ``paired-rfN`` is declared as
``paired_confirm_bench.py`` does; 200 confirms warm it up, then ``--messages`` persistent
messages are published one at a time, each waiting for its confirm. Prints p50 / p90, the wall
time per confirm and each pid's CPU per confirm (an idle node here costs under 1 % of a core).
"""
from __future__ import annotations

import argparse
import os
import time

import pika

from paired_confirm_bench import leader_channel, pct    # this directory


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid``."""
    ticks = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mgmt", help="our management URLs (comma-separated) or a RabbitMQ AMQP URL")
    p.add_argument("--pids", required=True, help="the nodes' pids, comma-separated")
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--group-size", type=int, default=3)
    args = p.parse_args()
    pids = [int(x) for x in args.pids.split(",")]
    queue = f"paired-rf{args.group_size}"
    conn, ch = leader_channel(args.mgmt.split(","), queue, args.group_size)
    body, props = b"x" * args.size, pika.BasicProperties(delivery_mode=2)
    for _ in range(200):
        ch.basic_publish("", queue, body, props)
    before = [cpu_seconds(pid) for pid in pids]
    latencies = []
    start = time.perf_counter()
    for _ in range(args.messages):
        t = time.perf_counter()
        ch.basic_publish("", queue, body, props)
        latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    after = [cpu_seconds(pid) for pid in pids]
    ch.queue_purge(queue)
    conn.close()
    n = args.messages
    print(f"{queue}: p50 {pct(latencies, .5) * 1e3:.2f} ms, p90 {pct(latencies, .9) * 1e3:.2f} ms,"
          f" wall {wall / n * 1e6:.0f} µs per confirm; CPU µs per confirm by pid: "
          + ", ".join(f"{pid} {(a - b) / n * 1e6:.0f}" for pid, a, b in zip(pids, after, before)))


if __name__ == "__main__":
    main()
