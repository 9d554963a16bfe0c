"""Broker memory with a deep durable queue: fill one queue with 1 GiB of 1 KiB persistent
messages (publisher confirms), then drain it; report the broker's RSS (VmRSS of the broker
process) before, while filling, when full, and while a consumer drains it.
The requirement is RSS < 256 MiB throughout.

    python bench/queue_memory.py [--gib 1] [--size 1024] [--publishers 4] [--window 1000]
                                 [--data-dir DIR] [-- extra broker flags]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import aiormq  # noqa: E402
from pamqp import body as pbody  # noqa: E402
from pamqp import commands as spec  # noqa: E402
from pamqp import frame as pframe  # noqa: E402
from pamqp import header as pheader  # noqa: E402

from amqpbroker.testing import BrokerProcess  # noqa: E402

MIB = 1024 * 1024


def vmrss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Samples VmRSS every 0.2 s; `phase` names what is going on; keeps the peak per phase."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.phase = "idle"
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                rss = vmrss(self.pid)
            except OSError:
                return
            self.peak[self.phase] = max(self.peak.get(self.phase, 0), rss)
            self.stop.wait(0.2)


class RawAMQP:
    """A minimal asyncio AMQP 0-9-1 client: handshake with pamqp, then pre-encoded publishes
    and hand-parsed deliveries, so that the client is not the bottleneck of the benchmark."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int) -> "RawAMQP":
        reader, writer = await asyncio.open_connection(host, port)
        c = cls(reader, writer)
        writer.write(pheader.ProtocolHeader().marshal())
        await c.expect("Connection.Start")
        c.send(0, spec.Connection.StartOk(client_properties={"product": "queue_memory"},
                                          mechanism="PLAIN", response="\0guest\0guest"))
        tune = await c.expect("Connection.Tune")
        c.send(0, spec.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max,
                                         heartbeat=0))
        c.send(0, spec.Connection.Open(virtual_host="/"))
        await c.expect("Connection.OpenOk")
        c.send(1, spec.Channel.Open())
        await c.expect("Channel.OpenOk")
        return c

    def send(self, channel: int, frame) -> None:
        self.writer.write(pframe.marshal(frame, channel))

    async def read_frame(self) -> tuple[int, bytes]:
        head = await self.reader.readexactly(7)
        ftype, _, size = struct.unpack(">BHI", head)
        payload = await self.reader.readexactly(size + 1)
        return ftype, payload[:-1]

    async def expect(self, name: str):
        while True:
            ftype, payload = await self.read_frame()
            if ftype != 1:
                continue
            _, _, value = pframe.unmarshal(struct.pack(">BHI", 1, 0, len(payload)) + payload
                                           + b"\xce")
            if value.name == name:
                return value
            raise RuntimeError(f"expected {name}, got {value!r}")

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except Exception:
            pass


ACK = struct.Struct(">HHQB")       # class 60, method 80 (ack): delivery tag, multiple bit


