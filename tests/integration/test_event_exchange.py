"""RabbitMQ's event exchange (``--event-exchange``; frontend/events.py), in both process
layouts. The events each step makes, their order and their fields are RabbitMQ 3.10.8's with
the rabbitmq_event_exchange plugin enabled (measured with the same steps; not RabbitMQ's
internal ``exchange-delete-in-progress`` parameter events).

The connection, channel, consumer and login events are published by the process serving the
client and the metadata ones by the supervisor: in the split layout the two streams reach the
bound queue each in its own order, so the tests compare each stream's order and the whole
as a multiset. Each test reads what its steps made through a queue bound to ``#`` before
them, and waits for the last event it expects (a consumer), no sleeps.
"""
from __future__ import annotations

from collections import Counter

import pika
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess

SESSION_EVENTS = ("user.authentication", "connection.", "channel.", "consumer.")


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("events"), *LAYOUTS[request.param],
                       "--event-exchange", management=True) as b:
        yield b


@pytest.fixture
def listener(broker):
    """A channel with an exclusive queue bound to every event; ``take(n)`` returns the next
    ``n`` events as (routing key, headers, properties), its own binding's and consumer's
    taken."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.rabbitmq.event", "#")

    def take(n: int) -> list:
        out = []
        for method, props, body in ch.consume(q, auto_ack=True, inactivity_timeout=10):
            assert method is not None, f"only {[k for k, _, _ in out]} came"
            assert body == b""
            out.append((method.routing_key, props.headers, props))
            if len(out) == n:
                break
        return out
    ch.take = take
    # its own binding's and consumer's (as RabbitMQ's first two)
    own = {key: headers for key, headers, _ in take(2)}
    assert (own["binding.created"]["destination_name"], own["consumer.created"]["queue"]) == \
        (q, q)
    yield ch
    conn.close()


def in_order(events, expected: list) -> None:
    """The events are ``expected`` as a multiset, and each stream (the client's process's,
    the supervisor's) in the expected order."""
    keys = [k for k, _, _ in events]
    assert Counter(keys) == Counter(expected), keys
    for mine in (True, False):
        def pick(seq):
            return [k for k in seq if k.startswith(SESSION_EVENTS) == mine]
        assert pick(keys) == pick(expected), keys


def test_the_exchange_is_rabbitmqs_and_refuses_clients(broker):
    ex = broker.api("exchanges/%2F/amq.rabbitmq.event")
    assert (ex["type"], ex["durable"], ex["internal"], ex["auto_delete"]) == \
        ("topic", True, True, False)
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish("amq.rabbitmq.event", "queue.created", b"forged")
        assert e.value.reply_code == 403
    finally:
        conn.close()


def test_a_clients_life_is_published(broker, listener):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare("ev-q", arguments={"x-message-ttl": 1000})
    ch.exchange_declare("ev-x", "direct")
    ch.queue_bind("ev-q", "ev-x", "rk")
    tag = ch.basic_consume("ev-q", lambda *a: None, arguments={"x-priority": 3})
    ch.basic_cancel(tag)
    ch.queue_unbind("ev-q", "ev-x", "rk")
    ch.exchange_delete("ev-x")
    ch.queue_delete("ev-q")
    ch.close()
    conn.close()
    events = listener.take(13)
    in_order(events, ["user.authentication.success", "connection.created", "channel.created",
                      "queue.created", "exchange.created", "binding.created",
                      "consumer.created", "consumer.deleted", "binding.deleted",
                      "exchange.deleted", "queue.deleted", "channel.closed",
                      "connection.closed"])
    by_key = {k: (h, p) for k, h, p in events}
    for key, (headers, props) in by_key.items():
        assert props.delivery_mode == 2 and isinstance(headers["timestamp_in_ms"], int), key
        assert props.timestamp == headers["timestamp_in_ms"] // 1000, key
        if key != "user.authentication.success":
            assert headers["user_who_performed_action"] == "guest", key
    q = by_key["queue.created"][0]
    assert {k: q[k] for k in ("name", "vhost", "durable", "auto_delete", "exclusive",
                              "arguments")} == {
        "name": "ev-q", "vhost": "/", "durable": False, "auto_delete": False,
        "exclusive": False, "arguments": {"x-message-ttl": 1000}}
    b = by_key["binding.created"][0]
    assert (b["source_name"], b["source_kind"], b["destination_name"], b["destination_kind"],
            b["routing_key"]) == ("ev-x", "exchange", "ev-q", "queue", "rk")
    c = by_key["consumer.created"][0]
    assert (c["queue"], c["ack_required"], c["exclusive"], c["arguments"]) == \
        ("ev-q", True, False, {"x-priority": 3})
    assert by_key["consumer.deleted"][0]["consumer_tag"] == c["consumer_tag"]
    connection = by_key["connection.created"][0]
    assert (connection["user"], connection["vhost"], connection["auth_mechanism"]) == \
        ("guest", "/", "PLAIN")
    assert connection["client_properties"]["product"] == "Pika Python Client Library"
    channel = by_key["channel.created"][0]
    assert (channel["number"], channel["connection"]) == (1, connection["name"])
    assert by_key["channel.closed"][0]["pid"] == channel["name"]
    assert by_key["connection.closed"][0]["name"] == connection["name"]
    login = by_key["user.authentication.success"][0]
    assert (login["name"], login["connection_name"]) == ("guest", connection["name"])


def test_a_failed_login_is_published(broker, listener):
    url = broker.url.replace("guest:guest", "guest:wrong")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(url))
    [(key, headers, _)] = listener.take(1)
    assert key == "user.authentication.failure"
    assert (headers["name"], headers["auth_mechanism"], headers["error"]) == \
        ("guest", "PLAIN", "user 'guest' - invalid credentials")


