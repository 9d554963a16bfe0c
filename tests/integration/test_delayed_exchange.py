"""The x-delayed-message exchange (RabbitMQ's rabbitmq-delayed-message-exchange plugin, which
RabbitMQ does not ship: these run against ours only), through pika, aio-pika and the HTTP
API, in both process layouts: a message with a positive ``x-delay`` is held that long, then
routed as the exchange's ``x-delayed-type`` by the bindings there are then, its ``x-delay``
negated; held messages are confirmed once on disk and survive a SIGKILL."""
from __future__ import annotations

import asyncio
import time

import aio_pika
import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import wait_until

DELAYED = "x-delayed-message"
EARLY = 0.002       # seconds a message may come before its delay, measured here: its due
#                     time counts from the publish's clock in whole milliseconds


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("delayed"), *LAYOUTS[request.param],
                       management=True) as b:
        yield b


def connect(b: BrokerProcess) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(b.host, b.port))


def delayed(ch, name: str, inner: str = "direct", **kw) -> None:
    ch.exchange_declare(name, DELAYED, arguments={"x-delayed-type": inner}, **kw)


def bound_queue(ch, exchange: str, key: str = "") -> str:
    """An exclusive server-named queue bound to ``exchange`` with ``key``."""
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, exchange, key)
    return q


def delayed_and_queue(conn, name: str, inner: str, key: str = ""):
    """(a confirming channel, a queue bound with ``key`` to a new delayed exchange ``name``
    of type ``inner``)."""
    ch = conn.channel()
    ch.confirm_delivery()
    delayed(ch, name, inner)
    return ch, bound_queue(ch, name, key)


def with_delay(delay, **props) -> pika.BasicProperties:
    return pika.BasicProperties(headers={"x-delay": delay}, **props)


def receive(ch, queue: str, n: int, timeout: float = 10.0) -> list:
    """``n`` messages as (body, seconds since ``since``, headers), or fewer on timeout."""
    got = []
    for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=timeout):
        if method is None:
            break
        got.append((body, time.monotonic(), props.headers))
        if len(got) == n:
            break
    ch.cancel()
    return got


def test_messages_wait_their_delay_and_come_in_due_order(broker):
    with connect(broker) as conn:
        ch, q = delayed_and_queue(conn, "dl-order", "direct", "k")
        for body, delay in ((b"zero", 0), (b"negative", -5)):
            ch.basic_publish("dl-order", "k", body, with_delay(delay), mandatory=True)
        ch.basic_publish("dl-order", "k", b"plain", pika.BasicProperties())
        start = time.monotonic()
        # published first, due last
        for body, delay in ((b"late", 2000), (b"soon", 300), (b"string", "600")):
            ch.basic_publish("dl-order", "k", body, with_delay(delay), mandatory=True)
        got = receive(ch, q, 6)
    assert [b for b, _, _ in got] == [b"zero", b"negative", b"plain", b"soon", b"string",
                                      b"late"]
    waited = {b: t - start for b, t, _ in got}
    # (due times are whole milliseconds of the publish's clock: EARLY of slack)
    assert waited[b"soon"] >= 0.3 - EARLY and waited[b"string"] >= 0.6 - EARLY \
        and waited[b"late"] >= 2.0 - EARLY
    # the plugin's mark: a held message's x-delay comes negative; the others' as sent
    assert {b: h.get("x-delay") if h else None for b, _, h in got} == {
        b"zero": 0, b"negative": -5, b"plain": None, b"soon": -300, b"string": -600,
        b"late": -2000}


def test_it_routes_as_its_type_by_the_bindings_there_are_when_due(broker):
    with connect(broker) as conn:
        ch, early = delayed_and_queue(conn, "dl-topic", "topic", "orders.*")
        ch.basic_publish("dl-topic", "orders.eu", b"held", with_delay(400))
        ch.basic_publish("dl-topic", "invoices.eu", b"no binding", with_delay(400))
        late = bound_queue(ch, "dl-topic", "#")     # bound while they are held
        assert [b for b, _, _ in receive(ch, early, 1)] == [b"held"]
        assert sorted(b for b, _, _ in receive(ch, late, 2)) == [b"held", b"no binding"]
        assert ch.queue_declare(early, passive=True).method.message_count == 0


def test_a_mandatory_confirmed_publish_is_acked_not_returned_and_counted(broker):
    """Held: not unroutable (the plugin returns it at once; ours knows its queues when it
    is due). ``messages_delayed`` in the HTTP API counts what the exchange holds."""
    with connect(broker) as conn:
        ch, q = delayed_and_queue(conn, "dl-count", "fanout", "")
        for i in range(3):
            ch.basic_publish("dl-count", "", b"m%d" % i, with_delay(1500), mandatory=True)
        status, ex = broker.request("GET", "exchanges/%2F/dl-count")
        assert status == 200 and ex["type"] == DELAYED and ex["messages_delayed"] == 3
        assert ch.queue_declare(q, passive=True).method.message_count == 0
        assert len(receive(ch, q, 3)) == 3
        # no longer held once the queue confirmed them (just after it delivered, maybe)
        wait_until(lambda: broker.request("GET", "exchanges/%2F/dl-count")[1][
            "messages_delayed"] == 0)


