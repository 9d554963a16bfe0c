"""A 6-partition topic read by a 3-member consumer group, against RabbitMQ streams (issue 10).

    python bench/group_bench.py                          # ours and RabbitMQ, then replay
    python bench/group_bench.py --which ours --seconds 20
    python bench/group_bench.py --which replay --replay-bytes 1073741824

Group (``ours``): a broker this script starts (this checkout, ``--layout``), a topic
``x-partitioned`` with 6 stream partitions, MEMBERS consumer processes in one group
(``x-consumer-group``), PRODUCERS producer processes publishing SIZE-byte messages on random
keys with publisher confirms (a window of WINDOW unconfirmed each). Every body starts with its
send time (time.monotonic_ns, one clock for all processes of the machine); members ack with
``multiple`` every ACK_EVERY deliveries.

RabbitMQ (``rabbitmq``, the reference on 5673): the layout of a super stream over AMQP 0-9-1 --
a direct exchange bound to 6 streams with keys "0".."5" (what ``x-partitioned`` builds, and what
RabbitMQ's super stream tooling declares), the producers route with Kafka's partitioner computed
client-side (RabbitMQ cannot hash a key over AMQP 0-9-1), and 3 consumer processes each read 2
fixed streams from ``next``: RabbitMQ has no group over AMQP 0-9-1, so the fair comparison is a
static assignment of the same partitions to the same number of processes, with the same
prefetch per partition, client library and ack pattern. (One stream would compare a single
log against six and leave 2 of 3 consumers idle.)

Both are measured twice, with the same clients: flat out (producers as fast as confirms come
back: the most messages per second end to end) and paced at --latency-rate messages/s in all
(latency without queueing at saturation). Reported: messages consumed per second in the window,
p50 / p99 end-to-end latency (publish call to delivery callback), and the broker's CPU per
message consumed (utime + stime of the whole process tree: our supervisor, workers and
front-ends; RabbitMQ's beam.smp and its children), from /proc.

Replay (``replay``): REPLAY_BYTES of REPLAY_SIZE-byte messages in one stream of our broker,
then read from ``first`` by one aiormq consumer, warm (the log in the page cache, as just written) and
cold (the stream's files dropped from the page cache with posix_fadvise(DONTNEED), which
touches nothing else on the machine), then by --replay-readers consumers at once (what the
broker can serve when one client process is not the limit); against ``dd`` of the same
files, with iflag=direct (the disk) and through the cache.
"""
from __future__ import annotations

import argparse
import asyncio
import glob
import json
import multiprocessing as mp
import os
import random
import re
import shlex
import struct
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from amqpbroker.partitioner import partition_of  # noqa: E402

