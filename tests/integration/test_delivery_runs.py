"""The split layouts (``--workers 1``, two front-ends and two workers): a worker sends what it
dispatches to one consumer in one run as one ``Dlvs`` over the ring, and the front-end
builds the run's deliveries in one pass (``Channel.deliver_run``). Over a real socket with
aiormq, two consumers on one channel: a channel's delivery tags are 1..n with no gap or
repeat across its consumers and the runs, each delivery names its consumer, carries its
message's headers and body, in order, and is not flagged redelivered; a requeue redelivers
them flagged, with new tags, headers intact."""
from __future__ import annotations

import asyncio

import aiormq
import pytest

from amqpbroker.testing import BrokerProcess
from amqpbroker.testing.collector import Collector

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout


@pytest.fixture(scope="module", params=[("--workers", "1", "--frontends", "0"),
                                        ("--workers", "2", "--frontends", "2")],
                ids=["workers-1", "2+2"])
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("runs"), *request.param) as b:
        yield b


async def test_runs_keep_tags_consumer_tags_headers_and_redelivered_flags(broker):
    n = 300
    conn = await aiormq.connect(broker.url)
    try:
        ch = await conn.channel()
        queues = ["runs-a", "runs-b"]
        for q in queues:
            await ch.queue_declare(q)
        await ch.basic_qos(prefetch_count=10 * n)
        seen = Collector(timeout=60)
        for q in queues:
            await ch.basic_consume(q, seen.on_message, consumer_tag=f"tag-{q}")
        pub = await conn.channel(publisher_confirms=True)
        await asyncio.gather(*[
            pub.basic_publish(b"%s-%05d" % (q.encode(), i), routing_key=q,
                              properties=aiormq.spec.Basic.Properties(
                                  headers={"i": i, "queue": q}, message_id=f"{q}-{i}"))
            for i in range(n) for q in queues])
        await seen.wait(2 * n)
        assert [m.delivery_tag for m in seen.got] == list(range(1, 2 * n + 1))
        for q in queues:
            mine = [m for m in seen.got if m.delivery.consumer_tag == f"tag-{q}"]
            assert [m.body for m in mine] == [b"%s-%05d" % (q.encode(), i) for i in range(n)]
            assert [m.header.properties.headers for m in mine] == \
                [{"i": i, "queue": q} for i in range(n)]
            assert [m.header.properties.message_id for m in mine] == \
                [f"{q}-{i}" for i in range(n)]
            assert not any(m.redelivered for m in mine)
        # requeue them all: redelivered, flagged, in order, with new tags after the old
        await ch.basic_nack(2 * n, multiple=True, requeue=True)
        await seen.wait(4 * n)
        again = seen.got[2 * n:]
        assert sorted(m.delivery_tag for m in again) == list(range(2 * n + 1, 4 * n + 1))
        for q in queues:
            mine = [m for m in again if m.delivery.consumer_tag == f"tag-{q}"]
            assert [m.body for m in mine] == [b"%s-%05d" % (q.encode(), i) for i in range(n)]
            assert [m.header.properties.headers for m in mine] == \
                [{"i": i, "queue": q} for i in range(n)]
            assert all(m.redelivered for m in mine)
        # and what is published after the requeue comes as runs again, not redelivered
        await pub.basic_publish(b"late", routing_key=queues[0])
        await seen.wait(4 * n + 1)
        late = seen.got[-1]
        assert (late.body, late.redelivered, late.delivery_tag) == (b"late", False, 4 * n + 1)
        assert late.delivery.consumer_tag == f"tag-{queues[0]}"
        await ch.basic_ack(4 * n + 1, multiple=True)
        for q in queues:
            await ch.basic_cancel(f"tag-{q}")
            ok = await ch.queue_declare(q, passive=True)
            assert ok.message_count == 0 and ok.consumer_count == 0
            await ch.queue_delete(q)
    finally:
        await conn.close()


async def test_runs_of_big_and_small_bodies_to_a_no_ack_consumer(broker):
    """A run's frames come from its records' bytes in one C call (``build_deliver_run``):
    bodies past ``COPY_BODY_BELOW`` go out as slices of the run, and one past frame_max in
    several body frames; a no-ack consumer's tags count up all the same."""
    sizes = [16, 70_000, 0, 300_000, 1024, 9000, 16] * 3
    bodies = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    conn = await aiormq.connect(broker.url)
    try:
        ch = await conn.channel()
        await ch.queue_declare("runs-big")
        pub = await conn.channel(publisher_confirms=True)
        await asyncio.gather(*[pub.basic_publish(body, routing_key="runs-big")
                               for body in bodies])
        seen = Collector(timeout=60)
        await ch.basic_consume("runs-big", seen.on_message, no_ack=True, consumer_tag="big")
        await seen.wait(len(bodies))
        assert [m.body for m in seen.got] == bodies
        assert [m.delivery_tag for m in seen.got] == list(range(1, len(bodies) + 1))
        assert not any(m.redelivered for m in seen.got)
        await ch.basic_cancel("big")
        await ch.queue_delete("runs-big")
    finally:
        await conn.close()
