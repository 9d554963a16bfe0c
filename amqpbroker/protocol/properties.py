"""Basic properties kept as the raw bytes the publisher sent.

A message's properties travel from publish to deliver untouched (no decode, no re-encode).
The broker needs only a few of them on the hot path — delivery mode, priority, expiration and
whether headers are present — and ``scan`` reads exactly those by walking the flag word.
Routing a message with headers (headers exchange, CC/BCC, x-delay) decodes the headers table
alone (``headers_of``); anything more (dead-lettering, a de-duplication exchange's message
id) decodes in full through pamqp.

The few changes the broker makes (BCC dropped, a direct reply-to address, dead-letter headers)
are spliced into the publisher's bytes by ``rewrite``: every other property and header keeps
its exact wire form. Decoding to Python and encoding back would not: pamqp's encoder writes
every float as a 32-bit float, an 8-byte long that fits as a byte, refuses a longstr that is not
UTF-8 (which it decodes to ``bytes``), and reads timestamps past 2106 as milliseconds.
"""
from __future__ import annotations

import struct

from pamqp import commands, decode as pdecode, encode as pencode
from pamqp.header import ContentHeader

from . import fieldtable


# property flag bits, in wire order
F_CONTENT_TYPE = 0x8000
F_CONTENT_ENCODING = 0x4000
F_HEADERS = 0x2000
F_DELIVERY_MODE = 0x1000
F_PRIORITY = 0x0800
F_CORRELATION_ID = 0x0400
F_REPLY_TO = 0x0200
F_EXPIRATION = 0x0100
F_MESSAGE_ID = 0x0080
F_TIMESTAMP = 0x0040
F_TYPE = 0x0020
F_USER_ID = 0x0010
F_APP_ID = 0x0008
F_CLUSTER_ID = 0x0004

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class Scan:
    """The few properties the broker acts on for every message; ``headers``, the headers
    table once routing decoded it (``frontend/channel.py``), kept with the scan so that
    property lists ``scan_cached`` remembers are decoded once (read-only, shared)."""
    __slots__ = ("flags", "delivery_mode", "priority", "expiration", "reply_to", "user_id",
                 "has_headers", "headers")

    def __init__(self, flags, delivery_mode, priority, expiration, reply_to, user_id):
        self.flags = flags
        # asked of every publish: an attribute, not a property (a Scan is never changed
        # but for ``headers``, filled once from the same bytes)
        self.has_headers = bool(flags & F_HEADERS)
        self.headers: dict | None = None
        self.delivery_mode = delivery_mode
        self.priority = priority
        self.expiration = expiration
        self.reply_to = reply_to
        self.user_id = user_id

    @property
    def persistent(self) -> bool:
        return self.delivery_mode == 2


def str_list(v) -> list[str]:
    """A header that holds routing keys (CC, BCC): a string or an array of them, as str.
    As RabbitMQ's ``header_routes``, an element that is not a string is no route; nor is a
    longstr that is not UTF-8 (no binding key or queue name can equal it)."""
    if v is None:
        return []
    return [x for x in map(_route, v if isinstance(v, (list, tuple)) else [v]) if x is not None]


def _route(x) -> str | None:
    if isinstance(x, str):
        return x
    if isinstance(x, bytes):                    # a longstr; a byte array ('x') is no route
        try:
            return x.decode()
        except UnicodeDecodeError:
            return None
    return None


