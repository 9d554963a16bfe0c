"""RabbitMQ's six tutorials, written with aio-pika as the tutorials' asyncio versions do."""
from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest

from .test_tutorials_pika import TOPIC_CASES, fib


@pytest.fixture
async def connection(broker_url):
    conn = await aio_pika.connect(broker_url)
    yield conn
    await conn.close()


async def get_n(queue: aio_pika.abc.AbstractQueue, n: int, timeout: float = 5.0) -> list[bytes]:
    """Consume exactly ``n`` messages (acking them) within ``timeout``."""
    out: list[bytes] = []

    async def run():
        async with queue.iterator() as it:
            async for message in it:
                async with message.process():
                    out.append(message.body)
                if len(out) == n:
                    return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_1_hello_world(connection, uniq):
    ch = await connection.channel()
    queue = await ch.declare_queue(uniq("hello"), auto_delete=True)
    await ch.default_exchange.publish(aio_pika.Message(b"Hello World!"), routing_key=queue.name)
    assert await get_n(queue, 1) == [b"Hello World!"]
    await queue.delete()


async def test_2_work_queues_fair_dispatch(connection, uniq):
    producer = await connection.channel()
    queue_name = uniq("task_queue")
    await producer.declare_queue(queue_name, durable=True)
    got: dict[str, list[bytes]] = {"slow": [], "fast": []}
    held: list[aio_pika.abc.AbstractIncomingMessage] = []
    done = asyncio.Event()

    async def start(name: str, ack: bool):
        ch = await connection.channel()
        await ch.set_qos(prefetch_count=1)
        q = await ch.get_queue(queue_name)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage):
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            got[name].append(message.body)
            if ack:
                await message.ack()
            else:
                held.append(message)
            if sum(map(len, got.values())) == 6:
                done.set()

        await q.consume(on_message)
        return ch

    slow = await start("slow", ack=False)
    await start("fast", ack=True)
    for i in range(6):
        await producer.default_exchange.publish(
            aio_pika.Message(f"task {i}".encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue_name)
    await asyncio.wait_for(done.wait(), 5)
    assert len(got["slow"]) == 1 and len(got["fast"]) == 5
    await held[0].ack()
    await slow.close()
    q = await producer.get_queue(queue_name)
    await q.delete(if_unused=False, if_empty=False)


async def test_3_publish_subscribe_fanout(connection, uniq):
    ch = await connection.channel()
    logs = await ch.declare_exchange(uniq("logs"), aio_pika.ExchangeType.FANOUT, auto_delete=True)
    queues = [await ch.declare_queue(exclusive=True) for _ in range(2)]
    for q in queues:
        await q.bind(logs)
    await logs.publish(aio_pika.Message(b"log line"), routing_key="")
    for q in queues:
        assert await get_n(q, 1) == [b"log line"]
    await logs.delete()


async def test_4_routing_direct(connection, uniq):
    ch = await connection.channel()
    ex = await ch.declare_exchange(uniq("direct_logs"), aio_pika.ExchangeType.DIRECT)
    errors_only = await ch.declare_queue(exclusive=True)
    everything = await ch.declare_queue(exclusive=True)
    await errors_only.bind(ex, routing_key="error")
    for severity in ("info", "warning", "error"):
        await everything.bind(ex, routing_key=severity)
    for severity in ("info", "warning", "error", "debug"):
        await ex.publish(aio_pika.Message(severity.encode()), routing_key=severity)
    assert await get_n(everything, 3) == [b"info", b"warning", b"error"]
    assert await get_n(errors_only, 1) == [b"error"]
    assert await errors_only.get(fail=False) is None
    await ex.delete()


async def test_5_topics(connection, uniq):
    ch = await connection.channel()
    ex = await ch.declare_exchange(uniq("topic_logs"), aio_pika.ExchangeType.TOPIC)
    q1 = await ch.declare_queue(exclusive=True)
    q2 = await ch.declare_queue(exclusive=True)
    await q1.bind(ex, "*.orange.*")
    await q2.bind(ex, "*.*.rabbit")
    await q2.bind(ex, "lazy.#")
    for key, _, _ in TOPIC_CASES:
        await ex.publish(aio_pika.Message(key.encode()), routing_key=key)
    want1 = [k.encode() for k, a, _ in TOPIC_CASES if a]
    want2 = [k.encode() for k, _, b in TOPIC_CASES if b]
    assert await get_n(q1, len(want1)) == want1
    assert await get_n(q2, len(want2)) == want2
    assert await q1.get(fail=False) is None and await q2.get(fail=False) is None
    await ex.delete()


async def test_6_rpc(connection, uniq):
    server_ch = await connection.channel()
    rpc_queue = await server_ch.declare_queue(uniq("rpc_queue"), auto_delete=True)

    async def on_request(message: aio_pika.abc.AbstractIncomingMessage):
        async with message.process():
            n = int(message.body)
            await server_ch.default_exchange.publish(
                aio_pika.Message(str(fib(n)).encode(), correlation_id=message.correlation_id),
                routing_key=message.reply_to)

    await rpc_queue.consume(on_request)

    client_ch = await connection.channel()
    callback_queue = await client_ch.declare_queue(exclusive=True)
    futures: dict[str, asyncio.Future] = {}

    async def on_response(message: aio_pika.abc.AbstractIncomingMessage):
        await message.ack()
        futures.pop(message.correlation_id).set_result(int(message.body))

    await callback_queue.consume(on_response)

    async def call(n: int) -> int:
        corr = str(uuid.uuid4())
        fut = asyncio.get_running_loop().create_future()
        futures[corr] = fut
        await client_ch.default_exchange.publish(
            aio_pika.Message(str(n).encode(), correlation_id=corr, reply_to=callback_queue.name),
            routing_key=rpc_queue.name)
        return await asyncio.wait_for(fut, 5)

    results = await asyncio.gather(*(call(n) for n in (0, 1, 10, 20)))
    assert results == [0, 1, 55, 6765]
    assert futures == {}
