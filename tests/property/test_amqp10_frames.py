"""AMQP 1.0 frames (amqpbroker/amqp10/frames.py): every performative this side writes reads
back with the fields it was given, whole or fed a byte at a time; and any bytes at all either
split into frames or raise ``FrameError`` (what closes the connection with an AMQP 1.0 error),
never anything else: a client's garbage cannot crash its connection's handler."""
from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from amqpbroker.amqp10 import frames as f

FAST = settings(max_examples=300, deadline=None)

uints = st.integers(0, 0xFFFFFFFF).map(lambda v: ("uint", v))
strings = st.text(max_size=20).map(lambda v: ("utf8", v))
bools = st.booleans().map(lambda v: ("boolean", v))
binaries = st.binary(max_size=16).map(lambda v: ("binary", v))
FIELD_VALUES = {"handle": uints, "delivery_id": uints, "delivery_tag": binaries,
                "settled": bools, "more": bools, "name": strings, "role": bools,
                "first": uints, "last": uints, "link_credit": uints,
                "delivery_count": uints, "container_id": strings}
PERFORMATIVES = {
    "transfer": ("handle", "delivery_id", "delivery_tag", "settled", "more"),
    "attach": ("name", "handle", "role"),
    "disposition": ("role", "first", "last", "settled"),
    "flow": ("handle", "delivery_count", "link_credit"),
    "open": ("container_id",),
}


@st.composite
def performatives(draw):
    name = draw(st.sampled_from(sorted(PERFORMATIVES)))
    fields = {k: draw(FIELD_VALUES[k]) for k in PERFORMATIVES[name]}
    payload = draw(st.binary(max_size=40)) if name == "transfer" else b""
    return name, draw(st.integers(0, 255)), fields, payload


@FAST
@given(st.lists(performatives(), min_size=1, max_size=5), st.booleans())
def test_frames_read_back_as_written(items, bytewise):
    wire = b"".join(f.frame(name, channel, payload, **fields)
                    for name, channel, fields, payload in items)
    splitter = f.Splitter(1 << 20)
    if bytewise:
        got = [fr for i in range(len(wire)) for fr in splitter.feed(wire[i:i + 1])]
    else:
        got = splitter.feed(wire)
    assert len(got) == len(items)
    for fr, (name, channel, fields, payload) in zip(got, items):
        assert (fr.name, fr.channel, fr.payload) == (name, channel, payload)
        for k, v in fields.items():
            assert fr.fields[k] == v


@FAST
@given(st.binary(max_size=200))
def test_any_bytes_are_frames_or_a_frame_error(data):
    for body in (data, struct.pack(">IBBH", 8 + len(data), 2, 0, 0) + data):
        try:
            f.Splitter(1 << 20).feed(body)
        except f.FrameError:
            pass


@FAST
@given(performatives(), st.integers(0, 60), st.binary(min_size=1, max_size=4))
def test_frames_with_bytes_changed_are_frames_or_a_frame_error(item, at, junk):
    name, channel, fields, payload = item
    wire = bytearray(f.frame(name, channel, payload, **fields))
    at = min(at, len(wire) - 1)
    wire[at:at + len(junk)] = junk
    try:
        f.Splitter(1 << 20).feed(bytes(wire))
    except f.FrameError:
        pass
