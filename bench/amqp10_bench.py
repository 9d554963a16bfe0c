"""AMQP 1.0 clients on the AMQP port, ours beside RabbitMQ 3.10's rabbitmq_amqp1_0 plugin,
with a raw asyncio client (``amqpbroker/amqp10/frames.py``'s codec, transfers pre-encoded:
qpid-proton's Python layer would be the bottleneck, as pika is for AMQP 0-9-1).

    python bench/amqp10_bench.py --target ours=127.0.0.1:5698:<pid> \\
        --target rabbitmq=127.0.0.1:5801:<beam pid> --mode publish,consume --size 16,1024 \\
        --count 50000 --repeat 3

Each run declares a fresh queue over AMQP 0-9-1 (pika). Mode ``publish``: ``count``
unsettled transfers to ``/amq/queue/NAME`` as the link's credit allows, timed to the last
``accepted`` disposition. Mode ``consume``: the messages are published first (not timed),
then a receiving link gives ``window`` credit, accepts in runs of 100 and tops the credit
up, timed to the last message. Modes ``publish-properties`` and ``consume-properties`` send
messages with a header, properties (4,096 distinct message-ids) and application properties,
as client libraries do (the others a data section alone, which the broker reads without
parsing). Reported: messages per second and the broker's CPU per
message over the run (for ``consume`` the publishing too; its process group, from /proc): a
markdown table of medians
(``plugin_bench.py``).
"""
from __future__ import annotations

import asyncio
import os
import struct
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import pika                                             # noqa: E402
import plugin_bench                                     # noqa: E402

from amqpbroker.amqp10 import frames as f              # noqa: E402
from amqpbroker.stream_protocol import amqp10 as types  # noqa: E402

ACCEPTED = f.make("accepted")


class Client:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.splitter = f.Splitter(1 << 24)
        self.frames: list = []

    async def frame(self):
        while not self.frames:
            data = await self.reader.read(1 << 16)
            if not data:
                raise ConnectionError("closed")
            self.frames += self.splitter.feed(data)
        return self.frames.pop(0)

    async def expect(self, name: str):
        while True:
            fr = await self.frame()
            if fr.name == name:
                return fr
            if fr.name in ("close", "end", "detach"):
                raise RuntimeError(f"{fr.name}: {fr.fields}")


async def connect(host: str, port: int) -> Client:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f.SASL_HEADER + f.frame("sasl_init", mechanism=("symbol", "PLAIN"),
                                         initial_response=("binary", b"\0guest\0guest")))
    assert await reader.readexactly(8) == f.SASL_HEADER
    c = Client(reader, writer)
    while True:                                 # mechanisms, then the outcome
        head = await reader.readexactly(8)
        size = struct.unpack(">I", head[:4])[0]
        fr = f.decode(head[5], 0, await reader.readexactly(size - 8))
        if fr.name == "sasl_outcome":
            assert fr["code"] == 0, "login refused"
            break
    writer.write(f.AMQP_HEADER + f.frame("open", container_id=("utf8", "bench"),
                                         max_frame_size=("uint", 1 << 20))
                 + f.frame("begin", next_outgoing_id=("uint", 0),
                           incoming_window=("uint", 1 << 30), outgoing_window=("uint", 1 << 30)))
    assert await reader.readexactly(8) == f.AMQP_HEADER
    await c.expect("open")
    await c.expect("begin")
    return c


def message(size: int, full: bool = False, n: int = 0) -> bytes:
    """A data section alone, or (``full``) what qpid-proton and RabbitMQ's AMQP 1.0 client
    send for a message with properties: a header, properties (a message-id ``n``, a content
    type), two application properties, then the data."""
    data = types._section(types.DATA, ("binary", b"x" * size))
    if not full:
        return data
    return (types._section(types.HEADER, ("list", [("boolean", True)]))
            + types._section(types.PROPERTIES, ("list", [
                ("utf8", f"order-{n}"), types.NULL, types.NULL, types.NULL, types.NULL,
                types.NULL, ("symbol", "application/octet-stream")]))
            + types._section(types.APPLICATION_PROPERTIES, ("map", [
                (("utf8", "region"), ("utf8", "emea")), (("utf8", "attempt"), ("int", 1))]))
            + data)


