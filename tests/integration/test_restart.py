"""What survives a broker restart, clean (SIGTERM) and crash (SIGKILL), as RabbitMQ defines it.

Survives: persistent messages (delivery_mode=2) in durable queues, in order; messages delivered
but not acked (they come back with redelivered=True); durable exchanges, queues and bindings;
vhosts, users and permissions made through the management API.
Does not survive: transient messages (also not in durable queues), non-durable queues and
exchanges, messages whose ack was durable.

An ack has no confirm. To know that acks reached the disk before a SIGKILL, a test sends them and
then, on the same connection, publishes one persistent message with confirms: the broker's group
commit (broker/committer.py) writes and fsyncs every queue dirtied before that publish in the
same or an earlier round, so the confirm covers the acks too. With SIGTERM the broker flushes
everything on its way out, so no barrier is needed there.
"""
from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request

import pika
import pika.exceptions
import pytest

from amqpbroker.testing import BrokerProcess

PERSISTENT = pika.BasicProperties(delivery_mode=2)
TRANSIENT = pika.BasicProperties(delivery_mode=1)


# ------------------------------------------------------------------------------------- helpers
@pytest.fixture
def broker(tmp_path):
    b = BrokerProcess(tmp_path / "data", management=True).start()
    try:
        yield b
    finally:
        b.stop()


def down(b: BrokerProcess, how: str) -> None:
    if how == "sigkill":
        b.kill()
    else:
        assert b.stop() == 0, "".join(b.output)


def connect(b: BrokerProcess, vhost: str = "/", user: str = "guest", password: str = "guest"):
    params = pika.ConnectionParameters(b.host, b.port, vhost,
                                       pika.PlainCredentials(user, password),
                                       connection_attempts=1, blocked_connection_timeout=30)
    return pika.BlockingConnection(params)


def mgmt(b: BrokerProcess, method: str, path: str, body: dict | None = None) -> int:
    req = urllib.request.Request(f"http://{b.host}:{b.management_port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def drain(ch, queue: str, expected: int, timeout: float = 10.0) -> list:
    """Consume (auto-ack) exactly `expected` messages, then check the queue is empty."""
    got = []
    deadline = time.monotonic() + timeout
    for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=0.5):
        if method is not None:
            got.append((body.decode(), method.redelivered, props.delivery_mode))
        if len(got) >= expected or time.monotonic() > deadline:
            break
    ch.cancel()
    assert ch.queue_declare(queue, passive=True).method.message_count == 0
    return got


def publish_confirmed(ch, exchange: str, key: str, bodies, props) -> None:
    for body in bodies:
        ch.basic_publish(exchange, key, body, props, mandatory=True)   # raises unless confirmed


