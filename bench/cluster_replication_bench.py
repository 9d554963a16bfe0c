"""Replication (issue 12 "Speed"): what the in-sync replicas cost a confirmed publish, beside
a 3-node RabbitMQ quorum queue on the same machine.

    python bench/cluster_replication_bench.py [--messages 500] [--window-messages 5000]
        [--window 256] [--size 1024] [--rounds 3] [--no-rabbitmq] [--args "--flag ..."]

Starts a local cluster of three of our nodes (etcd, ``amqpbroker.testing.cluster``) with two
quorum queues: ``x-quorum-initial-group-size`` 1 (one replica: no replication) and 3
(replication factor 3: a confirm waits until both followers fetched the message and fsynced
it); then (unless ``--no-rabbitmq``) a 3-node RabbitMQ cluster (``bench/rabbitmq_cluster.py``:
rq1..rq3@localhost, ports 5701-5703, no plugins) with a quorum queue of
``x-quorum-initial-group-size`` 3. Clients connect to the queue's leader. Per round,
interleaved between the queues of one cluster:

* ``1-by-1``: pika publishing persistent messages one at a time, each waiting for its
  confirm: p50 / p99 round trip, msg/s;
* ``window``: the shared harness's raw client (``/work/shared/bench/rawamqp.py``: frames
  pre-encoded, confirms parsed by hand) publishing with up to ``--window`` confirms in
  flight: p50 / p99 publish-to-confirm, msg/s (the broker, not the client, bounds it);
* ``e2e``: the same windowed publisher with a raw consumer in another process (prefetch =
  window, multiple acks every 64) on the same queue, from the first publish to the last
  delivery: msg/s;

and the CPU seconds all broker processes spent per message, over each node's process tree
(``/proc/<pid>/stat``; etcd not counted: it idles), for the 1-by-1 and the window phase.
On a shared 2-core machine only the ratios hold. The two clusters run one after the other
(both on one machine at once would share its cores); run it twice to see the spread.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shlex
import statistics
import sys
import time

import pika

SHARED_BENCH = "/work/shared/bench"
sys.path.insert(0, ".")
sys.path.insert(0, SHARED_BENCH)
import rawamqp  # noqa: E402  (the shared harness's client: the broker, not the client, bounds)
from amqpbroker.testing.cluster import LocalCluster  # noqa: E402
from bench.cluster_forward_bench import cpu, publish as one_by_one  # noqa: E402
from bench.rabbitmq_cluster import RabbitCluster  # noqa: E402


async def _windowed(url: str, queue: str, n: int, size: int, window: int):
    """``n`` persistent messages with up to ``window`` confirms in flight: (publish-to-confirm
    latencies, seconds from the first publish to the last confirm)."""
    conn = await rawamqp.connect(url)
    ch = await conn.channel()
    await ch.confirm_select()
    prefix, suffix = rawamqp.build_publish(ch.number, "", queue, size, conn.frame_max,
                                           delivery_mode=2)
    frame = prefix + suffix
    sent: dict[int, int] = {}               # delivery tag -> monotonic_ns when sent
    lat: list[float] = []
    state = {"acked": 0, "nacked": 0, "oldest": 1}
    room = asyncio.Event()
    done = asyncio.get_running_loop().create_future()

    def on_confirm(tag, multiple, ack, now):
        first = state["oldest"] if multiple else tag
        for t in range(first, tag + 1):
            ts = sent.pop(t, None)
            if ts is not None:
                lat.append((now - ts) / 1e9)
                state["acked" if ack else "nacked"] += 1
        while state["oldest"] not in sent and state["oldest"] <= tag:
            state["oldest"] += 1
        if len(sent) < window:
            room.set()
        if state["acked"] + state["nacked"] == n and not done.done():
            done.set_result(time.monotonic_ns())
    ch.on_confirm = on_confirm
    start = time.monotonic_ns()
    for tag in range(1, n + 1):
        while len(sent) >= window:
            room.clear()
            await room.wait()
        sent[tag] = time.monotonic_ns()
        conn.write(frame)
        if conn.paused:
            await conn.wait_writable()
    end = await asyncio.wait_for(done, 300)
    await conn.close()
    assert not state["nacked"], f"{state['nacked']} nacked"
    return lat, (end - start) / 1e9


def windowed(url, queue, n, size, window):
    return asyncio.run(_windowed(url, queue, n, size, window))


async def _consume(url: str, queue: str, n: int, prefetch: int, ready, done) -> None:
    conn = await rawamqp.connect(url)
    ch = await conn.channel()
    await ch.qos(prefetch)
    finished = asyncio.get_running_loop().create_future()
    got = [0]

    def on_message(tag, stamp, now, size):
        got[0] += 1
        if got[0] % 64 == 0 or got[0] == n:
            ch.ack(tag, multiple=True)
        if got[0] == n and not finished.done():
            finished.set_result(time.perf_counter())
    ch.on_message = on_message
    await ch.consume(queue)
    ready.set()
    done.put(await finished)
    await conn.close()


def _consumer_main(url, queue, n, prefetch, ready, done) -> None:
    sys.path.insert(0, SHARED_BENCH)
    asyncio.run(_consume(url, queue, n, prefetch, ready, done))


def end_to_end(url: str, queue: str, n: int, size: int, window: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_consumer_main, args=(url, queue, n, window, ready, done))
    proc.start()
    try:
        if not ready.wait(60):
            raise TimeoutError("consumer did not start")
        start = time.perf_counter()
        windowed(url, queue, n, size, window)
        last = done.get(timeout=300)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return n / (last - start)


def cpu_times(pids) -> dict[int, float]:
    """CPU seconds (user + system) of each process still there."""
    out = {}
    for pid in pids:
        try:
            out[pid] = cpu([pid])
        except (FileNotFoundError, ProcessLookupError):
            pass                # a short-lived helper (RabbitMQ's inet_gethost, a shell)
    return out


def spent(before: dict, after: dict) -> float:
    return sum(after[p] - before[p] for p in before if p in after)


def measure(label: str, url: str, queue: str, pids_of, args, body, results) -> None:
    pids = pids_of()
    c0 = cpu_times(pids)
    lat = one_by_one(url, queue, args.messages, body)
    c1 = cpu_times(pids)
    drain(url, queue, args.messages)
    c2 = cpu_times(pids)
    wlat, took = windowed(url, queue, args.window_messages, args.size, args.window)
    c3 = cpu_times(pids)
    drain(url, queue, args.window_messages)
    e2e = end_to_end(url, queue, args.window_messages, args.size, args.window)
    wlat.sort()
    lat.sort()
    results.setdefault(label, []).append(dict(
        p50=lat[len(lat) // 2], p99=lat[int(len(lat) * 0.99)], rate=len(lat) / sum(lat),
        cpu=spent(c0, c1) / args.messages,
        wp50=wlat[len(wlat) // 2], wp99=wlat[int(len(wlat) * 0.99)],
        wrate=args.window_messages / took, wcpu=spent(c2, c3) / args.window_messages, e2e=e2e))
    print(label, {k: round(v, 6) for k, v in results[label][-1].items()}, flush=True)


def drain(url: str, queue: str, n: int) -> None:
    """Consume what a phase published (prefetch 500, multiple acks), so each starts empty."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=500)
    got = [0]

    def on_message(ch, method, props, body):
        got[0] += 1
        if got[0] % 100 == 0 or got[0] == n:
            ch.basic_ack(method.delivery_tag, multiple=True)
    ch.basic_consume(queue, on_message)
    deadline = time.monotonic() + 300
    while got[0] < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    conn.close()
    assert got[0] == n, f"drained {got[0]} of {n}"


