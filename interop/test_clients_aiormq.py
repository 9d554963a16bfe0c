"""aiormq: publish, consume, confirms, basic.get, channel errors mapped to exception classes."""
from __future__ import annotations

import asyncio

import aiormq
import pytest
from pamqp import commands as spec


async def test_publish_and_consume(achannel):
    q = (await achannel.queue_declare("", exclusive=True)).queue
    got: asyncio.Queue = asyncio.Queue()

    async def on_message(message: aiormq.abc.DeliveredMessage):
        await got.put((message.body, message.header.properties.content_type,
                       message.delivery.redelivered))
        await message.channel.basic_ack(message.delivery.delivery_tag)

    ok = await achannel.basic_consume(q, on_message)
    assert ok.consumer_tag
    for i in range(3):
        await achannel.basic_publish(f"m{i}".encode(), routing_key=q,
                                     properties=spec.Basic.Properties(content_type="text/plain"))
    results = [await asyncio.wait_for(got.get(), 5) for _ in range(3)]
    assert results == [(b"m0", "text/plain", False), (b"m1", "text/plain", False),
                       (b"m2", "text/plain", False)]


async def test_publisher_confirms_ack(achannel):
    q = (await achannel.queue_declare("", exclusive=True)).queue
    results = await asyncio.gather(*(achannel.basic_publish(b"x", routing_key=q) for _ in range(50)))
    assert all(isinstance(r, spec.Basic.Ack) for r in results)
    assert (await achannel.queue_declare(q, passive=True)).message_count == 50


async def test_publisher_confirms_nack(achannel):
    q = (await achannel.queue_declare("", exclusive=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish"})).queue
    first = await achannel.basic_publish(b"1", routing_key=q)
    assert isinstance(first, spec.Basic.Ack)
    with pytest.raises(aiormq.exceptions.DeliveryError) as e:
        await achannel.basic_publish(b"2", routing_key=q)
    assert isinstance(e.value.frame, spec.Basic.Nack) and e.value.frame.delivery_tag == 2


async def test_mandatory_return(aconn, uniq):
    ch = await aconn.channel(on_return_raises=True)
    with pytest.raises(aiormq.exceptions.PublishError) as e:
        await ch.basic_publish(b"x", exchange="amq.direct", routing_key=uniq("nowhere"), mandatory=True)
    assert e.value.message.delivery.reply_code == 312
    assert e.value.message.delivery.reply_text == "NO_ROUTE"


async def test_basic_get(achannel):
    q = (await achannel.queue_declare("", exclusive=True)).queue
    await achannel.basic_publish(b"a", routing_key=q)
    await achannel.basic_publish(b"b", routing_key=q)
    m = await achannel.basic_get(q, no_ack=True)
    assert isinstance(m.delivery, spec.Basic.GetOk)
    assert (m.body, m.delivery.message_count) == (b"a", 1)
    m = await achannel.basic_get(q)
    assert m.body == b"b"
    await achannel.basic_reject(m.delivery.delivery_tag, requeue=True)
    m = await achannel.basic_get(q, no_ack=True)
    assert (m.body, m.delivery.redelivered) == (b"b", True)
    assert isinstance((await achannel.basic_get(q)).delivery, spec.Basic.GetEmpty)


async def test_channel_errors_map_to_exception_classes(aconn, uniq):
    ch = await aconn.channel()
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as e:
        await ch.queue_declare(uniq("missing"), passive=True)
    assert e.value.args[0].startswith("NOT_FOUND - no queue")

    ch = await aconn.channel()
    name = uniq("q")
    await ch.queue_declare(name, auto_delete=True, durable=False)
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as e2:
        await ch.queue_declare(name, auto_delete=True, durable=True)
    assert e2.value.args[0].startswith("PRECONDITION_FAILED - inequivalent arg 'durable'")
    await (await aconn.channel()).queue_delete(name)

    ch = await aconn.channel()
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as e3:
        await ch.exchange_declare("amq.nope", exchange_type="direct")
    assert e3.value.args[0].startswith("ACCESS_REFUSED - exchange name 'amq.nope'")
    assert not aconn.is_closed


async def test_exclusive_queue_locked_from_other_connection(aconn, broker_url, uniq):
    ch = await aconn.channel()
    name = uniq("excl")
    await ch.queue_declare(name, exclusive=True)
    other = await aiormq.connect(broker_url)
    try:
        och = await other.channel()
        with pytest.raises(aiormq.exceptions.ChannelLockedResource) as e:
            await och.queue_declare(name, passive=True)
        assert e.value.args[0].startswith("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue")
    finally:
        await other.close()


async def test_qos_limits_unacked_deliveries(achannel):
    q = (await achannel.queue_declare("", exclusive=True)).queue
    for i in range(5):
        await achannel.basic_publish(str(i).encode(), routing_key=q)
    await achannel.basic_qos(prefetch_count=2)
    got: list = []
    two = asyncio.Event()

    async def on_message(m):
        got.append(m)
        if len(got) == 2:
            two.set()

    await achannel.basic_consume(q, on_message)
    await asyncio.wait_for(two.wait(), 5)
    # Before any ack, the broker has at most 2 outstanding: 3 still ready.
    assert (await achannel.queue_declare(q, passive=True)).message_count == 3
    await achannel.basic_ack(got[1].delivery.delivery_tag, multiple=True)
    assert len(got) >= 2
