"""The supervisor's watchdog (supervisor/process.py, heartbeat.py): a worker or front-end whose
event loop stops running (SIGSTOP here; a deadlock looks the same from outside) is killed
after ``--watchdog-timeout`` and started again, with one error line, and its queues and its
port serve again without anyone resuming it; what was confirmed before is there. A child
that runs is never killed, however long the test waits. Real broker processes, pika."""
from __future__ import annotations

import os
import signal
import time

import pika
import pytest

from amqpbroker.testing import BrokerProcess, leaks
from amqpbroker.testing.cluster_clients import drain

pytestmark = pytest.mark.own_layout

PERSISTENT = pika.BasicProperties(delivery_mode=2)
TIMEOUT = "2"               # --watchdog-timeout, seconds


def restarted(broker, kind: str, old_pid: int) -> dict:
    """``kind`` ("workers" or "frontends") 0 of ``/api/nodes`` once a new process runs."""
    def check():
        child = broker.api("nodes")[0][kind][0]
        return child if child["pid"] and child["pid"] != old_pid else None
    return leaks.wait_until(check, what=f"{kind} 0 to restart")


def publish_and_get(broker, queue: str, body: bytes) -> list[bytes]:
    """Publish ``body`` (confirmed) on a new connection, then get everything the queue has."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", queue, body, PERSISTENT)
    count = ch.queue_declare(queue, passive=True).method.message_count
    conn.close()
    return [b for b, _ in drain(broker, queue, count)]


def reopened(broker, queue: str) -> bool:
    """The queue answers again: until the restarted worker has opened it, a declare is
    refused with 404 "being restarted" (as RabbitMQ's for a queue whose node is down)."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        conn.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as err:
        if err.reply_code == 404 and "being restarted" in err.reply_text:
            return False
        raise
    finally:
        if conn.is_open:
            conn.close()


def stuck_line(broker, kind: str, pid: int) -> list[str]:
    return [line for line in broker.output
            if f"{kind} 0 (pid {pid}) has not run for" in line and "killing it" in line]


def test_a_stuck_worker_is_killed_and_its_queues_serve_again(tmp_path):
    with BrokerProcess(tmp_path, "--workers", "1", "--frontends", "0",
                       "--watchdog-timeout", TIMEOUT, management=True) as b:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("stuck", durable=True)
        ch.basic_publish("", "stuck", b"before", PERSISTENT)
        conn.close()
        old = b.worker_pids[0]
        os.kill(old, signal.SIGSTOP)
        assert not leaks.wait_gone([old], timeout=30), "the stopped worker was not killed"
        worker = restarted(b, "workers", old)
        assert worker["restarts"] == 1
        assert leaks.wait_until(lambda: stuck_line(b, "worker", old), what="the log line")

        leaks.wait_until(lambda: reopened(b, "stuck"), what="the queue on the new worker")
        assert publish_and_get(b, "stuck", b"after") == [b"before", b"after"]


def test_a_stuck_front_end_is_killed_and_the_port_serves_again(tmp_path):
    with BrokerProcess(tmp_path, "--workers", "1", "--frontends", "1",
                       "--watchdog-timeout", TIMEOUT, management=True) as b:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        conn.channel().queue_declare("port", durable=True)
        conn.close()
        old = b.frontend_pids[0]
        os.kill(old, signal.SIGSTOP)
        assert not leaks.wait_gone([old], timeout=30), "the stopped front-end was not killed"
        restarted(b, "frontends", old)
        assert leaks.wait_until(lambda: stuck_line(b, "front-end", old), what="the log line")
        assert publish_and_get(b, "port", b"through the new front-end") == \
            [b"through the new front-end"]


def busy(broker, queue: str, seconds: float) -> None:
    """Confirmed publishes to ``queue`` for ``seconds``: every process has work all along."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue, durable=True)
    before = ch.queue_declare(queue, passive=True).method.message_count
    end, sent = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        ch.basic_publish("", queue, b"%d" % sent, PERSISTENT)
        sent += 1
    assert ch.queue_declare(queue, passive=True).method.message_count == before + sent
    conn.close()


def test_children_that_run_are_never_killed(tmp_path):
    """Busy for twice the timeout; then the whole broker paused (SIGSTOP to its process
    group, the supervisor too) for three timeouts and resumed: a supervisor that stood still
    itself gives its children their whole timeout again. Nobody is killed."""
    with BrokerProcess(tmp_path, "--workers", "1", "--frontends", "1",
                       "--watchdog-timeout", TIMEOUT, management=True) as b:
        busy(b, "busy", 2 * float(TIMEOUT))
        os.killpg(b.proc.pid, signal.SIGSTOP)
        try:
            assert leaks.wait_gone([b.proc.pid], timeout=3 * float(TIMEOUT)) == {b.proc.pid}
        finally:
            os.killpg(b.proc.pid, signal.SIGCONT)
        busy(b, "busy", 2 * float(TIMEOUT))
        node = b.api("nodes")[0]
        assert [(w["pid"], w["restarts"]) for w in node["workers"]] == [(b.worker_pids[0], 0)]
        assert [(f["pid"], f["restarts"]) for f in node["frontends"]] == \
            [(b.frontend_pids[0], 0)]
        assert not [line for line in b.output if "has not run for" in line]
