"""Interop suite: real clients against a broker.

By default each test session starts one amqpbroker on free ports (``BrokerProcess``), with its
management HTTP API. Set ``AMQP_URL`` (e.g. ``amqp://guest:guest@127.0.0.1:5672/``) and
``AMQP_MGMT_URL`` (e.g. ``http://guest:guest@127.0.0.1:15672``) to run the very same tests against
any other broker, RabbitMQ included; that is how we check that the tests encode RabbitMQ's
behaviour rather than our own guesses. ``AMQP_MQTT_PORT`` names the external broker's MQTT
port (its rabbitmq_mqtt plugin; default 1883), ``AMQP_WEB_MQTT_PORT`` its MQTT over WebSockets
(rabbitmq_web_mqtt; default 15675), ``AMQP_STOMP_PORT`` its STOMP port (rabbitmq_stomp; default
61613) and ``AMQP_WEB_STOMP_PORT`` its STOMP over WebSockets (rabbitmq_web_stomp; default 15674).
"""
from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pika
import pytest
from pamqp import commands as spec
from pamqp import frame as pframe
from pamqp import header as pheader

from amqpbroker.testing import BrokerProcess


# ---------------------------------------------------------------------------------------------
# The broker under test
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def _own_broker(request, tmp_path_factory):
    """Our broker, started only when no external one is configured. It also serves AMQPS
    (test_tls.py), asking clients for a certificate of ``own_tls_dir``'s CA."""
    if os.environ.get("AMQP_URL"):
        yield None
        return
    pki = request.getfixturevalue("own_tls_dir")
    broker = BrokerProcess(tmp_path_factory.mktemp("broker-data"),
                           "--tls-cert", str(pki / "server.pem"), "--tls-ca", str(pki / "ca.pem"),
                           "--tls-verify", "peer", "--mqtt-port", "-1", "--web-mqtt-port", "-1",
                           "--stomp-port", "-1", "--web-stomp-port", "-1", "--stream-port", "-1",
                           management=True).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def own_tls_dir(tmp_path_factory):
    """A CA (``ca.pem``), our broker's key and chain (``server.pem``) and a client
    certificate of that CA (``client.pem``, ``client.key``), made by trustme."""
    import trustme
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(d / "ca.pem")
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        d / "server.pem")
    client = ca.issue_cert("carol@example.com", common_name="carol", organization_name="Acme")
    client.cert_chain_pems[0].write_to_path(d / "client.pem")
    client.private_key_pem.write_to_path(d / "client.key")
    return d


@pytest.fixture(scope="session")
def broker_url(_own_broker):
    url = os.environ.get("AMQP_URL")
    if url:
        return url
    return _own_broker.url


@pytest.fixture(scope="session")
def mgmt_url(_own_broker, broker_url):
    """Base URL of the management HTTP API, with credentials: ``http://user:pass@host:port``."""
    url = os.environ.get("AMQP_MGMT_URL")
    if url:
        return url.rstrip("/")
    if _own_broker is not None:
        return f"http://guest:guest@{_own_broker.host}:{_own_broker.management_port}"
    # An external broker without AMQP_MGMT_URL: RabbitMQ's default management port.
    u = urllib.parse.urlparse(broker_url)
    return f"http://{u.username or 'guest'}:{u.password or 'guest'}@{u.hostname}:15672"


@pytest.fixture(scope="session")
def amqp_host_port(broker_url):
    u = urllib.parse.urlparse(broker_url)
    return u.hostname, u.port or 5672


def _plugin_address(own, attr: str, amqp_host_port, env: str, default: int) -> tuple:
    """(host, port) of a plugin's listener: our broker's, or ``env`` (RabbitMQ's default
    port) on the external broker's host."""
    if own is not None:
        return own.host, getattr(own, attr)
    return amqp_host_port[0], int(os.environ.get(env, str(default)))


@pytest.fixture(scope="session")
def mqtt_address(_own_broker, amqp_host_port):
    """(host, port) of the MQTT listener: ours, or ``AMQP_MQTT_PORT`` (default 1883) of the
    external broker, whose rabbitmq_mqtt plugin is enabled (test_mqtt_plugin.py)."""
    return _plugin_address(_own_broker, "mqtt_port", amqp_host_port, "AMQP_MQTT_PORT", 1883)


