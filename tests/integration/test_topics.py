"""Topics through the management API (``/api/topics``) and ``amqpbroker ctl``, across restarts,
in both process layouts. (Topics from AMQP clients: ``interop/test_topics.py``.)"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pika
import pytest

import amqpbroker
from amqpbroker.partitioner import partition_of
from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.mgmt_client import ManagementClient

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

CLASSIC = {"x-partition-type": "classic"}


@pytest.fixture(scope="module", params=list(LAYOUTS.values()), ids=list(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("topics"), *request.param, management=True) as b:
        yield b


def api(b: BrokerProcess, method: str, path: str, body=None, user="guest", password="guest"):
    return ManagementClient(f"http://127.0.0.1:{b.management_port}").request(
        method, path, user, password, body=body)[:2]


def publish(b: BrokerProcess, exchange: str, keys) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(b.url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for key in keys:
            ch.basic_publish(exchange, key, key.encode(), pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def partition_counts(b: BrokerProcess, name: str) -> list[int]:
    status, topic = api(b, "GET", f"/api/topics/%2F/{name}")
    assert status == 200
    return [p["messages"] for p in topic["queues"]]


KEYS = [f"key-{i}" for i in range(200)]


def expected_counts(keys, n: int) -> list[int]:
    out = [0] * n
    for key in keys:
        out[partition_of(key.encode(), n)] += 1
    return out


# ------------------------------------------------------------------ the API
def test_create_get_grow_delete(broker):
    assert api(broker, "PUT", "/api/topics/%2F/api-orders",
               {"partitions": 3, "type": "classic"}) == (201, None)
    status, topic = api(broker, "GET", "/api/topics/%2F/api-orders")
    assert status == 200
    assert {k: topic[k] for k in ("name", "vhost", "partitions", "partition_type")} == \
        {"name": "api-orders", "vhost": "/", "partitions": 3, "partition_type": "classic"}
    assert [(p["partition"], p["name"], p["state"]) for p in topic["queues"]] == \
        [(i, f"api-orders-{i}", "running") for i in range(3)]
    status, listed = api(broker, "GET", "/api/topics")
    assert [t["name"] for t in listed if t["name"] == "api-orders"] == ["api-orders"]
    assert "queues" not in listed[0]

    publish(broker, "api-orders", KEYS)
    assert partition_counts(broker, "api-orders") == expected_counts(KEYS, 3)
    # the same count again: nothing to do
    assert api(broker, "PUT", "/api/topics/%2F/api-orders", {"partitions": 3}) == (204, None)
    # growing: answered once every front-end routes by the new count
    assert api(broker, "PUT", "/api/topics/%2F/api-orders", {"partitions": 8}) == (204, None)
    publish(broker, "api-orders", KEYS)
    grown = expected_counts(KEYS, 8)
    assert partition_counts(broker, "api-orders") == \
        [a + b for a, b in zip(expected_counts(KEYS, 3) + [0] * 5, grown)]
    moved = sum(partition_of(k.encode(), 3) != partition_of(k.encode(), 8) for k in KEYS)
    assert moved > 100                      # keys move, as in Kafka
    assert api(broker, "GET", "/api/exchanges/%2F/api-orders")[1]["arguments"] == \
        {"x-partitions": 8, "x-partition-type": "classic", "x-super-stream": True}

    assert api(broker, "PUT", "/api/topics/%2F/api-orders", {"partitions": 2}) == (400, {
        "error": "bad_request", "reason": "topic 'api-orders' in vhost '/' has 8 partitions: "
                                          "partitions can be added, not removed (asked for 2)"})
    assert api(broker, "PUT", "/api/topics/%2F/api-orders",
               {"partitions": 9, "type": "stream"}) == (400, {
        "error": "bad_request", "reason": "topic 'api-orders' in vhost '/' has partitions of "
                                          "type 'classic', not 'stream'"})
    assert api(broker, "DELETE", "/api/topics/%2F/api-orders") == (204, None)
    assert api(broker, "GET", "/api/topics/%2F/api-orders")[0] == 404
    assert api(broker, "DELETE", "/api/topics/%2F/api-orders")[0] == 404
    assert not [qu for qu in broker.api("queues") if qu["name"].startswith("api-orders")]


BAD_BODIES = [
    ({}, "key_missing: partitions"),
    ({"partitions": "many"}, "The partitions must be a number"),
    ({"partitions": True}, "The partitions must be a number"),
    ({"partitions": 0}, "The partition number must be greater than 0"),
    ({"partitions": 1001}, "The partition number must not exceed 1000"),
    ({"partitions": 2, "type": "lazy"}, 'type: "lazy" is not one of stream, classic, quorum'),
    ({"partitions": 2, "arguments": [1]}, "arguments: expected an object, got [1]"),
]


@pytest.mark.parametrize("body,reason", BAD_BODIES, ids=[r for _, r in BAD_BODIES])
def test_bad_bodies_are_400_and_make_nothing(broker, body, reason):
    assert api(broker, "PUT", "/api/topics/%2F/bad-topic", body) == \
        (400, {"error": "bad_request", "reason": reason})
    assert not [x for x in broker.api("exchanges") if x["name"] == "bad-topic"]
    assert not [qu for qu in broker.api("queues") if qu["name"].startswith("bad-topic")]


def test_a_count_as_text_is_taken_as_rabbitmq_takes_it(broker):
    assert api(broker, "PUT", "/api/topics/%2F/text-count",
               {"partitions": "2", "type": "classic"})[0] == 201
    assert api(broker, "GET", "/api/topics/%2F/text-count")[1]["partitions"] == 2
    assert api(broker, "DELETE", "/api/topics/%2F/text-count")[0] == 204


def test_not_a_topic_and_no_vhost(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        conn.channel().exchange_declare("plain-direct", "direct")
        assert api(broker, "PUT", "/api/topics/%2F/plain-direct", {"partitions": 2}) == (400, {
            "error": "bad_request", "reason": "exchange 'plain-direct' in vhost '/' exists and "
                                              "is not a topic (type 'direct')"})
        assert api(broker, "GET", "/api/topics/%2F/plain-direct")[0] == 404
        assert api(broker, "DELETE", "/api/topics/%2F/plain-direct")[0] == 404
        conn.channel().exchange_delete("plain-direct")
    finally:
        conn.close()
    assert api(broker, "PUT", "/api/topics/no-such-vhost/t", {"partitions": 2})[0] == 404
    assert api(broker, "GET", "/api/topics/no-such-vhost")[0] == 404


def test_authorization(broker):
    """As RabbitMQ's super-stream endpoint: a management user who may use the vhost, with
    configure and read on the exchange and configure and write on every partition."""
    def user(name, tags, configure=None):
        assert api(broker, "PUT", f"/api/users/{name}", {"password": "pw", "tags": tags})[0] \
            in (201, 204)
        if configure is not None:
            assert api(broker, "PUT", f"/api/permissions/%2F/{name}",
                       {"configure": configure, "write": ".*", "read": ".*"})[0] in (201, 204)
    user("topic-none", "")
    user("topic-stranger", "management")
    user("topic-narrow", "management", configure="^auth-topic$")
    user("topic-ok", "management", configure="^auth-topic(-\\d+)?$")
    body = {"partitions": 2, "type": "classic"}
    path = "/api/topics/%2F/auth-topic"
    try:
        assert api(broker, "PUT", path, body, "topic-none", "pw") == (401, {
            "error": "not_authorised", "reason": "Not management user"})
        assert api(broker, "PUT", path, body, "topic-stranger", "pw") == (401, {
            "error": "not_authorised", "reason": "User not authorised to access virtual host"})
        assert api(broker, "PUT", path, body, "topic-narrow", "pw") == (401, {
            "error": "not_authorised", "reason": "Access refused."})
        assert api(broker, "GET", path)[0] == 404       # refused: nothing was made
        assert api(broker, "PUT", path, body, "topic-ok", "pw") == (201, None)
        assert api(broker, "GET", "/api/topics", user="topic-stranger", password="pw") == \
            (200, [])
        assert [t["name"] for t in api(broker, "GET", "/api/topics", user="topic-ok",
                                       password="pw")[1]] == ["auth-topic"]
        assert api(broker, "DELETE", path, None, "topic-narrow", "pw") == (401, {
            "error": "not_authorised", "reason": "Access refused."})
        assert api(broker, "DELETE", path, None, "topic-ok", "pw") == (204, None)
    finally:
        for name in ("topic-none", "topic-stranger", "topic-narrow", "topic-ok"):
            api(broker, "DELETE", f"/api/users/{name}")
        api(broker, "DELETE", path)


# ------------------------------------------------------------------ the CLI
def ctl(b: BrokerProcess | None, *args: str, url: str | None = None):
    """``amqpbroker ctl`` on the code under test (this worktree's amqpbroker)."""
    root = str(Path(amqpbroker.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [root, os.environ.get("PYTHONPATH")]))}
    url = url or f"http://127.0.0.1:{b.management_port}"
    return subprocess.run([sys.executable, "-m", "amqpbroker", "ctl", "--url", url, *args],
                          env=env, capture_output=True, text=True, timeout=60)


