"""RabbitMQ 4.0's ``x-local-random`` exchange (frontend/exchange.py ``LocalRandomExchange``),
in both process layouts: each message goes to exactly one of the bound classic queues, at
random; a binding needs an empty key and a classic queue, else 406 with RabbitMQ 4.0's text
(read from its rabbit_exchange_type_local_random: the reference RabbitMQ here is 3.10,
which has no such type). And the rabbitmq_random_exchange plugin's ``x-random``: one of any
destinations, whatever the keys (``interop/test_exchanges.py`` runs it on RabbitMQ too)."""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess

QUEUES = ("lr-a", "lr-b", "lr-c")


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("local-random"), *LAYOUTS[request.param],
                       management=True) as b:
        yield b


def test_each_message_goes_to_one_bound_queue_at_random(broker, ch):
    ch.exchange_declare("lr", "x-local-random", durable=True)
    for q in QUEUES:
        ch.queue_declare(q, durable=True)
        ch.queue_purge(q)
        ch.queue_bind(q, "lr", "")
    for i in range(300):
        ch.basic_publish("lr", "any key", b"m%d" % i)
    counts = [ch.queue_declare(q, passive=True).method.message_count for q in QUEUES]
    assert sum(counts) == 300 and all(counts), counts     # (2/3)^300 chance of an empty one
    ch.queue_unbind("lr-b", "lr", "")
    ch.queue_unbind("lr-c", "lr", "")
    ch.basic_publish("lr", "", b"alone")
    assert ch.queue_declare("lr-a", passive=True).method.message_count == counts[0] + 1
    types = {t["name"]: t for t in broker.api("overview")["exchange_types"]}
    assert types["x-local-random"]["description"] == \
        "Picks one random local binding (queue) to route via (to)."


@pytest.mark.parametrize("kind, key, arguments, text", [
    ("queue", "k", {}, "Non empty binding 'k' key not permitted"),
    ("queue", "", {"x-queue-type": "quorum"},
     "Queue type rabbit_quorum_queue not valid for this exchange type"),
    ("exchange", "", None, "Destination not found"),
])
def test_a_binding_it_cannot_route_to_is_refused(broker, kind, key, arguments, text):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.exchange_declare("lr-refuse", "x-local-random")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            if kind == "queue":
                ch.queue_declare("lr-q-" + (key or "quorum"), durable=True,
                                 arguments=arguments)
                ch.queue_bind("lr-q-" + (key or "quorum"), "lr-refuse", key)
            else:
                ch.exchange_declare("lr-dest", "fanout")
                ch.exchange_bind("lr-dest", "lr-refuse", key)
        assert (e.value.reply_code, e.value.reply_text) == (406, "PRECONDITION_FAILED - " + text)
    finally:
        conn.close()


def test_x_random_sends_each_message_to_one_destination_whatever_the_keys(broker, ch):
    ch.exchange_declare("rnd", "x-random", durable=True)
    ch.exchange_declare("rnd-inner", "fanout", durable=True)
    for q, key in (("rnd-a", "a"), ("rnd-b", "b")):
        ch.queue_declare(q, durable=True)
        ch.queue_purge(q)
        ch.queue_bind(q, "rnd", key)
    ch.queue_declare("rnd-c", durable=True)
    ch.queue_purge("rnd-c")
    ch.queue_bind("rnd-c", "rnd-inner")
    ch.exchange_bind("rnd-inner", "rnd", "whatever")
    for i in range(300):
        ch.basic_publish("rnd", "no such key", b"m%d" % i)
    counts = [ch.queue_declare(q, passive=True).method.message_count
              for q in ("rnd-a", "rnd-b", "rnd-c")]
    assert sum(counts) == 300 and all(counts), counts
    types = {t["name"]: t for t in broker.api("overview")["exchange_types"]}
    assert types["x-random"]["description"] == \
        "Randomly picks a binding (queue) to route via (to)."


def test_x_modulus_hash_keeps_each_key_to_one_queue(broker, ch):
    """The rabbitmq_sharding plugin's exchange type: one queue per routing key, the keys
    spread over the bound queues."""
    ch.exchange_declare("mh", "x-modulus-hash", durable=True)
    queues = [f"mh-{i}" for i in range(3)]
    for q in queues:
        ch.queue_declare(q, durable=True)
        ch.queue_purge(q)
        ch.queue_bind(q, "mh", "ignored")
    keys = [f"key-{i}" for i in range(60)]
    for key in keys * 2:
        ch.basic_publish("mh", key, key.encode())
    seen = {}
    for q in queues:
        while True:
            method, _, body = ch.basic_get(q, auto_ack=True)
            if method is None:
                break
            seen.setdefault(body, set()).add(q)
    assert sorted(seen) == sorted(k.encode() for k in keys)
    assert all(len(where) == 1 for where in seen.values())     # each key, one queue
    assert len({q for where in seen.values() for q in where}) == 3
    types = {t["name"]: t for t in broker.api("overview")["exchange_types"]}
    assert types["x-modulus-hash"]["description"] == "Modulus Hashing Exchange"
