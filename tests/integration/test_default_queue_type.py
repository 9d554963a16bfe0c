"""A vhost's default queue type: what is ours beyond RabbitMQ 3.10 (whose behaviour
interop/test_default_queue_type.py checks against both brokers).

- The body key of RabbitMQ 3.11+ (``default_queue_type``) beside 3.10's
  (``defaultqueuetype``); a value that is not a queue type is refused with 400 and nothing
  is made or changed (RabbitMQ 3.10 answers 500).
- The default of an existing vhost can be changed (RabbitMQ 3.13's ``update_vhost_metadata``;
  3.10 ignores it): new queues get the new type, existing ones keep theirs, and a redeclare
  without ``x-queue-type`` matches the queue's own type (3.10 refuses it with 406).
- It is durable (the definitions file) and in the definitions export and import.
"""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing import BrokerProcess


@pytest.fixture
def broker(tmp_path):
    with BrokerProcess(tmp_path / "data", management=True) as b:
        yield b


def put_vhost(b, name: str, body: dict):
    return b.request("PUT", f"vhosts/{name}", body)


def declare(b, vhost: str, name: str, **kw) -> None:
    c = pika.BlockingConnection(pika.ConnectionParameters(b.host, b.port, vhost))
    try:
        c.channel().queue_declare(name, **kw)
    finally:
        c.close()


def test_the_newer_key_and_a_refused_value(broker):
    assert put_vhost(broker, "v1", {"default_queue_type": "stream"})[0] == 201
    assert broker.api("vhosts/v1")["default_queue_type"] == "stream"
    declare(broker, "v1", "events", durable=True)
    assert broker.api("queues/v1/events")["type"] == "stream"

    status, body = put_vhost(broker, "v2", {"default_queue_type": "lazy"})
    assert status == 400
    assert body["reason"] == 'default_queue_type: "lazy" is not one of classic, quorum, stream'
    assert broker.request("GET", "vhosts/v2")[0] == 404              # nothing made
    status, body = put_vhost(broker, "v1", {"description": "x", "defaultqueuetype": 3})
    assert status == 400
    v1 = broker.api("vhosts/v1")                                     # nothing changed
    assert (v1["description"], v1["default_queue_type"]) == ("", "stream")


def test_changing_the_default_of_an_existing_vhost(broker):
    assert put_vhost(broker, "v1", {})[0] == 201
    assert broker.api("vhosts/v1")["default_queue_type"] == "undefined"   # RabbitMQ 3.10's
    declare(broker, "v1", "before", durable=True)
    assert put_vhost(broker, "v1", {"default_queue_type": "quorum"})[0] == 204
    declare(broker, "v1", "after", durable=True)
    assert broker.api("queues/v1/after")["type"] == "quorum"
    assert broker.api("queues/v1/before")["type"] == "classic"
    declare(broker, "v1", "before", durable=True)        # matches the queue's own type
    declare(broker, "v1", "after", durable=True)
    assert put_vhost(broker, "v1", {"default_queue_type": "classic"})[0] == 204
    declare(broker, "v1", "later", durable=True)
    assert broker.api("queues/v1/later")["arguments"] == {}


@pytest.mark.parametrize("how", ["sigkill", "definitions"])
def test_it_is_kept(broker, tmp_path, how):
    assert put_vhost(broker, "v1", {"default_queue_type": "quorum", "description": "d"})[0] \
        == 201
    if how == "sigkill":                 # the PUT was answered: the definitions have it
        broker.kill()
        broker.start()
        target = broker
    else:
        exported = broker.api("definitions")
        [v1] = [v for v in exported["vhosts"] if v["name"] == "v1"]
        assert v1["default_queue_type"] == v1["metadata"]["default_queue_type"] == "quorum"
        # RabbitMQ 3.11+ exports it inside "metadata" only: the import takes it from there
        del v1["default_queue_type"]
        target = BrokerProcess(tmp_path / "other", management=True).start()
    try:
        if how == "definitions":
            assert target.request("POST", "definitions", exported)[0] == 204
        v1 = target.api("vhosts/v1")
        assert (v1["description"], v1["default_queue_type"]) == ("d", "quorum")
        declare(target, "v1", "orders", durable=True)
        assert target.api("queues/v1/orders")["type"] == "quorum"
    finally:
        if target is not broker:
            target.stop()
