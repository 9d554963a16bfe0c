"""Connection-level behaviour: handshake, server properties, auth, vhosts, tuning, framing errors.

The raw-socket tests speak AMQP frames directly (marshalled with pamqp) so that we can send what
no well-behaved client would, and read exactly what the broker puts on the wire.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading

import aiormq
import pika
import pika.exceptions
import pytest
from pamqp import commands as spec
from pamqp import frame as pframe
from pamqp import header as pheader

from .conftest import AMQP_091_HEADER, CLIENT_PROPERTIES, url_with

# ---------------------------------------------------------------------------------------------
# Connecting with each client
# ---------------------------------------------------------------------------------------------

def test_pika_blocking_connection_opens_channel_and_declares(connect, uniq):
    c = connect()
    ch = c.channel()
    ok = ch.queue_declare(uniq("q"), exclusive=True)
    assert ok.method.message_count == 0
    assert c.is_open and ch.is_open


def test_pika_select_connection_ioloop(broker_url, uniq):
    events: list[str] = []
    name = uniq("q")

    def on_open(conn):
        events.append("open")
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch):
        events.append("channel")
        ch.queue_declare(name, exclusive=True, callback=lambda frame: on_declared(ch, frame))

    def on_declared(ch, frame):
        events.append(f"declared:{frame.method.queue}")
        ch.connection.close()

    def on_close(conn, reason):
        events.append("closed")
        conn.ioloop.stop()

    def on_open_error(conn, err):
        events.append(f"error:{err!r}")
        conn.ioloop.stop()

    conn = pika.SelectConnection(pika.URLParameters(broker_url), on_open_callback=on_open,
                                 on_open_error_callback=on_open_error, on_close_callback=on_close)
    timer = threading.Timer(10, lambda: conn.ioloop.add_callback_threadsafe(conn.ioloop.stop))
    timer.start()
    try:
        conn.ioloop.start()
    finally:
        timer.cancel()
    assert events == ["open", "channel", f"declared:{name}", "closed"]


async def test_aiormq_connect_and_channel(broker_url, uniq):
    c = await aiormq.connect(broker_url)
    try:
        ch = await c.channel()
        ok = await ch.queue_declare(uniq("q"), exclusive=True)
        assert ok.message_count == 0 and ok.consumer_count == 0
    finally:
        await c.close()
    assert c.is_closed


# ---------------------------------------------------------------------------------------------
# Server properties
# ---------------------------------------------------------------------------------------------

def test_server_properties_and_capabilities(conn):
    props = conn._impl.server_properties
    assert props["product"]          # identity, not behaviour: any non-empty name
    assert isinstance(props["version"], str) and props["version"]
    for key in ("platform", "copyright", "information", "cluster_name"):
        assert key in props
    assert props["capabilities"] == {
        "publisher_confirms": True,
        "exchange_exchange_bindings": True,
        "basic.nack": True,
        "consumer_cancel_notify": True,
        "connection.blocked": True,
        "authentication_failure_close": True,
        "per_consumer_qos": True,
        "direct_reply_to": True,
        "consumer_priorities": True,
    }


def test_connection_start_fields(raw):
    p = raw()
    p.send(pheader.ProtocolHeader().marshal())
    channel, start = p.recv_method()
    assert channel == 0
    assert (start.version_major, start.version_minor) == (0, 9)
    assert set(start.mechanisms.split()) >= {"PLAIN", "AMQPLAIN"}
    assert "en_US" in start.locales.split()
    # the product name is the broker's identity, not behaviour: any non-empty name will do
    assert start.server_properties["product"]


def test_tune_proposals(raw):
    _, tune = raw().handshake()
    # RabbitMQ's defaults: channel_max 2047, frame_max 128 KiB, heartbeat 60 s.
    assert tune.channel_max == 2047
    assert tune.frame_max == 131072
    assert tune.heartbeat == 60


# ---------------------------------------------------------------------------------------------
# Authentication and virtual hosts
# ---------------------------------------------------------------------------------------------

def test_bad_password_is_authentication_error(broker_url):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as e:
        pika.BlockingConnection(pika.URLParameters(url_with(broker_url, password="wrong-password")))
    # authentication_failure_close: the broker sends connection.close 403 before closing.
    # pika wraps the close it received in the message.
    assert "(403) 'ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN." in str(e.value)


def test_bad_user_raw_socket_gets_connection_close_403(raw):
    p = raw()
    p.send(pheader.ProtocolHeader().marshal())
    p.recv_method()
    p.send_method(0, spec.Connection.StartOk(client_properties=CLIENT_PROPERTIES, mechanism="PLAIN",
                                             response="\0no-such-user\0x", locale="en_US"))
    _, close = p.recv_method()
    assert close.name == "Connection.Close"
    assert close.reply_code == 403
    assert close.reply_text.startswith("ACCESS_REFUSED")


async def test_aiormq_bad_credentials(broker_url):
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError) as e:
        await aiormq.connect(url_with(broker_url, password="nope"))
    assert "ACCESS_REFUSED" in str(e.value)


def test_unknown_vhost_is_530_not_allowed(broker_url, uniq):
    vhost = uniq("no-such-vhost")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        pika.BlockingConnection(pika.URLParameters(url_with(broker_url, vhost=vhost)))
    # pika reports a close during connection.open as ProbableAccessDeniedError, quoting the close.
    assert f"(530) 'NOT_ALLOWED - vhost {vhost} not found'" in str(e.value)


def test_unknown_vhost_raw_connection_close(raw, uniq):
    vhost = uniq("no-such-vhost")
    p = raw()
    with pytest.raises(AssertionError):
        p.handshake(vhost=vhost)
    _, close = p.last
    assert close.name == "Connection.Close"
    assert (close.reply_code, close.reply_text) == (530, f"NOT_ALLOWED - vhost {vhost} not found")
    assert close.class_id == 10 and close.method_id == 40  # connection.open


def test_unsupported_mechanism_raw(raw):
    p = raw()
    p.send(pheader.ProtocolHeader().marshal())
    p.recv_method()
    p.send_method(0, spec.Connection.StartOk(client_properties=CLIENT_PROPERTIES, mechanism="NOPE",
                                             response="x", locale="en_US"))
    # RabbitMQ just drops the socket (no connection.close) for errors before connection.tune.
    assert p.read_to_eof() == b""


# ---------------------------------------------------------------------------------------------
# Tuning: heartbeat, channel_max, frame_max
# ---------------------------------------------------------------------------------------------

def test_heartbeat_negotiated_to_client_value(connect):
    c = connect(heartbeat=7)
    assert c._impl.params.heartbeat == 7


def test_heartbeat_server_value_when_client_accepts(connect):
    c = connect(heartbeat=None)
    assert c._impl.params.heartbeat == 60


def test_heartbeat_frames_sent_by_server(raw):
    p = raw()
    p.handshake(heartbeat=1)
    # With a 1 s heartbeat the server sends heartbeat frames on channel 0 within ~1 s.
    p.sock.settimeout(5)
    channel, value = p.recv_frame()
    assert channel == 0
    assert value.name == "Heartbeat"


def test_channel_max_negotiated(connect):
    c = connect(channel_max=3)
    assert c._impl.params.channel_max == 3
    chans = [c.channel() for _ in range(3)]
    assert [x.channel_number for x in chans] == [1, 2, 3]
    with pytest.raises(pika.exceptions.NoFreeChannels):
        c.channel()


def test_channel_above_negotiated_max_raw(raw):
    p = raw()
    p.handshake(channel_max=2)
    # RabbitMQ enforces channel_max on the number of open channels, not on the channel number:
    # channel 7 opens fine while fewer than 2 channels are open.
    p.send_method(7, spec.Channel.Open())
    assert p.recv_method()[1].name == "Channel.OpenOk"
    p.send_method(1, spec.Channel.Open())
    assert p.recv_method()[1].name == "Channel.OpenOk"
    p.send_method(2, spec.Channel.Open())
    _, close = p.recv_method()
    assert close.name == "Connection.Close"
    assert close.reply_code == 530
    assert close.reply_text == ("NOT_ALLOWED - number of channels opened (2) has reached "
                                "the negotiated channel_max (2)")


def test_frame_max_below_minimum_rejected_raw(raw):
    p = raw()
    p.send(pheader.ProtocolHeader().marshal())
    p.recv_method()
    p.send_method(0, spec.Connection.StartOk(client_properties=CLIENT_PROPERTIES, mechanism="PLAIN",
                                             response="\0guest\0guest", locale="en_US"))
    p.recv_method()
    p.send_method(0, spec.Connection.TuneOk(channel_max=10, frame_max=1024, heartbeat=0))
    p.send_method(0, spec.Connection.Open(virtual_host="/"))
    # frame_max below 4096 is refused; before connection.open-ok RabbitMQ just drops the socket.
    assert p.read_to_eof() == b""


# ---------------------------------------------------------------------------------------------
# Protocol header and framing errors (raw sockets)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [b"AMQP\x00\x00\x09\x00", b"AMQP\x01\x01\x00\x0a",
                                    b"GET / HTTP/1.1\r\n\r\n"])
def test_wrong_protocol_header_answered_with_supported_header(raw, header):
    p = raw()
    p.send(header)
    assert p.read_to_eof() == AMQP_091_HEADER


def test_bad_frame_end_is_501_frame_error(raw):
    p = raw()
    p.handshake()
    good = pframe.marshal(spec.Channel.Open(), 1)
    p.send(good[:-1] + b"\x00")  # frame-end must be 0xCE
    _, close = p.recv_method()
    assert close.name == "Connection.Close"
    assert close.reply_code == 501
    assert close.reply_text.startswith("FRAME_ERROR")


def test_unknown_frame_type_is_501(raw):
    p = raw()
    p.handshake()
    p.send(struct.pack(">BHI", 9, 0, 0) + b"\xce")
    _, close = p.recv_method()
    assert close.name == "Connection.Close"
    assert close.reply_code == 501


def test_method_on_unopened_channel_is_504(raw):
    p = raw()
    p.handshake()
    p.send_method(5, spec.Queue.Declare(queue="", exclusive=True))
    channel, close = p.recv_method()
    assert channel == 0
    assert close.name == "Connection.Close"
    assert close.reply_code == 504
    assert close.reply_text.startswith("CHANNEL_ERROR - expected 'channel.open'")


def test_second_channel_open_is_504(raw):
    p = raw()
    p.handshake()
    p.send_method(1, spec.Channel.Open())
    assert p.recv_method()[1].name == "Channel.OpenOk"
    p.send_method(1, spec.Channel.Open())
    _, close = p.recv_method()
    assert close.name == "Connection.Close"
    assert close.reply_code == 504
    assert close.reply_text == "CHANNEL_ERROR - second 'channel.open' seen"


def test_method_on_closed_channel_raw_is_504(raw):
    p = raw()
    p.handshake()
    p.send_method(1, spec.Channel.Open())
    assert p.recv_method()[1].name == "Channel.OpenOk"
    p.send_method(1, spec.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    assert p.recv_method()[1].name == "Channel.CloseOk"
    p.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
    _, close = p.recv_method()
    assert close.name == "Connection.Close"
    assert close.reply_code == 504


def test_channel_reusable_after_close(raw):
    p = raw()
    p.handshake()
    for _ in range(2):
        p.send_method(1, spec.Channel.Open())
        assert p.recv_method() [1].name == "Channel.OpenOk"
        p.send_method(1, spec.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        assert p.recv_method()[1].name == "Channel.CloseOk"


def test_method_on_closed_pika_channel_raises_client_side(conn):
    ch = conn.channel()
    ch.close()
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        ch.queue_declare("", exclusive=True)
    assert conn.is_open


def test_content_without_method_is_unexpected_frame(raw):
    p = raw()
    p.handshake()
    p.send_method(1, spec.Channel.Open())
    p.recv_method()
    # A content header with no preceding basic.publish.
    from pamqp import header as h
    p.send(pframe.marshal(h.ContentHeader(0, 0, spec.Basic.Properties()), 1))
    _, close = p.recv_method()
    assert close.name == "Connection.Close"
    assert close.reply_code == 505  # UNEXPECTED_FRAME


def test_graceful_close_handshake_raw(raw):
    p = raw()
    p.handshake()
    p.send_method(0, spec.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    channel, ok = p.recv_method()
    # It is the client that closes the socket after connection.close-ok.
    assert (channel, ok.name) == (0, "Connection.CloseOk")


def test_after_close_ok_the_broker_waits_for_the_client_to_close_the_socket(raw):
    """The peer that asked to close closes the socket: RabbitMQ leaves it open after close-ok
    (its TIME_WAIT then stays on the client's side, not the broker's)."""
    p = raw()
    p.handshake()
    p.send_method(0, spec.Connection.Close(reply_code=200, reply_text="bye", class_id=0,
                                           method_id=0))
    assert p.recv_method()[1].name == "Connection.CloseOk"
    p.sock.settimeout(1.0)
    with pytest.raises(socket.timeout):
        p.sock.recv(1)              # no end of stream from the broker: it waits for ours


def test_a_client_that_never_closes_after_close_ok_is_let_go_at_its_heartbeat_timeout(raw):
    """RabbitMQ ends such a socket after the heartbeat timeout (30 s at most)."""
    p = raw()
    p.handshake(heartbeat=1)
    p.send_method(0, spec.Connection.Close(reply_code=200, reply_text="bye", class_id=0,
                                           method_id=0))
    assert p.recv_method()[1].name == "Connection.CloseOk"
    p.sock.settimeout(15.0)
    p.read_to_eof()                 # a socket.timeout if the broker kept it
    assert p.sock.recv(1) == b""


def test_connection_close_from_client_closes_channels(connect):
    c = connect()
    chans = [c.channel() for _ in range(3)]
    c.close()
    assert all(x.is_closed for x in chans)


async def test_aiormq_channel_number_exhaustion_reuses_numbers(broker_url):
    c = await aiormq.connect(broker_url)
    try:
        chans = [await c.channel() for _ in range(5)]
        numbers = [x.number for x in chans]
        assert len(set(numbers)) == 5
        await chans[0].close()
        again = await c.channel()
        assert again.number not in {x.number for x in chans[1:]}
    finally:
        await asyncio.wait_for(c.close(), 5)


# ---------------------------------------------------------------------------------------------
# Where RabbitMQ 3.10's answers were found to differ from ours
# ---------------------------------------------------------------------------------------------

def test_update_secret_is_answered_ok(connect, uniq):
    """The internal auth backend accepts a new secret (its state cannot expire): update-secret-ok,
    and the connection goes on (aio-pika's and aiormq's tests call it)."""
    c = connect()
    c.update_secret("guest", "rotated")
    ch = c.channel()
    assert ch.queue_declare("", exclusive=True).method.queue.startswith("amq.gen-")


async def test_update_secret_aiormq(broker_url):
    conn = await aiormq.connect(broker_url)
    try:
        result = await conn.update_secret("guest", reason="rotated")
        assert result.name == "Connection.UpdateSecretOk"
        channel = await conn.channel()
        assert (await channel.queue_declare(exclusive=True)).queue.startswith("amq.gen-")
    finally:
        await conn.close()


def closed_with(p):
    channel, close = p.recv_method()
    assert (channel, close.name) == (0, "Connection.Close")
    return close.reply_code, close.reply_text, (close.class_id, close.method_id)


def test_method_on_never_opened_channel_reply_text(raw):
    p = raw()
    p.handshake()
    p.send_method(3, spec.Basic.Qos(prefetch_count=1))
    assert closed_with(p) == (504, "CHANNEL_ERROR - expected 'channel.open'", (60, 10))


def test_content_on_never_opened_channel_is_505(raw):
    p = raw()
    p.handshake()
    p.send(pframe.marshal(pheader.ContentHeader(0, 0, spec.Basic.Properties()), 3))
    assert closed_with(p) == (
        505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", (0, 0))


def open_channel(p, number=1):
    p.send_method(number, spec.Channel.Open())
    assert p.recv_method()[1].name == "Channel.OpenOk"


def test_content_header_without_publish_reply_text(raw):
    p = raw()
    p.handshake()
    open_channel(p)
    p.send(pframe.marshal(pheader.ContentHeader(0, 0, spec.Basic.Properties()), 1))
    assert closed_with(p) == (
        505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", (0, 0))


def test_method_instead_of_content_header_names_the_publish(raw):
    p = raw()
    p.handshake()
    open_channel(p)
    p.send_method(1, spec.Basic.Publish(exchange="", routing_key="nowhere"))
    p.send_method(1, spec.Basic.Qos(prefetch_count=1))
    assert closed_with(p) == (
        505, "UNEXPECTED_FRAME - expected content header for class 60, got non content header "
        "frame instead", (60, 40))


def test_method_instead_of_content_body_names_the_publish(raw):
    p = raw()
    p.handshake()
    open_channel(p)
    p.send_method(1, spec.Basic.Publish(exchange="", routing_key="nowhere"))
    p.send(pframe.marshal(pheader.ContentHeader(0, 10, spec.Basic.Properties()), 1))
    p.send_method(1, spec.Basic.Qos(prefetch_count=1))
    assert closed_with(p) == (
        505, "UNEXPECTED_FRAME - expected content body, got non content body frame instead",
        (60, 40))


def test_content_header_of_another_class_reply_text(raw):
    p = raw()
    p.handshake()
    open_channel(p)
    p.send_method(1, spec.Basic.Publish(exchange="", routing_key="nowhere"))
    header = bytearray(pframe.marshal(pheader.ContentHeader(0, 3, spec.Basic.Properties()), 1))
    header[7:9] = (50).to_bytes(2, "big")
    p.send(bytes(header))
    assert closed_with(p) == (
        505, "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 "
        "instead", (60, 40))


def test_heartbeat_on_a_channel_is_505(raw):
    p = raw()
    p.handshake()
    open_channel(p)
    p.send(b"\x08\x00\x01\x00\x00\x00\x00\xce")
    assert closed_with(p) == (505, "UNEXPECTED_FRAME - type 8, all octets = <<>>", (0, 0))


def test_unknown_frame_type_reply_text(raw):
    p = raw()
    p.handshake()
    p.send(struct.pack(">BHI", 9, 0, 2) + b"ab\xce")
    assert closed_with(p) == (501, 'FRAME_ERROR - type 9, all octets = <<"ab">>: unknown_frame',
                              (0, 0))


@pytest.mark.parametrize("method", [spec.Connection.Open(virtual_host="/"),
                                    spec.Connection.CloseOk(),
                                    spec.Connection.Blocked(reason="client says")])
def test_connection_method_while_running_is_504(raw, method):
    p = raw()
    p.handshake()
    p.send_method(0, method)
    code, text, _ = closed_with(p)
    assert (code, text) == (504, "CHANNEL_ERROR - unexpected method in connection state running")


def test_a_method_only_the_server_sends_is_503(raw):
    p = raw()
    p.handshake()
    open_channel(p)
    p.send_method(1, spec.Basic.GetEmpty())
    assert closed_with(p) == (503, "COMMAND_INVALID - unimplemented method", (60, 72))


@pytest.mark.parametrize("channel_max, frame_max", [(10, 0), (0, 131072), (5000, 131072)])
def test_tune_ok_without_a_limit_or_above_the_servers_is_refused(raw, channel_max, frame_max):
    """RabbitMQ's reader refuses 0 ("no limit") and values above its own in tune-ok; before
    connection.open-ok it drops the socket."""
    p = raw()
    p.send(pheader.ProtocolHeader().marshal())
    p.recv_method()
    p.send_method(0, spec.Connection.StartOk(client_properties=CLIENT_PROPERTIES,
                                             mechanism="PLAIN", response="\0guest\0guest",
                                             locale="en_US"))
    p.recv_method()
    p.send_method(0, spec.Connection.TuneOk(channel_max=channel_max, frame_max=frame_max,
                                            heartbeat=0))
    p.send_method(0, spec.Connection.Open(virtual_host="/"))
    assert p.read_to_eof() == b""


def test_frame_over_frame_max_by_its_framing_is_accepted(raw, uniq):
    """RabbitMQ lets a frame's payload be frame_max itself (the 8 bytes of framing over)."""
    p = raw()
    p.handshake(frame_max=4096)
    open_channel(p)
    name = uniq("q")
    p.send_method(1, spec.Queue.Declare(queue=name, exclusive=True))
    assert p.recv_method()[1].name == "Queue.DeclareOk"
    p.send_method(1, spec.Confirm.Select())
    assert p.recv_method()[1].name == "Confirm.SelectOk"
    body = b"x" * 4096
    p.send_method(1, spec.Basic.Publish(exchange="", routing_key=name))
    p.send(pframe.marshal(pheader.ContentHeader(0, len(body), spec.Basic.Properties()), 1))
    p.send(struct.pack(">BHI", 3, 1, len(body)) + body + b"\xce")
    _, ack = p.recv_method()
    assert (ack.name, ack.delivery_tag) == ("Basic.Ack", 1)


def test_frame_too_large_reply_text(raw):
    p = raw()
    p.handshake(frame_max=4096)
    open_channel(p)
    p.send(struct.pack(">BHI", 1, 1, 4097) + b"\x00" * 4097 + b"\xce")
    assert closed_with(p) == (
        501, "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,4097,4088}", (0, 0))


def test_bad_frame_end_reply_text(raw):
    p = raw()
    p.handshake()
    good = pframe.marshal(spec.Basic.Qos(prefetch_count=1), 0)
    p.send(good[:-1] + b"\x00")
    assert closed_with(p) == (501, "FRAME_ERROR - type 1, all octets = "
                                   "<<0,60,0,10,0,0,0,0,0,1,0>>: {invalid_frame_end_marker,0}",
                              (0, 0))
