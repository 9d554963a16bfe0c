"""``_record.scan_run`` (a ``Pubs``'s run kept as its bytes, worker/store.py's ``StoredRun``)
against its Python reference, and a batch appended from those bytes against one encoded from
the records (``encode_raw_batch_parts`` / ``encode_batch_parts``): the same bytes on disk."""
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands

from amqpbroker.protocol import properties as props_mod
from amqpbroker.storage import record as rec

shortstr = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
records = st.builds(rec.Record, st.integers(0, 2**64 - 1), shortstr, shortstr,
                    st.binary(max_size=200), st.binary(max_size=3000), st.integers(0, 255))


def run_of(records) -> bytes:
    return b"".join(rec.encode_record(r) for r in records)


def both(data, count, light_below=1024):
    """scan_run in C and in Python: the same answer, or the same refusal."""
    try:
        want = rec.scan_run_py(data, count, light_below)
    except ValueError as exc:
        with pytest.raises(ValueError):
            rec.scan_run(data, count, light_below)
        return exc
    assert rec.scan_run(data, count, light_below) == want
    return want


def test_the_c_version_is_built():
    assert rec.scan_run is not rec.scan_run_py


@given(st.lists(records, max_size=8), st.integers(0, 4000))
def test_scan_run_matches_the_reference(rs, light_below):
    facts = both(run_of(rs), len(rs), light_below)
    starts, sizes, bodies, light, first_persistent, expiring, first_ts, max_ts, max_body = facts
    assert list(memoryview(sizes).cast("I")) == [len(r.body) for r in rs]
    assert bodies == sum(len(r.body) for r in rs)
    assert light == sum(len(r.body) < light_below for r in rs)
    assert first_persistent == next((i for i, r in enumerate(rs) if r.flags & 1), -1)
    assert expiring == any(r.properties and r.properties[0] & 1 for r in rs)
    assert (first_ts, max_ts) == ((rs[0].timestamp, max(r.timestamp for r in rs)) if rs
                                  else (0, 0))
    assert max_body == max((len(r.body) for r in rs), default=0)
    data = run_of(rs)
    ends = list(memoryview(starts).cast("I"))
    assert ends[-1] == len(data) and len(ends) == len(rs) + 1
    for i, r in enumerate(rs):
        assert rec.decode_record(data, ends[i]) == (r, ends[i + 1])


def test_an_empty_run():
    assert both(b"", 0) == (b"\0\0\0\0", b"", 0, 0, -1, False, 0, 0, 0)


def test_64_kib_bodies_headers_and_expiration():
    headers = props_mod.encode(commands.Basic.Properties(headers={"x-a": "b" * 300},
                                                          delivery_mode=2))
    expiring = props_mod.encode(commands.Basic.Properties(expiration="60000"))
    rs = [rec.Record(5, "ex", "key", headers, b"x" * 65536, 1),
          rec.Record(3, "", "q", b"", b"", 0),
          rec.Record(9, "", "q", expiring, b"y" * 70000, 0)]
    facts = both(run_of(rs), 3)
    assert facts[2:] == (135536, 1, 0, True, 5, 9, 70000)
    assert both(run_of(rs[:2]), 2)[5] is False


def test_truncated_or_overlong_bytes_are_refused():
    data = run_of([rec.Record(1, "e", "k", b"\x10\x00\x02", b"body", 1)] * 2)
    for cut in range(len(data)):
        assert isinstance(both(data[:cut], 2), ValueError)
    assert isinstance(both(data + b"\0", 2), ValueError)         # bytes after the last
    assert isinstance(both(data, 1), ValueError)                   # a record after the count
    assert isinstance(both(data, 3), ValueError)                   # one record short
    assert not isinstance(both(data, 2), ValueError)
    bad = bytearray(data)
    struct.pack_into(">I", bad, 0, 5)                              # rec_len under its fields
    assert isinstance(both(bytes(bad), 2), ValueError)
    with pytest.raises(ValueError):
        rec.scan_run(data, -1, 0)


@given(st.lists(records, min_size=1, max_size=6), st.integers(0, 6), st.integers(0, 2**31),
       st.integers(0, 2**32 - 1))
def test_a_batch_from_the_bytes_is_the_batch_from_the_records(rs, cut, base, epoch):
    """In chunks as a store hands them (a run's bytes, a lone record), small and big."""
    rs = rs + [rec.Record(7, "", "q", b"", b"z" * 9000, 0)]       # one over SEPARATE_BODY
    cut = min(cut, len(rs))
    chunks = [(run_of(rs[:cut]), cut)] if cut else []
    chunks += [(rec.encode_record(r), 1) for r in rs[cut:]]
    parts, size, first_ts, max_ts = rec.encode_batch_parts(base, rs, epoch)
    raw, raw_size, count, raw_first, raw_max = rec.encode_raw_batch_parts(base, chunks, epoch)
    assert b"".join(raw) == b"".join(parts)
    assert (raw_size, count, raw_first, raw_max) == (size, len(rs), first_ts, max_ts)
    assert rec.crc_ok(b"".join(raw))


def test_a_raw_batch_refuses_bad_chunks():
    data = run_of([rec.Record(1, "", "q", b"", b"abc", 0)])
    with pytest.raises(IndexError):
        rec.encode_raw_batch_parts(0, [], 0)
    with pytest.raises(ValueError):
        rec.encode_raw_batch_parts(0, [(data[:-1], 1)], 0)
    with pytest.raises(ValueError):
        rec.encode_raw_batch_parts(0, [(data, 2)], 0)


@given(st.lists(records, min_size=1, max_size=8), st.data())
def test_bodyless_at_matches_the_reference_and_decodes_to_the_record_without_body(rs, data):
    run = run_of(rs)
    starts, sizes = rec.scan_run(run, len(rs), 0)[:2]
    k = data.draw(st.integers(0, len(rs) - 1))
    assert rec.bodyless_at is not rec.bodyless_at_py
    got = rec.bodyless_at(run, memoryview(starts).cast("I"), memoryview(sizes).cast("I"), k)
    assert got == rec.bodyless_at_py(run, starts, sizes, k)
    assert rec.decode_record(got, 0) == (rs[k]._replace(body=b""), len(got))


def test_bodyless_at_refuses_a_record_the_run_does_not_have():
    rs = [rec.Record(1, "", "q", b"", b"abc", 0), rec.Record(2, "", "q", b"", b"", 0)]
    run = run_of(rs)
    starts, sizes = rec.scan_run(run, 2, 0)[:2]
    for f in (rec.bodyless_at, rec.bodyless_at_py):
        for k in (-1, 2):
            with pytest.raises(IndexError):
                f(run, starts, sizes, k)
        with pytest.raises(ValueError):                 # the run cut short
            f(run[:len(run) - 1], starts, sizes, 1)
        wrong = struct.pack("=3I", 0, 3, 8)             # a record shorter than its body
        with pytest.raises(ValueError):
            f(run, wrong, sizes, 0)
