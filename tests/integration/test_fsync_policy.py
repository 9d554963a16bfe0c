"""Per-queue fsync policy (x-fsync, our extension): always (default), interval, never.

Every policy survives a broker crash (kill -9) for confirmed messages, because a confirm is
sent only after the batch is written; 'always' also survives a power loss, because its
confirm waits for the fsync."""
from __future__ import annotations

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from amqpbroker.testing import BrokerProcess


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_confirmed_messages_survive_kill9(tmp_path, policy):
    b = BrokerProcess(tmp_path, "--fsync-interval-ms", "200").start()
    try:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        ch.queue_declare("q", durable=True, arguments={"x-fsync": policy})
        ch.confirm_delivery()
        for i in range(200):
            ch.basic_publish("", "q", b"%d" % i, pika.BasicProperties(delivery_mode=2))
        b.kill()
        b.start()
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        ok = ch.queue_declare("q", durable=True, arguments={"x-fsync": policy})
        assert ok.method.message_count == 200
        got = [ch.basic_get("q", auto_ack=True)[2] for _ in range(200)]
        assert got == [b"%d" % i for i in range(200)]
        conn.close()
    finally:
        b.stop()


def test_invalid_policy_is_406(tmp_path):
    with BrokerProcess(tmp_path) as b:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_declare("q", durable=True, arguments={"x-fsync": "sometimes"})
        assert e.value.reply_code == 406
        assert "invalid arg 'x-fsync'" in e.value.reply_text
        ch = conn.channel()
        ch.queue_declare("p", durable=True, arguments={"x-fsync": "never"})
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_declare("p", durable=True)
        assert e.value.reply_code == 406
        assert "inequivalent arg 'x-fsync'" in e.value.reply_text
        conn.close()
