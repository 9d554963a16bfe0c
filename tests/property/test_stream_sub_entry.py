"""A stream-protocol sub-entry (amqpbroker/stream_protocol/sub_entry.py) as a Publish frame
carries it: what a client encodes, the frame parser reads back as the same messages, mixed
with simple entries in any order; what cannot be stored is refused, never mis-split."""
from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, strategies as st

from amqpbroker.stream_protocol import frames as f
from amqpbroker.stream_protocol import sub_entry
from amqpbroker.stream_protocol.sub_entry import SubEntry

messages = st.lists(st.binary(max_size=300), min_size=1, max_size=40)
entries = st.lists(st.one_of(st.binary(max_size=100).map(lambda b: ("simple", b)),
                             st.tuples(st.just("sub"), messages,
                                       st.sampled_from([sub_entry.NONE, sub_entry.GZIP]))),
                   min_size=1, max_size=10)


@given(entries)
def test_publish_frames_read_back_as_published(items):
    wire = b""
    for i, item in enumerate(items):
        wire += struct.pack(">Q", i)
        if item[0] == "simple":
            wire += struct.pack(">I", len(item[1])) + item[1]
        else:
            wire += sub_entry.encode(item[1], item[2])
    body = struct.pack(">Bi", 5, len(items)) + wire
    name, _corr, pid, parsed = f.parse(f.PUBLISH, 1, body)
    assert (name, pid) == ("publish", 5)
    assert [p[0] for p in parsed] == list(range(len(items)))
    for item, (_id, data, filter_value) in zip(items, parsed):
        assert filter_value is None
        if item[0] == "simple":
            assert data == item[1]
        else:
            assert isinstance(data, SubEntry) and data.messages() == item[1]


@given(messages, st.integers(min_value=1, max_value=64))
def test_a_header_that_does_not_match_the_data_is_refused(msgs, wrong):
    raw = b"".join(struct.pack(">I", len(m)) + m for m in msgs)
    gz = zlib.compress(raw, wbits=16 + zlib.MAX_WBITS)
    for entry in (SubEntry(sub_entry.NONE, len(msgs), len(raw) + wrong, raw),
                  SubEntry(sub_entry.GZIP, len(msgs), len(raw) + wrong, gz),
                  SubEntry(sub_entry.GZIP, len(msgs), max(len(raw) - wrong, 0), gz),
                  SubEntry(sub_entry.NONE, len(msgs) + wrong, len(raw), raw),
                  SubEntry(sub_entry.GZIP, len(msgs), len(raw), gz[:-9])):
        with pytest.raises(sub_entry.Refused):
            entry.messages()


@pytest.mark.parametrize("compression", [sub_entry.SNAPPY, sub_entry.LZ4, sub_entry.ZSTD, 7])
def test_other_compressions_are_refused(compression):
    with pytest.raises(sub_entry.Refused, match="not supported"):
        SubEntry(compression, 1, 5, b"\0\0\0\1x").messages()


def test_a_gzip_bomb_is_refused_before_it_is_inflated():
    gz = zlib.compress(b"\0" * (1 << 20), wbits=16 + zlib.MAX_WBITS)
    with pytest.raises(sub_entry.Refused, match="over"):
        SubEntry(sub_entry.GZIP, 1, sub_entry.MAX_SIZE + 1, gz).messages()
    with pytest.raises(sub_entry.Refused):      # says less than it holds: cut at size + 1
        SubEntry(sub_entry.GZIP, 1, 1000, gz).messages()


def test_a_sub_entry_past_the_frames_end_is_a_frame_error():
    entry = sub_entry.encode([b"abc"])
    body = struct.pack(">Bi", 1, 1) + struct.pack(">Q", 1) + entry[:-2]
    with pytest.raises(f.FrameError):
        f.parse(f.PUBLISH, 1, body)
