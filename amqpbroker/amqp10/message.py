"""An AMQP 1.0 client's messages to AMQP 0-9-1 and back, as RabbitMQ 3.10's
``rabbitmq_amqp1_0`` plugin stores and delivers them (``rabbit_amqp1_0_message``), no I/O.

In: the message's fields are mapped to AMQP 0-9-1 properties and body as for the stream
protocol (``stream_protocol/amqp10.py``: content type, ids, application properties as
headers, a data section's bytes or an amqp-value's string as the body...), so AMQP 0-9-1
consumers read them, and -- as the plugin keeps them -- the sections themselves ride along
in headers: ``x-amqp-1.0-message-annotations``, ``-properties``, ``-app-properties``,
``-footer`` (their encoded bytes). The body: data sections' bytes; an amqp-value's binary
or string, with header ``x-amqp-1.0-value`` (``binary`` or ``utf8``) saying which; any
other body (a sequence, another value) its encoded sections, with type ``amqp-1.0`` (as
RabbitMQ 3.13 and the plugin keep it).

Out: an AMQP 1.0 consumer gets a header section made anew (durable from the delivery mode,
priority, ttl from the expiration, first-acquirer = not redelivered, delivery-count from a
quorum queue's ``x-delivery-count``), then each kept
section byte for byte; what was published over AMQP 0-9-1 gets a properties section with
the routing key as its subject (the plugin's), its headers as application properties (the
plugin drops them), and a data section of the body. So a message sent and received over
AMQP 1.0 comes back as it was sent, but for its header. The message annotation
``x-stream-filter-value`` (a stream's filter value, RabbitMQ 4.1) is also the header the
stream filters by.
"""
from __future__ import annotations

import functools
import struct

import pika

from ..protocol import properties as props_mod
from ..stream_protocol import amqp10 as convert
from ..stream_protocol.amqp10 import NULL

try:                     # built by setup.py; stored_py and outgoing_py below are the reference
    from ..stream_protocol._amqp10 import kept_message, to_kept
except ImportError:      # not built
    kept_message = to_kept = None

KEPT = {convert.MESSAGE_ANNOTATIONS: "x-amqp-1.0-message-annotations",
        convert.PROPERTIES: "x-amqp-1.0-properties",
        convert.APPLICATION_PROPERTIES: "x-amqp-1.0-app-properties",
        convert.FOOTER: "x-amqp-1.0-footer"}
VALUE = "x-amqp-1.0-value"          # the body was an amqp-value of this type
_DATA = b"\x00\x53\x75"              # a data section's descriptor
_U32 = struct.Struct(">I")
STREAM_OFFSET = "x-stream-offset"
# a quorum queue's count of a message's returns (worker/quorum.py): an AMQP 1.0 consumer reads
# it as the header's delivery-count, as RabbitMQ 4 gives it
DELIVERY_COUNT = "x-delivery-count"
# a stream's filter value, the message annotation RabbitMQ reads it from: a header too, as
# the stream filters by it (worker/stream.py); not an application property when it came so
FILTER_VALUE = "x-stream-filter-value"
_HIDDEN = (*KEPT.values(), VALUE, STREAM_OFFSET, DELIVERY_COUNT)


def incoming(data: bytes) -> tuple[dict, bytes, str | None, str | None]:
    """``pika.BasicProperties`` keyword arguments, the body, and the ``to`` and ``subject``
    (what a link without a routing key routes by, ``address.py``) of an AMQP 1.0 message;
    raises ``NotAmqp10``. A message of one data section and nothing else (what a client
    sends for bytes with no properties) is its body, read without parsing."""
    if data[:3] == _DATA and len(data) >= 5:
        if data[3] == 0xa0 and data[4] == len(data) - 5:
            return {}, data[5:], None, None
        if data[3] == 0xb0 and len(data) >= 8 and _U32.unpack_from(data, 4)[0] == len(data) - 8:
            return {}, data[8:], None, None
    sections = convert._sections(data)
    kw, body = convert.to_amqp091(data, sections)
    kept = {}
    bodies = []
    to = subject = None
    for code, value, raw in sections:
        if code in KEPT:
            kept[KEPT[code]] = raw
            if code == convert.MESSAGE_ANNOTATIONS:
                for key, item in value[1]:
                    if key[1] == FILTER_VALUE and item[0] in ("utf8", "symbol"):
                        kept[FILTER_VALUE] = item[1]
            if code == convert.PROPERTIES:
                fields = value[1]
                to, subject = _text(fields, 2), _text(fields, 3)
        elif code in convert._BODY_SECTIONS:
            bodies.append((code, value))
    if len(bodies) == 1 and bodies[0][0] == convert.AMQP_VALUE \
            and bodies[0][1][0] in ("binary", "utf8"):
        kept[VALUE] = bodies[0][1][0]
    if kept:
        kw["headers"] = {**(kw.get("headers") or {}), **kept}
    return kw, body, to, subject


