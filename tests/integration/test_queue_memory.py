"""A queue's ``memory`` (issue 11): the bytes it holds in its worker, in ``/api/queues``,
``/api/queues/{vhost}/{name}`` and Prometheus' ``rabbitmq_queue_process_memory_bytes``. It
grows as a queue fills with messages held in memory and falls once they are consumed and
acked, in one process and split into front-end and worker processes (worker/memory.py)."""
from __future__ import annotations

import urllib.parse
import urllib.request

import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import wait_until

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout


COUNT = 2000
BODY = b"m" * 1024
FILLED = COUNT * len(BODY)          # the bodies alone; every one stays in the body cache


@pytest.fixture(params=sorted(LAYOUTS))
def broker(request, tmp_path):
    with BrokerProcess(tmp_path, *LAYOUTS[request.param], management=True,
                       prometheus=True) as b:
        yield b


def memory(b: BrokerProcess, queue: str) -> int:
    return b.api(f"queues/%2F/{urllib.parse.quote(queue, safe='')}")["memory"]


def listed_memory(b: BrokerProcess, queue: str) -> int:
    return next(q["memory"] for q in b.api("queues") if q["name"] == queue)


def prometheus_memory(b: BrokerProcess, queue: str) -> float:
    url = f"http://127.0.0.1:{b.prometheus_port}/metrics/per-object"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    fam = next(f for f in text_string_to_metric_families(text)
               if f.name == "rabbitmq_queue_process_memory_bytes")
    return next(s.value for s in fam.samples if s.labels == {"vhost": "/", "queue": queue})


def test_memory_follows_messages_held_in_memory(broker):
    b, queue = broker, "memory-q"
    conn = pika.BlockingConnection(pika.URLParameters(b.url))
    try:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True)
        ch.queue_declare("memory-other", durable=True)
        empty = memory(b, queue)
        assert 0 < empty < 64 * 1024
        assert listed_memory(b, queue) == empty
        assert prometheus_memory(b, queue) == empty

        ch.confirm_delivery()
        for _ in range(COUNT):
            ch.basic_publish("", queue, BODY, pika.BasicProperties(delivery_mode=2))
        full = memory(b, queue)
        assert full >= empty + FILLED
        assert full < empty + 3 * FILLED        # an estimate, not a multiple of the bodies
        assert listed_memory(b, queue) == full
        assert prometheus_memory(b, queue) == full
        assert memory(b, "memory-other") == empty       # only the queue that holds them
        # the node's breakdown counts its classic queues as RabbitMQ's queue_procs, its
        # front-end processes (the connections) as connection_other
        breakdown = b.api("nodes/amqpbroker@localhost/memory")["memory"]
        assert breakdown["queue_procs"] == full + empty
        assert (breakdown["connection_other"] > 0) == bool(b.frontend_pids)
        assert sum(v for k, v in breakdown.items() if k not in ("strategy", "total")) \
            == breakdown["total"]["rss"]

        # delivered, not acked: the bodies left the cache (they are durable: read back
        # from the log if needed), the queue still tracks each delivery
        ch.basic_qos(prefetch_count=COUNT)
        got = []
        ch.basic_consume(queue, lambda c, m, p, body: got.append(m.delivery_tag))
        wait_until(lambda: len(got) == COUNT, what="every message delivered",
                   step=lambda: conn.process_data_events(time_limit=0.05))
        unacked = wait_until(lambda: b.api(f"queues/%2F/{queue}")["messages_unacknowledged"]
                             == COUNT and memory(b, queue), what="deliveries counted")
        assert empty + COUNT * 100 < unacked < full - FILLED // 2

        ch.basic_ack(got[-1], multiple=True)
        wait_until(lambda: b.api(f"queues/%2F/{queue}")["messages"] == 0,
                   what="every message acked",
                   step=lambda: conn.process_data_events(time_limit=0.05))
        drained = memory(b, queue)
        assert drained < empty + 16 * 1024
        assert prometheus_memory(b, queue) == drained
        ch.queue_delete(queue)
        ch.queue_delete("memory-other")
    finally:
        conn.close()


def test_memory_counts_settled_messages_write_behind_still_holds(broker):
    """A non-durable queue writes a settled small message only once enough of them gather
    (worker/store.py, "Write-behind"): until then its body stays in the worker's memory, and
    the queue's ``memory`` says so."""
    b, queue, count, body = broker, "memory-transient", 1000, b"t" * 512
    conn = pika.BlockingConnection(pika.URLParameters(b.url))
    try:
        ch = conn.channel()
        ch.queue_declare(queue)
        empty = memory(b, queue)
        ch.confirm_delivery()
        for _ in range(count):
            ch.basic_publish("", queue, body)
        got = []
        ch.basic_consume(queue, lambda c, m, p, body: got.append(m.delivery_tag))
        wait_until(lambda: len(got) == count, what="every message delivered",
                   step=lambda: conn.process_data_events(time_limit=0.05))
        ch.basic_ack(got[-1], multiple=True)
        wait_until(lambda: b.api(f"queues/%2F/{queue}")["messages"] == 0,
                   what="every message acked",
                   step=lambda: conn.process_data_events(time_limit=0.05))
        held = memory(b, queue)
        assert held >= empty + count * len(body)
        assert held < empty + 3 * count * len(body)
        ch.queue_delete(queue)
    finally:
        conn.close()
