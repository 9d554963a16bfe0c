"""Idempotent producers (``x-producer-id`` + ``x-sequence``) with real pika clients, in both
process layouts: each rule of worker/dedup.py, a producer cut mid-stream by the fault proxy
that republishes what it had not seen confirmed (nothing stored twice), and producer state
that survives a clean restart, a SIGKILL of the whole broker and a SIGKILL of a worker."""
from __future__ import annotations

import os
import random
import signal

import pika
import pika.exceptions
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess, FaultProxy, leaks
from amqpbroker.testing.proxy import DOWNSTREAM

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout


def props(pid, seq, **extra) -> pika.BasicProperties:
    headers = {"x-producer-id": pid}
    if seq is not None:
        headers["x-sequence"] = seq
    return pika.BasicProperties(delivery_mode=2, headers=headers, **extra)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("idem"), *LAYOUTS[request.param]) as b:
        yield b


@pytest.fixture
def ch(broker, request):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    channel = conn.channel()
    channel.confirm_delivery()
    name = "idem-" + request.node.name.replace("[", "-").rstrip("]").replace(" ", "_")
    channel.queue_declare(name, durable=True)
    channel.queue_purge(name)
    channel.q = name
    yield channel
    if conn.is_open:
        conn.channel().queue_delete(name)
        conn.close()


def count(channel) -> int:
    return channel.queue_declare(channel.q, passive=True).method.message_count


def publish(channel, pid, seq, body=b"m") -> bool:
    """True if acked, False if nacked."""
    try:
        channel.basic_publish("", channel.q, body, props(pid, seq))
        return True
    except pika.exceptions.NackError:
        return False


def drain(channel, queue: str) -> list:
    out = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((properties.headers or {}).get("x-sequence"))


# ------------------------------------------------------------------------- the rules
def test_a_duplicate_in_the_window_is_confirmed_and_not_stored(ch):
    for seq in range(10):
        assert publish(ch, "p1", seq)
    for seq in range(5, 10):                   # the last five: all duplicates
        assert publish(ch, "p1", seq)
    assert count(ch) == 10
    assert drain(ch, ch.q) == list(range(10))
    assert publish(ch, "p1", 9)                # still a duplicate once consumed
    assert count(ch) == 0


def test_a_gap_is_nacked_and_the_next_in_order_is_stored(ch):
    assert publish(ch, "gap", 0)
    assert not publish(ch, "gap", 2)           # 1 is missing
    assert count(ch) == 1
    assert publish(ch, "gap", 1)
    assert publish(ch, "gap", 2)
    assert count(ch) == 3


def test_a_sequence_older_than_the_window_is_nacked(ch):
    for seq in range(7):
        assert publish(ch, "old", seq)
    assert not publish(ch, "old", 1)           # window is 2..6
    assert publish(ch, "old", 2)               # in the window: duplicate, acked
    assert count(ch) == 7


def test_producers_are_independent_and_ids_may_be_integers(ch):
    assert publish(ch, "a", 0)
    assert publish(ch, 42, 0)
    assert publish(ch, "42", 0)                # the string is another producer
    assert publish(ch, 42, 0)                  # duplicate
    assert publish(ch, "a", 1)
    assert count(ch) == 4


def test_a_producer_id_without_an_integer_sequence_is_nacked(ch):
    assert not publish(ch, "bad", None)
    assert not publish(ch, "bad", "7")
    assert not publish(ch, "bad", -1)
    assert count(ch) == 0


def test_without_confirms_a_gap_is_dropped(broker, ch):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    plain = conn.channel()                     # no confirm mode
    for seq in (0, 1, 3, 2, 2, 1):
        plain.basic_publish("", ch.q, b"m", props("nc", seq))
    conn.close()
    assert drain(ch, ch.q) == [0, 1, 2]


def test_a_message_that_expires_at_once_still_takes_its_sequence(ch):
    assert publish(ch, "ttl0", 0)
    ch.basic_publish("", ch.q, b"gone", props("ttl0", 1, expiration="0"))   # expires at once
    ch.basic_publish("", ch.q, b"gone", props("ttl0", 1, expiration="0"))   # duplicate
    assert publish(ch, "ttl0", 2)              # no gap: 1 was taken
    assert drain(ch, ch.q) == [0, 2]


def test_publishes_without_producer_headers_are_untouched(ch):
    for _ in range(3):
        ch.basic_publish("", ch.q, b"same", pika.BasicProperties(headers={"x-sequence": 1}))
    assert count(ch) == 3


