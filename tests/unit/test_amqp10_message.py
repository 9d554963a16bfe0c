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
from amqpbroker.protocol import properties as props_mod
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


# ------------------------------------------------------------------ the modified outcome
def as_delivered(raw_properties: bytes, body: bytes = b"b") -> Message:
    out = Message()
    out.decode(message.outgoing(raw_properties, body, "rk", True))
    return out


X = ("symbol", "x-opt-reason")


@given(kept=st.dictionaries(st.sampled_from(["x-opt-a", "x-opt-b", "x-opt-reason"]),
                            st.text(max_size=5), max_size=3),
       set_=st.dictionaries(st.sampled_from(["x-opt-b", "x-opt-reason", "x-opt-n"]),
                            st.one_of(st.text(max_size=5), st.integers(-2 ** 63, 2 ** 63 - 1),
                                      st.booleans(), st.binary(max_size=5)),
                            min_size=1, max_size=3),
       over_amqp10=st.booleans())
@settings(max_examples=150, deadline=None)
def test_modified_annotations_merge_into_the_kept_ones(kept, set_, over_amqp10):
    """What a modified outcome leaves: the annotations the message had, each key set again
    replaced, the new ones added -- as an AMQP 1.0 consumer reads them, with the message's
    properties and body as they were; the plain values as headers for AMQP 0-9-1 ones."""
    if over_amqp10:
        kw, body, _, _ = message.incoming(Message(
            body=b"payload", properties={"app": "p"},
            annotations={k: v for k, v in kept.items()}).encode())
        raw = convert.encode_properties(dict(kw))
    else:
        raw, body = convert.encode_properties({"headers": {"app": "p"}}), b"payload"
        kept = {}
    pairs = [(("symbol", k), convert._wrap("binary", v) if isinstance(v, bytes)
              else ("boolean", v) if isinstance(v, bool)
              else ("long", v) if isinstance(v, int) else ("utf8", v))
             for k, v in set_.items()]
    after = message.modified(raw, pairs)
    got = as_delivered(after, body)
    assert {str(k): v for k, v in (got.annotations or {}).items()} == {**kept, **set_}
    assert got.properties == {"app": "p"} and got.body == b"payload"
    headers = props_mod.headers_of(after)
    for k, v in set_.items():       # binary as a longstr: read back as text when it is
        assert headers[k] == v or isinstance(v, bytes) and headers[k] == v.decode()
    # modified again: the second outcome's values win, the first's others stay
    again = as_delivered(message.modified(after, [(X, ("utf8", "second"))]), body)
    assert {str(k): v for k, v in again.annotations.items()} == \
        {**kept, **set_, "x-opt-reason": "second"}


def test_modified_keeps_properties_it_cannot_read_and_ignores_a_false_annotations_header():
    """Properties that do not parse go on as they came; an ``x-amqp-1.0-message-annotations``
    header an AMQP 0-9-1 publisher set to anything is no annotations section: replaced."""
    assert message.modified(b"\x80", [(X, ("utf8", "r"))]) == b"\x80"
    raw = convert.encode_properties({"headers": {
        "x-amqp-1.0-message-annotations": b"\x00\x53\x72\xff"}})
    got = as_delivered(message.modified(raw, [(X, ("utf8", "r"))]))
    assert {str(k): v for k, v in got.annotations.items()} == {"x-opt-reason": "r"}
    assert not got.properties           # no header of those is an application property
