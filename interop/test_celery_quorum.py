"""celery with ``task_default_queue_type = 'quorum'``: a real worker runs tasks from a quorum
queue. ``worker_detect_quorum_queues`` (on by default) makes the worker use per-consumer
prefetch instead of a global basic.qos, which quorum queues refuse (540)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid

import pika
import pytest

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
    workdir = tmp_path_factory.mktemp("celery-quorum")
    (workdir / "quorum_tasks.py").write_text(TASKS)
    queue = f"celery-quorum-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, INTEROP_BROKER_URL=broker_url, INTEROP_QUEUE=queue,
               PYTHONPATH=str(workdir) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(workdir / "worker.log", "w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "quorum_tasks", "worker", "--pool", "solo",
         "-c", "1", "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", queue,
         "-l", "INFO"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    old = {k: os.environ.get(k) for k in ("INTEROP_BROKER_URL", "INTEROP_QUEUE")}
    os.environ.update(INTEROP_BROKER_URL=broker_url, INTEROP_QUEUE=queue)
    sys.path.insert(0, str(workdir))
    try:
        import quorum_tasks
        yield quorum_tasks, queue, workdir / "worker.log"
    finally:
        sys.path.remove(str(workdir))
        sys.modules.pop("quorum_tasks", None)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        worker.send_signal(signal.SIGTERM)     # see test_celery.py: SIGKILL after a moment
        try:
            worker.wait(3)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        log.close()
        c = pika.BlockingConnection(pika.URLParameters(broker_url))
        c.channel().queue_delete(queue)         # without if-unused/if-empty: a quorum queue
        c.channel().exchange_delete(queue)
        c.close()


def test_tasks_run_from_a_quorum_queue(quorum_app, mgmt_url):
    app, queue, worker_log = quorum_app
    # the first call also waits for the worker to finish starting
    assert app.add.delay(2, 3).get(timeout=60) == 5, worker_log.read_text()
    assert [app.add.delay(i, i).get(timeout=30) for i in range(10)] == [2 * i for i in range(10)]
    info = wait_until(lambda: Mgmt(mgmt_url).get(f"/api/queues/%2F/{q(queue)}"))
    assert info["type"] == "quorum" and info["durable"] is True
    assert info["arguments"]["x-queue-type"] == "quorum"
    assert "does not support global qos" not in worker_log.read_text()
