"""What the fuzz targets found, each case as a real client sends it over a socket.

Each of these was answered with 541 INTERNAL_ERROR (or a 500, or a lost message) before its
fix: the fuzz targets (``tests/property/test_*_fuzz.py``, ``test_mgmt_fuzz.py``) found them,
these keep them fixed. Where a client library cannot send the input (a longstr that is not
UTF-8, a name pamqp refuses), a raw socket sends it.
"""
from __future__ import annotations

import socket
import struct
import uuid

import pika
import pika.exceptions
import pytest
from pamqp import commands as C
from pamqp import frame as pframe

from amqpbroker.testing import BrokerProcess, leaks
from amqpbroker.testing.mgmt_client import ManagementClient

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = BrokerProcess(tmp_path_factory.mktemp("fuzz-found"), management=True).start()
    try:
        yield b
    finally:
        b.stop()
    log = "".join(b.output)
    assert "internal error" not in log and "Traceback" not in log, log[-5000:]


@pytest.fixture(autouse=True)
def no_internal_error(broker):
    """Nothing this test sent made the broker log an internal error (541's traceback)."""
    start = len(broker.output)
    yield
    # a bad protocol header is logged with its bytes: once ours is in the output, so is
    # everything the broker logged before it
    mark = uuid.uuid4().hex[:8].encode()
    with socket.create_connection((broker.host, broker.port), timeout=10) as s:
        s.sendall(mark)
        s.recv(100)
    leaks.wait_until(lambda: mark.decode() in "".join(broker.output[start:]), timeout=10,
                     what="the broker to log the marker")
    log = "".join(broker.output[start:])
    assert "internal error" not in log and "Traceback" not in log, log


@pytest.fixture
def channel(broker):
    conn = pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.port,
                                                             heartbeat=0))
    yield conn.channel()
    if conn.is_open:
        conn.close()


# ----------------------------------------------------------------------------- a raw client