def scan(raw: bytes) -> Scan:
    """Read delivery_mode, priority, expiration, reply_to, user_id from raw property bytes.

    Raises ValueError on a malformed property list.
    """
    if len(raw) < 2:
        raise ValueError("property flags truncated")
    flags = _U16.unpack_from(raw, 0)[0]
    pos = 2
    delivery_mode = priority = 0
    expiration = reply_to = user_id = None
    n = len(raw)
    try:
        if flags & 1:                           # continuation flag words: skip them
            while True:
                more = _U16.unpack_from(raw, pos)[0]
                pos += 2
                if not more & 1:
                    break
        if flags & F_CONTENT_TYPE:
            pos += 1 + raw[pos]
        if flags & F_CONTENT_ENCODING:
            pos += 1 + raw[pos]
        if flags & F_HEADERS:
            pos += 4 + _U32.unpack_from(raw, pos)[0]
        if flags & F_DELIVERY_MODE:
            delivery_mode = raw[pos]
            pos += 1
        if flags & F_PRIORITY:
            priority = raw[pos]
            pos += 1
        if flags & F_CORRELATION_ID:
            pos += 1 + raw[pos]
        if flags & F_REPLY_TO:
            end = pos + 1 + raw[pos]
            reply_to = raw[pos + 1:end].decode()
            pos = end
        if flags & F_EXPIRATION:
            end = pos + 1 + raw[pos]
            expiration = raw[pos + 1:end].decode()
            pos = end
        if flags & F_MESSAGE_ID:
            pos += 1 + raw[pos]
        if flags & F_TIMESTAMP:
            pos += 8
        if flags & F_TYPE:
            pos += 1 + raw[pos]
        if flags & F_USER_ID:
            end = pos + 1 + raw[pos]
            user_id = raw[pos + 1:end].decode()
            pos = end
        if flags & F_APP_ID:
            pos += 1 + raw[pos]
        if flags & F_CLUSTER_ID:
            pos += 1 + raw[pos]
    except (IndexError, struct.error, UnicodeDecodeError):
        raise ValueError("property list truncated") from None
    if pos > n:
        raise ValueError("property list truncated")
    return Scan(flags, delivery_mode, priority, expiration, reply_to, user_id)


_SCANS: dict = {}          # raw property bytes -> Scan, for the few lists a workload repeats
_SCANS_MAX = 256


def scan_cached(raw: bytes) -> Scan:
    """``scan``, remembered for property lists seen before (a publisher sends the same few
    over and over: none, delivery-mode 2, a content type; a stream client's raw messages
    their headers). Messages share one Scan, and with it its decoded headers. Lists that differ per message (a message id, a
    timestamp) fill the table, which is then emptied and refilled."""
    s = _SCANS.get(raw)
    if s is None:
        s = scan(raw)
        if len(_SCANS) >= _SCANS_MAX:
            _SCANS.clear()
        _SCANS[raw] = s
    return s


def decode(raw: bytes) -> commands.Basic.Properties:
    """Full decode (cold path). Raises ValueError on a malformed property list (``scan``
    skips the headers table unread): pamqp raises ValueError, OverflowError (a timestamp past
    year 9999), RecursionError (tables nested deeper than Python's stack) and others."""
    header = ContentHeader()
    try:
        header.unmarshal(b"\x00\x3c\x00\x00" + bytes(8) + raw)
    except Exception as exc:
        raise ValueError(str(exc)[:200] or type(exc).__name__) from None
    return header.properties


def _headers_at(raw: bytes, flags: int, pos: int = 2) -> int:
    """Where the headers table starts (or would): past the content type and encoding
    (``pos``: past the flag words)."""
    if flags & F_CONTENT_TYPE:
        pos += 1 + raw[pos]
    if flags & F_CONTENT_ENCODING:
        pos += 1 + raw[pos]
    return pos


def headers_of(raw: bytes) -> dict:
    """The headers table alone, decoded ({} without one): what routing reads of a message
    with headers (a headers exchange, CC / BCC, x-delay, ...), at a fraction of ``decode``'s
    cost (pamqp builds and checks every property). The table decodes as ``decode`` would
    decode it (``fieldtable``, installed into pamqp); raises ValueError as ``decode`` does
    for a malformed one, nested tables and arrays included. Assumes a property list that
    ``scan`` read (its flags and the fields before the headers are whole)."""
    if len(raw) < 2:
        raise ValueError("property flags truncated")
    flags = _U16.unpack_from(raw, 0)[0]
    if not flags & F_HEADERS:
        return {}
    pos = 2
    if flags & 1:                               # continuation flag words
        while _U16.unpack_from(raw, pos)[0] & 1:
            pos += 2
        pos += 2
    try:
        return fieldtable.field_table(raw[_headers_at(raw, flags, pos):])[1]
    except Exception as exc:        # noqa: BLE001 -- as decode: OverflowError, RecursionError
        raise ValueError(str(exc)[:200] or type(exc).__name__) from None


