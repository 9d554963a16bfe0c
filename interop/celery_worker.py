"""A real ``celery worker`` subprocess on a tasks module, for the celery interop tests.

The tasks module reads the broker URL and its queue from ``INTEROP_BROKER_URL`` and
``INTEROP_QUEUE`` (set here for the worker and for the test process while it runs).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid

import pika


@contextlib.contextmanager
def celery_worker(broker_url: str, workdir, module: str, tasks: str):
    """Write ``tasks`` as ``module``.py in ``workdir``, start ``celery worker --pool solo`` on a
    fresh queue, import the module here too; yield (module, queue, the worker's log path).
    On exit the worker stops and its queue and celery's exchange of the same name go."""
    (workdir / f"{module}.py").write_text(tasks)
    queue = f"{module.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, INTEROP_BROKER_URL=broker_url, INTEROP_QUEUE=queue,
               PYTHONPATH=str(workdir) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log_path = workdir / "worker.log"
    log = open(log_path, "w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", module, "worker", "--pool", "solo", "-c", "1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", queue, "-l", "INFO"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    old = {k: os.environ.get(k) for k in ("INTEROP_BROKER_URL", "INTEROP_QUEUE")}
    os.environ.update(INTEROP_BROKER_URL=broker_url, INTEROP_QUEUE=queue)
    sys.path.insert(0, str(workdir))
    try:
        yield __import__(module), queue, log_path
    finally:
        sys.path.remove(str(workdir))
        sys.modules.pop(module, None)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        # Warm shutdown (SIGTERM) idles ~10 s in the solo worker's loop; all tasks are done by
        # now, so give it a moment and then SIGKILL rather than slow the suite down.
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(3)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        log.close()
        # The task queue is durable (or a quorum queue: deleted without if-unused/if-empty),
        # and celery declares a direct exchange of the same name.
        c = pika.BlockingConnection(pika.URLParameters(broker_url))
        c.channel().queue_delete(queue)
        c.channel().exchange_delete(queue)
        c.close()
