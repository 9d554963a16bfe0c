"""Limits as the node sees them: counted across front-end processes, released when a
front-end dies, kept across restarts and in definitions imports (interop/test_limits.py has
what a client sees, checked against RabbitMQ too).
"""
from __future__ import annotations

import base64
import json
import os
import signal
import urllib.error
import urllib.request

import pika
import pytest

from amqpbroker.testing import BrokerProcess, leaks


def api(broker, method: str, path: str, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{broker.management_port}/api/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def connect(broker, name: str) -> pika.BlockingConnection:
    params = pika.URLParameters(broker.url)
    params.client_properties = {"connection_name": name}
    return pika.BlockingConnection(params)


def frontend_of(broker, name: str) -> int:
    [c] = [c for c in broker.api("connections")
           if c["client_properties"].get("connection_name") == name]
    return c["frontend"]


def one_on_each_frontend(broker) -> dict:
    """{front-end: connection}, one connection on each of the two (the kernel picks where a
    connection lands: open until both have one, close the rest)."""
    held, others = {}, []
    for i in range(200):
        conn = connect(broker, f"c{i}")
        where = frontend_of(broker, f"c{i}")
        if where in held:
            others.append(conn)
        else:
            held[where] = conn
        if len(held) == 2:
            break
    for conn in others:
        conn.close()
    assert sorted(held) == [0, 1]
    leaks.wait_until(lambda: len(broker.api("connections")) == 2,
                     what="the other connections to close")
    return held


def refused(broker, name: str = "refused") -> str:
    """The reply text that refused a new connection."""
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as exc:
        connect(broker, name)
    return str(exc.value)


@pytest.fixture
def frontends(tmp_path):
    with BrokerProcess(tmp_path, "--workers", "2", "--frontends", "2", management=True) as b:
        yield b


def test_connections_are_counted_per_node_and_released_with_a_dead_frontend(frontends):
    b = frontends
    held = one_on_each_frontend(b)
    assert api(b, "PUT", "vhost-limits/%2F/max-connections", {"value": 2})[0] == 204
    # each front-end holds one: counted per process, 1 < 2 would let this in
    assert "connection limit (2) is reached" in refused(b)

    old = b.frontend_pids[0]
    os.kill(old, signal.SIGKILL)
    assert not leaks.wait_gone([old], timeout=10)
    leaks.wait_until(lambda: b.api("nodes")[0]["frontends"][0]["running"]
                     and b.api("nodes")[0]["frontends"][0]["pid"] != old,
                     what="front-end 0 to restart")
    # its connection is no longer counted: one more fits, and then no more
    again = connect(b, "again")
    assert "connection limit (2) is reached" in refused(b)
    again.close()
    held[1].close()


def test_channels_are_counted_per_user_across_frontends(frontends):
    b = frontends
    held = one_on_each_frontend(b)
    assert api(b, "PUT", "user-limits/guest/max-channels", {"value": 2})[0] == 204
    held[0].channel()
    ch = held[1].channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as exc:
        held[1].channel()
    assert (exc.value.reply_code, exc.value.reply_text) == (
        530, "NOT_ALLOWED - number of channels opened for user 'guest' has reached the "
             "maximum allowed user limit of (2)")
    assert not ch.is_open
    # the closed connection's channel is free again (once its front-end has said so): one
    # more channel fits beside held[0]'s, and then no more
    def probe():
        conn = connect(b, "probe")
        try:
            conn.channel()
        except pika.exceptions.ConnectionClosedByBroker:
            return None
        return conn
    conn = leaks.wait_until(probe, what="the closed connection's channel to be released")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
        conn.channel()
    held[0].close()


def test_limits_survive_a_restart_and_recovery_keeps_every_queue(tmp_path):
    with BrokerProcess(tmp_path, management=True) as b:
        conn = connect(b, "declare")
        ch = conn.channel()
        for name in ("q1", "q2", "q3"):
            ch.queue_declare(name, durable=True)
        conn.close()
        # a limit below what the vhost holds bounds new queues, not the ones it has
        assert api(b, "PUT", "vhost-limits/%2F/max-queues", {"value": 1})[0] == 204
        assert api(b, "PUT", "user-limits/guest/max-connections", {"value": 5})[0] == 204
        b.restart()
        assert api(b, "GET", "vhost-limits") == (200, [{"vhost": "/",
                                                        "value": {"max-queues": 1}}])
        assert api(b, "GET", "user-limits") == (200, [{"user": "guest",
                                                       "value": {"max-connections": 5}}])
        assert {q["name"] for q in b.api("queues")} == {"q1", "q2", "q3"}
        conn = connect(b, "after")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            conn.channel().queue_declare("q4")
        assert exc.value.reply_code == 406
        conn.close()


def test_definitions_import_sets_limits_as_rabbitmq_exports_them(tmp_path):
    """A RabbitMQ 3.10 management export: vhost limits as a parameter, user limits on the
    user; an import whose queues would pass max-queues is refused whole."""
    with BrokerProcess(tmp_path, management=True) as b:
        doc = {"vhosts": [{"name": "shop"}],
               "users": [{"name": "clerk", "password_hash": "", "tags": [],
                          "limits": {"max-channels": 3}}],
               "parameters": [{"vhost": "shop", "component": "vhost-limits", "name": "limits",
                               "value": {"max-queues": 2, "max-connections": 10}},
                              {"vhost": "shop", "component": "federation-upstream",
                               "name": "up", "value": {"uri": "amqp://elsewhere"}}],
               "queues": [{"name": "a", "vhost": "shop"}]}
        assert api(b, "POST", "definitions", doc)[0] == 204
        assert api(b, "GET", "vhost-limits/shop")[1] == [
            {"vhost": "shop", "value": {"max-queues": 2, "max-connections": 10}}]
        assert api(b, "GET", "user-limits/clerk")[1] == [
            {"user": "clerk", "value": {"max-channels": 3}}]

        too_many = {"queues": [{"name": n, "vhost": "shop"} for n in ("b", "c")]}
        status, body = api(b, "POST", "definitions", too_many)
        assert (status, body["reason"]) == (400, "queues: cannot declare queue 'c': queue "
                                                 "limit in vhost 'shop' (2) is reached")
        assert {q["name"] for q in b.api("queues/shop")} == {"a"}       # nothing applied

        bad = {"users": [{"name": "x", "password_hash": "", "tags": [],
                          "limits": {"max-channels": "many"}}]}
        status, body = api(b, "POST", "definitions", bad)
        assert (status, body["reason"]) == (
            400, "users[0].limits: max-channels should be a number, actually was "
                 "<<\"many\">>")
        exported = api(b, "GET", "definitions")[1]
        assert {"vhost": "shop", "component": "vhost-limits", "name": "limits",
                "value": {"max-queues": 2, "max-connections": 10}} in exported["parameters"]
