"""Direct reply-to: RPC replies through the pseudo-queue amq.rabbitmq.reply-to."""
from __future__ import annotations

import asyncio

import aio_pika
import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from .conftest import wait_until

REPLY_TO = "amq.rabbitmq.reply-to"


def test_direct_reply_to_rpc_pika(conn, uniq, cleanup):
    server = conn.channel()
    rpc_q = cleanup.queue(server.queue_declare(uniq("rpc")).method.queue)
    seen_reply_to = []

    def on_request(c, m, props, body):
        seen_reply_to.append(props.reply_to)
        c.basic_publish("", props.reply_to, body.upper(),
                        pika.BasicProperties(correlation_id=props.correlation_id))
        c.basic_ack(m.delivery_tag)

    server.basic_consume(rpc_q, on_request)
    client = conn.channel()
    replies = []
    client.basic_consume(REPLY_TO, lambda c, m, p, b: replies.append((m, p, b)), auto_ack=True)
    client.basic_publish("", rpc_q, b"ping", pika.BasicProperties(reply_to=REPLY_TO, correlation_id="c1"))
    wait_until(lambda: conn.process_data_events(time_limit=0.02) or replies)
    ((m, props, body),) = replies
    assert body == b"PING" and props.correlation_id == "c1"
    # The broker rewrote reply_to to a channel-specific name.
    assert seen_reply_to[0].startswith(REPLY_TO + ".") and seen_reply_to[0] != REPLY_TO
    assert m.routing_key == seen_reply_to[0]


async def test_direct_reply_to_rpc_aiopika(broker_url, uniq):
    conn = await aio_pika.connect(broker_url)
    try:
        ch = await conn.channel()
        rpc_q = await ch.declare_queue(uniq("rpc"), auto_delete=True)

        async def on_request(msg: aio_pika.abc.AbstractIncomingMessage):
            async with msg.process():
                await ch.default_exchange.publish(
                    aio_pika.Message(str(int(msg.body) * 2).encode(), correlation_id=msg.correlation_id),
                    routing_key=msg.reply_to)

        await rpc_q.consume(on_request)
        client = await conn.channel()
        reply_queue = await client.get_queue(REPLY_TO, ensure=False)
        futures: dict[str, asyncio.Future] = {}

        async def on_reply(msg: aio_pika.abc.AbstractIncomingMessage):
            futures.pop(msg.correlation_id).set_result(int(msg.body))

        await reply_queue.consume(on_reply, no_ack=True)
        for i in range(5):
            futures[str(i)] = asyncio.get_running_loop().create_future()
        pending = list(futures.values())
        for i in range(5):
            await client.default_exchange.publish(
                aio_pika.Message(str(i).encode(), correlation_id=str(i), reply_to=REPLY_TO),
                routing_key=rpc_q.name)
        assert await asyncio.wait_for(asyncio.gather(*pending), 5) == [0, 2, 4, 6, 8]
    finally:
        await conn.close()


def test_publish_with_reply_to_without_consumer_is_406(conn, uniq):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to=REPLY_TO))
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"


def test_reply_consumer_must_be_no_ack_406(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=False)
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - reply consumer cannot acknowledge"


def test_reply_to_pseudo_queue_passive_declare(ch):
    ok = ch.queue_declare(REPLY_TO, passive=True)
    # RabbitMQ answers with a fixed consumer_count of 1 for the pseudo-queue.
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (REPLY_TO, 0, 1)


def test_reply_to_dead_channel_is_dropped(connect, uniq, cleanup):
    a = connect()
    client = a.channel()
    client.basic_consume(REPLY_TO, lambda *a_: None, auto_ack=True)
    rpc_q = cleanup.queue(uniq("rpc"))
    client.queue_declare(rpc_q)
    client.confirm_delivery()
    client.basic_publish("", rpc_q, b"req", pika.BasicProperties(reply_to=REPLY_TO))
    server = connect().channel()
    ((_, props, _),) = [server.basic_get(rpc_q, auto_ack=True)]
    a.close()
    server.confirm_delivery()
    # The requester is gone: the reply is silently dropped (still confirmed).
    server.basic_publish("", props.reply_to, b"late reply")
    assert server.is_open