def pick(raw: bytes, names) -> tuple[dict, str | None]:
    """The headers among ``names`` and the message_id, decoding nothing else: the worker's
    de-duplication reads these of every message it checks (worker/dedup.py), and a full
    ``decode`` costs several times more. Raises ValueError as ``decode`` does."""
    fields = split(raw)
    headers = {}
    table = fields.get(F_HEADERS)
    if table is not None:
        for key, entry in _table_entries(table[4:]):
            if key in names:
                headers[key] = decode_value(entry[1 + entry[0]:])
    mid = fields.get(F_MESSAGE_ID)
    return headers, (mid[1:].decode("utf-8", "replace") if mid is not None else None)


def x_death(raw: bytes) -> list[tuple[str | None, str | None, bytes]]:
    """The elements of the ``x-death`` header, most recent first, without decoding them:
    (queue, reason, the element's wire bytes, type byte included) each. queue and reason
    are None for an element that is not a table or where they are not strings; [] when there
    is no ``x-death`` array. Dead-lettering reads the history of every message it moves and
    keeps the elements it does not change as they are: a chain of n queues would otherwise
    decode and encode n tables at each of its n hops. Raises ValueError as ``decode``."""
    table = split(raw).get(F_HEADERS)
    if table is None:
        return []
    for key, entry in _table_entries(table[4:]):
        if key == "x-death":
            value = entry[1 + entry[0]:]
            break
    else:
        return []
    if value[:1] != b"A":
        return []
    end = _skip_value(value, 0)
    out, pos = [], 5
    try:
        while pos < end:
            stop = _skip_value(value, pos)
            if stop > end:
                raise ValueError("field array truncated")
            queue = reason = None
            if value[pos] == _TABLE:        # walk its entries up to queue and reason
                at = pos + 5
                while at < stop and (queue is None or reason is None):
                    key_end = at + 1 + value[at]
                    key = value[at + 1:key_end]
                    at = _skip_value(value, key_end)
                    if key == b"queue":
                        queue = _string_value(value, key_end, at)
                    elif key == b"reason":
                        reason = _string_value(value, key_end, at)
                if at > stop:
                    raise ValueError("field table truncated")
            out.append((queue, reason, value[pos:stop]))
            pos = stop
    except IndexError:
        raise ValueError("field array truncated") from None
    return out


def _string_value(buf: bytes, pos: int, end: int) -> str | None:
    """The longstr field value at ``buf[pos:end]`` ('S', u32 length, UTF-8) as str; None for
    anything else."""
    if buf[pos] != _LONGSTR:
        return None
    try:
        return buf[pos + 5:end].decode()
    except UnicodeDecodeError:
        return None


_TABLE, _LONGSTR = ord("F"), ord("S")


def decode_value(wire: bytes):
    """One field value from its wire bytes (type byte first). Raises ValueError."""
    try:
        return pdecode.embedded_value(wire)[1]
    except Exception as exc:
        raise ValueError(str(exc)[:200] or type(exc).__name__) from None


def encode(props: commands.Basic.Properties) -> bytes:
    return props.marshal()


# ------------------------------------------------------------------------- rewriting
KEEP = object()          # rewrite(): leave this property as it is


class Long(int):
    """An integer written as a signed 64-bit field ('l'), whatever its size: the type RabbitMQ
    gives the integers it adds (x-delivery-count, x-death's count, x-stream-offset)."""

# every property in wire order: flag bit, and the width of a fixed-size one (0: shortstr)
_LAYOUT = ((F_CONTENT_TYPE, 0), (F_CONTENT_ENCODING, 0), (F_HEADERS, None),
           (F_DELIVERY_MODE, 1), (F_PRIORITY, 1), (F_CORRELATION_ID, 0), (F_REPLY_TO, 0),
           (F_EXPIRATION, 0), (F_MESSAGE_ID, 0), (F_TIMESTAMP, 8), (F_TYPE, 0),
           (F_USER_ID, 0), (F_APP_ID, 0), (F_CLUSTER_ID, 0))
