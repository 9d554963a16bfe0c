"""Dynamic shovels (RabbitMQ's ``rabbitmq_shovel`` plugin, AMQP 0-9-1): a runtime parameter of
component ``shovel`` moves messages from a source queue (or exchange) to a destination, and
``/api/shovels`` reports it.

Every test here passes against RabbitMQ 3.10.8 with ``rabbitmq_shovel`` and
``rabbitmq_shovel_management`` enabled (``AMQP_URL``/``AMQP_MGMT_URL``) and ours. RabbitMQ
HTML-escapes its reasons (``&lt;&lt;"x"&gt;&gt;``): compared unescaped. A shovel works on its
own time: the tests poll its effects (``wait_until``), as nothing announces them. Ours only
(both process layouts, restarts, a shovel between two brokers, the internal login):
tests/integration/test_shovels.py.
"""
from __future__ import annotations

import html
import json
import time
import urllib.error
import urllib.parse

import pika
import pytest

from .conftest import q, url_with, wait_until

MOVE_WITHIN = 15.0      # seconds a shovel may take to start and move a few messages


@pytest.fixture
def shovels(mgmt):
    """``put(name, value)`` defines a shovel in vhost '/' (its HTTP status); every one is
    deleted at teardown."""
    made = []

    def put(name: str, value: dict) -> int:
        made.append(name)
        return mgmt.request("PUT", f"/api/parameters/shovel/%2F/{q(name)}",
                            {"value": value})[0]
    yield put
    for name in made:
        mgmt.delete(f"/api/parameters/shovel/%2F/{q(name)}")


@pytest.fixture
def queues(connect):
    """``make(*names)`` declares durable queues (purged), deleted at teardown; returns a
    channel."""
    conn = connect()
    ch = conn.channel()
    made = []

    def make(*names: str):
        for name in names:
            ch.queue_declare(name, durable=True)
            ch.queue_purge(name)
            made.append(name)
        return ch
    yield make
    cleanup = connect().channel()
    for name in made:
        cleanup.queue_delete(name)


def plain_uri(uri: str) -> str:
    """A URI as a shovel's status shows it: without the credentials."""
    u = urllib.parse.urlsplit(uri)
    return u._replace(netloc=u.netloc.rpartition("@")[2]).geturl()


def count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def drain(ch, queue: str) -> list:
    got = []
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return got
        got.append((method, props, body))


def connection_names(mgmt) -> set:
    return {c.get("client_properties", {}).get("connection_name")
            for c in mgmt.get("/api/connections")}


def status_of(mgmt, name: str) -> dict | None:
    return next((s for s in mgmt.get("/api/shovels/%2F") if s["name"] == name), None)


def running(mgmt, name: str) -> dict:
    return wait_until(lambda: (s := status_of(mgmt, name)) and s["state"] == "running" and s,
                      MOVE_WITHIN, message=f"shovel {name} running")


def reason_of(mgmt, name: str, value) -> str:
    try:
        mgmt.request("PUT", f"/api/parameters/shovel/%2F/{q(name)}", {"value": value})
    except urllib.error.HTTPError as e:
        assert e.code == 400
        return html.unescape(json.loads(e.read())["reason"])
    mgmt.delete(f"/api/parameters/shovel/%2F/{q(name)}")
    raise AssertionError("the definition was taken")


