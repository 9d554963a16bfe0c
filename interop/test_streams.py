"""Streams (``x-queue-type: stream``) over AMQP 0-9-1, as RabbitMQ behaves: declaration and
the arguments it refuses, the consumer's obligations (prefetch, manual acks, no basic.get),
``x-stream-offset`` in every form, the ``x-stream-offset`` header, acks that delete nothing.

Every test here passes against RabbitMQ (3.10 on this machine) too; what RabbitMQ 3.13 does
differently from 3.10 (nack and reject settle with credit only) and what only we do (exact
filtering, invalid offsets refused with 406) is tested in tests/integration/test_streams.py.
"""
from __future__ import annotations

import datetime
import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from .conftest import q as quote
from .conftest import wait_until

STREAM = {"x-queue-type": "stream"}


@pytest.fixture
def stream(ch, uniq, cleanup):
    """A new stream; returns its name."""
    name = cleanup.queue(uniq("stream"))
    ch.queue_declare(name, durable=True, arguments=STREAM)
    return name


def publish(conn, name: str, bodies, headers=None) -> None:
    """Publish with confirms, one at a time (each its own chunk on RabbitMQ)."""
    ch = conn.channel()
    ch.confirm_delivery()
    for i, body in enumerate(bodies):
        h = dict(headers or {}, n=i)
        ch.basic_publish("", name, body, pika.BasicProperties(headers=h, delivery_mode=2))
    ch.close()


class Collector:
    """A stream consumer on its own channel that records (offset, body, method, props)."""

    def __init__(self, conn, name: str, *, prefetch: int = 10, ack: bool = True, **arguments):
        self.conn = conn
        self.ch = conn.channel()
        self.ch.basic_qos(prefetch_count=prefetch)
        self.got = []
        self.ack = ack
        self.tag = self.ch.basic_consume(name, self._on, arguments=arguments or None)

    def _on(self, ch, method, props, body):
        self.got.append(((props.headers or {}).get("x-stream-offset"), body, method, props))
        if self.ack:
            ch.basic_ack(method.delivery_tag)

    def wait(self, n: int, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(self.got)} of {n} deliveries: {self.bodies}")
            self.conn.process_data_events(0.05)
        return self.got

    def settle(self, seconds: float = 0.5):
        """Let the broker deliver anything more it would (used to show nothing more came)."""
        self.conn.process_data_events(seconds)

    @property
    def bodies(self):
        return [b for _, b, _, _ in self.got]

    @property
    def offsets(self):
        return [o for o, _, _, _ in self.got]


def refused(conn, fn):
    ch = conn.channel()
    with pytest.raises((ChannelClosedByBroker, ConnectionClosedByBroker)) as info:
        fn(ch)
    return info.value.reply_code, info.value.reply_text


# ------------------------------------------------------------------------------- declaration
@pytest.mark.parametrize("props, word", [
    ({"durable": False}, "non-durable"),
    ({"durable": True, "exclusive": True}, "exclusive-owner"),
    ({"durable": True, "auto_delete": True}, "auto-delete"),
])
def test_stream_must_be_durable_not_exclusive_not_auto_delete(connect, uniq, props, word):
    name = uniq("stream")
    code, text = refused(connect(), lambda ch: ch.queue_declare(name, arguments=STREAM,
                                                                **props))
    assert (code, text) == (406, f"PRECONDITION_FAILED - invalid property '{word}' for queue "
                                 f"'{name}' in vhost '/'")


@pytest.mark.parametrize("key, value", [
    ("x-message-ttl", 1000), ("x-max-length", 10), ("x-overflow", "drop-head"),
    ("x-dead-letter-exchange", "dlx"), ("x-dead-letter-routing-key", "k"),
    ("x-max-priority", 5), ("x-expires", 1000), ("x-single-active-consumer", True),
    ("x-queue-mode", "lazy"), ("x-delivery-limit", 3),
])
def test_arguments_streams_do_not_have_are_refused(connect, uniq, key, value):
    name = uniq("stream")
    code, text = refused(connect(), lambda ch: ch.queue_declare(
        name, durable=True, arguments={**STREAM, key: value}))
    assert (code, text) == (406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue "
                                 f"'{name}' in vhost '/' of queue type rabbit_stream_queue")


@pytest.mark.parametrize("key, value, reason", [
    ("x-max-age", 5, "{unacceptable_type,signedint}"),
    ("x-max-age", "0D", "invalid_max_age"),
    ("x-max-age", "10x", "invalid_max_age"),
    ("x-max-length-bytes", -1, "{value_negative,-1}"),
    ("x-stream-max-segment-size-bytes", -5, "{value_negative,-5}"),
    ("x-initial-cluster-size", 0, "{value_zero,0}"),
])
def test_invalid_stream_argument_values(connect, uniq, key, value, reason):
    name = uniq("stream")
    code, text = refused(connect(), lambda ch: ch.queue_declare(
        name, durable=True, arguments={**STREAM, key: value}))
    assert (code, text) == (406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue "
                                 f"'{name}' in vhost '/': {reason}")


