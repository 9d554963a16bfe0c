"""AMQP 1.0 messages (what stream-protocol clients publish) to AMQP 0-9-1 and back, as
RabbitMQ 3.10.8's ``rabbit_msg_record`` converts them. Pure functions, no I/O.

A stream-protocol client (rstream, the Java stream client) publishes an AMQP 1.0 message:
a sequence of described sections (``0x00``, a descriptor, a value). The descriptor is the ulong
code ``0x70``..``0x78`` or its symbolic name: header (list), delivery-annotations (map),
message-annotations (map), properties (list), application-properties (map), then the body:
data (binary) sections, amqp-sequence (list) sections or one amqp-value, and a footer (map).
:func:`to_amqp091` turns such bytes into the keyword arguments of ``pika.BasicProperties`` and
a body, for an AMQP 0-9-1 consumer of the stream; :func:`from_amqp091` turns a message published
over AMQP 0-9-1 into the bytes a stream-protocol consumer gets. Bytes that are not one complete
message raise :class:`NotAmqp10`: a parse error, trailing bytes, a section that is not one of the
nine, or no body section at all (3.10.8 cannot convert a message without a data section either).

AMQP 1.0 to 0-9-1 (``rabbit_msg_record:to_amqp091/1``; the ``[3.13]`` rows are where 3.10.8
has no mapping, it fails on the section, and RabbitMQ 3.13's ``mc_amqpl`` is followed)::

    properties.message-id        message_id; a uuid, ulong or binary (base64) id as a string
                                 plus header x-message-id-type "uuid"/"ulong"/"binary"; a
                                 string or base64 over 255 bytes: header x-message-id instead
    properties.correlation-id    correlation_id, the same way (x-correlation-id-type)
    properties.user-id           user_id (UTF-8)
    properties.reply-to          reply_to
    properties.content-type      content_type
    properties.content-encoding  content_encoding
    properties.creation-time     timestamp (milliseconds div 1000)
    application-properties       headers; x-basic-type -> type, x-basic-app-id -> app_id;
                                 [ours] a ulong over 2**63 - 1 is left out (no 0-9-1
                                 field type holds it)
    message-annotations          x-basic-priority -> priority, x-basic-delivery-mode ->
                                 delivery_mode, x-basic-expiration -> expiration; the
                                 other annotations are dropped (x-exchange and x-routing-key
                                 are for the stream queue, not the properties)
    data sections                the body: all of them, one after the other (3.10.8
                                 keeps the last one only, losing the others)
    amqp-value binary / string   the body: the bytes / the string in UTF-8 (ours: 3.10.8
                                 fails on it, 3.13 keeps it as in the next-but-one row)
    [3.13] header                durable true -> delivery_mode 2, false -> 1; priority ->
                                 priority; ttl -> expiration (decimal string); each before
                                 the x-basic-* annotation
    [3.13] amqp-sequence, or an  the body sections' bytes as the body, type "amqp-1.0"
           amqp-value that is
           not binary or string
    [3.13] delivery-annotations, dropped
           footer

Header values: string and symbol -> str, the integers -> int, float and double -> float,
boolean -> bool, binary -> bytes, null -> None, timestamp -> an aware UTC ``datetime`` (whole
seconds, as pika decodes a 0-9-1 timestamp), list -> list and map -> dict ([3.13]); uuid,
char, decimal, array and described values, which neither 3.10.8 nor 3.13 maps, are dropped.
Properties' to, subject, absolute-expiry-time, group-id, group-sequence and reply-to-group-id
have no 0-9-1 field in 3.10.8 and are dropped, as are shortstr values over 255 bytes (3.13).

AMQP 0-9-1 to 1.0 (``rabbit_msg_record:from_amqp091/2`` and ``to_iodata/1``, byte for byte):
message-annotations ``x-basic-priority`` (ubyte), ``x-basic-delivery-mode`` (ubyte),
``x-basic-expiration`` (string), preceded by ``x-routing-key`` and ``x-exchange`` when given
(the stream queue's ``msg_to_iodata/1`` adds them); a properties section (13 fields: message-id,
reply-to and correlation-id strings, user-id binary, content-type and content-encoding symbols,
creation-time = timestamp * 1000); application-properties ``x-basic-type`` and
``x-basic-app-id`` then the headers in order (table and array values dropped, as 3.10.8 does);
one data section with the body. Empty sections are left out, except the data section. 3.10.8
writes no header section: durability and priority travel as the x-basic-* annotations, and
:func:`to_amqp091` reads them back, so a message round-trips. Nor does it turn headers such as
x-message-id-type back into a typed message-id: they stay application properties, which
:func:`to_amqp091` gives back as headers.
"""
from __future__ import annotations

