"""The sans-I/O Connection: handshake, channels, content assembly, acks, heartbeats, close.

Every input goes in twice (the ``split`` fixture): whole, and one byte at a time; the
assertions are the same, so both feedings must yield the same events. Whatever the connection
sends is decoded with pamqp and asserted on.
"""
from __future__ import annotations

import pytest
from pamqp import commands as C
from pamqp import heartbeat as pheartbeat

from amqpbroker import errors
from amqpbroker.protocol import events as ev
from amqpbroker.protocol import properties
from amqpbroker.protocol import states as st
from amqpbroker.protocol.connection import HEARTBEAT_FRAME
from amqpbroker.protocol.constants import PROTOCOL_HEADER
from amqpbroker.testing.feeder import feed, frames

from .conftest import (FRAME_MAX, OPEN, SERVER_PROPERTIES, START_OK, TUNE_OK, body, handshake,
                       header, method, new_connection, open_channel, publish, split_frames)


def sent(conn) -> list:
    """What the connection queued for the client, decoded by pamqp: [(channel, frame)]."""
    return frames(conn.data_to_send())


def sent_one(conn, channel: int):
    """The one frame the connection queued, which must be for ``channel``."""
    [(ch, frame)] = sent(conn)
    assert ch == channel
    return frame


# ----------------------------------------------------------------------------- handshake

def test_full_handshake(split):
    conn = new_connection(frame_max=131072, channel_max=2047, heartbeat=60)
    assert conn.state == st.AWAIT_HEADER
    assert feed(conn, PROTOCOL_HEADER, split) == []
    [(ch, start)] = sent(conn)
    assert ch == 0 and isinstance(start, C.Connection.Start)
    assert (start.version_major, start.version_minor) == (0, 9)
    assert start.server_properties == SERVER_PROPERTIES
    assert start.mechanisms == "PLAIN AMQPLAIN"

    [start_ok] = feed(conn, START_OK, split)
    assert start_ok == ev.StartOk({"product": "test"}, "PLAIN", b"\0guest\0guest", "en_US")
    assert conn.state == st.AWAIT_TUNE
    conn.send_tune()
    tune = sent_one(conn, 0)
    assert isinstance(tune, C.Connection.Tune)
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)

    assert feed(conn, TUNE_OK, split) == [ev.TuneOk(16, FRAME_MAX, 30)]
    assert (conn.channel_max, conn.frame_max, conn.heartbeat) == (16, FRAME_MAX, 30)
    assert feed(conn, OPEN, split) == [ev.OpenVhost("/")]
    assert sent(conn) == []                       # open-ok is the session's decision
    conn.send_open_ok()
    open_ok = sent_one(conn, 0)
    assert isinstance(open_ok, C.Connection.OpenOk)
    assert conn.state == st.OPEN


@pytest.mark.parametrize("field, value, text", [
    ("frame_max", 0, "negotiated frame_max = 0 is higher than the maximum allowed value (65536)"),
    ("channel_max", 0, "negotiated channel_max = 0 (no limit) is higher than the maximum "
                       "allowed value (100)"),
    ("channel_max", 101, "negotiated channel_max = 101 is higher than the maximum allowed "
                         "value (100)"),
])
def test_tune_ok_zero_or_above_the_server_limit_is_530(split, field, value, text):
    # RabbitMQ's reader: a server with a limit takes neither 0 ("none") nor more
    conn = new_connection(frame_max=65536, channel_max=100)
    feed(conn, PROTOCOL_HEADER + START_OK, split)
    conn.send_tune()
    values = {"frame_max": 65536, "channel_max": 100, field: value}
    with pytest.raises(errors.NotAllowed) as exc:
        feed(conn, method(0, C.Connection.TuneOk(heartbeat=0, **values)), split)
    assert exc.value.text == text


