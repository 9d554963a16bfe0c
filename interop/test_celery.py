"""celery: a real worker subprocess consuming tasks over AMQP, results via the rpc:// backend."""
from __future__ import annotations

import os
import textwrap

import pytest

from .celery_worker import celery_worker

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
    """A tasks module and ``celery worker --pool solo`` on it; yield the module."""
    with celery_worker(broker_url, tmp_path_factory.mktemp("celery"), "interop_tasks",
                       TASKS) as (tasks, _queue, _log):
        yield tasks


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
