"""celery: a real worker subprocess consuming tasks over AMQP, results via the rpc:// backend."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

TASKS = textwrap.dedent('''
    import os
    from celery import Celery

    app = Celery("interop_tasks", broker=os.environ["INTEROP_BROKER_URL"], backend="rpc://")
    app.conf.update(
        task_default_queue=os.environ["INTEROP_QUEUE"],
        task_serializer="json", result_serializer="json", accept_content=["json"],
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
    )
    # Not task_acks_late + prefetch 1: the solo worker then sits up to ~10 s on its ack, which
    # holds back the next delivery (a celery quirk, seen against RabbitMQ too).

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def echo(value):
        return value

    @app.task
    def boom(message):
        raise ValueError(message)

    @app.task(bind=True)
    def whoami(self):
        return {"id": self.request.id, "routing_key": self.request.delivery_info.get("routing_key")}
''')


@pytest.fixture(scope="module")
def celery_app(broker_url, tmp_path_factory):
    """Write a tasks module, start ``celery worker --pool solo`` on it, yield the app."""
    workdir = tmp_path_factory.mktemp("celery")
    (workdir / "interop_tasks.py").write_text(TASKS)
    queue = f"celery-interop-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, INTEROP_BROKER_URL=broker_url, INTEROP_QUEUE=queue,
               PYTHONPATH=str(workdir) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(workdir / "worker.log", "w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "interop_tasks", "worker", "--pool", "solo", "-c", "1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", queue, "-l", "INFO"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    old = {k: os.environ.get(k) for k in ("INTEROP_BROKER_URL", "INTEROP_QUEUE")}
    os.environ.update(INTEROP_BROKER_URL=broker_url, INTEROP_QUEUE=queue)
    sys.path.insert(0, str(workdir))
    try:
        import interop_tasks
        yield interop_tasks
    finally:
        sys.path.remove(str(workdir))
        sys.modules.pop("interop_tasks", None)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        # Warm shutdown (SIGTERM) idles ~10 s in the solo worker's loop; all tasks are done by now,
        # so give it a moment and then SIGKILL rather than slow the suite down.
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(3)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        log.close()
        # The task queue is durable, and celery declares a direct exchange of the same name.
        import pika
        c = pika.BlockingConnection(pika.URLParameters(broker_url))
        c.channel().queue_delete(queue)
        c.channel().exchange_delete(queue)
        c.close()


def test_add(celery_app):
    # The first call also waits for the worker to finish starting.
    assert celery_app.add.delay(2, 3).get(timeout=60) == 5


def test_many_tasks(celery_app):
    assert [celery_app.add.delay(i, i).get(timeout=30) for i in range(20)] == [2 * i for i in range(20)]


def test_group_of_tasks(celery_app):
    from celery import group
    result = group(celery_app.add.s(i, 1) for i in range(10)).apply_async()
    assert result.get(timeout=30) == [i + 1 for i in range(10)]


def test_json_round_trip(celery_app):
    value = {"list": [1, 2.5, "three", None, True], "nested": {"k": "v"}, "unicode": "ünïcødé"}
    assert celery_app.echo.delay(value).get(timeout=30) == value


def test_task_exception_propagates(celery_app):
    result = celery_app.boom.delay("kaputt")
    with pytest.raises(ValueError) as e:
        result.get(timeout=30)
    assert str(e.value) == "kaputt"
    assert result.state == "FAILURE"


def test_request_context(celery_app):
    result = celery_app.whoami.apply_async(queue=os.environ["INTEROP_QUEUE"])
    info = result.get(timeout=30)
    assert info["id"] == result.id
    assert info["routing_key"] == os.environ["INTEROP_QUEUE"]