@pytest.fixture(scope="session")
def web_mqtt_address(_own_broker, amqp_host_port):
    """(host, port) of MQTT over WebSockets (path /ws): ours, or ``AMQP_WEB_MQTT_PORT``
    (default 15675) of the external broker's rabbitmq_web_mqtt plugin."""
    return _plugin_address(_own_broker, "web_mqtt_port", amqp_host_port, "AMQP_WEB_MQTT_PORT",
                           15675)


@pytest.fixture(scope="session")
def stomp_address(_own_broker, amqp_host_port):
    """(host, port) of the STOMP listener: ours, or ``AMQP_STOMP_PORT`` (default 61613) of
    the external broker, whose rabbitmq_stomp plugin is enabled (test_stomp_plugin.py)."""
    return _plugin_address(_own_broker, "stomp_port", amqp_host_port, "AMQP_STOMP_PORT", 61613)


@pytest.fixture(scope="session")
def stream_address(_own_broker, amqp_host_port):
    """(host, port) of the stream protocol listener: ours, or ``AMQP_STREAM_PORT`` (default
    5552) of the external broker, whose rabbitmq_stream plugin is enabled
    (test_stream_protocol.py)."""
    return _plugin_address(_own_broker, "stream_port", amqp_host_port, "AMQP_STREAM_PORT", 5552)


@pytest.fixture(scope="session")
def web_stomp_address(_own_broker, amqp_host_port):
    """(host, port) of STOMP over WebSockets (path /ws): ours, or ``AMQP_WEB_STOMP_PORT``
    (default 15674) of the external broker's rabbitmq_web_stomp plugin."""
    return _plugin_address(_own_broker, "web_stomp_port", amqp_host_port,
                           "AMQP_WEB_STOMP_PORT", 15674)


