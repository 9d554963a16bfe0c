"""The AMQP 1.0 listener's message mapping (amqpbroker/amqp10/message.py), against the
AMQP 1.0 codec of qpid-proton (the client the listener's tests drive): a message sent over
AMQP 1.0 comes back to an AMQP 1.0 consumer as it was sent (but for its header, made anew),
whatever its body; an AMQP 0-9-1 consumer reads its properties and body; the shortcut for a
bare data section gives what the full mapping gives."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from proton import Message

from amqpbroker.amqp10 import message
from amqpbroker.stream_protocol import amqp10 as convert

BODIES = [b"bytes", "a string", 42, ["a", 1], {"k": "v"}, b"", "é" * 300]


def round_trip(m: Message, routing_key: str = "rk", redelivered: bool = False) -> Message:
    kw, body, _, _ = message.incoming(m.encode())
    raw_properties = convert.encode_properties(dict(kw)) if kw else b"\x00\x00"
    out = Message()
    out.decode(message.outgoing(raw_properties, body, routing_key, redelivered))
    return out


@pytest.mark.parametrize("body", BODIES)
def test_amqp10_messages_come_back_as_sent(body):
    sent = Message(body=body, subject="subj", id="m-1", correlation_id="c-1",
                   content_type="text/plain", properties={"n": 7, "s": "v", "f": 1.5},
                   annotations={"x-opt-thing": "kept"}, durable=True, priority=7)
    got = round_trip(sent, redelivered=True)
    assert (got.body, got.subject, got.id, got.correlation_id, got.content_type) == \
        (sent.body, sent.subject, sent.id, sent.correlation_id, sent.content_type)
    assert got.properties == sent.properties and got.annotations == sent.annotations
    assert (got.durable, got.priority, got.first_acquirer) == (True, 7, False)


def test_amqp091_consumers_read_the_mapped_properties():
    kw, body, to, subject = message.incoming(Message(
        body="text", id="m-2", content_type="text/plain", properties={"k": "v"}, durable=True,
        address="/exchange/x/k", subject="s").encode())
    assert (to, subject) == ("/exchange/x/k", "s")
    assert body == b"text"
    assert (kw["message_id"], kw["content_type"], kw["delivery_mode"]) == \
        ("m-2", "text/plain", 2)
    assert kw["headers"]["k"] == "v"


def test_amqp091_messages_get_the_routing_key_as_subject_and_headers_as_properties():
    import pika
    raw = b"".join(pika.BasicProperties(headers={"h": "w", "n": 3}, delivery_mode=2,
                                        message_id="m-3").encode())
    got = Message()
    got.decode(message.outgoing(raw, b"payload", "orders.eu", False))
    assert (bytes(got.body), got.subject, got.id, got.durable) == \
        (b"payload", "orders.eu", "m-3", True)
    assert got.properties == {"h": "w", "n": 3}


@pytest.mark.parametrize("expiration, ttl", [("60000", 60000), ("4294967295", 4294967295),
                                             ("4294967296", None), ("-1", None)])
def test_an_expiration_that_is_no_uint_gives_no_ttl(expiration, ttl):
    """An AMQP 1.0 header's ttl is a uint: a 0-9-1 expiration beyond it gives none (the
    conversion raised struct.error on it before, failing the delivery)."""
    import pika
    raw = b"".join(pika.BasicProperties(expiration=expiration).encode())
    out = message.outgoing(raw, b"payload", "rk", False)
    got = Message()
    got.decode(out)
    if ttl is None:     # the header as without an expiration (proton reads a null ttl as 0)
        none = message.outgoing(b"".join(pika.BasicProperties().encode()), b"payload", "rk",
                                False)
        assert out[:out.index(b"\x00Ss")] == none[:none.index(b"\x00Ss")]
    else:
        assert got.ttl == ttl / 1000


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_a_bare_data_section_reads_as_the_full_mapping_reads_it(body):
    data = convert._section(convert.DATA, ("binary", body))
    assert message.incoming(data) == (*convert.to_amqp091(data), None, None) == \
        ({}, body, None, None)
