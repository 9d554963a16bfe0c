"""With no body cache (and non-durable queues paging at once) every delivery is read back from
the log: same messages, same order."""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing import BrokerProcess


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("nocache"), "--cache-limit", "0",
                       "--transient-memory-limit", "0") as b:
        yield b


@pytest.mark.parametrize("durable,mode", [(True, 2), (True, 1), (False, 1)])
def test_messages_come_back_from_disk_in_order(broker, durable, mode):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        q = ch.queue_declare("", durable=durable, exclusive=not durable).method.queue
        ch.confirm_delivery()
        sent = [bytes([i % 251]) * (1 + (i * 37) % 5000) for i in range(300)]
        for body in sent:
            ch.basic_publish("", q, body, pika.BasicProperties(delivery_mode=mode))
        got = []
        ch.basic_qos(prefetch_count=50)
        for method, _, body in ch.consume(q, inactivity_timeout=10):
            assert method is not None, f"stalled after {len(got)} messages"
            got.append(body)
            ch.basic_ack(method.delivery_tag)
            if len(got) == len(sent):
                break
        ch.cancel()
        assert got == sent
        if durable:
            ch.queue_delete(q)
    finally:
        conn.close()


def test_requeued_and_gotten_messages_from_disk(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.confirm_delivery()
        for i in range(20):
            ch.basic_publish("", q, b"m%d" % i)
        first = [ch.basic_get(q) for _ in range(5)]
        assert [b for _, _, b in first] == [b"m%d" % i for i in range(5)]
        ch.basic_nack(first[-1][0].delivery_tag, multiple=True, requeue=True)
        again = [ch.basic_get(q, auto_ack=True) for _ in range(20)]
        assert [b for _, _, b in again] == [b"m%d" % i for i in range(20)]
        assert all(m.redelivered for m, _, _ in again[:5])
        assert not any(m.redelivered for m, _, _ in again[5:])
    finally:
        conn.close()


def test_get_right_after_confirm_sees_the_message(broker):
    """A confirmed message is visible to basic.get at once, whether or not it is cached."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        q = ch.queue_declare("get-after-confirm", durable=True).method.queue
        ch.confirm_delivery()
        for i in range(50):
            mode = 1 + i % 2
            ch.basic_publish("", q, b"x%d" % i, pika.BasicProperties(delivery_mode=mode))
            method, _, body = ch.basic_get(q, auto_ack=True)
            assert body == b"x%d" % i
        ch.queue_delete(q)
    finally:
        conn.close()
