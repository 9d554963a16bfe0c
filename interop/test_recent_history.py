"""The ``x-recent-history`` exchange (RabbitMQ's rabbitmq_recent_history_exchange plugin):
a destination bound to it gets its last ``x-recent-history-length`` messages at once — a
queue oldest first, an exchange newest first, again for each new binding — except those
published with ``x-recent-history-no-store``. Against RabbitMQ, the plugin must be enabled
(as for the consistent-hash exchange's tests)."""
from __future__ import annotations

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from .conftest import bodies


def test_a_new_binding_gets_the_recent_history(ch, uniq, cleanup):
    ch.confirm_delivery()
    ex, late = cleanup.exchange(uniq("rh")), cleanup.queue(uniq("rh-late"))
    inner, via = cleanup.exchange(uniq("rh-inner")), cleanup.queue(uniq("rh-via"))
    ch.exchange_declare(ex, "x-recent-history", durable=True,
                        arguments={"x-recent-history-length": 5})
    for i in range(7):
        ch.basic_publish(ex, "any", b"m%d" % i)
    ch.basic_publish(ex, "any", b"secret",
                     pika.BasicProperties(headers={"x-recent-history-no-store": True}))
    ch.queue_declare(late, durable=True)
    ch.queue_bind(late, ex)
    ch.basic_publish(ex, "any", b"m7")
    assert bodies(ch, late) == [b"m2", b"m3", b"m4", b"m5", b"m6", b"m7"]
    ch.exchange_declare(inner, "fanout")
    ch.queue_declare(via)
    ch.queue_bind(via, inner)
    ch.exchange_bind(inner, ex)
    assert bodies(ch, via) == [b"m7", b"m6", b"m5", b"m4", b"m3"]
    ch.queue_bind(late, ex, "another key")      # a new binding: the history again
    assert bodies(ch, late) == [b"m3", b"m4", b"m5", b"m6", b"m7"]


@pytest.mark.parametrize("length, shown", [(0, "0"), (-1, "-1"), ("abc", '<<"abc">>')])
def test_a_length_that_is_not_a_positive_integer_is_refused(conn, uniq, length, shown):
    with pytest.raises(ChannelClosedByBroker) as e:
        conn.channel().exchange_declare(uniq("rh-bad"), "x-recent-history",
                                        arguments={"x-recent-history-length": length})
    assert (e.value.reply_code, e.value.reply_text) == (
        406, f"PRECONDITION_FAILED - Invalid argument {shown}, 'x-recent-history-length' "
             f"must be a positive integer")