def longstr(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def headers_props(entries: bytes, **more) -> bytes:
    """A property list with just a headers table (its entries as wire bytes), and reply-to."""
    flags, wire = 0x2000, longstr(entries)
    if "reply_to" in more:
        flags |= 0x0200
        rt = more["reply_to"].encode()
        wire += bytes([len(rt)]) + rt
    return struct.pack(">H", flags) + wire


class Raw:
    """A socket through the handshake with channel 1 open; frames decoded with pamqp."""

    def __init__(self, broker: BrokerProcess, mechanism: str = "PLAIN",
                 response: bytes = b"\0guest\0guest"):
        self.sock = socket.create_connection((broker.host, broker.port), timeout=10)
        self.buf = b""
        self.sock.sendall(PROTOCOL_HEADER)
        self.expect(C.Connection.Start)
        payload = (struct.pack(">HH", 10, 11) + longstr(b"") + bytes([len(mechanism)])
                   + mechanism.encode() + longstr(response) + b"\x05en_US")
        self.send_method_payload(0, payload)

    def open(self) -> "Raw":
        tune = self.expect(C.Connection.Tune)
        self.sock.sendall(pframe.marshal(C.Connection.TuneOk(
            channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0), 0)
            + pframe.marshal(C.Connection.Open(virtual_host="/"), 0)
            + pframe.marshal(C.Channel.Open(), 1))
        self.expect(C.Connection.OpenOk)
        self.expect(C.Channel.OpenOk)
        return self

    def send_method_payload(self, channel: int, payload: bytes) -> None:
        self.sock.sendall(struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce")

    def publish(self, exchange: str, routing_key: str, props: bytes, body: bytes) -> None:
        ex, rk = exchange.encode(), routing_key.encode()
        self.send_method_payload(1, struct.pack(">HHH", 60, 40, 0) + bytes([len(ex)]) + ex
                                 + bytes([len(rk)]) + rk + b"\x00")
        header = struct.pack(">HHQ", 60, 0, len(body)) + props
        self.sock.sendall(struct.pack(">BHI", 2, 1, len(header)) + header + b"\xce"
                          + struct.pack(">BHI", 3, 1, len(body)) + body + b"\xce")

    def frame(self):
        """The next (channel, frame) or None at EOF; raw header payloads are kept too."""
        while True:
            if len(self.buf) >= 7:
                size = struct.unpack_from(">I", self.buf, 3)[0]
                if len(self.buf) >= size + 8:
                    raw = self.buf[:size + 8]
                    _, channel, frame = pframe.unmarshal(raw)
                    self.buf = self.buf[size + 8:]
                    frame.raw = raw[7:-1] if raw[0] == 2 else None
                    return channel, frame
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data

    def expect(self, cls):
        got = self.frame()
        assert got is not None and isinstance(got[1], cls), f"expected {cls.__name__}: {got}"
        return got[1]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(broker):
    opened = []

    def make(**kw) -> Raw:
        r = Raw(broker, **kw)
        opened.append(r)
        return r
    yield make
    for r in opened:
        r.close()


def get_raw_properties(broker: BrokerProcess, queue: str) -> bytes:
    """basic.get one message from ``queue`` over a raw socket (so the test's queues are not
    exclusive): its property bytes."""
    r = Raw(broker).open()
    try:
        q = queue.encode()

        def get():
            r.send_method_payload(1, struct.pack(">HHH", 60, 70, 0) + bytes([len(q)]) + q
                                  + b"\x01")
            _, frame = r.frame()
            if isinstance(frame, C.Basic.GetOk):
                _, header = r.frame()
                return (header.raw[12:],)      # a tuple: empty properties are an answer too
            assert isinstance(frame, C.Basic.GetEmpty), frame
            return None
        return leaks.wait_until(get, timeout=10, what=f"a message in {queue}")[0]
    finally:
        r.close()


NOT_UTF8 = b"\x01bS" + longstr(b"\xff\xfe")           # header b = a longstr that is not UTF-8
DOUBLE = b"\x01dd" + struct.pack(">d", 0.1)              # header d = the double 0.1
LONG = b"\x01ll" + struct.pack(">q", 5)                  # header l = 5 as an 8-byte long


# ----------------------------------------------------------------------------- properties

def test_a_header_table_that_does_not_decode_is_a_frame_error(broker, raw, channel):
    channel.queue_declare("fz.bad-table", exclusive=True)
    r = raw().open()
    r.publish("", "fz.bad-table", headers_props(b"\x01kZ\x00"), b"x")   # 'Z': no such type
    close = r.expect(C.Connection.Close)
    assert close.reply_code == 501, close.reply_text
    assert "cannot decode content header" in close.reply_text


def test_bcc_is_dropped_and_every_other_header_keeps_its_bytes(broker, raw, channel):
    channel.queue_declare("fz.bcc")
    bcc = b"\x03BCCA" + longstr(b"S" + longstr(b"fz.bcc"))
    r = raw().open()
    r.publish("", "nowhere", headers_props(NOT_UTF8 + DOUBLE + bcc + LONG), b"x")
    props = get_raw_properties(broker, "fz.bcc")
    assert props == headers_props(NOT_UTF8 + DOUBLE + LONG)


def test_dead_lettering_keeps_headers_it_cannot_decode_to_text(broker, raw, channel):
    channel.queue_declare("fz.dlq")
    channel.queue_declare("fz.ttl0", arguments={
        "x-message-ttl": 0, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "fz.dlq"})
    r = raw().open()
    r.publish("", "fz.ttl0", headers_props(NOT_UTF8 + DOUBLE + LONG), b"x")
    props = get_raw_properties(broker, "fz.dlq")
    for entry in (NOT_UTF8, DOUBLE, LONG):
        assert entry in props                       # the same bytes: types kept too
    assert b"\x07x-death" in props


def test_direct_reply_to_keeps_the_header_types(broker, raw):
    client = raw().open()
    client.send_method_payload(1, pframe.marshal(C.Basic.Consume(
        queue="amq.rabbitmq.reply-to", no_ack=True), 1)[7:-1])
    client.expect(C.Basic.ConsumeOk)
    server = raw().open()
    server.send_method_payload(1, pframe.marshal(C.Queue.Declare(queue="fz.rpc"), 1)[7:-1])
    server.expect(C.Queue.DeclareOk)
    client.publish("", "fz.rpc", headers_props(DOUBLE + LONG,
                                               reply_to="amq.rabbitmq.reply-to"), b"req")
    props = get_raw_properties(broker, "fz.rpc")
    assert DOUBLE in props and LONG in props
    assert b"amq.rabbitmq.reply-to." in props


def test_cc_elements_that_are_not_text_are_no_routes(broker, raw, channel):
    channel.queue_declare("fz.cc")
    cc = b"\x02CCA" + longstr(b"S" + longstr(b"\x93") + b"I" + struct.pack(">i", 7)
                              + b"S" + longstr(b"fz.cc"))
    r = raw().open()
    r.publish("", "nowhere", headers_props(cc), b"x")
    assert get_raw_properties(broker, "fz.cc")


# ----------------------------------------------------------------------------- methods

def test_amqplain_with_a_table_as_login_is_refused_403(broker, raw):
    table = b"\x05LOGINF" + longstr(b"") + b"\x08PASSWORDS" + longstr(b"guest")
    r = raw(mechanism="AMQPLAIN", response=table)
    assert r.frame() is None          # RabbitMQ drops the socket on a failed login


@pytest.mark.parametrize("name", ["orders!", "ünï", "a" * 255])
def test_queue_names_pamqp_refuses_are_declared(broker, channel, name):
    ok = channel.queue_declare(name, exclusive=True).method
    assert ok.queue == name


def test_an_expiration_of_non_ascii_digits_is_406(broker, channel):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        channel.basic_publish("", "nowhere", b"x", pika.BasicProperties(expiration="²"))
        channel.queue_declare("", exclusive=True)      # a round trip to see the close
    assert err.value.reply_code == 406


def test_a_headers_binding_with_a_bad_x_match_is_406(broker, channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        channel.queue_bind(queue, "amq.headers", arguments={"x-match": 5})
    assert err.value.reply_code == 406
    # pika sends 5 as a signed int, named as RabbitMQ names it (interop/test_amqp_input.py)
    assert "Invalid x-match field type signedint (value 5); expected longstr" in str(err.value)


# ----------------------------------------------------------------------------- management

@pytest.mark.parametrize("path, body", [
    ("/api/users/fz", b'{"password": "\\ud800", "tags": ""}'),
    ("/api/users/fz", b'{"password_hash": "\\u0080", "tags": ""}'),
    ("/api/vhosts/fz", b'{"description": "\\udc80"}'),
])
def test_management_bodies_that_are_not_text_are_400(broker, path, body):
    api = ManagementClient(f"http://127.0.0.1:{broker.management_port}")
    status, value, _ = api.request("PUT", path, "guest", "guest", raw=body)
    assert status == 400, value
    assert set(value) == {"error", "reason"}


def test_an_import_of_a_headers_binding_with_a_bad_x_match_is_400(broker):
    api = ManagementClient(f"http://127.0.0.1:{broker.management_port}")
    status, value, _ = api.request("POST", "/api/definitions", "guest", "guest", body={
        "queues": [{"name": "fz.hq", "vhost": "/"}],
        "bindings": [{"source": "amq.headers", "vhost": "/", "destination": "fz.hq",
                      "arguments": {"x-match": 5}}]})
    assert status == 400, value
    assert "x-match" in value["reason"]
    assert api.get("/api/queues/%2F/fz.hq", "guest", "guest")[0] == 404    # nothing applied
