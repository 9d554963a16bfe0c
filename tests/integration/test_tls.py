"""AMQPS, HTTPS and the EXTERNAL mechanism, with certificates made here (trustme).

pika, aio-pika and kombu connect over TLS, with PLAIN and with EXTERNAL (the user named by
the client certificate's subject, as rabbitmq_auth_mechanism_ssl names it), in both process
layouts: the supervisor serving AMQP itself, and front-end processes that inherit the TLS
listening socket. Peer verification refuses certificates of another CA and, when asked,
clients without one.
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import json
import socket
import ssl
import struct
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
import trustme
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from amqpbroker import child
from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import wait_until

ALICE = "CN=alice,OU=dev,O=Example Org"        # RabbitMQ's string of her certificate's subject


@dataclass
class Cert:
    cert: str
    key: str


@dataclass
class PKI:
    ca: str                 # the CA the broker trusts
    server: str             # the broker's key and certificate chain, one file
    alice: Cert             # a user of the broker
    bob: Cert               # signed by the CA, but no such user
    mallory: Cert           # alice's subject, signed by another CA


def _leaf(ca: trustme.CA, directory: Path, name: str, **subject) -> Cert:
    leaf = ca.issue_cert(f"{name}@example.com", **subject)
    leaf.cert_chain_pems[0].write_to_path(directory / f"{name}.pem")
    leaf.private_key_pem.write_to_path(directory / f"{name}.key")
    return Cert(str(directory / f"{name}.pem"), str(directory / f"{name}.key"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(d / "ca.pem")
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        d / "server.pem")
    alice = dict(common_name="alice", organization_unit_name="dev",
                 organization_name="Example Org")
    return PKI(str(d / "ca.pem"), str(d / "server.pem"), _leaf(ca, d, "alice", **alice),
               _leaf(ca, d, "bob", common_name="bob"),
               _leaf(other_ca, d, "mallory", **alice))


def client_context(pki: PKI, cert: Cert | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca)
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


def api(broker, pki, method: str, path: str, body=None, user: str = "guest"):
    """The management API over HTTPS, the broker's certificate checked."""
    req = urllib.request.Request(
        f"https://localhost:{broker.management_tls_port}/api/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(f"{user}:{user}".encode()).decode(),
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=client_context(pki), timeout=10) as r:
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)


