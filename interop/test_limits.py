"""RabbitMQ's per-vhost and per-user limits: the management endpoints, and what a client sees
when a limit is reached (codes, texts, class and method ids as RabbitMQ 3.10 sends them).

Each test works in a vhost and with a user of its own, made through the API and removed at
the end, so a limit never touches another test.
"""
from __future__ import annotations

import json
import re
import urllib.error

import pika
import pytest
from pamqp import commands as spec

from .conftest import RawAMQP, q, url_with, wait_until

PASSWORD = "limits-pw"


def call(mgmt, method: str, path: str, body=None):
    """(status, decoded JSON or None), for errors too."""
    try:
        return mgmt.request(method, path, body)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


@pytest.fixture
def tenant(mgmt, uniq):
    """A vhost and a user with every permission in it, deleted afterwards."""
    vhost, user = uniq("lim-vh"), uniq("lim-user")
    assert mgmt.put(f"/api/vhosts/{q(vhost)}", {}) in (201, 204)
    assert mgmt.put(f"/api/users/{q(user)}", {"password": PASSWORD, "tags": ""}) in (201, 204)
    assert mgmt.put(f"/api/permissions/{q(vhost)}/{q(user)}",
                    {"configure": ".*", "write": ".*", "read": ".*"}) in (201, 204)
    yield vhost, user
    mgmt.delete(f"/api/users/{q(user)}")
    mgmt.delete(f"/api/vhosts/{q(vhost)}")


@pytest.fixture
def peers(amqp_host_port):
    opened: list[RawAMQP] = []

    def open_(user: str, vhost: str):
        """A raw connection's handshake: (peer, 'ok') or (peer, the method that refused)."""
        peer = RawAMQP(*amqp_host_port)
        opened.append(peer)
        try:
            peer.handshake(user, PASSWORD, vhost)
        except AssertionError:
            return peer, peer.last[1]
        return peer, "ok"

    yield open_
    for p in opened:
        p.close()


def close_of(method):
    return method.name, method.reply_code, method.reply_text, method.class_id, method.method_id


# ------------------------------------------------------------------------- the API
def test_vhost_limits_are_set_listed_and_cleared(mgmt, tenant):
    vhost, _ = tenant
    path = f"/api/vhost-limits/{q(vhost)}"
    assert call(mgmt, "GET", path) == (200, [])
    assert call(mgmt, "PUT", path + "/max-connections", {"value": 2})[0] == 204
    assert call(mgmt, "PUT", path + "/max-queues", {"value": 5})[0] == 204
    expected = {"vhost": vhost, "value": {"max-connections": 2, "max-queues": 5}}
    assert call(mgmt, "GET", path) == (200, [expected])
    assert expected in call(mgmt, "GET", "/api/vhost-limits")[1]
    assert call(mgmt, "PUT", path + "/max-connections", {"value": -1})[0] == 204
    assert call(mgmt, "GET", path)[1][0]["value"]["max-connections"] == -1
    assert call(mgmt, "DELETE", path + "/max-connections")[0] == 204
    assert call(mgmt, "DELETE", path + "/max-connections")[0] == 204      # not set: fine
    assert call(mgmt, "GET", path) == (200, [{"vhost": vhost, "value": {"max-queues": 5}}])
    assert call(mgmt, "GET", "/api/vhost-limits/no-such-vhost")[0] == 404


def test_vhost_limit_values_are_checked_as_rabbitmq_checks_them(mgmt, tenant):
    path = f"/api/vhost-limits/{q(tenant[0])}"
    assert call(mgmt, "PUT", path + "/max-connections", {"value": "x"}) == (400, {
        "error": "bad_request", "reason": "Validation failed\n\nmax-connections should be a "
                                          "number, actually was <<\"x\">>\n"})
    assert call(mgmt, "PUT", path + "/max-queues", {"value": 1.5})[1]["reason"] == \
        "Validation failed\n\nmax-queues should be a number, actually was 1.5\n"
    assert call(mgmt, "PUT", path + "/max-channels", {"value": 3})[1]["reason"] == \
        "Validation failed\n\nUnrecognised terms [{<<\"max-channels\">>,3}] in limits\n"
    status, body = call(mgmt, "PUT", path + "/max-queues", {})
    assert status == 400 and "key_missing" in body["reason"]
    assert call(mgmt, "PUT", "/api/vhost-limits/no-such-vhost/max-queues", {"value": 1}) == (
        404, {"error": "not_found", "reason": "vhost_not_found"})
    assert call(mgmt, "GET", path) == (200, [])          # nothing was stored


