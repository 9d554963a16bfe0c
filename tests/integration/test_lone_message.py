"""What the latency work (bench/RESULTS.md, "latency_1") left out of the lone message's way,
and what must still arrive without it, in both process layouts.

* A host reports its confirm watermark unasked only past a publish in confirm mode: a confirm
  that waits for an ack made earlier on the same connection, on another worker, asks for it
  (``ConfirmWanted``).
* A consumer without prefetch returns credit in lots, not per delivery: a backlog many times
  its window still all arrives.
* A non-durable queue's records reach the log by its store's write-behind rule alone
  (worker/store.py): messages read back from disk (no cache) all arrive.
"""
from __future__ import annotations

import asyncio
import uuid

import aiormq
import pika
import pytest
from pamqp import commands as spec

from amqpbroker.testing import BrokerProcess

LAYOUTS = {"one process": ("--workers", "0", "--frontends", "0"),
           "2 workers": ("--workers", "2")}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def broker(request, tmp_path_factory):
    """One broker per layout for the tests that need no flag of their own (each uses queue
    names of its own): a start costs more than these tests' traffic."""
    with BrokerProcess(tmp_path_factory.mktemp("lone"), *LAYOUTS[request.param]) as b:
        yield b


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_a_confirm_after_an_ack_on_another_worker_arrives(tmp_path):
    with BrokerProcess(tmp_path, "--workers", "2", management=True) as b:
        setup = pika.BlockingConnection(pika.URLParameters(b.url))
        sch = setup.channel()
        acked_q = b.queue_on_worker(sch, 0, "acked")
        confirmed_q = b.queue_on_worker(sch, 1, "confirmed")
        sch.basic_publish("", acked_q, b"to ack", pika.BasicProperties(delivery_mode=2))
        setup.close()

        conn = await aiormq.connect(b.url)
        plain = await conn.channel(publisher_confirms=False)
        got = await plain.basic_get(acked_q, no_ack=False)
        assert got.body == b"to ack"
        await plain.basic_ack(got.delivery_tag)       # worker 0: nothing else comes from it
        confirming = await conn.channel()             # publisher confirms on
        for i in range(3):
            answer = await asyncio.wait_for(
                confirming.basic_publish(b"%d" % i, routing_key=confirmed_q,
                                         properties=spec.Basic.Properties(delivery_mode=2)),
                timeout=10)
            assert isinstance(answer, spec.Basic.Ack)
        await conn.close()

        check = pika.BlockingConnection(pika.URLParameters(b.url))
        cch = check.channel()
        assert cch.queue_declare(acked_q, passive=True).method.message_count == 0
        assert cch.queue_declare(confirmed_q, passive=True).method.message_count == 3
        check.close()


@pytest.mark.parametrize("no_ack", [False, True], ids=["manual ack", "no ack"])
async def test_a_consumer_without_prefetch_gets_a_backlog_many_times_its_window(broker, no_ack):
    total = 2_000                                    # four windows of credit (WINDOW = 500)
    backlog, lone_q = unique("backlog"), unique("lone")
    conn = await aiormq.connect(broker.url)
    ch = await conn.channel(publisher_confirms=False)
    await ch.queue_declare(backlog)
    for i in range(total):
        await ch.basic_publish(b"%d" % i, routing_key=backlog)
    got: list[int] = []
    done = asyncio.get_running_loop().create_future()

    async def on_message(msg):
        got.append(int(msg.body))
        if not no_ack:
            await ch.basic_ack(msg.delivery_tag)
        if len(got) == total and not done.done():
            done.set_result(None)
    await ch.basic_consume(backlog, on_message, no_ack=no_ack)
    await asyncio.wait_for(done, timeout=60)
    assert got == list(range(total))
    # and the lone message after the backlog still goes straight through
    lone = asyncio.get_running_loop().create_future()
    ch2 = await conn.channel(publisher_confirms=False)
    await ch2.queue_declare(lone_q)

    async def on_lone(msg):
        lone.set_result(msg.body)
    await ch2.basic_consume(lone_q, on_lone, no_ack=True)
    await ch2.basic_publish(b"alone", routing_key=lone_q)
    assert await asyncio.wait_for(lone, timeout=10) == b"alone"
    await conn.close()


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_a_non_durable_queue_read_back_from_disk_delivers_everything(tmp_path, layout):
    total, body = 300, b"x" * 65_536
    with BrokerProcess(tmp_path, *LAYOUTS[layout], "--cache-limit", "0") as b:
        conn = await aiormq.connect(b.url)
        ch = await conn.channel()
        await ch.queue_declare("transient")
        for i in range(total):
            await ch.basic_publish(b"%06d" % i + body, routing_key="transient")
        await ch.basic_qos(prefetch_count=50)
        got: list[int] = []
        done = asyncio.get_running_loop().create_future()

        async def on_message(msg):
            got.append(int(msg.body[:6]))
            await ch.basic_ack(msg.delivery_tag)
            if len(got) == total and not done.done():
                done.set_result(None)
        await ch.basic_consume("transient", on_message)
        await asyncio.wait_for(done, timeout=60)
        assert got == list(range(total))
        await conn.close()


async def test_lone_messages_one_at_a_time_each_arrive_and_are_acked(broker):
    """latency_1's pattern over real sockets: publish on one connection, wait for the delivery
    on another, ack it, publish the next. The delivery is written in its publish's read, the
    ack of the one before is read in the same turn (frontend/session.py, ``_process``):
    each arrives once, in order, and every ack lands."""
    total = 300
    ping = unique("ping")
    pub = await aiormq.connect(broker.url)
    sub = await aiormq.connect(broker.url)
    pch = await pub.channel(publisher_confirms=False)
    sch = await sub.channel(publisher_confirms=False)
    await pch.queue_declare(ping)
    loop = asyncio.get_running_loop()
    waiting: list = []
    got: list[int] = []

    async def on_message(msg):
        got.append(int(msg.body))
        await sch.basic_ack(msg.delivery_tag)
        waiting.pop().set_result(None)
    await sch.basic_consume(ping, on_message)
    for i in range(total):
        waiting.append(loop.create_future())
        await pch.basic_publish(b"%d" % i, routing_key=ping)
        await asyncio.wait_for(waiting[0], timeout=10)
    assert got == list(range(total))
    await sub.close()                   # nothing unacked goes back to the queue
    declared = await pch.queue_declare(ping, passive=True)
    assert declared.message_count == 0
    await pub.close()