def test_tune_ok_zero_is_fine_when_the_server_has_no_limit(split):
    conn = new_connection(frame_max=65536, channel_max=0)
    feed(conn, PROTOCOL_HEADER + START_OK, split)
    conn.send_tune()
    tune_ok = method(0, C.Connection.TuneOk(channel_max=0, frame_max=65536, heartbeat=0))
    assert feed(conn, tune_ok, split) == [ev.TuneOk(0, 65536, 0)]


def test_handshake_out_of_order_names_the_state(split):
    conn = new_connection()
    feed(conn, PROTOCOL_HEADER, split)
    with pytest.raises(errors.CommandInvalid) as exc:
        feed(conn, OPEN, split)
    assert exc.value.reply_code == 503
    assert "AWAIT_START_OK" in exc.value.text


def test_channel_method_before_open_ok_is_503(split):
    conn = new_connection()
    feed(conn, PROTOCOL_HEADER + START_OK, split)
    conn.send_tune()
    feed(conn, TUNE_OK, split)
    with pytest.raises(errors.CommandInvalid) as exc:
        feed(conn, method(1, C.Channel.Open()), split)
    assert exc.value.reply_code == 503


@pytest.mark.parametrize("received", [b"AMQP\x01\x01\x00\x09", b"AMQP\x00\x00\x09\x00",
                                      b"GET / HTTP/1.1\r\n\r\n", b"\x01\x00\x00\x00\x00"])
def test_wrong_protocol_header(split, received):
    conn = new_connection()
    [event] = feed(conn, received, split)
    assert isinstance(event, ev.BadProtocolHeader)
    assert received.startswith(event.received) and event.received   # what it saw, up to 8 bytes
    assert conn.data_to_send() == b"AMQP\x00\x00\x09\x01"
    assert conn.state == st.CLOSED
    assert feed(conn, PROTOCOL_HEADER + START_OK, split) == []       # nothing more is parsed


def test_partial_protocol_header_is_need_data(split):
    conn = new_connection()
    assert feed(conn, PROTOCOL_HEADER[:5], split) == []
    assert conn.data_to_send() == b""
    assert feed(conn, PROTOCOL_HEADER[5:], split) == []
    assert isinstance(sent(conn)[0][1], C.Connection.Start)


@pytest.mark.parametrize("frame_max", [1024, 4095])
def test_tune_ok_frame_max_below_minimum_is_530(split, frame_max):
    conn = new_connection()
    feed(conn, PROTOCOL_HEADER + START_OK, split)
    conn.send_tune()
    tune_ok = method(0, C.Connection.TuneOk(channel_max=10, frame_max=frame_max, heartbeat=0))
    with pytest.raises(errors.NotAllowed) as exc:
        feed(conn, tune_ok, split)
    assert exc.value.reply_code == 530
    assert exc.value.text == (f"negotiated frame_max = {frame_max} is lower than the minimum "
                              f"allowed value (4096)")


def test_tune_ok_frame_max_above_server_is_530(split):
    conn = new_connection(frame_max=8192)
    feed(conn, PROTOCOL_HEADER + START_OK, split)
    conn.send_tune()
    with pytest.raises(errors.NotAllowed) as exc:
        feed(conn, method(0, C.Connection.TuneOk(channel_max=10, frame_max=8193)), split)
    assert exc.value.reply_code == 530


# ----------------------------------------------------------------------------- channels

