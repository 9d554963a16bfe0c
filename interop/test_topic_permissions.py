"""Topic permissions (RabbitMQ's topic authorisation): per user, vhost and *topic exchange*,
a ``write`` pattern over the routing keys the user may publish with and a ``read`` pattern over
the binding keys it may bind (and unbind) with. Without one for an exchange, anything goes.

Every test here passes against RabbitMQ 3.10.8 (``AMQP_URL``/``AMQP_MGMT_URL``) and ours.
"""
from __future__ import annotations

import json

import pytest
from pika.exceptions import ChannelClosedByBroker

from amqpbroker.testing.mgmt_client import ManagementClient

from .conftest import q, url_with

PASSWORD = "tp-s3cret"


@pytest.fixture
def http(mgmt_url):
    return ManagementClient(mgmt_url)


@pytest.fixture
def tp_user(mgmt, uniq):
    """A user with full permissions on '/' (and the management tag, for the HTTP API tests);
    its topic permissions are set per test."""
    name = uniq("tp.user")
    assert mgmt.put(f"/api/users/{q(name)}", {"password": PASSWORD, "tags": "management"}) \
        == 201
    assert mgmt.put(f"/api/permissions/%2F/{q(name)}",
                    {"configure": ".*", "write": ".*", "read": ".*"}) == 201
    yield name
    mgmt.delete(f"/api/users/{q(name)}")


def set_topic(mgmt, user: str, exchange: str, write: str, read: str, vhost: str = "/"):
    assert mgmt.put(f"/api/topic-permissions/{q(vhost)}/{q(user)}",
                    {"exchange": exchange, "write": write, "read": read}) in (201, 204)


@pytest.fixture
def tp_channel(connect, broker_url, tp_user):
    """A channel of ``tp_user``'s; ``again()`` opens a new one after the broker closed it."""
    conn = connect(url_with(broker_url, user=tp_user, password=PASSWORD))

    class Channels:
        def __init__(self):
            self.ch = conn.channel()

        def again(self):
            self.ch = conn.channel()
            return self.ch
    return Channels()


def topic_and_queue(channels, cleanup, uniq):
    """(channel, a topic exchange, a queue) of ``tp_user``'s, deleted at teardown."""
    ex = cleanup.exchange(uniq("tp.x"))
    ch = channels.ch
    ch.exchange_declare(ex, "topic")
    return ch, ex, cleanup.queue(ch.queue_declare(uniq("tp.q")).method.queue)


def refusal(exchange: str, key: str, user: str) -> str:
    return (f"ACCESS_REFUSED - access to topic '{key}' in exchange '{exchange}' in vhost '/' "
            f"refused for user '{user}'")


def refused(channels, action) -> str:
    """The 403 text ``action(channel)`` was refused with; the channel is opened again."""
    with pytest.raises(ChannelClosedByBroker) as e:
        action(channels.ch)
        channels.ch.basic_qos(prefetch_count=0)     # a publish has no reply: this one's
    channels.again()
    assert e.value.reply_code == 403
    return e.value.reply_text


def test_a_publish_needs_its_routing_key_matched_by_write(mgmt, tp_user, tp_channel, cleanup,
                                                          uniq):
    ex = cleanup.exchange(uniq("tp.x"))
    other = cleanup.exchange(uniq("tp.free"))
    direct = cleanup.exchange(uniq("tp.direct"))
    ch = tp_channel.ch
    ch.exchange_declare(ex, "topic")
    ch.exchange_declare(other, "topic")
    ch.exchange_declare(direct, "direct")
    qname = cleanup.queue(ch.queue_declare(uniq("tp.q")).method.queue)
    ch.queue_bind(qname, ex, "#")
    set_topic(mgmt, tp_user, ex, "^orders\\.", ".*")
    set_topic(mgmt, tp_user, direct, "^orders\\.", ".*")
    ch.confirm_delivery()
    ch.basic_publish(ex, "orders.eu", b"allowed")
    assert refused(tp_channel, lambda c: c.basic_publish(ex, "invoices.eu", b"no")) == \
        refusal(ex, "invoices.eu", tp_user)
    # an empty routing key is refused by a pattern that needs a prefix, like any other
    assert refused(tp_channel, lambda c: c.basic_publish(ex, "", b"no")) == \
        refusal(ex, "", tp_user)
    ch = tp_channel.ch
    ch.confirm_delivery()
    ch.basic_publish(other, "invoices.eu", b"no topic permission there")
    ch.basic_publish(direct, "invoices.eu", b"not a topic exchange")
    method, _, body = ch.basic_get(qname, auto_ack=True)
    assert body == b"allowed" and ch.basic_get(qname)[0] is None


