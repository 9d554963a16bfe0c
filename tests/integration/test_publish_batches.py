"""One process (``--workers 0``): publishes a connection sends back to back reach the queue
as batches (``LocalLink.hold``). Over a real socket with aiormq: every pipelined publish is
confirmed exactly once and stored in order, on a durable and a non-durable queue, a fanout
to several queues included, and a basic.get right behind them sees them all."""
from __future__ import annotations

import asyncio

import aiormq
import pytest
from pamqp import commands as spec

from amqpbroker.testing import BrokerProcess

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("batches"), "--workers", "0",
                       "--frontends", "0") as b:
        yield b


async def consume_all(channel, queue: str, n: int) -> list[bytes]:
    got: list[bytes] = []
    done = asyncio.get_running_loop().create_future()

    async def on_message(message):
        got.append(message.body)
        if len(got) == n and not done.done():
            done.set_result(None)

    await channel.basic_qos(prefetch_count=n)
    await channel.basic_consume(queue, on_message, no_ack=True)
    await asyncio.wait_for(done, 30)
    return got


@pytest.mark.parametrize("durable", [False, True])
async def test_pipelined_confirmed_publishes_are_stored_in_order(broker, durable):
    n = 1500
    conn = await aiormq.connect(broker.url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        queues = [f"batch-{durable}-{i}" for i in range(3)]
        await ch.exchange_declare("batch-fan-%s" % durable, exchange_type="fanout")
        for q in queues:
            await ch.queue_declare(q, durable=durable)
            await ch.queue_bind(q, "batch-fan-%s" % durable)
        props = spec.Basic.Properties(delivery_mode=2 if durable else 1)
        confirms = await asyncio.gather(*[
            ch.basic_publish(b"%05d" % i, exchange="batch-fan-%s" % durable, properties=props)
            for i in range(n)])
        assert all(isinstance(c, spec.Basic.Ack) for c in confirms)
        # a basic.get right behind more publishes sees them
        await asyncio.gather(*[ch.basic_publish(b"last", routing_key=queues[0])
                               for _ in range(3)])
        ok = await ch.basic_get(queues[0], no_ack=True)
        assert ok.body == b"00000"
        assert ok.delivery.message_count == n + 2
        consumer = await conn.channel()
        expected = [b"%05d" % i for i in range(n)]
        assert await consume_all(consumer, queues[0], n + 2) == expected[1:] + [b"last"] * 3
        for q in queues[1:]:
            assert await consume_all(await conn.channel(), q, n) == expected
    finally:
        await conn.close()


async def test_runs_to_one_queue_keep_order_expiration_and_persistence(broker):
    """Runs of publishes to one queue go to the host as one ``Pubs``: interleaved runs to two
    queues, persistent and transient messages, and some with a per-message TTL in the middle
    of a run (appended one by one) are all confirmed once and stored in order."""
    n = 2000
    conn = await aiormq.connect(broker.url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        await ch.queue_declare("runs-a", durable=True)
        await ch.queue_declare("runs-b", durable=False)
        sent = {"runs-a": [], "runs-b": []}
        futures = []
        for i in range(n):
            q = "runs-a" if (i // 37) % 3 else "runs-b"       # runs of 37, two to one
            props = spec.Basic.Properties(delivery_mode=2 if i % 5 else 1,
                                          expiration="600000" if i % 101 == 7 else None)
            body = b"%05d" % i
            sent[q].append(body)
            futures.append(ch.basic_publish(body, routing_key=q, properties=props))
        confirms = await asyncio.gather(*futures)
        assert all(isinstance(c, spec.Basic.Ack) for c in confirms)
        for q, bodies in sent.items():
            got = await ch.queue_declare(q, passive=True)
            assert got.message_count == len(bodies)
            assert await consume_all(await conn.channel(), q, len(bodies)) == bodies
    finally:
        await conn.close()


async def test_a_run_to_a_full_queue_nacks_exactly_what_was_not_stored(broker):
    """A queue with a limit takes a run one publish at a time (``on_pubs``' general path):
    with x-overflow reject-publish, the publishes past the limit are nacked, the rest
    acked and stored in order."""
    limit, n = 300, 700
    conn = await aiormq.connect(broker.url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        await ch.queue_declare("runs-full", arguments={"x-max-length": limit,
                                                       "x-overflow": "reject-publish"})
        confirms = await asyncio.gather(*[ch.basic_publish(b"%05d" % i, routing_key="runs-full")
                                          for i in range(n)], return_exceptions=True)
        # aiormq raises DeliveryError for a nack, carrying the frame
        kinds = [type(getattr(c, "frame", c)) for c in confirms]
        assert kinds == [spec.Basic.Ack] * limit + [spec.Basic.Nack] * (n - limit)
        assert await consume_all(await conn.channel(), "runs-full", limit) == \
            [b"%05d" % i for i in range(limit)]
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def split_broker(tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("batches-split"), "--workers", "1",
                       "--frontends", "0") as b:
        yield b


@pytest.mark.parametrize("layout", ["one process", "--workers 1"])
@pytest.mark.parametrize("refusing", ["first", "last"])
async def test_a_fanout_to_a_full_queue_nacks_what_it_refused_and_the_others_store_all(
        broker, split_broker, layout, refusing):
    """In one process a fanout's queues of one host take each message under one publish
    number (``PartitionClient.publish_routed``); over a ring each queue's publish has its
    own. Either way a message one queue refuses (x-overflow reject-publish) is nacked
    although the others stored it, whether the refusing queue is the first or the last the
    host handles (a watermark sent between the queues, or a confirm waiting for one number
    only, would ack it), the rest are acked, and every queue holds what it took, in order."""
    b = broker if layout == "one process" else split_broker
    limit, n = 250, 600
    name = f"fan-full-{refusing}"
    conn = await aiormq.connect(b.url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        await ch.exchange_declare(name, exchange_type="fanout")
        limited = name + "-limited"
        others = [name + "-a", name + "-b"]
        await ch.queue_declare(limited, arguments={"x-max-length": limit,
                                                   "x-overflow": "reject-publish"})
        for q in others:
            await ch.queue_declare(q)
        for q in ([limited, *others] if refusing == "first" else [*others, limited]):
            await ch.queue_bind(q, name)
        confirms = await asyncio.gather(*[ch.basic_publish(b"%05d" % i, exchange=name)
                                          for i in range(n)], return_exceptions=True)
        kinds = [type(getattr(c, "frame", c)) for c in confirms]
        assert kinds == [spec.Basic.Ack] * limit + [spec.Basic.Nack] * (n - limit)
        expected = [b"%05d" % i for i in range(n)]
        assert await consume_all(await conn.channel(), limited, limit) == expected[:limit]
        for q in others:
            assert await consume_all(await conn.channel(), q, n) == expected
    finally:
        await conn.close()
