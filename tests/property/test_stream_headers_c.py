"""``properties.with_stream_headers`` and ``stream_place`` in C (``protocol/_fastpath.c``)
against their Python references, on any property list -- every stream delivery to a stream
protocol consumer goes through both -- and on bytes that are no property list at all (cut
short, garbage): the same answer, or the same exception, each time."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as hs

from amqpbroker.protocol import properties as P
from amqpbroker.testing import strategies as S



def test_the_c_helpers_are_built_and_used():
    """setup.py builds them (``pip install -e .``): a missing build is a failure here, not
    a skip, or the tests below would compare Python with itself."""
    assert P._with_stream_headers_c is not None and P._stream_place_c is not None

NAMES = [b"", b"\x0fx-stream-offset", b"\x12x-stream-timestamp"]


def outcome(f, *args):
    try:
        return ("value", f(*args))
    except Exception as exc:            # the same kind of failure, whatever it is
        return ("raises", type(exc))


def both(raw: bytes, offset: int, timestamp: int) -> None:
    assert outcome(P.with_stream_headers, raw, offset, timestamp) == outcome(
        P.with_stream_headers_py, raw, offset, timestamp)
    assert outcome(P.stream_place, raw) == outcome(P.stream_place_py, raw)
    made = outcome(P.with_stream_headers, raw, offset, timestamp)
    if made[0] == "value":
        assert outcome(P.stream_place, made[1]) == outcome(P.stream_place_py, made[1])


LONGS = hs.integers(-2**63, 2**63 - 1)


@given(S.typed_properties(headers=S.TABLES), LONGS, LONGS)
def test_c_is_python_on_property_lists(typed, offset, timestamp):
    both(typed[0], offset, timestamp)


@given(S.typed_properties(headers=S.TABLES), hs.sampled_from(NAMES), LONGS, LONGS)
def test_c_is_python_when_the_table_holds_a_stream_name(typed, name, offset, timestamp):
    """A table that holds either name already is not spliced (``rewrite`` replaces it)."""
    raw = typed[0]
    spliced = P.with_stream_headers_py(raw, 1, 2)
    both(spliced, offset, timestamp)                # the names there: rewritten, not added
    both(raw + name, offset, timestamp)


@given(S.typed_properties(headers=S.TABLES), hs.data())
def test_c_is_python_on_property_lists_cut_short(typed, data):
    raw = P.with_stream_headers_py(typed[0], 7, 8)
    cut = data.draw(hs.integers(0, len(raw)))
    both(raw[:cut], 7, 8)


@given(hs.binary(max_size=200), LONGS, LONGS)
def test_c_is_python_on_garbage(raw, offset, timestamp):
    both(raw, offset, timestamp)


def test_out_of_range_numbers_raise_as_python():
    both(b"\x00\x00", 2**63, 0)
    both(b"\x00\x00", 0, -2**63 - 1)
