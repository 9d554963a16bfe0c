"""Load generator for any AMQP 0-9-1 broker: several producer and consumer *processes*.

Theory of operation
-------------------
The parent process declares a fresh topology (queue names carry the pid and a random tag), forks
one process per producer and per consumer, and hands every process the same start time ``t0`` on
the CLOCK_MONOTONIC clock (system-wide on Linux, so timestamps compare across processes). Each
producer writes ``monotonic()`` into the first 8 bytes of every body; each consumer subtracts it
on receipt, which gives the end-to-end latency without clock skew.

The measurement window is ``[t0, t0 + duration]``. Producers stop at its end (or after their
share of ``--count``); consumers keep draining for at most ``--drain`` seconds, but only
messages received inside the window count towards the consumed rate and the latency
percentiles. Broker CPU (utime + stime of the pid and its children, from /proc) and RSS are read
at the window edges when ``--broker-pid`` is given. Every process also has a hard deadline and
the parent kills stragglers, so a run always stops by itself. Queues and exchanges are deleted
at the end.

Clients: ``pika`` (SelectConnection, callbacks, writes coalesced into one send per loop turn)
or ``aiormq`` (asyncio on uvloop). ``--client`` picks one for every role; RESULTS.md has the
measurement that chose the default.

Output: one JSON line per run on stdout.
"""
from __future__ import annotations

import argparse
import array
import collections
import json
import multiprocessing as mp
import os
import secrets
import signal
import struct
import sys
import time
import urllib.parse

SCENARIOS = {
    # name: (exchange type or None for the default exchange, queues, confirms, persistent, consume)
    "publish": (None, 1, False, False, False),
    "confirm": (None, 1, True, False, False),
    "e2e": (None, 1, False, False, True),
    "fanout4": ("fanout", 4, False, False, True),
    "durable": (None, 1, True, True, True),
}
STAMP = struct.Struct("<d")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BURST = 64  # publishes per I/O-loop turn (pika)
MAX_BUFFERED = 1 << 18  # unsent bytes a pika producer may queue before it waits


# ---------------------------------------------------------------- broker process accounting

def _proc_tree(pid: int) -> list[int]:
    """pid and all its descendants (the broker may fork workers)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def broker_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, RSS bytes) summed over the broker's process tree."""
    cpu, rss = 0.0, 0
    for p in _proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            pass
    return cpu, rss


# ---------------------------------------------------------------- topology (parent process)

def _check_local(url: str) -> None:
    host = urllib.parse.urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"loadgen only sends traffic to the local machine, not to {host!r}")


def declare(url: str, scenario: str, tag: str) -> dict:
    import pika
    xtype, nqueues, _, persistent, _ = SCENARIOS[scenario]
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    exchange = ""
    queues = [f"bench-{scenario}-{tag}-{i}" for i in range(nqueues)]
    if xtype:
        exchange = f"bench-x-{tag}"
        ch.exchange_declare(exchange, xtype, durable=False, auto_delete=False)
    for q in queues:
        ch.queue_declare(q, durable=persistent, auto_delete=False)
        if xtype:
            ch.queue_bind(q, exchange, routing_key="")
    conn.close()
    return {"exchange": exchange, "routing_key": "" if xtype else queues[0], "queues": queues}


def teardown(url: str, topo: dict) -> None:
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    for q in topo["queues"]:
        ch.queue_delete(q)
    if topo["exchange"]:
        ch.exchange_delete(topo["exchange"])
    conn.close()


# ---------------------------------------------------------------- producers

def _body_maker(size: int):
    buf = bytearray(max(size, STAMP.size))
    def make() -> bytes:
        STAMP.pack_into(buf, 0, time.monotonic())
        return bytes(buf)
    return make