import base64
import calendar
import datetime
import struct
import uuid

import pika
from pamqp.commands import Basic

from ..protocol import properties as props_mod

__all__ = ["NotAmqp10", "to_amqp091", "from_amqp091"]


class NotAmqp10(ValueError):
    """The bytes are not one complete AMQP 1.0 message (a parse error, trailing bytes, a
    section that is not a described header, annotations, properties, body or footer, or no
    body section)."""


# section descriptors (AMQP 1.0 part 3.2)
HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, PROPERTIES = 0x70, 0x71, 0x72, 0x73
APPLICATION_PROPERTIES, DATA, AMQP_SEQUENCE, AMQP_VALUE, FOOTER = 0x74, 0x75, 0x76, 0x77, 0x78
_SECTION_NAMES = {
    "amqp:header:list": HEADER,
    "amqp:delivery-annotations:map": DELIVERY_ANNOTATIONS,
    "amqp:message-annotations:map": MESSAGE_ANNOTATIONS,
    "amqp:properties:list": PROPERTIES,
    "amqp:application-properties:map": APPLICATION_PROPERTIES,
    "amqp:data:binary": DATA,
    "amqp:amqp-sequence:list": AMQP_SEQUENCE,
    "amqp:amqp-value:*": AMQP_VALUE,
    "amqp:footer:map": FOOTER,
}
# the type each section's value must have (None: any)
_SECTION_TYPES = {
    HEADER: "list", DELIVERY_ANNOTATIONS: "map", MESSAGE_ANNOTATIONS: "map",
    PROPERTIES: "list", APPLICATION_PROPERTIES: "map", DATA: "binary",
    AMQP_SEQUENCE: "list", AMQP_VALUE: None, FOOTER: "map",
}
_BODY_SECTIONS = (DATA, AMQP_SEQUENCE, AMQP_VALUE)

# A decoded value is a (type, python value) pair, as rabbit_msg_record's {Type, Value}:
# ("utf8", "text"), ("ulong", 7), ("list", [values]), ("map", [(key, value)]),
# ("described", (descriptor, value)), ("null", None), ...
NULL = ("null", None)

# constructor -> the value it stands for, with no bytes after it
_CONSTANTS = {0x40: NULL, 0x41: ("boolean", True), 0x42: ("boolean", False),
              0x43: ("uint", 0), 0x44: ("ulong", 0)}
# constructor -> (type, the struct of the bytes after it)
_FIXED = {ctor: (kind, struct.Struct(fmt)) for ctor, (kind, fmt) in {
    0x50: ("ubyte", ">B"), 0x51: ("byte", ">b"), 0x52: ("uint", ">B"), 0x53: ("ulong", ">B"),
    0x54: ("int", ">b"), 0x55: ("long", ">b"), 0x60: ("ushort", ">H"), 0x61: ("short", ">h"),
    0x70: ("uint", ">I"), 0x71: ("int", ">i"), 0x72: ("float", ">f"), 0x80: ("ulong", ">Q"),
    0x81: ("long", ">q"), 0x82: ("double", ">d"), 0x83: ("timestamp", ">q"),
}.items()}
_U32 = struct.Struct(">I")
# constructor -> (type, width) of an opaque fixed-width value, kept as its bytes
_DECIMALS = {0x74: ("decimal32", 4), 0x84: ("decimal64", 8), 0x94: ("decimal128", 16)}
# constructor -> (type, bytes of the size that follows it)
_VARIABLE = {0xa0: ("binary", 1), 0xa1: ("utf8", 1), 0xa3: ("symbol", 1),
             0xb0: ("binary", 4), 0xb1: ("utf8", 4), 0xb3: ("symbol", 4)}
