"""A 3-node RabbitMQ cluster on this machine, for benchmarks (issue 12 "Speed").

    python bench/rabbitmq_cluster.py [--nodes 3] [--port 5701] [--prefix rq]   # Ctrl-C stops

Nodes ``rq1@localhost`` … ``rqN@localhost`` of the installed RabbitMQ (3.10), AMQP ports
``port`` … ``port+N-1``, distribution ports ``port+1000`` …, no plugins (no management,
no prometheus, no streams), mnesia and logs under one temporary directory owned by the
``rabbitmq`` user (the Debian wrapper runs the server as that user, so they share its
``/var/lib/rabbitmq/.erlang.cookie``). ``rq2`` … join ``rq1`` (``stop_app``,
``join_cluster``, ``start_app``). ``stop()`` stops each node with ``rabbitmqctl -n rqI
stop`` and then its process group by pid; the shared reference broker (``ref@localhost``,
port 5673) is never addressed.
"""
from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time


class RabbitCluster:
    def __init__(self, nodes: int = 3, port: int = 5701, prefix: str = "rq"):
        self.names = [f"{prefix}{i + 1}@localhost" for i in range(nodes)]
        self.ports = [port + i for i in range(nodes)]
        self.dist_ports = [port + 1000 + i for i in range(nodes)]
        self.base = tempfile.mkdtemp(prefix="rqbench-")
        self.procs: list[subprocess.Popen] = []
        self.urls = [f"amqp://guest:guest@127.0.0.1:{p}/" for p in self.ports]

    def _env(self, i: int) -> dict:
        d = os.path.join(self.base, f"rq{i + 1}")
        env = dict(os.environ)
        env.update(RABBITMQ_NODENAME=self.names[i], RABBITMQ_NODE_PORT=str(self.ports[i]),
                   RABBITMQ_DIST_PORT=str(self.dist_ports[i]),
                   RABBITMQ_MNESIA_BASE=os.path.join(d, "mnesia"),
                   RABBITMQ_LOG_BASE=os.path.join(d, "log"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.base, "plugins"),
                   RABBITMQ_CONFIG_FILE=os.path.join(self.base, "rabbitmq"),
                   RABBITMQ_SERVER_START_ARGS="")
        env.pop("RABBITMQ_ADVANCED_CONFIG_FILE", None)
        return env

    def ctl(self, i: int, *args: str, timeout: float = 120) -> str:
        return subprocess.run(["rabbitmqctl", "-n", self.names[i], *args], env=self._env(i),
                              check=True, capture_output=True, text=True,
                              timeout=timeout).stdout

    def start(self) -> "RabbitCluster":
        rmq = pwd.getpwnam("rabbitmq")
        with open(os.path.join(self.base, "plugins"), "w") as f:
            f.write("[].\n")
        with open(os.path.join(self.base, "rabbitmq.conf"), "w") as f:
            f.write("loopback_users = none\n")
        for i in range(len(self.names)):
            for sub in ("mnesia", "log"):
                os.makedirs(os.path.join(self.base, f"rq{i + 1}", sub))
        for root, dirs, files in os.walk(self.base):
            for n in dirs + files:
                os.chown(os.path.join(root, n), rmq.pw_uid, rmq.pw_gid)
        os.chown(self.base, rmq.pw_uid, rmq.pw_gid)
        try:
            for i in range(len(self.names)):
                self.procs.append(subprocess.Popen(
                    ["rabbitmq-server"], env=self._env(i), start_new_session=True,
                    stdout=open(os.path.join(self.base, f"rq{i + 1}.out"), "w"),
                    stderr=subprocess.STDOUT))
            for i in range(len(self.names)):
                self._wait_port(self.ports[i])
                self.ctl(i, "await_startup")
            for i in range(1, len(self.names)):
                self.ctl(i, "stop_app")
                self.ctl(i, "join_cluster", self.names[0])
                self.ctl(i, "start_app")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_port(self, port: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a RabbitMQ node exited: see {self.base}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"RabbitMQ on port {port}")

    def pids(self) -> list[int]:
        """Every process under each started node (``su`` starts a session of its own, so the
        tree by parent pid: su, sh, beam.smp, erl_child_setup, inet_gethost)."""
        children: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(d))
        out, todo = [], [p.pid for p in self.procs]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, ()))
        return out

    def stop(self) -> None:
        for i, p in enumerate(self.procs):
            if p.poll() is None:
                try:
                    self.ctl(i, "stop", timeout=60)
                except (subprocess.SubprocessError, OSError):
                    pass
        left = self.pids()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        for pid in left:                    # what a failed stop left: the trees we started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            p.wait()
        self.procs = []
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "RabbitCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--port", type=int, default=5701)
    p.add_argument("--prefix", default="rq", help="node names PREFIX1@localhost ...: another "
                   "name than a cluster someone else runs on this machine")
    args = p.parse_args()

    def interrupted(signum, frame):
        raise KeyboardInterrupt
    # SIGTERM too, and SIGINT even when started in the background of a script (``&`` starts
    # it with SIGINT ignored, so Ctrl-C's signal was dropped and the nodes kept running)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupted)
    with RabbitCluster(args.nodes, args.port, args.prefix) as rc:
        print(rc.ctl(0, "cluster_status"))
        print(" ".join(rc.urls), "pids", rc.pids(), flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
