"""Hand-written codec for the hot path: publish, content header and body, deliver, ack.

Everything else goes through pamqp (``connection.py`` decodes with its command classes). Each function here is checked against
pamqp's generic codec by ``tests/unit/protocol/test_fastpath.py``. Structs are precompiled;
functions take and return plain values, no objects per frame.
"""
from __future__ import annotations

import struct

from .constants import FRAME_BODY, FRAME_END_BYTE, FRAME_HEADER, FRAME_METHOD, FRAME_OVERHEAD

FRAME_HEAD = struct.Struct(">BHI")
METHOD_ID = struct.Struct(">HH")
U64_BIT = struct.Struct(">QB")
U64 = struct.Struct(">Q")
HEADER_PREFIX = struct.Struct(">HHQ")            # class, weight, body size
DELIVER_HEAD = struct.Struct(">BHIHHB")           # frame head + class/method + ctag length
GETOK_HEAD = struct.Struct(">BHIHH")
CONFIRM_FRAME = struct.Struct(">BHIHHQBB")        # whole basic.ack frame incl. end byte
DECLARE_OK_COUNTS = struct.Struct(">II")


class Truncated(ValueError):
    """A method payload ended before its arguments did."""


def parse_publish(payload: bytes):
    """basic.publish payload (from the class id on) -> (exchange, routing_key, mandatory, immediate).

    A payload cut short raises ``Truncated``: each index past the end raises IndexError.
    """
    try:
        end = 7 + payload[6]                           # 4 ids + reserved short, then shortstr
        exchange = payload[7:end].decode()
        rk_end = end + 1 + payload[end]
        routing_key = payload[end + 1:rk_end].decode()
        bits = payload[rk_end]
    except (IndexError, UnicodeDecodeError):
        raise Truncated("basic.publish") from None
    return exchange, routing_key, bool(bits & 1), bool(bits & 2)


def parse_tag_bits(payload):
    """basic.ack / nack / reject args -> (delivery_tag, bits)."""
    if len(payload) < 13:
        raise Truncated("delivery tag")
    return U64_BIT.unpack_from(payload, 4)


def parse_content_header(payload):
    """content header payload -> (class_id, body_size, raw property bytes)."""
    if len(payload) < 14:
        raise Truncated("content header")
    class_id, _weight, body_size = HEADER_PREFIX.unpack_from(payload, 0)
    return class_id, body_size, bytes(payload[12:])


def _shortstr(s: str) -> bytes:
    b = s.encode()
    return bytes((len(b),)) + b


def content_frames(channel: int, class_props_size: bytes, body: bytes, frame_max: int) -> list:
    """Header frame + body frames (split by frame_max) as a list of bytes to join."""
    out = [FRAME_HEAD.pack(FRAME_HEADER, channel, len(class_props_size)), class_props_size,
           FRAME_END_BYTE]
    if body:
        chunk = frame_max - FRAME_OVERHEAD
        size = len(body)
        if size <= chunk:
            out += (FRAME_HEAD.pack(FRAME_BODY, channel, size), body, FRAME_END_BYTE)
        else:
            view = memoryview(body)
            for i in range(0, size, chunk):
                part = view[i:i + chunk]
                out += (FRAME_HEAD.pack(FRAME_BODY, channel, len(part)), part, FRAME_END_BYTE)
    return out


def header_payload(body_size: int, properties: bytes) -> bytes:
    return HEADER_PREFIX.pack(60, 0, body_size) + properties


def build_deliver(channel: int, consumer_tag: bytes, delivery_tag: int, redelivered: bool,
                  exchange: bytes, routing_key: bytes, properties: bytes, body: bytes,
                  frame_max: int) -> list:
    """basic.deliver + content frames, as a list of bytes (the caller joins or writelines).

    ``consumer_tag``, ``exchange`` and ``routing_key`` are already-encoded shortstr bodies.
    """
    args = b"".join((consumer_tag, U64.pack(delivery_tag), b"\x01" if redelivered else b"\x00",
                     bytes((len(exchange),)), exchange, bytes((len(routing_key),)), routing_key))
    size = 5 + len(args)
    head = DELIVER_HEAD.pack(FRAME_METHOD, channel, size, 60, 60, len(consumer_tag))
    out = [head, args, FRAME_END_BYTE]
    out += content_frames(channel, header_payload(len(body), properties), body, frame_max)
    return out


def build_get_ok(channel: int, delivery_tag: int, redelivered: bool, exchange: bytes,
                 routing_key: bytes, message_count: int, properties: bytes, body: bytes,
                 frame_max: int) -> list:
    args = b"".join((U64.pack(delivery_tag), b"\x01" if redelivered else b"\x00",
                     bytes((len(exchange),)), exchange, bytes((len(routing_key),)), routing_key,
                     struct.pack(">I", message_count)))
    out = [GETOK_HEAD.pack(FRAME_METHOD, channel, 4 + len(args), 60, 71), args, FRAME_END_BYTE]
    out += content_frames(channel, header_payload(len(body), properties), body, frame_max)
    return out


def build_confirm(channel: int, delivery_tag: int, multiple: bool, nack: bool = False) -> bytes:
    """basic.ack / basic.nack from the broker to a publisher in confirm mode."""
    if nack:
        # nack: bits multiple(1), requeue(2) - requeue is meaningless for confirms, send 0
        return CONFIRM_FRAME.pack(FRAME_METHOD, channel, 13, 60, 120, delivery_tag,
                                  1 if multiple else 0, 0xCE)
    return CONFIRM_FRAME.pack(FRAME_METHOD, channel, 13, 60, 80, delivery_tag,
                              1 if multiple else 0, 0xCE)


def build_declare_ok(channel: int, queue: str, message_count: int, consumer_count: int) -> bytes:
    """queue.declare-ok. Not hot, but pamqp's ``Queue.DeclareOk`` refuses names outside
    ``[a-zA-Z0-9-_.:@#,/+ ]`` that RabbitMQ accepts (any UTF-8 shortstr: ``orders!``, ``ünï``)."""
    args = _shortstr(queue) + DECLARE_OK_COUNTS.pack(message_count, consumer_count)
    return b"".join((FRAME_HEAD.pack(FRAME_METHOD, channel, 4 + len(args)),
                     METHOD_ID.pack(50, 11), args, FRAME_END_BYTE))


def build_return(channel: int, reply_code: int, reply_text: str, exchange: str, routing_key: str,
                 properties: bytes, body: bytes, frame_max: int) -> list:
    args = (struct.pack(">H", reply_code) + _shortstr(reply_text) + _shortstr(exchange)
            + _shortstr(routing_key))
    out = [FRAME_HEAD.pack(FRAME_METHOD, channel, 4 + len(args)), METHOD_ID.pack(60, 50), args,
           FRAME_END_BYTE]
    out += content_frames(channel, header_payload(len(body), properties), body, frame_max)
    return out

