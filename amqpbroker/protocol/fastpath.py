"""Hand-written codec for the hot path: publish, content header and body, deliver, ack.

Everything else goes through pamqp (``connection.py`` decodes with its command classes). Each function here is checked against
pamqp's generic codec by ``tests/unit/protocol/test_fastpath.py``. Structs are precompiled;
functions take and return plain values, no objects per frame.

The two per-message loops, ``whole_publish`` and ``build_deliver``, are also written in C
(``_fastpath.c``, built by setup.py), and ``build_deliver_run`` (a run of deliveries from
their records' bytes); the Python versions here (``*_py``) are the reference, and the
fallback when the extension is not built. ``tests/unit/protocol/test_fastpath_c.py``
checks that both agree on any input.
"""
from __future__ import annotations

import struct

from .constants import FRAME_BODY, FRAME_END_BYTE, FRAME_HEADER, FRAME_METHOD, FRAME_OVERHEAD

FRAME_HEAD = struct.Struct(">BHI")
METHOD_ID = struct.Struct(">HH")
U64_BIT = struct.Struct(">QB")
U64 = struct.Struct(">Q")
U32 = struct.Struct(">I")
HEADER_PREFIX = struct.Struct(">HHQ")            # class, weight, body size
RECORD_HEAD = struct.Struct(">IQBB")               # a stored record's: rec_len, ts, flags, ex len
RECORD_FIXED = 8 + 1 + 1 + 1 + 4 + 4               # bytes rec_len counts besides its fields
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


def parse_modify(payload):
    """basic.modify args (ours, constants.MODIFY) -> (delivery_tag, bits, properties)."""
    if len(payload) < 17:
        raise Truncated("delivery tag")
    tag, bits = U64_BIT.unpack_from(payload, 4)
    (size,) = U32.unpack_from(payload, 13)
    if len(payload) != 17 + size:
        raise Truncated("properties")
    return tag, bits, bytes(payload[17:])


def build_modify(channel: int, delivery_tag: int, requeue: bool, properties: bytes) -> bytes:
    """basic.modify (ours, constants.MODIFY), a whole frame."""
    payload = METHOD_ID.pack(60, 200) + U64_BIT.pack(delivery_tag, int(requeue)) \
        + U32.pack(len(properties)) + properties
    return FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE


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


def whole_publish_py(buf, pos: int, frame_max: int, max_message_size: int, limit=None):
    """basic.publish + content header + one body frame, whole in ``buf`` at ``pos``:
    ``(channel, exchange, routing_key, mandatory, immediate, properties, body, next_pos)``, or
    None for anything else (incomplete, another frame, a frame not in the usual shape, an
    undecodable name): nothing is consumed then, and the frame-by-frame path decides, errors
    included. Input ends at ``limit`` (default: the buffer's end). The reference of
    ``_fastpath.whole_publish``."""
    n = len(buf) if limit is None else min(len(buf), limit)
    if pos < 0 or n - pos < 7:
        return None
    ftype, channel, size = FRAME_HEAD.unpack_from(buf, pos)
    if ftype != FRAME_METHOD or size > frame_max or size < 4:
        return None
    end = pos + 7 + size
    if n <= end or buf[end] != 0xCE or buf[pos + 7:pos + 11] != b"\x00\x3c\x00\x28":
        return None
    h = end + 1                                        # content header frame
    if n < h + 7:
        return None
    htype, hchannel, hsize = FRAME_HEAD.unpack_from(buf, h)
    hend = h + 7 + hsize
    if htype != FRAME_HEADER or hchannel != channel or hsize < 14 or hsize > frame_max \
            or n <= hend or buf[hend] != 0xCE:
        return None
    class_id, _weight, body_size = HEADER_PREFIX.unpack_from(buf, h + 7)
    if class_id != 60 or body_size > max_message_size:
        return None
    if body_size:
        b = hend + 1                                   # the body frame
        if n < b + 7:
            return None
        btype, bchannel, bsize = FRAME_HEAD.unpack_from(buf, b)
        bstart = b + 7
        bend = bstart + bsize
        if btype != FRAME_BODY or bchannel != channel or bsize != body_size \
                or n <= bend or buf[bend] != 0xCE:
            return None
    else:
        bstart = bend = hend
    try:
        exchange, routing_key, mandatory, immediate = parse_publish(bytes(buf[pos + 7:end]))
    except Truncated:
        return None
    return (channel, exchange, routing_key, mandatory, immediate, bytes(buf[h + 19:hend]),
            bytes(buf[bstart:bend]), bend + 1)