def _coalesce_pika_writes() -> None:
    """Make pika send everything queued in one send() instead of one per frame.

    pika's transport sends each marshalled frame with its own syscall (three per message); on a
    loaded 2-core machine that, not the broker, became the limit. Same bytes on the wire.
    """
    from pika.adapters.utils import io_services_utils as io

    def _produce(self) -> None:
        bufs = self._tx_buffers
        while bufs:
            if len(bufs) > 1:
                chunk = b"".join(bufs)
                bufs.clear()
                bufs.append(chunk)
            sent = self._sigint_safe_send(self._sock, bufs[0])
            chunk = bufs.popleft()
            if sent < len(chunk):
                bufs.appendleft(chunk[sent:])
            self._tx_buffered_byte_count -= sent

    io._AsyncTransportBase._produce = _produce


class _ConfirmTracker:
    """Counts publisher confirms, single or multiple, in any order."""

    def __init__(self) -> None:
        self.unconfirmed: collections.deque[int] = collections.deque()
        self.single: set[int] = set()
        self.acked = self.nacked = 0

    def sent(self, tag: int) -> None:
        self.unconfirmed.append(tag)

    def confirm(self, tag: int, multiple: bool, ok: bool) -> None:
        n, dq = 0, self.unconfirmed
        if multiple:
            while dq and dq[0] <= tag:
                t = dq.popleft()
                if t in self.single:
                    self.single.discard(t)
                else:
                    n += 1
        elif tag not in self.single:
            self.single.add(tag)
            n = 1
            while dq and dq[0] in self.single:
                self.single.discard(dq.popleft())
        if ok:
            self.acked += n
        else:
            self.nacked += n

    @property
    def in_flight(self) -> int:
        return len(self.unconfirmed) - len(self.single)


def producer_pika(a: dict, t0: float, results) -> None:
    """pika SelectConnection: publishes in bursts from the I/O loop, confirms asynchronously."""
    import pika
    _coalesce_pika_writes()
    props = pika.BasicProperties(delivery_mode=2 if a["persistent"] else None)
    make, ex, rk = _body_maker(a["size"]), a["exchange"], a["routing_key"]
    end, limit = t0 + a["duration"], a["count"]
    tracker = _ConfirmTracker()
    st = {"n": 0, "tag": 0, "scheduled": False, "done": False, "report": None}
    conn: pika.SelectConnection

    def buffered() -> int:
        return conn._get_write_buffer_size()  # private, but the only backpressure pika offers

    def pump() -> None:
        st["scheduled"] = False
        if st["done"]:
            return
        if time.monotonic() >= end or st["n"] >= limit:
            return finish()
        ch = st["ch"]
        burst = BURST
        if a["rate"]:  # open-loop pacing: stay on the schedule rate * elapsed
            burst = min(BURST, int(a["rate"] * (time.monotonic() - t0)) - st["n"])
            if burst <= 0:
                conn.ioloop.call_later(0.001, schedule)
                return
        for _ in range(burst):
            if st["n"] >= limit or buffered() > MAX_BUFFERED:
                break
            if a["confirm"] and tracker.in_flight >= a["window"]:
                return  # on_confirm resumes
            ch.basic_publish(ex, rk, make(), props)
            st["n"] += 1
            if a["confirm"]:
                st["tag"] += 1
                tracker.sent(st["tag"])
        schedule()

    def schedule() -> None:
        if not st["scheduled"]:
            st["scheduled"] = True
            conn.ioloop.call_later(0, pump)

    def on_confirm(frame) -> None:
        m = frame.method
        tracker.confirm(m.delivery_tag, m.multiple, isinstance(m, pika.spec.Basic.Ack))
        if st["done"]:
            if tracker.in_flight == 0:
                conn.close()
        elif tracker.in_flight < a["window"]:
            schedule()

    def finish() -> None:
        st["done"] = True
        st["report"] = {"role": "producer", "published": st["n"], "confirmed": tracker.acked,
                        "nacked": tracker.nacked, "elapsed": time.monotonic() - t0}
        if a["confirm"] and tracker.in_flight:
            conn.ioloop.call_later(a["drain"], conn.close)
        else:
            conn.close()

    def on_channel(ch) -> None:
        st["ch"] = ch
        if a["confirm"]:
            ch.confirm_delivery(on_confirm, callback=lambda _f: start())
        else:
            start()

    def start() -> None:
        conn.ioloop.call_later(max(0.0, t0 - time.monotonic()), pump)

    conn = pika.SelectConnection(
        pika.URLParameters(a["url"]),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_close_callback=lambda c, e: c.ioloop.stop())
    conn.ioloop.call_later(a["duration"] + a["warmup"] + a["drain"] + 5, conn.ioloop.stop)
    conn.ioloop.start()
    report = st["report"] or {"role": "producer", "published": st["n"], "elapsed": 0,
                              "confirmed": tracker.acked, "nacked": tracker.nacked}
    report["confirmed_total"] = tracker.acked
    results.put(report)


