"""RabbitMQ's six tutorials, written with pika's BlockingConnection as the tutorials do."""
from __future__ import annotations

import time
import uuid

import pika

from .conftest import drain


def pump(conn: pika.BlockingConnection, cond, timeout: float = 5.0):
    """Dispatch broker events until ``cond()`` is true; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for deliveries")
        conn.process_data_events(time_limit=0.05)


def test_1_hello_world(conn, uniq, cleanup):
    ch = conn.channel()
    queue = cleanup.queue(uniq("hello"))
    ch.queue_declare(queue)
    ch.basic_publish(exchange="", routing_key=queue, body=b"Hello World!")
    received = []
    ch.basic_consume(queue, lambda c, m, p, b: received.append(b), auto_ack=True)
    pump(conn, lambda: received)
    assert received == [b"Hello World!"]


def test_2_work_queues_fair_dispatch(connect, uniq, cleanup):
    conn = connect()
    queue = cleanup.queue(uniq("task_queue"))
    producer = conn.channel()
    producer.queue_declare(queue, durable=True)
    deliveries: list[tuple[str, bytes, bool]] = []

    def worker(name: str, ack: bool):
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1)

        def on_message(c, method, props, body):
            assert props.delivery_mode == pika.DeliveryMode.Persistent.value
            deliveries.append((name, body, method.redelivered))
            if ack:
                c.basic_ack(delivery_tag=method.delivery_tag)

        ch.basic_consume(queue, on_message)
        return ch

    slow = worker("slow", ack=False)  # holds its one message forever
    worker("fast", ack=True)
    for i in range(6):
        producer.basic_publish("", queue, f"task {i}".encode(),
                               pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
    pump(conn, lambda: len(deliveries) == 6)
    by_worker = {w: [b for n, b, _ in deliveries if n == w] for w in ("slow", "fast")}
    # prefetch=1: the slow worker got one task and nothing more until it acks.
    assert len(by_worker["slow"]) == 1
    assert len(by_worker["fast"]) == 5
    assert sorted(b for _, b, _ in deliveries) == [f"task {i}".encode() for i in range(6)]
    # The unacked task goes back to the queue when the slow worker dies, marked redelivered.
    slow.close()
    pump(conn, lambda: len(deliveries) == 7)
    assert deliveries[-1] == ("fast", by_worker["slow"][0], True)


def test_3_publish_subscribe_fanout(conn, uniq, cleanup):
    ch = conn.channel()
    exchange = cleanup.exchange(uniq("logs"))
    ch.exchange_declare(exchange, exchange_type="fanout")
    queues = []
    for _ in range(2):
        q = ch.queue_declare("", exclusive=True).method.queue
        assert q.startswith("amq.gen-")
        ch.queue_bind(q, exchange)
        queues.append(q)
    ch.basic_publish(exchange, "ignored", b"log line")
    for q in queues:
        assert [b for _, _, b in drain(ch, q, 1)] == [b"log line"]


def test_4_routing_direct(conn, uniq, cleanup):
    ch = conn.channel()
    exchange = cleanup.exchange(uniq("direct_logs"))
    ch.exchange_declare(exchange, exchange_type="direct")
    errors_only = ch.queue_declare("", exclusive=True).method.queue
    everything = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(errors_only, exchange, routing_key="error")
    for severity in ("info", "warning", "error"):
        ch.queue_bind(everything, exchange, routing_key=severity)
    for severity in ("info", "warning", "error", "debug"):
        ch.basic_publish(exchange, severity, severity.encode())
    assert [b for _, _, b in drain(ch, everything, 3)] == [b"info", b"warning", b"error"]
    assert [b for _, _, b in drain(ch, errors_only, 1)] == [b"error"]
    assert ch.basic_get(errors_only)[0] is None
    assert ch.basic_get(everything)[0] is None


TOPIC_CASES = [
    ("quick.orange.rabbit", True, True),
    ("lazy.orange.elephant", True, True),
    ("quick.orange.fox", True, False),
    ("lazy.brown.fox", False, True),
    ("lazy.pink.rabbit", False, True),  # matches both of Q2's bindings, delivered once
    ("quick.brown.fox", False, False),
    ("orange", False, False),
    ("quick.orange.male.rabbit", False, False),
    ("lazy.orange.male.rabbit", False, True),
    ("lazy", False, True),  # '#' matches zero words
]


def test_5_topics(conn, uniq, cleanup):
    ch = conn.channel()
    exchange = cleanup.exchange(uniq("topic_logs"))
    ch.exchange_declare(exchange, exchange_type="topic")
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q1, exchange, "*.orange.*")
    ch.queue_bind(q2, exchange, "*.*.rabbit")
    ch.queue_bind(q2, exchange, "lazy.#")
    for key, _, _ in TOPIC_CASES:
        ch.basic_publish(exchange, key, key.encode())
    want1 = [k.encode() for k, a, _ in TOPIC_CASES if a]
    want2 = [k.encode() for k, _, b in TOPIC_CASES if b]
    assert [b for _, _, b in drain(ch, q1, len(want1))] == want1
    assert [b for _, _, b in drain(ch, q2, len(want2))] == want2
    assert ch.basic_get(q1)[0] is None and ch.basic_get(q2)[0] is None


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def test_6_rpc(connect, uniq, cleanup):
    conn = connect()
    rpc_queue = cleanup.queue(uniq("rpc_queue"))
    server = conn.channel()
    server.queue_declare(rpc_queue)
    server.basic_qos(prefetch_count=1)

    def on_request(c, method, props, body):
        response = str(fib(int(body))).encode()
        c.basic_publish("", props.reply_to, response,
                        pika.BasicProperties(correlation_id=props.correlation_id))
        c.basic_ack(method.delivery_tag)

    server.basic_consume(rpc_queue, on_request)

    client = conn.channel()
    callback_queue = client.queue_declare("", exclusive=True).method.queue
    responses: dict[str, int] = {}

    def on_response(c, method, props, body):
        responses[props.correlation_id] = int(body)

    client.basic_consume(callback_queue, on_response, auto_ack=True)
    ids = {}
    for n in (0, 1, 10, 20):
        corr = str(uuid.uuid4())
        ids[corr] = n
        client.basic_publish("", rpc_queue, str(n).encode(),
                             pika.BasicProperties(reply_to=callback_queue, correlation_id=corr))
    pump(conn, lambda: len(responses) == 4)
    assert {ids[c]: v for c, v in responses.items()} == {0: 0, 1: 1, 10: 55, 20: 6765}
