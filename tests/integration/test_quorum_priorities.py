"""Message priorities in quorum queues, as RabbitMQ 4.0 has them (rabbit_fifo_q): two
levels — priority 5..255 "high", anything else "normal" — taken two high for one normal
while both have messages (the normal one only when older), no ``x-max-priority`` needed.
RabbitMQ 3.10 (the reference at hand) ignores priorities in quorum queues, so these run
against ours, in both process layouts, to the order RabbitMQ 4.0's code gives."""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess
from interop.conftest import bodies

QUORUM = {"x-queue-type": "quorum"}


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("qq-prio"), *LAYOUTS[request.param]) as b:
        yield b


def publish(ch, queue: str, *messages) -> None:
    """(body, priority or None) each, confirmed."""
    for body, priority in messages:
        ch.basic_publish("", queue, body, pika.BasicProperties(priority=priority))


def declare(ch, name: str) -> str:
    ch.queue_declare(name, durable=True, arguments=QUORUM)
    ch.queue_purge(name)
    return name


def test_high_ones_go_two_for_each_older_normal_one(ch):
    q = declare(ch, "qp-mixed")
    publish(ch, q, (b"n0", None), (b"n1", 0), (b"n2", 4), (b"h0", 5), (b"h1", 9),
            (b"h2", 255))
    assert bodies(ch, q) == [b"h0", b"h1", b"n0", b"h2", b"n1", b"n2"]


def test_a_consumer_gets_the_same_order(ch):
    q = declare(ch, "qp-consumer")
    publish(ch, q, (b"n0", None), (b"n1", None), (b"h0", 7), (b"h1", 7), (b"h2", 7))
    ch.basic_qos(prefetch_count=1)
    got = []
    for method, _, body in ch.consume(q, inactivity_timeout=10):
        assert method is not None, f"only {got} came"
        got.append(body)
        ch.basic_ack(method.delivery_tag)
        if len(got) == 5:
            break
    ch.cancel()
    assert got == [b"h0", b"h1", b"n0", b"h2", b"n1"]


def test_high_ones_published_first_keep_publish_order_and_low_priorities_are_fifo(ch):
    q = declare(ch, "qp-fifo")
    publish(ch, q, (b"h0", 6), (b"h1", 6), (b"h2", 6), (b"n0", 3), (b"n1", 0))
    assert bodies(ch, q) == [b"h0", b"h1", b"h2", b"n0", b"n1"]
    publish(ch, q, (b"a", 4), (b"b", 1), (b"c", 2))         # all normal: publish order
    assert bodies(ch, q) == [b"a", b"b", b"c"]


def test_a_requeued_high_one_goes_back_among_the_high_ones(ch):
    q = declare(ch, "qp-requeue")
    publish(ch, q, (b"n0", None), (b"h0", 8))
    method, _, body = ch.basic_get(q)
    assert body == b"h0"
    ch.basic_reject(method.delivery_tag, requeue=True)
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, method.redelivered) == (b"h0", True)
    assert bodies(ch, q) == [b"n0"]


def test_priorities_survive_a_restart(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(ch, "qp-restart")
    publish(ch, q, (b"n0", None), (b"n1", None), (b"h0", 9))
    conn.close()
    broker.restart()
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        assert bodies(conn.channel(), q) == [b"h0", b"n0", b"n1"]
    finally:
        conn.close()