# ------------------------------------------------------------------------- reconnects
def test_a_producer_cut_mid_stream_republishes_its_unconfirmed_messages_once(broker, ch):
    """Every connection is reset by the proxy after a random number of bytes from the broker
    (mostly inside a confirm, after the broker stored the message); the producer reconnects
    and republishes from its first unconfirmed sequence. The queue ends up with every message
    exactly once, in order."""
    total, rng = 300, random.Random(1)
    confirmed = republished = cuts = 0
    sent_upto = -1                             # highest sequence ever sent
    with FaultProxy(broker.host, broker.port) as proxy:
        while confirmed < total:
            proxy.cut_after(rng.randrange(600, 1000) if cuts < 12 else None, DOWNSTREAM)
            try:
                conn = pika.BlockingConnection(pika.ConnectionParameters(
                    proxy.host, proxy.port, connection_attempts=1))
                channel = conn.channel()
                channel.confirm_delivery()
                while confirmed < total:
                    if confirmed <= sent_upto:
                        republished += 1
                    sent_upto = max(sent_upto, confirmed)
                    channel.basic_publish("", ch.q, b"m%d" % confirmed, props("cut", confirmed))
                    confirmed += 1
                conn.close()
            except (pika.exceptions.AMQPError, OSError):
                cuts += 1
    assert cuts >= 12 and republished >= 5, (cuts, republished)
    assert drain(ch, ch.q) == list(range(total))


# ------------------------------------------------------------------------- durability
def _queue(b, name):
    conn = pika.BlockingConnection(pika.URLParameters(b.url))
    channel = conn.channel()
    channel.confirm_delivery()
    channel.queue_declare(name, durable=True)
    channel.q = name
    return conn, channel


@pytest.mark.parametrize("how", ["clean restart", "SIGKILL"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_producer_state_survives_a_restart(tmp_path, layout, how):
    with BrokerProcess(tmp_path, *LAYOUTS[layout]) as b:
        conn, channel = _queue(b, "durable-idem")
        for seq in range(20):
            assert publish(channel, "p", seq)
        drain(channel, "durable-idem")         # consumed: the log no longer holds them
        for seq in range(20, 23):
            assert publish(channel, "p", seq)
        conn.close()
        if how == "SIGKILL":
            b.kill()
        else:
            b.stop()
        b.start()
        conn, channel = _queue(b, "durable-idem")
        for seq in range(18, 23):              # the window: duplicates, acked, not stored
            assert publish(channel, "p", seq)
        assert not publish(channel, "p", 17)   # older than the window
        assert not publish(channel, "p", 24)   # a gap
        assert publish(channel, "p", 23)
        assert drain(channel, "durable-idem") == [20, 21, 22, 23]
        conn.close()


def test_producer_state_survives_a_worker_sigkill(tmp_path):
    with BrokerProcess(tmp_path, *LAYOUTS["2 workers + 2 front-ends"], management=True) as b:
        conn, channel = _queue(b, "killed-idem")
        for seq in range(10):
            assert publish(channel, 7, seq)
        conn.close()
        index = b.api("queues/%2F/killed-idem")["worker"]
        old = b.worker_pids[index]
        os.kill(old, signal.SIGKILL)
        assert not leaks.wait_gone([old], timeout=10)

        def running():
            w = b.api("nodes")[0]["workers"][index]
            return w["running"] and w["pid"] != old
        leaks.wait_until(running, what="the worker to restart")
        conn, channel = _queue(b, "killed-idem")
        for seq in range(5, 10):
            assert leaks.wait_until(lambda: publish(channel, 7, seq) or None,
                                    what="the queue to take publishes again")
        assert publish(channel, 7, 10)
        assert drain(channel, "killed-idem") == list(range(11))
        conn.close()


# ------------------------------------------------------------------------- streams and topics
def test_a_stream_stores_each_producer_sequence_once(broker, ch):
    name = ch.q + "-stream"
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    try:
        for seq in range(8):
            ch.basic_publish("", name, f"m{seq}".encode(), props("sp", seq))
        for seq in range(4, 8):                    # a retry of the last four: duplicates
            ch.basic_publish("", name, f"m{seq}".encode(), props("sp", seq))
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish("", name, b"gap", props("sp", 10))
        assert ch.queue_declare(name, passive=True).method.message_count == 8
    finally:
        ch.queue_delete(name)


def test_through_a_topic_each_partition_sees_a_subsequence(broker, ch):
    """Sequences are the producer's; through an x-partitioned exchange each partition sees
    some of them, so gaps are expected there, and a whole retried stream stores nothing."""
    topic = ch.q + "-topic"
    ch.exchange_declare(topic, exchange_type="x-partitioned", arguments={"x-partitions": 3})
    try:
        keys = [f"k{i}" for i in range(12)]
        for again in range(2):                     # the second pass is a retry of the first
            for seq, key in enumerate(keys):
                ch.basic_publish(topic, key, key.encode(), props("tp", seq))
        counts = [ch.queue_declare(f"{topic}-{i}", passive=True).method.message_count
                  for i in range(3)]
        assert sum(counts) == len(keys) and all(counts)
    finally:
        ch.exchange_delete(topic)
