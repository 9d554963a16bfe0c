"""The C hot path (``protocol/_fastpath.c``) against its Python reference in ``fastpath.py``.

``whole_publish`` is fed publishes as clients send them (any names, properties, bodies,
channels, frame_max), then the same bytes cut short at every length, with one byte changed,
and garbage; on every input the C and Python versions return the same thing (None included).
``build_deliver`` must write the bytes the Python version's parts join to.
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from amqpbroker.protocol import fastpath as fp

try:
    from amqpbroker.protocol import _fastpath as cfp
except ImportError:        # asserted below: setup.py builds it
    cfp = None

FAST = settings(max_examples=300, deadline=None)
MAX_MESSAGE = 1 << 20


def test_the_c_helper_is_built_and_used():
    """setup.py builds it; without it every message pays the Python parser's price."""
    assert cfp is not None
    assert fp.whole_publish is cfp.whole_publish


def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"


def shortstr(b: bytes) -> bytes:
    return bytes((len(b),)) + b


names = hs.one_of(hs.text(max_size=30).map(lambda s: s.encode()[:255]),
                  hs.binary(max_size=40))          # not always UTF-8: C and Python refuse alike


@hs.composite
def publishes(draw):
    """basic.publish + header + body frames, the usual shape or slightly off it."""
    usual = draw(hs.booleans())                     # half of them exactly as a client sends
    channel = draw(hs.integers(0, 65535))
    exchange, routing_key = draw(names), draw(names)
    if usual:
        exchange, routing_key = (exchange.decode("utf-8", "replace").encode()[:255],
                                 routing_key.decode("utf-8", "replace").encode()[:255])
    bits = draw(hs.integers(0, 255))
    props = draw(hs.sampled_from([b"\x00\x00", b"\x10\x00\x02", b"\x80\x00\x0atext/plain"])
                 | hs.binary(max_size=30))
    body = draw(hs.binary(max_size=300))
    method = b"\x00\x3c\x00\x28" + b"\x00\x00" + shortstr(exchange) + shortstr(routing_key) \
        + bytes((bits,))
    method += draw(hs.binary(max_size=3))           # trailing bytes after the bits
    if usual:
        header_size, hchannel, class_id, btype = len(body), channel, 60, 3
        props = draw(hs.sampled_from([b"\x00\x00", b"\x10\x00\x02"]))
    else:
        header_size = draw(hs.sampled_from([len(body), len(body) + 1, max(len(body) - 1, 0)]))
        hchannel = draw(hs.sampled_from([channel, channel ^ 1]))
        class_id = draw(hs.sampled_from([60, 60, 50]))
        btype = draw(hs.sampled_from([3, 3, 1]))
    data = frame(1, channel, method)
    data += frame(2, hchannel, struct.pack(">HHQ", class_id, 0, header_size) + props)
    if body or (not usual and draw(hs.booleans())):
        data += frame(btype, channel, body)
    data += draw(hs.binary(max_size=20))           # whatever comes next
    return data


limits = hs.tuples(hs.sampled_from([4096, 131072, 20, 40]),
                   hs.sampled_from([MAX_MESSAGE, 0, 100]))


def same(buf, pos, frame_max, max_size):
    c = cfp.whole_publish(buf, pos, frame_max, max_size)
    py = fp.whole_publish_py(buf, pos, frame_max, max_size)
    assert c == py
    return c


@FAST
@given(publishes(), limits, hs.binary(max_size=9))
def test_whole_publish_matches_the_reference(data, limit, before):
    frame_max, max_size = limit
    buf = bytearray(before + data)
    same(buf, len(before), frame_max, max_size)
    same(bytes(buf), len(before), frame_max, max_size)


@FAST
@given(publishes(), limits)
def test_whole_publish_cut_short_at_every_length(data, limit):
    """One byte at a time: each prefix is None in both, until the publish is whole."""
    for n in range(len(data) + 1):
        same(bytearray(data[:n]), 0, *limit)


@FAST
@given(publishes(), limits, hs.data())
def test_whole_publish_with_a_byte_changed(data, limit, draw):
    i = draw.draw(hs.integers(0, len(data) - 1))
    changed = bytearray(data)
    changed[i] = draw.draw(hs.integers(0, 255))
    same(changed, 0, *limit)


@FAST
@given(hs.binary(max_size=200), hs.integers(0, 210), limits)
def test_whole_publish_on_garbage(data, pos, limit):
    same(bytearray(data), pos, *limit)


def test_whole_publish_reads_a_publish():
    data = frame(1, 3, b"\x00\x3c\x00\x28\x00\x00" + shortstr(b"ex") + shortstr("ké".encode())
                 + b"\x01") + frame(2, 3, struct.pack(">HHQ", 60, 0, 5) + b"\x10\x00\x02") \
        + frame(3, 3, b"hello") + b"next"
    got = same(bytearray(data), 0, 4096, MAX_MESSAGE)
    assert got == (3, "ex", "ké", True, False, b"\x10\x00\x02", b"hello", len(data) - 4)