_COMPOUNDS = {0xc0: ("list", 1), 0xc1: ("map", 1), 0xd0: ("list", 4), 0xd1: ("map", 4),
              0xe0: ("array", 1), 0xf0: ("array", 4)}
_INTEGERS = ("ubyte", "ushort", "uint", "ulong", "byte", "short", "int", "long")

_SHORTSTR_MAX = 255       # bytes in an AMQP 0-9-1 shortstr
_AMQP10_TYPE = "amqp-1.0"  # 3.13's basic.type of a body kept as encoded sections
_DROP = object()          # a header value with no 0-9-1 mapping


# --- parsing ---------------------------------------------------------------------------------

def _take(data: bytes, pos: int, end: int, n: int) -> tuple[bytes, int]:
    if n > end - pos:
        raise NotAmqp10(f"truncated: {n} bytes needed at byte {pos}, {end - pos} left")
    return data[pos:pos + n], pos + n


def _size(data: bytes, pos: int, end: int, width: int) -> tuple[int, int]:
    if width > end - pos:
        raise NotAmqp10(f"truncated: {width} bytes needed at byte {pos}, {end - pos} left")
    if width == 1:
        return data[pos], pos + 1
    return _U32.unpack_from(data, pos)[0], pos + 4


def _value(data: bytes, pos: int, end: int) -> tuple[tuple, int]:
    """The value encoded at ``pos`` (constructor included) and the position after it."""
    if pos >= end:
        raise NotAmqp10(f"truncated: 1 bytes needed at byte {pos}, {end - pos} left")
    ctor = data[pos]
    pos += 1
    if ctor == 0x00:
        descriptor, pos = _value(data, pos, end)
        value, pos = _value(data, pos, end)
        return ("described", (descriptor, value)), pos
    return _after_constructor(ctor, data, pos, end)


def _after_constructor(ctor: int, data: bytes, pos: int, end: int) -> tuple[tuple, int]:
    """The value of type ``ctor`` whose bytes start at ``pos`` (arrays' elements have their
    constructor once, before them all)."""
    if ctor in _CONSTANTS:
        return _CONSTANTS[ctor], pos
    if ctor == 0x45:
        return ("list", []), pos
    fixed = _FIXED.get(ctor)
    if fixed is not None:
        kind, unpack = fixed
        if unpack.size > end - pos:
            raise NotAmqp10(f"truncated: {unpack.size} bytes needed at byte {pos}, "
                            f"{end - pos} left")
        return (kind, unpack.unpack_from(data, pos)[0]), pos + unpack.size
    if ctor == 0x56:
        flag, pos = _size(data, pos, end, 1)
        if flag > 1:
            raise NotAmqp10(f"boolean 0x{flag:02x} at byte {pos - 1}")
        return ("boolean", flag == 1), pos
    if ctor == 0x73:
        code, pos = _size(data, pos, end, 4)
        if code > 0x10FFFF:
            raise NotAmqp10(f"char U+{code:X} at byte {pos - 4}")
        return ("char", chr(code)), pos
    if ctor in _DECIMALS:
        kind, width = _DECIMALS[ctor]
        raw, pos = _take(data, pos, end, width)
        return (kind, raw), pos
    if ctor == 0x98:
        raw, pos = _take(data, pos, end, 16)
        return ("uuid", uuid.UUID(bytes=raw)), pos
    if ctor in _VARIABLE:
        kind, width = _VARIABLE[ctor]
        size, pos = _size(data, pos, end, width)
        raw, pos = _take(data, pos, end, size)
        if kind == "binary":
            return (kind, raw), pos
        try:
            return (kind, raw.decode("utf-8")), pos
        except UnicodeDecodeError:
            raise NotAmqp10(f"{kind} at byte {pos - size} is not UTF-8") from None
    if ctor in _COMPOUNDS:
        return _compound(ctor, data, pos, end)
    raise NotAmqp10(f"unknown constructor 0x{ctor:02x} at byte {pos - 1}")


