"""The command line: flags, AMQPBROKER_* environment variables, the ready line, signals.

The command-line tests start the installed console script (``amqpbroker``, as ``pip install``
wrote it beside this interpreter) with the checkout as the working directory, as the README's
``pip install . && amqpbroker serve`` does. Every process of such a broker must run the code the
script imported, never the checkout's tree it happens to stand in: after a non-editable install,
a child that imported the checkout dies there (``No module named 'shm._ring'``), or, where the
checkout has a compiled ring (an editable install beside it), runs other code than its
supervisor. Which code a process runs is read from its memory map: the ``shm._ring`` extension
it loaded.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pika
import pytest

import amqpbroker
import shm._ring
from amqpbroker import child
from amqpbroker.testing import LAYOUTS, BrokerProcess

CHECKOUT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def console_script() -> str:
    """The ``amqpbroker`` script that ``pip install`` put beside this interpreter."""
    script = shutil.which("amqpbroker", path=sysconfig.get_path("scripts"))
    assert script, f"no amqpbroker console script beside {sys.executable}: pip install -e ."
    return script


def code_under_test() -> dict:
    """The environment that makes the console script import the amqpbroker these tests
    imported (the install may point at another tree, e.g. from a git worktree)."""
    root = str(Path(amqpbroker.__file__).resolve().parents[1])
    return {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    """Run the console script from the checkout, on the code under test."""
    return subprocess.run([console_script(), *args], cwd=CHECKOUT,
                          env={**os.environ, **code_under_test()}, capture_output=True,
                          text=True, timeout=60, **kw)


def ring_files(pid: int) -> set[str]:
    """The ``shm._ring`` extension files process ``pid`` has loaded: where it imported from."""
    with open(f"/proc/{pid}/maps") as f:
        fields = (line.split(maxsplit=5) for line in f)
        return {x[5].strip() for x in fields
                if len(x) == 6 and re.search(r"/shm/_ring\.[^/]*so$", x[5].strip())}


def imported_ring() -> str:
    """The ``shm._ring`` extension this test process imported."""
    return os.path.realpath(shm._ring.__file__)


def processes(b: BrokerProcess) -> list[int]:
    return [b.proc.pid, *b.worker_pids, *b.frontend_pids]


def assert_serves(b: BrokerProcess) -> None:
    """A confirmed persistent publish comes back out: connections, routing and queues work."""
    conn = pika.BlockingConnection(pika.URLParameters(b.url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for q in ("a", "b", "c", "d"):      # placed by hash: more than one worker gets one
            ch.queue_declare(q, durable=True)
            ch.basic_publish("", q, q.encode(), pika.BasicProperties(delivery_mode=2))
            assert ch.basic_get(q, auto_ack=True)[2] == q.encode()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """amqpbroker installed as ``pip install .`` installs it (built, not editable) into a
    directory of its own, ``pip install --target``. Built from a copy of the checkout's
    sources, so that the build leaves nothing in the checkout."""
    src = tmp_path_factory.mktemp("source")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, src)
    for name in ("amqpbroker", "shm", "cffi_build"):
        shutil.copytree(CHECKOUT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    target = tmp_path_factory.mktemp("site")
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--disable-pip-version-check", "--target", str(target), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return target


@pytest.mark.own_layout
@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_console_script_serves_from_the_checkout(tmp_path, layout):
    with BrokerProcess(tmp_path, *layout, command=[console_script()], cwd=CHECKOUT,
                       env=code_under_test()) as b:
        workers, frontends = int(layout[1]), int(layout[3])
        assert (len(b.worker_pids), len(b.frontend_pids)) == (workers, frontends)
        assert_serves(b)
        if b.worker_pids:
            for pid in processes(b):
                assert ring_files(pid) == {imported_ring()}, pid


@pytest.mark.own_layout
def test_installed_broker_run_from_the_checkout_runs_only_installed_code(tmp_path, installed):
    """The README's ``pip install . && amqpbroker serve``, in the checkout: the supervisor
    imports the installed package, and so must every worker and front-end it starts (they
    used to put the working directory, the checkout, first on their path)."""
    ring = {os.path.realpath(p) for p in (installed / "shm").glob("_ring.*so")}
    assert len(ring) == 1
    with BrokerProcess(tmp_path, *LAYOUTS["2 workers + 2 front-ends"],
                       command=[str(installed / "bin" / "amqpbroker")], cwd=CHECKOUT,
                       env={"PYTHONPATH": str(installed)}) as b:
        for pid in processes(b):
            assert ring_files(pid) == ring, pid
        assert_serves(b)


@pytest.mark.own_layout
def test_broker_process_starts_what_the_test_process_imported(tmp_path, installed):
    """Started from a directory that holds another amqpbroker, ``BrokerProcess`` still runs
    (in every process) the one this process imported."""
    with BrokerProcess(tmp_path, *LAYOUTS["2 workers + 2 front-ends"], cwd=installed) as b:
        for pid in processes(b):
            assert ring_files(pid) == {imported_ring()}, pid
        assert_serves(b)


@pytest.mark.parametrize("safe_path", ["", "1"], ids=["cwd on sys.path", "PYTHONSAFEPATH"])
def test_child_command_imports_nothing_from_the_working_directory(tmp_path, safe_path):
    """``child.command`` (how workers, front-ends and ``BrokerProcess`` brokers start) runs the
    package on the parent's path even where the working directory holds another one, and
    imports nothing from there while it sets the path up."""
    (tmp_path / "amqpbroker").mkdir()
    for name in ("amqpbroker/__init__.py", "json.py", "runpy.py"):
        (tmp_path / name).write_text(f"raise SystemExit('imported the decoy {name}')\n")
    out = subprocess.run(child.command("amqpbroker", "serve", "--help"), cwd=tmp_path,
                         env={**os.environ, "PYTHONSAFEPATH": safe_path},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: amqpbroker serve")


def test_help_lists_every_flag():
    out = cli("serve", "--help", check=True).stdout
    for flag in ("--host", "--port", "--management-port", "--data-dir", "--log-level"):
        assert flag in out
    assert "AMQPBROKER_DATA_DIR" in out


def test_environment_sets_flags(tmp_path):
    port = free_port()
    env = {"AMQPBROKER_PORT": str(port), "AMQPBROKER_HOST": "127.0.0.1",
           "AMQPBROKER_MANAGEMENT_PORT": "0", "AMQPBROKER_PROMETHEUS_PORT": "0",
           "AMQPBROKER_DATA_DIR": str(tmp_path / "envdata")}
    proc = subprocess.Popen([console_script(), "serve"], cwd=CHECKOUT,
                            env={**os.environ, **code_under_test(), **env},
                            stdout=subprocess.PIPE, text=True)
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
        out = cli("serve", "--host", "127.0.0.1", "--port", str(port),
                  "--management-port", "0", "--data-dir", str(tmp_path))
    assert out.returncode == 1
    assert "cannot start" in out.stderr and "address already in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_unusable_data_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = cli("serve", "--host", "127.0.0.1", "--port", "0", "--management-port", "0",
              "--data-dir", str(blocker / "data"))
    assert out.returncode == 1
    assert "cannot start" in out.stderr and "Traceback" not in out.stderr


def test_frontends_without_workers_is_a_clear_error(tmp_path):
    out = cli("serve", "--host", "127.0.0.1", "--port", "0", "--management-port", "0",
              "--data-dir", str(tmp_path), "--workers", "0", "--frontends", "2")
    assert out.returncode == 1
    assert "cannot start: --frontends needs at least one worker process" in out.stderr
