"""The ``x-recent-history`` exchange in both process layouts (what RabbitMQ does with its
plugin is interop/test_recent_history.py): the history is the metadata owner's, told by
whichever process routed the message; 20 messages by default; kept across a restart (as
the plugin's disc table); gone with its exchange."""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess
from interop.conftest import bodies


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("recent"), *LAYOUTS[request.param]) as b:
        yield b


def connected(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    return conn, ch


def bound_queue(ch, name: str, exchange: str) -> str:
    ch.queue_delete(name)
    ch.queue_declare(name, durable=True)
    ch.queue_bind(name, exchange)
    return name


def test_the_last_twenty_by_default_kept_across_a_restart(broker):
    conn, ch = connected(broker)
    ch.exchange_delete("rh-default")
    ch.exchange_declare("rh-default", "x-recent-history", durable=True)
    for i in range(25):
        ch.basic_publish("rh-default", "", b"m%d" % i)
    assert bodies(ch, bound_queue(ch, "rh-first", "rh-default")) == \
        [b"m%d" % i for i in range(5, 25)]
    conn.close()
    broker.restart()
    conn, ch = connected(broker)
    try:
        assert bodies(ch, bound_queue(ch, "rh-after", "rh-default")) == \
            [b"m%d" % i for i in range(5, 25)]
    finally:
        conn.close()


def test_the_history_goes_with_its_exchange(broker):
    conn, ch = connected(broker)
    try:
        ch.exchange_delete("rh-gone")
        ch.exchange_declare("rh-gone", "x-recent-history", durable=True)
        ch.basic_publish("rh-gone", "", b"old")
        ch.exchange_delete("rh-gone")
        ch.exchange_declare("rh-gone", "x-recent-history", durable=True)
        ch.basic_publish("rh-gone", "", b"new")
        assert bodies(ch, bound_queue(ch, "rh-gone-q", "rh-gone")) == [b"new"]
    finally:
        conn.close()
