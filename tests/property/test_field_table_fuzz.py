"""Fuzz the field-table codec: message properties as the broker reads and rewrites them.

A message's properties stay the publisher's bytes (``protocol/properties.py``); the broker
reads them (``scan`` for a few fields, ``decode`` for headers) and rewrites a few (BCC
dropped, a direct reply-to address, dead-letter headers). Invariants, h11's among them:

* any bytes either decode or raise the protocol's error (``FrameError``, 501), never anything
  else: ``scan`` raises ``ValueError`` only, which the connection turns into 501;
* ``scan`` and ``decode`` agree on every field ``scan`` reads;
* typed tables built here byte by byte (every AMQP 0-9-1 field type, RabbitMQ's errata set)
  decode to the values they hold;
* a rewrite changes only what it was asked to: every other property and every other header
  keeps its bytes (a double stays a double, a long a long);
* AMQPLAIN credentials of any shape are refused with 403 or accepted, nothing else.
"""
from __future__ import annotations

import datetime
import decimal
import math
import struct

from hypothesis import given
from hypothesis import strategies as hs
from pamqp import commands as C

from amqpbroker import errors
from amqpbroker.frontend.auth import Users
from amqpbroker.protocol import properties as P
from amqpbroker.testing.fuzzing import fuzz

# ----------------------------------------------------------------------------- typed tables
# A field value is (wire bytes, the value pamqp's decode gives). Built here by hand so the
# test does not trust the codec it checks.


def _shortstr(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def _longstr(b: bytes) -> bytes:
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


def _string(text: str):
    return b"S" + _longstr(text.encode()), text


def _bad_utf8(raw: bytes):
    return b"S" + _longstr(raw), raw


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
    hs.text(max_size=20).map(_string),
    hs.binary(max_size=10).filter(lambda b: not _is_utf8(b)).map(_bad_utf8),
    hs.binary(max_size=10).map(lambda b: (b"x" + _longstr(b), bytearray(b))),
    hs.just((b"V", None)),
)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return False
    return True


def _table(entries):
    seen, wire, value = set(), b"", {}
    for key, (w, v) in entries:
        if key in seen:
            continue
        seen.add(key)
        wire += _shortstr(key.encode()) + w
        value[key] = v
    return b"F" + _longstr(wire), value


def _array(items):
    return b"A" + _longstr(b"".join(w for w, _ in items)), [v for _, v in items]


KEYS = hs.text(min_size=1, max_size=12).filter(lambda k: len(k.encode()) <= 255)
VALUES = hs.recursive(SCALARS, lambda inner: hs.one_of(
    hs.lists(hs.tuples(KEYS, inner), max_size=4).map(_table),
    hs.lists(inner, max_size=4).map(_array)), max_leaves=12)
# a headers table: its wire bytes without the leading 'F', and its value
HEADERS = hs.lists(hs.tuples(KEYS, VALUES), max_size=6).map(_table).map(
    lambda t: (t[0][1:], t[1]))


@hs.composite
def typed_properties(draw, headers=HEADERS):
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
            wire += _shortstr(text.encode())
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