def test_user_limits_are_set_listed_and_cleared(mgmt, tenant):
    _, user = tenant
    path = f"/api/user-limits/{q(user)}"
    assert call(mgmt, "GET", path) == (200, [])
    assert call(mgmt, "PUT", path + "/max-connections", {"value": 3})[0] == 204
    assert call(mgmt, "PUT", path + "/max-channels", {"value": 4})[0] == 204
    expected = {"user": user, "value": {"max-connections": 3, "max-channels": 4}}
    assert call(mgmt, "GET", path) == (200, [expected])
    assert expected in call(mgmt, "GET", "/api/user-limits")[1]
    assert call(mgmt, "GET", f"/api/users/{q(user)}")[1]["limits"] == expected["value"]
    # replacing the user keeps its limits, as in RabbitMQ
    assert mgmt.put(f"/api/users/{q(user)}", {"password": PASSWORD, "tags": ""}) == 204
    assert call(mgmt, "GET", path) == (200, [expected])
    assert call(mgmt, "DELETE", path + "/max-connections")[0] == 204
    assert call(mgmt, "GET", path) == (200, [{"user": user, "value": {"max-channels": 4}}])
    assert call(mgmt, "GET", "/api/user-limits/no-such-user")[0] == 404


def test_user_limit_values_are_checked_as_rabbitmq_checks_them(mgmt, tenant):
    path = f"/api/user-limits/{q(tenant[1])}"
    assert call(mgmt, "PUT", path + "/max-channels", {"value": "x"}) == (400, {
        "error": "bad_request",
        "reason": "max-channels should be a number, actually was <<\"x\">>"})
    assert call(mgmt, "PUT", path + "/max-queues", {"value": 4})[1]["reason"] == \
        "Unrecognised terms [{<<\"max-queues\">>,4}] in user-limits"
    assert call(mgmt, "PUT", "/api/user-limits/no-such-user/max-channels", {"value": 1}) == (
        400, {"error": "bad_request", "reason": ["no_such_user", "no-such-user"]})
    assert call(mgmt, "GET", path) == (200, [])


def test_limits_are_in_the_definitions(mgmt, tenant):
    vhost, user = tenant
    mgmt.put(f"/api/vhost-limits/{q(vhost)}/max-queues", {"value": 7})
    mgmt.put(f"/api/user-limits/{q(user)}/max-channels", {"value": 9})
    defs = mgmt.get("/api/definitions")
    assert {"vhost": vhost, "component": "vhost-limits", "name": "limits",
            "value": {"max-queues": 7}} in defs["parameters"]
    [entry] = [u for u in defs["users"] if u["name"] == user]
    assert entry["limits"] == {"max-channels": 9}


# ------------------------------------------------------------------------- connections
def test_vhost_connection_limit_refuses_with_530(mgmt, tenant, peers):
    vhost, user = tenant
    mgmt.put(f"/api/vhost-limits/{q(vhost)}/max-connections", {"value": 1})
    first, result = peers(user, vhost)
    assert result == "ok"
    _, refused = peers(user, vhost)
    assert close_of(refused) == (
        "Connection.Close", 530, f"NOT_ALLOWED - access to vhost '{vhost}' refused for user "
                                 f"'{user}': connection limit (1) is reached", 10, 40)
    first.close()           # the count drops when the connection is gone
    wait_until(lambda: peers(user, vhost)[1] == "ok", timeout=10)