def add_user(broker, pki, name: str) -> None:
    quoted = urllib.parse.quote(name, safe="")
    assert api(broker, pki, "PUT", f"users/{quoted}", {"tags": ""})[0] == 201
    assert api(broker, pki, "PUT", f"permissions/%2F/{quoted}",
               {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201


def tls_broker(tmp_path_factory, pki, *args, **kw) -> BrokerProcess:
    return BrokerProcess(tmp_path_factory.mktemp("tls-data"), "--tls-cert", pki.server,
                         "--tls-ca", pki.ca, *args, management=True, **kw)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def broker(request, pki, tmp_path_factory):
    """Peer verification on (clients may come without a certificate); alice is a user."""
    with tls_broker(tmp_path_factory, pki, "--tls-verify", "peer", "--mqtt-tls-port", "-1",
                    "--stomp-tls-port", "-1", "--stream-tls-port", "-1",
                    *LAYOUTS[request.param]) as b:
        assert b.tls_port and b.management_tls_port
        assert len(b.frontend_pids) == (2 if request.param == "2 workers + 2 front-ends" else 0)
        add_user(b, pki, ALICE)
        yield b


def pika_params(broker, pki, cert: Cert | None = None, external: bool = False):
    credentials = (pika.credentials.ExternalCredentials() if external
                   else pika.PlainCredentials("guest", "guest"))
    return pika.ConnectionParameters(
        "127.0.0.1", broker.tls_port, credentials=credentials,
        ssl_options=pika.SSLOptions(client_context(pki, cert), "localhost"))


def round_trip(conn: pika.BlockingConnection, queue: str) -> bytes:
    ch = conn.channel()
    ch.queue_declare(queue, auto_delete=True)
    ch.basic_publish("", queue, b"over tls")
    _, _, body = ch.basic_get(queue, auto_ack=True)
    return body


def connection_of(broker, pki, name: str) -> dict:
    [c] = [c for c in api(broker, pki, "GET", "connections")[1]
           if c["client_properties"].get("connection_name") == name]
    return c


def assert_external(broker, pki, product: str) -> None:
    """The client's one connection is TLS, logged in by EXTERNAL as alice."""
    [c] = [c for c in api(broker, pki, "GET", "connections")[1]
           if c["client_properties"].get("product") == product]
    assert (c["ssl"], c["auth_mechanism"], c["user"]) == (True, "EXTERNAL", ALICE)


# ------------------------------------------------------------------------- AMQPS
def test_pika_plain_login_over_tls(broker, pki):
    params = pika_params(broker, pki)
    params.client_properties = {"connection_name": "plain-tls"}
    conn = pika.BlockingConnection(params)
    try:
        assert round_trip(conn, "tls-plain") == b"over tls"
        c = connection_of(broker, pki, "plain-tls")
        assert (c["ssl"], c["auth_mechanism"], c["user"]) == (True, "PLAIN", "guest")
    finally:
        conn.close()


def test_pika_external_logs_in_as_the_certificate_subject(broker, pki):
    params = pika_params(broker, pki, pki.alice, external=True)
    params.client_properties = {"connection_name": "alice-tls"}
    conn = pika.BlockingConnection(params)
    try:
        assert round_trip(conn, "tls-alice") == b"over tls"
        c = connection_of(broker, pki, "alice-tls")
        assert (c["ssl"], c["auth_mechanism"], c["user"]) == (True, "EXTERNAL", ALICE)
    finally:
        conn.close()


@pytest.mark.parametrize("who", ["bob", None])
def test_external_is_refused_without_a_user_or_a_certificate(broker, pki, who):
    """bob's certificate is good but names no user; without a certificate EXTERNAL is still
    offered (as RabbitMQ does) and refused."""
    cert = pki.bob if who else None
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as exc:
        pika.BlockingConnection(pika_params(broker, pki, cert, external=True))
    assert ("(403) 'ACCESS_REFUSED - Login was refused using authentication mechanism "
            "EXTERNAL. For details see the broker logfile.'") in str(exc.value)


def start_of(sock) -> C.Connection.Start:
    sock.sendall(pheader.ProtocolHeader().marshal())
    data = b""
    while len(data) < 7 or len(data) < 8 + struct.unpack(">BHI", data[:7])[2]:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed before connection.start: {data!r}")
        data += chunk
    return pframe.unmarshal(data)[2]


def test_external_is_offered_on_tls_connections_only(broker, pki):
    plain = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    with plain:
        assert start_of(plain).mechanisms.split() == ["PLAIN", "AMQPLAIN"]
        # asked for anyway, it is refused as RabbitMQ refuses it: the socket closes
        plain.sendall(pframe.marshal(C.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism="EXTERNAL", response="", locale="en_US"), 0))
        assert plain.recv(65536) == b""
    raw = socket.create_connection(("127.0.0.1", broker.tls_port), timeout=10)
    with client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls:
        assert start_of(tls).mechanisms.split() == ["PLAIN", "AMQPLAIN", "EXTERNAL"]


def test_a_certificate_of_another_ca_fails_the_handshake(broker, pki):
    """mallory claims alice's subject, signed by a CA the broker does not trust: no
    connection.start ever comes. (With TLS 1.3 the server checks the client's certificate
    after the client's side of the handshake is done, so the refusal shows at the first read,
    as an alert or as the socket closing.)"""
    raw = socket.create_connection(("127.0.0.1", broker.tls_port), timeout=10)
    with client_context(pki, pki.mallory).wrap_socket(raw, server_hostname="localhost") as tls:
        with pytest.raises((ssl.SSLError, ConnectionResetError, EOFError)):
            start_of(tls)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika_params(broker, pki, pki.mallory, external=True))


def test_aio_pika_external_over_tls(broker, pki):
    import aio_pika

    async def main() -> bytes:
        url = (f"amqps://127.0.0.1:{broker.tls_port}/?auth=external&cafile={pki.ca}"
               f"&certfile={pki.alice.cert}&keyfile={pki.alice.key}")
        ctx = client_context(pki, pki.alice)
        ctx.check_hostname = False          # the URL names 127.0.0.1, the certificate both
        conn = await aio_pika.connect(url, ssl_context=ctx)
        async with conn:
            ch = await conn.channel()
            queue = await ch.declare_queue("tls-aio", auto_delete=True)
            await ch.default_exchange.publish(aio_pika.Message(b"aio over tls"), "tls-aio")
            assert_external(broker, pki, "aiormq")
            message = await queue.get(timeout=5)
            await message.ack()
            return message.body
    assert asyncio.run(main()) == b"aio over tls"


