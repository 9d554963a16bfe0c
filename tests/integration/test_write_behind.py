"""Non-durable queues write behind (worker/store.py): a body stays in memory until the
process's cached bodies pass ``--transient-memory-limit``; a message acked before then is
not written (held, bodiless, until thousands of them share a write). Seen from outside
through ``/api/partitions`` (the queue's log bytes), with pika publishing and consuming
64 KiB bodies, in both process layouts."""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import wait_until
from amqpbroker.testing.mgmt_client import ManagementClient

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

KIB64 = 65536
N = 100


@pytest.fixture(scope="module", params=list(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("behind"), *LAYOUTS[request.param],
                       management=True) as b:
        yield b


@pytest.fixture(scope="module")
def paging_broker(tmp_path_factory):
    """Pages at 1 MiB of cached bodies (2 workers: 512 KiB each)."""
    with BrokerProcess(tmp_path_factory.mktemp("paging"), "--workers", "2", "--frontends", "2",
                       "--transient-memory-limit", str(1 << 20), management=True) as b:
        yield b


def log_of(b: BrokerProcess, queue: str) -> dict:
    status, body, _ = ManagementClient(f"http://127.0.0.1:{b.management_port}").request(
        "GET", f"/api/partitions/%2F/{queue}", "guest", "guest")
    assert status == 200
    return body


def bodies() -> list[bytes]:
    return [bytes([i]) * (KIB64 - 8) + b"%08d" % i for i in range(N)]


def publish(ch, queue: str, sent: list[bytes]) -> None:
    ch.confirm_delivery()
    for body in sent:
        ch.basic_publish("", queue, body)


def consume(ch, queue: str, count: int) -> list[bytes]:
    got = []
    ch.basic_qos(prefetch_count=20)
    for method, _, body in ch.consume(queue, inactivity_timeout=30):
        assert method is not None, f"stalled after {len(got)} messages"
        got.append(body)
        ch.basic_ack(method.delivery_tag)
        if len(got) == count:
            break
    ch.cancel()
    return got


def test_acked_transient_bodies_never_reach_the_log(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        sent = bodies()
        publish(ch, q, sent)
        assert log_of(broker, q)["bytes"] < N * 1024          # held in memory, not written
        assert consume(ch, q, N) == sent
        # a get on the channel that acked: its answer comes once the acks were handled
        assert ch.basic_get(q) == (None, None, None)
        # the settled records are held too, bodiless, until the queue holds more than
        # WRITE_BEHIND_RECORDS of them (then written without their bodies): no round, no write
        log = log_of(broker, q)
        assert log["log_end_offset"] == N and log["durable_offset"] == 0, log
        assert log["bytes"] < N * 1024
    finally:
        conn.close()


def test_a_durable_queue_still_writes_every_body(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.queue_declare("behind-durable", durable=True)
        sent = bodies()
        publish(ch, "behind-durable", sent)
        # the messages are transient (no delivery_mode=2): as RabbitMQ, their confirms do not
        # wait for an fsync, so the durable offset may still lag the last confirm; wait for it
        wait_until(lambda: log_of(broker, "behind-durable")["durable_offset"] == N)
        log = log_of(broker, "behind-durable")
        assert log["bytes"] > N * KIB64, log
        assert consume(ch, "behind-durable", N) == sent
        ch.queue_delete("behind-durable")
    finally:
        conn.close()


def test_past_the_limit_transient_bodies_are_paged_and_come_back_whole(paging_broker):
    conn = pika.BlockingConnection(pika.URLParameters(paging_broker.url))
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        sent = bodies()
        publish(ch, q, sent)
        wait_until(lambda: log_of(paging_broker, q)["bytes"] > (N - 20) * KIB64)
        assert consume(ch, q, N) == sent
    finally:
        conn.close()
