"""Fuzz the field-table codec: message properties as the broker reads and rewrites them.

A message's properties stay the publisher's bytes (``protocol/properties.py``); the broker
reads them (``scan`` for a few fields, ``decode`` for headers) and rewrites a few (BCC
dropped, a direct reply-to address, dead-letter headers). Invariants, h11's among them:

* any bytes either decode or raise the protocol's error (``FrameError``, 501), never anything
  else: ``scan`` raises ``ValueError`` only, which the connection turns into 501;
* ``scan`` and ``decode`` agree on every field ``scan`` reads;
* typed tables built byte by byte (``amqpbroker.testing.strategies``: every AMQP 0-9-1 field
  type, RabbitMQ's errata set) decode to the values they hold;
* a rewrite changes only what it was asked to: every other property and every other header
  keeps its bytes (a double stays a double, a long a long);
* AMQPLAIN credentials of any shape are refused with 403 or accepted, nothing else.
"""
from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as hs
from pamqp import commands as C

from amqpbroker import errors
from amqpbroker.frontend.auth import Users
from amqpbroker.protocol import properties as P
from amqpbroker.testing import strategies as S
from amqpbroker.testing.fuzzing import fuzz

_shortstr, _longstr = S.shortstr, S.longstr
_table, KEYS, VALUES, typed_properties = S.table, S.KEYS, S.VALUES, S.typed_properties


def _string(text: str):
    return b"S" + _longstr(text.encode()), text


same = S.same_value


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
    except ValueError:              # the channel answers it with 501 FRAME_ERROR (60, 40)
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

