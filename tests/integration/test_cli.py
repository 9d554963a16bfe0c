"""The command line: flags, AMQPBROKER_* environment variables, the ready line, signals."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pika
import pytest

from amqpbroker.testing import BrokerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_lists_every_flag():
    out = subprocess.run([sys.executable, "-m", "amqpbroker", "serve", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--host", "--port", "--management-port", "--data-dir", "--log-level"):
        assert flag in out
    assert "AMQPBROKER_DATA_DIR" in out


def test_environment_sets_flags(tmp_path):
    port = free_port()
    env = {"AMQPBROKER_PORT": str(port), "AMQPBROKER_HOST": "127.0.0.1",
           "AMQPBROKER_MANAGEMENT_PORT": "0", "AMQPBROKER_DATA_DIR": str(tmp_path / "envdata")}
    proc = subprocess.Popen([sys.executable, "-m", "amqpbroker", "serve"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        # the pids of worker and front-end processes follow (``--workers``, ``--frontends``)
        assert re.fullmatch(rf"amqpbroker ready amqp=127\.0\.0\.1:{port}"
                            rf"( workers=\d+(,\d+)*)?( frontends=\d+(,\d+)*)?",
                            line.strip()), line
        assert (tmp_path / "envdata" / "definitions.json").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


def test_flag_beats_environment(tmp_path):
    b = BrokerProcess(tmp_path, env={"AMQPBROKER_PORT": "1"})   # --port 0 on the command line
    with b:
        assert b.port not in (0, 1)


def test_ready_line_names_management_port(tmp_path):
    with BrokerProcess(tmp_path, management=True) as b:
        line = next(l for l in b.output if l.startswith("amqpbroker ready"))
        assert f"amqp=127.0.0.1:{b.port}" in line
        assert f"management=127.0.0.1:{b.management_port}" in line
        with socket.create_connection(("127.0.0.1", b.management_port), timeout=5):
            pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_connections_with_320_and_exits_cleanly(tmp_path, sig):
    b = BrokerProcess(tmp_path).start()
    try:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        ch.queue_declare("kept", durable=True)
        ch.confirm_delivery()
        ch.basic_publish("", "kept", b"persist", pika.BasicProperties(delivery_mode=2))
        b.proc.send_signal(sig)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            conn.process_data_events(time_limit=30)
        assert e.value.reply_code == 320
        assert "CONNECTION_FORCED" in e.value.reply_text
        assert b.proc.wait(30) == 0
    finally:
        b.stop()
    with BrokerProcess(tmp_path) as b2:
        conn = pika.BlockingConnection(pika.URLParameters(b2.url))
        method, _, body = conn.channel().basic_get("kept", auto_ack=True)
        assert body == b"persist"
        conn.close()


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "amqpbroker", "serve", "--host", "127.0.0.1",
                              "--port", str(port), "--management-port", "0",
                              "--data-dir", str(tmp_path)], capture_output=True, text=True,
                             timeout=60)
    assert out.returncode == 1
    assert "cannot start" in out.stderr and "address already in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_unusable_data_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = subprocess.run([sys.executable, "-m", "amqpbroker", "serve", "--host", "127.0.0.1",
                          "--port", "0", "--management-port", "0",
                          "--data-dir", str(blocker / "data")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "cannot start" in out.stderr and "Traceback" not in out.stderr


def test_frontends_without_workers_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "amqpbroker", "serve", "--host", "127.0.0.1",
                          "--port", "0", "--management-port", "0", "--data-dir", str(tmp_path),
                          "--workers", "0", "--frontends", "2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "cannot start: --frontends needs at least one worker process" in out.stderr
