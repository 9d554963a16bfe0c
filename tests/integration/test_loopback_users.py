"""`guest` may connect, and use the management API, only from loopback, as in RabbitMQ; other
users connect from anywhere.

A real remote client: the test makes a network namespace joined to this one by a veth pair
(the machine's own test host, 10.213.x.2), runs the broker on the root side's address, and
connects from inside the namespace.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request

import pytest

from amqpbroker.testing import BrokerProcess

NS = f"amqpt{os.getpid() % 100000}"
HOST_IP, NS_IP = "10.213.0.1", "10.213.0.2"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def netns():
    veth = f"v{NS}"
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        sh("ip", "link", "set", f"{veth}p", "netns", NS)
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", veth)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/30", "dev", f"{veth}p")
        sh("ip", "netns", "exec", NS, "ip", "link", "set", f"{veth}p", "up")
        sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        yield NS
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


CLIENT = """
import sys, pika
try:
    c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
    c.channel().queue_declare("", exclusive=True)
    c.close()
    print("OK")
except pika.exceptions.AMQPConnectionError as e:
    print("REFUSED", repr(e))
"""


def connect_from_ns(url: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", CLIENT, url],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or out.stderr.strip()


HTTP_CLIENT = """
import base64, sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1], headers={
    "Authorization": "Basic " + base64.b64encode(sys.argv[2].encode()).decode()})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"""


def get_from_ns(url: str, credentials: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", HTTP_CLIENT, url,
                          credentials], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or out.stderr.strip()


MQTT_CLIENT = """
import socket, sys
from amqpbroker.mqtt import frames as f
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(f.connect_packet("remote-client", username=sys.argv[3], password=sys.argv[4]))
print(s.recv(4).hex())
"""


def mqtt_connack_from_ns(host: str, port: int, user: str, password: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", MQTT_CLIENT, host,
                          str(port), user, password], capture_output=True, text=True,
                         timeout=60)
    return out.stdout.strip() or out.stderr.strip()


STOMP_CLIENT = """
import socket, sys
from amqpbroker.stomp.frames import Parser, serialize
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(serialize("CONNECT", [("accept-version", "1.2"), ("host", "/"),
                                ("login", sys.argv[3]), ("passcode", sys.argv[4])]))
parser, frames = Parser(1 << 20, every_length=True), []
while not frames:
    frames += parser.feed(s.recv(4096))
f = frames[0]
print(f.command, f.headers.get("message", ""), f.body.decode().strip())
"""


def stomp_from_ns(host: str, port: int, user: str, password: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", STOMP_CLIENT, host,
                          str(port), user, password], capture_output=True, text=True,
                         timeout=60)
    return out.stdout.strip() or out.stderr.strip()


AMQP10_CLIENT = """
import sys
from proton import Message
from proton.utils import BlockingConnection
try:
    c = BlockingConnection(sys.argv[1], timeout=10, allowed_mechs=sys.argv[2])
    c.create_sender("/queue/from-remote").send(Message(body="hello"))
    c.close()
    print("OK")
except Exception as e:
    print("REFUSED", type(e).__name__, e)
