"""RabbitMQ's ``rabbitmq_tracing`` plugin over the management API (amqpbroker/tracing.py): a
trace turns the vhost's firehose on and writes each message published and delivered there
to ``<name>.log``, as JSON lines or text blocks, the payload cut to ``max_payload_bytes``;
its last trace deleted, the firehose is off; the files stay until deleted. Against
RabbitMQ, the plugin must be enabled (its records were measured on 3.10.8)."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pika
import pytest

from .conftest import Mgmt, q, wait_until


def download(mgmt_url: str, name: str) -> bytes | None:
    """A trace file's bytes (None: not there)."""
    m = Mgmt(mgmt_url)
    req = urllib.request.Request(f"{m.base}/api/trace-files/{q(name)}",
                                 headers={"Authorization": m.auth})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


@pytest.fixture
def trace(mgmt, mgmt_url, uniq):
    """Start traces by name; each is stopped and its file deleted afterwards."""
    names = []

    def start(fmt: str, **extra) -> str:
        name = uniq("trace")
        names.append(name)
        assert mgmt.put(f"/api/traces/%2F/{name}", {"format": fmt, "pattern": "#", **extra}) \
            == 201
        return name
    yield start
    for name in names:
        mgmt.delete(f"/api/traces/%2F/{name}")
        mgmt.delete(f"/api/trace-files/{name}.log")


def traffic(ch, queue: str, body: bytes) -> None:
    ch.queue_declare(queue, auto_delete=True)
    ch.basic_publish("", queue, body, pika.BasicProperties(content_type="text/plain",
                                                           headers={"h": 1}))
    method, _, got = ch.basic_get(queue, auto_ack=True)
    assert got == body


def test_a_json_trace_writes_each_published_and_received_message(ch, mgmt, mgmt_url, trace,
                                                                 uniq):
    name = trace("json", max_payload_bytes=5)
    listed = [t for t in mgmt.get("/api/traces/%2F") if t["name"] == name]
    assert listed[0]["format"] == "json" and listed[0]["pattern"] == "#"
    assert listed[0]["queue"]["exclusive"] is True
    assert mgmt.get("/api/vhosts/%2F")["tracing"] is True
    ch.confirm_delivery()
    queue = uniq("traced")
    traffic(ch, queue, b"hello world")

    def records():
        data = download(mgmt_url, name + ".log") or b""
        lines = [json.loads(line) for line in data.splitlines()
                 if line.strip() and queue.encode() in line]
        return lines if len(lines) == 2 else None
    published, received = wait_until(records, timeout=10)
    node = mgmt.get("/api/overview")["node"]
    for r in (published, received):
        assert list(r) == ["channel", "connection", "exchange", "node", "payload",
                           "properties", "queue", "routed_queues", "routing_keys",
                           "timestamp", "type", "user", "vhost"]
        assert (r["channel"], r["exchange"], r["node"], r["user"], r["vhost"]) == \
            (1, "", node, "guest", "/")
        assert base64.b64decode(r["payload"]) == b"hello"        # cut to 5 bytes
        assert r["properties"] == {"content_type": "text/plain", "headers": {"h": 1}}
        assert r["routing_keys"] == [queue]
    assert (published["type"], published["queue"], published["routed_queues"]) == \
        ("published", "none", [queue])
    assert (received["type"], received["queue"], received["routed_queues"]) == \
        ("received", queue, "none")
    files = {f["name"]: f for f in mgmt.get("/api/trace-files")}
    assert files[name + ".log"]["size"] > 0


def test_a_text_trace_and_the_firehose_off_with_the_last_trace(ch, mgmt, mgmt_url, trace,
                                                                uniq):
    name = trace("text")
    ch.confirm_delivery()
    queue = uniq("traced")
    traffic(ch, queue, b"plain text")

    def blocks():
        data = (download(mgmt_url, name + ".log") or b"").decode()
        return data if data.count(f"Routing keys: [<<\"{queue}\">>]") == 2 else None
    text = wait_until(blocks, timeout=10)
    assert ": Message published\n\nNode:         " in text
    assert f"Routed queues: [<<\"{queue}\">>]\n" in text
    assert ": Message received\n" in text and f"Queue:        {queue}\n" in text
    assert "User:         guest\nChannel:      1\nExchange:     \n" in text
    assert "Payload: \nplain text\n" in text
    for t in mgmt.get("/api/traces"):
        mgmt.delete(f"/api/traces/{q(t['vhost'])}/{q(t['name'])}")
    assert mgmt.get("/api/vhosts/%2F")["tracing"] is False
    assert download(mgmt_url, name + ".log") is not None      # the file stays
    assert mgmt.delete(f"/api/trace-files/{name}.log") == 204
    assert download(mgmt_url, name + ".log") is None


@pytest.mark.parametrize("body, reason", [
    ({"format": "xml", "pattern": "#"}, "format not json or text"),
    ({"pattern": "#"}, "[{key_missing,format}]"),
    ({"format": "json"}, "[{key_missing,pattern}]"),
    ({"format": "json", "pattern": "#", "max_payload_bytes": "x"},
     "max_payload_bytes not integer"),
])
def test_a_trace_the_plugin_refuses_is_400_and_not_started(mgmt, uniq, body, reason):
    name = uniq("bad-trace")
    with pytest.raises(urllib.error.HTTPError) as e:
        mgmt.request("PUT", f"/api/traces/%2F/{name}", body)
    assert e.value.code == 400
    assert json.loads(e.value.read())["reason"] == reason
    assert all(t["name"] != name for t in mgmt.get("/api/traces"))
