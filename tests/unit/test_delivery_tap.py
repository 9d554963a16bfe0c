"""The delivery reader of the protocol adapters' AMQP connections (amqpbroker/delivery_tap.py):
whatever way the broker's bytes are cut, a tapped channel's deliveries come out whole and in
order with everything else, and other channels' frames go to pika untouched."""
from __future__ import annotations

import pika
from hypothesis import given, strategies as st

from amqpbroker.delivery_tap import Delivery, DeliveryReader
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
    reader = DeliveryReader()
    reader.taps.add(1)
    out, pos, i = [], 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        out += reader.feed(data[pos:pos + step])
        pos, i = pos + step, i + 1
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
    assert not reader.buf and not reader.open


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
