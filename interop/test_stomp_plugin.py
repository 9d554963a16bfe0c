"""STOMP as RabbitMQ's rabbitmq_stomp plugin serves it: the same steps pass against RabbitMQ
3.10.8 with the plugin enabled (``AMQP_STOMP_PORT``, ``AMQP_WEB_STOMP_PORT``) and against
ours (``--stomp-port``, ``--web-stomp-port``).

What is compared: destinations onto exchanges and queues both ways and the headers each side
sees, the queues a subscription declares (names, durability), durable topic subscriptions,
temporary reply queues, the ERROR frames (message header and text) of bad frames, of bad
logins and of what closes the AMQP channel, and what the management API shows of a STOMP
client. RabbitMQ's own suite for the plugin: ``interop/stomp_suite/run.py``.
"""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing.closing import closing_clients
from amqpbroker.testing.stomp_clients import TIMEOUT, Client, Raw

from .conftest import q, wait_until


@pytest.fixture
def stomp(stomp_address):
    with closing_clients(lambda **kw: Client(stomp_address, **kw)) as make:
        yield make


def test_destinations_meet_amqp_both_ways(ch, stomp, uniq):
    word = uniq("w")
    c = stomp()
    c.subscribe(f"/topic/{word}.*", "t")
    c.subscribe(f"/exchange/amq.direct/{word}", "x")
    ch.basic_publish("amq.topic", f"{word}.a", b"topic",
                     pika.BasicProperties(content_type="text/plain", delivery_mode=2,
                                          correlation_id="c1", reply_to="back",
                                          headers={"i": 5, "s": "v", "b": True}))
    m = c.message()
    assert m.body == "topic"
    assert (m.headers["destination"], m.headers["subscription"]) == (f"/topic/{word}.a", "t")
    assert (m.headers["persistent"], m.headers["content-type"]) == ("true", "text/plain")
    assert (m.headers["correlation-id"], m.headers["reply-to"]) == ("c1", "/reply-queue/back")
    assert (m.headers["i"], m.headers["s"]) == ("5", "v")
    assert "b" not in m.headers               # neither a string nor an integer: left out
    ch.basic_publish("amq.direct", word, b"direct", pika.BasicProperties(delivery_mode=1,
                                                                         timestamp=1700000000))
    m = c.message()
    assert m.headers["destination"] == f"/exchange/amq.direct/{word}"
    # a delivery mode other than 2 shows as its number, as RabbitMQ's maybe_header does
    assert (m.headers["persistent"], m.headers["timestamp"]) == ("1", "1700000000")
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, "amq.topic", f"{word}.out")
    c.c.send(f"/topic/{word}.out", "out", headers={"persistent": "true", "priority": "4",
                                                    "x-extra": "e", "receipt": "r"})
    assert c.receipt() == "r"
    method, props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"out"
    assert (props.delivery_mode, props.priority) == (2, 4)
    assert (props.headers["x-extra"], props.headers["receipt"]) == ("e", "r")


def test_queues_a_subscription_declares(stomp, mgmt, uniq):
    name = uniq("sq")
    c = stomp()
    c.subscribe(f"/queue/{name}", "q")
    got = mgmt.get(f"/api/queues/%2F/{q(name)}")
    assert (got["durable"], got["auto_delete"], got["exclusive"]) == (True, False, False)
    c.subscribe(f"/topic/{name}", "t")
    subs = [x for x in mgmt.get("/api/queues/%2F")
            if x["name"].startswith("stomp-subscription-") and any(
                b["routing_key"] == name for b in mgmt.get(
                    f"/api/queues/%2F/{q(x['name'])}/bindings"))]
    assert len(subs) == 1
    assert (subs[0]["durable"], subs[0]["auto_delete"]) == (False, True)
    c.c.unsubscribe("q")
    c.c.unsubscribe("t", receipt="u")
    assert c.receipt() == "u"
    assert wait_until(lambda: mgmt.delete(f"/api/queues/%2F/{q(subs[0]['name'])}") == 404)
    mgmt.delete(f"/api/queues/%2F/{q(name)}")


def test_durable_topic_subscription(stomp, mgmt, uniq):
    topic = f"/topic/{uniq('d')}"
    first = stomp()
    first.subscribe(topic, "dur", durable="true", **{"auto-delete": "false"})
    first.close()
    sender = stomp()
    sender.c.send(topic, "kept", receipt="r")
    assert sender.receipt() == "r"
    again = stomp(version="1.1")
    again.subscribe(topic, "dur", durable="true", **{"auto-delete": "false"})
    assert again.message().body == "kept"
    again.c.unsubscribe("dur", headers={"durable": "true"}, receipt="u")
    assert again.receipt() == "u"
    sender.c.send(topic, "gone", receipt="r2")
    assert sender.receipt() == "r2"
    third = stomp()
    third.subscribe(topic, "dur", durable="true", **{"auto-delete": "false"})
    third.c.unsubscribe("dur", headers={"durable": "true"}, receipt="u3")
    assert third.receipt() == "u3"
    assert third.messages.empty()            # the queue went with the first UNSUBSCRIBE