def test_a_binding_needs_its_key_matched_by_read(mgmt, tp_user, tp_channel, cleanup, uniq):
    ex = cleanup.exchange(uniq("tp.x"))
    dest = cleanup.exchange(uniq("tp.dest"))
    ch = tp_channel.ch
    ch.exchange_declare(ex, "topic")
    ch.exchange_declare(dest, "topic")
    qname = cleanup.queue(ch.queue_declare(uniq("tp.q")).method.queue)
    ch.queue_bind(qname, ex, "audit.#")
    set_topic(mgmt, tp_user, ex, ".*", "^audit\\.")
    ch.queue_bind(qname, ex, "audit.eu")
    ch.queue_unbind(qname, ex, "audit.eu")
    for action, key in [(lambda c: c.queue_bind(qname, ex, "secret.#"), "secret.#"),
                        (lambda c: c.queue_unbind(qname, ex, "secret.x"), "secret.x"),
                        (lambda c: c.exchange_bind(dest, ex, "secret.y"), "secret.y"),
                        (lambda c: c.exchange_unbind(dest, ex, "secret.z"), "secret.z")]:
        assert refused(tp_channel, action) == refusal(ex, key, tp_user)
    tp_channel.ch.exchange_bind(dest, ex, "audit.x")
    # the destination's topic permission is not asked: only the source's
    set_topic(mgmt, tp_user, dest, "^$", "^$")
    tp_channel.ch.exchange_unbind(dest, ex, "audit.x")
    # an exchange that does not exist is 404, not a topic refusal
    with pytest.raises(ChannelClosedByBroker) as e:
        tp_channel.ch.queue_bind(qname, uniq("tp.missing"), "secret")
    assert e.value.reply_code == 404


def test_an_empty_pattern_allows_the_empty_key_only(mgmt, tp_user, tp_channel, cleanup, uniq):
    ch, ex, qname = topic_and_queue(tp_channel, cleanup, uniq)
    set_topic(mgmt, tp_user, ex, "", "")
    ch.confirm_delivery()
    ch.basic_publish(ex, "", b"empty key")
    ch.queue_bind(qname, ex, "")
    assert refused(tp_channel, lambda c: c.basic_publish(ex, "a", b"x")) == \
        refusal(ex, "a", tp_user)
    assert refused(tp_channel, lambda c: c.queue_bind(qname, ex, "a")) == \
        refusal(ex, "a", tp_user)


def test_username_and_vhost_are_replaced_unescaped(mgmt, tp_user, tp_channel, cleanup, uniq):
    """``{username}`` and ``{vhost}`` become the user's name and the vhost before matching,
    as text (a '.' in the name stays a regex '.'); ``{client_id}`` is not replaced over
    AMQP 0-9-1."""
    ch, ex, qname = topic_and_queue(tp_channel, cleanup, uniq)
    set_topic(mgmt, tp_user, ex, "^{username}$", "^{vhost}$|^{client_id}$")
    ch.confirm_delivery()
    ch.basic_publish(ex, tp_user, b"own name")
    ch.basic_publish(ex, tp_user.replace(".", "X"), b"'.' matched any character")
    ch.queue_bind(qname, ex, "/")
    ch.queue_bind(qname, ex, "{client_id}")
    assert refused(tp_channel, lambda c: c.basic_publish(ex, "someone", b"x")) == \
        refusal(ex, "someone", tp_user)