def test_declare_checks_the_delayed_type_as_the_plugin(broker):
    with connect(broker) as conn:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.exchange_declare("dl-bad", DELAYED)
        assert (e.value.reply_code, e.value.reply_text) == (
            406, "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must bean existing "
                 "exchnage type")
        with pytest.raises(ChannelClosedByBroker) as e:
            conn.channel().exchange_declare("dl-bad", DELAYED,
                                            arguments={"x-delayed-type": "x-partitioned"})
        assert e.value.reply_code == 406
    with connect(broker) as conn:
        with pytest.raises(ConnectionClosedByBroker) as e:
            conn.channel().exchange_declare("dl-bad", DELAYED,
                                            arguments={"x-delayed-type": "nope"})
        assert (e.value.reply_code, e.value.reply_text) == (
            503, "COMMAND_INVALID - unknown exchange type 'nope'")
    types = {t["name"]: t["description"] for t in broker.api("overview")["exchange_types"]}
    assert types[DELAYED] == "Delayed Message Exchange."


def test_held_messages_survive_a_sigkill(tmp_path):
    """Confirmed means on disk: killed while they are held, the broker routes them after
    its restart (at their due time, or at once if it passed)."""
    for layout in sorted(LAYOUTS):
        with BrokerProcess(tmp_path / layout, *LAYOUTS[layout]) as b:
            with connect(b) as conn:
                ch = conn.channel()
                ch.confirm_delivery()
                delayed(ch, "dl-kill", "fanout", durable=True)
                ch.queue_declare("dl-kept", durable=True)
                ch.queue_bind("dl-kept", "dl-kill", "")
                for i in range(20):
                    ch.basic_publish("dl-kill", "", b"m%02d" % i,
                                     with_delay(300 + 10 * i, delivery_mode=2))
            b.kill()
            b.start()
            with connect(b) as conn:
                got = receive(conn.channel(), "dl-kept", 20)
            assert [body for body, _, _ in got] == [b"m%02d" % i for i in range(20)], layout


def test_a_dead_letter_into_a_delayed_exchange_is_held(broker):
    """Retry with back-off, as plugin users build it: a rejected message dead-letters into
    the delayed exchange, which holds it by its x-delay, then routes it to the work queue."""
    with connect(broker) as conn:
        ch, work = delayed_and_queue(conn, "dl-retry", "direct", "work")
        inbox = ch.queue_declare("", exclusive=True, arguments={
            "x-dead-letter-exchange": "dl-retry",
            "x-dead-letter-routing-key": "work"}).method.queue
        ch.basic_publish("", inbox, b"try again", with_delay(400))
        method, _, _ = next(ch.consume(inbox, inactivity_timeout=5))
        start = time.monotonic()
        ch.basic_reject(method.delivery_tag, requeue=False)
        ch.cancel()
        assert ch.queue_declare(work, passive=True).method.message_count == 0
        got = receive(ch, work, 1)
        # held from when it was dead-lettered, not from its first publish
        assert [b for b, _, _ in got] == [b"try again"] and got[0][1] - start >= 0.4 - EARLY
        assert got[0][2]["x-delay"] == -400 and got[0][2]["x-death"][0]["reason"] == "rejected"


def test_the_http_api_publish_is_held(broker):
    with connect(broker) as conn:
        ch = conn.channel()
        delayed(ch, "dl-http", "direct")
        q = bound_queue(ch, "dl-http", "k")
        start = time.monotonic()
        status, answer = broker.request("POST", "exchanges/%2F/dl-http/publish", {
            "properties": {"headers": {"x-delay": 300}}, "routing_key": "k",
            "payload": "over http", "payload_encoding": "string"})
        assert (status, answer) == (200, {"routed": True})
        got = receive(ch, q, 1)
        assert [b for b, _, _ in got] == [b"over http"] and got[0][1] - start >= 0.3 - EARLY


def test_a_deleted_exchange_drops_what_it_held(broker):
    with connect(broker) as conn:
        ch, q = delayed_and_queue(conn, "dl-gone", "fanout", "")
        ch.basic_publish("dl-gone", "", b"never", with_delay(300))
        ch.exchange_delete("dl-gone")
        delayed(ch, "dl-marker", "fanout")          # a later message, after the due time
        ch.queue_bind(q, "dl-marker", "")
        ch.basic_publish("dl-marker", "", b"marker", with_delay(600))
        assert [b for b, _, _ in receive(ch, q, 2, timeout=5)] == [b"marker"]


def test_aio_pika_declares_and_uses_it(broker):
    async def run():
        conn = await aio_pika.connect(f"amqp://guest:guest@{broker.host}:{broker.port}/")
        async with conn:
            ch = await conn.channel()
            ex = await ch.declare_exchange("dl-aio", aio_pika.ExchangeType.X_DELAYED_MESSAGE,
                                           arguments={"x-delayed-type": "direct"})
            q = await ch.declare_queue(exclusive=True)
            await q.bind(ex, "k")
            start = time.monotonic()
            await ex.publish(aio_pika.Message(b"aio", headers={"x-delay": 250}), "k")
            msg = await q.get(timeout=5, fail=False)
            assert msg is None                  # held
            async with q.iterator() as it:
                async for msg in it:
                    async with msg.process():
                        return msg.body, time.monotonic() - start, msg.headers["x-delay"]
    body, waited, header = asyncio.run(asyncio.wait_for(run(), 10))
    assert body == b"aio" and waited >= 0.25 - EARLY and header == -250