def test_a_shovel_moves_a_queue_to_another_keeping_order_and_properties(
        mgmt, shovels, queues, broker_url, uniq, connect):
    src, dest, name = uniq("sh.src"), uniq("sh.dest"), uniq("sh")
    ch = queues(src, dest)
    for i in range(20):         # no message_id: a shovel must not add one
        ch.basic_publish("", src, f"m{i}".encode(), pika.BasicProperties(
            delivery_mode=2, content_type="text/plain", headers={"n": i}))
    # "amqp://host:port/" names the vhost "" (RabbitMQ's amqp_uri): "/" is "%2F"
    dest_uri = url_with(broker_url, vhost="/")
    assert shovels(name, {"src-uri": "amqp://", "src-queue": src, "dest-uri": dest_uri,
                          "dest-queue": dest}) == 201
    wait_until(lambda: count(ch, dest) == 20, MOVE_WITHIN, message="20 moved")
    status = running(mgmt, name)
    assert {k: v for k, v in status.items() if k not in ("node", "timestamp")} == {
        "name": name, "vhost": "/", "type": "dynamic", "state": "running",
        "src_uri": "amqp://", "src_protocol": "amqp091", "dest_protocol": "amqp091",
        "dest_uri": plain_uri(dest_uri), "src_queue": src, "dest_queue": dest}
    ch.basic_publish("", src, b"later", pika.BasicProperties(message_id="id-later"))
    wait_until(lambda: count(ch, dest) == 21, MOVE_WITHIN, message="a later one moved")
    got = drain(ch, dest)
    assert [b for _, _, b in got] == [f"m{i}".encode() for i in range(20)] + [b"later"]
    assert [p.headers for _, p, _ in got[:20]] == [{"n": i} for i in range(20)]
    assert {(p.content_type, p.delivery_mode, p.message_id) for _, p, _ in got[:20]} == {
        ("text/plain", 2, None)}
    assert got[20][1].message_id == "id-later" and count(ch, src) == 0
    wait_until(lambda: f"Shovel {name}" in connection_names(mgmt), MOVE_WITHIN,
               message="its connections listed")      # RabbitMQ lists them every 5 s
    assert mgmt.delete(f"/api/parameters/shovel/%2F/{q(name)}") == 204
    assert status_of(mgmt, name) is None
    wait_until(lambda: f"Shovel {name}" not in connection_names(mgmt), MOVE_WITHIN,
               message="its connections closed")


def test_from_an_exchange_with_forward_headers_timestamp_and_properties(
        mgmt, shovels, queues, uniq):
    dest, name = uniq("sh.fwd"), uniq("sh")
    ch = queues(dest)
    ch.queue_bind(dest, "amq.topic", name)
    assert shovels(name, {"src-uri": "amqp://", "src-exchange": "amq.direct",
                          "src-exchange-key": name, "dest-uri": "amqp://",
                          "dest-exchange": "amq.topic", "dest-exchange-key": name,
                          "dest-add-forward-headers": True, "dest-add-timestamp-header": True,
                          "dest-publish-properties": {"priority": 3, "app_id": "sh"}}) == 201
    status = running(mgmt, name)
    assert (status["src_exchange"], status["src_exchange_key"], status["dest_exchange"],
            status["dest_exchange_key"]) == ("amq.direct", name, "amq.topic", name)
    before = int(time.time())
    ch.basic_publish("amq.direct", name, b"x", pika.BasicProperties(
        headers={"x-shovelled": [{"shovel-name": "earlier"}], "h": "v"}))
    wait_until(lambda: count(ch, dest) == 1, MOVE_WITHIN, message="moved")
    [(method, props, body)] = drain(ch, dest)
    assert (method.exchange, method.routing_key, body) == ("amq.topic", name, b"x")
    assert (props.priority, props.app_id, props.headers["h"]) == (3, "sh", "v")
    cluster = mgmt.get("/api/overview")["cluster_name"]
    assert props.headers["x-shovelled"] == [
        {"shovelled-by": cluster, "shovel-type": "dynamic", "shovel-name": name,
         "shovel-vhost": "/", "src-uri": "amqp://", "dest-uri": "amqp://",
         "src-exchange": "amq.direct", "src-exchange-key": name,
         "dest-exchange": "amq.topic", "dest-exchange-key": name},
        {"shovel-name": "earlier"}]
    assert before <= props.headers["x-shovelled-timestamp"] <= time.time() + 1


def queue_to_queue(shovels, queues, uniq, n: int, **keys):
    """(channel, source, destination, shovel name): ``n`` messages in a new source queue,
    and a local shovel with ``keys`` to a new destination queue."""
    src, dest, name = uniq("sh.src"), uniq("sh.dest"), uniq("sh")
    ch = queues(src, dest)
    for i in range(n):
        ch.basic_publish("", src, f"m{i}".encode())
    assert shovels(name, {"src-uri": "amqp://", "src-queue": src, "dest-uri": "amqp://",
                          "dest-queue": dest, **keys}) == 201
    return ch, src, dest, name


