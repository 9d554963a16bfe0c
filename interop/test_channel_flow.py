"""channel.flow from the client, as RabbitMQ answers it."""
from __future__ import annotations

import pika
import pytest
from pika.exceptions import ConnectionClosedByBroker


def test_flow_active_true_is_acknowledged(conn):
    ch = conn.channel()
    assert ch.flow(True) is True
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"still flowing")
    assert ch.basic_get(q, auto_ack=True)[2] == b"still flowing"


def test_flow_active_false_is_not_implemented(broker_url):
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    ch = conn.channel()
    with pytest.raises(ConnectionClosedByBroker) as e:
        ch.flow(False)
    assert e.value.reply_code == 540
    assert e.value.reply_text == "NOT_IMPLEMENTED - active=false"