def test_management_changes_are_published_as_their_users(broker, listener):
    steps = [("PUT", "policies/%2F/ev-pol", {"pattern": "^ev-none$",
                                              "definition": {"max-length": 1}}),
             ("DELETE", "policies/%2F/ev-pol", None),
             ("PUT", "vhosts/ev-vh", {}),
             ("PUT", "users/ev-user", {"password": "p", "tags": ""}),
             ("PUT", "permissions/ev-vh/ev-user", {"configure": ".*", "write": ".*",
                                                  "read": ".*"}),
             ("PUT", "topic-permissions/ev-vh/ev-user", {"exchange": "amq.topic",
                                                        "write": ".*", "read": ".*"}),
             ("DELETE", "topic-permissions/ev-vh/ev-user", None),
             ("DELETE", "permissions/ev-vh/ev-user", None),
             ("PUT", "users/ev-user", {"password": "p2", "tags": "monitoring"}),
             ("PUT", "vhost-limits/ev-vh/max-connections", {"value": 10}),
             ("DELETE", "users/ev-user", None),
             ("DELETE", "vhosts/ev-vh", None)]
    for method, path, body in steps:
        status, _ = broker.request(method, path, body)
        assert status in (201, 204), (method, path, status)
    predeclared = ["", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match",
                   "amq.rabbitmq.trace"]
    events = listener.take(28)
    assert [k for k, _, _ in events] == [
        "policy.set", "policy.cleared", *["exchange.created"] * 7, "vhost.created",
        "permission.created", "user.created", "permission.created", "topic.permission.created",
        "topic.permission.deleted", "permission.deleted", "user.password.changed",
        "user.tags.set", "vhost.limits.set", "user.deleted", *["exchange.deleted"] * 7,
        "vhost.deleted"]
    assert all(h["user_who_performed_action"] == "guest" for _, h, _ in events)
    # a new vhost's predeclared exchanges come and go with it (RabbitMQ's order differs)
    for first, key in ((2, "exchange.created"), (20, "exchange.deleted")):
        made = events[first:first + 7]
        assert sorted(h["name"] for _, h, _ in made) == sorted(predeclared), key
        assert {h["vhost"] for _, h, _ in made} == {"ev-vh"}
    events = events[:2] + events[9:20] + events[27:]
    policy = events[0][1]
    assert (policy["name"], policy["vhost"], policy["pattern"], policy["definition"],
            policy["apply-to"], policy["priority"]) == \
        ("ev-pol", "/", "^ev-none$", {"max-length": 1}, "all", 0)
    assert (events[3][1]["user"], events[3][1]["vhost"]) == ("guest", "ev-vh")
    assert events[10][1]["tags"] == ["monitoring"]
    assert events[11][1]["max-connections"] == 10


def test_off_by_default(tmp_path):
    with BrokerProcess(tmp_path, management=True) as b:
        status, _ = b.request("GET", "exchanges/%2F/amq.rabbitmq.event")
        assert status == 404