def _compound(ctor: int, data: bytes, pos: int, end: int) -> tuple[tuple, int]:
    """A list, map or array: its size, its count, then its items, which fill the size."""
    kind, width = _COMPOUNDS[ctor]
    size, pos = _size(data, pos, end, width)
    _, stop = _take(data, pos, end, size)
    count, pos = _size(data, pos, stop, width)
    # every item takes at least a byte (arrays of null/true/false elements, which could take
    # none, are refused beyond that: a 4-byte count must not make billions of values)
    if count > stop - pos:
        raise NotAmqp10(f"{kind} of {count} items in {stop - pos} bytes at byte {pos}")
    items = []
    if kind == "array":
        if count or pos < stop:
            ctor, pos = _size(data, pos, stop, 1)
            descriptor = None
            if ctor == 0x00:
                descriptor, pos = _value(data, pos, stop)
                ctor, pos = _size(data, pos, stop, 1)
            for _ in range(count):
                item, pos = _after_constructor(ctor, data, pos, stop)
                items.append(item if descriptor is None else ("described", (descriptor, item)))
    else:
        for _ in range(count):
            item, pos = _value(data, pos, stop)
            items.append(item)
    if pos != stop:
        raise NotAmqp10(f"{kind} ends at byte {pos}, its size says {stop}")
    if kind == "map":
        if count % 2:
            raise NotAmqp10(f"map with an odd count ({count}) at byte {pos}")
        items = list(zip(items[0::2], items[1::2]))
    return (kind, items), pos


def _section_code(descriptor: tuple) -> int | None:
    kind, value = descriptor
    if kind == "ulong" and HEADER <= value <= FOOTER:
        return value
    if kind == "symbol":
        return _SECTION_NAMES.get(value)
    return None


def _sections(data: bytes) -> list[tuple[int, tuple, bytes]]:
    """The message's sections as (descriptor code, value, encoded bytes); raises
    ``NotAmqp10``."""
    data = bytes(data)
    sections = []
    pos = 0
    try:
        while pos < len(data):
            start = pos
            if data[pos] != 0x00:
                raise NotAmqp10(f"byte {pos}: 0x{data[pos]:02x}, not a described section")
            (_, (descriptor, value)), pos = _value(data, pos, len(data))
            code = _section_code(descriptor)
            if code is None:
                raise NotAmqp10(f"byte {start}: descriptor {descriptor!r} is not a section")
            wanted = _SECTION_TYPES[code]
            if wanted is not None and value[0] != wanted:
                raise NotAmqp10(f"byte {start}: section 0x{code:02x} holds a {value[0]}, "
                                f"not a {wanted}")
            sections.append((code, value, data[start:pos]))
    except RecursionError:
        raise NotAmqp10("values nested too deep") from None
    if not any(code in _BODY_SECTIONS for code, _, _ in sections):
        raise NotAmqp10("no body section (data, amqp-sequence or amqp-value)")
    return sections


# --- AMQP 1.0 -> 0-9-1 -----------------------------------------------------------------------

def _fields(value: tuple, count: int) -> list[tuple]:
    """A header's or properties' list, nulls for the fields left out at its end."""
    items = value[1][:count]
    return items + [NULL] * (count - len(items))


def _pop(pairs: list, key: tuple):
    """The value of ``key`` in the map's ``pairs`` (unwrapped) and the pairs without it, as
    rabbit_msg_record's amqp10_map_get/2 (lists:keytake/3: the first one)."""
    for i, (k, v) in enumerate(pairs):
        if k == key:
            return v[1], pairs[:i] + pairs[i + 1:]
    return None, pairs


def _shortstr(value) -> str | None:
    """A str that fits a shortstr, else None (3.13's unwrap_shortstr)."""
    if isinstance(value, str) and len(value.encode("utf-8")) <= _SHORTSTR_MAX:
        return value
    return None


