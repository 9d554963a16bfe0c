"""Streams on our broker, in both process layouts (one process; 2 workers + 2 front-ends):
RabbitMQ 3.13's settling (nack and reject return credit only), what we refuse where RabbitMQ
crashes, retention by size and by age, and recovery after a restart and a worker SIGKILL.
The RabbitMQ-observable behaviour is in interop/test_streams.py."""
from __future__ import annotations

import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from amqpbroker.testing import LAYOUTS, BrokerProcess, leaks

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

STREAM = {"x-queue-type": "stream"}


@pytest.fixture(params=list(LAYOUTS), scope="module")
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("streams"), *LAYOUTS[request.param],
                       management=True) as b:
        yield b


@pytest.fixture
def conn(broker):
    c = pika.BlockingConnection(pika.URLParameters(broker.url))
    yield c
    if c.is_open:
        c.close()


_names = iter(range(10 ** 6))


@pytest.fixture
def stream(conn):
    name = f"s-{time.monotonic_ns()}-{next(_names)}"
    conn.channel().queue_declare(name, durable=True, arguments=STREAM)
    yield name
    if conn.is_open:
        conn.channel().queue_delete(name)


def publish(conn, name, bodies, **props):
    ch = conn.channel()
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish("", name, body, pika.BasicProperties(**props))
    ch.close()


def consume(conn, name, n, *, prefetch=10, timeout=10.0, settle=None, **arguments):
    """Deliveries (offset, body, redelivered) until ``n`` arrived; ``settle(ch, method)``
    decides what to do with each (default: ack)."""
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got = []

    def on(c, m, p, b):
        got.append((p.headers["x-stream-offset"], b, m.redelivered))
        (settle or (lambda c, m: c.basic_ack(m.delivery_tag)))(c, m)
    tag = ch.basic_consume(name, on, arguments=arguments)
    leaks.wait_until(lambda: conn.process_data_events(0.02) or len(got) >= n,
                     timeout=timeout, what=f"{n} deliveries (got {len(got)})")
    ch.basic_cancel(tag)
    ch.close()
    return got


def count(conn, name) -> int:
    return conn.channel().queue_declare(name, passive=True).method.message_count


# ------------------------------------------------------------------------ RabbitMQ 3.13 rules
def test_nack_and_reject_return_credit_and_never_redeliver(conn, stream):
    publish(conn, stream, [b"m%d" % i for i in range(6)])

    def nack_or_reject(ch, m):
        if m.delivery_tag % 2:
            ch.basic_nack(m.delivery_tag, requeue=True)
        else:
            ch.basic_reject(m.delivery_tag, requeue=True)
    got = consume(conn, stream, 6, prefetch=1, settle=nack_or_reject, **{"x-stream-offset": "first"})
    assert [(o, r) for o, _, r in got] == [(i, False) for i in range(6)]
    assert count(conn, stream) == 6


def test_unacked_deliveries_of_a_closed_channel_are_not_requeued(conn, stream):
    publish(conn, stream, [b"a", b"b", b"c"])
    consume(conn, stream, 2, prefetch=2, settle=lambda c, m: None,
            **{"x-stream-offset": "first"})
    got = consume(conn, stream, 3, **{"x-stream-offset": "first"})
    assert [(o, r) for o, _, r in got] == [(0, False), (1, False), (2, False)]


@pytest.mark.parametrize("value, reason", [
    ("bogus", '{invalid_stream_offset_arg,{longstr,<<"bogus">>}}'),
    (True, "{invalid_stream_offset_arg,{bool,true}}"),
])
def test_invalid_offset_is_refused_not_crashed(conn, stream, value, reason):
    # RabbitMQ passes these on and fails with 541 INTERNAL_ERROR; we refuse them
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.basic_consume(stream, lambda *a: None, arguments={"x-stream-offset": value})
    assert info.value.reply_code == 406
    assert info.value.reply_text == (f"PRECONDITION_FAILED - invalid arg 'x-stream-offset' for "
                                     f"queue '{stream}' in vhost '/': {reason}")