PARTITIONS = 6
MEMBERS = 3
WINDOW = 256
PREFETCH = 256                  # per member (2 partitions) = 128 per partition
ACK_EVERY = 64
KEYS = [f"customer-{i}" for i in range(1000)]
STAMP = struct.Struct(">Q")
TICK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ CPU of a process tree
def _stat(pid: int):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])     # ppid, utime + stime


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by root and every descendant alive now."""
    parent, cpu = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)], cpu[int(d)] = _stat(int(d))
            except (OSError, IndexError):
                pass
    members, grew = {root}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in members and p not in members}
        grew = bool(new)
        members |= new
    return sum(cpu.get(p, 0) for p in members) / TICK


def listener_pid(port: int) -> int:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                         text=True).stdout
    m = re.search(r"pid=(\d+)", out)
    if not m:
        sys.exit(f"nothing listens on port {port} (ss -ltnp)")
    return int(m.group(1))


# ------------------------------------------------------------------ client processes
async def _producer(url, exchange, route, size, rate, go, times, out, seed):
    import aiormq
    rng = random.Random(seed)
    conn = await aiormq.connect(url)
    ch = await conn.channel(publisher_confirms=True)
    out.put(("ready", None))
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    t_end = times[1] + 0.5
    window = asyncio.Semaphore(WINDOW)
    pad = b"x" * (size - STAMP.size)
    sent = 0
    pending = set()
    next_at = time.monotonic()

    async def one(body, key):
        try:
            await ch.basic_publish(body, exchange=exchange, routing_key=key)
        finally:
            window.release()
    while time.monotonic() < t_end:
        if rate:
            next_at += 1 / rate
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)      # pacing, not synchronisation
        await window.acquire()
        key = route(rng.choice(KEYS))
        t = asyncio.ensure_future(one(STAMP.pack(time.monotonic_ns()) + pad, key))
        pending.add(t)
        t.add_done_callback(pending.discard)
        sent += 1
    if pending:
        await asyncio.wait(pending, timeout=30)
    await conn.close()
    out.put(("producer", {"sent": sent}))


async def _consumer(url, queues, arguments, prefetch, ack_every, go, times, out):
    import aiormq
    conn = await aiormq.connect(url)
    ch = await conn.channel()
    await ch.basic_qos(prefetch_count=prefetch)
    lat, count, unacked = [], [0], [0]
    ws, we = [None], [None]

    async def on_message(msg):
        now = time.monotonic_ns()
        if ws[0] is not None and ws[0] <= now <= we[0]:
            count[0] += 1
            lat.append(now - STAMP.unpack_from(msg.body)[0])
        unacked[0] += 1
        if unacked[0] >= ack_every:
            unacked[0] = 0
            await ch.basic_ack(msg.delivery_tag, multiple=True)
    for q in queues:
        await ch.basic_consume(q, on_message, arguments=arguments)
    out.put(("ready", None))
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    ws[0], we[0] = int(times[0] * 1e9), int(times[1] * 1e9)
    await asyncio.sleep(max(0.0, times[1] - time.monotonic()) + 0.2)
    await conn.close()
    out.put(("consumer", {"count": count[0], "lat": lat}))


def producer_main(*args):
    asyncio.run(_producer(*args))


def consumer_main(*args):
    asyncio.run(_consumer(*args))


def _route_ours(key):
    return key


def _route_rabbit(key):
    return str(partition_of(key.encode(), PARTITIONS))


# ------------------------------------------------------------------ one measurement
def measure(url, broker_pid, exchange, route, consumer_specs, producers, size, rate,
            seconds, warmup, ack_every):
    ctx = mp.get_context("spawn")
    out, go = ctx.Queue(), ctx.Event()
    times = ctx.Array("d", 2)
    procs = [ctx.Process(target=consumer_main, args=(url, queues, arguments, PREFETCH,
                                                     ack_every, go, times, out))
             for queues, arguments in consumer_specs]
    procs += [ctx.Process(target=producer_main,
                          args=(url, exchange, route, size, rate / producers if rate else 0,
                                go, times, out, 1000 + i))
              for i in range(producers)]
    for p in procs:
        p.start()
    for _ in procs:
        kind, _ = out.get(timeout=60)
        assert kind == "ready"
    now = time.monotonic()
    times[0], times[1] = now + warmup, now + warmup + seconds
    go.set()
    time.sleep(max(0.0, times[0] - time.monotonic()))    # the window opens: read the CPU
    cpu0 = tree_cpu(broker_pid)
    time.sleep(max(0.0, times[1] - time.monotonic()))
    cpu1 = tree_cpu(broker_pid)
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    consumed = sum(r["count"] for k, r in results if k == "consumer")
    sent = sum(r["sent"] for k, r in results if k == "producer")
    lat = sorted(x for k, r in results if k == "consumer" for x in r["lat"])

    def pct(q):
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] / 1e3) if lat else None
    return {"msg_s": round(consumed / seconds), "published": sent,
            "p50_us": pct(0.50), "p99_us": pct(0.99),
            "cpu_us_per_msg": round((cpu1 - cpu0) / consumed * 1e6, 1) if consumed else None,
            "broker_cpu_pct": round((cpu1 - cpu0) / seconds * 100)}


# ------------------------------------------------------------------ the two set-ups
def run_ours(args):
    from amqpbroker.testing import BrokerProcess
    import pika
    with tempfile.TemporaryDirectory(prefix="group-bench-") as d:
        b = BrokerProcess(d, *shlex.split(args.layout))
        b.start()
        try:
            conn = pika.BlockingConnection(pika.URLParameters(b.url))
            ch = conn.channel()
            topic = f"gb-{uuid.uuid4().hex[:6]}"
            ch.exchange_declare(topic, exchange_type="x-partitioned",
                                arguments={"x-partitions": PARTITIONS})
            conn.close()
            specs = [([topic], {"x-consumer-group": "bench"}) for _ in range(MEMBERS)]
            res = {}
            for label, rate in (("flat out", 0), ("paced", args.latency_rate)):
                res[label] = measure(b.url, b.proc.pid, topic, _route_ours, specs,
                                     args.producers, args.size, rate, args.seconds,
                                     args.warmup, args.ack_every)
                print(f"ours {label}: {json.dumps(res[label])}", file=sys.stderr)
            return res
        finally:
            b.stop()


def run_rabbit(args):
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(args.rabbit_url))
    ch = conn.channel()
    name = f"gb-{uuid.uuid4().hex[:6]}"
    streams = [f"{name}-{i}" for i in range(PARTITIONS)]
    ch.exchange_declare(name, "direct", durable=True)
    for i, s in enumerate(streams):
        ch.queue_declare(s, durable=True, arguments={"x-queue-type": "stream"})
        ch.queue_bind(s, name, str(i), arguments={"x-stream-partition-order": i})
    try:
        specs = [([streams[i], streams[i + MEMBERS]], {"x-stream-offset": "next"})
                 for i in range(MEMBERS)]
        pid = listener_pid(int(args.rabbit_url.rsplit(":", 1)[1].split("/")[0]))
        res = {}
        for label, rate in (("flat out", 0), ("paced", args.latency_rate)):
            res[label] = measure(args.rabbit_url, pid, name, _route_rabbit, specs,
                                 args.producers, args.size, rate, args.seconds, args.warmup,
                                 args.ack_every)
            print(f"rabbitmq {label}: {json.dumps(res[label])}", file=sys.stderr)
        return res
    finally:
        for s in streams:
            ch.queue_delete(s)
        ch.exchange_delete(name)
        conn.close()


# ------------------------------------------------------------------ replay
async def _fill(url, queue, size, count, out):
    import aiormq
    conn = await aiormq.connect(url)
    ch = await conn.channel(publisher_confirms=True)
    window = asyncio.Semaphore(1024)
    body = b"r" * size
    pending = set()

    async def one():
        try:
            await ch.basic_publish(body, routing_key=queue)
        finally:
            window.release()
    for _ in range(count):
        await window.acquire()
        t = asyncio.ensure_future(one())
        pending.add(t)
        t.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=120)
    await conn.close()
    out.put(count)


def fill_main(*args):
    asyncio.run(_fill(*args))


async def _replay(url, queue, count):
    import aiormq
    conn = await aiormq.connect(url)
    ch = await conn.channel()
    await ch.basic_qos(prefetch_count=2000)
    done = asyncio.get_running_loop().create_future()
    got = [0, 0]

    async def on_message(msg):
        got[0] += 1
        got[1] += len(msg.body)
        if got[0] % 500 == 0:
            await ch.basic_ack(msg.delivery_tag, multiple=True)
        if got[0] == count and not done.done():
            done.set_result(None)
    t0 = time.monotonic()
    await ch.basic_consume(queue, on_message, arguments={"x-stream-offset": "first"})
    await done
    elapsed = time.monotonic() - t0
    await conn.close()
    return got[1], elapsed


def replay_main(url, queue, count, go, out):
    go.wait()
    out.put(asyncio.run(_replay(url, queue, count)))


def replay(url: str, queue: str, count: int, readers: int):
    """readers processes each read the whole stream from first at once: (bytes, seconds)
    in all, from the start signal to the last one done."""
    ctx = mp.get_context("spawn")
    out, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=replay_main, args=(url, queue, count, go, out))
             for _ in range(readers)]
    for p in procs:
        p.start()
    t0 = time.monotonic()
    go.set()
    results = [out.get(timeout=3600) for _ in procs]
    elapsed = time.monotonic() - t0
    for p in procs:
        p.join(30)
    return sum(n for n, _ in results), elapsed


def dd(path: str, direct: bool) -> float:
    """MB/s of dd reading path (1 MiB blocks), from its own report."""
    cmd = ["dd", f"if={path}", "of=/dev/null", "bs=1M"] + (["iflag=direct"] if direct else [])
    err = subprocess.run(cmd, capture_output=True, text=True).stderr
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", err)
    return int(m.group(1)) / float(m.group(2)) / 1e6


def drop_cache(paths) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_replay(args):
    from amqpbroker.testing import BrokerProcess
    import pika
    count = args.replay_bytes // args.replay_size
    with tempfile.TemporaryDirectory(prefix="group-bench-replay-", dir=args.replay_dir) as d:
        b = BrokerProcess(d, *shlex.split(args.layout))
        b.start()
        try:
            conn = pika.BlockingConnection(pika.URLParameters(b.url))
            queue = f"replay-{uuid.uuid4().hex[:6]}"
            conn.channel().queue_declare(queue, durable=True,
                                         arguments={"x-queue-type": "stream"})
            conn.close()
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            fillers = 2
            t0 = time.monotonic()
            procs = [ctx.Process(target=fill_main, args=(b.url, queue, args.replay_size,
                                                         count // fillers, out))
                     for _ in range(fillers)]
            for p in procs:
                p.start()
            stored = sum(out.get(timeout=3600) for _ in procs)
            for p in procs:
                p.join()
            fill_s = time.monotonic() - t0
            print(f"filled {stored} messages in {fill_s:.1f}s", file=sys.stderr)
            # the broker holds this one queue: every file under queues/ is its log
            files = [f for f in glob.glob(os.path.join(d, "queues", "**", "*"), recursive=True)
                     if os.path.isfile(f)]
            on_disk = sum(os.path.getsize(f) for f in files)
            res = {"messages": stored, "size": args.replay_size, "log_bytes": on_disk,
                   "fill_msg_s": round(stored / fill_s)}
            for label, readers in (("warm", 1), ("cold", 1),
                                   (f"warm, {args.replay_readers} readers at once",
                                    args.replay_readers)):
                if label == "cold":
                    drop_cache(files)
                cpu0 = tree_cpu(b.proc.pid)
                nbytes, secs = replay(b.url, queue, stored, readers)
                cpu = tree_cpu(b.proc.pid) - cpu0
                res[label] = {"MB_s": round(nbytes / secs / 1e6, 1),
                              "msg_s": round(stored * readers / secs),
                              "seconds": round(secs, 1),
                              "broker_cpu_us_per_msg": round(cpu / stored / readers * 1e6, 2),
                              "broker_cpu_pct": round(cpu / secs * 100)}
                print(f"replay {label}: {json.dumps(res[label])}", file=sys.stderr)
            biggest = max((f for f in files if f.endswith(".log")), key=os.path.getsize)
            drop_cache(files)
            res["dd_direct_MB_s"] = round(dd(biggest, True), 1)
            res["dd_cached_MB_s"] = round(dd(biggest, False), 1)
            res["dd_file_bytes"] = os.path.getsize(biggest)
            return res
        finally:
            b.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--which", default="ours,rabbitmq,replay")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--producers", type=int, default=2)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--ack-every", type=int, default=ACK_EVERY,
                   help="consumers ack (multiple) every N deliveries")
    p.add_argument("--latency-rate", type=int, default=500,
                   help="messages/s in all for the paced run (below what both brokers "
                        "sustain, so latency is not queueing)")
    p.add_argument("--layout", default="--workers 2 --frontends 2",
                   help="our broker's process flags")
    p.add_argument("--rabbit-url", default="amqp://guest:guest@127.0.0.1:5673/")
    p.add_argument("--replay-bytes", type=int, default=1 << 30)
    p.add_argument("--replay-size", type=int, default=16384,
                   help="message size of the replayed log (1 GiB of 1 KiB messages takes "
                        "this broker minutes to write)")
    p.add_argument("--replay-readers", type=int, default=2,
                   help="consumers reading the whole log at once, in the last replay run")
    p.add_argument("--replay-dir", default=None, help="where the replayed log is written")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    res = {"load_before": load, "args": vars(args)}
    for which in args.which.split(","):
        res[which] = {"ours": run_ours, "rabbitmq": run_rabbit, "replay": run_replay}[which](args)
    with open("/proc/loadavg") as f:
        res["load_after"] = f.read().split()[:3]
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
