"""Fuzz the sans-I/O Connection with h11's invariant.

After a valid handshake, Hypothesis feeds random bytes and mutated valid frame streams (bit
flips, truncations, inserted and deleted bytes, wrong frame sizes, duplicated frames), cut at
random points. Each ``next_event()`` must return an event or ``NEED_DATA``, or raise an
``AMQPError`` — never any other exception. Errors are answered the way the session's one
error boundary does (``close_channel`` for a channel error, ``close_connection`` otherwise) and
feeding goes on, so the closing states get fuzzed too. Besides: everything the connection
sends decodes with pamqp, and the unparsed buffer never grows past one frame_max.
"""
from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as hs
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from amqpbroker import errors
from amqpbroker.protocol import events as ev
from amqpbroker.protocol.connection import HEARTBEAT_FRAME, Connection
from amqpbroker.protocol.constants import PROTOCOL_HEADER
from amqpbroker.testing.feeder import frames
from amqpbroker.testing.fuzzing import fuzz

FRAME_MAX = 4096
FUZZ = fuzz(150)        # FUZZ_SECONDS / HYPOTHESIS_PROFILE=fuzz for long runs (README)


def m(channel: int, method) -> bytes:
    return pframe.marshal(method, channel)


def open_connection(max_message_size: int = 20000) -> Connection:
    conn = Connection({"product": "fuzz"}, frame_max=131072, max_message_size=max_message_size)
    conn.receive_data(PROTOCOL_HEADER + m(0, C.Connection.StartOk(
        client_properties={}, mechanism="PLAIN", response="\0guest\0guest")))
    assert isinstance(conn.next_event(), ev.StartOk)
    conn.send_tune()
    conn.receive_data(m(0, C.Connection.TuneOk(channel_max=8, frame_max=FRAME_MAX, heartbeat=0))
                      + m(0, C.Connection.Open(virtual_host="/")))
    assert isinstance(conn.next_event(), ev.TuneOk)
    assert isinstance(conn.next_event(), ev.OpenVhost)
    conn.send_open_ok()
    conn.data_to_send()
    return conn


def pending(conn: Connection) -> int:
    """Bytes received but not parsed yet."""
    return conn.buffered_bytes


def pump(conn: Connection, chunks: list[bytes]) -> list:
    """Feed ``chunks``, pull events, answer errors as the session does; check the invariants."""
    seen = []
    for chunk in chunks:
        conn.receive_data(chunk)
        for _ in range(len(chunk) + 2):          # each call consumes bytes or says NEED_DATA
            try:
                event = conn.next_event()
            except errors.AMQPError as err:       # the only exception allowed
                assert 200 < err.reply_code < 600
                seen.append(err)
                channel = getattr(err, "channel", 0)
                if not err.hard and channel:
                    conn.close_channel(channel, err)
                else:
                    conn.close_connection(err)
                continue
            if event is ev.NEED_DATA:
                break
            seen.append(event)
        else:
            raise AssertionError("next_event() made no progress")
        assert pending(conn) < FRAME_MAX, "buffered more than a frame"
        for _, frame in frames(conn.data_to_send()):      # our output is always valid AMQP
            assert frame is not None
    return seen


# ----------------------------------------------------------------------------- valid streams

