"""A stand-in for the Docker Engine API, enough for aiormq's and aio-pika's test fixtures.

Their conftests start RabbitMQ with Docker (``tests/docker_client.py``: pull, create, start,
inspect, kill, remove) and refuse to run when no Docker daemon answers at ``DOCKER_HOST``.
``run.py`` points ``DOCKER_HOST=tcp://127.0.0.1:<port>`` at this server instead, so their test
code runs unpatched: every "container" is the broker under test, whose AMQP port ``inspect``
reports as the mapping of ``5672/tcp``. Killing or removing a container changes nothing, and
``exec`` (``rabbitmqctl`` inside the container) is answered 501: the few tests that restart or
reconfigure RabbitMQ itself fail here, against any broker.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class DockerStandIn:
    def __init__(self, amqp_port: int):
        self.amqp_port = amqp_port
        self._ids = itertools.count(1)
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body=None):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?")[0]
                if path == "/images/create":
                    return self._reply(200, {"status": "stand-in: nothing to pull"})
                if path == "/containers/create":
                    return self._reply(201, {"Id": f"stand-in-{next(stand_in._ids)}"})
                if re.fullmatch(r"/containers/[^/]+/(start|stop|kill|restart)", path):
                    return self._reply(204)
                return self._reply(501, {"message": f"{path}: not supported by the stand-in"})

            def do_GET(self):
                path = self.path.split("?")[0]
                if re.fullmatch(r"/containers/[^/]+/json", path):
                    port = [{"HostIp": "127.0.0.1", "HostPort": str(stand_in.amqp_port)}]
                    return self._reply(200, {"State": {"Running": True},
                                             "NetworkSettings": {"Ports": {"5672/tcp": port}}})
                if path == "/_ping":
                    return self._reply(200, "OK")
                return self._reply(501, {"message": f"{path}: not supported by the stand-in"})

            def do_DELETE(self):
                return self._reply(204)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "DockerStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()