def defined(mgmt, name: str) -> bool:
    try:
        mgmt.get(f"/api/parameters/shovel/%2F/{q(name)}")
    except urllib.error.HTTPError as e:
        assert e.code == 404
        return False
    return True


@pytest.mark.parametrize("ack_mode", ["on-publish", "no-ack"])
def test_other_ack_modes_move_the_messages(mgmt, shovels, queues, uniq, ack_mode):
    ch, src, dest, _ = queue_to_queue(shovels, queues, uniq, 10, **{"ack-mode": ack_mode})
    wait_until(lambda: count(ch, dest) == 10, MOVE_WITHIN, message="10 moved")
    assert [b for _, _, b in drain(ch, dest)] == [f"m{i}".encode() for i in range(10)]
    assert count(ch, src) == 0


@pytest.mark.parametrize("delete_after, moved", [("queue-length", 5), (3, 3)])
def test_delete_after_moves_that_many_then_deletes_the_shovel(
        mgmt, shovels, queues, uniq, delete_after, moved):
    ch, src, dest, name = queue_to_queue(shovels, queues, uniq, 5,
                                         **{"src-delete-after": delete_after})
    wait_until(lambda: not defined(mgmt, name), MOVE_WITHIN, message="deleted itself")
    assert status_of(mgmt, name) is None
    ch.basic_publish("", src, b"after")
    assert [b for _, _, b in drain(ch, dest)] == [f"m{i}".encode() for i in range(moved)]
    # what it held past its count goes back when its connection closes
    wait_until(lambda: count(ch, src) == 5 - moved + 1, MOVE_WITHIN, message="the rest back")


def test_a_missing_queue_is_declared_durable_with_its_arguments(mgmt, shovels, queues, uniq,
                                                                   connect):
    src, dest, name = uniq("sh.src"), uniq("sh.new"), uniq("sh")
    ch = queues(src)
    assert shovels(name, {"src-uri": "amqp://", "src-queue": src, "dest-uri": "amqp://",
                          "dest-queue": dest,
                          "dest-queue-args": {"x-max-length": 100}}) == 201
    running(mgmt, name)
    item = mgmt.get(f"/api/queues/%2F/{q(dest)}")
    assert (item["durable"], item["arguments"]) == (True, {"x-max-length": 100})
    connect().channel().queue_delete(dest)


def test_restart_and_delete_through_api_shovels(mgmt, shovels, queues, uniq):
    src, dest, name = uniq("sh.src"), uniq("sh.dest"), uniq("sh")
    queues(src, dest)
    assert shovels(name, {"src-uri": "amqp://", "src-queue": src, "dest-uri": "amqp://",
                          "dest-queue": dest}) == 201
    running(mgmt, name)
    assert mgmt.delete(f"/api/shovels/vhost/%2F/{q(name)}/restart") == 204
    running(mgmt, name)
    assert mgmt.delete(f"/api/shovels/vhost/%2F/{q(name)}") == 204
    assert mgmt.delete(f"/api/parameters/shovel/%2F/{q(name)}") == 404
    assert mgmt.delete(f"/api/shovels/vhost/%2F/{q(name)}") == 404
    assert mgmt.delete(f"/api/shovels/vhost/%2F/{q(name)}/restart") == 404


def test_listed_as_parameters_and_exported(mgmt, shovels, queues, uniq):
    src, name = uniq("sh.src"), uniq("sh")
    queues(src)
    value = {"src-uri": "amqp://", "src-queue": src, "dest-uri": "amqp://",
             "dest-queue": src + ".out", "prefetch-count": 10}
    assert shovels(name, value) == 201
    item = {"value": value, "vhost": "/", "component": "shovel", "name": name}
    assert mgmt.get(f"/api/parameters/shovel/%2F/{q(name)}") == item
    assert item in mgmt.get("/api/parameters/shovel")
    assert item in mgmt.get("/api/parameters/shovel/%2F")
    assert item in mgmt.get("/api/definitions")["parameters"]
    changed = dict(value, **{"prefetch-count": 20})
    assert shovels(name, changed) == 204
    assert mgmt.get(f"/api/parameters/shovel/%2F/{q(name)}")["value"] == changed