def test_temp_queue_reply_to(ch, stomp, uniq):
    requests = uniq("rpc")
    ch.queue_declare(requests, exclusive=True)
    c = stomp()
    c.c.send(f"/amq/queue/{requests}", "ping", headers={"reply-to": "/temp-queue/t1"})
    got = []
    assert wait_until(lambda: got.append(ch.basic_get(requests, auto_ack=True)) or
                      got[-1][0] is not None)
    _method, props, body = got[-1]
    assert body == b"ping" and props.reply_to.startswith("amq.gen-")
    ch.basic_publish("", props.reply_to, b"pong")
    m = c.message()
    assert (m.body, m.headers["subscription"]) == ("pong", "/temp-queue/t1")
    assert m.headers["destination"] == f"/queue/{props.reply_to}"


def test_error_frames(stomp):
    c = stomp()
    for act, message, body in [
        (lambda: c.c.send("/queue", "x"), "Invalid destination",
         "'' is not a valid queue destination\n"),
        (lambda: c.c.send("/topic/a/b", "x"), "Invalid destination",
         "'/a/b' is not a valid topic destination\n"),
        (lambda: c.c.send_frame("SEND", {"destination": "/queue/x", "message-id": "1"}),
         "Invalid header", "'message-id' is not allowed on 'SEND'.\n"),
        (lambda: c.c.send_frame("NOPE"), "Bad command", 'Could not interpret command "NOPE"\n'),
        (lambda: c.c.send_frame("COMMIT", {"transaction": "none"}), "Bad transaction",
         'Invalid transaction identifier: "none"\n'),
        (lambda: c.c.send_frame("SUBSCRIBE", {"destination": "/topic/x", "durable": "true"}),
         "Missing Header", "Header 'id' is required for durable subscriptions"),
    ]:
        act()
        e = c.error()
        assert (e.headers["message"], e.headers["version"], e.body) == (message,
                                                                       "1.0,1.1,1.2", body)


def test_closed_channel_ends_the_connection_with_amqps_error(stomp, uniq):
    c = stomp()
    name = uniq("nx")
    c.c.send(f"/exchange/{name}/k", "x")
    e = c.error()
    assert (e.headers["message"], e.body) == ("not_found",
                                              f"NOT_FOUND - no exchange '{name}' in vhost '/'")
    assert c.disconnected.get(timeout=TIMEOUT)


@pytest.mark.parametrize("passcode,vhost,body", [
    ("wrong", "/", "Access refused for user 'guest'\n"),
    ("guest", "no-such-vhost-here", "Virtual host 'no-such-vhost-here' access denied"),
])
def test_bad_logins(stomp_address, passcode, vhost, body):
    c = Client(stomp_address, vhost=vhost, connect=False)
    try:
        c.c.connect("guest", passcode, wait=False)
        e = c.error()
        assert (e.headers["message"], e.body) == ("Bad CONNECT", body)
    finally:
        c.close()


def test_connected_frame_and_defaults(stomp_address):
    r = Raw(stomp_address, connect=False)
    try:
        r.send("CONNECT", [("accept-version", "1.1,1.2"), ("host", "/"),
                           ("heart-beat", "0,2500")])      # no login: the default user
        ok = r.read()
        assert ok.command == "CONNECTED"
        assert (ok.headers["version"], ok.headers["heart-beat"]) == ("1.2", "2000,0")
        assert ok.headers["session"].startswith("session-")
    finally:
        r.close()


def test_management_shows_the_stomp_client(stomp, mgmt):
    c = stomp(version="1.1")
    local_port = c.c.transport.socket.getsockname()[1]
    found = []
    assert wait_until(lambda: found.extend(x for x in mgmt.get("/api/connections")
                                           if x.get("peer_port") == local_port) or found)
    conn = found[0]
    assert (conn["protocol"], conn["type"]) == ("STOMP 1.1", "direct")
    assert conn["client_properties"] == {"product": "STOMP client"}
    assert "stomp" in {x["protocol"] for x in mgmt.get("/api/overview")["listeners"]}


def test_stomp_over_websockets(web_stomp_address, stomp, uniq):
    topic = f"/topic/{uniq('ws')}"
    tcp = stomp()
    tcp.subscribe(topic, "t")
    web = Client(web_stomp_address, ws_path="/ws")
    try:
        web.c.send(topic, "from a browser")
        assert tcp.message().body == "from a browser"
    finally:
        web.close()
