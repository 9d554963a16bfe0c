"""MQTT throughput end to end: one publisher, one subscriber, raw asyncio clients (the
broker's cost, not paho's), against any MQTT 3.1.1 brokers, interleaved.

    python bench/mqtt_bench.py --target ours=127.0.0.1:1883:<pid> \\
        --target rabbitmq=127.0.0.1:1884:<pid> --qos 0,1 --size 16,1024 --count 50000 --repeat 3

A QoS written ``v5:0`` / ``v5:1`` runs both clients as MQTT 5 clients (no properties).

Each run: a subscriber (clean session) subscribes to a fresh topic with the QoS; a publisher
sends ``count`` messages of ``size`` bytes (QoS 1: at most ``window`` without their PUBACK);
the subscriber PUBACKs each QoS 1 delivery. Reported: messages per second from the first
publish to the last arrival, and the broker's CPU per message (the process and its process
group, from /proc, when a pid is given: start a split-layout broker with ``setsid`` so its
children are counted). Prints a markdown table of medians.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from amqpbroker.mqtt import frames as f      # noqa: E402  (the codec, used as a client)
import plugin_bench                          # noqa: E402


class Conn:
    def __init__(self, reader, writer):
        self.reader, self.writer, self.parser = reader, writer, f.Parser()
        self.pending: list = []

    @classmethod
    async def open(cls, host, port, client_id, level=4):
        reader, writer = await asyncio.open_connection(host, port)
        conn = cls(reader, writer)
        writer.write(f.connect_packet(client_id, username="guest", password="guest",
                                      level=level))
        assert (await conn.next()).kind == f.CONNACK
        conn.parser.level = level
        return conn

    async def next(self):
        while not self.pending:
            await self._read()
        return self.pending.pop(0)

    async def batch(self) -> list:
        """What has arrived: at least one packet."""
        while not self.pending:
            await self._read()
        out, self.pending = self.pending, []
        return out

    async def _read(self):
        data = await self.reader.read(1 << 16)
        if not data:
            raise ConnectionError("closed")
        self.pending.extend(self.parser.feed(data))

    def close(self):
        self.writer.write(f._packet(f.DISCONNECT, 0, b""))
        self.writer.close()


async def run_once(host, port, mode, size, count, window) -> float:
    level = 5 if mode.startswith("v5:") else 4
    qos = int(mode.removeprefix("v5:"))
    v5 = b"\x00" if level == 5 else b""            # an empty property list
    topic = f"bench/{uuid.uuid4().hex[:8]}"
    sub = await Conn.open(host, port, "bench-sub-" + uuid.uuid4().hex[:6], level)
    sub.writer.write(f._packet(f.SUBSCRIBE, 2, b"\x00\x01" + v5 + f._string(topic)
                               + bytes([qos])))
    assert (await sub.next()).kind == f.SUBACK
    pub = await Conn.open(host, port, "bench-pub-" + uuid.uuid4().hex[:6], level)
    payload = b"x" * size
    done = asyncio.get_running_loop().create_future()

    async def receive():
        got = 0
        while got < count:
            for p in await sub.batch():
                if isinstance(p, f.Publish):
                    got += 1
                    if p.qos:
                        sub.writer.write(f.puback_packet(p.packet_id))
        done.set_result(time.perf_counter())

    receiver = asyncio.create_task(receive())
    start = time.perf_counter()
    if qos == 0:
        chunk = f.publish_packet(topic, payload, level=level) * 100
        for _ in range(count // 100):
            pub.writer.write(chunk)
            await pub.writer.drain()
    else:
        sent = acked = 0
        while acked < count:
            while sent < count and sent - acked < window:
                sent += 1
                pub.writer.write(f.publish_packet(topic, payload, 1, (sent % 65535) + 1,
                                                  level=level))
            for p in await pub.batch():
                if isinstance(p, f.PubAck):
                    acked += 1
    end = await asyncio.wait_for(done, 120)
    await receiver
    pub.close()
    sub.close()
    return count / (end - start)


if __name__ == "__main__":
    plugin_bench.main(__doc__, "QoS", "0,1", run_once)
