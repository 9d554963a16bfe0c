"""kombu: Producer/Consumer over an Exchange/Queue, and SimpleQueue."""
from __future__ import annotations

import socket

import kombu
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue


@pytest.fixture
def kconn(broker_url):
    with Connection(broker_url, connect_timeout=5) as c:
        c.ensure_connection(max_retries=1)
        yield c


def test_producer_consumer_direct(kconn, uniq):
    exchange = Exchange(uniq("kx"), type="direct", auto_delete=True)
    queue = Queue(uniq("kq"), exchange=exchange, routing_key="job", auto_delete=True)
    received = []
    with kconn.channel() as ch:
        consumer = Consumer(ch, queues=[queue], accept=["json"],
                            callbacks=[lambda body, msg: (received.append((body, msg.headers)), msg.ack())])
        with consumer:  # declares the exchange, queue and binding, then consumes
            producer = Producer(ch, exchange=exchange, serializer="json")
            producer.publish({"n": 1, "s": "x"}, routing_key="job", headers={"h": "v"})
            producer.publish({"n": 2}, routing_key="job")
            producer.publish({"n": 3}, routing_key="other")  # unrouted
            while len(received) < 2:
                kconn.drain_events(timeout=5)
    assert received == [({"n": 1, "s": "x"}, {"h": "v"}), ({"n": 2}, {})]


def test_consumer_reject_and_requeue(kconn, uniq):
    queue = Queue(uniq("kq"), exchange=Exchange("", type="direct"), routing_key=None, auto_delete=True)
    queue.routing_key = queue.name
    seen = []

    def on_message(body, msg):
        seen.append((body, msg.delivery_info["redelivered"]))
        if len(seen) == 1:
            msg.requeue()
        else:
            msg.ack()

    with kconn.channel() as ch:
        with Consumer(ch, queues=[queue], callbacks=[on_message], accept=["json"]):
            Producer(ch).publish("again", routing_key=queue.name, serializer="json")
            while len(seen) < 2:
                kconn.drain_events(timeout=5)
    assert seen == [("again", False), ("again", True)]


def test_drain_events_times_out_when_idle(kconn, uniq):
    queue = Queue(uniq("kq"), auto_delete=True)
    with kconn.channel() as ch:
        with Consumer(ch, queues=[queue], callbacks=[lambda b, m: m.ack()]):
            with pytest.raises(socket.timeout):
                kconn.drain_events(timeout=0.2)


def test_simple_queue_put_get(kconn, uniq):
    name = uniq("simple")
    sq = kconn.SimpleQueue(name)
    try:
        sq.put({"hello": "world"})
        sq.put("second")
        m1 = sq.get(block=True, timeout=5)
        m1.ack()
        m2 = sq.get(block=True, timeout=5)
        m2.ack()
        assert (m1.payload, m2.payload) == ({"hello": "world"}, "second")
        assert sq.qsize() == 0
        with pytest.raises(sq.Empty):
            sq.get(block=False)
    finally:
        sq.close()  # cancel the consumer first: deleting a consumed queue cancels it (an error)
        with kconn.channel() as ch:
            Queue(name)(ch).delete()
            Exchange(name)(ch).delete()  # Simple* declare a direct exchange named after the queue


def test_simple_buffer_no_ack(kconn, uniq):
    name = uniq("buf")
    buf = kconn.SimpleBuffer(name)
    try:
        for i in range(3):
            buf.put(i)
        assert [buf.get(timeout=5).payload for _ in range(3)] == [0, 1, 2]
    finally:
        buf.close()
        with kconn.channel() as ch:
            Queue(name)(ch).delete()
            Exchange(name)(ch).delete()  # Simple* declare a direct exchange named after the queue


def test_kombu_version_speaks_amqp_transport(kconn):
    assert kconn.transport.driver_type == "amqp"
    assert kconn.connection.server_properties["capabilities"]["publisher_confirms"] is True
    assert kombu.VERSION.major >= 5
