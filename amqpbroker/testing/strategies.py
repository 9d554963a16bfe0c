"""Hypothesis strategies for AMQP 0-9-1 inputs, built byte by byte (the fuzz targets must not
trust the codec they check): field values of every type, tables, property lists, and client
methods with any field values a client could put on the wire, names pamqp would refuse
(``orders!``, ``ünï``, 255 bytes) and tables with non-UTF-8 longstrs included.

A field value strategy yields ``(wire bytes, the value pamqp decodes)``.
"""
from __future__ import annotations

import datetime
import decimal
import struct

from hypothesis import strategies as hs
from pamqp import commands as C
from pamqp import frame as pframe

from ..protocol import properties as P


def shortstr(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def longstr(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _simple(tag: str, fmt: str, values):
    return values.map(lambda v: (tag.encode() + struct.pack(">" + fmt, v), v))


def _float(tag: str, fmt: str):
    def make(v):
        wire = tag.encode() + struct.pack(">" + fmt, v)
        return wire, struct.unpack(">" + fmt, wire[1:])[0]
    return hs.floats(allow_nan=False, width=32 if fmt == "f" else 64).map(make)


def _decimal(scale_value):
    """Scale, then a signed 32-bit value (pamqp and the Java client read it signed)."""
    scale, value = scale_value
    return b"D" + struct.pack(">Bi", scale, value), \
        decimal.Decimal(value) * (decimal.Decimal(10) ** -scale)


def _timestamp(seconds: int):
    return b"T" + struct.pack(">Q", seconds), \
        datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return False
    return True


SCALARS = hs.one_of(
    hs.booleans().map(lambda v: (b"t" + bytes([v]), v)),
    _simple("b", "b", hs.integers(-128, 127)),
    _simple("B", "B", hs.integers(0, 255)),
    _simple("s", "h", hs.integers(-2 ** 15, 2 ** 15 - 1)),
    _simple("u", "H", hs.integers(0, 2 ** 16 - 1)),
    _simple("I", "i", hs.integers(-2 ** 31, 2 ** 31 - 1)),
    _simple("i", "I", hs.integers(0, 2 ** 32 - 1)),
    _simple("l", "q", hs.integers(-2 ** 63, 2 ** 63 - 1)),
    _float("f", "f"), _float("d", "d"),
    hs.tuples(hs.integers(0, 9), hs.integers(-2 ** 31, 2 ** 31 - 1)).map(_decimal),
    hs.integers(0, 2 ** 32 - 1).map(_timestamp),          # seconds (pamqp reads bigger as ms)
    hs.text(max_size=20).map(lambda t: (b"S" + longstr(t.encode()), t)),
    hs.binary(max_size=10).filter(lambda b: not _is_utf8(b)).map(
        lambda b: (b"S" + longstr(b), b)),                 # pamqp decodes these to bytes
    hs.binary(max_size=10).map(lambda b: (b"x" + longstr(b), bytearray(b))),
    hs.just((b"V", None)),
)


def same_value(a, b) -> bool:
    """Equal as AMQP values, and of the same Python type (NaN equals NaN)."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def table(entries) -> tuple[bytes, dict]:
    """('F' + the table's wire bytes, its value) from (key, (wire, value)) pairs; a repeated
    key is left out."""
    seen, wire, value = set(), b"", {}
    for key, (w, v) in entries:
        if key in seen:
            continue
        seen.add(key)
        wire += shortstr(key.encode()) + w
        value[key] = v
    return b"F" + longstr(wire), value


def array(items) -> tuple[bytes, list]:
    return b"A" + longstr(b"".join(w for w, _ in items)), [v for _, v in items]


KEYS = hs.text(min_size=1, max_size=12).filter(lambda k: len(k.encode()) <= 255)
VALUES = hs.recursive(SCALARS, lambda inner: hs.one_of(
    hs.lists(hs.tuples(KEYS, inner), max_size=4).map(table),
    hs.lists(inner, max_size=4).map(array)), max_leaves=12)
# a table as a method field or the headers property: wire bytes without the 'F', and value
TABLES = hs.lists(hs.tuples(KEYS, VALUES), max_size=6).map(table).map(
    lambda t: (t[0][1:], t[1]))


@hs.composite
def typed_properties(draw, headers=TABLES):
    """Raw property bytes built field by field, and what each field holds."""
    flags, wire, want = 0, b"", {}
    spec = [("content_type", P.F_CONTENT_TYPE, "short"), ("content_encoding",
            P.F_CONTENT_ENCODING, "short"), ("headers", P.F_HEADERS, "table"),
            ("delivery_mode", P.F_DELIVERY_MODE, "octet"), ("priority", P.F_PRIORITY, "octet"),
            ("correlation_id", P.F_CORRELATION_ID, "short"), ("reply_to", P.F_REPLY_TO, "short"),
            ("expiration", P.F_EXPIRATION, "short"), ("message_id", P.F_MESSAGE_ID, "short"),
            ("timestamp", P.F_TIMESTAMP, "time"), ("message_type", P.F_TYPE, "short"),
            ("user_id", P.F_USER_ID, "short"), ("app_id", P.F_APP_ID, "short")]
    for name, bit, kind in spec:
        if not draw(hs.booleans()):
            continue
        flags |= bit
        if kind == "short":
            text = draw(hs.text(max_size=8).filter(lambda t: len(t.encode()) <= 255))
            wire += shortstr(text.encode())
            want[name] = text
        elif kind == "octet":
            want[name] = draw(hs.integers(0, 255))
            wire += bytes([want[name]])
        elif kind == "time":
            seconds = draw(hs.integers(0, 2 ** 32 - 1))
            wire += struct.pack(">Q", seconds)
            want[name] = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
        else:
            table_wire, want[name] = draw(headers)
            wire += table_wire
    return struct.pack(">H", flags) + wire, want


# ----------------------------------------------------------------------------- methods

# names mostly from a few, so that methods meet each other's objects; now and then one
# pamqp would refuse, a reserved one or any text
COMMON_NAMES = hs.sampled_from(["", "q", "q2", "ex", "amq.direct", "amq.fanout", "amq.topic",
                                "amq.headers"])
NAMES = hs.one_of(
    COMMON_NAMES, COMMON_NAMES, COMMON_NAMES,
    hs.sampled_from(["dlq", "ex2", "amq.match", "amq.rabbitmq.reply-to", "amq.gen-x",
                     "orders!", "ünï", "a" * 255]),
    hs.text(max_size=12).filter(lambda t: len(t.encode()) <= 255))
ROUTING_KEYS = hs.one_of(hs.sampled_from(["", "q", "k", "a.b", "#", "*.b", "#.#.#.z",
                                          "amq.rabbitmq.reply-to"]), NAMES)
# the x-arguments each method takes, tried far more often than any other key
ARGUMENT_KEYS = {
    "Queue.Declare": ["x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes",
                      "x-overflow", "x-dead-letter-exchange", "x-dead-letter-routing-key",
                      "x-max-priority", "x-queue-mode", "x-single-active-consumer",
                      "x-queue-type", "x-queue-version", "x-fsync", "x-delivery-limit",
                      "x-quorum-initial-group-size"],
    "Queue.Bind": ["x-match", "x-match", "a", "b"], "Exchange.Bind": ["x-match", "a", "b"],
    "Queue.Unbind": ["x-match", "a"], "Exchange.Unbind": ["x-match", "a"],
    "Exchange.Declare": ["alternate-exchange"],
    "Basic.Consume": ["x-priority", "x-cancel-on-ha-failover", "x-consumer-timeout"],
    "headers": ["a", "b", "CC", "BCC", "x-death"]}
ARGUMENT_VALUES = hs.one_of(
    hs.sampled_from([(b"S" + longstr(v.encode()), v) for v in
                     ["all", "any", "all-with-x", "any-with-x", "drop-head", "reject-publish",
                      "lazy", "classic", "quorum", "dlq", "q", "amq.direct", ""]]),
    hs.sampled_from([0, 1, 5, 2 ** 31, 2 ** 32, 2 ** 63 - 1, -1]).map(
        lambda v: (b"l" + struct.pack(">q", v), v)),
    VALUES)


def arguments(kind: str):
    """A table for ``kind`` (a method's name, or "headers"): wire bytes without the 'F'."""
    keys = hs.one_of(hs.sampled_from(ARGUMENT_KEYS.get(kind, ["x-unknown"])), KEYS)
    return hs.lists(hs.tuples(keys, ARGUMENT_VALUES), max_size=4).map(
        lambda entries: sorted(entries, key=lambda e: not e[0].startswith("x-"))).map(
        table).map(
        lambda t: (t[0][1:], t[1]))


LONGS = hs.one_of(hs.integers(0, 20), hs.sampled_from([2 ** 32 - 1, 2 ** 31]))
FIELD = {"shortstr": NAMES.map(lambda t: shortstr(t.encode())),
         "longstr": hs.binary(max_size=20).map(longstr),
         "octet": hs.integers(0, 255).map(lambda v: struct.pack(">B", v)),
         "short": hs.one_of(hs.integers(0, 20), hs.just(65535)).map(
             lambda v: struct.pack(">H", v)),
         "long": LONGS.map(lambda v: struct.pack(">I", v)),
         "longlong": hs.one_of(hs.integers(0, 20), hs.just(2 ** 64 - 1)).map(
             lambda v: struct.pack(">Q", v)),
}
RARELY = hs.sampled_from([False] * 7 + [True])
BITS = {"passive": RARELY, "nowait": RARELY, "if_unused": RARELY, "if_empty": RARELY,
        "no_local": RARELY, "global_": RARELY}
EXCHANGES = hs.one_of(hs.sampled_from(["amq.headers", "amq.topic", "amq.direct", "amq.fanout",
                                      "ex", ""]), NAMES)
SPECIAL = {"exchange_type": hs.sampled_from(["direct", "fanout", "topic", "headers",
                                             "x-unknown", ""]),
           "routing_key": ROUTING_KEYS, "exchange": EXCHANGES, "source": EXCHANGES}

# what a client sends on an open channel, besides content and channel.open / close; the ones
# that make something for the others to act on twice as often
CLIENT_METHODS = [
    C.Exchange.Declare, C.Exchange.Delete, C.Exchange.Bind, C.Exchange.Unbind,
    C.Queue.Declare, C.Queue.Bind, C.Queue.Purge, C.Queue.Delete, C.Queue.Unbind,
    C.Queue.Declare, C.Queue.Bind, C.Exchange.Declare, C.Basic.Consume,
    C.Basic.Qos, C.Basic.Consume, C.Basic.Cancel, C.Basic.Get, C.Basic.Ack, C.Basic.Reject,
    C.Basic.Nack, C.Basic.Recover, C.Basic.RecoverAsync, C.Channel.Flow, C.Tx.Select,
    C.Tx.Commit, C.Tx.Rollback, C.Confirm.Select]


@hs.composite
def method_payload(draw, cls) -> bytes:
    """A method frame's payload: class and method id, then each field as its AMQP type
    says, consecutive bits packed into octets, values any client could send."""
    m = cls()
    out = struct.pack(">HH", *divmod(m.index, 1 << 16))
    bits, nbits = 0, 0
    for name in m.__slots__:
        kind = m.amqp_type(name)
        if kind == "bit":
            bits |= draw(BITS.get(name, hs.booleans())) << nbits
            nbits += 1
            continue
        if nbits:
            out += bytes([bits])
            bits = nbits = 0
        if name in SPECIAL:
            out += shortstr(draw(SPECIAL[name]).encode())
        elif kind == "table":
            out += draw(arguments(m.name))[0]
        else:
            out += draw(FIELD[kind])
    if nbits:
        out += bytes([bits])
    return out


def method_frame(channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


def content_frames(channel: int, properties: bytes, body: bytes, frame_max: int = 4096):
    out = struct.pack(">BHI", 2, channel, 12 + len(properties)) \
        + struct.pack(">HHQ", 60, 0, len(body)) + properties + b"\xce"
    step = frame_max - 8
    for i in range(0, len(body), step):
        chunk = body[i:i + step]
        out += struct.pack(">BHI", 3, channel, len(chunk)) + chunk + b"\xce"
    return out


@hs.composite
def publish(draw, channel: int) -> bytes:
    exchange = draw(hs.sampled_from(["", "amq.direct", "amq.topic", "amq.headers", "amq.fanout",
                                     "ex", "amq.match", "amq.headers"]))
    payload = struct.pack(">HH", 60, 40) + b"\x00\x00" + shortstr(exchange.encode()) \
        + shortstr(draw(ROUTING_KEYS).encode()) + bytes([draw(hs.integers(0, 1))])
    props = draw(hs.one_of(typed_properties(), typed_properties(headers=arguments("headers")),
                           hs.just((b"\x00\x00", {}))))[0]
    return method_frame(channel, payload) + content_frames(
        channel, props, draw(hs.binary(max_size=300)))


@hs.composite
def client_stream(draw, channels=(1, 2)) -> list[bytes]:
    """A client's frames after the handshake: mostly on the open channels, rarely on
    another, now and then a channel closed and reopened."""
    out = []
    for _ in range(draw(hs.integers(1, 16))):
        ch = draw(hs.sampled_from(list(channels) * 10 + [3]))
        kind = draw(hs.sampled_from(["method"] * 6 + ["publish"] * 3 + ["reopen"]))
        if kind == "publish":
            out.append(draw(publish(ch)))
        elif kind == "reopen":
            out.append(pframe.marshal(C.Channel.Close(reply_code=200, reply_text="",
                                                      class_id=0, method_id=0), ch)
                       + pframe.marshal(C.Channel.Open(), ch))
        else:
            cls = draw(hs.sampled_from(CLIENT_METHODS))
            out.append(method_frame(ch, draw(method_payload(cls))))
    return out