def test_ctl_topics(broker):
    out = ctl(broker, "topics", "create", "cli-orders", "--partitions", "4", "--type",
              "classic")
    assert (out.returncode, out.stdout, out.stderr) == \
        (0, "topic 'cli-orders' created with 4 partitions\n", "")
    out = ctl(broker, "topics", "list")
    assert out.returncode == 0 and "cli-orders           4  classic\n" in out.stdout
    assert out.stdout.startswith("name        partitions  partition_type\n")
    out = ctl(broker, "topics", "create", "cli-orders", "--partitions", "4")
    assert (out.returncode, out.stdout) == (0, "topic 'cli-orders' exists, with 4 partitions\n")
    out = ctl(broker, "topics", "add-partitions", "cli-orders", "6")
    assert (out.returncode, out.stdout) == (0, "topic 'cli-orders' has 6 partitions\n")
    assert api(broker, "GET", "/api/topics/%2F/cli-orders")[1]["partitions"] == 6
    out = ctl(broker, "topics", "add-partitions", "cli-orders", "3")
    assert (out.returncode, out.stderr) == (1, "Error: topic 'cli-orders' in vhost '/' "
                                               "has 6 partitions: partitions can be added, not "
                                               "removed (asked for 3)\n")
    out = ctl(broker, "topics", "add-partitions", "no-such-topic", "3")
    assert (out.returncode, out.stderr) == \
        (1, "Error: topic 'no-such-topic' in vhost '/' not found\n")
    out = ctl(broker, "topics", "create", "cli-bad", "--partitions", "0")
    assert (out.returncode, out.stderr) == \
        (1, "Error: The partition number must be greater than 0\n")
    out = ctl(broker, "topics", "list", "--user", "guest", "--password", "wrong")
    assert (out.returncode, out.stderr) == (1, "Error: Login failed\n")
    out = ctl(broker, "topics", "delete", "cli-orders")
    assert (out.returncode, out.stdout) == (0, "topic 'cli-orders' deleted, with its "
                                               "partitions\n")
    assert api(broker, "GET", "/api/topics/%2F/cli-orders")[0] == 404