def same(a, b) -> bool:
    """Equal as AMQP values, and of the same Python type (NaN equals NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def decoded_fields(props: C.Basic.Properties) -> dict:
    return {k: v for k, v in dict(props).items()
            if v is not None and (k, v) != ("cluster_id", "")}      # pamqp's default


# ----------------------------------------------------------------------------- garbage

@hs.composite
def mutated_properties(draw) -> bytes:
    raw = bytearray(draw(typed_properties())[0])
    for _ in range(draw(hs.integers(1, 3))):
        op = draw(hs.sampled_from(["flip", "set", "cut", "insert", "length"]))
        pos = draw(hs.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] ^= 1 << draw(hs.integers(0, 7))
        elif op == "set" and raw:
            raw[pos] = draw(hs.integers(0, 255))
        elif op == "cut":
            del raw[pos:]
        elif op == "insert":
            raw[pos:pos] = draw(hs.binary(min_size=1, max_size=6))
        elif op == "length" and len(raw) >= pos + 4:
            raw[pos:pos + 4] = struct.pack(">I", draw(hs.sampled_from(
                [0, 1, 2 ** 31, 2 ** 32 - 1, len(raw)])))
    return bytes(raw)


def read(raw: bytes):
    """scan and decode, with the invariant: each returns or raises its one error."""
    try:
        scan = P.scan(raw)
    except ValueError:
        scan = None
    try:
        props = P.decode(raw)
    except errors.FrameError as err:
        assert err.reply_code == 501 and (err.class_id, err.method_id) == (60, 40)
        props = None
    return scan, props


@fuzz(200)
@given(raw=hs.one_of(hs.binary(max_size=200), mutated_properties()))
def test_garbage_properties_raise_only_the_protocol_error(raw):
    scan, props = read(raw)
    if scan is not None and props is not None:
        assert scan.delivery_mode == (props.delivery_mode or 0)
        assert scan.priority == (props.priority or 0)


@fuzz(50)
@given(depth=hs.integers(1, 20000), kind=hs.sampled_from("FA"))
def test_deeply_nested_tables_raise_only_the_protocol_error(depth, kind):
    """What a 128 KiB frame can nest: a table in a table ... (RecursionError in pamqp)."""
    inner = b""
    for _ in range(depth):
        inner = (b"F" + _longstr(b"\x01k" + inner)) if kind == "F" else (b"A" + _longstr(inner))
    raw = struct.pack(">H", P.F_HEADERS) + _longstr(b"\x01k" + inner)
    read(raw)


@fuzz(300)
@given(hs.sampled_from([b"T", b"l", b"d", b"D"]), hs.binary(min_size=8, max_size=8))
def test_any_bits_of_a_fixed_size_value(tag, bits):
    """Timestamps far beyond year 9999, NaN, infinities: decoded or refused."""
    body = b"\x01k" + tag + bits
    read(struct.pack(">H", P.F_HEADERS) + _longstr(body))


# ----------------------------------------------------------------------------- valid tables

@fuzz(150)
@given(typed_properties())
def test_typed_properties_decode_to_what_they_hold(built):
    raw, want = built
    scan, props = read(raw)
    assert scan is not None and props is not None, raw
    got = decoded_fields(props)
    assert got.keys() == want.keys()
    for key in want:
        assert same(got[key], want[key]), (key, got[key], want[key])
    assert scan.delivery_mode == want.get("delivery_mode", 0)
    assert scan.priority == want.get("priority", 0)
    assert (scan.reply_to, scan.expiration, scan.user_id) == (
        want.get("reply_to"), want.get("expiration"), want.get("user_id"))


# ----------------------------------------------------------------------------- rewriting

HEADER_ENTRIES = hs.lists(hs.tuples(KEYS, VALUES), max_size=6, unique_by=lambda e: e[0])


@hs.composite
def properties_with_entries(draw):
    """Typed properties whose headers' entries are known one by one (key -> wire, value)."""
    entries = draw(HEADER_ENTRIES)
    table = _table(entries)
    raw, want = draw(typed_properties(headers=hs.just((table[0][1:], table[1]))))
    if "headers" not in want:
        return raw, want, {}
    return raw, want, {k: _shortstr(k.encode()) + w for k, (w, _) in entries}


@fuzz(120)
@given(built=properties_with_entries(), data=hs.data())
def test_rewrite_changes_only_what_it_is_asked_to(built, data):
    """BCC dropped, reply-to replaced, dead-letter headers set: the rest keeps its bytes."""
    raw, want, entries = built
    drop = data.draw(hs.lists(hs.sampled_from(sorted(entries) or ["BCC"]), max_size=2))
    new_headers = data.draw(hs.dictionaries(KEYS, VALUES, max_size=3))
    reply_to = data.draw(hs.sampled_from([P.KEEP, None, "amq.rabbitmq.reply-to.1.abc"]))
    expiration = data.draw(hs.sampled_from([P.KEEP, None, "60000"]))
    out = P.rewrite(raw, reply_to=reply_to, expiration=expiration, drop_headers=drop,
                    set_headers={k: v for k, (_, v) in new_headers.items()})
    got = decoded_fields(P.decode(out))
    expect = dict(want)
    for name, value in (("reply_to", reply_to), ("expiration", expiration)):
        if value is None:
            expect.pop(name, None)
        elif value is not P.KEEP:
            expect[name] = value
    if drop or new_headers:
        headers = {k: v for k, v in want.get("headers", {}).items()
                   if k not in drop and k not in new_headers}
        headers.update({k: v for k, (_, v) in new_headers.items()})
        expect["headers"] = headers
    assert got.keys() == expect.keys()
    for key in expect:
        assert same(got[key], expect[key]), (key, got[key], expect[key])
    for key, wire in entries.items():          # an untouched entry: the very same bytes
        if key not in drop and key not in new_headers:
            assert wire in out, key
    for name in ("content_type", "correlation_id", "message_id", "user_id", "app_id"):
        if name in want:                       # and so is every untouched property
            assert _shortstr(want[name].encode()) in out


# ----------------------------------------------------------------------------- AMQPLAIN

def _users() -> Users:
    users = Users()
    users.add_user("guest", "guest", tags=["administrator"])
    return users


@fuzz(150)
@given(hs.one_of(hs.binary(max_size=100),
                 hs.lists(hs.tuples(hs.sampled_from(["LOGIN", "PASSWORD", "x"]), VALUES),
                          max_size=3).map(lambda e: _table(e)[0][5:])))
def test_amqplain_credentials_of_any_shape_are_refused_with_403(response):
    try:
        _users().authenticate("AMQPLAIN", response)
    except errors.AMQPError as err:
        assert err.reply_code == 403, err
    else:
        raise AssertionError(f"logged in with {response!r}")


def test_amqplain_with_the_right_credentials_logs_in():
    entries = [("LOGIN", _string("guest")), ("PASSWORD", _string("guest"))]
    assert _users().authenticate("AMQPLAIN", _table(entries)[0][5:]).name == "guest"

