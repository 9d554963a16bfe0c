"""Input a client may send that RabbitMQ accepts, or answers with a protocol reply: names
outside pamqp's name regex, malformed credentials and tables, argument limits, the handshake
timeout. Run against RabbitMQ (AMQP_URL) and against ours with the same code."""
from __future__ import annotations

import pytest

NAMES = ["orders!", "ünï", "a\x00b", "tab\tand\"quote'", "日本語-キュー"]


@pytest.mark.parametrize("name", NAMES)
def test_any_utf8_name_works_end_to_end(connect, uniq, name):
    name = f"{name}-{uniq('n')}"
    ch = connect().channel()
    assert ch.queue_declare(name, auto_delete=True).method.queue == name
    assert ch.queue_declare(name, passive=True).method.queue == name
    ch.exchange_declare(name, "direct", auto_delete=True)
    ch.exchange_declare(name, "direct", passive=True)
    ch.queue_bind(name, name, routing_key=name)
    ch.confirm_delivery()
    ch.basic_publish(name, name, b"payload", mandatory=True)
    method, _, body = ch.basic_get(name, auto_ack=True)
    assert (method.exchange, method.routing_key, body) == (name, name, b"payload")
    ch.queue_unbind(name, name, routing_key=name)
    assert ch.queue_delete(name).method.message_count == 0
    ch.exchange_delete(name)