# field value type -> size of a fixed-size value; the others carry a 4-byte length
_FIXED = {ord("t"): 1, ord("b"): 1, ord("B"): 1, ord("s"): 2, ord("u"): 2, ord("I"): 4,
          ord("i"): 4, ord("f"): 4, ord("l"): 8, ord("L"): 8, ord("d"): 8, ord("T"): 8,
          ord("D"): 5, ord("V"): 0, 0: 0}
_SIZED = frozenset(b"SxAF")


def rewrite(raw: bytes, *, reply_to=KEEP, expiration=KEEP, drop_headers=(),
            set_headers: dict | None = None) -> bytes:
    """``raw`` with reply_to / expiration replaced (None removes one), the headers in
    ``drop_headers`` removed and those in ``set_headers`` replaced or added; everything else
    byte for byte as the publisher sent it. Raises ValueError on a malformed property list."""
    fields = split(raw)
    if reply_to is not KEEP:
        fields[F_REPLY_TO] = None if reply_to is None else _shortstr(reply_to)
    if expiration is not KEEP:
        fields[F_EXPIRATION] = None if expiration is None else _shortstr(expiration)
    if drop_headers or set_headers:
        gone = set(drop_headers) | set(set_headers or ())
        table = fields.get(F_HEADERS)
        entries = [e for k, e in _table_entries(table[4:])
                   if k not in gone] if table is not None else []
        for key, value in (set_headers or {}).items():
            entries.append(_shortstr(key) + encode_value(value))
        body = b"".join(entries)
        fields[F_HEADERS] = _U32.pack(len(body)) + body
    flags = fields.pop("flags")
    out = []
    for bit, _ in _LAYOUT:
        span = fields.get(bit)
        if span is None:
            flags &= ~bit
        else:
            flags |= bit
            out.append(span)
    return _U16.pack(flags) + fields.pop("more") + b"".join(out)


def split(raw: bytes) -> dict:
    """Flag bit -> the property's wire bytes; "flags", and "more" (continuation words)."""
    try:
        flags = _U16.unpack_from(raw, 0)[0]
        pos = 2
        while _U16.unpack_from(raw, pos - 2)[0] & 1:
            pos += 2
        out = {"flags": flags, "more": raw[2:pos]}
        for bit, width in _LAYOUT:
            if not flags & bit:
                continue
            if width is None:
                end = pos + 4 + _U32.unpack_from(raw, pos)[0]
            else:
                end = pos + (width or 1 + raw[pos])
            if end > len(raw):
                raise ValueError("property list truncated")
            out[bit] = raw[pos:end]
            pos = end
    except (IndexError, struct.error):
        raise ValueError("property list truncated") from None
    return out


def _table_entries(body: bytes):
    """(key, the entry's wire bytes) for each entry of a field table's body."""
    pos, n = 0, len(body)
    while pos < n:
        start = pos
        key_end = pos + 1 + body[pos]
        key = body[pos + 1:key_end].decode("utf-8", "surrogateescape")
        pos = _skip_value(body, key_end)
        if pos > n:
            raise ValueError("field table truncated")
        yield key, body[start:pos]


def _skip_value(buf: bytes, pos: int) -> int:
    if pos >= len(buf):
        raise ValueError("field value truncated")
    tag = buf[pos]
    size = _FIXED.get(tag)
    if size is not None:
        return pos + 1 + size
    if tag in _SIZED:
        if pos + 5 > len(buf):
            raise ValueError("field value truncated")
        return pos + 5 + _U32.unpack_from(buf, pos + 1)[0]
    raise ValueError(f"unknown field type {bytes([tag])!r}")


def _shortstr(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"shortstr of {len(raw)} bytes")
    return bytes([len(raw)]) + raw


_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


def with_long_header(raw: bytes, key: str, value: int) -> bytes:
    """``raw`` with header ``key`` set to ``value`` as a long ('l'): what ``rewrite`` does
    with ``set_headers={key: Long(value)}``, in one splice for the usual case (a delivery's
    ``x-stream-offset``): the entry is appended to the headers table (created if absent).
    A property list with continuation flags, or whose headers may hold ``key`` already,
    goes through ``rewrite``."""
    name = _shortstr(key)
    return _append_headers(raw, (name,), name + b"l" + _I64.pack(value),
                           lambda: rewrite(raw, set_headers={key: Long(value)}))


