"""``properties.with_group_headers``: a consumer group delivery's ``x-partition`` (int) and
``x-stream-offset`` (long), the same properties as the general ``rewrite`` for every shape of
property list, a publisher's own values of those headers replaced."""
from __future__ import annotations

import struct

import pytest
from pamqp import commands

from amqpbroker.protocol import properties as P


def encoded(**fields) -> bytes:
    return P.encode(commands.Basic.Properties(**fields))


SHAPES = [
    {},
    {"content_type": "text/plain"},
    {"content_type": "a", "content_encoding": "gzip", "delivery_mode": 2},
    {"headers": {"app": "x", "n": 7}},
    {"content_type": "t", "headers": {"nested": {"a": [1, "b"]}}, "priority": 3},
    {"headers": {"x-partition": "spoofed", "keep": 1}},
    {"headers": {"x-stream-offset": 99}},
    {"headers": {"x-partitionX": 1}},                   # a key that contains ours: kept
]


@pytest.mark.parametrize("fields", SHAPES)
@pytest.mark.parametrize("partition,offset", [(0, 0), (5, 2**40), (999, 2**63 - 1)])
def test_same_as_rewrite(fields, partition, offset):
    raw = encoded(**fields)
    fast = P.with_group_headers(raw, partition, offset)
    slow = P.rewrite(raw, set_headers={"x-partition": P.Int(partition),
                                       "x-stream-offset": P.Long(offset)})
    assert P.decode(fast) == P.decode(slow)
    decoded = P.decode(fast)
    assert (decoded.headers["x-partition"], decoded.headers["x-stream-offset"]) == \
        (partition, offset)
    for k, v in (fields.get("headers") or {}).items():
        if k not in ("x-partition", "x-stream-offset"):
            assert decoded.headers[k] == v
    for k, v in fields.items():
        if k != "headers":
            assert getattr(decoded, k) == v


def test_written_as_an_int_and_a_long():
    fast = P.with_group_headers(encoded(), 3, 7)
    assert fast.endswith(b"\x0bx-partitionI" + struct.pack(">i", 3) +
                         b"\x0fx-stream-offsetl" + struct.pack(">q", 7))