"""


def amqp10_from_ns(url: str, mechanism: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", AMQP10_CLIENT, url,
                          mechanism], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or out.stderr.strip()


@pytest.fixture
def with_remote_user(tmp_path):
    """A data directory holding user 'remote' (tag management, full permissions on '/'),
    made through the API from loopback: guest may use the API from there only."""
    with BrokerProcess(tmp_path, management=True) as b:
        auth = "Basic " + base64.b64encode(b"guest:guest").decode()
        for path, body in (("/api/users/remote", {"password": "secret", "tags": "management"}),
                           ("/api/permissions/%2F/remote",
                            {"configure": ".*", "write": ".*", "read": ".*"})):
            req = urllib.request.Request(f"http://127.0.0.1:{b.management_port}{path}",
                                         data=json.dumps(body).encode(), method="PUT",
                                         headers={"Authorization": auth,
                                                  "content-type": "application/json"})
            urllib.request.urlopen(req, timeout=10).close()
    return tmp_path


def test_guest_refused_remotely_other_users_allowed(netns, with_remote_user):
    with BrokerProcess(with_remote_user, "--host", HOST_IP, management=True) as b:
        assert b.host == HOST_IP
        refused = connect_from_ns(f"amqp://guest:guest@{HOST_IP}:{b.port}/")
        assert refused.startswith("REFUSED"), refused
        assert "403" in refused and "Login was refused using authentication mechanism PLAIN. " \
            "For details see the broker logfile." in refused, refused       # RabbitMQ's words
        assert connect_from_ns(f"amqp://remote:secret@{HOST_IP}:{b.port}/") == "OK"
        log = "".join(b.output)
        assert "user 'guest' can only connect via localhost" in log


def test_guest_refused_by_management_api_remotely(netns, with_remote_user):
    with BrokerProcess(with_remote_user, "--host", HOST_IP, management=True) as b:
        url = f"http://{HOST_IP}:{b.management_port}/api/overview"
        assert get_from_ns(url, "guest:guest") == (
            '401 {"error": "not_authorised", "reason": "User can only log in via localhost"}')
        assert get_from_ns(url, "remote:secret").startswith("200 {")
        log = "".join(b.output)
        assert "HTTP access denied: user 'guest' - User can only log in via localhost" in log


def test_guest_refused_by_mqtt_remotely(netns, with_remote_user):
    """RabbitMQ's MQTT plugin: CONNACK 5 (not authorised) for guest from elsewhere with the
    right password, 4 with a wrong one; other users log in."""
    with BrokerProcess(with_remote_user, "--host", HOST_IP, "--mqtt-port", "-1") as b:
        assert mqtt_connack_from_ns(HOST_IP, b.mqtt_port, "guest", "guest") == "20020005"
        assert mqtt_connack_from_ns(HOST_IP, b.mqtt_port, "guest", "wrong") == "20020004"
        assert mqtt_connack_from_ns(HOST_IP, b.mqtt_port, "remote", "secret") == "20020000"
        log = "".join(b.output)
        assert "MQTT login failed for user guest: this user's access is restricted to " \
            "localhost" in log


def test_guest_refused_by_stomp_remotely(netns, with_remote_user):
    """RabbitMQ's STOMP plugin: ERROR "non-loopback access denied" for guest from elsewhere
    with the right password, "Access refused" with a wrong one; other users log in."""
    with BrokerProcess(with_remote_user, "--host", HOST_IP, "--stomp-port", "-1") as b:
        assert stomp_from_ns(HOST_IP, b.stomp_port, "guest", "guest") == \
            "ERROR Bad CONNECT non-loopback access denied"
        assert stomp_from_ns(HOST_IP, b.stomp_port, "guest", "wrong") == \
            "ERROR Bad CONNECT Access refused for user 'guest'"
        assert stomp_from_ns(HOST_IP, b.stomp_port, "remote", "secret") == "CONNECTED"
        log = "".join(b.output)
        assert "STOMP login failed for user 'guest': this user's access is restricted to " \
            "localhost" in log


def test_guest_refused_by_amqp10_remotely(netns, with_remote_user):
    """AMQP 1.0 on the AMQP port: guest from elsewhere is refused with PLAIN and with
    ANONYMOUS (the default user: RabbitMQ 3.10's plugin lets ANONYMOUS in from anywhere,
    which is looser than its own loopback rule); other users log in."""
    with BrokerProcess(with_remote_user, "--host", HOST_IP) as b:
        url = f"amqp://guest:guest@{HOST_IP}:{b.port}"
        for mechanism in ("PLAIN", "ANONYMOUS"):
            refused = amqp10_from_ns(url, mechanism)
            assert refused.startswith("REFUSED") and "unauthorized-access" in refused, refused
        assert amqp10_from_ns(f"amqp://remote:secret@{HOST_IP}:{b.port}", "PLAIN") == "OK"
        log = "".join(b.output)
        assert "user 'guest' can only connect via localhost" in log