def test_the_management_api_publish_and_bindings_are_checked(mgmt, http, tp_user, tp_channel,
                                                             cleanup, uniq):
    ch, ex, qname = topic_and_queue(tp_channel, cleanup, uniq)
    set_topic(mgmt, tp_user, ex, "^ok$", "^ok$")
    path = f"/api/exchanges/%2F/{q(ex)}/publish"
    body = {"properties": {}, "routing_key": "no", "payload": "x", "payload_encoding": "string"}
    status, answer, _ = http.request("POST", path, tp_user, PASSWORD, body=body)
    assert (status, answer) == (400, {"error": "bad_request",
                                      "reason": "403 " + refusal(ex, "no", tp_user)})
    status, answer, _ = http.request("POST", path, tp_user, PASSWORD,
                                     body={**body, "routing_key": "ok"})
    assert (status, answer) == (200, {"routed": False})
    bindings = f"/api/bindings/%2F/e/{q(ex)}/q/{q(qname)}"
    status, answer, _ = http.request("POST", bindings, tp_user, PASSWORD,
                                     body={"routing_key": "no"})
    assert (status, answer) == (401, {"error": "not_authorised", "reason": "Access refused."})
    assert http.request("POST", bindings, tp_user, PASSWORD, body={"routing_key": "ok"})[0] \
        == 201
    set_topic(mgmt, tp_user, ex, "^ok$", "^nothing$")
    status, answer, _ = http.request("DELETE", bindings + "/ok", tp_user, PASSWORD)
    assert (status, answer) == (401, {"error": "not_authorised", "reason": "Access refused."})


