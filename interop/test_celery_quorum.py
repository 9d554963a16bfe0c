"""celery with ``task_default_queue_type = 'quorum'``: a real worker runs tasks from a quorum
queue. ``worker_detect_quorum_queues`` (on by default) makes the worker use per-consumer
prefetch instead of a global basic.qos, which quorum queues refuse (540)."""
from __future__ import annotations

import textwrap
import time

import pika
import pytest

from .celery_worker import celery_worker
from .conftest import Mgmt, q, wait_until

TASKS = textwrap.dedent('''
    import os
    from celery import Celery

    app = Celery("quorum_tasks", broker=os.environ["INTEROP_BROKER_URL"], backend="rpc://")
    app.conf.update(
        task_default_queue=os.environ["INTEROP_QUEUE"],
        task_default_queue_type="quorum", worker_detect_quorum_queues=True,
        # a topic exchange: countdown and ETA tasks then wait in the broker, celery 5.5's
        # native delayed delivery (a direct one keeps them in the worker)
        task_default_exchange_type="topic",
        task_serializer="json", result_serializer="json", accept_content=["json"],
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
    )

    @app.task
    def add(x, y):
        return x + y
''')


@pytest.fixture(scope="module")
def quorum_app(broker_url, tmp_path_factory):
    """A tasks module whose default queue is a quorum queue, and ``celery worker`` on it."""
    with celery_worker(broker_url, tmp_path_factory.mktemp("celery-quorum"), "quorum_tasks",
                       TASKS) as worker:
        yield worker


def test_tasks_run_from_a_quorum_queue(quorum_app, mgmt_url):
    app, queue, worker_log = quorum_app
    # the first call also waits for the worker to finish starting
    assert app.add.delay(2, 3).get(timeout=60) == 5, worker_log.read_text()
    assert [app.add.delay(i, i).get(timeout=30) for i in range(10)] == [2 * i for i in range(10)]
    info = wait_until(lambda: Mgmt(mgmt_url).get(f"/api/queues/%2F/{q(queue)}"))
    assert info["type"] == "quorum" and info["durable"] is True
    assert info["arguments"]["x-queue-type"] == "quorum"
    assert "does not support global qos" not in worker_log.read_text()


def test_a_countdown_task_waits_in_the_broker_and_runs_after_its_delay(quorum_app, mgmt_url,
                                                                       broker_url):
    """Celery 5.5+'s native delayed delivery with quorum queues: the worker declares the
    28 levels of TTL queues (interop/test_celery_delayed_delivery.py) and binds its queue's
    exchange to them; a countdown task goes through them, not the worker's ETA holding."""
    app, queue, worker_log = quorum_app
    assert app.add.delay(1, 1).get(timeout=60) == 2, worker_log.read_text()    # started
    info = wait_until(lambda: Mgmt(mgmt_url).get("/api/queues/%2F/celery_delayed_27"))
    assert info["type"] == "quorum"
    assert info["arguments"]["x-dead-letter-strategy"] == "at-least-once"
    started = time.monotonic()
    result = app.add.apply_async((20, 22), countdown=3)
    # it waits in the 2 s level's queue (3 = 0b11: the 2 s then the 1 s level), not in
    # the worker
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        wait_until(lambda: conn.channel().queue_declare(
            "celery_delayed_1", passive=True).method.message_count == 1, timeout=2)
    finally:
        conn.close()
    assert result.get(timeout=60) == 42
    assert time.monotonic() - started >= 2.9
    assert "native delayed delivery do not support" not in worker_log.read_text()
