"""A stream delivery's place (offset, timestamp) and the raw flag read in place
(``properties.stream_place``, ``stream_protocol.connection._place_of`` and ``_is_raw``)
against decoding those headers (``properties.pick``), for any property list as stored (the
raw flag of a record handed over direct) and with the stream headers added (a delivery read
off the socket)."""
from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as hs

from amqpbroker.protocol import properties as P
from amqpbroker.stream_protocol.connection import _PLACE, RAW, _is_raw, _place_of
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
    assert _is_raw(raw) is _is_raw(stored) is (headers.get(RAW) is True)
