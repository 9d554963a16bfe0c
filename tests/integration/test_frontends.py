"""AMQP front-end processes (``--workers 2 --frontends 2``).

Both front-ends accept on the one port. A front-end killed with SIGKILL loses only its own
connections: connections on the other one go on, the dead one's unacked messages go back to
their queues, the exclusive queues its connections owned are deleted, and a new front-end
takes its place. Metadata declared through one front-end is usable through the other as soon
as the declare is answered; direct reply-to works across them. Nothing is left behind.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import urllib.request

import pika
import pytest

from amqpbroker.testing import BrokerProcess, leaks

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout


def connect_on(broker, frontend: int, name: str) -> pika.BlockingConnection:
    """Open connections until one lands on ``frontend`` (the kernel picks); close the rest."""
    others = []
    try:
        for i in range(200):
            params = pika.URLParameters(broker.url)
            params.client_properties = {"connection_name": f"{name}-{i}"}
            conn = pika.BlockingConnection(params)
            where = {c["client_properties"].get("connection_name"): c["frontend"]
                     for c in broker.api("connections")}
            if where.get(f"{name}-{i}") == frontend:
                return conn
            others.append(conn)
        raise AssertionError(f"no connection landed on front-end {frontend}")
    finally:
        for c in others:
            c.close()


@pytest.fixture
def broker(tmp_path):
    with BrokerProcess(tmp_path, "--workers", "2", "--frontends", "2", management=True) as b:
        assert len(b.frontend_pids) == 2
        yield b


def test_killed_frontend_loses_only_its_connections(broker):
    shm_before = leaks.broker_segments()
    a = connect_on(broker, 0, "a")          # to be killed with its front-end
    b = connect_on(broker, 1, "b")
    ach, bch = a.channel(), b.channel()
    bch.confirm_delivery()
    bch.queue_declare("work", durable=True)
    for i in range(10):
        bch.basic_publish("", "work", b"%d" % i, pika.BasicProperties(delivery_mode=2))
    ach.queue_declare("mine", exclusive=True)
    held = []
    ach.basic_qos(prefetch_count=4)
    ach.basic_consume("work", lambda c, m, p, body: held.append(body))     # never acks
    while len(held) < 4:
        a.process_data_events(time_limit=1)

    old = broker.frontend_pids[0]
    os.kill(old, signal.SIGKILL)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        while True:                          # only a's connection is cut
            a.process_data_events(time_limit=1)
    assert not leaks.wait_gone([old], timeout=10)

    # b never noticed: it consumes everything, the 4 that a held come back redelivered
    got = {}
    bch.basic_consume("work", lambda c, m, p, body: (got.__setitem__(body, m.redelivered),
                                                      c.basic_ack(m.delivery_tag)))
    while len(got) < 10:
        b.process_data_events(time_limit=1)
    assert set(got) == {b"%d" % i for i in range(10)}
    assert {body for body, again in got.items() if again} == set(held)

    # a's exclusive queue went with its connection
    def mine_gone():
        ch = b.channel()
        try:
            ch.queue_declare("mine", passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code == 404
        ch.close()
        return False
    leaks.wait_until(mine_gone, what="the exclusive queue of the dead front-end to go")

    # a new front-end took its place, and new connections reach it
    leaks.wait_until(lambda: broker.api("nodes")[0]["frontends"][0]["running"]
               and broker.api("nodes")[0]["frontends"][0]["pid"] != old,
               what="front-end 0 to restart")
    again = connect_on(broker, 0, "again")
    ch = again.channel()
    ch.queue_declare("after")           # not "work": b's consumer there may take the message
    ch.basic_publish("", "after", b"after")
    assert ch.basic_get("after", auto_ack=True)[2] == b"after"
    again.close()
    b.close()
    assert not leaks.broker_segments_left(shm_before)


def test_metadata_from_one_frontend_is_routable_on_the_other_at_once(broker):
    a, b = connect_on(broker, 0, "decl"), connect_on(broker, 1, "pub")
    ach, bch = a.channel(), b.channel()
    bch.confirm_delivery()
    for i in range(20):
        ach.exchange_declare(f"x{i}", "topic")
        ach.queue_declare(f"q{i}", auto_delete=False)
        ach.queue_bind(f"q{i}", f"x{i}", "k.#")
        # bind-ok came back on a: b must route through the binding already
        bch.basic_publish(f"x{i}", "k.1", b"m", mandatory=True)
        assert ach.basic_get(f"q{i}", auto_ack=True)[2] == b"m"
        ach.queue_delete(f"q{i}")
        ach.exchange_delete(f"x{i}")
    a.close()
    b.close()


def test_direct_reply_to_across_frontends(broker):
    server, client = connect_on(broker, 1, "server"), connect_on(broker, 0, "client")
    sch, cch = server.channel(), client.channel()
    sch.queue_declare("rpc")
    replies = []
    cch.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, body: replies.append(body),
                      auto_ack=True)
    cch.basic_publish("", "rpc", b"ping",
                      pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    method, props, body = None, None, None
    while method is None:
        method, props, body = sch.basic_get("rpc", auto_ack=True)
    sch.basic_publish("", props.reply_to, b"pong:" + body)
    while not replies:
        client.process_data_events(time_limit=1)
    assert replies == [b"pong:ping"]
    server.close()
    client.close()


def test_definitions_imported_over_http_reach_every_frontend(broker):
    defs = {"exchanges": [{"name": "imported-x", "vhost": "/", "type": "fanout",
                           "durable": True}],
            "queues": [{"name": "imported-q", "vhost": "/", "durable": True}],
            "bindings": [{"source": "imported-x", "vhost": "/", "destination": "imported-q",
                          "destination_type": "queue", "routing_key": ""}]}
    req = urllib.request.Request(
        f"http://127.0.0.1:{broker.management_port}/api/definitions", method="POST",
        data=json.dumps(defs).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204
    for frontend in (0, 1):
        conn = connect_on(broker, frontend, f"imp{frontend}")
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("imported-x", "", b"via %d" % frontend, mandatory=True)
        assert ch.basic_get("imported-q", auto_ack=True)[2] == b"via %d" % frontend
        conn.close()
