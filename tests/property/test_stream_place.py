"""A stream delivery's place (offset, timestamp) and the raw flag read in place
(``properties.stream_place``, ``stream_protocol.connection._place_of``, and
``stream_message``, which gives a raw message's body back, in C and its Python reference)
against decoding those headers (``properties.pick``), for any property list as stored (a
record handed over direct) and with the stream headers added (a delivery read off the
socket)."""
from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as hs

from amqpbroker.protocol import properties as P
from amqpbroker.stream_protocol import _amqp10
from amqpbroker.stream_protocol.connection import (_PLACE, RAW, Publisher, _place_of,
                                                   stream_message_py)
from amqpbroker.testing import strategies as S

RAW_ENTRY = S.shortstr(RAW.encode()) + b"t"


def with_raw(table, flag, first):
    """A headers table (wire, value) with an x-stream-raw entry (``flag``: its byte, None:
    no entry) first or last among its entries."""
    body = table[0][4:]
    if flag is not None:
        body = RAW_ENTRY + flag + body if first else body + RAW_ENTRY + flag
    return S.longstr(body), None


# the other keys never the stream headers' own (a repeated key: the last wins in ``pick``)
OTHERS = S.TABLES.filter(lambda t: not any(k.startswith("x-stream") for k in t[1]))
TABLES = hs.builds(with_raw, OTHERS, hs.sampled_from([None, b"\x00", b"\x01"]), hs.booleans())


@given(S.typed_properties(headers=TABLES), hs.integers(0, 2**63 - 1),
       hs.integers(0, 2**63 - 1))
def test_read_in_place_as_decoded(typed, offset, timestamp):
    stored = typed[0]
    raw = P.with_stream_headers(stored, offset, timestamp)
    headers, _ = P.pick(raw, (*_PLACE, RAW))
    assert _place_of(SimpleNamespace(properties=raw)) == (
        headers.get("x-stream-offset", 0), headers.get("x-stream-timestamp", 0))
    assert (headers["x-stream-offset"], headers["x-stream-timestamp"]) == (offset, timestamp)
    body = b"the body"
    for properties in (stored, raw):
        want = body if headers.get(RAW) is True else None
        assert stream_message_py(properties, body) == want
        got = _amqp10.stream_message(properties, body)
        assert got is None or got == want       # None: the reference decides


def test_a_raw_publishs_body_is_given_back_in_c():
    """What the adapter stores for raw bytes (with a reference's headers, and a delivery's
    headers after them): C gives the body itself back, as the reference does."""
    body = b"not an AMQP 1.0 message"
    for reference in (None, "ref"):
        stored = Publisher(1, "s", reference).raw_properties
        if reference is not None:
            stored = P.with_long_header(stored, "x-sequence", 7)
        for properties in (stored, P.with_stream_headers(stored, 3, 1700000000000)):
            assert _amqp10.stream_message(properties, body) is body
            assert stream_message_py(properties, body) is body