@pytest.fixture
def uniq():
    """A name unique to this test, so tests can share one broker without clashing."""
    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"
    return make


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def wait_until(cond, timeout: float = 5.0, interval: float = 0.01, message: str = ""):
    """Poll ``cond()`` until it returns a truthy value (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s {message}".strip())
        time.sleep(interval)


def url_with(broker_url: str, *, user: str | None = None, password: str | None = None,
             vhost: str | None = None, query: str = "") -> str:
    """``broker_url`` with other credentials and/or virtual host."""
    u = urllib.parse.urlparse(broker_url)
    user = u.username if user is None else user
    password = u.password if password is None else password
    path = u.path if vhost is None else "/" + urllib.parse.quote(vhost, safe="")
    netloc = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@{u.hostname}:{u.port or 5672}"
    return urllib.parse.urlunparse((u.scheme, netloc, path, "", query, ""))


class Mgmt:
    """A tiny client for the management HTTP API (urllib, basic auth, JSON)."""

    def __init__(self, base: str):
        u = urllib.parse.urlparse(base)
        self.base = f"{u.scheme}://{u.hostname}:{u.port}"
        cred = f"{urllib.parse.unquote(u.username or 'guest')}:{urllib.parse.unquote(u.password or 'guest')}"
        self.auth = "Basic " + base64.b64encode(cred.encode()).decode()

    def request(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", self.auth)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)

    def get(self, path):
        return self.request("GET", path)[1]

    def put(self, path, body):
        return self.request("PUT", path, body)[0]

    def delete(self, path):
        try:
            return self.request("DELETE", path)[0]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return 404
            raise


def q(name: str) -> str:
    """Quote one path segment of the management API (vhost '/' is '%2F')."""
    return urllib.parse.quote(name, safe="")


@pytest.fixture(scope="session")
def mgmt(mgmt_url):
    return Mgmt(mgmt_url)


# ---------------------------------------------------------------------------------------------
# Client fixtures
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def params(broker_url):
    return pika.URLParameters(broker_url)


@pytest.fixture
def connect(broker_url):
    """Open pika BlockingConnections that are closed at teardown."""
    opened: list[pika.BlockingConnection] = []

    def make(url: str | None = None, **kw) -> pika.BlockingConnection:
        p = pika.URLParameters(url or broker_url)
        for k, v in kw.items():
            setattr(p, k, v)
        c = pika.BlockingConnection(p)
        opened.append(c)
        return c

    yield make
    for c in opened:
        if c.is_open:
            c.close()


@pytest.fixture
def conn(connect):
    return connect()


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def cleanup(connect):
    """Register queues/exchanges to delete at teardown (on a fresh connection)."""
    queues: list[str] = []
    exchanges: list[str] = []

    class Reg:
        def queue(self, name):
            queues.append(name)
            return name

        def exchange(self, name):
            exchanges.append(name)
            return name

    yield Reg()
    if queues or exchanges:
        c = connect()
        for name in queues:
            c.channel().queue_delete(name)
        for name in exchanges:
            c.channel().exchange_delete(name)


@pytest.fixture
async def aconn(broker_url):
    import aiormq
    c = await aiormq.connect(broker_url)
    yield c
    if not c.is_closed:
        await c.close()


@pytest.fixture
async def achannel(aconn):
    return await aconn.channel()


def bodies(ch, queue: str) -> list[bytes]:
    """basic.get (auto-ack) until the queue is empty: the bodies, in order."""
    out = []
    while True:
        m, _, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append(body)


def reject_all(ch, queue: str, n: int, requeue: bool = False) -> None:
    """basic.get ``n`` messages (each must be there) and reject each."""
    for _ in range(n):
        method, _, _ = ch.basic_get(queue)
        assert method is not None
        ch.basic_reject(method.delivery_tag, requeue=requeue)


def drain(ch, queue: str, n: int, timeout: float = 5.0, auto_ack: bool = True):
    """basic.get until ``n`` messages have been received (or fail at the deadline)."""
    got = []

    def step():
        while len(got) < n:
            m, props, body = ch.basic_get(queue, auto_ack=auto_ack)
            if m is None:
                return False
            got.append((m, props, body))
        return True

    wait_until(step, timeout, message=f"waiting for {n} messages on {queue}, got {len(got)}")
    return got


# ---------------------------------------------------------------------------------------------
# A raw AMQP peer, for what no well-behaved client sends
# ---------------------------------------------------------------------------------------------

AMQP_091_HEADER = b"AMQP\x00\x00\x09\x01"
# Without this capability RabbitMQ closes the socket on a failed login without connection.close.
CLIENT_PROPERTIES = {"product": "interop-raw", "capabilities": {"authentication_failure_close": True}}


class RawAMQP:
    """A blocking AMQP 0-9-1 peer over a plain socket."""

    def __init__(self, host: str, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def send_method(self, channel: int, method):
        self.send(pframe.marshal(method, channel))

    def recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise EOFError(f"connection closed by peer with {self.buf!r} buffered")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def recv_frame(self):
        """(channel, frame) for the next frame; heartbeats are returned too."""
        head = self.recv_exact(7)
        _, _, size = struct.unpack(">BHI", head)
        rest = self.recv_exact(size + 1)
        _, channel, value = pframe.unmarshal(head + rest)
        return channel, value

    def recv_method(self):
        while True:
            channel, value = self.recv_frame()
            if value.name != "Heartbeat":
                return channel, value

    def read_to_eof(self) -> bytes:
        data = self.buf
        self.buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:  # RabbitMQ often resets rather than FINs after an error
                return data
            if not chunk:
                return data
            data += chunk

    def handshake(self, user="guest", password="guest", vhost="/", channel_max=0,
                  frame_max=131072, heartbeat=0, client_properties=None):
        self.send(pheader.ProtocolHeader().marshal())
        _, start = self.recv_method()
        assert start.name == "Connection.Start"
        self.send_method(0, spec.Connection.StartOk(
            client_properties=client_properties or CLIENT_PROPERTIES, mechanism="PLAIN",
            response=f"\0{user}\0{password}", locale="en_US"))
        _, tune = self.recv_method()
        assert tune.name == "Connection.Tune"
        self.send_method(0, spec.Connection.TuneOk(channel_max=channel_max or tune.channel_max,
                                                   frame_max=frame_max, heartbeat=heartbeat))
        self.send_method(0, spec.Connection.Open(virtual_host=vhost))
        self.last = self.recv_method()
        _, ok = self.last
        assert ok.name == "Connection.OpenOk"
        return start, tune


@pytest.fixture
def raw(amqp_host_port):
    peers: list[RawAMQP] = []

    def make() -> RawAMQP:
        p = RawAMQP(*amqp_host_port)
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.close()


async def await_until(cond, timeout: float = 5.0, interval: float = 0.01, message: str = ""):
    """The asyncio twin of ``wait_until``: poll ``cond()`` while letting the loop run."""
    import asyncio
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s {message}".strip())
        await asyncio.sleep(interval)