def stored(data: bytes, user: str) -> tuple[bytes, bytes, str | None, str | None]:
    """What a message from ``user`` is published as: its AMQP 0-9-1 properties (wire
    bytes), its body, and its ``to`` and ``subject``; raises ``NotAmqp10``. The usual
    message is converted in C (``stream_protocol/_amqp10.c``), any other in Python."""
    if to_kept is not None:
        fast = to_kept(data)
        if fast is not None:
            return fast
    return stored_py(data, user)


def stored_py(data: bytes, user: str) -> tuple[bytes, bytes, str | None, str | None]:
    """``stored`` in Python: ``incoming``, a user-id other than the publisher's dropped
    (AMQP 0-9-1 would refuse it), the properties encoded. The reference for ``to_kept``."""
    kw, body, to, subject = incoming(data)
    if kw.get("user_id") not in (None, user):
        del kw["user_id"]
    return (convert.encode_properties(kw) if kw else b"\x00\x00"), body, to, subject


def _text(fields: list, i: int) -> str | None:
    """Field ``i`` of a properties list when it is a string (or symbol)."""
    return fields[i][1] if len(fields) > i and fields[i][0] in ("utf8", "symbol") else None


def outgoing(raw_properties: bytes, body: bytes, routing_key: str,
             redelivered: bool) -> bytes:
    """The AMQP 1.0 message an AMQP 1.0 consumer gets for a delivery (its AMQP 0-9-1
    properties as they are on the wire): one that came over AMQP 1.0 put back together in
    C (``stream_protocol/_amqp10.c``), any other in Python."""
    if kept_message is not None:
        fast = kept_message(raw_properties, body, redelivered)
        if fast is not None:
            return fast
    return outgoing_py(raw_properties, body, routing_key, redelivered)


def outgoing_py(raw_properties: bytes, body: bytes, routing_key: str,
                redelivered: bool) -> bytes:
    """``outgoing`` in Python, the reference for ``kept_message``."""
    before, kind, after = _around_body(raw_properties, routing_key, redelivered)
    if kind == "sections":                              # the encoded body sections
        middle = bytes(body)
    elif kind == "utf8":
        middle = convert._section(convert.AMQP_VALUE,
                                  ("utf8", bytes(body).decode("utf-8", "replace")))
    else:
        middle = convert._section(convert.AMQP_VALUE if kind == "binary" else convert.DATA,
                                  ("binary", bytes(body)))
    return before + middle + after


def modified(raw_properties: bytes, annotations: list) -> bytes:
    """A message's AMQP 0-9-1 properties after an AMQP 1.0 consumer settled it ``modified``
    with message annotations (``annotations``: tagged (key, value) pairs, keys ``x-``
    symbols): merged into its kept message-annotations section, a key it had replaced (what
    an AMQP 1.0 consumer gets), and the plain values -- strings, integers, booleans, binary
    -- as headers too (what an AMQP 0-9-1 consumer gets: RabbitMQ 4 adds a message's ``x-``
    annotations to its headers). Properties that cannot be read are kept as they came."""
    try:
        headers = props_mod.headers_of(raw_properties) if raw_properties else {}
    except ValueError:
        return raw_properties
    pairs = _annotation_pairs(_kept(headers, convert.MESSAGE_ANNOTATIONS))
    names = {key[1] for key, _ in annotations}
    pairs = [(k, v) for k, v in pairs if k[1] not in names] + list(annotations)
    section = convert._section(convert.MESSAGE_ANNOTATIONS, ("map", pairs))
    set_headers = {KEPT[convert.MESSAGE_ANNOTATIONS]: props_mod.Encoded(
        b"x" + _U32.pack(len(section)) + section)}
    for (_, name), (kind, value) in annotations:
        if kind in ("utf8", "symbol", "boolean", "binary"):
            set_headers[name] = value
        elif kind in convert._INTEGERS and -2 ** 63 <= value < 2 ** 63:
            set_headers[name] = props_mod.Long(value)
    try:
        return props_mod.rewrite(raw_properties or b"\x00\x00", set_headers=set_headers)
    except ValueError:
        return raw_properties


