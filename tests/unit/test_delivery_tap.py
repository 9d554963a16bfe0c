"""The delivery reader of the protocol adapters' AMQP connections (amqpbroker/delivery_tap.py):
whatever way the broker's bytes are cut, a tapped channel's deliveries come out whole and in
order with everything else, and other channels' frames go to pika untouched."""
from __future__ import annotations

import pika
from hypothesis import given, strategies as st

import pytest

from amqpbroker import delivery_tap
from amqpbroker.delivery_tap import Delivery, DeliveryReader, split_deliveries_py
from amqpbroker.protocol.fastpath import build_confirm, build_deliver
from amqpbroker.stomp import destinations as d

PROPS = b"".join(pika.BasicProperties(content_type="text/plain", delivery_mode=2,
                                      headers={"k": "v", "n": 3}).encode())


def stream(bodies, frame_max):
    """Deliveries on channel 1 interleaved with an ack-shaped frame on channel 2 each."""
    parts = []
    for i, body in enumerate(bodies):
        parts += build_deliver(1, b"T_s", i + 1, i % 2 == 1, b"amq.topic", f"k.{i}".encode(),
                               PROPS, body, frame_max)
        parts.append(build_confirm(2, i + 1, False))
    return b"".join(bytes(p) for p in parts)


@given(bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
       frame_max=st.integers(min_value=4096, max_value=4200),
       cuts=st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=30))
def test_deliveries_whole_and_in_order_however_the_bytes_are_cut(bodies, frame_max, cuts):
    bodies = [b * (frame_max // max(len(b), 1) + 1) if i == 0 and b else b
              for i, b in enumerate(bodies)]           # the first spans several body frames
    data = stream(bodies, frame_max)
    out = read_all(data, cuts)
    got = [x for x in out if isinstance(x, Delivery)]
    others = b"".join(x for x in out if not isinstance(x, Delivery))
    assert [m.body for m in got] == bodies
    assert [m.delivery_tag for m in got] == list(range(1, len(bodies) + 1))
    assert [m.redelivered for m in got] == [i % 2 == 1 for i in range(len(bodies))]
    assert {(m.consumer_tag, m.exchange, m.channel) for m in got} == {("T_s", "amq.topic", 1)}
    assert [m.routing_key for m in got] == [f"k.{i}" for i in range(len(bodies))]
    assert all(m.properties == PROPS for m in got)
    assert others == b"".join(build_confirm(2, i + 1, False) for i in range(len(bodies)))
    # each confirm comes after the delivery before it: the order of the stream is kept
    kinds = ["d" if isinstance(x, Delivery) else "o" for x in out]
    assert kinds.index("o") > kinds.index("d")


def interleaved(bodies, frame_max):
    """Deliveries on channel 1 with a frame of channel 2 between each one's content header
    and its body (a broker may interleave channels between frames)."""
    parts = []
    for i, body in enumerate(bodies):
        frames = [bytes(p) for p in build_deliver(1, b"T", i + 1, False, b"", b"q", PROPS,
                                                  body, frame_max)]
        joined = b"".join(frames)
        head = 7 + int.from_bytes(joined[3:7], "big") + 1        # the method frame
        head += 7 + int.from_bytes(joined[head + 3:head + 7], "big") + 1   # the header
        parts += [joined[:head], bytes(build_confirm(2, i + 1, False)), joined[head:]]
    return b"".join(parts)


def read_all(data, cuts, python=False, monkeypatch=None):
    if python:
        monkeypatch.setattr(delivery_tap, "split_deliveries", split_deliveries_py)
    reader = DeliveryReader()
    reader.taps.add(1)
    out, pos, i = [], 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        out += reader.feed(data[pos:pos + step])
        pos, i = pos + step, i + 1
    assert not reader.buf and not reader.open
    return out


def squeezed(out):
    """``out`` with each run of pika's bytes joined: how they are cut may differ."""
    got = []
    for x in out:
        if not isinstance(x, Delivery) and got and not isinstance(got[-1], Delivery):
            got[-1] += x
        else:
            got.append(x if isinstance(x, Delivery) else bytes(x))
    return got


@given(bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=10),
       together=st.booleans())
def test_c_and_python_readers_agree_also_when_another_channel_comes_between(
        bodies, cuts, together):
    data = (stream if together else interleaved)(bodies, 4096)
    with pytest.MonkeyPatch.context() as mp:
        python = read_all(data, cuts, python=True, monkeypatch=mp)
    c = read_all(data, cuts)
    assert squeezed(c) == squeezed(python)
    got = [m for m in c if isinstance(m, Delivery)]
    assert [m.body for m in got] == bodies
    assert [m.routing_key for m in got] == [
        f"k.{i}" if together else "q" for i in range(len(bodies))]
    assert all(m.properties == PROPS for m in got)


@given(data=st.binary(max_size=200), prefix=st.booleans(), taps=st.sets(
    st.integers(min_value=0, max_value=3), max_size=3),
    flip=st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)))
def test_split_deliveries_c_agrees_with_python_on_any_bytes(data, prefix, taps, flip):
    if delivery_tap.split_deliveries is split_deliveries_py:
        pytest.fail("the C extension is not built (python setup.py build_ext --inplace)")
    if prefix:      # valid deliveries first, one byte of them changed, then garbage
        valid = bytearray(stream([b"body", b"x" * 5000], 4096))
        valid[flip[0] % len(valid)] = flip[1]
        data = bytes(valid) + data
    for buf in (bytearray(data), data[:len(data) // 2]):
        out_c, out_py = [], []
        assert (delivery_tap.split_deliveries(buf, 0, taps | {1}, Delivery, out_c)
                == split_deliveries_py(buf, 0, taps | {1}, Delivery, out_py))
        assert out_c == out_py
        assert all(type(x) is Delivery or type(x) is bytes for x in out_c)


def test_split_deliveries_takes_a_body_of_several_frames_whole():
    body = bytes(range(256)) * 100                      # 25,600 bytes in 4 KiB frames
    data = stream([body, b""], 4096)
    out = []
    assert delivery_tap.split_deliveries(data, 0, {1}, Delivery, out) == len(data)
    got = [x for x in out if isinstance(x, Delivery)]
    assert [g.body for g in got] == [body, b""]
    assert got[0] == Delivery(1, "T_s", 1, False, "amq.topic", "k.0", PROPS, body)
    cut = []                                            # the last body frame not in yet
    first = len(b"".join(bytes(p) for p in build_deliver(
        1, b"T_s", 1, False, b"amq.topic", b"k.0", PROPS, body, 4096)))
    assert delivery_tap.split_deliveries(data[:first - 1], 0, {1}, Delivery, cut) == 0
    assert cut == []


def test_an_untapped_channel_goes_through_untouched():
    data = stream([b"abc"], 131072)
    reader = DeliveryReader()
    assert b"".join(reader.feed(data)) == data


def test_stomp_headers_from_raw_properties():
    raw = b"".join(pika.BasicProperties(
        content_type="text/plain", delivery_mode=1, priority=4, correlation_id="c",
        reply_to="rq", timestamp=7, app_id="a", headers={"s": "x", "i": 5, "b": True,
                                                         "l": ["not", "a string"]}).encode())
    assert d.message_headers(raw) == [
        ("s", "x"), ("i", "5"), ("app-id", "a"), ("timestamp", "7"),
        ("reply-to", "/reply-queue/rq"), ("correlation-id", "c"), ("priority", "4"),
        ("persistent", "1"), ("content-type", "text/plain")]
    assert d.message_headers(b"\x00\x00") == []