def producer_aiormq(a: dict, t0: float, results) -> None:
    import asyncio
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_producer_aiormq(a, t0, results))


async def _producer_aiormq(a: dict, t0: float, results) -> None:
    import asyncio
    import aiormq
    conn = await aiormq.connect(a["url"])
    ch = await conn.channel(publisher_confirms=a["confirm"])
    props = aiormq.spec.Basic.Properties(delivery_mode=2 if a["persistent"] else None)
    make, ex, rk = _body_maker(a["size"]), a["exchange"], a["routing_key"]
    window = asyncio.Semaphore(a["window"])
    confirmed = 0
    pending: set = set()

    def done(fut) -> None:
        nonlocal confirmed
        pending.discard(fut)
        window.release()
        if not fut.cancelled() and fut.exception() is None:
            confirmed += 1

    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    end, limit, n = t0 + a["duration"], a["count"], 0
    while n < limit and time.monotonic() < end:
        if a["confirm"]:
            await window.acquire()
            fut = asyncio.ensure_future(
                ch.basic_publish(make(), exchange=ex, routing_key=rk, properties=props))
            pending.add(fut)
            fut.add_done_callback(done)
        else:
            await ch.basic_publish(make(), exchange=ex, routing_key=rk, properties=props)
        n += 1
    elapsed = time.monotonic() - t0
    confirmed_in_window = confirmed
    if pending:  # let the in-flight window settle, briefly
        await asyncio.wait(pending, timeout=a["drain"])
    results.put({"role": "producer", "published": n, "confirmed": confirmed_in_window,
                 "confirmed_total": confirmed, "elapsed": elapsed})
    try:
        await asyncio.wait_for(conn.close(), 2)
    except Exception:
        pass


# ---------------------------------------------------------------- consumers

def consumer_pika(a: dict, queue: str, t0: float, results) -> None:
    """pika SelectConnection: acks are buffered and leave with the next loop iteration."""
    import pika
    _coalesce_pika_writes()
    end, hard = t0 + a["duration"], t0 + a["duration"] + a["drain"]
    lat = array.array("d")
    state = {"total": 0, "window": 0, "last": time.monotonic()}
    unpack, mono = STAMP.unpack_from, time.monotonic

    def on_message(channel, method, _props, body) -> None:
        now = mono()
        channel.basic_ack(method.delivery_tag)
        state["total"] += 1
        state["last"] = now
        if now <= end:
            state["window"] += 1
            lat.append(now - unpack(body)[0])

    def on_channel(ch) -> None:
        ch.basic_qos(prefetch_count=a["prefetch"],
                     callback=lambda _f: ch.basic_consume(queue, on_message, auto_ack=False))

    def tick() -> None:
        now = mono()
        if now >= hard or (now >= end and now - state["last"] > a["idle"]):
            conn.close()
        else:
            conn.ioloop.call_later(0.05, tick)

    conn = pika.SelectConnection(
        pika.URLParameters(a["url"]),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_close_callback=lambda c, e: c.ioloop.stop())
    conn.ioloop.call_later(0.05, tick)
    conn.ioloop.call_later(a["duration"] + a["warmup"] + a["drain"] + 5, conn.ioloop.stop)
    conn.ioloop.start()
    _report_consumer(results, state, lat)