def test_the_http_api_lists_sets_and_deletes_them(mgmt, http, tp_user, uniq):
    vhost = uniq("tp.vh")
    assert mgmt.put(f"/api/vhosts/{q(vhost)}", {}) == 201
    try:
        pair = f"/api/topic-permissions/%2F/{q(tp_user)}"
        assert http.request("GET", pair, "guest", "guest")[0] == 404
        # 201 when the pair had none; 204 after, also for another exchange
        assert mgmt.put(pair, {"exchange": "amq.topic", "write": "^a", "read": "^b"}) == 201
        assert mgmt.put(pair, {"exchange": "amq.topic", "write": "^a", "read": "^b"}) == 204
        assert mgmt.put(pair, {"exchange": "other", "write": "^{username}", "read": ""}) == 204
        set_topic(mgmt, tp_user, "amq.topic", "w", "r", vhost=vhost)
        mine = [{"user": tp_user, "vhost": "/", "exchange": "amq.topic", "write": "^a",
                 "read": "^b"},
                {"user": tp_user, "vhost": "/", "exchange": "other", "write": "^{username}",
                 "read": ""}]
        theirs = {"user": tp_user, "vhost": vhost, "exchange": "amq.topic", "write": "w",
                  "read": "r"}

        def key(p):
            return json.dumps(p, sort_keys=True)
        assert sorted(mgmt.get(pair), key=key) == sorted(mine, key=key)
        assert sorted(mgmt.get(f"/api/users/{q(tp_user)}/topic-permissions"), key=key) == \
            sorted([*mine, theirs], key=key)
        assert mgmt.get(f"/api/vhosts/{q(vhost)}/topic-permissions") == [theirs]
        everything = mgmt.get("/api/topic-permissions")
        assert all(p in everything for p in [*mine, theirs])
        exported = mgmt.get("/api/definitions")["topic_permissions"]
        assert all(p in exported for p in [*mine, theirs])
        # the user's and the vhost's plain permissions, listed the same ways
        assert mgmt.get(f"/api/users/{q(tp_user)}/permissions") == [
            {"user": tp_user, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
        assert {"user": tp_user, "vhost": "/", "configure": ".*", "write": ".*",
                "read": ".*"} in mgmt.get("/api/vhosts/%2F/permissions")
        assert mgmt.delete(pair) == 204
        assert http.request("GET", pair, "guest", "guest")[0] == 404
        assert mgmt.delete(pair) == 404
        # a deleted vhost takes its topic permissions with it
        assert mgmt.delete(f"/api/vhosts/{q(vhost)}") == 204
        assert mgmt.get(f"/api/users/{q(tp_user)}/topic-permissions") == []
    finally:
        mgmt.delete(f"/api/vhosts/{q(vhost)}")


def test_a_deleted_user_takes_its_topic_permissions(mgmt, uniq):
    name = uniq("tp.gone")
    assert mgmt.put(f"/api/users/{q(name)}", {"password": PASSWORD, "tags": ""}) == 201
    set_topic(mgmt, name, "amq.topic", "a", "b")
    assert mgmt.delete(f"/api/users/{q(name)}") == 204
    assert all(p["user"] != name for p in mgmt.get("/api/topic-permissions"))
    assert mgmt.put(f"/api/users/{q(name)}", {"password": PASSWORD, "tags": ""}) == 201
    try:
        assert mgmt.get(f"/api/users/{q(name)}/topic-permissions") == []
    finally:
        mgmt.delete(f"/api/users/{q(name)}")


@pytest.mark.parametrize("body, reason", [
    ({"write": "a", "read": "a"}, "exchange"),
    ({"exchange": "x", "read": "a"}, "write"),
    ({"exchange": "x", "write": "a"}, "read"),
    ({"exchange": "x", "write": "(", "read": "a"}, "invalid_regexp"),
])
def test_a_bad_body_is_400_and_nothing_is_set(mgmt, http, tp_user, body, reason):
    pair = f"/api/topic-permissions/%2F/{q(tp_user)}"
    status, answer, _ = http.request("PUT", pair, "guest", "guest", body=body)
    assert status == 400 and answer["error"] == "bad_request" and reason in str(answer["reason"])
    assert http.request("GET", pair, "guest", "guest")[0] == 404


@pytest.mark.parametrize("path", ["/api/topic-permissions/{vhost}/guest",
                                  "/api/topic-permissions/%2F/{user}"])
def test_a_missing_user_or_vhost_is_400(http, uniq, path):
    path = path.format(vhost=q(uniq("tp.novh")), user=q(uniq("tp.nobody")))
    status, answer, _ = http.request("PUT", path, "guest", "guest",
                                     body={"exchange": "x", "write": "a", "read": "a"})
    assert (status, answer) == (400, {"error": "bad_request",
                                      "reason": "vhost_or_user_not_found"})


def test_a_topic_permission_for_another_vhost_does_not_apply(mgmt, tp_user, tp_channel,
                                                             cleanup, uniq):
    vhost = uniq("tp.vh")
    assert mgmt.put(f"/api/vhosts/{q(vhost)}", {}) == 201
    try:
        assert mgmt.put(f"/api/permissions/{q(vhost)}/{q(tp_user)}",
                        {"configure": ".*", "write": ".*", "read": ".*"}) == 201
        set_topic(mgmt, tp_user, "amq.topic", "^$", "^$", vhost=vhost)
        ch = tp_channel.ch
        qname = cleanup.queue(ch.queue_declare(uniq("tp.q")).method.queue)
        ch.queue_bind(qname, "amq.topic", qname)
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", qname, b"in /")
        assert ch.basic_get(qname, auto_ack=True)[2] == b"in /"
    finally:
        mgmt.delete(f"/api/vhosts/{q(vhost)}")


def test_pika_publish_refused_leaves_other_channels_working(mgmt, tp_user, tp_channel,
                                                            connect, broker_url, cleanup, uniq):
    """The refusal closes the publishing channel only: another channel of the same
    connection, and another connection, go on."""
    ex = cleanup.exchange(uniq("tp.x"))
    tp_channel.ch.exchange_declare(ex, "topic")
    set_topic(mgmt, tp_user, ex, "^ok$", ".*")
    sibling = tp_channel.ch.connection.channel()
    refused(tp_channel, lambda c: c.basic_publish(ex, "no", b"x"))
    qname = cleanup.queue(sibling.queue_declare(uniq("tp.q")).method.queue)
    sibling.queue_bind(qname, ex, "ok")
    sibling.confirm_delivery()
    sibling.basic_publish(ex, "ok", b"still here")
    other = connect(url_with(broker_url, user=tp_user, password=PASSWORD)).channel()
    assert other.basic_get(qname, auto_ack=True)[2] == b"still here"


def test_a_definitions_import_sets_them(mgmt, http, tp_user, tp_channel, cleanup, uniq):
    """A RabbitMQ export's ``topic_permissions`` apply: an import that dropped them would
    widen what its users may do."""
    ex = cleanup.exchange(uniq("tp.x"))
    tp_channel.ch.exchange_declare(ex, "topic")
    doc = {"topic_permissions": [{"user": tp_user, "vhost": "/", "exchange": ex,
                                  "write": "^imported$", "read": ".*"}]}
    assert http.request("POST", "/api/definitions", "guest", "guest", body=doc)[0] == 204
    assert mgmt.get(f"/api/topic-permissions/%2F/{q(tp_user)}") == [
        {"user": tp_user, "vhost": "/", "exchange": ex, "write": "^imported$", "read": ".*"}]
    assert refused(tp_channel, lambda c: c.basic_publish(ex, "other", b"x")) == \
        refusal(ex, "other", tp_user)
