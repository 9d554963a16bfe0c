"""Malformed input inside well-formed frames gets a protocol reply, never a 541 with a
traceback: AMQPLAIN credentials of the wrong types, field tables with an unknown type.

RabbitMQ 3.10.8 crashes on most of these (a function_clause in rabbit_binary_parser, then
541 or a dropped socket after 3 s, with a stack trace in its log); where it does answer
(a number as PASSWORD: 403) we answer the same, elsewhere with the reply the same kind of
input gets on our other paths: 403 for credentials, 501 FRAME_ERROR for an undecodable table.
One broker for the module; its log must hold no traceback at the end.
"""
from __future__ import annotations

import struct

import pytest
from pamqp import commands as C
from pamqp import encode
from pamqp import header as pheader

from amqpbroker.testing import BrokerProcess
from interop.conftest import CLIENT_PROPERTIES, RawAMQP

UNKNOWN_TYPE_TABLE = b"\x03keyZ\x00\x00\x00"        # field 'key' of type 'Z' (none such)
REFUSED = ("ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN. For "
           "details see the broker logfile.")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = BrokerProcess(tmp_path_factory.mktemp("bad-input"), "--heartbeat", "0").start()
    try:
        yield b
    finally:
        b.stop()
    log = "".join(b.output)
    assert "internal error" not in log and "Traceback" not in log, log[-5000:]


@pytest.fixture
def peer(broker):
    peers: list[RawAMQP] = []

    def make() -> RawAMQP:
        p = RawAMQP(broker.host, broker.port)
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.close()


def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"


def start_ok(mechanism: str, response: bytes, client_properties: bytes | None = None) -> bytes:
    """connection.start-ok with a raw response (pamqp would want a str) and raw properties."""
    props = encode.field_table(CLIENT_PROPERTIES) if client_properties is None \
        else client_properties
    payload = (struct.pack(">HH", 10, 11) + props + encode.short_string(mechanism)
               + struct.pack(">I", len(response)) + response + encode.short_string("en_US"))
    return frame(1, 0, payload)


def login(peer, response: bytes):
    p = peer()
    p.send(pheader.ProtocolHeader().marshal())
    assert p.recv_method()[1].name == "Connection.Start"
    p.send(start_ok("AMQPLAIN", response))
    return p.recv_method()[1]


def table(fields: dict) -> bytes:
    return encode.field_table(fields)[4:]          # AMQPLAIN: the table without its length


@pytest.mark.parametrize("response", [
    table({"LOGIN": {"nested": 1}, "PASSWORD": "guest"}),
    table({"LOGIN": "guest", "PASSWORD": 5}),
    table({"LOGIN": ["guest"], "PASSWORD": "guest"}),
    table({"LOGIN": "guest", "PASSWORD": None}),
    table({"PASSWORD": "guest"}),
    b"\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORD" + UNKNOWN_TYPE_TABLE[4:],
    b"\x05LOGINS\x00\x00\x00\x09gu",               # cut short
], ids=["login-table", "password-number", "login-array", "password-void", "no-login",
        "unknown-type", "truncated"])
def test_malformed_amqplain_is_a_refused_login(peer, response):
    close = login(peer, response)
    assert (close.name, close.reply_code, close.reply_text) == ("Connection.Close", 403, REFUSED)


def test_amqplain_still_logs_in(peer):
    assert login(peer, table({"LOGIN": "guest", "PASSWORD": "guest"})).name == "Connection.Tune"


def opened(peer) -> RawAMQP:
    p = peer()
    p.handshake()
    p.send_method(1, C.Channel.Open())
    assert p.recv_method()[1].name == "Channel.OpenOk"
    return p


def publish_with_raw_headers(p, exchange: str, routing_key: str, headers_table: bytes):
    p.send(frame(1, 1, struct.pack(">HHH", 60, 40, 0) + encode.short_string(exchange)
                 + encode.short_string(routing_key) + b"\x00"))
    props = struct.pack(">HI", 0x2000, len(headers_table)) + headers_table
    p.send(frame(2, 1, struct.pack(">HHQ", 60, 0, 2) + props))
    p.send(frame(3, 1, b"hi"))


@pytest.mark.parametrize("exchange, routing_key", [("", "q-bad-headers"), ("amq.headers", ""),
                                                   ("amq.direct", "nowhere")])
def test_headers_with_unknown_type_are_a_frame_error(peer, exchange, routing_key):
    p = opened(peer)
    p.send_method(1, C.Queue.Declare(queue="q-bad-headers", auto_delete=True))
    assert p.recv_method()[1].name == "Queue.DeclareOk"
    publish_with_raw_headers(p, exchange, routing_key, UNKNOWN_TYPE_TABLE)
    channel, close = p.recv_method()
    assert (channel, close.name, close.reply_code, close.class_id, close.method_id) == (
        0, "Connection.Close", 501, 60, 40)
    assert close.reply_text == ("FRAME_ERROR - cannot decode content header on channel 1: "
                                "Unknown type: b'Z'")


def test_headers_with_unknown_type_in_a_transaction_fail_at_publish(peer):
    p = opened(peer)
    p.send_method(1, C.Tx.Select())
    assert p.recv_method()[1].name == "Tx.SelectOk"
    publish_with_raw_headers(p, "amq.direct", "nowhere", UNKNOWN_TYPE_TABLE)
    close = p.recv_method()[1]                     # before any tx.commit
    assert (close.name, close.reply_code) == ("Connection.Close", 501)


def test_arguments_with_unknown_type_are_a_frame_error(peer):
    p = opened(peer)
    p.send(frame(1, 1, struct.pack(">HHH", 50, 10, 0) + encode.short_string("q-bad-args")
                 + b"\x00" + struct.pack(">I", len(UNKNOWN_TYPE_TABLE)) + UNKNOWN_TYPE_TABLE))
    close = p.recv_method()[1]
    assert (close.name, close.reply_code) == ("Connection.Close", 501)
    assert close.reply_text.startswith("FRAME_ERROR - cannot decode Queue.Declare on channel 1")


def test_client_properties_with_unknown_type_end_the_handshake(peer):
    """Before connection.open RabbitMQ answers errors by closing the socket (its reader
    crashes on this one the same way); no tune follows."""
    p = peer()
    p.send(pheader.ProtocolHeader().marshal())
    assert p.recv_method()[1].name == "Connection.Start"
    p.send(start_ok("PLAIN", b"\0guest\0guest",
                    struct.pack(">I", len(UNKNOWN_TYPE_TABLE)) + UNKNOWN_TYPE_TABLE))
    assert p.read_to_eof() == b""