# --------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_persistent_messages_survive_transient_do_not(broker, how):
    conn = connect(broker)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("dx", "direct", durable=True)
    ch.queue_declare("dq", durable=True)
    ch.queue_bind("dq", "dx", "k")
    ch.queue_declare("tq", durable=False)
    ch.exchange_declare("tx", "fanout", durable=False)
    for i in range(60):             # interleave, so a recovered log has both kinds in it
        ch.basic_publish("dx", "k", f"p{i}", PERSISTENT, mandatory=True)
        ch.basic_publish("dx", "k", f"t{i}", TRANSIENT, mandatory=True)
    publish_confirmed(ch, "", "tq", [f"n{i}" for i in range(10)], PERSISTENT)
    conn.close()

    down(broker, how)
    broker.start()

    conn = connect(broker)
    ch = conn.channel()
    ch.exchange_declare("dx", passive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        ch.queue_declare("tq", passive=True)
    assert exc.value.reply_code == 404
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        ch.exchange_declare("tx", passive=True)
    assert exc.value.reply_code == 404
    ch = conn.channel()
    ch.confirm_delivery()
    got = drain(ch, "dq", 60)
    assert [b for b, _, _ in got] == [f"p{i}" for i in range(60)]
    assert all(mode == 2 for _, _, mode in got)
    # the binding survived: routing through the durable exchange still reaches the queue
    publish_confirmed(ch, "dx", "k", ["after"], PERSISTENT)
    assert ch.queue_declare("dq", passive=True).method.message_count == 1
    conn.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_acked_stay_gone_unacked_come_back_redelivered_in_order(broker, how):
    conn = connect(broker)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("work", durable=True)
    ch.queue_declare("barrier", durable=True)
    publish_confirmed(ch, "", "work", [f"m{i:03d}" for i in range(40)], PERSISTENT)

    cch = conn.channel()
    cch.basic_qos(prefetch_count=1000)
    deliveries = []
    cch.basic_consume("work", lambda c, m, p, b: deliveries.append((m.delivery_tag, b.decode())))
    deadline = time.monotonic() + 10
    while len(deliveries) < 40:
        assert time.monotonic() < deadline, f"only {len(deliveries)} of 40 delivered"
        conn.process_data_events(time_limit=0.1)
    assert [b for _, b in deliveries] == [f"m{i:03d}" for i in range(40)]
    # ack every other one of the first 24; the rest stay unacked until the broker dies
    acked = set()
    for tag, body in deliveries[:24:2]:
        cch.basic_ack(tag)
        acked.add(body)
    publish_confirmed(ch, "", "barrier", ["b"], PERSISTENT)     # makes the acks durable
    down(broker, how)
    broker.start()

    conn = connect(broker)
    ch = conn.channel()
    got = drain(ch, "work", 40 - len(acked))
    expected = [f"m{i:03d}" for i in range(40) if f"m{i:03d}" not in acked]
    assert [b for b, _, _ in got] == expected
    assert all(redelivered for _, redelivered, _ in got), "unacked must come back redelivered"
    conn.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_definitions_survive(broker, how):
    assert mgmt(broker, "PUT", "/api/vhosts/x", {}) in (201, 204)
    assert mgmt(broker, "PUT", "/api/users/u", {"password": "pw", "tags": ""}) in (201, 204)
    assert mgmt(broker, "PUT", "/api/permissions/x/u",
                {"configure": "^cfg-.*", "write": ".*", "read": ".*"}) in (201, 204)
    assert mgmt(broker, "PUT", "/api/topic-permissions/x/u",
                {"exchange": "cfg-topic", "write": "^a\\.", "read": ".*"}) == 201
    assert mgmt(broker, "PUT", "/api/cluster-name", {"name": "survivor"}) == 204
    conn = connect(broker, vhost="x", user="u", password="pw")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("cfg-topic", "topic", durable=True)
    ch.exchange_declare("cfg-fan", "fanout", durable=True)
    ch.exchange_bind("cfg-fan", "cfg-topic", "a.#")          # exchange-to-exchange binding
    ch.queue_declare("cfg-q", durable=True, arguments={"x-max-length": 1000})
    ch.queue_bind("cfg-q", "cfg-fan")
    conn.close()

    down(broker, how)
    broker.start()

    assert mgmt(broker, "GET", "/api/vhosts/x") == 200
    assert mgmt(broker, "GET", "/api/users/u") == 200
    assert mgmt(broker, "GET", "/api/permissions/x/u") == 200
    assert broker.api("cluster-name") == {"name": "survivor"}
    conn = connect(broker, vhost="x", user="u", password="pw")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("cfg-topic", "topic", passive=True)
    ch.queue_declare("cfg-q", durable=True, arguments={"x-max-length": 1000})  # equivalent
    publish_confirmed(ch, "cfg-topic", "a.b", ["routed"], PERSISTENT)   # via both bindings
    assert ch.queue_declare("cfg-q", passive=True).method.message_count == 1
    # the permissions came back as they were: configure is still limited to cfg-*
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        ch.queue_declare("other", durable=True)
    assert exc.value.reply_code == 403
    # and the topic permission: cfg-topic takes routing keys a.* only
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        publish_confirmed(ch, "cfg-topic", "b.c", ["refused"], PERSISTENT)
    assert (exc.value.reply_code, exc.value.reply_text) == (
        403, "ACCESS_REFUSED - access to topic 'b.c' in exchange 'cfg-topic' in vhost 'x' "
             "refused for user 'u'")
    conn.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect(broker, vhost="x", user="u", password="wrong")


def test_sigterm_closes_clients_with_connection_forced(broker):
    conns = [connect(broker) for _ in range(3)]
    for c in conns:
        c.channel().queue_declare("", exclusive=True)
    stopper = threading.Thread(target=broker.stop)
    stopper.start()
    try:
        for c in conns:
            deadline = time.monotonic() + 10
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as exc:
                while time.monotonic() < deadline:
                    c.process_data_events(time_limit=0.1)
            assert exc.value.reply_code == 320
            assert "CONNECTION_FORCED" in exc.value.reply_text
    finally:
        stopper.join(30)
    assert broker.proc.returncode == 0, "".join(broker.output)


def test_messages_consumed_without_ack_stay_gone(broker):
    """A no-ack consumer's deliveries are settled as they go (a dispatch run settles the run
    at once): after a SIGKILL behind a barrier, none of them comes back."""
    conn = connect(broker)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("noack", durable=True)
    ch.queue_declare("barrier", durable=True)
    bodies = [f"m{i:03d}" for i in range(300)]
    publish_confirmed(ch, "", "noack", bodies, PERSISTENT)
    assert [b for b, _, _ in drain(conn.channel(), "noack", 300)] == bodies
    publish_confirmed(ch, "", "barrier", ["b"], PERSISTENT)    # the settles are durable
    down(broker, "sigkill")
    broker.start()

    conn = connect(broker)
    assert conn.channel().queue_declare("noack", passive=True).method.message_count == 0
    conn.close()