def ours(args, body, results) -> None:
    with LocalCluster(3, lease_ttl=3, args=tuple(shlex.split(args.args))) as cluster:
        def pids():
            return [n.proc.pid for n in cluster.nodes] + [
                p for n in cluster.nodes for p in getattr(n, "worker_pids", ())]
        conn = pika.BlockingConnection(pika.URLParameters(cluster.nodes[0].url))
        for name, size in (("bench-rf1", 1), ("bench-rf3", 3)):
            conn.channel().queue_declare(name, durable=True, arguments={
                "x-queue-type": "quorum", "x-quorum-initial-group-size": size})
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
        leaders = {"ours rf1": ("bench-rf1", leader("bench-rf1")),
                   "ours rf3": ("bench-rf3", leader("bench-rf3"))}
        for _ in range(args.rounds):
            for label, (queue, node) in leaders.items():
                measure(label, node.url, queue, pids, args, body, results)


def rabbitmq(args, body, results) -> None:
    with RabbitCluster(3) as rc:
        conn = pika.BlockingConnection(pika.URLParameters(rc.urls[0]))
        conn.channel().queue_declare("bench-qq3", durable=True, arguments={
            "x-queue-type": "quorum", "x-quorum-initial-group-size": 3})
        conn.close()
        status = rc.ctl(0, "list_queues", "name", "leader", "members", "online")
        print(status.strip().splitlines()[-1], flush=True)
        for _ in range(args.rounds):
            measure("rabbitmq qq3", rc.urls[0], "bench-qq3", rc.pids, args, body, results)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=500)
    p.add_argument("--window-messages", type=int, default=5000)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-rabbitmq", action="store_true")
    p.add_argument("--only-rabbitmq", action="store_true")
    p.add_argument("--args", default="", help="more flags for each of our nodes")
    args = p.parse_args()
    body = b"x" * args.size
    results: dict[str, list] = {}
    if not args.only_rabbitmq:
        ours(args, body, results)
    if not args.no_rabbitmq:
        rabbitmq(args, body, results)
    print(f"\n{args.size} B persistent; 1-by-1: {args.messages} messages (pika, a confirm each); "
          f"window: {args.window_messages} messages, {args.window} confirms in flight "
          f"(raw client); medians of {args.rounds} rounds; CPU: every node of the cluster\n")
    print("| queue | 1-by-1 p50 | p99 | msg/s | CPU/msg | window p50 | p99 | msg/s | CPU/msg "
          "| e2e msg/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, rows in results.items():
        m = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"| {label} | {m['p50'] * 1e3:.2f} ms | {m['p99'] * 1e3:.1f} ms | {m['rate']:.0f} "
              f"| {m['cpu'] * 1e6:.0f} µs | {m['wp50'] * 1e3:.1f} ms | {m['wp99'] * 1e3:.1f} ms "
              f"| {m['wrate']:.0f} | {m['wcpu'] * 1e6:.0f} µs | {m['e2e']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