def _annotation_pairs(section: bytes) -> list:
    """The (key, value) pairs of an encoded message-annotations section ([] without one, or
    for bytes that are none: a header an AMQP 0-9-1 publisher may have set to anything)."""
    if not section:
        return []
    try:
        value = convert._value(section, 0, len(section))[0]
    except (convert.NotAmqp10, RecursionError):
        return []
    if value[0] != "described" or value[1][1][0] != "map":
        return []
    return value[1][1][1]


def filter_fields(raw_properties: bytes, routing_key: str) -> tuple[list, list, dict]:
    """What a consumer's filter (``address.MessageFilter``, ``sql_filter.SqlFilter``) looks
    at in a delivery: the header and properties lists (typed values) and the application
    properties (key -> value) of the AMQP 1.0 message an AMQP 1.0 consumer would get."""
    before = _around_body(raw_properties, routing_key, False)[0]
    header, properties, application = [], [], {}
    pos = 0
    while pos < len(before):
        (_, (descriptor, value)), pos = convert._value(before, pos, len(before))
        code = convert._section_code(descriptor)
        if code == convert.HEADER:
            header = value[1]
        elif code == convert.PROPERTIES:
            properties = value[1]
        elif code == convert.APPLICATION_PROPERTIES:
            application = {k[1]: v[1] for k, v in value[1]}
    return header, properties, application


@functools.lru_cache(maxsize=1024)
def _around_body(raw_properties: bytes, routing_key: str, redelivered: bool) -> tuple:
    """(the sections before the body, how the body is written, the footer): the same for
    every message of a publisher that sends the same properties, so worked out once."""
    try:
        p = convert.pika_properties(props_mod.decode(raw_properties)) \
            if raw_properties else pika.BasicProperties()
    except ValueError:
        p = pika.BasicProperties()
    headers = p.headers or {}
    ttl = NULL
    if p.expiration is not None:
        try:
            if 0 <= int(p.expiration) < 2 ** 32:    # a ttl is a uint; else none
                ttl = ("uint", int(p.expiration))
        except ValueError:
            pass
    count = headers.get(DELIVERY_COUNT)
    count = ("uint", count) if isinstance(count, int) and not isinstance(count, bool) \
        and 0 < count < 2 ** 32 else NULL
    out = convert._section(convert.HEADER, ("list", [
        ("boolean", p.delivery_mode == 2), convert._wrap("ubyte", p.priority), ttl,
        ("boolean", not redelivered), count]))
    annotations = _kept(headers, convert.MESSAGE_ANNOTATIONS)
    pairs = _annotation_pairs(annotations)
    # the annotations' names: a header of the same name is one of them (``modified``), no
    # application property
    annotated = {key[1] for key, _ in pairs}
    offset = headers.get(STREAM_OFFSET)
    if isinstance(offset, int) and not isinstance(offset, bool):
        # a stream's delivery: its offset as the annotation x-stream-offset (a utf8 key, as
        # the plugin writes it), added to those kept
        annotations = convert._section(convert.MESSAGE_ANNOTATIONS, ("map", [
            *pairs, (("utf8", STREAM_OFFSET), ("ulong", offset))]))
    out += annotations
    properties = _kept(headers, convert.PROPERTIES)
    if not properties:
        user_id = p.user_id.encode("utf-8") if isinstance(p.user_id, str) else p.user_id
        creation = None if p.timestamp is None else int(p.timestamp) * 1000
        properties = convert._section(convert.PROPERTIES, ("list", [
            convert._wrap("utf8", p.message_id), convert._wrap("binary", user_id), NULL,
            ("utf8", routing_key), convert._wrap("utf8", p.reply_to),
            convert._wrap("utf8", p.correlation_id), convert._wrap("symbol", p.content_type),
            convert._wrap("symbol", p.content_encoding), NULL,
            convert._wrap("timestamp", creation), NULL, NULL, NULL]))
    out += properties
    application = _kept(headers, convert.APPLICATION_PROPERTIES)
    if not application:
        pairs = []
        for key, value in headers.items():
            value = convert._from_header(value)
            if value is not None and key not in _HIDDEN and key not in annotated \
                    and not (key == FILTER_VALUE and annotations):
                pairs.append((("utf8", key), value))
        if pairs:
            application = convert._section(convert.APPLICATION_PROPERTIES, ("map", pairs))
    out += application
    value = headers.get(VALUE)
    kind = "sections" if p.type == convert._AMQP10_TYPE else \
        value if value in ("utf8", "binary") else "data"
    return out, kind, _kept(headers, convert.FOOTER)


def _kept(headers: dict, code: int) -> bytes:
    raw = headers.get(KEPT[code])
    return bytes(raw) if isinstance(raw, (bytes, bytearray)) else b""
