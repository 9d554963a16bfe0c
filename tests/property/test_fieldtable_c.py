"""The C field-table walk (``protocol/_fastpath.c``: ``decode_table``, ``decode_array``)
against its Python reference (``protocol/fieldtable.py``: ``_table_at_py``,
``_array_at_py``): on every table and array clients can send (every field type, nested), the
same tables with bytes changed or cut short, and garbage, both give the same value (same
Python types) and the same stop, or both raise the same kind of error. Deep nesting raises
RecursionError in both, not a crash.
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from amqpbroker.protocol import fieldtable
from amqpbroker.testing import strategies as S

try:
    from amqpbroker.protocol import _fastpath as cfp
except ImportError:        # asserted below: setup.py builds it
    cfp = None

FAST = settings(max_examples=400, deadline=None)


def test_the_c_walk_is_built_and_used():
    assert cfp is not None
    assert fieldtable._table_at is not fieldtable._table_at_py


def outcome(fn, data: bytes, pos: int, end: int):
    """(value, stop), or the error's type: what a caller can tell apart."""
    try:
        return fn(data, pos, end)
    except (ValueError, RecursionError) as err:     # UnicodeDecodeError is a ValueError
        return type(err)


def agree(data: bytes, pos: int = 0, end: int | None = None) -> None:
    end = len(data) if end is None else end
    for c, py in ((fieldtable._table_at, fieldtable._table_at_py),
                  (fieldtable._array_at, fieldtable._array_at_py)):
        ours, ref = outcome(c, data, pos, end), outcome(py, data, pos, end)
        if isinstance(ref, tuple):
            assert isinstance(ours, tuple), (data, ours, ref)
            assert ours[1] == ref[1] and S.same_value(ours[0], ref[0]), (data, ours, ref)
        else:
            assert ours == ref, (data, ours, ref)


@FAST
@given(S.TABLES, hs.binary(max_size=8))
def test_well_formed_tables(table, trailer):
    wire, value = table
    agree(wire + trailer)
    got, stop = fieldtable._table_at(wire + trailer, 0, len(wire) + len(trailer))
    assert stop == len(wire) and S.same_value(got, value)


@FAST
@given(hs.lists(S.VALUES, max_size=6).map(S.array))
def test_well_formed_arrays(array):
    wire, value = array
    got, stop = fieldtable._array_at(wire, 1, len(wire))
    assert stop == len(wire) and S.same_value(got, value)
    agree(wire, 1)


@FAST
@given(S.TABLES.flatmap(lambda t: hs.tuples(hs.just(t[0]), hs.integers(0, 60),
                                            hs.binary(min_size=1, max_size=3))))
def test_tables_with_bytes_changed(case):
    wire, at, junk = case
    agree(wire[:at] + junk + wire[at + len(junk):])


@FAST
@given(S.TABLES, hs.data())
def test_tables_cut_short_or_ended_early(table, data):
    wire, _ = table
    cut = data.draw(hs.integers(0, len(wire)))
    agree(wire[:cut])
    agree(wire, 0, cut)                 # the same bytes, an end inside them


@FAST
@given(hs.binary(max_size=80))
def test_garbage(data):
    agree(data)
    agree(struct.pack(">I", len(data)) + data)


@pytest.mark.parametrize("kind", [b"F", b"A"])
def test_deep_nesting_raises_recursion_error_in_both(kind):
    inner = b""
    for _ in range(5000):
        entry = (b"\x01k" if kind == b"F" else b"") + kind + struct.pack(">I", len(inner)) \
            + inner
        inner = entry
    data = struct.pack(">I", len(inner)) + inner
    fn = fieldtable._table_at if kind == b"F" else fieldtable._array_at
    with pytest.raises(RecursionError):
        fn(data, 0, len(data))
    agree(data)