def _octet(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 0 <= value <= 255 else None


def _seconds(ms: int) -> int:
    """Erlang's ``Ms div 1000`` (it truncates toward zero)."""
    return ms // 1000 if ms >= 0 else -(-ms // 1000)


def _longstr(raw: bytes):
    """A 0-9-1 longstr holding ``raw``, as pika decodes one: str if UTF-8, else bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _message_id(value: tuple, type_header: str) -> tuple[str | None, list]:
    """rabbit_msg_record:message_id/3: the 0-9-1 id and the headers it adds."""
    kind, v = value
    long_header = type_header[:-len("-type")]  # x-message-id / x-correlation-id
    if kind == "uuid":
        return str(v), [(type_header, "uuid")]
    if kind == "ulong":
        return str(v), [(type_header, "ulong")]
    if kind == "binary":
        encoded = base64.b64encode(v).decode("ascii")
        # 3.10.8 tests > 256, which lets a 256-byte id through to a shortstr it cannot fill
        if len(encoded) > _SHORTSTR_MAX:
            return None, [(long_header, _longstr(v))]
        return encoded, [(type_header, "binary")]
    if kind in ("utf8", "symbol"):
        if len(v.encode("utf-8")) > _SHORTSTR_MAX:
            return None, [(long_header, v)]
        return v, []
    return None, []  # null, or a type no message id has


def _header_value(value: tuple):
    """An application-property value as a header value (rabbit_msg_record:to_091/2), or _DROP."""
    kind, v = value
    if kind in _INTEGERS and not -2 ** 63 <= v < 2 ** 63:
        return _DROP  # a ulong over 2**63 - 1: no AMQP 0-9-1 field type holds it
    if kind in ("utf8", "symbol", "binary", "boolean", "float", "double") or kind in _INTEGERS:
        return v  # symbol and ulong: 3.13 (3.10.8 fails on them)
    if kind == "null":
        return None
    if kind == "timestamp":
        seconds = _seconds(v)
        if seconds < 0:
            return _DROP  # a 0-9-1 timestamp is unsigned
        try:
            return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        except (OverflowError, OSError, ValueError):
            return _DROP  # beyond datetime's year 9999
    if kind == "list":  # 3.13 (to an AMQP 0-9-1 array)
        items = [_header_value(item) for item in v]
        return [item for item in items if item is not _DROP]
    if kind == "map":  # 3.13 (to an AMQP 0-9-1 table); only string keys fit a table
        table = {}
        for key, item in v:
            item = _header_value(item)
            if key[0] in ("utf8", "symbol") and _shortstr(key[1]) is not None \
                    and item is not _DROP:
                table.setdefault(key[1], item)
        return table
    return _DROP  # uuid, char, decimal*, array, described: 3.10.8 and 3.13 fail on them


def _payload(body_sections: list[tuple[int, tuple, bytes]]) -> tuple[bytes, bool]:
    """The 0-9-1 body, and whether it is the encoded AMQP 1.0 body sections."""
    if all(code == DATA for code, _, _ in body_sections):
        return b"".join(value[1] for _, value, _ in body_sections), False
    if len(body_sections) == 1 and body_sections[0][1][0] == "binary":
        return body_sections[0][1][1], False  # an amqp-value holding a binary
    if len(body_sections) == 1 and body_sections[0][1][0] == "utf8":
        return body_sections[0][1][1].encode("utf-8"), False  # an amqp-value holding a string
    return b"".join(raw for _, _, raw in body_sections), True


def to_amqp091(data: bytes, sections: list | None = None) -> tuple[dict, bytes]:
    """The ``pika.BasicProperties(**kw)`` keyword arguments and the body of the AMQP 1.0
    message ``data`` (or its ``sections``, when the caller has them), as RabbitMQ 3.10.8
    delivers it over AMQP 0-9-1 (see the module's docstring); raises :class:`NotAmqp10`."""
    header = annotations = properties = application_properties = None
    body_sections = []
    for code, value, raw in (_sections(data) if sections is None else sections):
        # a repeated section: the last one counts, as in rabbit_msg_record:decode/2
        if code == HEADER:
            header = _fields(value, 5)
        elif code == MESSAGE_ANNOTATIONS:
            annotations = value[1]
        elif code == PROPERTIES:
            properties = _fields(value, 13)
        elif code == APPLICATION_PROPERTIES:
            application_properties = value[1]
        elif code in _BODY_SECTIONS:
            body_sections.append((code, value, raw))
        # delivery-annotations and footer: not used (3.13 neither; 3.10.8 fails on them)
    body, encoded_sections = _payload(body_sections)
    properties = properties or [NULL] * 13
    annotations = annotations or []

    type_, pairs = _pop(application_properties or [], ("utf8", "x-basic-type"))
    app_id, pairs = _pop(pairs, ("utf8", "x-basic-app-id"))
    priority, _ = _pop(annotations, ("symbol", "x-basic-priority"))
    delivery_mode, _ = _pop(annotations, ("symbol", "x-basic-delivery-mode"))
    expiration, _ = _pop(annotations, ("symbol", "x-basic-expiration"))
    if header is not None:  # 3.13: the header first, the x-basic-* annotations else
        durable, header_priority, ttl = header[0], header[1], header[2]
        if durable[0] == "boolean":
            delivery_mode = 2 if durable[1] else 1
        if header_priority[0] in _INTEGERS:
            priority = header_priority[1]
        if ttl[0] in _INTEGERS:
            expiration = str(ttl[1])
    if encoded_sections:
        type_ = _AMQP10_TYPE  # 3.13

    message_id, id_headers = _message_id(properties[0], "x-message-id-type")
    correlation_id, correlation_headers = _message_id(properties[5], "x-correlation-id-type")
    headers = {}
    # 3.10.8 puts the id headers before the application properties: they win a clash
    for key, value in correlation_headers + id_headers:
        headers.setdefault(key, value)
    for (key_type, key), value in pairs:
        value = _header_value(value)
        if key_type in ("utf8", "symbol") and _shortstr(key) is not None and value is not _DROP:
            headers.setdefault(key, value)

    user_id = properties[1][1]
    if isinstance(user_id, bytes):
        try:
            user_id = user_id.decode("utf-8")
        except UnicodeDecodeError:
            user_id = None  # 3.13 drops a user-id that is no shortstr
    timestamp = None
    if properties[9][0] == "timestamp" and properties[9][1] >= 0:
        timestamp = _seconds(properties[9][1])  # (a 0-9-1 timestamp is unsigned)

    kw = {
        "content_type": _shortstr(properties[6][1]),
        "content_encoding": _shortstr(properties[7][1]),
        "headers": headers or None,
        "delivery_mode": _octet(delivery_mode),
        "priority": _octet(priority),
        "correlation_id": correlation_id,
        "reply_to": _shortstr(properties[4][1]),
        "expiration": _shortstr(expiration),
        "message_id": message_id,
        "timestamp": timestamp,
        "type": _shortstr(type_),
        "user_id": _shortstr(user_id),
        "app_id": _shortstr(app_id),
    }
    return {name: value for name, value in kw.items() if value is not None}, body


# --- AMQP 0-9-1 -> 1.0 -----------------------------------------------------------------------

def _wrap(kind: str, value) -> tuple:
    return NULL if value is None else (kind, value)


def _from_header(value) -> tuple | None:
    """A header value as an application-property value (rabbit_msg_record:from_091/2, for
    the Python values pika decodes a field table into), or None to leave it out."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int):  # pika sends 'I' (signedint) when it fits, else 'l' (long)
        if -2 ** 31 <= value < 2 ** 31:
            return ("int", value)
        if -2 ** 63 <= value < 2 ** 63:
            return ("long", value)
        return None  # no AMQP 0-9-1 field holds it
    if isinstance(value, float):
        return ("double", value)
    if isinstance(value, str):
        return ("utf8", value)
    if isinstance(value, (bytes, bytearray)):
        return ("binary", bytes(value))
    if isinstance(value, datetime.datetime):  # 'T', whole seconds
        return ("timestamp", calendar.timegm(value.utctimetuple()) * 1000)
    return None  # tables and arrays (3.10.8 leaves them out), decimals (it fails on them)


def _encode(value: tuple) -> bytes:
    """amqp10_binary_generator:generate/1, for the types from_amqp091 and the AMQP 1.0
    listener's performatives (``amqp10/frames.py``) write."""
    kind, v = value
    if kind == "null":
        return b"\x40"
    if kind == "boolean":
        return b"\x56\x01" if v else b"\x56\x00"
    if kind == "bool":              # a boolean in its one-byte form (true 0x41, false 0x42)
        return b"\x41" if v else b"\x42"
    if kind == "ubyte":
        return struct.pack(">BB", 0x50, v)
    if kind == "ushort":
        return struct.pack(">BH", 0x60, v)
    if kind == "uint":
        if v == 0:
            return b"\x43"
        return struct.pack(">BB", 0x52, v) if v < 256 else struct.pack(">BI", 0x70, v)
    if kind == "ulong":
        if v == 0:
            return b"\x44"
        return struct.pack(">BB", 0x53, v) if v < 256 else struct.pack(">BQ", 0x80, v)
    if kind == "int":
        return struct.pack(">Bb", 0x54, v) if -129 < v < 128 else struct.pack(">Bi", 0x71, v)
    if kind == "long":
        return struct.pack(">Bb", 0x55, v) if -129 < v < 128 else struct.pack(">Bq", 0x81, v)
    if kind == "double":
        return struct.pack(">Bd", 0x82, v)
    if kind == "timestamp":
        return struct.pack(">Bq", 0x83, v)
    if kind == "uuid":
        return b"\x98" + v.bytes
    if kind in ("utf8", "symbol", "binary"):
        raw = v.encode("utf-8") if isinstance(v, str) else v
        small, large, small_max = {"utf8": (0xa1, 0xb1, 254), "symbol": (0xa3, 0xb3, 255),
                                   "binary": (0xa0, 0xb0, 254)}[kind]
        if len(raw) <= small_max:
            return struct.pack(">BB", small, len(raw)) + raw
        return struct.pack(">BI", large, len(raw)) + raw
    if kind == "list":
        return _encode_compound(0xc0, 0xd0, len(v), b"".join(_encode(item) for item in v))
    if kind == "map":
        items = b"".join(_encode(key) + _encode(item) for key, item in v)
        return _encode_compound(0xc1, 0xd1, 2 * len(v), items)
    if kind == "described":
        descriptor, described = v
        return b"\x00" + _encode(descriptor) + _encode(described)
    if kind == "array":             # of symbols (AMQP 1.0 performatives' capabilities)
        kinds = {item[0] for item in v}     # or strings (the management node's replicas)
        if len(kinds) <= 1 and kinds <= {"symbol", "utf8"}:
            small, large = (0xa1, 0xb1) if kinds == {"utf8"} else (0xa3, 0xb3)
            items = [item[1].encode("utf-8") for item in v]
            if all(len(i) < 256 for i in items) and sum(len(i) + 1 for i in items) + 2 < 256:
                data = b"".join(bytes((len(i),)) + i for i in items)
                return struct.pack(">BBBB", 0xe0, len(data) + 2, len(v), small) + data
            data = b"".join(struct.pack(">I", len(i)) + i for i in items)
            return struct.pack(">BIIB", 0xf0, len(data) + 5, len(v), large) + data
    raise TypeError(f"cannot encode {kind}")


def _encode_compound(small: int, large: int, count: int, items: bytes) -> bytes:
    if count >= 255 or len(items) + 1 >= 256:
        return struct.pack(">BII", large, len(items) + 4, count) + items
    return struct.pack(">BBB", small, len(items) + 1, count) + items


def _section(code: int, value: tuple) -> bytes:
    return _encode(("described", (("ulong", code), value)))


def from_amqp091(properties: pika.BasicProperties, body: bytes, *,
                 exchange: str | None = None, routing_key: str | None = None) -> bytes:
    """The AMQP 1.0 message RabbitMQ 3.10.8 gives a stream-protocol consumer for a message
    published over AMQP 0-9-1 with these properties and body (see the module's docstring).
    ``exchange`` and ``routing_key``, when given, become the ``x-exchange`` and
    ``x-routing-key`` message annotations the stream queue adds."""
    p = properties
    annotations = []
    if routing_key is not None:
        annotations.append((("symbol", "x-routing-key"), ("utf8", routing_key)))
    if exchange is not None:
        annotations.append((("symbol", "x-exchange"), ("utf8", exchange)))
    if p.priority is not None:
        annotations.append((("symbol", "x-basic-priority"), ("ubyte", p.priority)))
    if p.delivery_mode is not None:
        annotations.append((("symbol", "x-basic-delivery-mode"), ("ubyte", p.delivery_mode)))
    if p.expiration is not None:
        annotations.append((("symbol", "x-basic-expiration"), ("utf8", p.expiration)))

    user_id = p.user_id.encode("utf-8") if isinstance(p.user_id, str) else p.user_id
    creation_time = None if p.timestamp is None else int(p.timestamp) * 1000
    fields = [
        _wrap("utf8", p.message_id), _wrap("binary", user_id), NULL, NULL,  # to, subject
        _wrap("utf8", p.reply_to), _wrap("utf8", p.correlation_id),
        _wrap("symbol", p.content_type), _wrap("symbol", p.content_encoding),
        NULL, _wrap("timestamp", creation_time), NULL, NULL, NULL,  # absolute-expiry-time,
    ]                                                   # group-id, -sequence, reply-to-group-id

    application_properties = []
    if p.type is not None:
        application_properties.append((("utf8", "x-basic-type"), ("utf8", p.type)))
    if p.app_id is not None:
        application_properties.append((("utf8", "x-basic-app-id"), ("utf8", p.app_id)))
    for key, value in (p.headers or {}).items():
        value = _from_header(value)
        if value is not None:
            application_properties.append((("utf8", key), value))

    out = b""
    if annotations:
        out += _section(MESSAGE_ANNOTATIONS, ("map", annotations))
    if any(field != NULL for field in fields):
        out += _section(PROPERTIES, ("list", fields))
    if application_properties:
        out += _section(APPLICATION_PROPERTIES, ("map", application_properties))
    return out + _section(DATA, ("binary", bytes(body)))


# --- AMQP 0-9-1 properties on the wire ----------------------------------------------------

class _Seconds(datetime.datetime):
    """A timestamp property as pamqp writes one (``int(value.timestamp())``), for any whole
    seconds: a datetime ends with the year 9999, a 64-bit AMQP 0-9-1 timestamp does not (a
    creation time after 9999 raised ValueError here before)."""

    @classmethod
    def of(cls, seconds: int) -> "_Seconds":
        value = cls.fromtimestamp(0, datetime.timezone.utc)
        value.seconds = seconds
        return value

    def timestamp(self) -> float:
        return self.seconds


def encode_properties(kw: dict) -> bytes:
    """``amqp10.to_amqp091``'s properties (pika's names) as their wire bytes, through pamqp
    (pika's encoder has no floats, which AMQP 1.0 application properties may hold); a float
    header is a double and a binary one a byte array, as RabbitMQ's."""
    if "type" in kw:
        kw["message_type"] = kw.pop("type")
    if "timestamp" in kw:
        kw["timestamp"] = _Seconds.of(kw["timestamp"])
    headers = kw.get("headers")
    if headers and any(isinstance(v, (list, dict)) for v in headers.values()):
        # an AMQP 1.0 list or map: kept if pamqp encodes it (no floats or bytes inside)
        try:
            props_mod.encode(Basic.Properties(headers={
                k: v for k, v in headers.items() if isinstance(v, (list, dict))}))
        except (TypeError, ValueError):
            headers = {k: v for k, v in headers.items() if not isinstance(v, (list, dict))}
            kw["headers"] = headers or None
    spliced = {k: v for k, v in headers.items() if isinstance(v, (float, bytes))} \
        if headers else None
    if spliced:
        kw["headers"] = {k: v for k, v in headers.items() if k not in spliced} or None
        return props_mod.with_binary_headers(props_mod.encode(Basic.Properties(**kw)),
                                             spliced)
    return props_mod.encode(Basic.Properties(**kw))


def pika_properties(p) -> pika.BasicProperties:
    """pamqp's decoded properties (its decoder reads doubles; pika's does not) under pika's
    names, as ``amqp10.from_amqp091`` takes them."""
    return pika.BasicProperties(
        content_type=p.content_type, content_encoding=p.content_encoding, headers=p.headers,
        delivery_mode=p.delivery_mode, priority=p.priority, correlation_id=p.correlation_id,
        reply_to=p.reply_to, expiration=p.expiration, message_id=p.message_id,
        timestamp=int(p.timestamp.timestamp()) if p.timestamp is not None else None,
        type=p.message_type, user_id=p.user_id, app_id=p.app_id, cluster_id=p.cluster_id)