# the headers with which the stream protocol keeps an AMQP 1.0 message's bytes before and
# after its body (stream_protocol/connection.py), for its own consumers only
STREAM_AROUND = ("x-stream-amqp-1.0-prefix", "x-stream-amqp-1.0-suffix")
_AROUND_MARK = b"x-stream-amqp-1.0-"


def with_stream_offset(raw: bytes, offset: int) -> bytes:
    """A stream delivery's properties for any client but a stream protocol consumer:
    ``x-stream-offset`` appended, and the ``STREAM_AROUND`` headers removed -- RabbitMQ's
    AMQP 0-9-1 view of a message published over the stream protocol has none."""
    if _AROUND_MARK in raw:
        return rewrite(raw, drop_headers=STREAM_AROUND,
                       set_headers={"x-stream-offset": Long(offset)})
    return with_long_header(raw, "x-stream-offset", offset)


def with_stream_headers(raw: bytes, offset: int, timestamp: int) -> bytes:
    """``raw`` with a stream delivery's ``x-stream-offset`` and, for the stream protocol's
    chunks (stream_protocol/), ``x-stream-timestamp`` (when it was stored, ms; longs): in C
    (``_fastpath.c``) where the splice is the answer, else ``with_stream_headers_py``."""
    if _with_stream_headers_c is not None:
        out = _with_stream_headers_c(raw, offset, timestamp)
        if out is not NotImplemented:
            return out
    return with_stream_headers_py(raw, offset, timestamp)


def with_stream_headers_py(raw: bytes, offset: int, timestamp: int) -> bytes:
    """``with_stream_headers`` in Python, the reference."""
    return _append_headers(
        raw, (_X_STREAM_OFFSET, _X_STREAM_TIMESTAMP),
        _X_STREAM_OFFSET + b"l" + _I64.pack(offset) + _X_STREAM_TIMESTAMP + b"l"
        + _I64.pack(timestamp),
        lambda: rewrite(raw, set_headers={"x-stream-offset": Long(offset),
                                          "x-stream-timestamp": Long(timestamp)}))


def with_group_headers(raw: bytes, partition: int, offset: int) -> bytes:
    """``raw`` with a consumer group delivery's headers, ``x-partition`` (int, 'I') and
    ``x-stream-offset`` (long), spliced as ``with_long_header`` does."""
    return _append_headers(
        raw, (_X_PARTITION, _X_STREAM_OFFSET),
        _X_PARTITION + b"I" + _I32.pack(partition) + _X_STREAM_OFFSET + b"l" + _I64.pack(offset),
        lambda: rewrite(raw, set_headers={"x-partition": Int(partition),
                                          "x-stream-offset": Long(offset)}))


def with_binary_headers(raw: bytes, values: dict) -> bytes:
    """``raw`` with headers ``values`` (floats and bytes, not in ``raw``'s headers) appended
    as doubles ('d') and byte arrays ('x'), as RabbitMQ carries an AMQP 1.0 double and
    binary: pamqp writes a float as a 32-bit 'f' and has no byte arrays."""
    entries = b"".join(
        _shortstr(k) + (b"d" + _F64.pack(v) if isinstance(v, float)
                         else b"x" + _U32.pack(len(v)) + bytes(v))
        for k, v in values.items())
    return _append_headers(raw, (), entries, lambda: rewrite(raw, set_headers=values))


def stream_place(raw: bytes) -> tuple[int, int, int, int] | None:
    """A stream delivery's ``x-stream-offset`` and ``x-stream-timestamp`` read where
    ``with_stream_headers`` put them, the last two entries of the headers table (always the
    last: appended, or rewritten to the end), without walking the table: (offset,
    timestamp, start, stop) with ``raw[start:stop]`` the table's other entries; None when
    the table does not end with them (``pick`` then). In C where it can, as above."""
    if _stream_place_c is not None:
        out = _stream_place_c(raw)
        if out is not NotImplemented:
            return out
    return stream_place_py(raw)


