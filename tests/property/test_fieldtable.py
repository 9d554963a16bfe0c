"""The linear field-table decoder (``protocol/fieldtable.py``) against pamqp's own.

* every well-formed table (every AMQP 0-9-1 field type, nested tables and arrays) decodes to
  what pamqp's decoder gives, consuming the same bytes;
* any bytes either decode to what pamqp gives or raise ``ValueError`` — never anything else;
  it may refuse what pamqp accepts only when a value runs past its table's end or is missing
  there (pamqp reads on into the next bytes, or takes a missing value as void);
* the decoder is what pamqp uses once the protocol package is imported.
"""
from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as hs
from pamqp import commands as C
from pamqp import decode as pdecode

from amqpbroker.protocol import fieldtable
from amqpbroker.testing import strategies as S


ORIGINAL_TABLE, ORIGINAL_ARRAY = fieldtable.original_decoders()

same = S.same_value


@given(S.TABLES, hs.binary(max_size=8))
def test_well_formed_tables_decode_as_pamqp_does(table, trailer):
    wire, value = table
    data = wire + trailer
    consumed, got = fieldtable.field_table(data)
    assert consumed == len(wire)
    assert same(got, value)
    assert ORIGINAL_TABLE(data)[0] == consumed and same(got, ORIGINAL_TABLE(data)[1])


@given(hs.lists(S.VALUES, max_size=6).map(S.array))
def test_well_formed_arrays_decode_as_pamqp_does(array):
    wire, value = array
    consumed, got = fieldtable.field_array(wire[1:])
    assert consumed == len(wire) - 1
    assert same(got, value)
    assert same(got, ORIGINAL_ARRAY(wire[1:])[1])


@given(hs.one_of(hs.binary(max_size=64),
                 S.TABLES.flatmap(lambda t: hs.tuples(hs.just(t[0]), hs.integers(0, 40),
                                                      hs.binary(min_size=1, max_size=3)))
                 .map(lambda x: x[0][:x[1]] + x[2] + x[0][x[1] + len(x[2]):])))
def test_any_bytes_decode_as_pamqp_or_raise_value_error(data):
    try:
        ours = fieldtable.field_table(data)
    except ValueError as err:
        ours, why = None, str(err)
    try:
        theirs = ORIGINAL_TABLE(data)
    except ValueError:
        theirs = None
    except Exception:           # pamqp's own bugs on garbage (not ours to match)
        theirs = None
    if ours is None:                # refused: pamqp did too, or a value overran its table
        assert theirs is None or "exceeds" in why
    else:
        assert theirs is not None and ours[0] == theirs[0] and same(ours[1], theirs[1])


def test_pamqp_decodes_through_it():
    assert pdecode.METHODS["table"] is fieldtable.field_table
    assert pdecode.TABLE_MAPPING[b"F"] is fieldtable.field_table
    assert pdecode.TABLE_MAPPING[b"A"] is fieldtable.field_array
    args = {"x-match": "all", "nested": {"list": [1, "two", {"three": 3}]}}
    payload = C.Queue.Declare(queue="q", arguments=args).marshal()
    decoded = C.Queue.Declare()
    decoded.unmarshal(payload)
    assert decoded.arguments == args


def test_a_table_of_many_fields_decodes_whole():
    """128 KiB of one-byte-key fields: every field is there (the size that took pamqp's
    decoder 1.3 s of CPU; bench/fieldtable.py measures both)."""
    n = 128 * 1024 // 8
    wire = b"".join(S.shortstr(f"k{i}".encode()) + b"V" for i in range(n))
    consumed, got = fieldtable.field_table(S.longstr(wire))
    assert consumed == len(wire) + 4
    assert len(got) == n and got[f"k{n - 1}"] is None


@given(S.typed_properties())
def test_the_headers_alone_decode_as_the_whole_property_list_does(typed):
    """``properties.headers_of`` (what routing reads of a publish with headers) gives the
    headers a full decode gives, for any property list."""
    from amqpbroker.protocol import properties as P
    raw, want = typed
    assert same(P.headers_of(raw), P.decode(raw).headers or {})
    assert same(P.headers_of(raw), want.get("headers", {}))


@given(S.TABLES, hs.integers(0, 40), hs.binary(min_size=1, max_size=3))
def test_a_broken_headers_table_is_refused_as_the_full_decode_refuses_it(table, at, junk):
    """Bytes overwritten inside a headers table: ``headers_of`` refuses (ValueError) what
    the full decode refuses, and decodes alike what it takes."""
    from amqpbroker.protocol import properties as P
    wire = table[0][:at] + junk + table[0][at + len(junk):]
    raw = struct.pack(">H", P.F_HEADERS) + wire
    try:
        full = P.decode(raw).headers or {}
    except ValueError:
        full = None
    try:
        alone = P.headers_of(raw)
    except ValueError:
        alone = None
    assert (full is None) == (alone is None)
    if full is not None:
        assert same(alone, full)
