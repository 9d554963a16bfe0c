"""Publisher flow control: a queue with consumers that cannot keep up stops reading from its
publishers (as RabbitMQ's credit flow does), so consumers are not starved and the backlog stays
bounded; publishing resumes as the queue drains, and nothing is lost."""
from __future__ import annotations

import json
import threading
import urllib.request
import base64

import pika
import pytest

from amqpbroker.worker.queue import Queue
from amqpbroker.frontend.partition_client import LINK_WINDOW
from amqpbroker.frontend.session import EVENTS_PER_TURN
from amqpbroker.testing import BrokerProcess

TOTAL = 20000


@pytest.fixture
def broker(tmp_path):
    with BrokerProcess(tmp_path, management=True) as b:
        yield b


def ready(broker, queue: str) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{broker.management_port}/api/queues/%2F/{queue}",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)["messages_ready"]


def test_backlogged_queue_throttles_publisher_and_loses_nothing(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare("flow", auto_delete=False)
    ch.basic_qos(prefetch_count=10)
    publisher_done = threading.Event()

    def publish():
        pc = pika.BlockingConnection(pika.URLParameters(broker.url))
        pch = pc.channel()
        for i in range(TOTAL):
            pch.basic_publish("", "flow", b"%d" % i)
        pc.close()                       # close() flushes; returns once the broker read all
        publisher_done.set()

    got = []
    seen_max = 0
    threading.Thread(target=publish, daemon=True).start()
    for method, _, body in ch.consume("flow", inactivity_timeout=30):
        assert method is not None, f"stalled after {len(got)} messages"
        got.append(int(body))
        ch.basic_ack(method.delivery_tag)
        if len(got) % 1000 == 0:
            seen_max = max(seen_max, ready(broker, "flow"))
        if len(got) == TOTAL:
            break
    assert got == list(range(TOTAL))                     # nothing lost, order kept
    assert publisher_done.wait(30)
    # the backlog never ran far past the high-water mark; with worker processes, the queue
    # learns of up to LINK_WINDOW more publishes (in the ring) before it can throttle
    in_rings = LINK_WINDOW if broker.worker_pids else 0
    assert seen_max <= Queue.FLOW_HIGH + EVENTS_PER_TURN + in_rings
    ch.queue_delete("flow")
    conn.close()


def test_queue_without_consumers_is_not_throttled(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare("store", auto_delete=False)
    ch.confirm_delivery()
    n = Queue.FLOW_HIGH * 2
    for i in range(n):
        ch.basic_publish("", "store", b"x")
    assert ch.queue_declare("store", passive=True).method.message_count == n
    ch.queue_delete("store")
    conn.close()