@hs.composite
def valid_frames(draw) -> list[bytes]:
    """A plausible client stream after the handshake, one bytes object per frame."""
    out = [m(1, C.Channel.Open()), m(2, C.Channel.Open())]
    open_channels = {1, 2}
    for _ in range(draw(hs.integers(1, 8))):
        kind = draw(hs.sampled_from(["publish", "ack", "nack", "reject", "qos", "declare",
                                     "heartbeat", "close", "open", "bigpublish"]))
        if kind == "open" or not open_channels:
            ch = min(set(range(1, 8)) - open_channels)
            open_channels.add(ch)
            out.append(m(ch, C.Channel.Open()))
            continue
        ch = draw(hs.sampled_from(sorted(open_channels)))
        if kind in ("publish", "bigpublish"):
            size = draw(hs.integers(0, 300)) if kind == "publish" else draw(hs.integers(4000,
                                                                                        12000))
            props = C.Basic.Properties(delivery_mode=draw(hs.sampled_from([None, 1, 2])),
                                       headers=draw(hs.none() | hs.just({"a": 1})),
                                       expiration=draw(hs.none() | hs.just("1000")))
            out.append(m(ch, C.Basic.Publish(exchange="amq.direct", routing_key="k",
                                             mandatory=draw(hs.booleans()))))
            out.append(pframe.marshal(pheader.ContentHeader(0, size, props), ch))
            payload = b"p" * size
            for i in range(0, size, FRAME_MAX - 8):
                out.append(pframe.marshal(pbody.ContentBody(payload[i:i + FRAME_MAX - 8]), ch))
        elif kind == "ack":
            out.append(m(ch, C.Basic.Ack(delivery_tag=draw(hs.integers(0, 100)))))
        elif kind == "nack":
            out.append(m(ch, C.Basic.Nack(delivery_tag=3, requeue=draw(hs.booleans()))))
        elif kind == "reject":
            out.append(m(ch, C.Basic.Reject(delivery_tag=4)))
        elif kind == "qos":
            out.append(m(ch, C.Basic.Qos(prefetch_count=draw(hs.integers(0, 1000)))))
        elif kind == "declare":
            out.append(m(ch, C.Queue.Declare(queue="q", arguments={"x-max-length": 5})))
        elif kind == "heartbeat":
            out.append(HEARTBEAT_FRAME)
        elif kind == "close":
            open_channels.discard(ch)
            out.append(m(ch, C.Channel.Close(reply_code=200, reply_text="", class_id=0,
                                             method_id=0)))
    if draw(hs.booleans()):
        out.append(m(0, C.Connection.Close(reply_code=200, reply_text="bye", class_id=0,
                                           method_id=0)))
    return out


@hs.composite
def mutated(draw) -> bytes:
    """A valid stream with a few of: bit flips, cuts, insertions, deletions, wrong sizes."""
    parts = draw(valid_frames())
    for _ in range(draw(hs.integers(1, 4))):
        i = draw(hs.integers(0, len(parts) - 1))
        frame = bytearray(parts[i])
        if not frame:                              # dropped by an earlier mutation
            continue
        op = draw(hs.sampled_from(["flip", "truncate", "insert", "delete", "size", "type",
                                   "channel", "duplicate", "drop", "end"]))
        if op == "flip":
            pos = draw(hs.integers(0, len(frame) - 1))
            frame[pos] ^= 1 << draw(hs.integers(0, 7))
        elif op == "truncate":
            del frame[draw(hs.integers(0, len(frame) - 1)):]
        elif op == "insert":
            pos = draw(hs.integers(0, len(frame)))
            frame[pos:pos] = draw(hs.binary(min_size=1, max_size=8))
        elif op == "delete":
            pos = draw(hs.integers(0, len(frame) - 1))
            del frame[pos:pos + draw(hs.integers(1, 8))]
        elif op == "size" and len(frame) >= 7:
            frame[3:7] = struct.pack(">I", draw(hs.one_of(hs.integers(0, 64),
                                                          hs.integers(0, 2 ** 32 - 1))))
        elif op == "type":
            frame[0] = draw(hs.integers(0, 255))
        elif op == "channel" and len(frame) >= 3:
            frame[1:3] = struct.pack(">H", draw(hs.integers(0, 65535)))
        elif op == "duplicate":
            parts.insert(i, bytes(frame))
        elif op == "drop":
            frame = bytearray()
        elif op == "end":
            frame[-1] = draw(hs.integers(0, 255))
        parts[i] = bytes(frame)
    return b"".join(parts)


