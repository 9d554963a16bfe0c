"""The stream protocol end to end with rstream (RabbitMQ's Python stream client), against any
brokers serving it, interleaved: ours (``--stream-port``) beside RabbitMQ's rabbitmq_stream.

    python bench/stream_protocol_bench.py --target ours=127.0.0.1:5552:<pid> \\
        --target rabbitmq=127.0.0.1:5851:<beam pid> --mode publish,consume --size 16,1024 \\
        --count 50000 --repeat 3

Each run makes a fresh stream. Mode ``publish``: one producer publishes ``count`` messages of
``size`` bytes in batches of ``window`` (rstream's ``send_batch``), timed from the first
publish to the last confirm. Mode ``consume``: the messages are published first (not timed),
then one consumer reads them all from ``first`` with rstream's default credit, timed from
the subscribe to the last message. Raw bytes (no AMQP 1.0 encoding), as rstream sends
``bytes``; modes ``publish-amqp10`` and ``consume-amqp10`` send an AMQP 1.0 message instead
(rstream's ``AMQPMessage``: a message-id, a content type, two application properties and the
body; encoded once, so the client's own encoder is not what is measured), which the broker
converts for its AMQP 0-9-1 side. Reported: messages per second, and the broker's CPU per message over the whole
run (for ``consume`` the publishing too; its process group, from /proc, when a pid is
given): a markdown table of medians.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import plugin_bench                                     # noqa: E402


def _message(size: int, amqp10: bool) -> bytes:
    if not amqp10:
        return b"x" * size
    from rstream import AMQPMessage, Properties
    return bytes(AMQPMessage(body=b"x" * size, properties=Properties(
        message_id="order-42", content_type="application/octet-stream"),
        application_properties={"region": "emea", "attempt": 1}))


async def _publish(producer, stream: str, count: int, size: int, window: int,
                   amqp10: bool = False) -> None:
    body = _message(size, amqp10)
    confirmed = 0
    done = asyncio.get_running_loop().create_future()

    def on_confirm(status) -> None:
        nonlocal confirmed
        confirmed += 1
        if confirmed == count and not done.done():
            done.set_result(None)
    for i in range(0, count, window):
        await producer.send_batch(stream, [body] * min(window, count - i),
                                  on_publish_confirm=on_confirm)
    await asyncio.wait_for(done, 600)


async def run_once(host, port, mode, size, count, window) -> float:
    from rstream import Consumer, ConsumerOffsetSpecification, OffsetType, Producer
    stream = f"bench-{uuid.uuid4().hex[:8]}"
    kw = dict(username="guest", password="guest")
    async with Producer(host, port, **kw) as producer:
        await producer.create_stream(stream)
        start = time.perf_counter()
        await _publish(producer, stream, count, size, window, mode.endswith("-amqp10"))
        end = time.perf_counter()
    if mode.startswith("consume"):
        got = 0
        done = asyncio.get_running_loop().create_future()

        def on_message(_msg, _ctx) -> None:
            nonlocal got
            got += 1
            if got == count and not done.done():
                done.set_result(time.perf_counter())
        async with Consumer(host, port, **kw) as consumer:
            start = time.perf_counter()
            await consumer.subscribe(stream, on_message, offset_specification=(
                ConsumerOffsetSpecification(OffsetType.FIRST, None)))
            end = await asyncio.wait_for(done, 600)
    async with Producer(host, port, **kw) as producer:
        await producer.delete_stream(stream)
    return count / (end - start)


if __name__ == "__main__":
    plugin_bench.main(__doc__, "mode", "publish,consume", run_once)
