"""The STOMP codec and destination rules (amqpbroker/stomp), without a broker: RabbitMQ's
parsing rules (rabbit_stomp_frame.erl) and destination table (rabbit_routing_util.erl)."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from amqpbroker.stomp import destinations as d
from amqpbroker.stomp.frames import FrameError, Parser, serialize

names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(command=st.sampled_from(["SEND", "MESSAGE", "SUBSCRIBE"]),
       headers=st.dictionaries(names.filter(lambda n: n != "content-length"), values,
                               max_size=5),
       body=st.binary(max_size=200), cut=st.integers(min_value=1, max_value=50))
def test_what_is_serialized_parses_back_in_any_pieces(command, headers, body, cut):
    if command != "SEND" and b"\x00" in body:
        body = body.replace(b"\x00", b"")    # without content-length a body ends at NUL
    data = serialize(command, list(headers.items()), body) * 2
    parser = Parser(1 << 20, every_length=True)
    frames = []
    for i in range(0, len(data), cut):
        frames += parser.feed(data[i:i + cut])
    assert len(frames) == 2
    for frame in frames:
        assert (frame.command, frame.body) == (command, body)
        got = {k: v for k, v in frame.headers.items() if k != "content-length"}
        assert got == headers


def test_rabbitmqs_parsing_rules():
    p = Parser(1 << 20)
    frames = p.feed(b"\n\x00\r\nSEND\r\ndestination:/queue/a\r\ndestination:/queue/b\r\n"
                    b"x\\cy:a\\nb\\\\c\r\n\r\nbody\x00\n\n")
    assert len(frames) == 1
    f = frames[0]
    assert f.headers == {"destination": "/queue/a", "x:y": "a\nb\\c"}   # the first counts
    assert f.body == b"body"
    # content-length counts for SEND only (RabbitMQ); a NUL ends other frames' bodies
    f, = Parser(1 << 20).feed(b"SEND\ncontent-length:3\n\na\x00b\x00")
    assert f.body == b"a\x00b"
    f, = Parser(1 << 20).feed(b"ACK\ncontent-length:3\n\na\x00")
    assert f.body == b"a"
    for bad in (b"SEND\nno-colon\n\n\x00", b"SEND\nbad:\\t\n\n\x00",
                b"SEND\ncontent-length:1\n\nab\x00", b"SEND\ncontent-length:x\n\na\x00"):
        with pytest.raises(FrameError):
            Parser(1 << 20).feed(bad)
    with pytest.raises(FrameError):
        Parser(100).feed(b"SEND\n\n" + b"x" * 200)


def test_serialize_escapes_and_counts_the_body():
    assert serialize("MESSAGE", [("a:b", "c\nd"), ("content-length", "99")], b"xy") == \
        b"MESSAGE\na\\cb:c\\nd\ncontent-length:2\n\nxy\x00\n"
    assert serialize("RECEIPT", [("receipt-id", "1")]) == b"RECEIPT\nreceipt-id:1\n\n\x00\n"


@pytest.mark.parametrize("destination,parsed", [
    ("/queue/a", ("queue", "a")), ("plain", ("queue", "plain")),
    ("/queue/a%2Fb", ("queue", "a/b")), ("/amq/queue/q", ("amqqueue", "q")),
    ("/topic/x.y", ("topic", "x.y")), ("/exchange/e", ("exchange", ("e", None))),
    ("/exchange/e/k", ("exchange", ("e", "k"))), ("/temp-queue/t", ("temp_queue", "t")),
    ("/reply-queue/amq.gen-1/x", ("reply_queue", "amq.gen-1/x")),
])
def test_destinations(destination, parsed):
    assert d.parse(destination) == parsed


@pytest.mark.parametrize("destination,kind,text", [
    ("/queue", "Invalid destination", "'' is not a valid queue destination\n"),
    ("/queue/a/b", "Invalid destination", "'/a/b' is not a valid queue destination\n"),
    ("/exchange//k", "Invalid destination", "'//k' is not a valid exchange destination\n"),
    ("/exchange/a/b/c", "Invalid destination",
     "'/a/b/c' is not a valid exchange destination\n"),
    ("/nope/x", "Unknown destination", None),
])
def test_bad_destinations(destination, kind, text):
    with pytest.raises(d.BadDestination) as e:
        d.parse(destination)
    assert e.value.kind == kind
    if text is not None:
        assert e.value.text == text


def test_formatting_routing_and_queue_flags():
    assert d.format_destination("", "a/b") == "/queue/a%2Fb"
    assert d.format_destination("amq.topic", "k") == "/topic/k"
    assert d.format_destination("x", "") == "/exchange/x"
    assert d.format_destination("x", "é") == "/exchange/x/%C3%A9"
    assert d.routing("topic", "k") == ("amq.topic", "k")
    assert d.routing("exchange", ("x", None)) == ("x", "")
    # a /queue/ queue is durable; a subscription's queue is not, unless durable:true
    assert d.queue_flags("queue", {}) == {"durable": True, "exclusive": False,
                                          "auto_delete": False}
    assert d.queue_flags("topic", {}) == {"durable": False, "exclusive": False,
                                          "auto_delete": True}
    assert d.queue_flags("topic", {"durable": "true", "auto-delete": "false"}) == \
        {"durable": True, "exclusive": False, "auto_delete": False}
    a, b = d.subscription_queue_name("k", "1"), d.subscription_queue_name("k", "2")
    assert a.startswith("stomp-subscription-") and a != b
    assert a == d.subscription_queue_name("k", "1")
    assert d.parse_message_id("T_1@@session-x@@42") == ("T_1", 42)
    assert d.parse_message_id("nonsense") is None
    with pytest.raises(ValueError):
        d.message_properties({"priority": "high"})
