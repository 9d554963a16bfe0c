"""Run an amqpbroker as a child process on free ports, for tests and benchmarks.

The broker prints one line when it listens::

    amqpbroker ready amqp=127.0.0.1:40123 management=127.0.0.1:40124

(with ``--tls-cert``: ``amqps=`` after ``amqp=``, ``https=`` after ``management=``; with
``prometheus=True``: ``prometheus=`` after those; ``--cluster``: ``node=n1 cluster=25672``
after those; ``--mqtt-port``: ``mqtt=``, ``--mqtt-tls-port``: ``mqtts=``, ``--web-mqtt-port``: ``web-mqtt=``,
then ``--stomp-port``: ``stomp=``, ``--stomp-tls-port``: ``stomps=``, ``--web-stomp-port``:
``web-stomp=``, ``--stream-port``: ``stream=``, ``--stream-tls-port``: ``streams=``
last)

``BrokerProcess`` starts ``python -m amqpbroker serve`` with ``--port 0`` and reads that
line to learn the ports, so tests never race for a port. ``kill()`` sends SIGKILL (crash
tests), ``stop()`` sends SIGTERM and waits (clean shutdown), ``restart()`` starts again on
the same data directory.

The broker imports from this process's ``sys.path`` (``child.command``), so it runs the
amqpbroker this process imported, whatever its working directory (``cwd``) holds;
``command`` starts another, e.g. an installed console script.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading

from .. import child

READY = re.compile(r"amqpbroker ready amqp=(?P<host>[\d.]+):(?P<port>\d+)"
                   r"(?: amqps=[\d.]+:(?P<amqps>\d+))?"
                   r"(?: management=[\d.]+:(?P<management>\d+))?"
                   r"(?: https=[\d.]+:(?P<https>\d+))?"
                   r"(?: prometheus=[\d.]+:(?P<prometheus>\d+))?"
                   r"(?: workers=(?P<workers>[\d,]+))?(?: frontends=(?P<frontends>[\d,]+))?"
                   r"(?: node=(?P<node>\S+) cluster=(?P<cluster>\d+))?"
                   r"(?: mqtt=[\d.]+:(?P<mqtt>\d+))?(?: mqtts=[\d.]+:(?P<mqtts>\d+))?"
                   r"(?: web-mqtt=[\d.]+:(?P<webmqtt>\d+))?"
                   r"(?: stomp=[\d.]+:(?P<stomp>\d+))?(?: stomps=[\d.]+:(?P<stomps>\d+))?"
                   r"(?: web-stomp=[\d.]+:(?P<webstomp>\d+))?"
                   r"(?: stream=[\d.]+:(?P<stream>\d+))?"
                   r"(?: streams=[\d.]+:(?P<streams>\d+))?")

# the two process layouts a test runs a broker in when the layout is what it tests (pytest
# params: ``params=list(LAYOUTS.values()), ids=list(LAYOUTS)``): one process, and a supervisor
# with 2 AMQP front-ends and 2 workers joined by shared-memory rings (``--frontends 0`` named
# too: CI's second pass sets AMQPBROKER_FRONTENDS=2, which would otherwise apply)
LAYOUTS = {"one process": ("--workers", "0", "--frontends", "0"),
           "2 workers + 2 front-ends": ("--workers", "2", "--frontends", "2")}


class BrokerProcess:
    def __init__(self, data_dir, *args: str, management: bool = False, prometheus: bool = False,
                 env: dict | None = None,
                 startup_timeout: float = 30.0, command: list[str] | None = None,
                 cwd: str | os.PathLike | None = None, bind_host: str = "127.0.0.1",
                 wrapper: list[str] | None = None):
        self.data_dir = str(data_dir)
        self.bind_host = bind_host          # with wrapper, e.g. a NetnsLab namespace's
        self.wrapper = list(wrapper or ())  # address and its ``ip netns exec``
        self.args = list(args)
        self.command = command
        self.cwd = cwd
        self.management = management
        self.prometheus = prometheus
        self.prometheus_port = 0            # /metrics, when started with prometheus=True
        self.env = env
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.host = bind_host
        self.port = 0
        self.management_port = 0
        self.tls_port = 0                   # AMQPS and HTTPS, when started with --tls-cert
        self.management_tls_port = 0
        self.output: list[str] = []
        self.worker_pids: list[int] = []
        self.frontend_pids: list[int] = []
        self.node = ""                      # with --cluster: the node's name, cluster port
        self.cluster_port = 0
        self.mqtt_port = 0                  # with --mqtt-port -1 in args
        self.mqtt_tls_port = 0              # with --mqtt-tls-port -1 (and --tls-cert)
        self.web_mqtt_port = 0              # with --web-mqtt-port -1
        self.stomp_port = 0                 # with --stomp-port -1
        self.stomp_tls_port = 0             # with --stomp-tls-port -1 (and --tls-cert)
        self.web_stomp_port = 0             # with --web-stomp-port -1
        self.stream_port = 0                # with --stream-port -1
        self.stream_tls_port = 0            # with --stream-tls-port -1 (and --tls-cert)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    def start(self) -> "BrokerProcess":
        command = self.command or child.command("amqpbroker")
        cmd = [*self.wrapper, *command, "serve", "--host", self.bind_host, "--port", "0",
               "--management-port", "0" if not self.management else "-1",
               # used only with --tls-cert (in args): AMQPS and HTTPS on free ports too
               "--tls-port", "0", "--management-tls-port", "0" if not self.management else "-1",
               "--prometheus-port", "-1" if self.prometheus else "0",
               "--data-dir", self.data_dir, *self.args]
        env = dict(os.environ)
        env.update(self.env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, cwd=self.cwd, start_new_session=True)
        self.port = 0           # a start that dies before "ready" must not look started
        found = threading.Event()

        def pump():
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                self.output.append(line)
                m = READY.search(line)
                if m and not found.is_set():
                    self.host, self.port = m["host"], int(m["port"])
                    self.management_port = int(m["management"] or 0)
                    self.tls_port = int(m["amqps"] or 0)
                    self.management_tls_port = int(m["https"] or 0)
                    self.prometheus_port = int(m["prometheus"] or 0)
                    self.worker_pids = [int(p) for p in (m["workers"] or "").split(",") if p]
                    self.frontend_pids = [int(p) for p in (m["frontends"] or "").split(",")
                                          if p]
                    self.node, self.cluster_port = m["node"] or "", int(m["cluster"] or 0)
                    self.mqtt_port = int(m["mqtt"] or 0)
                    self.mqtt_tls_port = int(m["mqtts"] or 0)
                    self.web_mqtt_port = int(m["webmqtt"] or 0)
                    self.stomp_port = int(m["stomp"] or 0)
                    self.stomp_tls_port = int(m["stomps"] or 0)
                    self.web_stomp_port = int(m["webstomp"] or 0)
                    self.stream_port = int(m["stream"] or 0)
                    self.stream_tls_port = int(m["streams"] or 0)
                    found.set()
            found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(self.startup_timeout) or not self.port:
            self.kill()
            raise RuntimeError("broker did not start:\n" + "".join(self.output))
        return self

    def kill(self) -> None:
        """SIGKILL to the supervisor and its workers at once: a crash, nothing flushed."""
        if self.proc:
            try:        # its own process group (start()): children too, even orphaned ones
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc:
            self.proc.wait(30)
        self._assert_all_gone()

    def save_output(self, path) -> int:
        """Write what the broker printed to ``path`` (the suite runners keep it beside a
        suite's results); the number of lines besides the ready line (at ``--log-level
        error``: its errors)."""
        with open(path, "w") as f:
            f.write("".join(self.output))
        return sum(1 for line in self.output if "amqpbroker ready" not in line)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait: a clean shutdown."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._assert_all_gone()
        return self.proc.returncode if self.proc else None

    def _assert_all_gone(self) -> None:
        """Every process of the broker's session (workers and front-ends, restarted ones too)
        must exit with it: they watch the supervisor's control socket."""
        from .leaks import session_members, wait_gone
        if self.proc is None:
            return
        left = wait_gone(session_members(self.proc.pid), timeout=30)
        assert not left, f"broker processes left behind: {sorted(left)}"

    def api(self, path: str):
        """GET ``/api/<path>`` from the management API (needs ``management=True``)."""
        import base64
        import json
        import urllib.request
        req = urllib.request.Request(
            f"http://{self.host}:{self.management_port}/api/{path}",
            headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def request(self, method: str, path: str, body=None, timeout: float = 30):
        """(status, decoded JSON or None) of ``METHOD /api/<path>`` as guest, with a JSON
        ``body``; 4xx and 5xx are answers, not exceptions (needs ``management=True``)."""
        from .mgmt_client import ManagementClient
        status, value, _ = ManagementClient(f"http://{self.host}:{self.management_port}").request(
            method, f"/api/{path}", "guest", "guest", body=body, timeout=timeout)
        return status, value

    def queue_on_worker(self, ch, index: int, prefix: str) -> str:
        """Declare durable queues ``prefix-i`` on pika channel ``ch`` until one is placed on
        worker ``index``; delete the others (needs ``management=True``)."""
        for i in range(64):
            name = f"{prefix}-{i}"
            ch.queue_declare(name, durable=True)
            if self.api(f"queues/%2F/{name}")["worker"] == index:
                return name
            ch.queue_delete(name)
        raise AssertionError("no queue name hashed to worker %d" % index)

    def restart(self) -> "BrokerProcess":
        self.stop()
        return self.start()

    def __enter__(self) -> "BrokerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
