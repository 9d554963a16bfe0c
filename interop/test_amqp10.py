"""AMQP 1.0 on the AMQP port, as RabbitMQ 3.10's ``rabbitmq_amqp1_0`` plugin serves it, driven
by qpid-proton's blocking client: the same steps pass against RabbitMQ 3.10.8 with that plugin
enabled (``AMQP_URL`` naming its AMQP port) and against ours.

What is compared: SASL PLAIN logins (a wrong password refused), messages sent and received
over AMQP 1.0 coming back as they were sent (an amqp-value string body, subject, ids,
content type, application properties), AMQP 0-9-1 messages as an AMQP 1.0 consumer gets
them (the routing key as subject, a data body, durability) and the other way round, the
addresses ``/queue/NAME``, ``/amq/queue/NAME``, ``/exchange/NAME/KEY``, ``/topic/KEY`` as
targets and sources, accepted deliveries gone from the queue, 500 messages through link
credit, and a 300 KB message split over frames both ways. What RabbitMQ 3.10.8 does on a
refused attach (it ends the whole session, and the blocking client waits for the link until
its timeout) is not compared: ours detaches the link with the error (tests/integration).
"""
from __future__ import annotations

import urllib.parse

import pika
import pytest
from proton import Message, symbol
from proton.reactor import Filter
from proton.utils import BlockingConnection

from .conftest import wait_until

TIMEOUT = 10


@pytest.fixture
def amqp10_url(broker_url):
    """The broker's AMQP address as proton names it (the same host, port and credentials;
    the vhost, if not /, as the open's hostname ``vhost:NAME``)."""
    u = urllib.parse.urlparse(broker_url)
    return f"amqp://{u.username or 'guest'}:{u.password or 'guest'}@{u.hostname}:{u.port}"


@pytest.fixture
def amqp10(amqp10_url):
    opened = []

    def connect(**kw) -> BlockingConnection:
        c = BlockingConnection(amqp10_url, timeout=TIMEOUT, allowed_mechs="PLAIN", **kw)
        opened.append(c)
        return c
    yield connect
    for c in opened:
        try:
            c.close()
        except Exception:                           # noqa: BLE001 - already gone
            pass


@pytest.fixture
def queue(ch, uniq, cleanup):
    """A classic queue declared over AMQP 0-9-1 (non-durable, as the plugin declares
    ``/queue/NAME`` from a terminus that is not durable); deleted after."""
    name = uniq("a10")
    ch.queue_declare(name)
    cleanup.queue(name)
    return name


def receive_all(receiver, n: int) -> list:
    out = []
    for _ in range(n):
        out.append(receiver.receive(timeout=TIMEOUT))
        receiver.accept()
    return out


def test_messages_sent_over_amqp10_come_back_as_sent(amqp10, queue):
    c = amqp10()
    sender = c.create_sender(f"/amq/queue/{queue}")
    sent = [Message(body=f"text {i}", subject="greeting", id=f"m-{i}", correlation_id="c-1",
                    content_type="text/plain", properties={"n": i, "s": "v", "b": True},
                    durable=True)
            for i in range(3)]
    for m in sent:
        sender.send(m)
    got = receive_all(c.create_receiver(f"/amq/queue/{queue}"), 3)
    for m, g in zip(sent, got):
        assert g.body == m.body and isinstance(g.body, str)
        assert (g.subject, g.id, g.correlation_id, g.content_type) == \
            (m.subject, m.id, m.correlation_id, m.content_type)
        assert g.properties == m.properties
        assert g.durable is True and g.first_acquirer is True


def test_a_data_body_and_amqp091_properties_reach_amqp091(amqp10, queue, ch):
    c = amqp10()
    c.create_sender(f"/amq/queue/{queue}").send(Message(    # inferred: a data section
        body=b"\x00\x01binary", id="m-7", content_type="application/octet-stream",
        correlation_id="c-7", durable=True, inferred=True))
    method, props, body = None, None, None
    for method, props, body in ch.consume(queue, inactivity_timeout=TIMEOUT):
        break
    assert method is not None, "the AMQP 1.0 message did not reach AMQP 0-9-1"
    ch.basic_ack(method.delivery_tag)
    ch.cancel()
    assert body == b"\x00\x01binary"
    assert (props.message_id, props.correlation_id, props.content_type,
            props.delivery_mode) == ("m-7", "c-7", "application/octet-stream", 2)


def test_amqp091_messages_as_an_amqp10_consumer_gets_them(amqp10, queue, ch):
    ch.basic_publish("", queue, b"from 0-9-1", pika.BasicProperties(
        content_type="text/plain", message_id="m-9", correlation_id="c-9", delivery_mode=2))
    ch.basic_publish("", queue, b"transient", pika.BasicProperties(delivery_mode=1))
    durable, transient = receive_all(amqp10().create_receiver(f"/amq/queue/{queue}"), 2)
    assert bytes(durable.body) == b"from 0-9-1"
    assert (durable.subject, durable.id, durable.correlation_id, durable.content_type) == \
        (queue, "m-9", "c-9", "text/plain")       # the routing key as the subject
    assert durable.durable is True and transient.durable is False
    assert bytes(transient.body) == b"transient"


