"""celery with ``task_default_queue_type = 'quorum'``: a real worker runs tasks from a quorum
queue. ``worker_detect_quorum_queues`` (on by default) makes the worker use per-consumer
prefetch instead of a global basic.qos, which quorum queues refuse (540)."""
from __future__ import annotations

import textwrap

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