def test_invalid_max_age_text_is_refused_not_crashed(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare("s-bad-age", durable=True, arguments={**STREAM, "x-max-age": "bogus"})
    assert info.value.reply_code == 406
    assert info.value.reply_text.endswith("'x-max-age' for queue 's-bad-age' in vhost '/': "
                                          "invalid_max_age")


def test_segment_size_over_rabbitmq_maximum(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare("s-big", durable=True,
                         arguments={**STREAM, "x-stream-max-segment-size-bytes": 3_000_000_001})
    assert info.value.reply_text == ("PRECONDITION_FAILED - Exceeded max value for "
                                     "x-stream-max-segment-size-bytes")


def test_management_lists_type_and_count(broker, conn, stream):
    publish(conn, stream, [b"x"] * 7)
    info = broker.api(f"queues/%2F/{stream}")
    assert (info["type"], info["messages"]) == ("stream", 7)


def test_a_burst_of_publishes_is_stored_counted_and_read_in_order(broker, conn, stream):
    """Publishes without a producer reference that arrive together reach the stream as one
    batch (``Stream.publish_many``): every one stored once, in order, and counted."""
    ch = conn.channel()
    bodies = [b"b%d" % i for i in range(500)]
    for body in bodies:
        ch.basic_publish("", stream, body)
    leaks.wait_until(lambda: count(conn, stream) == 500, what="500 stored")
    got = consume(conn, stream, 500, prefetch=100, **{"x-stream-offset": "first"})
    assert [b for _, b, _ in got] == bodies
    assert [o for o, _, _ in got] == list(range(got[0][0], got[0][0] + 500))
    leaks.wait_until(
        lambda: broker.api(f"queues/%2F/{stream}").get("message_stats", {}).get("publish")
        == 500, what="message_stats.publish 500")


def test_classic_consumer_priority_still_travels(conn):
    """Sub carries the consumer's arguments now: x-priority still orders classic consumers."""
    ch = conn.channel()
    name = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_qos(prefetch_count=1)
    got = []
    ch.basic_consume(name, lambda c, m, p, b: got.append("low"), arguments={"x-priority": 1})
    ch.basic_consume(name, lambda c, m, p, b: got.append("high"), arguments={"x-priority": 9})
    publish(conn, name, [b"one"])
    leaks.wait_until(lambda: conn.process_data_events(0.02) or got, what="a delivery")
    assert got == ["high"]


# ------------------------------------------------------------------------ retention
def test_retention_by_size_deletes_whole_segments_from_the_front(conn):
    name = f"s-size-{time.monotonic_ns()}"
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={
        **STREAM, "x-max-length-bytes": 4000, "x-stream-max-segment-size-bytes": 1000})
    try:
        for i in range(10):
            publish(conn, name, [b"%03d" % i + b"x" * 200] * 4)
        n = count(conn, name)
        # ~10 KB published, 1 KB segments, 4 KB kept: the oldest segments went
        assert 12 <= n <= 24, n
        got = consume(conn, name, n, **{"x-stream-offset": "first"})
        assert [o for o, _, _ in got] == list(range(40 - n, 40))
        low = consume(conn, name, 1, **{"x-stream-offset": 0})      # clamped to the start
        assert low[0][0] == 40 - n
    finally:
        conn.channel().queue_delete(name)


def test_retention_by_age_runs_on_a_timer(conn):
    name = f"s-age-{time.monotonic_ns()}"
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={
        **STREAM, "x-max-age": "1s", "x-stream-max-segment-size-bytes": 500})
    try:
        for i in range(4):
            publish(conn, name, [b"old" * 100])
        assert count(conn, name) == 4
        # only the active segment (the last message) stays once the others are a second old
        leaks.wait_until(lambda: count(conn, name) == 1, timeout=15,
                         what="age retention to delete the closed segments")
        got = consume(conn, name, 1, **{"x-stream-offset": "first"})
        assert got[0][0] == 3
    finally:
        conn.channel().queue_delete(name)


# ------------------------------------------------------------------------ recovery
def test_confirmed_messages_survive_restart(tmp_path):
    with BrokerProcess(tmp_path, "--workers", "0", "--frontends", "0", management=True) as b:
        c = pika.BlockingConnection(pika.URLParameters(b.url))
        c.channel().queue_declare("s-restart", durable=True, arguments=STREAM)
        publish(c, "s-restart", [b"p%d" % i for i in range(50)], delivery_mode=2)
        publish(c, "s-restart", [b"t%d" % i for i in range(50)])     # transient: kept too
        c.close()
        b.stop()
        b.restart()
        c = pika.BlockingConnection(pika.URLParameters(b.url))
        got = consume(c, "s-restart", 100, **{"x-stream-offset": "first"})
        assert [o for o, _, _ in got] == list(range(100))
        assert [body for _, body, _ in got] == [b"p%d" % i for i in range(50)] + \
            [b"t%d" % i for i in range(50)]
        publish(c, "s-restart", [b"after"])                       # offsets go on
        got = consume(c, "s-restart", 1, **{"x-stream-offset": "last"})
        assert got[0][:2] == (100, b"after")
        assert b.api("queues/%2F/s-restart")["type"] == "stream"
        c.close()


def test_confirmed_messages_survive_worker_sigkill(tmp_path):
    import os
    import signal
    with BrokerProcess(tmp_path, "--workers", "2", "--frontends", "2", management=True) as b:
        c = pika.BlockingConnection(pika.URLParameters(b.url))
        c.channel().queue_declare("s-kill", durable=True, arguments=STREAM)
        worker = b.api("queues/%2F/s-kill")["worker"]
        publish(c, "s-kill", [b"m%d" % i for i in range(200)])    # transient, confirmed
        c.close()
        old = b.api("nodes")[0]["workers"][worker]["pid"]
        os.kill(old, signal.SIGKILL)

        def restarted():
            w = b.api("nodes")[0]["workers"][worker]
            return w["running"] and w["pid"] != old
        leaks.wait_until(restarted, timeout=30, what="the worker to restart")
        c = leaks.wait_until(lambda: _connect_and_check(b.url, "s-kill"), timeout=30,
                             what="the stream to reopen")
        got = consume(c, "s-kill", 200, **{"x-stream-offset": "first"})
        assert [body for _, body, _ in got] == [b"m%d" % i for i in range(200)]
        c.close()


def _connect_and_check(url, name):
    c = pika.BlockingConnection(pika.URLParameters(url))
    try:
        if c.channel().queue_declare(name, passive=True).method.message_count == 200:
            return c
    except ChannelClosedByBroker:
        pass
    c.close()
    return None
