"""STOMP throughput end to end: one publisher, one subscriber, raw asyncio clients (the
broker's cost, not stomp.py's), against any STOMP 1.2 brokers, interleaved.

    python bench/stomp_bench.py --target ours=127.0.0.1:61613:<pid> \\
        --target rabbitmq=127.0.0.1:61614:<pid> --mode auto,confirmed --size 16,1024 \\
        --count 50000 --repeat 3

Each run: a subscriber subscribes to a fresh ``/queue/``; a publisher SENDs ``count``
messages of ``size`` bytes to it. Mode ``auto``: no receipts, the subscriber with
``ack:auto``. Mode ``confirmed``: every SEND asks for a receipt (a publisher confirm behind
it), at most ``window`` outstanding, ``persistent:true``; the subscriber
``ack:client-individual`` with ``prefetch-count`` 500, ACKing each message. Reported:
messages per second from the first SEND to the last arrival, and the broker's CPU per
message (its process group, from /proc, when a pid is given). Prints a markdown table of
medians.
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
from amqpbroker.stomp.frames import Parser, serialize   # noqa: E402  (the codec, as a client)
import plugin_bench                                     # noqa: E402


class Conn:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.parser = Parser(1 << 24, every_length=True)
        self.pending: list = []

    @classmethod
    async def open(cls, host, port):
        reader, writer = await asyncio.open_connection(host, port)
        conn = cls(reader, writer)
        writer.write(serialize("CONNECT", [("accept-version", "1.2"), ("host", "/"),
                                           ("login", "guest"), ("passcode", "guest")]))
        assert (await conn.batch())[0].command == "CONNECTED"
        return conn

    async def batch(self) -> list:
        """What has arrived: at least one frame."""
        while not self.pending:
            data = await self.reader.read(1 << 16)
            if not data:
                raise ConnectionError("closed")
            self.pending.extend(self.parser.feed(data))
        out, self.pending = self.pending, []
        return out

    def close(self):
        self.writer.write(serialize("DISCONNECT", []))
        self.writer.close()


async def run_once(host, port, mode, size, count, window) -> float:
    dest = f"/queue/bench-{uuid.uuid4().hex[:8]}"
    confirmed = mode == "confirmed"
    sub = await Conn.open(host, port)
    sub.writer.write(serialize("SUBSCRIBE", [
        ("destination", dest), ("id", "1"), ("receipt", "sub"),
        ("ack", "client-individual" if confirmed else "auto"), ("prefetch-count", "500")]))
    assert (await sub.batch())[0].command == "RECEIPT"
    pub = await Conn.open(host, port)
    body = b"x" * size
    done = asyncio.get_running_loop().create_future()

    async def receive():
        got = 0
        while got < count:
            acks = []
            for frame in await sub.batch():
                if frame.command == "MESSAGE":
                    got += 1
                    if confirmed:
                        acks.append(serialize("ACK", [("id", frame.headers["ack"])]))
            if acks:
                sub.writer.write(b"".join(acks))
        done.set_result(time.perf_counter())

    receiver = asyncio.create_task(receive())
    start = time.perf_counter()
    if not confirmed:
        chunk = serialize("SEND", [("destination", dest)], body) * 100
        for _ in range(count // 100):
            pub.writer.write(chunk)
            await pub.writer.drain()
    else:
        sent = receipted = 0
        while receipted < count:
            frames = []
            while sent < count and sent - receipted < window:
                sent += 1
                frames.append(serialize("SEND", [("destination", dest), ("persistent", "true"),
                                                 ("receipt", str(sent))], body))
            if frames:
                pub.writer.write(b"".join(frames))
            receipted += sum(f.command == "RECEIPT" for f in await pub.batch())
    end = await asyncio.wait_for(done, 300)
    await receiver
    pub.close()
    sub.close()
    return count / (end - start)


if __name__ == "__main__":
    plugin_bench.main(__doc__, "mode", "auto,confirmed", run_once)