def test_declare_with_retention_arguments_and_redeclare(ch, conn, uniq, cleanup, mgmt):
    name = cleanup.queue(uniq("stream"))
    args = {**STREAM, "x-max-age": "7D", "x-max-length-bytes": 10 ** 9,
            "x-stream-max-segment-size-bytes": 10 ** 7, "x-initial-cluster-size": 1}
    ok = ch.queue_declare(name, durable=True, arguments=args).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (name, 0, 0)
    assert ch.queue_declare(name, durable=True, arguments=args).method.queue == name
    publish(conn, name, [b"a", b"b", b"c"])
    # RabbitMQ counts a stream's messages a moment after it confirms them
    wait_until(lambda: ch.queue_declare(name, passive=True).method.message_count == 3,
               timeout=10)
    code, text = refused(conn, lambda c: c.queue_declare(
        name, durable=True, arguments={**args, "x-max-age": "8D"}))
    assert code == 406
    assert text.startswith(f"PRECONDITION_FAILED - inequivalent arg 'x-max-age' for queue "
                           f"'{name}' in vhost '/': received ")

    def listed():
        info = mgmt.get(f"/api/queues/%2F/{quote(name)}")
        return info if info.get("messages") == 3 else None
    info = wait_until(listed, timeout=30, interval=0.5)
    assert info["type"] == "stream"
    assert info["durable"] is True
    assert info["arguments"]["x-max-age"] == "7D"


# ------------------------------------------------------------------------------- consumers
def test_consume_needs_prefetch(conn, stream):
    code, text = refused(conn, lambda ch: ch.basic_consume(stream, lambda *a: None))
    assert (code, text) == (406, f"PRECONDITION_FAILED - consumer prefetch count is not set "
                                 f"for 'queue '{stream}' in vhost '/''")


def test_consume_refuses_automatic_ack(conn, stream):
    def consume(ch):
        ch.basic_qos(prefetch_count=10)
        ch.basic_consume(stream, lambda *a: None, auto_ack=True)
    code, text = refused(conn, consume)
    assert (code, text) == (540, f"NOT_IMPLEMENTED - automatic acknowledgement not supported "
                                 f"by stream queues queue '{stream}' in vhost '/'")


def test_consume_refuses_global_qos(conn, stream):
    def consume(ch):
        ch.basic_qos(prefetch_count=10)
        ch.basic_qos(prefetch_count=10, global_qos=True)
        ch.basic_consume(stream, lambda *a: None)
    code, text = refused(conn, consume)
    assert (code, text) == (540, f"NOT_IMPLEMENTED - queue '{stream}' in vhost '/' does not "
                                 f"support global qos")


def test_consume_refuses_x_priority(conn, stream):
    def consume(ch):
        ch.basic_qos(prefetch_count=10)
        ch.basic_consume(stream, lambda *a: None, arguments={"x-priority": 3})
    code, text = refused(conn, consume)
    assert (code, text) == (406, f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue "
                                 f"'{stream}' in vhost '/' of queue type rabbit_stream_queue")


def test_basic_get_is_refused(conn, stream):
    code, text = refused(conn, lambda ch: ch.basic_get(stream))
    assert (code, text) == (540, f"NOT_IMPLEMENTED - basic.get not supported by stream "
                                 f"queues queue '{stream}' in vhost '/'")


def test_purge_is_refused(conn, stream):
    code, text = refused(conn, lambda ch: ch.queue_purge(stream))
    assert (code, text) == (540, f"NOT_IMPLEMENTED - queue.purge not supported by stream "
                                 f"queues queue '{stream}' in vhost '/'")


# ------------------------------------------------------------------------------- x-stream-offset
def test_first_delivers_everything_with_offset_header_and_original_headers(connect, stream):
    conn = connect()
    publish(conn, stream, [b"m0", b"m1", b"m2", b"m3"], headers={"app": "x"})
    c = Collector(conn, stream, **{"x-stream-offset": "first"})
    got = c.wait(4)
    assert c.bodies == [b"m0", b"m1", b"m2", b"m3"]
    assert c.offsets == [0, 1, 2, 3]
    for i, (_, _, method, props) in enumerate(got):
        assert props.headers["app"] == "x" and props.headers["n"] == i
        assert method.redelivered is False
        assert (method.exchange, method.routing_key) == ("", stream)


