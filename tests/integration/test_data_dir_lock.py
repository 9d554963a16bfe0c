"""One broker per data directory (``supervisor/dirlock.py``): a second broker started on a
directory another one uses refuses to start, in one line naming the directory and the pid,
and the first goes on serving what it confirmed; the lock is held by every process of the
tree that writes the directory, so a broker started while the workers of a supervisor killed
alone still run waits for them to exit, then starts on what they left. Real brokers, pika."""
from __future__ import annotations

import os
import re
import signal
import subprocess

import pika
import pytest

from amqpbroker import child
from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import session_members, wait_gone

READY = re.compile(r"amqpbroker ready amqp=(?P<host>[\d.]+):(?P<port>\d+)")
TIMEOUT = 60


def serve(data_dir, *args: str) -> list[str]:
    return [*child.command("amqpbroker"), "serve", "--host", "127.0.0.1", "--port", "0",
            "--management-port", "0", "--prometheus-port", "0", "--data-dir", str(data_dir),
            *args]


def publish_confirmed(url: str, queue: str, body: bytes) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    conn.close()


def get(url: str, queue: str) -> bytes | None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    _, _, body = conn.channel().basic_get(queue, auto_ack=True)
    conn.close()
    return body


@pytest.mark.own_layout
@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_a_second_broker_on_the_data_directory_refuses_to_start(tmp_path, layout):
    with BrokerProcess(tmp_path, *layout) as first:
        publish_confirmed(first.url, "kept", b"confirmed")
        second = subprocess.run(serve(tmp_path, "--data-dir-wait", "0.3"),
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert second.returncode == 1
        out = second.stdout + second.stderr
        assert (f"cannot start: the data directory {tmp_path} is in use by another broker "
                f"(pid {first.proc.pid}, or the workers it started)") in out, out
        assert "Traceback" not in out and "amqpbroker ready" not in out
        assert get(first.url, "kept") == b"confirmed"       # the first serves on


@pytest.mark.own_layout
def test_a_restart_waits_for_the_workers_of_a_supervisor_killed_alone(tmp_path):
    first = BrokerProcess(tmp_path, *LAYOUTS["2 workers + 2 front-ends"]).start()
    workers = list(first.worker_pids)
    second = None
    try:
        publish_confirmed(first.url, "kept", b"confirmed")
        for pid in workers:             # they cannot see their supervisor go and exit yet
            os.kill(pid, signal.SIGSTOP)
        os.kill(first.proc.pid, signal.SIGKILL)             # the supervisor alone
        first.proc.wait(TIMEOUT)
        second = subprocess.Popen(serve(tmp_path, "--data-dir-wait", str(TIMEOUT)),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        lines = []
        for line in second.stdout:      # it waits: the workers hold the directory's lock
            lines.append(line)
            assert not READY.search(line), "".join(lines)
            if "is in use by another broker" in line and "waiting up to" in line:
                break
        else:
            raise AssertionError("".join(lines))
        for pid in workers:             # they see the EOF, flush and exit: the lock goes
            os.kill(pid, signal.SIGCONT)
        for line in second.stdout:
            lines.append(line)
            ready = READY.search(line)
            if ready:
                break
        else:
            raise AssertionError("".join(lines))
        for pid in workers:             # every old worker is gone before it started
            assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)
        url = f"amqp://guest:guest@{ready['host']}:{ready['port']}/"
        assert get(url, "kept") == b"confirmed"
    finally:
        if second is not None:
            members = session_members(second.pid)
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGTERM)
                second.wait(TIMEOUT)
            second.stdout.close()
            assert not wait_gone(members, timeout=TIMEOUT)
        first.kill()                    # whatever is left of the first (workers stopped too)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