async def publish(c: Client, queue: str, size: int, count: int, full: bool = False) -> None:
    c.writer.write(f.frame("attach", name=("utf8", "bench-out"), handle=("uint", 0),
                           role=("boolean", False), snd_settle_mode=("ubyte", 0),
                           rcv_settle_mode=("ubyte", 0),
                           source=f.make("source"),
                           target=f.make("target", address=("utf8", f"/amq/queue/{queue}")),
                           initial_delivery_count=("uint", 0)))
    await c.expect("attach")
    # distinct message-ids, as a client sends them (more than a cache of 1,024 would hold)
    bodies = [message(size, full, n) for n in range(4096 if full else 1)]
    credit = sent = settled = 0
    while settled < count:
        while credit > 0 and sent < count:
            n = min(credit, count - sent, 256)
            c.writer.write(b"".join(
                f.with_head(0, f.transfer_head(0, 0, sent + i, struct.pack(">Q", sent + i),
                                               False, False) + bodies[(sent + i) % len(bodies)])
                for i in range(n)))
            sent += n
            credit -= n
        await c.writer.drain()
        fr = await c.frame()
        if fr.name == "flow" and fr["handle"] == 0:
            credit = (fr["delivery_count"] or 0) + fr["link_credit"] - sent
        elif fr.name == "disposition":
            last = fr["last"] if fr["last"] is not None else fr["first"]
            settled += last - fr["first"] + 1
        elif fr.name in ("detach", "end", "close"):
            raise RuntimeError(f"{fr.name}: {fr.fields}")


async def consume(c: Client, queue: str, count: int, window: int) -> None:
    c.writer.write(f.frame("attach", name=("utf8", "bench-in"), handle=("uint", 1),
                           role=("boolean", True), snd_settle_mode=("ubyte", 0),
                           rcv_settle_mode=("ubyte", 0),
                           source=f.make("source", address=("utf8", f"/amq/queue/{queue}")),
                           target=f.make("target")))
    await c.expect("attach")
    got = 0
    given = window
    c.writer.write(f.frame("flow", next_incoming_id=("uint", 0),
                           incoming_window=("uint", 1 << 30), next_outgoing_id=("uint", 0),
                           outgoing_window=("uint", 1 << 30), handle=("uint", 1),
                           delivery_count=("uint", 0), link_credit=("uint", window)))
    first = None
    while got < count:
        fr = await c.frame()
        if fr.name != "transfer" or fr["more"]:
            continue
        if first is None:
            first = fr["delivery_id"]
        got += 1
        if got % 100 == 0 or got == count:
            c.writer.write(f.frame("disposition", role=("boolean", True),
                                   first=("uint", first), last=("uint", fr["delivery_id"]),
                                   settled=("boolean", True), state=ACCEPTED))
            first = None
            if given - got < window // 2:
                given = got + window
                c.writer.write(f.frame(
                    "flow", next_incoming_id=("uint", fr["delivery_id"] + 1),
                    incoming_window=("uint", 1 << 30), next_outgoing_id=("uint", 0),
                    outgoing_window=("uint", 1 << 30), handle=("uint", 1),
                    delivery_count=("uint", got), link_credit=("uint", window)))


async def run_once(host: str, port: int, mode: str, size: int, count: int,
                   window: int) -> float:
    queue = f"amqp10-bench-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.ConnectionParameters(host, port))
    ch = conn.channel()
    ch.queue_declare(queue)
    try:
        c = await connect(host, port)
        full = mode.endswith("-properties")
        if mode.startswith("consume"):
            await publish(c, queue, size, count, full)
            start = time.perf_counter()
            await consume(c, queue, count, max(window, 200))
        else:
            start = time.perf_counter()
            await publish(c, queue, size, count, full)
        rate = count / (time.perf_counter() - start)
        c.writer.close()
        return rate
    finally:
        ch.queue_delete(queue)
        conn.close()


if __name__ == "__main__":
    plugin_bench.main(__doc__, "mode", "publish,consume", run_once)