def test_queue_address_declares_the_queue(amqp10, uniq, ch, cleanup):
    name = uniq("a10-declared")
    cleanup.queue(name)
    c = amqp10()
    c.create_sender(f"/queue/{name}").send(Message(body="declared by the link"))
    assert ch.queue_declare(name, passive=True).method.message_count == 1
    (m,) = receive_all(c.create_receiver(f"/queue/{name}"), 1)
    assert m.body == "declared by the link"


def test_exchange_and_topic_addresses(amqp10, queue, ch, uniq, cleanup):
    exchange = uniq("a10-x")
    ch.exchange_declare(exchange, "direct")
    cleanup.exchange(exchange)
    ch.queue_bind(queue, exchange, "k1")
    c = amqp10()
    topic = c.create_receiver("/topic/a10.news.*")          # its own queue, bound
    c.create_sender(f"/exchange/{exchange}/k1").send(Message(body="via the exchange"))
    c.create_sender(f"/exchange/{exchange}").send(Message(body="by subject", subject="k1"))
    c.create_sender(f"/exchange/{exchange}/other").send(Message(body="not bound"))
    c.create_sender("/topic/a10.news.today").send(Message(body="topical"))
    got = receive_all(c.create_receiver(f"/amq/queue/{queue}"), 2)
    assert [m.body for m in got] == ["via the exchange", "by subject"]
    (m,) = receive_all(topic, 1)
    assert m.body == "topical"
    assert ch.queue_declare(queue, passive=True).method.message_count == 0


def test_accepted_deliveries_are_gone(amqp10, queue, ch):
    c = amqp10()
    sender = c.create_sender(f"/amq/queue/{queue}")
    for i in range(4):
        sender.send(Message(body=f"m{i}"))
    receiver = c.create_receiver(f"/amq/queue/{queue}")
    assert [m.body for m in receive_all(receiver, 3)] == [f"m{i}" for i in range(3)]
    assert receiver.receive(timeout=TIMEOUT).body == "m3"      # received, not settled
    c.close()                               # what was not settled goes back to the queue
    wait_until(lambda: ch.queue_declare(queue, passive=True).method.message_count == 1,
               TIMEOUT, message="the unsettled one back in the queue")
    assert ch.queue_declare(queue, passive=True).method.message_count == 1


def test_five_hundred_messages_through_link_credit(amqp10, queue):
    c = amqp10()
    sender = c.create_sender(f"/amq/queue/{queue}")
    for i in range(500):
        sender.send(Message(body=f"m{i}"))
    receiver = c.create_receiver(f"/amq/queue/{queue}", credit=50)
    assert [m.body for m in receive_all(receiver, 500)] == [f"m{i}" for i in range(500)]


def test_a_large_message_is_split_over_frames_both_ways(amqp10, queue):
    c = amqp10()
    body = bytes(range(256)) * 1200                          # 300 KB
    c.create_sender(f"/amq/queue/{queue}").send(Message(body=body))
    (m,) = receive_all(c.create_receiver(f"/amq/queue/{queue}"), 1)
    assert bytes(m.body) == body


def test_a_wrong_password_is_refused(amqp10_url):
    u = urllib.parse.urlparse(amqp10_url)
    with pytest.raises(Exception) as err:
        BlockingConnection(f"amqp://{u.username}:wrong-password@{u.hostname}:{u.port}",
                           timeout=TIMEOUT, allowed_mechs="PLAIN")
    assert "unauthorized-access" in str(err.value) or "authentication" in str(err.value).lower()


def test_a_stream_read_from_an_offset(amqp10, ch, uniq, cleanup):
    """A stream consumed over AMQP 1.0 from the offset the source's filter
    ``rabbitmq:stream-offset-spec`` names; each delivery carries its offset in the message
    annotation ``x-stream-offset``."""
    stream = cleanup.queue(uniq("a10-stream"))
    ch.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", stream, f"s{i}".encode())
    c = amqp10()
    receiver = c.create_receiver(f"/amq/queue/{stream}", credit=10, options=Filter(
        {symbol("rabbitmq:stream-offset-spec"): 2}))
    got = receive_all(receiver, 3)
    assert [bytes(m.body) for m in got] == [b"s2", b"s3", b"s4"]
    assert [m.annotations["x-stream-offset"] for m in got] == [2, 3, 4]
    first = receive_all(c.create_receiver(f"/amq/queue/{stream}", name="from-first",
                                          credit=10, options=Filter(
        {symbol("rabbitmq:stream-offset-spec"): "first"})), 5)
    assert [bytes(m.body) for m in first] == [f"s{i}".encode() for i in range(5)]
