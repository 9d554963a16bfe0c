"""A vhost's default queue type, as RabbitMQ 3.10 does it: a queue declared without
``x-queue-type`` gets the vhost's type when it is durable, not exclusive and not auto-delete,
and is classic otherwise; the type is written into the queue's arguments.

Runs against RabbitMQ too (``AMQP_URL`` / ``AMQP_MGMT_URL``, see conftest.py); the vhost is
made with 3.10's key ``defaultqueuetype`` (our broker also takes ``default_queue_type``:
tests/integration/test_default_queue_type.py, with what is ours only).
"""
from __future__ import annotations

import pika
import pika.exceptions
import pytest

from .conftest import q, url_with


@pytest.fixture
def vhost(mgmt, uniq):
    name = uniq("dqt")
    assert mgmt.put(f"/api/vhosts/{q(name)}", {"defaultqueuetype": "quorum"}) == 201
    assert mgmt.put(f"/api/permissions/{q(name)}/guest",
                    {"configure": ".*", "write": ".*", "read": ".*"}) in (201, 204)
    yield name
    mgmt.delete(f"/api/vhosts/{q(name)}")


@pytest.fixture
def vconnect(connect, broker_url, vhost):
    """Connections to the test's vhost (closed at teardown by ``connect``)."""
    return lambda: connect(url_with(broker_url, vhost=vhost))


def queue(mgmt, vhost: str, name: str) -> dict:
    return mgmt.get(f"/api/queues/{q(vhost)}/{q(name)}")


def test_the_vhost_shows_its_default_queue_type(mgmt, vhost):
    v = mgmt.get(f"/api/vhosts/{q(vhost)}")
    assert v["default_queue_type"] == "quorum"
    assert v["metadata"]["default_queue_type"] == "quorum"


def test_a_durable_queue_declared_without_a_type_gets_the_vhosts(mgmt, vhost, vconnect):
    ch = vconnect().channel()
    ch.queue_declare("orders", durable=True)
    info = queue(mgmt, vhost, "orders")
    assert info["type"] == "quorum"
    assert info["arguments"] == {"x-queue-type": "quorum"}
    # and it is one: a quorum queue counts deliveries
    ch.basic_publish("", "orders", b"m1")
    method, props, body = next(ch.consume("orders", inactivity_timeout=10))
    assert body == b"m1"
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, body = next(ch.consume("orders", inactivity_timeout=10))
    assert props.headers["x-delivery-count"] == 1
    ch.basic_ack(method.delivery_tag)
    ch.cancel()


@pytest.mark.parametrize("flags", [
    dict(durable=False), dict(durable=True, exclusive=True), dict(durable=True, auto_delete=True),
    dict(durable=False, auto_delete=True)], ids=["transient", "exclusive", "auto-delete",
                                                 "transient-auto-delete"])
def test_a_queue_the_type_cannot_have_stays_classic(mgmt, vhost, vconnect, flags):
    ch = vconnect().channel()
    ch.queue_declare("q1", **flags)
    info = queue(mgmt, vhost, "q1")
    assert info["type"] == "classic"
    assert info["arguments"] == {}


def test_a_server_named_queue_stays_classic(mgmt, vhost, vconnect):
    ch = vconnect().channel()
    name = ch.queue_declare("", exclusive=True).method.queue
    assert queue(mgmt, vhost, name)["type"] == "classic"


def test_an_explicit_type_wins(mgmt, vhost, vconnect):
    ch = vconnect().channel()
    ch.queue_declare("legacy", durable=True, arguments={"x-queue-type": "classic"})
    info = queue(mgmt, vhost, "legacy")
    assert (info["type"], info["arguments"]) == ("classic", {"x-queue-type": "classic"})


def test_arguments_the_default_type_refuses_are_refused_as_for_that_type(vhost, vconnect):
    ch = vconnect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("prio", durable=True, arguments={"x-max-priority": 5})
    assert err.value.reply_code == 406
    assert err.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'prio' in vhost "
        f"'{vhost}' of queue type rabbit_quorum_queue")


def test_redeclares(vhost, vconnect):
    c = vconnect()
    ch = c.channel()
    ch.queue_declare("orders", durable=True)
    ch.queue_declare("orders", durable=True)                       # the same declare
    ch.queue_declare("orders", durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_declare("orders", passive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("orders", durable=True, arguments={"x-queue-type": "classic"})
    assert err.value.reply_code == 406
    assert err.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'orders' in vhost "
        f"'{vhost}': received 'classic' but current is 'quorum'")


def test_a_queue_declared_through_the_management_api_gets_it(mgmt, vhost):
    assert mgmt.put(f"/api/queues/{q(vhost)}/viaapi", {"durable": True}) == 201
    assert queue(mgmt, vhost, "viaapi")["type"] == "quorum"
    assert mgmt.put(f"/api/queues/{q(vhost)}/viaapi-transient", {"durable": False}) == 201
    assert queue(mgmt, vhost, "viaapi-transient")["type"] == "classic"


def test_other_vhosts_are_not_touched(mgmt, broker_url, uniq, vhost):
    name = uniq("plain")
    c = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        c.channel().queue_declare(name, durable=True)
        assert queue(mgmt, "/", name)["type"] == "classic"
        c.channel().queue_delete(name)
    finally:
        c.close()


def test_a_put_to_an_existing_vhost_sets_its_description_and_tags(mgmt, vhost):
    assert mgmt.put(f"/api/vhosts/{q(vhost)}", {"description": "orders", "tags": "eu,prod"}) \
        == 204
    v = mgmt.get(f"/api/vhosts/{q(vhost)}")
    assert (v["description"], v["tags"]) == ("orders", ["eu", "prod"])
    assert v["default_queue_type"] == "quorum"          # not in the body: kept
    assert mgmt.put(f"/api/vhosts/{q(vhost)}", {}) == 204   # what the body leaves out: emptied
    v = mgmt.get(f"/api/vhosts/{q(vhost)}")
    assert (v["description"], v["tags"]) == ("", [])
