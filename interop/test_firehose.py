"""RabbitMQ's firehose tracer, turned on with ``PUT /api/vhosts/{vhost}`` ``{"tracing": true}``:
every publish and delivery in the vhost is copied to ``amq.rabbitmq.trace``, routing key
``publish.<exchange>`` / ``deliver.<queue>``, with RabbitMQ 3.10's headers. Passes against
RabbitMQ 3.10.8 (``AMQP_URL``/``AMQP_MGMT_URL``) and ours."""
from __future__ import annotations

import pika
import pytest

from .conftest import q, url_with, wait_until


@pytest.fixture
def traced(mgmt, uniq, broker_url):
    """A vhost of its own with tracing on (guest made it: guest may use it)."""
    vhost = uniq("traced")
    assert mgmt.put(f"/api/vhosts/{q(vhost)}", {"tracing": True}) == 201
    yield vhost, url_with(broker_url, vhost=vhost)
    mgmt.delete(f"/api/vhosts/{q(vhost)}")


def drained(ch, queue: str, n: int) -> list:
    """(routing key, headers, body) of ``n`` messages of ``queue`` (awaited)."""
    out = []

    def more():
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            out.append((method.routing_key, props.headers, body))
        return len(out) >= n
    wait_until(more, 10)
    return out


def test_publishes_and_deliveries_are_traced_with_rabbitmqs_headers(mgmt, traced, connect):
    vhost, url = traced
    assert mgmt.get(f"/api/vhosts/{q(vhost)}")["tracing"] is True
    conn = connect(url)
    ch = conn.channel()
    ch.confirm_delivery()
    firehose = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(firehose, "amq.rabbitmq.trace", "#")
    work = ch.queue_declare("work").method.queue
    props = pika.BasicProperties(content_type="text/plain", headers={"h": 1}, delivery_mode=2,
                                 message_id="m1")
    ch.basic_publish("", work, b"hello", props)
    ch.basic_publish("amq.direct", "nowhere", b"unrouted")
    method, _, _ = ch.basic_get(work)
    ch.basic_reject(method.delivery_tag, requeue=True)
    ch.basic_get(work, auto_ack=True)               # again: redelivered
    got = drained(ch, firehose, 4)
    sent = {"message_id": "m1", "delivery_mode": 2, "headers": {"h": 1},
            "content_type": "text/plain"}

    def common(h: dict) -> dict:
        assert "->" in h.pop("connection") and isinstance(h.pop("node"), str)
        return h
    assert [(k, b) for k, _, b in got] == [("publish.", b"hello"),
                                           ("publish.amq.direct", b"unrouted"),
                                           ("deliver.work", b"hello"),
                                           ("deliver.work", b"hello")]
    assert [common(h) for _, h, _ in got] == [
        {"exchange_name": "", "routing_keys": ["work"], "properties": sent, "vhost": vhost,
         "channel": 1, "user": "guest", "routed_queues": ["work"]},
        {"exchange_name": "amq.direct", "routing_keys": ["nowhere"], "properties": {},
         "vhost": vhost, "channel": 1, "user": "guest", "routed_queues": []},
        {"exchange_name": "", "routing_keys": ["work"], "properties": sent, "redelivered": 0,
         "vhost": vhost, "channel": 1, "user": "guest"},
        {"exchange_name": "", "routing_keys": ["work"], "properties": sent, "redelivered": 1,
         "vhost": vhost, "channel": 1, "user": "guest"}]
    # a consumer's deliveries too
    ch.basic_publish("", work, b"consumed")
    for method, _, body in ch.consume(work, auto_ack=True, inactivity_timeout=5):
        assert body == b"consumed"
        break
    ch.cancel()
    assert [(k, b) for k, _, b in drained(ch, firehose, 2)] == [("publish.", b"consumed"),
                                                                 ("deliver.work", b"consumed")]
    # off: nothing more, and a PUT that does not say leaves it as it is
    assert mgmt.put(f"/api/vhosts/{q(vhost)}", {"description": "still traced"}) == 204
    assert mgmt.get(f"/api/vhosts/{q(vhost)}")["tracing"] is True
    assert mgmt.put(f"/api/vhosts/{q(vhost)}", {"tracing": False}) == 204
    assert mgmt.get(f"/api/vhosts/{q(vhost)}")["tracing"] is False
    ch.basic_publish("", work, b"untraced")
    assert ch.basic_get(work, auto_ack=True)[2] == b"untraced"
    ch.basic_publish("", firehose, b"marker")       # straight in: behind any trace copy
    assert [b for _, _, b in drained(ch, firehose, 1)] == [b"marker"]

