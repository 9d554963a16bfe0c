"""The OAuth 2 backend (``--auth-backends oauth2,internal``; frontend/oauth2.py), what
only ours is checked for: tokens signed here with keys made by cryptography, a token that
expires on an open connection, MQTT logins by token, keys from a JWKS URL and their
rotation, JWK and symmetric keys, scopes from another claim, bad settings. What RabbitMQ's
backend does too (grants, refusals, bad tokens, update-secret, the management API) is
interop/test_oauth2.py, which runs against ours in every CI pass.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

import jwt
import pika
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pika.exceptions import ChannelClosedByBroker, ProbableAuthenticationError

from amqpbroker.testing import BrokerProcess
from amqpbroker.testing.leaks import wait_until


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


SIGNING, FOREIGN = new_key(), new_key()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("oauth2")
    (d / "k1.pem").write_bytes(SIGNING.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with BrokerProcess(d / "data", "--auth-backends", "oauth2,internal",
                       "--oauth2-signing-keys", f"k1={d / 'k1.pem'}",
                       "--oauth2-default-key", "k1", "--mqtt-port", "-1",
                       management=True) as b:
        assert b.request("PUT", "vhosts/oauth-other")[0] in (201, 204)
        yield b


def token(*scopes: str, key=SIGNING, kid: str | None = "k1", aud="rabbitmq",
          expires_in: float = 3600, **claims) -> str:
    payload = {"client_id": "svc", "aud": aud, "scope": " ".join(scopes),
               "exp": int(time.time() + expires_in), **claims}
    return jwt.encode(payload, key, algorithm="RS256",
                      headers={"kid": kid} if kid else None)


def connect(b: BrokerProcess, password: str, user: str = "", vhost: str = "/"):
    return pika.BlockingConnection(pika.ConnectionParameters(
        b.host, b.port, vhost, pika.PlainCredentials(user, password)))


def refused(ch_action) -> tuple:
    with pytest.raises(ChannelClosedByBroker) as info:
        ch_action()
    return info.value.reply_code, info.value.reply_text


def test_an_expired_token_is_refused_what_it_asks_next(broker):
    conn = connect(broker, token("rabbitmq.configure:*/*", expires_in=2))
    try:
        def refused_now() -> bool:
            try:
                conn.channel().queue_declare("expiring", auto_delete=True)
                return False
            except ChannelClosedByBroker as exc:
                return exc.reply_code == 403
        wait_until(refused_now, 10, "refused once the token expired")
    finally:
        if conn.is_open:
            conn.close()


def test_mqtt_clients_log_in_with_a_token_too(broker):
    """The token as an MQTT password (any user name): an MQTT client is an AMQP login."""
    from amqpbroker.testing.mqtt_clients import Client
    good = Client((broker.host, broker.mqtt_port), "by-token", username="any",
                  password=token("rabbitmq.configure:*/*", "rabbitmq.read:*/*",
                                 "rabbitmq.write:*/*", "rabbitmq.read:*/amq.topic/*",
                                 "rabbitmq.write:*/amq.topic/*"))
    bad = Client((broker.host, broker.mqtt_port), "by-bad-token", username="any",
                 password=token("rabbitmq.read:*/*", key=FOREIGN))
    try:
        assert good.connack[1] == 0
        assert good.subscribe(("plant/+", 1)) == [1]
        good.publish("plant/a", b"via a token", qos=1)
        [m] = good.take()
        assert m.payload == b"via a token"
        assert bad.connack[1] == 134                # bad user name or password
    finally:
        good.close()
        bad.close()


class JwksServer:
    """An identity provider's JWKS endpoint on loopback (http.server in a thread), whose
    keys a test changes."""

    def __init__(self):
        import http.server
        import threading
        self.keys: dict = {}                  # kid -> private key (its public half served)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"keys": [
                    {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())),
                     "kid": kid, "use": "sig", "alg": "RS256"}
                    for kid, k in server.keys.items()]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def test_keys_from_a_jwks_url_and_their_rotation(tmp_path):
    """RabbitMQ's auth_oauth2.jwks_url: the identity provider's keys, read at start and
    again when a token names a key not read yet (a rotation), for AMQP and the API."""
    idp = JwksServer()
    first, second = new_key(), new_key()
    idp.keys["first"] = first
    try:
        with BrokerProcess(tmp_path, "--auth-backends", "oauth2,internal",
                           "--oauth2-jwks-url", idp.url, management=True) as b:
            scopes = ("rabbitmq.configure:*/*", "rabbitmq.tag:management")
            connect(b, token(*scopes, key=first, kid="first")).close()
            idp.keys = {"second": second}           # rotated at the identity provider
            connect(b, token(*scopes, key=second, kid="second")).close()
            with pytest.raises(ProbableAuthenticationError):
                connect(b, token(*scopes, key=new_key(), kid="third"))
            req = urllib.request.Request(
                f"http://127.0.0.1:{b.management_port}/api/whoami",
                headers={"Authorization": f"Bearer {token(*scopes, key=second, kid='second')}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                assert json.loads(r.read())["name"] == "svc"
    finally:
        idp.close()


def test_a_symmetric_jwk_key_and_scopes_from_another_claim(tmp_path):
    """A signing key given as a JWK file (here a symmetric one: HS256, as RabbitMQ takes in
    its key map), and --oauth2-additional-scopes-key: scopes from another claim, a list
    taken as it is or an object keyed by the resource server id (RabbitMQ's
    additional_scopes_key); a public RSA key never verifies an HS256 token."""
    secret = b"a shared secret of thirty-two bytes!"
    (tmp_path / "hs.json").write_text(json.dumps({
        "kty": "oct", "kid": "hs", "alg": "HS256",
        "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}))
    (tmp_path / "rsa.pem").write_bytes(SIGNING.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with BrokerProcess(tmp_path / "data", "--auth-backends", "oauth2",
                       "--oauth2-signing-keys", f"hs={tmp_path / 'hs.json'},"
                                                f"rsa={tmp_path / 'rsa.pem'}",
                       "--oauth2-additional-scopes-key", "roles") as b:
        def hs256(**claims) -> str:
            return jwt.encode({"client_id": "svc", "aud": "rabbitmq",
                               "exp": int(time.time() + 60), **claims}, secret,
                              algorithm="HS256", headers={"kid": "hs"})
        conn = connect(b, hs256(roles=["rabbitmq.configure:*/listed.*"]))
        conn.channel().queue_declare("listed.q", auto_delete=True)
        assert refused(lambda: conn.channel().queue_declare("keyed.q"))[0] == 403
        conn.close()
        conn = connect(b, hs256(roles={"rabbitmq": ["configure:*/keyed.*"],
                                       "other": ["configure:*/*"]}))
        conn.channel().queue_declare("keyed.q", auto_delete=True)
        assert refused(lambda: conn.channel().queue_declare("listed.q"))[0] == 403
        conn.close()
        # the classic forgery: HS256 keyed with the RSA public key's PEM
        public = (tmp_path / "rsa.pem").read_bytes()

        def b64(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        signed = ".".join((b64(json.dumps({"alg": "HS256", "kid": "rsa"}).encode()),
                           b64(json.dumps({"client_id": "svc", "aud": "rabbitmq",
                                           "scope": "rabbitmq.configure:*/*",
                                           "exp": int(time.time() + 60)}).encode())))
        forged = signed + "." + b64(hmac.new(public, signed.encode(), hashlib.sha256).digest())
        with pytest.raises(ProbableAuthenticationError):
            connect(b, forged)


def test_a_bad_oauth2_setting_stops_the_start(tmp_path):
    with pytest.raises(RuntimeError) as info:
        BrokerProcess(tmp_path, "--auth-backends", "oauth2").start()
    assert "--auth-backends oauth2 needs --oauth2-signing-keys" in str(info.value)
    with pytest.raises(RuntimeError) as info:
        BrokerProcess(tmp_path, "--auth-backends", "ldap").start()
    assert "--auth-backends takes internal and oauth2, not ldap" in str(info.value)
