"""One process (``--workers 0``): a read's publishes dispatch each queue once after the batch
(``PartitionHost.dispatch_soon``), and the deliveries reach the channel as one lot per
consumer (``Channel.deliver_many``). Over a real socket with aiormq, consumers already
waiting when the pipelined publishes arrive: each consumer gets its queue's messages in
order, a channel's delivery tags are 1..n with no gap or repeat across its consumers, a
multiple ack settles them all, a requeue redelivers them flagged and in order, a no-ack
consumer without prefetch gets past the credit window, and a channel's global prefetch still
caps what is unacked."""
from __future__ import annotations

import asyncio

import aiormq
import pytest

from amqpbroker.testing import BrokerProcess
from amqpbroker.testing.collector import Collector

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("lots"), "--workers", "0",
                       "--frontends", "0") as b:
        yield b


async def publish_all(url: str, exchange: str, key: str, bodies: list[bytes]) -> None:
    """Pipelined with confirms: the broker reads many publishes per read."""
    conn = await aiormq.connect(url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        await asyncio.gather(*[ch.basic_publish(b, exchange=exchange, routing_key=key)
                               for b in bodies])
    finally:
        await conn.close()


async def test_waiting_consumers_get_a_batch_in_order_with_one_tag_sequence(broker):
    n = 1200
    conn = await aiormq.connect(broker.url)
    try:
        ch = await conn.channel()
        await ch.exchange_declare("lots-fan", exchange_type="fanout")
        queues = [f"lots-q{i}" for i in range(3)]
        for q in queues:
            await ch.queue_declare(q)
            await ch.queue_bind(q, "lots-fan")
        await ch.basic_qos(prefetch_count=10 * n)
        seen = Collector()
        tags = {}
        for q in queues:
            ok = await ch.basic_consume(q, seen.on_message, consumer_tag=f"tag-{q}")
            tags[ok.consumer_tag] = q
        bodies = [b"%05d" % i for i in range(n)]
        await publish_all(broker.url, "lots-fan", "", bodies)
        await seen.wait(3 * n)
        assert sorted(m.delivery_tag for m in seen.got) == list(range(1, 3 * n + 1))
        for tag in tags:
            mine = [m for m in seen.got if m.delivery.consumer_tag == tag]
            assert [m.body for m in mine] == bodies
            assert [m.delivery_tag for m in mine] == sorted(m.delivery_tag for m in mine)
            assert not any(m.redelivered for m in mine)
        # requeue them all: redelivered, flagged, in order, with new tags after the old
        await ch.basic_nack(3 * n, multiple=True, requeue=True)
        await seen.wait(6 * n)
        again = seen.got[3 * n:]
        assert sorted(m.delivery_tag for m in again) == list(range(3 * n + 1, 6 * n + 1))
        for tag in tags:
            mine = [m for m in again if m.delivery.consumer_tag == tag]
            assert [m.body for m in mine] == bodies and all(m.redelivered for m in mine)
        await ch.basic_ack(6 * n, multiple=True)
        for q in queues:
            await ch.basic_cancel(f"tag-{q}")
            ok = await ch.queue_declare(q, passive=True)
            assert ok.message_count == 0 and ok.consumer_count == 0
            await ch.queue_delete(q)
        await ch.exchange_delete("lots-fan")
    finally:
        await conn.close()


async def test_a_no_ack_consumer_without_prefetch_gets_past_the_credit_window(broker):
    n = 5000                            # ten times the host's window of credit (WINDOW)
    conn = await aiormq.connect(broker.url)
    try:
        ch = await conn.channel()
        await ch.queue_declare("lots-noack")
        seen = Collector()
        await ch.basic_consume("lots-noack", seen.on_message, no_ack=True)
        bodies = [b"%05d" % i for i in range(n)]
        await publish_all(broker.url, "", "lots-noack", bodies)
        await seen.wait(n)
        assert [m.body for m in seen.got] == bodies
        assert [m.delivery_tag for m in seen.got] == list(range(1, n + 1))
        ok = await ch.queue_declare("lots-noack", passive=True)
        assert ok.message_count == 0
        await ch.queue_delete("lots-noack")
    finally:
        await conn.close()


async def test_a_global_prefetch_still_caps_a_batch(broker):
    conn = await aiormq.connect(broker.url)
    try:
        ch = await conn.channel()
        queues = ["lots-g0", "lots-g1"]
        for q in queues:
            await ch.queue_declare(q)
        await ch.basic_qos(prefetch_count=10, global_=True)
        seen = Collector()
        for q in queues:
            await ch.basic_consume(q, seen.on_message)
        for q in queues:
            await publish_all(broker.url, "", q, [b"%03d" % i for i in range(100)])
        await seen.wait(10)
        # the broker has read and dispatched every publish (they were confirmed); what it
        # delivers past the cap would arrive behind this round trip
        await ch.queue_declare(queues[0], passive=True)
        assert len(seen.got) == 10
        await ch.basic_ack(seen.got[-1].delivery_tag, multiple=True)
        await seen.wait(20)
        await ch.queue_declare(queues[0], passive=True)
        assert len(seen.got) == 20
        for q in queues:
            await ch.queue_delete(q)
    finally:
        await conn.close()


async def test_a_backlog_goes_in_runs_up_to_the_prefetch_with_requeued_ones_first(broker):
    """A plain queue with one consumer dispatches its backlog in runs up to the credit
    (``Queue._dispatch_run``): never more unacked than the prefetch, in order; messages
    requeued meanwhile come first, flagged redelivered, then the run goes on unflagged."""
    n, prefetch = 1000, 100
    bodies = [b"%05d" % i for i in range(n)]
    conn = await aiormq.connect(broker.url)
    try:
        ch = await conn.channel()
        await ch.queue_declare("lots-backlog")
        await publish_all(broker.url, "", "lots-backlog", bodies)
        await ch.basic_qos(prefetch_count=prefetch)
        seen = Collector()
        await ch.basic_consume("lots-backlog", seen.on_message)
        await seen.wait(prefetch)
        await ch.queue_declare("lots-backlog", passive=True)     # a round trip: no more came
        assert len(seen.got) == prefetch
        await ch.basic_nack(50, multiple=True, requeue=True)       # 0..49 back to the head
        await seen.wait(prefetch + 50)
        await ch.queue_declare("lots-backlog", passive=True)
        assert len(seen.got) == prefetch + 50
        again = seen.got[prefetch:]
        assert [m.body for m in again] == bodies[:50] and all(m.redelivered for m in again)
        acked = 0
        while acked < n + 50:           # ack what came, in steps, until all arrived
            await seen.wait(acked + 1)
            acked = len(seen.got)
            await ch.basic_ack(seen.got[-1].delivery_tag, multiple=True)
            if acked < n + 50:
                await seen.wait(min(acked + prefetch, n + 50))
        got = seen.got
        assert [m.body for m in got] == bodies[:prefetch] + bodies[:50] + bodies[prefetch:]
        assert [m.redelivered for m in got] == [False] * prefetch + [True] * 50 + \
            [False] * (n - prefetch)
        assert [m.delivery_tag for m in got] == list(range(1, n + 51))
        ok = await ch.queue_declare("lots-backlog", passive=True)
        assert ok.message_count == 0
        await ch.queue_delete("lots-backlog")
    finally:
        await conn.close()