deliver_args = hs.tuples(hs.integers(0, 65535), hs.binary(max_size=255),
                         hs.integers(0, 2**64 - 1), hs.booleans(), hs.binary(max_size=255),
                         hs.binary(max_size=255), hs.binary(max_size=100),
                         hs.binary(max_size=5000), hs.integers(9, 140000))


@FAST
@given(deliver_args)
def test_build_deliver_matches_the_reference(args):
    assert cfp.build_deliver(*args) == b"".join(fp.build_deliver_py(*args))
    assert b"".join(fp.build_deliver(*args)) == b"".join(fp.build_deliver_py(*args))


@FAST
@given(deliver_args, hs.text(max_size=60), hs.text(max_size=60))
def test_build_deliver_takes_names_as_text(args, exchange, routing_key):
    """A record's exchange and routing key are str: encoded as UTF-8, as the caller would."""
    args = (*args[:4], exchange, routing_key, *args[6:])
    encoded = (*args[:4], exchange.encode(), routing_key.encode(), *args[6:])
    if len(encoded[4]) > 255 or len(encoded[5]) > 255:
        return
    assert b"".join(fp.build_deliver(*args)) == b"".join(fp.build_deliver_py(*encoded))
    big = (*args[:7], b"x" * fp.COPY_BODY_BELOW, args[8])        # the Python path
    assert b"".join(fp.build_deliver(*big)) == b"".join(
        fp.build_deliver_py(*encoded[:7], big[7], big[8]))


publish_args = hs.tuples(hs.integers(0, 65535), hs.binary(max_size=255),
                         hs.binary(max_size=255), hs.binary(max_size=100),
                         hs.binary(max_size=5000), hs.integers(9, 140000), hs.booleans())


@FAST
@given(publish_args)
def test_build_publish_matches_the_reference(args):
    """An adapter's publishes (``build_publish``): the bytes of the Python parts, joined,
    whatever the body's split by frame_max; and what the broker's parser reads back."""
    want = b"".join(fp.build_publish_py(*args))
    assert cfp.build_publish(*args) == want
    assert b"".join(fp.build_publish(*args)) == want
    channel, exchange, routing_key, props, body, frame_max, mandatory = args
    if len(body) <= frame_max - 8 and frame_max >= 20 + len(props):
        got = same(want, 0, frame_max, MAX_MESSAGE)
        if got is not None:         # names that are UTF-8
            assert got[0] == channel and got[3] is mandatory
            assert got[5:7] == (props, body) and got[7] == len(want)


def test_build_publish_refuses_a_name_too_long_as_the_reference():
    for build in (cfp.build_publish, fp.build_publish_py):
        with pytest.raises(ValueError):
            build(1, b"x" * 256, b"", b"\x00\x00", b"", 4096, False)


def test_without_the_extension_the_python_reference_does_the_same(monkeypatch):
    """A build without a C compiler: ``connection`` parses with ``whole_publish_py`` and
    deliveries are built by ``build_deliver_py``; a stream of publishes (small, empty,
    split over several body frames, with properties) and a garbage tail give the same events
    and the same error, fed whole and one byte at a time."""
    from pamqp import commands as C

    from amqpbroker import errors
    from amqpbroker.protocol import connection
    from amqpbroker.testing.feeder import SPLITTERS, feed

    from .conftest import handshake, new_connection, open_channel, publish

    data = (publish(1, b"hello") + publish(1, b"") + publish(1, b"x" * 10000, chunk=3000)
            + publish(1, b"p", routing_key="ké", props=C.Basic.Properties(delivery_mode=2)))
    garbage = b"\x01\x00\x01\x00\x00\x00\x05garbage"

    def run(split):
        c = new_connection(frame_max=4096)
        handshake(c)
        open_channel(c)
        events = [(e.channel, e.exchange, e.routing_key, e.mandatory, e.immediate,
                   e.properties, e.body, e.scan.delivery_mode, e.scan.flags)
                  for e in feed(c, data, split)]
        with pytest.raises(errors.AMQPError) as info:
            feed(c, garbage, split)
        return events, (info.value.reply_code, info.value.reply_text)

    for split in SPLITTERS.values():
        native = run(split)
        monkeypatch.setattr(connection, "whole_publish", fp.whole_publish_py)
        monkeypatch.setattr(fp, "_build_deliver_c", None)
        assert run(split) == native
        monkeypatch.undo()
        assert [e[6] for e in native[0]] == [b"hello", b"", b"x" * 10000, b"p"]
    args = (1, b"ctag", 7, False, "ex", "rk", b"\x00\x00", b"body", 4096)
    monkeypatch.setattr(fp, "_build_deliver_c", None)
    assert b"".join(fp.build_deliver(*args)) == cfp.build_deliver(*args)