def consumer_aiormq(a: dict, queue: str, t0: float, results) -> None:
    import asyncio
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_consumer_aiormq(a, queue, t0, results))


async def _consumer_aiormq(a: dict, queue: str, t0: float, results) -> None:
    import asyncio
    import aiormq
    conn = await aiormq.connect(a["url"])
    ch = await conn.channel()
    await ch.basic_qos(prefetch_count=a["prefetch"])
    end = t0 + a["duration"]
    lat = array.array("d")
    state = {"total": 0, "window": 0, "last": time.monotonic()}
    unpack, mono = STAMP.unpack_from, time.monotonic

    async def on_message(msg) -> None:
        now = mono()
        await msg.channel.basic_ack(msg.delivery.delivery_tag)
        state["total"] += 1
        state["last"] = now
        if now <= end:
            state["window"] += 1
            lat.append(now - unpack(msg.body)[0])

    await ch.basic_consume(queue, on_message, no_ack=False)
    hard = end + a["drain"]
    while True:
        now = time.monotonic()
        if now >= hard or (now >= end and now - state["last"] > a["idle"]):
            break
        await asyncio.sleep(0.05)
    _report_consumer(results, state, lat)
    try:
        await asyncio.wait_for(conn.close(), 2)
    except Exception:
        pass


def _report_consumer(results, state: dict, lat: array.array) -> None:
    results.put({"role": "consumer", "consumed": state["window"], "last": state["last"],
                 "consumed_total": state["total"], "latencies": lat.tobytes()})


# ---------------------------------------------------------------- orchestration

def _wait_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _percentile(sorted_vals, q: float):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def _pick_client(forced: str, role: str, confirm: bool) -> str:
    """The client per role; pika was faster for every role here (RESULTS.md, "Client choice")."""
    return "pika" if forced == "auto" else forced