def test_ctl_says_when_it_cannot_reach_the_broker():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]           # bound, not listening: refused
        out = ctl(None, "topics", "list", url=f"http://127.0.0.1:{port}")
    assert out.returncode == 3
    assert out.stderr.startswith(f"Error: cannot connect to http://127.0.0.1:{port}: ")


def test_ctl_usage_errors_exit_2():
    out = ctl(None, "topics", "create", "x", url="http://127.0.0.1:1")
    assert out.returncode == 2 and "--partitions" in out.stderr


# ------------------------------------------------------------------ restarts
@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_a_restart_keeps_the_topic(tmp_path, layout):
    with BrokerProcess(tmp_path, *layout, management=True) as b:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        # durable=False as pika's default: a topic is durable whatever the flag says
        conn.channel().exchange_declare("kept", exchange_type="x-partitioned",
                                        arguments={"x-partitions": 3, **CLASSIC})
        conn.close()
        publish(b, "kept", KEYS[:50])
        assert api(b, "PUT", "/api/topics/%2F/kept", {"partitions": 5})[0] == 204
        publish(b, "kept", KEYS[50:100])
        before = api(b, "GET", "/api/topics/%2F/kept")[1]
        b.restart()
        after = api(b, "GET", "/api/topics/%2F/kept")[1]
        assert after == before
        assert [p["messages"] for p in after["queues"]] == \
            [a + c for a, c in zip(expected_counts(KEYS[:50], 3) + [0, 0],
                                   expected_counts(KEYS[50:100], 5))]
        publish(b, "kept", KEYS[100:])
        assert partition_counts(b, "kept") == \
            [a + c for a, c in zip([p["messages"] for p in after["queues"]],
                                   expected_counts(KEYS[100:], 5))]
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        ch.exchange_declare("kept", exchange_type="x-partitioned",
                            arguments={"x-partitions": 5, **CLASSIC})
        ch.exchange_delete("kept")
        conn.close()
        b.restart()
        assert api(b, "GET", "/api/topics/%2F/kept")[0] == 404
        assert not [qu for qu in b.api("queues") if qu["name"].startswith("kept")]