def test_a_shovel_that_cannot_connect_keeps_starting(mgmt, shovels, uniq):
    name = uniq("sh")
    assert shovels(name, {"src-uri": "amqp://", "src-queue": name, "dest-uri":
                          "amqp://guest:guest@127.0.0.1:1", "reconnect-delay": 1}) == 201
    wait_until(lambda: status_of(mgmt, name), MOVE_WITHIN, message="listed")
    status = status_of(mgmt, name)
    assert (status["state"], status["type"]) == ("starting", "dynamic")
    assert "dest_uri" not in status


def test_unknown_ones_are_404(mgmt):
    assert mgmt.delete("/api/parameters/shovel/%2F/no-such-shovel") == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        mgmt.get("/api/shovels/no-such-vhost")
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        mgmt.request("PUT", "/api/parameters/shovel/no-such-vhost/x", {"value": {
            "src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://"}})
    assert e.value.code == 404


GOOD = {"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://"}


@pytest.mark.parametrize("value, reason", [     # RabbitMQ 3.10.8's words, measured
    ({"src-uri": "amqp://", "dest-uri": "amqp://", "dest-queue": "x"},
     "Must specify 'src-exchange' or 'src-queue'"),
    (dict(GOOD, **{"src-exchange": "x"}), "Cannot specify 'src-exchange' and 'src-queue'"),
    (dict(GOOD, **{"dest-queue": "b", "dest-exchange": "x"}),
     "Cannot specify 'dest-exchange' and 'dest-queue'"),
    ({"src-queue": "a", "dest-uri": "amqp://"}, 'Key "src-uri" not found in bad'),
    ({"src-uri": "amqp://", "src-queue": "a"}, 'Key "dest-uri" not found in bad'),
    (dict(GOOD, **{"src-uri": "http://x"}),
     '"http://x" not a valid URI: {{unexpected_uri_scheme,"http"},"http://x"}'),
    (dict(GOOD, **{"src-uri": "amqp:///no-such-vhost"}),
     'user "guest" may not connect to vhost "no-such-vhost"'),
    (dict(GOOD, **{"src-uri": 5}), "src-uri should be list, actually was 5"),
    (dict(GOOD, **{"src-uri": ["amqp://", 3]}), "src-uri should be list, actually was 3"),
    (dict(GOOD, **{"src-queue": 5}), "src-queue should be binary, actually was 5"),
    (dict(GOOD, **{"ack-mode": "bogus"}),
     'ack-mode should be one of [<<"no-ack">>,<<"on-publish">>,<<"on-confirm">>], actually '
     'was <<"bogus">>'),
    (dict(GOOD, **{"src-delete-after": "bogus"}),
     'src-delete-after should be a number greater than or equal to 0, "never" or '
     '"queue-length", actually was <<"bogus">>'),
    (dict(GOOD, **{"src-delete-after": 5, "ack-mode": "no-ack"}),
     "Cannot specify 'no-ack' and numerical 'delete-after'"),
    (dict(GOOD, **{"prefetch-count": "x"}),
     'prefetch-count should be a number, actually was <<"x">>'),
    (dict(GOOD, **{"reconnect-delay": "x"}),
     'reconnect-delay should be a number, actually was <<"x">>'),
    (dict(GOOD, **{"unknown-key": 1}), 'Unrecognised terms [{<<"unknown-key">>,1}] in bad'),
    (dict(GOOD, **{"dest-add-forward-headers": "yes"}),
     'dest-add-forward-headers should be boolean, actually was <<"yes">>'),
    (dict(GOOD, **{"dest-publish-properties": {"delivery_mode": "x"}}),
     'delivery_mode should be a number, actually was <<"x">>'),
    (dict(GOOD, **{"dest-publish-properties": {"bogus": 1}}),
     'Unrecognised terms [{<<"bogus">>,1}] in dest-publish-properties'),
    ({}, "Must specify 'src-exchange' or 'src-queue'\nKey \"dest-uri\" not found in bad\n"
         "Key \"src-uri\" not found in bad"),
])
def test_a_bad_definition_is_refused_with_rabbitmqs_reason(mgmt, value, reason):
    assert reason_of(mgmt, "bad", value) == f"Validation failed\n\n{reason}\n"
    with pytest.raises(urllib.error.HTTPError):
        mgmt.get("/api/parameters/shovel/%2F/bad")