@hs.composite
def chunked(draw, data: bytes) -> list[bytes]:
    """``data`` cut at a few random points (whole, bytewise and in between)."""
    how = draw(hs.sampled_from(["whole", "bytewise", "random"]))
    if how == "whole" or not data:
        return [data]
    if how == "bytewise" and len(data) <= 3000:
        return [data[i:i + 1] for i in range(len(data))]
    cuts = sorted(draw(hs.lists(hs.integers(0, len(data)), max_size=20)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


# ----------------------------------------------------------------------------- properties

def normalized(events: list) -> list:
    """Events made comparable: Scan and pamqp methods have no __eq__."""
    out = []
    for e in events:
        if isinstance(e, ev.Publish):
            s = e.scan
            out.append(("publish", e.channel, e.exchange, e.routing_key, e.mandatory,
                        e.immediate, e.properties, e.body, s.flags, s.delivery_mode, s.priority,
                        s.expiration, s.reply_to, s.user_id))
        elif isinstance(e, ev.Method):
            # repr: a decoded table may hold NaN; marshal() would validate (ticket, names)
            out.append(("method", e.channel, e.method.name, repr(dict(e.method))))
        elif isinstance(e, Exception):
            out.append((type(e).__name__, str(e)))
        else:
            out.append(e)
    return out


@FUZZ
@given(hs.data())
def test_valid_streams_parse_without_error(data):
    """The unmutated streams are the control: no error at all, and the same events however
    the bytes are cut (whole buffers take the one-pass publish path, bytewise never does)."""
    stream = b"".join(data.draw(valid_frames()))
    events = pump(open_connection(), data.draw(chunked(stream)))
    assert not [e for e in events if isinstance(e, Exception)]
    assert isinstance(events[0], ev.ChannelOpened) and isinstance(events[1], ev.ChannelOpened)
    assert normalized(events) == normalized(pump(open_connection(), [stream]))


@FUZZ
@given(hs.data())
def test_mutated_streams_raise_only_amqp_errors(data):
    stream = data.draw(mutated())
    events = normalized(pump(open_connection(), data.draw(chunked(stream))))
    whole = normalized(pump(open_connection(), [stream]))
    # up to the first error the cuts must not matter (one-pass publish vs frame by frame);
    # after it, how much buffered input an error discards depends on the cuts
    first_error = next((i for i, e in enumerate(whole) if isinstance(e, tuple)
                        and e[0] not in ("publish", "method")), len(whole))
    assert events[:first_error + 1] == whole[:first_error + 1]


@FUZZ
@given(hs.data())
def test_random_bytes_raise_only_amqp_errors(data):
    junk = data.draw(hs.binary(max_size=2000))
    prefix = data.draw(hs.sampled_from([b"", m(1, C.Channel.Open()),
                                        m(1, C.Channel.Open()) + m(1, C.Basic.Publish())]))
    pump(open_connection(), data.draw(chunked(prefix + junk)))


@FUZZ
@given(data=hs.data(), class_id=hs.sampled_from([60, 60, 60, 10, 0]),
       body_size=hs.integers(0, 2 ** 64 - 1) | hs.integers(0, 64),
       raw_properties=hs.binary(max_size=80), tail=hs.binary(max_size=200))
def test_random_content_headers(data, class_id, body_size, raw_properties, tail):
    """The property list is parsed by hand (properties.scan): fuzz it directly."""
    payload = struct.pack(">HHQ", class_id, 0, body_size) + raw_properties
    stream = (m(1, C.Channel.Open()) + m(1, C.Basic.Publish())
              + struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce" + tail)
    pump(open_connection(), data.draw(chunked(stream)))


@FUZZ
@given(data=hs.data(), garbage=hs.binary(max_size=64))
def test_random_bytes_before_handshake(data, garbage):
    """Fuzz the protocol header and handshake too: only events or AMQPError."""
    conn = Connection({"product": "fuzz"})
    start = data.draw(hs.sampled_from([b"", PROTOCOL_HEADER]))
    pump(conn, data.draw(chunked(start + garbage)))


@fuzz(100)
@given(ftype=hs.integers(0, 255), channel=hs.integers(0, 65535),
       size=hs.integers(FRAME_MAX + 1, 2 ** 32 - 1), more=hs.integers(1, 40))
def test_huge_declared_size_raises_before_buffering(ftype, channel, size, more):
    """A header that declares a payload over frame_max is refused on its 7 bytes alone (as
    RabbitMQ, the 8 bytes of framing may go over frame_max)."""
    conn = open_connection()
    conn.receive_data(struct.pack(">BHI", ftype, channel, size))
    try:
        conn.next_event()
    except errors.FrameError as err:
        assert err.reply_code == 501
    else:
        raise AssertionError("oversized frame header accepted")
    conn.close_connection(errors.FrameError("x"))
    # the peer keeps streaming the body it announced: nothing piles up
    for _ in range(more):
        pump(conn, [b"\x00" * 1024])
        assert pending(conn) < FRAME_MAX
