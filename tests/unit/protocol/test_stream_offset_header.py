"""``properties.with_long_header``, the ``x-stream-offset`` header of stream deliveries: the
same properties as the general ``rewrite``, for every shape of property list."""
from __future__ import annotations

import struct

import pytest
from pamqp import commands

from amqpbroker.protocol import properties as P

KEY = "x-stream-offset"


def encoded(**fields) -> bytes:
    return P.encode(commands.Basic.Properties(**fields))


SHAPES = [
    {},
    {"content_type": "text/plain"},
    {"content_type": "a", "content_encoding": "gzip", "delivery_mode": 2},
    {"headers": {"app": "x", "n": 7}},
    {"content_type": "t", "headers": {"nested": {"a": [1, "b"]}}, "priority": 3,
     "message_id": "m1", "app_id": "app"},
    {"headers": {KEY: "spoofed", "keep": 1}},          # the publisher's own value is replaced
    {"headers": {"x-stream-offsetX": 1}},              # a key that contains ours: kept
]


@pytest.mark.parametrize("fields", SHAPES)
@pytest.mark.parametrize("offset", [0, 5, 2**40, 2**63 - 1])
def test_same_as_rewrite(fields, offset):
    raw = encoded(**fields)
    fast = P.with_long_header(raw, KEY, offset)
    slow = P.rewrite(raw, set_headers={KEY: P.Long(offset)})
    assert P.decode(fast) == P.decode(slow)
    decoded = P.decode(fast)
    assert decoded.headers[KEY] == offset
    for k, v in (fields.get("headers") or {}).items():
        if k != KEY:
            assert decoded.headers[k] == v
    for k, v in fields.items():
        if k != "headers":
            assert getattr(decoded, k) == v


def test_written_as_a_long():
    fast = P.with_long_header(encoded(), KEY, 3)
    assert fast.endswith(b"\x0f" + KEY.encode() + b"l" + struct.pack(">q", 3))


@pytest.mark.parametrize("fields", SHAPES)
def test_with_stream_offset_is_with_long_header_without_the_stream_protocols_headers(fields):
    """Any client but a stream protocol consumer: the offset appended, the bytes an AMQP 1.0
    message published over the stream protocol keeps around its body removed (RabbitMQ's
    AMQP 0-9-1 view has no such headers), every other header kept."""
    raw = encoded(**fields)
    assert P.with_stream_offset(raw, 9) == P.with_long_header(raw, KEY, 9)
    around = {**(fields.get("headers") or {})}
    kept = dict(around)
    around.update({"x-stream-amqp-1.0-prefix": "p", "x-stream-amqp-1.0-suffix": ""})
    stored = encoded(**{**fields, "headers": around})
    decoded = P.decode(P.with_stream_offset(stored, 9))
    assert decoded.headers == {**kept, KEY: 9}
    assert P.decode(P.with_stream_offset(stored, 9)) == P.decode(
        P.with_long_header(encoded(**{**fields, "headers": kept}), KEY, 9))
