"""AMQPS and the EXTERNAL mechanism, as RabbitMQ (with rabbitmq_auth_mechanism_ssl) does them.

Against our broker the certificates are made here (trustme) and a broker is started with
them (``--tls-verify peer``). Against another broker, set ``AMQPS_URL``
(``amqps://127.0.0.1:5671``) and ``AMQP_TLS_DIR``: a directory holding ``ca.pem`` (the CA
the broker trusts and its certificate chains to, for ``localhost``), and ``client.pem`` /
``client.key``, a client certificate of that CA; the broker must ask for client
certificates (``ssl_options.verify = verify_peer``) and offer EXTERNAL (``auth_mechanisms``).
"""
from __future__ import annotations

import os
import socket
import ssl
import struct
import urllib.parse
from dataclasses import dataclass

import pika
import pytest
from pamqp import frame as pframe
from pamqp import header as pheader

from amqpbroker.frontend.tls import distinguished_name

from .conftest import q, wait_until

REFUSED = ("ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. For "
           "details see the broker logfile.")


@dataclass
class Target:
    host: str
    port: int               # AMQPS
    ca: str
    cert: str               # a client certificate the broker trusts
    key: str


@pytest.fixture(scope="session")
def tls_target(_own_broker, request):
    if _own_broker is None:
        url, directory = os.environ.get("AMQPS_URL"), os.environ.get("AMQP_TLS_DIR")
        if not (url and directory):
            pytest.fail("the TLS tests need AMQPS_URL and AMQP_TLS_DIR (interop/test_tls.py)")
        u = urllib.parse.urlparse(url)
    else:
        directory = request.getfixturevalue("own_tls_dir")
        u = urllib.parse.urlparse(f"amqps://{_own_broker.host}:{_own_broker.tls_port}")
    return Target(u.hostname, u.port or 5671,
                  *(os.path.join(directory, f) for f in ("ca.pem", "client.pem", "client.key")))


def context(target: Target, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=target.ca)
    if with_cert:
        ctx.load_cert_chain(target.cert, target.key)
    return ctx


def subject(target: Target) -> str:
    """The client certificate's subject as RabbitMQ names its user."""
    return distinguished_name(ssl._ssl._test_decode_cert(target.cert)["subject"])


def params(target: Target, with_cert: bool = True) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        target.host, target.port, credentials=pika.credentials.ExternalCredentials(),
        ssl_options=pika.SSLOptions(context(target, with_cert), "localhost"))


def mechanisms(sock) -> set:
    sock.sendall(pheader.ProtocolHeader().marshal())
    data = b""
    while len(data) < 7 or len(data) < 8 + struct.unpack(">BHI", data[:7])[2]:
        chunk = sock.recv(65536)
        assert chunk, "closed before connection.start"
        data += chunk
    return set(pframe.unmarshal(data)[2].mechanisms.split())


def test_external_is_offered_over_tls_only(tls_target, amqp_host_port):
    with socket.create_connection(amqp_host_port, timeout=10) as plain:
        assert "EXTERNAL" not in mechanisms(plain)
    raw = socket.create_connection((tls_target.host, tls_target.port), timeout=10)
    with context(tls_target).wrap_socket(raw, server_hostname="localhost") as tls:
        assert mechanisms(tls) == {"PLAIN", "AMQPLAIN", "EXTERNAL"}


@pytest.mark.parametrize("with_cert", [True, False], ids=["no-such-user", "no-certificate"])
def test_external_refused(tls_target, mgmt, with_cert):
    mgmt.delete(f"/api/users/{q(subject(tls_target))}")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as exc:
        pika.BlockingConnection(params(tls_target, with_cert))
    assert f"(403) '{REFUSED}'" in str(exc.value)


def test_external_logs_in_as_the_certificate_subject(tls_target, mgmt):
    """The user is named as RabbitMQ names it (``CN=carol,O=Acme``); no password."""
    user = subject(tls_target)
    assert mgmt.put(f"/api/users/{q(user)}", {"tags": ""}) in (201, 204)
    assert mgmt.put(f"/api/permissions/%2F/{q(user)}",
                    {"configure": ".*", "write": ".*", "read": ".*"}) in (201, 204)
    try:
        conn = pika.BlockingConnection(params(tls_target))
        ch = conn.channel()
        ch.queue_declare("tls-interop", auto_delete=True)
        ch.basic_publish("", "tls-interop", b"external")
        assert ch.basic_get("tls-interop", auto_ack=True)[2] == b"external"
        # RabbitMQ lists connections with a few seconds' delay
        wait_until(lambda: any(c["user"] == user and c["auth_mechanism"] == "EXTERNAL"
                               and c["ssl"] for c in mgmt.get("/api/connections")),
                   timeout=15)
        conn.close()
    finally:
        mgmt.delete(f"/api/users/{q(user)}")
