"""``build_deliver_run`` (C, ``protocol/_fastpath.c``): a run of deliveries turned into frames
straight from its records' bytes (a ``Dlvs`` as the ring link decodes it, ``RecordRun``),
against its Python reference (``fastpath.build_deliver_run_py``) and against what the
channel sent before for the same run: ``build_deliver`` of each decoded record in turn.
Odd inputs: an empty run, 64 KiB bodies (their payloads are slices of the run, not copies),
properties with headers, a body split by a small frame_max, records cut short or left over.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from pamqp import commands as C
from pamqp import frame as pframe

from amqpbroker.protocol import fastpath as fp
from amqpbroker.protocol import properties as props_mod
from amqpbroker.storage.record import Record, RecordRun

try:
    from amqpbroker.protocol import _fastpath as cfp
except ImportError:        # asserted below: setup.py builds it
    cfp = None

FAST = settings(max_examples=200, deadline=None)
CTAG = b"amq.ctag-abc"


def test_the_c_helper_is_built_and_used():
    assert cfp is not None
    assert fp.build_deliver_run is cfp.build_deliver_run


def one_by_one(channel, ctag, first_tag, records, frame_max) -> bytes:
    """What ``Channel._send_lot`` writes for the same run: ``build_deliver`` per record."""
    out = []
    for i, r in enumerate(records):
        out += fp.build_deliver(channel, ctag, first_tag + i, False, r.exchange,
                                r.routing_key, r.properties, r.body, frame_max)
    return b"".join(out)


def both(channel, ctag, first_tag, run: RecordRun, frame_max, copy_below=fp.COPY_BODY_BELOW):
    got = cfp.build_deliver_run(channel, ctag, first_tag, run.data, run.count, frame_max,
                                copy_below)
    ref = fp.build_deliver_run_py(channel, ctag, first_tag, run.data, run.count, frame_max,
                                  copy_below)
    assert b"".join(got) == b"".join(ref)
    return got


shortstr = hs.text(max_size=30).filter(lambda s: len(s.encode()) <= 255)
headers = hs.dictionaries(hs.text(min_size=1, max_size=8), hs.one_of(
    hs.integers(-2**31, 2**31 - 1), hs.text(max_size=10), hs.booleans()), max_size=3)
properties = hs.builds(
    lambda h, mid, mode: props_mod.encode(C.Basic.Properties(headers=h, message_id=mid,
                                                             delivery_mode=mode)),
    headers, shortstr, hs.sampled_from([1, 2]))
records = hs.builds(Record, hs.integers(0, 2**64 - 1), shortstr, shortstr,
                    hs.one_of(hs.just(b""), properties), hs.binary(max_size=600),
                    hs.integers(0, 255))


@FAST
@given(hs.lists(records, max_size=12), hs.integers(0, 0xffff), hs.integers(1, 2**64 - 64),
       hs.sampled_from([4096, 131072, 1 << 20]), hs.sampled_from([0, 100, 8192]))
def test_a_run_is_the_frames_of_each_record_in_turn(recs, channel, first_tag, frame_max,
                                                    copy_below):
    run = RecordRun.of(recs)
    got = both(channel, CTAG, first_tag, run, frame_max, copy_below)
    assert b"".join(got) == one_by_one(channel, CTAG, first_tag, recs, frame_max)


def test_an_empty_run_is_no_frames():
    assert cfp.build_deliver_run(1, CTAG, 5, b"", 0, 131072, fp.COPY_BODY_BELOW) == []
    assert fp.build_deliver_run_py(1, CTAG, 5, b"", 0, 131072, fp.COPY_BODY_BELOW) == []


def test_big_bodies_go_out_as_slices_of_the_run_not_copies():
    """A 64 KiB body (split by frame_max 4096 here, whole under 128 KiB) is not copied
    again: its body frames' payloads are views of the run's bytes; small ones are joined."""
    small = Record(1, "ex", "rk", props_mod.encode(C.Basic.Properties(headers={"a": 1})), b"s" * 16, 1)
    big = Record(2, "", "q", b"", bytes(range(256)) * 256, 0)
    recs = [small, big, small, big, small]
    run = RecordRun.of(recs)
    for frame_max in (4096, 131072):
        got = both(3, CTAG, 1, run, frame_max)
        assert b"".join(got) == one_by_one(3, CTAG, 1, recs, frame_max)
        views = [p for p in got if isinstance(p, memoryview)]
        assert sum(len(v) for v in views) == 2 * len(big.body)
        assert all(v.obj is run.data for v in views)
        assert all(type(p) in (bytes, memoryview) for p in got)
    # a run of small bodies is one bytes object
    assert [type(p) for p in both(3, CTAG, 1, RecordRun.of([small] * 50), 131072)] == [bytes]


def test_tags_count_up_and_none_is_redelivered():
    recs = [Record(1, "amq.direct", "k%d" % i, b"\x00\x00", b"body%d" % i, 0) for i in range(3)]
    data = b"".join(both(7, b"ctag", 41, RecordRun.of(recs), 131072))
    delivers, pos = [], 0
    while pos < len(data):
        used, channel, value = pframe.unmarshal(data[pos:])
        pos += used
        assert channel == 7
        if isinstance(value, C.Basic.Deliver):
            delivers.append(value)
    assert [(d.delivery_tag, d.redelivered, d.consumer_tag, d.exchange, d.routing_key)
            for d in delivers] == [(41 + i, False, "ctag", "amq.direct", "k%d" % i)
                                   for i in range(3)]


@pytest.mark.parametrize("build", ["c", "py"])
def test_records_cut_short_or_left_over_are_errors_not_crashes(build):
    fn = cfp.build_deliver_run if build == "c" else fp.build_deliver_run_py
    recs = [Record(1, "ex", "rk", b"\x10\x00", b"body", 0), Record(2, "", "q", b"", b"x", 1)]
    data = RecordRun.of(recs).data
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            fn(1, CTAG, 1, data[:cut], 2, 131072, 8192)
    with pytest.raises(ValueError):          # bytes after the count's records
        fn(1, CTAG, 1, data, 1, 131072, 8192)
    with pytest.raises(ValueError):          # fewer records than the count
        fn(1, CTAG, 1, data, 3, 131072, 8192)
    bad = bytearray(data)
    bad[13] = 200                            # an exchange longer than its record
    with pytest.raises(ValueError):
        fn(1, CTAG, 1, bytes(bad), 2, 131072, 8192)


def test_bad_arguments_are_refused():
    data = RecordRun.of([Record(1, "", "q", b"", b"x", 0)]).data
    with pytest.raises(ValueError):
        cfp.build_deliver_run(1, b"t" * 256, 1, data, 1, 131072, 8192)
    with pytest.raises(ValueError):
        cfp.build_deliver_run(1, CTAG, 1, data, 1, 8, 8192)
    with pytest.raises(ValueError):
        cfp.build_deliver_run(70000, CTAG, 1, data, 1, 131072, 8192)
    with pytest.raises(TypeError):
        cfp.build_deliver_run(1, CTAG, 1, bytearray(data), 1, 131072, 8192)


@pytest.mark.parametrize("build", ["c", "py"])
def test_a_run_lent_as_a_view_is_framed_with_every_body_copied(build):
    """A run a ring lends (a memoryview of its memory, ``links/ring.py``) gives the frames
    its bytes give, but no part refers to the view, not even a big body's: the ring's
    space is given back once the frames are built, before the socket writes them."""
    fn = cfp.build_deliver_run if build == "c" else fp.build_deliver_run_py
    small = Record(1, "ex", "rk", props_mod.encode(C.Basic.Properties(headers={"a": 1})), b"s" * 16, 1)
    big = Record(2, "", "q", b"", bytes(range(256)) * 256, 0)
    recs = [small, big, small, Record(3, "", "q", b"", b"e" * fp.COPY_BODY_BELOW, 0)]
    data = RecordRun.of(recs).data
    for frame_max in (4096, 131072):
        ring = bytearray(data)
        view = memoryview(ring).toreadonly()
        got = fn(3, CTAG, 1, view, len(recs), frame_max, fp.COPY_BODY_BELOW)
        assert b"".join(got) == one_by_one(3, CTAG, 1, recs, frame_max)
        assert not any(type(p) is memoryview and p.obj is ring for p in got)
        if build == "c":
            assert all(type(p) is bytes for p in got)
        view.release()                  # no export of it is left behind
        ring[:] = bytes(len(ring))      # the writer reuses the space
        assert b"".join(got) == one_by_one(3, CTAG, 1, recs, frame_max)