def test_kombu_external_over_tls(broker, pki):
    import kombu
    sslopts = {"ca_certs": pki.ca, "certfile": pki.alice.cert, "keyfile": pki.alice.key,
               "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": "localhost"}
    with kombu.Connection(f"amqp://127.0.0.1:{broker.tls_port}//", ssl=sslopts,
                          login_method="EXTERNAL") as conn:
        queue = kombu.Queue("tls-kombu", auto_delete=True)
        conn.connect()
        assert_external(broker, pki, "py-amqp")
        with conn.Producer() as producer:
            producer.publish({"over": "tls"}, routing_key="tls-kombu", declare=[queue])
        with conn.SimpleQueue(queue) as sq:
            message = sq.get(timeout=5)
            message.ack()
            assert message.payload == {"over": "tls"}


# ------------------------------------------------------------------------- HTTPS
def test_management_answers_over_https_and_http(broker, pki):
    status, overview = api(broker, pki, "GET", "overview")
    assert status == 200 and overview["product_name"] == "amqpbroker"
    assert broker.api("whoami")["name"] == "guest"          # plain HTTP still serves


def test_the_certificate_expiration_check_reads_the_listeners_certificates(tmp_path_factory,
                                                                          pki):
    """RabbitMQ's ``/api/health/checks/certificate-expiration/{within}/{unit}``: a server
    certificate that expires in 10 days passes a 1-week check and fails a 2-week one, naming
    both TLS listeners and the date; the CA (year 3000) fails only a 1000-year one."""
    d = tmp_path_factory.mktemp("short-pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(d / "ca.pem")
    ends = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + \
        datetime.timedelta(days=10)
    ca.issue_cert("localhost", "127.0.0.1", not_after=ends) \
        .private_key_and_cert_chain_pem.write_to_path(d / "server.pem")
    short = PKI(str(d / "ca.pem"), str(d / "server.pem"), pki.alice, pki.bob, pki.mallory)

    def check(within: str):
        try:
            return api(b, short, "GET", f"health/checks/certificate-expiration/{within}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())
    with tls_broker(tmp_path_factory, short) as b:
        assert check("1/weeks") == (200, {"status": "ok"})
        status, body = check("2/weeks")
        assert (status, body["status"], body["reason"]) == (503, "failed",
                                                            "Certificates expiring")
        when = f"{ends.year}-{ends.month:02d}-{ends.day:02d} {ends.hour}:{ends.minute:02d}:" \
               f"{ends.second:02d}"
        assert sorted((e["protocol"], e["port"], e["certfile_expires_on"],
                       e["cacertfile_expires_on"]) for e in body["expired"]) == [
            ("amqp/ssl", b.tls_port, [when], []), ("https", b.management_tls_port, [when], [])]
        status, body = check("1000/years")
        assert status == 503 and body["expired"][0]["cacertfile_expires_on"] == [
            "3000-01-01 0:00:00"]
        assert check("2/fortnights") == (400, {
            "error": "bad_request",
            "reason": "Time unit not recognised. Supported units: days, weeks, months, years."})


# ------------------------------------------------------------------------- options
def test_fail_if_no_peer_cert_refuses_clients_without_one(tmp_path_factory, pki):
    with tls_broker(tmp_path_factory, pki, "--tls-verify", "peer",
                    "--tls-fail-if-no-peer-cert") as b:
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(pika_params(b, pki))
        conn = pika.BlockingConnection(pika_params(b, pki, pki.alice))      # PLAIN, with one
        assert round_trip(conn, "tls-required") == b"over tls"
        conn.close()


def test_without_peer_verification_no_certificate_is_asked_for(tmp_path_factory, pki):
    """The default, --tls-verify none: TLS for privacy only; a client certificate is never
    asked for, so EXTERNAL has nothing to log in with."""
    with BrokerProcess(tmp_path_factory.mktemp("tls-data"), "--tls-cert", pki.server,
                       management=True) as b:
        add_user(b, pki, ALICE)
        conn = pika.BlockingConnection(pika_params(b, pki))
        assert round_trip(conn, "tls-noverify") == b"over tls"
        conn.close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika_params(b, pki, pki.alice, external=True))


def test_login_from_common_name(tmp_path_factory, pki):
    with tls_broker(tmp_path_factory, pki, "--tls-verify", "peer",
                    "--tls-login-from", "common_name") as b:
        add_user(b, pki, "alice")
        params = pika_params(b, pki, pki.alice, external=True)
        params.client_properties = {"connection_name": "alice-cn"}
        conn = pika.BlockingConnection(params)
        assert connection_of(b, pki, "alice-cn")["user"] == "alice"
        conn.close()


def test_tls_flags_from_the_environment(tmp_path, pki):
    env = {"AMQPBROKER_TLS_CERT": pki.server, "AMQPBROKER_TLS_CA": pki.ca,
           "AMQPBROKER_TLS_VERIFY": "peer", "AMQPBROKER_TLS_FAIL_IF_NO_PEER_CERT": "true"}
    with BrokerProcess(tmp_path, env=env) as b:
        assert b.tls_port
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(pika_params(b, pki))
        conn = pika.BlockingConnection(pika_params(b, pki, pki.alice))
        conn.close()


@pytest.mark.parametrize("flags, says", [
    (["--tls-cert", "/nonexistent/server.pem"], "No such file or directory"),
    (["--tls-cert", "{server}", "--tls-verify", "peer"], "--tls-verify peer needs --tls-ca"),
    (["--tls-cert", "{server}", "--tls-fail-if-no-peer-cert"],
     "--tls-fail-if-no-peer-cert needs --tls-verify peer"),
])
def test_a_bad_tls_setting_stops_the_start_in_one_line(tmp_path, pki, flags, says):
    flags = [f.format(server=pki.server) for f in flags]
    out = subprocess.run([*child.command("amqpbroker"), "serve", "--port", "0",
                          "--management-port", "0", "--data-dir", str(tmp_path), *flags],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "cannot start:" in out.stderr and says in out.stderr, out.stderr


def test_mqtt_over_tls(broker, pki):
    """MQTT on its TLS port (``--mqtt-tls-port``, RabbitMQ's mqtt.listeners.ssl), the
    broker's certificate checked by paho; messages cross to AMQPS clients."""
    from amqpbroker.testing.mqtt_clients import Client
    assert broker.mqtt_tls_port and not broker.mqtt_port        # only the TLS one was asked
    sub = Client(("127.0.0.1", broker.mqtt_tls_port), "tls-sub", tls=client_context(pki))
    try:
        assert sub.connack[1] == 0
        assert sub.subscribe(("secure/+", 1)) == [1]
        with pika.BlockingConnection(pika_params(broker, pki)) as conn:
            conn.channel().basic_publish("amq.topic", "secure.line", b"over tls both ways")
        (m,) = sub.take()
        assert (m.topic, m.payload) == ("secure/line", b"over tls both ways")
    finally:
        sub.close()
    listeners = api(broker, pki, "GET", "overview")[1]["listeners"]
    assert ("mqtt/ssl", broker.mqtt_tls_port) in [(x["protocol"], x["port"]) for x in listeners]


def test_stomp_over_tls(broker, pki):
    """STOMP on its TLS port (``--stomp-tls-port``, RabbitMQ's stomp.listeners.ssl), the
    broker's certificate checked by the client; messages cross to AMQPS clients."""
    import socket as socketlib
    from amqpbroker.stomp.frames import Parser, serialize
    assert broker.stomp_tls_port and not broker.stomp_port      # only the TLS one was asked
    raw = socketlib.create_connection(("127.0.0.1", broker.stomp_tls_port), timeout=15)
    s = client_context(pki).wrap_socket(raw, server_hostname="localhost")
    parser, frames = Parser(1 << 20, every_length=True), []

    def read():
        while not frames:
            frames.extend(parser.feed(s.recv(65536)))
        return frames.pop(0)
    try:
        s.sendall(serialize("CONNECT", [("accept-version", "1.2"), ("host", "/"),
                                        ("login", "guest"), ("passcode", "guest")]))
        assert read().command == "CONNECTED"
        s.sendall(serialize("SUBSCRIBE", [("destination", "/topic/secure.*"), ("id", "1"),
                                          ("receipt", "r")]))
        assert read().headers["receipt-id"] == "r"
        with pika.BlockingConnection(pika_params(broker, pki)) as conn:
            conn.channel().basic_publish("amq.topic", "secure.stomp", b"over tls both ways")
        m = read()
        assert (m.headers["destination"], m.body) == ("/topic/secure.stomp",
                                                      b"over tls both ways")
    finally:
        s.close()
    listeners = api(broker, pki, "GET", "overview")[1]["listeners"]
    assert ("stomp/ssl", broker.stomp_tls_port) in [(x["protocol"], x["port"])
                                                    for x in listeners]


def stomp_connect(broker, pki, cert: Cert | None, headers: list) -> tuple:
    """A STOMP CONNECT over TLS with ``cert``: (the answer frame, the socket, its reader)."""
    import socket as socketlib
    from amqpbroker.stomp.frames import Parser, serialize
    raw = socketlib.create_connection(("127.0.0.1", broker.stomp_tls_port), timeout=15)
    s = client_context(pki, cert).wrap_socket(raw, server_hostname="localhost")
    parser, frames = Parser(1 << 20, every_length=True), []

    def read():
        while not frames:
            frames.extend(parser.feed(s.recv(65536)))
        return frames.pop(0)
    s.sendall(serialize("CONNECT", [("accept-version", "1.2"), ("host", "/"), *headers]))
    return read(), s, read


def test_mqtt_and_stomp_log_in_by_certificate(tmp_path_factory, pki):
    """RabbitMQ's mqtt.ssl_cert_login and stomp.ssl_cert_login: a client on TLS that sends
    no credentials is its certificate's user (here its CN), with no password; credentials
    sent still win; a certificate of no user is refused."""
    from amqpbroker.testing.mqtt_clients import Client
    with tls_broker(tmp_path_factory, pki, "--tls-verify", "peer", "--tls-login-from",
                    "common_name", "--mqtt-tls-port", "-1", "--stomp-tls-port", "-1",
                    "--mqtt-ssl-cert-login", "--stomp-ssl-cert-login") as b:
        add_user(b, pki, "alice")

        def users(protocol: str) -> list:
            return sorted(c["user"] for c in api(b, pki, "GET", "connections")[1]
                          if c["protocol"].startswith(protocol))
        alice = Client(("127.0.0.1", b.mqtt_tls_port), "by-cert", username=None,
                       tls=client_context(pki, pki.alice))
        guest = Client(("127.0.0.1", b.mqtt_tls_port), "by-password",
                       tls=client_context(pki, pki.alice))
        try:
            assert alice.connack[1] == 0 and guest.connack[1] == 0
            wait_until(lambda: users("MQTT") == ["alice", "guest"], 10, "two MQTT logins")
        finally:
            alice.close()
            guest.close()
        bob = Client(("127.0.0.1", b.mqtt_tls_port), "no-such-user", username=None,
                     tls=client_context(pki, pki.bob))
        try:
            assert bob.connack[1] == 134    # paho's code for 3.1.1's 4: bad user name or password
        finally:
            bob.close()

        connected, s, _ = stomp_connect(b, pki, pki.alice, [])
        assert connected.command == "CONNECTED"
        wait_until(lambda: users("STOMP") == ["alice"], 10, "a STOMP login as alice")
        s.close()
        connected, s, _ = stomp_connect(b, pki, pki.alice, [("login", "guest"),
                                                            ("passcode", "guest")])
        assert connected.command == "CONNECTED"
        s.close()
        refused, s, _ = stomp_connect(b, pki, pki.bob, [])
        assert (refused.command, refused.headers["message"]) == ("ERROR", "Bad CONNECT")
        assert refused.body == b"Access refused for user 'bob'\n"
        s.close()

        # RabbitMQ's global parameter mqtt_default_vhosts: a certificate's vhost
        assert api(b, pki, "PUT", "vhosts/by-cert")[0] == 201
        assert api(b, pki, "PUT", "permissions/by-cert/alice",
                   {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
        assert api(b, pki, "PUT", "global-parameters/mqtt_default_vhosts", {
            "name": "mqtt_default_vhosts", "value": {"alice": "by-cert"}})[0] in (201, 204)
        mapped = Client(("127.0.0.1", b.mqtt_tls_port), "mapped", username=None,
                        tls=client_context(pki, pki.alice))
        try:
            assert mapped.connack[1] == 0
            wait_until(lambda: [(c["user"], c["vhost"]) for c in
                                api(b, pki, "GET", "connections")[1]
                                if c["protocol"].startswith("MQTT")] == [("alice", "by-cert")],
                       10, "alice in her certificate's vhost")
        finally:
            mapped.close()


def test_without_the_setting_a_certificate_logs_nobody_in(broker, pki):
    """The default (as RabbitMQ's): no credentials over MQTT is the anonymous default user
    (guest), whatever the certificate says."""
    from amqpbroker.testing.mqtt_clients import Client
    c = Client(("127.0.0.1", broker.mqtt_tls_port), "anonymous-tls", username=None,
               tls=client_context(pki, pki.alice))
    try:
        assert c.connack[1] == 0
        wait_until(lambda: [x["user"] for x in api(broker, pki, "GET", "connections")[1]
                            if x["protocol"].startswith("MQTT")] == ["guest"], 10,
                   "the anonymous login")
    finally:
        c.close()


async def test_stream_protocol_over_tls_with_a_password_and_a_certificate(broker, pki):
    """The stream protocol on its TLS port (``--stream-tls-port``, RabbitMQ's
    stream.listeners.ssl): rstream with the broker's certificate checked, logged in by
    password; then by its client certificate (SASL EXTERNAL, offered only to a client that
    sent one), as alice; a certificate of no user is refused (0x08)."""
    from rstream import Consumer, Producer, SlasMechanism
    from rstream.exceptions import AuthenticationFailure
    assert broker.stream_tls_port and not broker.stream_port
    stream = "tls-stream"
    async with Producer("localhost", broker.stream_tls_port, username="guest",
                        password="guest", ssl_context=client_context(pki)) as p:
        await p.create_stream(stream, exists_ok=True)
        await p.send_wait(stream, b"over tls")
    async with Consumer("localhost", broker.stream_tls_port, username="", password="",
                        ssl_context=client_context(pki, pki.alice),
                        sasl_configuration_mechanism=SlasMechanism.MechanismExternal) as c:
        await c.start()
        client = await c.default_client
        assert await client.query_leader_and_replicas(stream)
        assert (ALICE, "stream") in [(x["user"], x["protocol"]) for x in
                                     api(broker, pki, "GET", "connections")[1]]
    with pytest.raises(AuthenticationFailure):
        async with Consumer("localhost", broker.stream_tls_port, username="", password="",
                            ssl_context=client_context(pki, pki.bob),
                            sasl_configuration_mechanism=SlasMechanism.MechanismExternal) as c:
            await c.start()


def test_amqp10_over_tls(broker, pki):
    """An AMQP 1.0 client on the AMQPS port (qpid-proton, the broker's certificate checked):
    handed over after the TLS handshake as on the plain port; messages cross to pika."""
    from proton import Message, SSLDomain
    from proton.utils import BlockingConnection
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    domain.set_trusted_ca_db(pki.ca)
    domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
    conn = BlockingConnection(f"amqps://guest:guest@localhost:{broker.tls_port}", timeout=15,
                              ssl_domain=domain, allowed_mechs="PLAIN")
    try:
        conn.create_sender("/queue/tls-amqp10").send(Message(body="amqp 1.0 over tls"))
        shown = wait_until(lambda: [x for x in api(broker, pki, "GET", "connections")[1]
                                    if x.get("protocol") == "AMQP 1-0"], 10,
                           "the AMQP 1.0 connection listed")
        assert [x["ssl"] for x in shown] == [True]
    finally:
        conn.close()
    with pika.BlockingConnection(pika_params(broker, pki)) as c:
        _, _, body = c.channel().basic_get("tls-amqp10", auto_ack=True)
        c.channel().queue_delete("tls-amqp10")
    assert body == b"amqp 1.0 over tls"