def test_next_is_the_default_and_delivers_only_new_messages(connect, stream):
    conn = connect()
    publish(conn, stream, [b"old0", b"old1"])
    c = Collector(conn, stream)
    c.settle(0.3)
    publish(connect(), stream, [b"new0", b"new1"])
    c.wait(2)
    assert c.bodies == [b"new0", b"new1"] and c.offsets == [2, 3]


def test_last_starts_at_the_last_chunk(connect, stream):
    conn = connect()
    publish(conn, stream, [b"m0", b"m1", b"m2"])     # confirmed one by one: one chunk each
    c = Collector(conn, stream, **{"x-stream-offset": "last"})
    c.wait(1)
    publish(connect(), stream, [b"m3"])
    c.wait(2)
    assert c.bodies == [b"m2", b"m3"] and c.offsets == [2, 3]


def test_absolute_offset_and_negative_clamped_to_first(connect, stream):
    conn = connect()
    publish(conn, stream, [b"m%d" % i for i in range(6)])
    c = Collector(conn, stream, **{"x-stream-offset": 4})
    c.wait(2)
    assert c.offsets == [4, 5]
    low = Collector(conn, stream, **{"x-stream-offset": -5})
    low.wait(6)
    assert low.offsets == list(range(6))


def test_offset_past_the_end_waits_for_that_offset(connect, stream):
    conn = connect()
    publish(conn, stream, [b"m0", b"m1", b"m2"])
    c = Collector(conn, stream, **{"x-stream-offset": 5})
    c.settle(0.3)
    publish(connect(), stream, [b"m3", b"m4", b"m5", b"m6"])
    c.wait(2)
    c.settle(0.3)
    assert c.offsets == [5, 6] and c.bodies == [b"m5", b"m6"]


def test_timestamp_and_interval_offsets(connect, stream):
    conn = connect()
    publish(conn, stream, [b"m0", b"m1", b"m2"])
    hour_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    past = Collector(conn, stream, **{"x-stream-offset": hour_ago})
    past.wait(3)
    assert past.offsets == [0, 1, 2]
    interval = Collector(conn, stream, **{"x-stream-offset": "30m"})
    interval.wait(3)
    assert interval.offsets == [0, 1, 2]
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    future = Collector(conn, stream, **{"x-stream-offset": later})
    future.settle(0.3)
    assert future.got == []


def test_acks_delete_nothing_and_prefetch_limits_unacked(connect, stream, ch):
    conn = connect()
    publish(conn, stream, [b"m%d" % i for i in range(5)])
    holder = Collector(conn, stream, prefetch=2, ack=False, **{"x-stream-offset": "first"})
    holder.wait(2)
    holder.settle(0.3)
    assert holder.offsets == [0, 1]                  # prefetch 2, nothing acked
    holder.ch.basic_ack(holder.got[0][2].delivery_tag)
    holder.wait(3)
    assert holder.offsets == [0, 1, 2]               # one ack, one more delivery
    reader = Collector(conn, stream, **{"x-stream-offset": "first"})
    reader.wait(5)
    reader2 = Collector(conn, stream, **{"x-stream-offset": "first"})
    reader2.wait(5)                                  # acked by the first reader: still there
    assert reader2.offsets == list(range(5))
    wait_until(lambda: ch.queue_declare(stream, passive=True).method.message_count == 5,
               timeout=10)


def test_two_consumers_each_read_the_whole_stream(connect, stream):
    conn = connect()
    a = Collector(conn, stream, **{"x-stream-offset": "first"})
    b = Collector(connect(), stream, **{"x-stream-offset": "first"})
    publish(connect(), stream, [b"m%d" % i for i in range(20)])
    a.wait(20)
    b.wait(20)
    assert a.offsets == b.offsets == list(range(20))


def test_delete_stream(conn, uniq):
    name = uniq("stream")
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments=STREAM)
    publish(conn, name, [b"a", b"b"])
    assert ch.queue_delete(name).method.message_count == 0     # RabbitMQ reports 0
    code, _ = refused(conn, lambda c: c.queue_declare(name, passive=True))
    assert code == 404


async def test_aio_pika_consumes_a_stream_from_first(broker_url, uniq, connect, cleanup):
    import aio_pika
    name = cleanup.queue(uniq("stream"))
    conn = await aio_pika.connect(broker_url)
    try:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=5)
        queue = await channel.declare_queue(name, durable=True, arguments=STREAM)
        for i in range(3):
            await channel.default_exchange.publish(aio_pika.Message(b"m%d" % i), name)
        got = []
        async with queue.iterator(arguments={"x-stream-offset": "first"}) as it:
            async for message in it:
                async with message.process():
                    got.append((message.headers["x-stream-offset"], message.body))
                if len(got) == 3:
                    break
        assert got == [(0, b"m0"), (1, b"m1"), (2, b"m2")]
    finally:
        await conn.close()