def stream_place_py(raw: bytes) -> tuple[int, int, int, int] | None:
    """``stream_place`` in Python, the reference."""
    if len(raw) < 6:
        return None
    flags = _U16.unpack_from(raw, 0)[0]
    if not flags & F_HEADERS or flags & 1:
        return None
    pos = _headers_at(raw, flags)
    if pos + 4 > len(raw):
        return None
    end = pos + 4 + _U32.unpack_from(raw, pos)[0]
    stamp_at = end - _STAMP_ENTRY
    offset_at = stamp_at - _OFFSET_ENTRY
    if offset_at < pos + 4 or end > len(raw) \
            or not raw.startswith(_OFFSET_HEAD, offset_at) \
            or not raw.startswith(_STAMP_HEAD, stamp_at):
        return None
    return (_I64.unpack_from(raw, offset_at + len(_OFFSET_HEAD))[0],
            _I64.unpack_from(raw, stamp_at + len(_STAMP_HEAD))[0], pos + 4, offset_at)


def _append_headers(raw: bytes, names, entries: bytes, slow) -> bytes:
    """``raw`` with the table ``entries`` appended to its headers (created if absent), or
    ``slow()`` when that splice cannot be right (continuation flags; a header of one of
    ``names``, short strings with their length byte, may be there already)."""
    flags = (raw[0] << 8) | raw[1]
    if flags & 1:
        return slow()
    pos = _headers_at(raw, flags)
    if flags & F_HEADERS:
        n = _U32.unpack_from(raw, pos)[0]
        end = pos + 4 + n
        for name in names:                          # searched in place: no copy
            if raw.find(name, pos + 4, end) >= 0:
                return slow()
        return b"".join((raw[:pos], _U32.pack(n + len(entries)), raw[pos + 4:end], entries,
                         raw[end:]))
    return b"".join((_U16.pack(flags | F_HEADERS), raw[2:pos], _U32.pack(len(entries)),
                     entries, raw[pos:]))


_I32 = struct.Struct(">i")
_X_PARTITION = _shortstr("x-partition")
_X_STREAM_OFFSET = _shortstr("x-stream-offset")
_X_STREAM_TIMESTAMP = _shortstr("x-stream-timestamp")
_OFFSET_HEAD, _STAMP_HEAD = _X_STREAM_OFFSET + b"l", _X_STREAM_TIMESTAMP + b"l"
_OFFSET_ENTRY, _STAMP_ENTRY = len(_OFFSET_HEAD) + 8, len(_STAMP_HEAD) + 8


try:                     # built by setup.py; the Python versions above are the reference
    from ._fastpath import stream_place as _stream_place_c
    from ._fastpath import with_stream_headers as _with_stream_headers_c
except ImportError:      # not built (or built before them)
    _stream_place_c = _with_stream_headers_c = None


class Encoded(bytes):
    """A field value already in its wire form (type byte included): written as it is."""


class Int(int):
    """An integer written as a signed 32-bit field ('I'): the ``x-partition`` header of a
    consumer group's deliveries (Kafka's partition number is an int32)."""


def encode_value(v) -> bytes:
    """A field value as the broker writes one: pamqp's encoding, except that a float is a
    double (no precision lost) and bytes (a longstr that was not UTF-8) stay a longstr."""
    if type(v) is Encoded:
        return bytes(v)
    if type(v) is Long:
        return b"l" + struct.pack(">q", v)
    if type(v) is Int:
        return b"I" + struct.pack(">i", v)
    if isinstance(v, bytes):
        return b"S" + _U32.pack(len(v)) + v
    if isinstance(v, float):
        return b"d" + struct.pack(">d", v)
    if isinstance(v, dict):
        body = b"".join(_shortstr(k) + encode_value(x) for k, x in v.items())
        return b"F" + _U32.pack(len(body)) + body
    if isinstance(v, list):
        body = b"".join(encode_value(x) for x in v)
        return b"A" + _U32.pack(len(body)) + body
    return pencode.encode_table_value(v)