async def fill(host: str, port: int, total: int, size: int, publishers: int, window: int) -> float:
    """Each publisher streams publishes with confirms, at most `window` unconfirmed."""
    one_msg = b"".join(pframe.marshal(f, 1) for f in (
        spec.Basic.Publish(exchange="", routing_key="deep"),
        pheader.ContentHeader(0, size, spec.Basic.Properties(delivery_mode=2)),
        pbody.ContentBody(b"x" * size)))
    t0 = time.monotonic()

    async def one(n: int) -> None:
        c = await RawAMQP.connect(host, port)
        c.send(1, spec.Confirm.Select())
        await c.expect("Confirm.SelectOk")
        sent = confirmed = 0
        while confirmed < n:
            burst = min(n - sent, window - (sent - confirmed))
            if burst > 0:
                c.writer.write(one_msg * burst)
                sent += burst
                await c.writer.drain()
            ftype, payload = await c.read_frame()
            if ftype == 1 and payload[:4] == b"\x00\x3c\x00\x50":       # basic.ack
                _, _, tag, _ = ACK.unpack(payload)
                confirmed = max(confirmed, tag)
            elif ftype == 1:
                raise RuntimeError(f"unexpected frame {payload[:4]!r} while publishing")
        await c.close()

    counts = [total // publishers] * publishers
    counts[0] += total - sum(counts)
    await asyncio.gather(*(one(n) for n in counts))
    return time.monotonic() - t0


async def drain(host: str, port: int, total: int, prefetch: int = 2000) -> float:
    c = await RawAMQP.connect(host, port)
    c.send(1, spec.Basic.Qos(prefetch_count=prefetch))
    await c.expect("Basic.QosOk")
    c.send(1, spec.Basic.Consume(queue="deep"))
    await c.expect("Basic.ConsumeOk")
    t0 = time.monotonic()
    got = 0
    while got < total:
        ftype, payload = await c.read_frame()
        if ftype == 1 and payload[:4] == b"\x00\x3c\x00\x3c":           # basic.deliver
            got += 1
            if got % (prefetch // 4) == 0 or got == total:
                tag_at = 5 + payload[4]
                tag = struct.unpack_from(">Q", payload, tag_at)[0]
                c.send(1, spec.Basic.Ack(delivery_tag=tag, multiple=True))
    elapsed = time.monotonic() - t0
    await c.writer.drain()
    await c.close()
    return elapsed


async def declare(url: str) -> None:
    conn = await aiormq.connect(url)
    ch = await conn.channel()
    await ch.queue_declare("deep", durable=True)
    await conn.close()


async def queue_depth(url: str) -> int:
    conn = await aiormq.connect(url)
    ch = await conn.channel()
    n = (await ch.queue_declare("deep", passive=True)).message_count
    await conn.close()
    return n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--publishers", type=int, default=4)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--data-dir")
    p.add_argument("broker_args", nargs="*")
    a = p.parse_args()
    total = int(a.gib * 1024 * MIB) // a.size
    data = a.data_dir or tempfile.mkdtemp(prefix="queue-memory-")
    broker = BrokerProcess(data, *a.broker_args).start()
    sampler = Sampler(broker.proc.pid)
    try:
        time.sleep(0.5)
        before = vmrss(broker.proc.pid)
        sampler.start()
        asyncio.run(declare(broker.url))
        sampler.phase = "fill"
        fill_s = asyncio.run(fill(broker.host, broker.port, total, a.size, a.publishers,
                                    a.window))
        sampler.phase = "full"
        depth = asyncio.run(queue_depth(broker.url))
        time.sleep(1.0)
        full = vmrss(broker.proc.pid)
        sampler.phase = "drain"
        drain_s = asyncio.run(drain(broker.host, broker.port, depth))
        sampler.phase = "drained"
        time.sleep(1.0)
        after = vmrss(broker.proc.pid)
    finally:
        sampler.stop.set()
        broker.stop()
        if not a.data_dir:
            shutil.rmtree(data, ignore_errors=True)
    peak = sampler.peak
    print(f"messages:            {total} x {a.size} B = {total * a.size / MIB:.0f} MiB "
          f"(queue depth when full: {depth})")
    print(f"fill:                {fill_s:.1f} s ({total / fill_s:.0f} msg/s, "
          f"{a.publishers} publishers, window {a.window}, confirms)")
    print(f"drain:               {drain_s:.1f} s ({depth / drain_s:.0f} msg/s)")
    print(f"RSS before:          {before / MIB:.1f} MiB")
    print(f"RSS peak while fill: {peak.get('fill', 0) / MIB:.1f} MiB")
    print(f"RSS when full:       {full / MIB:.1f} MiB")
    print(f"RSS peak in drain:   {peak.get('drain', 0) / MIB:.1f} MiB")
    print(f"RSS after drain:     {after / MIB:.1f} MiB")
    worst = max([before, full, after, *peak.values()])
    ok = worst < 256 * MIB
    print(f"max RSS {worst / MIB:.1f} MiB: {'OK' if ok else 'OVER'} the 256 MiB limit")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