def build_deliver_py(channel: int, consumer_tag: bytes, delivery_tag: int, redelivered: bool,
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


def build_deliver_run_py(channel: int, consumer_tag: bytes, first_tag: int, records: bytes,
                         count: int, frame_max: int, copy_below: int) -> list:
    """basic.deliver + content frames for each of ``count`` records in ``records`` (records in
    the log's layout back to back, ``storage/record.py``: a ``RecordRun``'s data), tags
    ``first_tag``, ``first_tag + 1``, ..., none redelivered, as a list of parts: the
    reference of ``_fastpath.build_deliver_run`` (which joins the parts but for the payloads
    of bodies of ``copy_below`` bytes or more). ``records`` may be a memoryview (a ring's
    memory, borrowed until the call returns: ``links/ring.py``): no part returned refers to
    it. A record cut short, or bytes left after the last, is a ValueError."""
    if type(records) is not bytes:
        records = bytes(records)            # the parts may refer to bytes only
    out, pos, n = [], 0, len(records)
    for i in range(count):
        if n - pos < 4 + RECORD_FIXED:
            raise ValueError("truncated record")
        rec_len, _ts, _flags, ex_len = RECORD_HEAD.unpack_from(records, pos)
        end = pos + 4 + rec_len
        if rec_len < RECORD_FIXED or end > n:
            raise ValueError("truncated record")
        p = pos + 14
        exchange = records[p:p + ex_len]
        p += ex_len
        if p + 1 > end:
            raise ValueError("record length does not match its fields")
        rk_len = records[p]
        routing_key = records[p + 1:p + 1 + rk_len]
        p += 1 + rk_len
        if p + 4 > end:
            raise ValueError("record length does not match its fields")
        props_len = struct.unpack_from(">I", records, p)[0]
        properties = records[p + 4:p + 4 + props_len]
        p += 4 + props_len
        if p + 4 > end:
            raise ValueError("record length does not match its fields")
        body_len = struct.unpack_from(">I", records, p)[0]
        if p + 4 + body_len != end:
            raise ValueError("record length does not match its fields")
        out += build_deliver_py(channel, consumer_tag, first_tag + i, False, exchange,
                                routing_key, properties, records[p + 4:end], frame_max)
        pos = end
    if pos != n:
        raise ValueError("records left after the run's count")
    return out


try:                     # the same functions in C (``_fastpath.c``), built by setup.py
    from ._fastpath import build_deliver as _build_deliver_c, whole_publish
except ImportError:      # not built: the Python reference does the work
    whole_publish = whole_publish_py
    _build_deliver_c = None
try:
    from ._fastpath import build_deliver_run
except ImportError:      # not built (or built before it)
    build_deliver_run = build_deliver_run_py
try:
    from ._fastpath import build_publish as _build_publish_c
    from ._fastpath import build_publishes      # a list of bodies with one routing
except ImportError:      # not built (or built before it): the callers' loops
    _build_publish_c = build_publishes = None

COPY_BODY_BELOW = 8192   # bigger bodies go to the socket as the caller's object, uncopied


def build_deliver(channel: int, consumer_tag: bytes, delivery_tag: int, redelivered: bool,
                  exchange: bytes, routing_key: bytes, properties: bytes, body: bytes,
                  frame_max: int) -> list:
    """basic.deliver + content frames, as a list of bytes (the caller joins or writelines):
    one part for a small body (C), else parts whose body parts are the caller's objects.
    ``exchange`` and ``routing_key`` may be str (a record's) or encoded."""
    if _build_deliver_c is not None and len(body) < COPY_BODY_BELOW:
        return [_build_deliver_c(channel, consumer_tag, delivery_tag, redelivered, exchange,
                                 routing_key, properties, body, frame_max)]
    if isinstance(exchange, str):
        exchange = exchange.encode()
    if isinstance(routing_key, str):
        routing_key = routing_key.encode()
    return build_deliver_py(channel, consumer_tag, delivery_tag, redelivered, exchange,
                            routing_key, properties, body, frame_max)


def build_publish(channel: int, exchange: bytes, routing_key: bytes, properties: bytes,
                  body: bytes, frame_max: int, mandatory: bool = False) -> list:
    """basic.publish + content frames, as a client sends them (the protocol adapters' AMQP
    connections write their publishes with this, ``adapter.py``), as a list of bytes: one
    part from C for a small body, else ``build_publish_py``'s."""
    if _build_publish_c is not None and len(body) < COPY_BODY_BELOW:
        return [_build_publish_c(channel, exchange, routing_key, properties, body, frame_max,
                                 mandatory)]
    return build_publish_py(channel, exchange, routing_key, properties, body, frame_max,
                            mandatory)


def build_publish_py(channel: int, exchange: bytes, routing_key: bytes, properties: bytes,
                     body: bytes, frame_max: int, mandatory: bool = False) -> list:
    """``build_publish`` in Python: the reference of ``_fastpath.build_publish``."""
    args = b"".join((b"\x00\x00", bytes((len(exchange),)), exchange,
                     bytes((len(routing_key),)), routing_key,
                     b"\x01" if mandatory else b"\x00"))
    out = [FRAME_HEAD.pack(FRAME_METHOD, channel, 4 + len(args)), METHOD_ID.pack(60, 40), args,
           FRAME_END_BYTE]
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
    """basic.ack / basic.nack from the broker to a publisher in confirm mode; a basic.ack is
    the same frame when a consumer sends it (the MQTT listener's acks: mqtt/connection.py)."""
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