def run(args: argparse.Namespace) -> dict:
    _check_local(args.url)
    xtype, nqueues, confirm, persistent, consume = SCENARIOS[args.scenario]
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    topo = declare(args.url, args.scenario, tag)
    nconsumers = 0
    if consume:
        nconsumers = max(args.consumers, nqueues)
    count_each = args.count // args.producers if args.count else 1 << 62
    base = {"url": args.url, "size": args.size, "duration": args.duration, "confirm": confirm,
            "persistent": persistent, "exchange": topo["exchange"],
            "routing_key": topo["routing_key"], "window": args.window,
            "prefetch": args.prefetch, "count": count_each, "drain": args.drain,
            "idle": args.idle, "warmup": args.warmup,
            "rate": args.rate / args.producers}
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    t0 = time.monotonic() + args.warmup
    procs = []
    pclient = _pick_client(args.client, "producer", confirm)
    cclient = _pick_client(args.client, "consumer", confirm)
    for i in range(nconsumers):
        target = consumer_pika if cclient == "pika" else consumer_aiormq
        procs.append(ctx.Process(target=target, daemon=True,
                                 args=(base, topo["queues"][i % nqueues], t0, results)))
    for _ in range(args.producers):
        target = producer_pika if pclient == "pika" else producer_aiormq
        procs.append(ctx.Process(target=target, daemon=True, args=(base, t0, results)))
    for p in procs:
        p.start()

    usage0 = usage1 = None
    if args.broker_pid:
        _wait_until(t0)
        usage0 = broker_usage(args.broker_pid)
        _wait_until(t0 + args.duration)
        usage1 = broker_usage(args.broker_pid)

    reports = []
    hard_deadline = t0 + args.duration + args.drain + 15
    while len(reports) < len(procs) and time.monotonic() < hard_deadline:
        try:
            reports.append(results.get(timeout=max(0.1, hard_deadline - time.monotonic())))
        except Exception:
            break
    for p in procs:
        p.join(timeout=max(0.1, hard_deadline + 5 - time.monotonic()))
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join()
    try:
        teardown(args.url, topo)
    except Exception as e:  # report, but keep the measurement
        print(f"loadgen: teardown failed: {e!r}", file=sys.stderr)

    prods = [r for r in reports if r["role"] == "producer"]
    cons = [r for r in reports if r["role"] == "consumer"]
    published = sum(r["published"] for r in prods)
    lat = array.array("d")
    for r in cons:
        lat.frombytes(r["latencies"])
    lat_sorted = sorted(lat)
    # with --count the producers may finish early: rates over the time actually used
    pub_secs = cons_secs = args.duration
    if args.count and prods:
        pub_secs = min(args.duration, max(r["elapsed"] for r in prods)) or args.duration
        if cons:
            cons_secs = min(args.duration, max(r["last"] for r in cons) - t0) or args.duration
    out = {
        "scenario": args.scenario, "size": args.size, "url": args.url,
        "producers": args.producers, "consumers": nconsumers,
        "client": {"producer": pclient, "consumer": cclient if consume else None},
        "duration": args.duration,
        "published": published,
        "publish_rate": round(published / pub_secs, 1),
        "confirm_rate": (round(sum(r["confirmed"] for r in prods) / pub_secs, 1)
                         if confirm else None),
        "consumed": sum(r["consumed"] for r in cons) if consume else None,
        "consume_rate": (round(sum(r["consumed"] for r in cons) / cons_secs, 1)
                         if consume else None),
        "consumed_total": sum(r["consumed_total"] for r in cons) if consume else None,
        "latency_p50_ms": _ms(_percentile(lat_sorted, 0.50)),
        "latency_p99_ms": _ms(_percentile(lat_sorted, 0.99)),
        "missing_reports": len(procs) - len(reports),
    }
    if usage0 and usage1:
        cpu = usage1[0] - usage0[0]
        # deliveries count too: fanout4 delivers each publish 4 times
        msgs = max(published, out["consumed"] or 0)
        out["broker_cpu_s"] = round(cpu, 2)
        out["broker_cpu_s_per_million"] = round(cpu / msgs * 1e6, 2) if msgs else None
        out["broker_rss_mb_before"] = round(usage0[1] / 2**20, 1)
        out["broker_rss_mb_after"] = round(usage1[1] / 2**20, 1)
    return out


def _ms(v):
    return None if v is None else round(v * 1000, 3)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="e2e")
    p.add_argument("--size", type=int, default=1024, help="body bytes (>= 8; default 1024)")
    p.add_argument("--producers", type=int, default=1)
    p.add_argument("--consumers", type=int, default=1,
                   help="consumer processes (fanout4 uses at least one per queue)")
    p.add_argument("--duration", type=float, default=10.0, help="window seconds (default 10)")
    p.add_argument("--count", type=int, default=0,
                   help="stop after this many published messages in total (0 = time only)")
    p.add_argument("--rate", type=float, default=0,
                   help="total publish rate, msg/s, split over producers (0 = as fast as possible;"
                        " pika client only)")
    p.add_argument("--window", type=int, default=256, help="confirms in flight per producer")
    p.add_argument("--prefetch", type=int, default=100)
    p.add_argument("--client", choices=["auto", "pika", "aiormq"], default="auto")
    p.add_argument("--broker-pid", type=int, default=0)
    p.add_argument("--warmup", type=float, default=1.0,
                   help="seconds between forking and t0, for connections to open")
    p.add_argument("--drain", type=float, default=5.0,
                   help="most seconds consumers keep draining after the window")
    p.add_argument("--idle", type=float, default=0.5,
                   help="a consumer stops after this many idle seconds past the window")
    args = p.parse_args(argv)
    args.duration = min(args.duration, 600.0)  # every run is bounded
    return args


def main(argv=None) -> int:
    print(json.dumps(run(parse_args(argv))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