def test_vhost_connection_limit_zero_refuses_every_connection(mgmt, tenant, peers,
                                                              broker_url):
    vhost, user = tenant
    mgmt.put(f"/api/vhost-limits/{q(vhost)}/max-connections", {"value": 0})
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as exc:
        pika.BlockingConnection(pika.URLParameters(
            url_with(broker_url, user=user, password=PASSWORD, vhost=vhost)))
    assert "(530) \"NOT_ALLOWED - access to vhost" in str(exc.value)
    assert "connection limit (0) is reached" in str(exc.value)
    mgmt.put(f"/api/vhost-limits/{q(vhost)}/max-connections", {"value": -1})   # no limit
    assert peers(user, vhost)[1] == "ok"


def test_user_connection_limit_refuses_with_530(mgmt, tenant, peers):
    vhost, user = tenant
    mgmt.put(f"/api/user-limits/{q(user)}/max-connections", {"value": 2})
    held = [peers(user, vhost) for _ in range(2)]
    assert [r for _, r in held] == ["ok", "ok"]
    _, refused = peers(user, vhost)
    assert close_of(refused) == (
        "Connection.Close", 530, f"NOT_ALLOWED - connection refused for user '{user}': user "
                                 f"connection limit (2) is reached", 10, 40)
    mgmt.delete(f"/api/user-limits/{q(user)}/max-connections")
    assert peers(user, vhost)[1] == "ok"


def test_user_channel_limit_counts_every_connection_of_the_user(mgmt, tenant, peers):
    vhost, user = tenant
    mgmt.put(f"/api/user-limits/{q(user)}/max-channels", {"value": 2})
    a, _ = peers(user, vhost)
    b, _ = peers(user, vhost)
    a.send_method(1, spec.Channel.Open())
    assert a.recv_method()[1].name == "Channel.OpenOk"
    b.send_method(1, spec.Channel.Open())
    assert b.recv_method()[1].name == "Channel.OpenOk"
    b.send_method(2, spec.Channel.Open())
    channel, refused = b.recv_method()
    assert channel == 0
    assert close_of(refused) == (
        "Connection.Close", 530, f"NOT_ALLOWED - number of channels opened for user '{user}' "
                                 f"has reached the maximum allowed user limit of (2)", 0, 0)
    b.send_method(0, spec.Connection.CloseOk())
    # b's channel went with b: a new connection may open one channel beside a's, not two
    def second_user_channel():
        peer, _ = peers(user, vhost)
        peer.send_method(1, spec.Channel.Open())
        return peer if peer.recv_method()[1].name == "Channel.OpenOk" else None
    c = wait_until(second_user_channel, timeout=10)
    c.send_method(2, spec.Channel.Open())
    assert close_of(c.recv_method()[1])[1] == 530


# ------------------------------------------------------------------------- queues
def test_vhost_queue_limit_refuses_declares_with_406(mgmt, tenant, broker_url):
    vhost, user = tenant
    mgmt.put(f"/api/vhost-limits/{q(vhost)}/max-queues", {"value": 1})
    conn = pika.BlockingConnection(pika.URLParameters(
        url_with(broker_url, user=user, password=PASSWORD, vhost=vhost)))
    try:
        ch = conn.channel()
        ch.queue_declare("q1")
        ch.queue_declare("q1")                      # a redeclare is no new queue
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.queue_declare("q2")
        assert (exc.value.reply_code, exc.value.reply_text) == (
            406, f"PRECONDITION_FAILED - cannot declare queue 'q2': queue limit in vhost "
                 f"'{vhost}' (1) is reached")
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.queue_declare("", exclusive=True)    # server-named: refused by its name
        assert re.fullmatch(rf"PRECONDITION_FAILED - cannot declare queue 'amq\.gen-[\w-]+': "
                            rf"queue limit in vhost '{re.escape(vhost)}' \(1\) is reached",
                            exc.value.reply_text), exc.value.reply_text
        ch = conn.channel()
        ch.queue_delete("q1")
        ch.queue_declare("q2")                      # room again
        ch.queue_delete("q2")
    finally:
        conn.close()
