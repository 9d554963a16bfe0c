"""A stream protocol Publish frame read in C (``_fastpath.stream_publish``) and the AMQP
publishes an adapter makes of it (``_fastpath.build_publishes``), against the Python that
reads and builds the same one message at a time: on valid frames of either version, sub-entries
(left to Python), and frames cut short, altered or garbage."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpbroker.protocol import fastpath as fp
from amqpbroker.stream_protocol import frames as f

try:
    from amqpbroker.protocol import _fastpath as cfp
except ImportError:        # asserted below: setup.py builds it
    cfp = None

FAST = settings(max_examples=300, deadline=None)


def test_the_c_reader_is_built_and_used():
    assert cfp is not None and f._stream_publish is cfp.stream_publish
    assert fp.build_publishes is cfp.build_publishes


def publish_body(pid, messages, version):
    out = [struct.pack(">Bi", pid, len(messages))]
    for publishing_id, data, filter_value in messages:
        out.append(struct.pack(">Q", publishing_id))
        if version >= 2:
            out.append(f._string(filter_value))
        out.append(struct.pack(">i", len(data)) + data)
    return b"".join(out)


def python_parse(body, version):
    """``frames.parse`` with the C reader switched off: the reference."""
    saved, f._stream_publish = f._stream_publish, None
    try:
        return f.parse(f.PUBLISH, version, body)
    except f.FrameError as exc:
        return ("error", str(exc))
    finally:
        f._stream_publish = saved


messages = st.lists(st.tuples(st.integers(0, 2**64 - 1),
                              st.binary(max_size=300).filter(lambda b: b[:1] < b"\x80"),
                              st.none() | st.text(max_size=20)), max_size=12)


@FAST
@given(st.integers(0, 255), messages, st.sampled_from([1, 2]))
def test_a_publish_frame_reads_as_python_reads_it(pid, msgs, version):
    if version == 1:
        msgs = [(i, d, None) for i, d, _ in msgs]
    body = publish_body(pid, msgs, version)
    want = python_parse(body, version)
    assert want == ("publish", None, pid, [tuple(m) for m in msgs])
    assert f.parse(f.PUBLISH, version, body) == want
    assert cfp.stream_publish(body, version) == (pid, want[3])


@FAST
@given(st.integers(0, 255), messages, st.sampled_from([1, 2]), st.data())
def test_cut_altered_or_garbage_frames_read_as_python_reads_them(pid, msgs, version, data):
    """C reads what Python reads, or leaves it (None) to Python: never something else."""
    body = bytearray(publish_body(pid, msgs, version))
    how = data.draw(st.sampled_from(["cut", "flip", "garbage", "extra"]))
    if how == "cut" and body:
        body = body[:data.draw(st.integers(0, len(body) - 1))]
    elif how == "flip" and body:
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] ^= data.draw(st.integers(1, 255))
    elif how == "garbage":
        body = bytearray(data.draw(st.binary(max_size=60)))
    else:
        body += b"\x00"
    body = bytes(body)
    got = cfp.stream_publish(body, version)
    if got is not None:
        assert ("publish", None, *got) == python_parse(body, version)


def test_a_sub_entry_is_left_to_python():
    entry = struct.pack(">QBHII", 7, 0x80, 2, 10, 3) + b"abc"
    body = struct.pack(">Bi", 1, 1) + entry
    assert cfp.stream_publish(body, 1) is None
    assert f.parse(f.PUBLISH, 1, body)[3][0][1].__class__.__name__ == "SubEntry"


@FAST
@given(st.integers(0, 65535), st.binary(max_size=255), st.binary(max_size=100),
       st.lists(st.binary(max_size=3000), max_size=8), st.integers(9, 9000), st.booleans())
def test_build_publishes_is_each_build_publish_in_turn(channel, key, props, bodies, frame_max,
                                                       mandatory):
    want = b"".join(b"".join(fp.build_publish_py(channel, b"", key, props, body, frame_max,
                                                 mandatory)) for body in bodies)
    assert cfp.build_publishes(channel, b"", key, props, bodies, frame_max, mandatory) == want


def test_build_publishes_takes_bytes_bodies_only():
    with pytest.raises(TypeError):
        cfp.build_publishes(1, b"", b"k", b"\x00\x00", [b"a", "b"], 4096, True)