def test_channel_open_and_client_close(conn, split):
    assert feed(conn, method(2, C.Channel.Open()), split) == [ev.ChannelOpened(2)]
    assert conn.data_to_send() == b""           # the server decides (a limit may refuse)
    conn.send_channel_open_ok(2)
    open_ok = sent_one(conn, 2)
    assert isinstance(open_ok, C.Channel.OpenOk)
    assert conn.is_channel_open(2)

    close = method(2, C.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    assert feed(conn, close, split) == [ev.ChannelClosedByPeer(2, 200, "bye")]
    close_ok = sent_one(conn, 2)
    assert isinstance(close_ok, C.Channel.CloseOk)
    assert not conn.is_channel_open(2)
    # the number is free again
    assert feed(conn, method(2, C.Channel.Open()), split) == [ev.ChannelOpened(2)]


def test_channel_max_counts_open_channels(split):
    conn = new_connection()
    feed(conn, PROTOCOL_HEADER + START_OK, split)
    conn.send_tune()
    feed(conn, method(0, C.Connection.TuneOk(channel_max=2, frame_max=FRAME_MAX)) + OPEN, split)
    conn.send_open_ok()
    feed(conn, method(1, C.Channel.Open()) + method(900, C.Channel.Open()), split)
    assert sorted(conn.channels) == [1, 900]
    with pytest.raises(errors.NotAllowed) as exc:
        feed(conn, method(3, C.Channel.Open()), split)
    assert exc.value.reply_code == 530


def test_cold_path_method_is_decoded_by_pamqp(conn, split):
    declare = C.Queue.Declare(queue="jobs", durable=True, arguments={"x-max-length": 10})
    [event] = feed(conn, method(1, declare), split)
    assert isinstance(event, ev.Method) and event.channel == 1
    assert isinstance(event.method, C.Queue.Declare)
    assert (event.method.queue, event.method.durable) == ("jobs", True)
    assert event.method.arguments == {"x-max-length": 10}


# ----------------------------------------------------------------------------- content

def feed_until_pause(conn, data: bytes, split) -> tuple[list, bytes]:
    """Feed ``data`` in pieces, draining events, until the first ``PAUSED``: the events up to
    and including it, and the bytes not yet fed."""
    out = []
    fed = 0
    for piece in split(data):
        conn.receive_data(piece)
        fed += len(piece)
        while (event := conn.next_event()) is not ev.NEED_DATA:
            out.append(event)
            if event is ev.PAUSED:
                return out, data[fed:]
    return out, b""


def test_held_content_pauses_at_the_publish_and_mid_body(conn, split):
    """During an alarm (``hold_content``) the connection stops before basic.publish, and a
    body half-way through stops at its next frame; other methods still pass; letting go
    resumes exactly where it stopped."""
    payload = bytes(range(256)) * 40                        # 3 body frames at 4096
    data = publish(1, payload, routing_key="jobs")
    ack = method(1, C.Basic.Ack(delivery_tag=1))
    conn.hold_content = True
    events, rest = feed_until_pause(conn, ack + data, split)
    assert events == [ev.Ack(1, 1, False), ev.PAUSED]
    assert conn.next_event() is ev.PAUSED                     # nothing consumed meanwhile
    conn.hold_content = False
    [event] = feed(conn, rest, split) if rest else feed(conn, b"")
    assert (event.routing_key, event.body) == ("jobs", payload)

    # the alarm comes after the first body frame: the second one is not read
    first_body_end = len(data) - len(payload) - 3 * 8 + 4088 + 8
    assert feed(conn, data[:first_body_end], split) == []
    assert conn.partial_content_bytes == 4088
    conn.hold_content = True
    events, rest = feed_until_pause(conn, data[first_body_end:], split)
    assert events == [ev.PAUSED]
    assert conn.partial_content_bytes == 4088
    conn.hold_content = False
    [event] = feed(conn, rest, split) if rest else feed(conn, b"")
    assert event.body == payload
    assert conn.partial_content_bytes == 0


def test_publish_assembled_from_several_body_frames(conn, split):
    payload = bytes(range(256)) * 40                        # 10240 bytes: 3 body frames at 4096
    props = C.Basic.Properties(content_type="application/octet-stream", delivery_mode=2,
                               priority=3, expiration="60000", reply_to="replies",
                               headers={"k": "v"})
    data = publish(1, payload, exchange="amq.direct", routing_key="jobs", props=props)
    assert len(frames(data)) == 5
    last_body_start = len(data) - (len(payload) - 2 * 4088) - 8
    assert feed(conn, data[:last_body_start], split) == []   # nothing until the last byte
    [event] = feed(conn, data[last_body_start:], split)
    assert isinstance(event, ev.Publish)
    assert (event.channel, event.exchange, event.routing_key) == (1, "amq.direct", "jobs")
    assert (event.mandatory, event.immediate) == (False, False)
    assert event.body == payload
    assert properties.decode(event.properties) == props      # raw bytes, untouched
    assert event.scan.persistent and event.scan.priority == 3
    assert (event.scan.expiration, event.scan.reply_to) == ("60000", "replies")
    assert event.scan.has_headers
    assert sent(conn) == []                                  # publish needs no reply


def test_publish_flags_and_empty_body(conn, split):
    data = method(1, C.Basic.Publish(exchange="x", routing_key="", mandatory=True))
    data += header(1, 0)
    [event] = feed(conn, data, split)
    assert (event.exchange, event.routing_key, event.mandatory, event.body) == ("x", "", True,
                                                                                 b"")


def test_publishes_on_two_channels_interleave(conn, split):
    open_channel(conn, 2, split)
    parts = split_frames(publish(1, b"a" * 5000))   # method, header, body 4088, body 912
    assert len(parts) == 4
    events = feed(conn, parts[0] + parts[1] + parts[2], split)
    events += feed(conn, publish(2, b"second"), split)
    events += feed(conn, parts[3], split)
    assert [(e.channel, e.body) for e in events] == [(2, b"second"), (1, b"a" * 5000)]


def test_ack_nack_reject_events(conn, split):
    data = (method(1, C.Basic.Ack(delivery_tag=5, multiple=True))
            + method(1, C.Basic.Nack(delivery_tag=7, multiple=False, requeue=True))
            + method(1, C.Basic.Nack(delivery_tag=8, multiple=True, requeue=False))
            + method(1, C.Basic.Reject(delivery_tag=9, requeue=False))
            + method(1, C.Basic.Reject(delivery_tag=2 ** 63 - 1, requeue=True)))
    assert feed(conn, data, split) == [ev.Ack(1, 5, True), ev.Nack(1, 7, False, True),
                                       ev.Nack(1, 8, True, False), ev.Nack(1, 9, False, False),
                                       ev.Nack(1, 2 ** 63 - 1, False, True)]


def test_basic_modify_only_from_the_amqp10_adapter(conn, split):
    """basic.modify (ours, constants.MODIFY) is an event only on a connection that may send
    it (the AMQP 1.0 adapter's); from any other client an unknown method, as RabbitMQ
    answers one: 540."""
    from amqpbroker.protocol.fastpath import build_modify
    frame = build_modify(1, 9, True, b"\x00\x00")
    with pytest.raises(errors.NotImplemented_) as exc:
        feed(conn, frame, split)
    assert exc.value.reply_code == 540 and "class 60 method 200" in exc.value.text
    conn.modify_allowed = True
    props = properties.encode(C.Basic.Properties(headers={"x-opt-a": "b"}))
    frames = build_modify(1, 9, True, b"\x00\x00") + build_modify(1, 2 ** 63, False, props)
    assert feed(conn, frames, split) == [ev.Modify(1, 9, True, b"\x00\x00"),
                                         ev.Modify(1, 2 ** 63, False, props)]


def test_a_cut_basic_modify_is_a_frame_error(conn, split):
    from amqpbroker.protocol.fastpath import build_modify
    conn.modify_allowed = True
    frame = bytearray(build_modify(1, 9, True, b"\x00\x00"))
    frame[20] = 9                                   # the properties' length: past the frame
    with pytest.raises(errors.FrameError) as exc:
        feed(conn, bytes(frame), split)
    assert exc.value.reply_code == 501


def test_heartbeats(conn, split):
    assert feed(conn, HEARTBEAT_FRAME * 3, split) == []
    conn.send_heartbeat()
    hb = sent_one(conn, 0)
    assert isinstance(hb, pheartbeat.Heartbeat)
    assert feed(conn, method(1, C.Basic.Ack(delivery_tag=1)), split) == [ev.Ack(1, 1, False)]


def test_client_closes_connection(conn, split):
    close = method(0, C.Connection.Close(reply_code=200, reply_text="Normal shutdown", class_id=0,
                                               method_id=0))
    assert feed(conn, close, split) == [ev.ConnectionClosedByPeer(200, "Normal shutdown")]
    close_ok = sent_one(conn, 0)
    assert isinstance(close_ok, C.Connection.CloseOk)
    assert conn.state == st.CLOSED
    assert feed(conn, method(1, C.Basic.Ack(delivery_tag=1)) + b"junk" * 10, split) == []


# ----------------------------------------------------------------------------- errors

def test_frame_larger_than_frame_max_raises_before_payload(conn, split):
    # RabbitMQ tolerates the 8 bytes of framing over frame_max: the payload may be frame_max
    head = b"\x01\x00\x01" + (FRAME_MAX + 1).to_bytes(4, "big")
    with pytest.raises(errors.FrameError) as exc:
        feed(conn, head, split)                   # the 7-byte header alone is enough
    assert exc.value.reply_code == 501
    assert exc.value.text == \
        f"type 1, all octets = <<>>: {{frame_too_large,{FRAME_MAX + 1},{FRAME_MAX - 8}}}"


@pytest.mark.parametrize("size", [FRAME_MAX - 8, FRAME_MAX])
def test_frame_up_to_frame_max_plus_framing_is_fine(conn, split, size):
    payload = b"x" * size
    [event] = feed(conn, publish(1, payload), split)
    assert event.body == payload


def test_bad_frame_end_is_501(conn, split):
    data = bytearray(method(1, C.Basic.Qos(prefetch_count=1)))
    data[-1] = 0xCD
    with pytest.raises(errors.FrameError) as exc:
        feed(conn, bytes(data), split)
    assert exc.value.reply_code == 501
    assert exc.value.text == \
        "type 1, all octets = <<0,60,0,10,0,0,0,0,0,1,0>>: {invalid_frame_end_marker,205}"


def test_unknown_frame_type_is_501(conn, split):
    with pytest.raises(errors.FrameError) as exc:
        feed(conn, b"\x09\x00\x01\x00\x00\x00\x02ab\xce", split)
    assert exc.value.reply_code == 501
    assert exc.value.text == 'type 9, all octets = <<"ab">>: unknown_frame'   # RabbitMQ's


def test_method_on_unopened_channel_is_504(conn, split):
    with pytest.raises(errors.ChannelErrorHard) as exc:
        feed(conn, method(7, C.Basic.Qos(prefetch_count=1)), split)
    assert exc.value.reply_code == 504 and exc.value.hard
    assert (exc.value.class_id, exc.value.method_id) == (60, 10)


def test_content_on_unopened_channel_is_505(conn, split):
    # RabbitMQ opens the channel and its assembler, expecting a method, refuses the header
    with pytest.raises(errors.UnexpectedFrame) as exc:
        feed(conn, header(7, 3), split)
    assert exc.value.reply_code == 505
    assert exc.value.text == "expected method frame, got non method frame instead"


def test_second_channel_open_is_504(conn, split):
    with pytest.raises(errors.ChannelErrorHard) as exc:
        feed(conn, method(1, C.Channel.Open()), split)
    assert exc.value.reply_code == 504
    assert "second 'channel.open'" in exc.value.text


def test_content_header_without_publish_is_505(conn, split):
    with pytest.raises(errors.UnexpectedFrame) as exc:
        feed(conn, header(1, 10), split)
    assert exc.value.reply_code == 505


def test_body_without_header_is_505(conn, split):
    with pytest.raises(errors.UnexpectedFrame) as exc:
        feed(conn, body(1, b"abc"), split)
    assert exc.value.reply_code == 505


@pytest.mark.parametrize("stage", ["awaiting header", "awaiting body"])
def test_method_during_content_is_505(conn, split, stage):
    prefix = method(1, C.Basic.Publish(routing_key="q"))
    if stage == "awaiting body":
        prefix += header(1, 10) + body(1, b"12345")
    assert feed(conn, prefix, split) == []
    with pytest.raises(errors.UnexpectedFrame) as exc:
        feed(conn, method(1, C.Basic.Qos(prefetch_count=1)), split)
    assert exc.value.reply_code == 505
    assert (exc.value.class_id, exc.value.method_id) == (60, 40)    # the publish, as RabbitMQ


def test_second_content_header_is_505(conn, split):
    feed(conn, method(1, C.Basic.Publish()) + header(1, 10), split)
    with pytest.raises(errors.UnexpectedFrame) as exc:
        feed(conn, header(1, 10), split)
    assert exc.value.reply_code == 505


def test_body_overrun_is_501(conn, split):
    feed(conn, method(1, C.Basic.Publish()) + header(1, 10) + body(1, b"123456"), split)
    with pytest.raises(errors.FrameError) as exc:
        feed(conn, body(1, b"12345"), split)
    assert exc.value.reply_code == 501
    assert "overruns the declared body size 10" in exc.value.text


def test_content_header_for_other_class_is_505(conn, split):
    feed(conn, method(1, C.Basic.Publish()), split)
    raw = bytearray(header(1, 3))
    raw[7:9] = (50).to_bytes(2, "big")
    with pytest.raises(errors.UnexpectedFrame) as exc:
        feed(conn, bytes(raw), split)
    assert exc.value.reply_code == 505


def test_heartbeat_on_channel_is_505(conn, split):
    with pytest.raises(errors.UnexpectedFrame) as exc:
        feed(conn, b"\x08\x00\x01\x00\x00\x00\x00\xce", split)
    assert exc.value.reply_code == 505
    assert exc.value.text == "type 8, all octets = <<>>"             # RabbitMQ's


@pytest.mark.parametrize("channel", [0, 1])
def test_unknown_method_is_540(conn, split, channel):
    with pytest.raises(errors.NotImplemented_) as exc:
        feed(conn, b"\x01" + channel.to_bytes(2, "big") + b"\x00\x00\x00\x04\x00\x3c\x00\x63\xce",
             split)
    assert exc.value.reply_code == 540
    assert (exc.value.class_id, exc.value.method_id) == (60, 99)


@pytest.mark.parametrize("data", [
    b"\x01\x00\x01\x00\x00\x00\x02\x00\x3c\xce",                      # shorter than ids
    b"\x01\x00\x01\x00\x00\x00\x07\x00\x3c\x00\x28\x00\x00\x09\xce",  # publish cut in exchange
    b"\x01\x00\x01\x00\x00\x00\x08\x00\x3c\x00\x50\x00\x00\x00\x01\xce",  # ack cut in tag
    b"\x01\x00\x01\x00\x00\x00\x06\x00\x32\x00\x0a\x00\x00\xce",      # queue.declare cut
])
def test_truncated_method_is_501(conn, split, data):
    with pytest.raises(errors.FrameError) as exc:
        feed(conn, data, split)
    assert exc.value.reply_code == 501


def test_truncated_property_continuation_is_501(conn, split):
    """Flag bit 0 says another flag word follows; it does not (was a struct.error)."""
    feed(conn, method(1, C.Basic.Publish()), split)
    payload = b"\x00\x3c\x00\x00" + (3).to_bytes(8, "big") + b"\x00\x01"
    frame = b"\x02\x00\x01" + len(payload).to_bytes(4, "big") + payload + b"\xce"
    with pytest.raises(errors.FrameError) as exc:
        feed(conn, frame, split)
    assert exc.value.reply_code == 501


def test_message_larger_than_max_message_size(split):
    conn = new_connection(max_message_size=5000)
    handshake(conn, split)
    open_channel(conn, 1, split)
    open_channel(conn, 2, split)
    data = publish(1, b"z" * 9000)                # method, header, 3 body frames
    parts = split_frames(data)
    with pytest.raises(errors.PreconditionFailed) as exc:
        feed(conn, parts[0] + parts[1] + parts[2], split)
    err = exc.value
    assert (err.reply_code, err.hard, err.channel) == (406, False, 1)
    assert "message size 9000 is larger than configured max size 5000" in err.text
    # the session's boundary answers with channel.close; the rest of the message is dropped
    conn.close_channel(1, err)
    close = sent_one(conn, 1)
    assert isinstance(close, C.Channel.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (406, 60, 40)
    assert close.reply_text.startswith("PRECONDITION_FAILED - message size 9000")
    assert feed(conn, parts[3] + parts[4], split) == []
    # other channels carry on meanwhile
    [ok] = feed(conn, publish(2, b"small"), split)
    assert (ok.channel, ok.body) == (2, b"small")
    assert feed(conn, method(1, C.Channel.CloseOk()), split) == [
        ev.ChannelCloseOk(1)]
    assert feed(conn, method(1, C.Channel.Open()), split) == [ev.ChannelOpened(1)]


def test_frames_dropped_after_close_channel_until_close_ok(conn, split):
    feed(conn, method(1, C.Basic.Publish()) + header(1, 100), split)
    conn.close_channel(1, errors.NotFound("no exchange 'x' in vhost '/'", 60, 40))
    close = sent_one(conn, 1)
    assert (close.reply_code, close.reply_text) == (404, "NOT_FOUND - no exchange 'x' in "
                                                         "vhost '/'")
    dropped = (body(1, b"a" * 50) + method(1, C.Basic.Qos(prefetch_count=1))
               + publish(1, b"more") + method(1, C.Basic.Ack(delivery_tag=1))
               + header(1, 7) + body(1, b"whatever"))
    assert feed(conn, dropped, split) == []
    assert sent(conn) == []
    assert feed(conn, method(1, C.Channel.CloseOk()), split) == [ev.ChannelCloseOk(1)]
    assert 1 not in conn.channels


def test_crossing_channel_close_is_answered(conn, split):
    conn.close_channel(1, errors.PreconditionFailed("x"))
    sent(conn)
    close = method(1, C.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    assert feed(conn, close, split) == [ev.ChannelCloseOk(1)]
    close_ok = sent_one(conn, 1)
    assert isinstance(close_ok, C.Channel.CloseOk)


def test_frames_dropped_after_close_connection(conn, split):
    conn.close_connection(errors.FrameError("bad"))
    close = sent_one(conn, 0)
    assert isinstance(close, C.Connection.Close)
    assert (close.reply_code, close.reply_text) == (501, "FRAME_ERROR - bad")
    dropped = (publish(1, b"x" * 10) + method(1, C.Basic.Ack(delivery_tag=1))
               + method(5, C.Channel.Open()) + method(1, C.Channel.Open())
               + header(1, 3) + body(9, b"abc") + HEARTBEAT_FRAME
               + method(0, C.Connection.Open()))
    assert feed(conn, dropped, split) == []
    assert sent(conn) == []
    assert conn.state == st.CLOSING
    assert feed(conn, method(0, C.Connection.CloseOk()), split) == [ev.ConnectionCloseOk()]
    assert conn.state == st.CLOSED


def test_unknown_method_dropped_while_closing(conn, split):
    conn.close_connection(errors.CommandInvalid("x"))
    sent(conn)
    unknown = b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x63\xce"          # connection.99
    assert feed(conn, unknown, split) == []
    assert feed(conn, method(0, C.Connection.CloseOk()), split) == [ev.ConnectionCloseOk()]


def test_close_crossing_our_close(conn, split):
    conn.close_connection(errors.ConnectionForced("shutdown"))
    close = sent_one(conn, 0)
    assert close.reply_code == 320
    crossing = method(0, C.Connection.Close(reply_code=200, reply_text="bye", class_id=0,
                                            method_id=0))
    assert feed(conn, crossing, split) == [ev.ConnectionClosedByPeer(200, "bye")]
    assert isinstance(sent(conn)[0][1], C.Connection.CloseOk)
    assert conn.state == st.CLOSED


def test_long_reply_text_fits_a_shortstr(conn):
    """Reply texts are cut to 255 bytes, not characters (else pamqp refuses to marshal)."""
    name = "é" * 200
    conn.close_channel(1, errors.NotFound(f"no queue '{name}' in vhost '/'", 50, 10))
    close = sent_one(conn, 1)
    assert close.reply_code == 404
    assert close.reply_text.startswith("NOT_FOUND - no queue 'éé")
    assert len(close.reply_text.encode()) <= 255



# ----------------------------------------------------------------------------- reading in place

def read_into(conn, data: bytes, reads) -> list:
    """Feed ``data`` as the session's BufferedProtocol does: each read fills part of the view
    ``get_buffer`` offers (``reads`` yields how much a read brings, at most what is left and
    what the view holds), then ``buffer_updated``; events drained after every read."""
    out, pos = [], 0
    for want in reads:
        if pos == len(data):
            break
        view = conn.get_buffer(-1)
        n = min(want, len(view), len(data) - pos)
        assert n > 0
        view[:n] = data[pos:pos + n]
        view.release()
        conn.buffer_updated(n)
        pos += n
        while (event := conn.next_event()) is not ev.NEED_DATA:
            out.append(event)
    assert pos == len(data)
    return out


def big_reads():
    """Reads as large as the offered view (a fast publisher) ..."""
    while True:
        yield 1 << 30


def odd_reads():
    """... and reads of awkward sizes, down to one byte."""
    while True:
        yield from (1, 7, 4095, 65536, 3, 100_000, 13)


def open_big(frame_max: int = 131072):
    """A connection OPEN with a large negotiated frame_max and channel 1 open."""
    conn = new_connection(frame_max=frame_max)
    feed(conn, PROTOCOL_HEADER + START_OK)
    conn.send_tune()
    feed(conn, method(0, C.Connection.TuneOk(channel_max=16, frame_max=frame_max,
                                              heartbeat=0)) + OPEN)
    conn.send_open_ok()
    assert read_into(conn, method(1, C.Channel.Open()), big_reads()) == [ev.ChannelOpened(1)]
    conn.data_to_send()
    return conn


@pytest.mark.parametrize("reads", [big_reads, odd_reads])
@pytest.mark.parametrize("size, chunk", [(65536, 131064), (300_000, 131064), (20_000, 4088),
                                         (0, None)])
def test_publishes_read_into_the_buffer_come_out_whole(reads, size, chunk):
    """Bodies in one frame and over many frames (small frame_max), bigger than the read
    buffer, many in a row: each Publish carries exactly its body."""
    conn = open_big()
    bodies = [bytes([i]) * size + b"#%d" % i for i in range(12)]
    data = b"".join(publish(1, b, chunk=chunk) for b in bodies)
    events = read_into(conn, data, reads())
    assert [e.body for e in events] == bodies
    assert all(type(e.body) is bytes for e in events)         # not a view of the buffer
    assert conn.buffered_bytes == 0


def test_read_size_grows_while_reads_fill_it_and_the_buffer_shrinks_after_a_burst():
    conn = open_big()
    data = b"".join(publish(1, b"x" * 65536, chunk=131064) for _ in range(40))
    offered = []
    pos = 0
    while pos < len(data):
        view = conn.get_buffer(-1)
        offered.append(len(view))
        n = min(len(view), len(data) - pos)
        view[:n] = data[pos:pos + n]
        view.release()
        conn.buffer_updated(n)
        pos += n
        while conn.next_event() is not ev.NEED_DATA:
            pass
    assert offered[0] < 64 * 1024 and max(offered) >= 256 * 1024    # fewer, larger reads
    for _ in range(4):                       # then a trickle: small reads, a small buffer
        read_into(conn, HEARTBEAT_FRAME, big_reads())
    assert len(conn.get_buffer(-1)) < 64 * 1024
