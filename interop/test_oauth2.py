"""The OAuth 2 backend (RabbitMQ's ``rabbitmq_auth_backend_oauth2``): JWTs as passwords,
their scopes as permissions, refreshed with ``connection.update-secret``, and taken by the
management API, with the refusals RabbitMQ words.

Against ours, the module starts a broker with ``--auth-backends oauth2,internal`` and a key
it makes. Against another broker (``AMQP_URL`` / ``AMQP_MGMT_URL``), ``AMQP_OAUTH2_KEY``
names the PEM private key whose public half that broker trusts as signing key ``k1``, with
resource server id ``rabbitmq`` and vhost ``oauth-other`` present; every test here passes
against RabbitMQ 3.10.8 so configured (``auth_backends.1 = rabbit_auth_backend_oauth2``,
``auth_backends.2 = rabbit_auth_backend_internal``, ``auth_oauth2.resource_server_id =
rabbitmq``, ``auth_oauth2.default_key = k1``, ``auth_oauth2.signing_keys.k1 = <public
PEM>``).
"""
from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

import jwt
import pika
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker, \
    ProbableAccessDeniedError, ProbableAuthenticationError

from amqpbroker.testing import BrokerProcess

FOREIGN = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """(host, AMQP port, management port, the signing key)."""
    if os.environ.get("AMQP_URL"):
        path = os.environ.get("AMQP_OAUTH2_KEY")
        assert path, "AMQP_OAUTH2_KEY must name the private key the broker's k1 verifies"
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        amqp = urllib.parse.urlsplit(os.environ["AMQP_URL"])
        mgmt = urllib.parse.urlsplit(os.environ["AMQP_MGMT_URL"])
        yield amqp.hostname, amqp.port or 5672, mgmt.port, key
        return
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    d = tmp_path_factory.mktemp("oauth2-interop")
    (d / "k1.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with BrokerProcess(d / "data", "--auth-backends", "oauth2,internal",
                       "--oauth2-signing-keys", f"k1={d / 'k1.pem'}",
                       "--oauth2-default-key", "k1", management=True) as b:
        assert b.request("PUT", "vhosts/oauth-other")[0] in (201, 204)
        yield b.host, b.port, b.management_port, key


def token(target, *scopes: str, key=None, kid: str | None = "k1", aud="rabbitmq",
          expires_in: float = 3600) -> str:
    payload = {"client_id": "svc", "aud": aud, "scope": " ".join(scopes),
               "exp": int(time.time() + expires_in)}
    return jwt.encode(payload, key or target[3], algorithm="RS256",
                      headers={"kid": kid} if kid else None)


def connect(target, password: str, user: str = "", vhost: str = "/"):
    return pika.BlockingConnection(pika.ConnectionParameters(
        target[0], target[1], vhost, pika.PlainCredentials(user, password)))


def channel_refusal(action) -> tuple:
    with pytest.raises(ChannelClosedByBroker) as info:
        action()
    return info.value.reply_code, info.value.reply_text


def test_scopes_grant_and_refuse(target):
    conn = connect(target, token(target, "rabbitmq.configure:*/orders.*",
                                 "rabbitmq.write:*/orders.*", "rabbitmq.read:*/orders.*"))
    try:
        conn.channel().queue_declare("orders.interop", auto_delete=True)
        assert channel_refusal(lambda: conn.channel().queue_declare("payments")) == (
            403, "ACCESS_REFUSED - access to queue 'payments' in vhost '/' refused for user "
                 "'svc'")
    finally:
        conn.close()
    with pytest.raises(ProbableAccessDeniedError) as info:
        connect(target, token(target, "rabbitmq.read:only/*"), vhost="oauth-other")
    assert "NOT_ALLOWED - access to vhost 'oauth-other' refused for user 'svc'" in \
        str(info.value)


def test_a_topic_exchange_needs_a_routing_key_scope(target):
    conn = connect(target, token(target, "rabbitmq.write:*/*"))
    ch = conn.channel()
    ch.confirm_delivery()
    assert channel_refusal(lambda: ch.basic_publish("amq.topic", "a.b", b"x")) == (
        403, "ACCESS_REFUSED - access to topic 'a.b' in exchange 'amq.topic' in vhost '/' "
             "refused for user 'svc'")
    conn.close()
    conn = connect(target, token(target, "rabbitmq.write:*/*",
                                 "rabbitmq.write:*/amq.topic/sensors.*"))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", "sensors.t1", b"allowed")
    conn.close()


@pytest.mark.parametrize("bad", ["foreign", "audience", "expired", "unknown kid", "garbage"])
def test_bad_tokens_are_refused_and_internal_users_still_log_in(target, bad):
    t = {"foreign": lambda: token(target, "rabbitmq.read:*/*", key=FOREIGN),
         "audience": lambda: token(target, "rabbitmq.read:*/*", aud="someone-else"),
         "expired": lambda: token(target, "rabbitmq.read:*/*", expires_in=-10),
         "unknown kid": lambda: token(target, "rabbitmq.read:*/*", kid="k9"),
         "garbage": lambda: "not a token"}[bad]()
    with pytest.raises(ProbableAuthenticationError) as info:
        connect(target, t)
    assert "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in \
        str(info.value)
    connect(target, "guest", "guest").close()


def test_update_secret_refreshes_the_scopes(target):
    conn = connect(target, token(target, "rabbitmq.configure:*/a.*", expires_in=60))
    try:
        assert channel_refusal(lambda: conn.channel().queue_declare(
            "b.interop", auto_delete=True))[0] == 403
        conn.update_secret(token(target, "rabbitmq.configure:*/a.*",
                                 "rabbitmq.configure:*/b.*"), "refreshed")
        conn.channel().queue_declare("b.interop", auto_delete=True)
        with pytest.raises(ConnectionClosedByBroker) as info:
            conn.update_secret(token(target, "rabbitmq.configure:*/*", key=FOREIGN), "forged")
        assert (info.value.reply_code, info.value.reply_text) == (
            530, "NOT_ALLOWED - New secret was refused by one of the backends")
    finally:
        if conn.is_open:
            conn.close()


def test_the_management_api_takes_a_token(target):
    def get(path: str, authorization: str):
        req = urllib.request.Request(f"http://{target[0]}:{target[2]}/api/{path}",
                                     headers={"Authorization": authorization})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, None
    admin = token(target, "rabbitmq.tag:administrator", "rabbitmq.read:*/*")
    assert get("whoami", f"Bearer {admin}") == (200, {"name": "svc", "tags": ["administrator"]})
    basic = base64.b64encode(f":{admin}".encode()).decode()
    assert get("whoami", f"Basic {basic}")[0] == 200
    assert get("whoami", f"Bearer {token(target, 'rabbitmq.read:*/*')}")[0] == 401
