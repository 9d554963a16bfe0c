"""The hand-written hot path (fastpath.py, properties.scan) against pamqp's generic codec.

Each parser reads what pamqp marshals; each builder writes what pamqp unmarshals to the same
values. Names, keys, tags, bodies, frame_max and properties come from Hypothesis.
"""
from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from amqpbroker.protocol import fastpath as fp
from amqpbroker.protocol import properties
from amqpbroker.testing.feeder import frames

FAST = settings(max_examples=40, deadline=None)


def shortstr(max_bytes: int = 255, min_size: int = 0):
    """Any text whose UTF-8 fits a shortstr."""
    return hs.text(min_size=min_size, max_size=max_bytes).filter(
        lambda s: len(s.encode()) <= max_bytes)


def prop_str():
    """A property string; pamqp writes '' as "not set", so it is left out."""
    return hs.none() | shortstr(min_size=1)


exchange_names = hs.from_regex(r"[a-zA-Z0-9_.:\-]{0,127}", fullmatch=True)
tags = hs.integers(0, 2 ** 63 - 1)                 # pamqp encodes longlong signed
frame_maxes = hs.integers(4096, 140000)
_PATTERN = bytes(range(251)) * 80
bodies = hs.one_of(hs.binary(max_size=300),
                   hs.integers(0, 20000).map(lambda n: _PATTERN[:n]))
field_values = hs.one_of(hs.integers(-2 ** 31, 2 ** 31 - 1), hs.booleans(), shortstr(40))
basic_properties = hs.builds(
    C.Basic.Properties,
    content_type=prop_str(), content_encoding=prop_str(),
    headers=hs.none() | hs.dictionaries(shortstr(30), field_values, min_size=1, max_size=5),
    delivery_mode=hs.none() | hs.sampled_from([1, 2]),
    priority=hs.none() | hs.integers(0, 255),
    correlation_id=prop_str(), reply_to=prop_str(),
    expiration=hs.none() | hs.integers(0, 10 ** 9).map(str),
    message_id=prop_str(),
    timestamp=hs.none() | hs.integers(0, 2 ** 31 - 1).map(
        lambda s: datetime.datetime.fromtimestamp(s, datetime.timezone.utc)),
    message_type=prop_str(), user_id=prop_str(),
    app_id=prop_str())


def payload_of(frame: bytes) -> bytes:
    """The payload of one marshalled frame (between the 7-byte header and the end byte)."""
    return frame[7:-1]


def decode_content(data: bytes):
    """pamqp's view of method + content header + bodies: (method, header, body, frame sizes)."""
    decoded, sizes, pos = [], [], 0
    while pos < len(data):
        n, channel, frame = pframe.unmarshal(data[pos:pos + 140000])
        decoded.append((channel, frame))
        sizes.append(n)
        pos += n
    (_, method), (_, head), *rest = decoded
    assert isinstance(head, pheader.ContentHeader)
    assert all(isinstance(b, pbody.ContentBody) for _, b in rest)
    assert {ch for ch, _ in decoded} == {decoded[0][0]}
    return method, head, b"".join(b.value for _, b in rest), sizes


# ----------------------------------------------------------------------------- parsers

@FAST
@given(exchange=exchange_names, routing_key=shortstr(), mandatory=hs.booleans(),
       immediate=hs.booleans())
def test_parse_publish_reads_pamqp(exchange, routing_key, mandatory, immediate):
    m = C.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory,
                        immediate=immediate)
    payload = payload_of(pframe.marshal(m, 1))
    assert fp.parse_publish(payload) == (exchange, routing_key, mandatory, immediate)


@FAST
@given(exchange=exchange_names, routing_key=shortstr(), cut=hs.integers(0, 600))
def test_parse_publish_truncated_raises_truncated(exchange, routing_key, cut):
    payload = payload_of(pframe.marshal(C.Basic.Publish(exchange=exchange,
                                                        routing_key=routing_key), 1))
    cut = min(cut, len(payload) - 1)
    with pytest.raises(fp.Truncated):
        fp.parse_publish(payload[:cut])


@FAST
@given(tag=tags, multiple=hs.booleans(), requeue=hs.booleans())
def test_parse_tag_bits_reads_pamqp(tag, multiple, requeue):
    ack = payload_of(pframe.marshal(C.Basic.Ack(delivery_tag=tag, multiple=multiple), 1))
    assert fp.parse_tag_bits(ack) == (tag, int(multiple))
    nack = payload_of(pframe.marshal(
        C.Basic.Nack(delivery_tag=tag, multiple=multiple, requeue=requeue), 1))
    assert fp.parse_tag_bits(nack) == (tag, int(multiple) | int(requeue) << 1)
    reject = payload_of(pframe.marshal(C.Basic.Reject(delivery_tag=tag, requeue=requeue), 1))
    assert fp.parse_tag_bits(reject) == (tag, int(requeue))
    with pytest.raises(fp.Truncated):
        fp.parse_tag_bits(ack[:12])


@FAST
@given(body_size=hs.integers(0, 2 ** 63 - 1), props=basic_properties)
def test_parse_content_header_reads_pamqp(body_size, props):
    head = pframe.marshal(pheader.ContentHeader(0, body_size, props), 3)
    class_id, size, raw = fp.parse_content_header(payload_of(head))
    assert (class_id, size, raw) == (60, body_size, props.marshal())
    with pytest.raises(fp.Truncated):
        fp.parse_content_header(payload_of(head)[:13])


@FAST
@given(body_size=hs.integers(0, 2 ** 63 - 1), props=basic_properties)
def test_header_payload_is_read_by_pamqp(body_size, props):
    head = pheader.ContentHeader()
    head.unmarshal(fp.header_payload(body_size, props.marshal()))
    assert head.body_size == body_size
    assert head.properties == props


# ----------------------------------------------------------------------------- builders

@FAST
@given(channel=hs.integers(1, 65535), ctag=shortstr(), tag=tags, redelivered=hs.booleans(),
       exchange=exchange_names, routing_key=shortstr(), props=basic_properties, body=bodies,
       frame_max=frame_maxes)
def test_build_deliver_is_read_by_pamqp(channel, ctag, tag, redelivered, exchange, routing_key,
                                        props, body, frame_max):
    data = b"".join(fp.build_deliver(channel, ctag.encode(), tag, redelivered, exchange.encode(),
                                     routing_key.encode(), props.marshal(), body, frame_max))
    method, head, got, sizes = decode_content(data)
    assert isinstance(method, C.Basic.Deliver)
    assert frames(data)[0][0] == channel
    assert (method.consumer_tag, method.delivery_tag, method.redelivered, method.exchange,
            method.routing_key) == (ctag, tag, redelivered, exchange, routing_key)
    assert (head.body_size, head.properties) == (len(body), props)
    assert got == body
    assert max(sizes) <= frame_max
    assert len(sizes) == 2 + -(-len(body) // (frame_max - 8))


@FAST
@given(channel=hs.integers(1, 65535), exchange=exchange_names, routing_key=shortstr(),
       props=basic_properties, body=bodies, frame_max=frame_maxes)
def test_build_publish_is_read_by_pamqp(channel, exchange, routing_key, props, body, frame_max):
    data = b"".join(fp.build_publish(channel, exchange.encode(), routing_key.encode(),
                                     props.marshal(), body, frame_max))
    method, head, got, sizes = decode_content(data)
    assert isinstance(method, C.Basic.Publish)
    assert frames(data)[0][0] == channel
    assert (method.exchange, method.routing_key, method.mandatory, method.immediate) == \
        (exchange, routing_key, False, False)
    assert (head.body_size, head.properties, got) == (len(body), props, body)
    assert max(sizes) <= frame_max


@FAST
@given(tag=tags, redelivered=hs.booleans(), exchange=exchange_names, routing_key=shortstr(),
       count=hs.integers(0, 2 ** 32 - 1), props=basic_properties, body=bodies,
       frame_max=frame_maxes)
def test_build_get_ok_is_read_by_pamqp(tag, redelivered, exchange, routing_key, count, props,
                                       body, frame_max):
    data = b"".join(fp.build_get_ok(5, tag, redelivered, exchange.encode(),
                                    routing_key.encode(), count, props.marshal(), body,
                                    frame_max))
    method, head, got, sizes = decode_content(data)
    assert isinstance(method, C.Basic.GetOk)
    assert (method.delivery_tag, method.redelivered, method.exchange, method.routing_key,
            method.message_count) == (tag, redelivered, exchange, routing_key, count)
    assert (head.body_size, head.properties, got) == (len(body), props, body)
    assert max(sizes) <= frame_max


@FAST
@given(channel=hs.integers(1, 65535), tag=tags, multiple=hs.booleans(), nack=hs.booleans())
def test_build_confirm_is_read_by_pamqp(channel, tag, multiple, nack):
    [(ch, method)] = frames(fp.build_confirm(channel, tag, multiple, nack))
    assert ch == channel
    assert isinstance(method, C.Basic.Nack if nack else C.Basic.Ack)
    assert (method.delivery_tag, method.multiple) == (tag, multiple)
    if nack:
        assert method.requeue is False


@FAST
@given(channel=hs.integers(1, 65535), queue=shortstr(), messages=hs.integers(0, 2 ** 32 - 1),
       consumers=hs.integers(0, 2 ** 32 - 1))
def test_build_declare_ok_is_read_by_pamqp(channel, queue, messages, consumers):
    # any UTF-8 name, NUL included: what RabbitMQ accepts, not pamqp's name regex
    [(ch, method)] = frames(fp.build_declare_ok(channel, queue, messages, consumers))
    assert ch == channel
    assert isinstance(method, C.Queue.DeclareOk)
    assert (method.queue, method.message_count, method.consumer_count) == (
        queue, messages, consumers)


@FAST
@given(code=hs.sampled_from([312, 313]), text=shortstr(), exchange=exchange_names,
       routing_key=shortstr(), props=basic_properties, body=bodies, frame_max=frame_maxes)
def test_build_return_is_read_by_pamqp(code, text, exchange, routing_key, props, body,
                                       frame_max):
    data = b"".join(fp.build_return(9, code, text, exchange, routing_key, props.marshal(), body,
                                    frame_max))
    method, head, got, sizes = decode_content(data)
    assert isinstance(method, C.Basic.Return)
    assert (method.reply_code, method.reply_text, method.exchange, method.routing_key) == (
        code, text, exchange, routing_key)
    assert (head.properties, got) == (props, body)
    assert max(sizes) <= frame_max


@FAST
@given(body=bodies, frame_max=hs.integers(4096, 20000))
def test_content_frames_split_at_frame_max(body, frame_max):
    parts = fp.content_frames(2, fp.header_payload(len(body), b"\x00\x00"), body, frame_max)
    data = b"".join(parts)
    decoded = frames(data)
    assert isinstance(decoded[0][1], pheader.ContentHeader)
    bodies_out = [f.value for _, f in decoded[1:]]
    assert b"".join(bodies_out) == body
    assert all(len(b) == frame_max - 8 for b in bodies_out[:-1])   # full frames but the last
    assert all(0 < len(b) <= frame_max - 8 for b in bodies_out)
    assert {ch for ch, _ in decoded} == {2}


@pytest.mark.parametrize("size", [0, 1, 4087, 4088, 4089, 3 * 4088, 3 * 4088 + 1])
def test_content_frames_boundaries(size):
    body = b"b" * size
    decoded = frames(b"".join(fp.content_frames(1, fp.header_payload(size, b"\x00\x00"), body,
                                                4096)))
    assert decoded[0][1].body_size == size
    assert [len(f.value) for _, f in decoded[1:]] == (
        [4088] * (size // 4088) + ([size % 4088] if size % 4088 else []))


# ----------------------------------------------------------------------------- properties.scan

@settings(max_examples=100, deadline=None)
@given(props=basic_properties)
def test_scan_agrees_with_pamqp_decode(props):
    raw = props.marshal()
    s = properties.scan(raw)
    full = properties.decode(raw)
    assert full == props
    assert s.delivery_mode == (props.delivery_mode or 0)
    assert s.persistent == (props.delivery_mode == 2)
    assert s.priority == (props.priority or 0)
    assert (s.expiration, s.reply_to, s.user_id) == (props.expiration, props.reply_to,
                                                     props.user_id)
    assert s.has_headers == (props.headers is not None)
    assert properties.encode(full) == raw


@settings(max_examples=100, deadline=None)
@given(props=basic_properties, cut=hs.integers(0, 2000))
def test_scan_of_truncated_properties_raises_value_error(props, cut):
    raw = props.marshal()
    with pytest.raises(ValueError):
        properties.scan(raw[:cut % len(raw)])


@pytest.mark.parametrize("queue", ["jobs", "", "amq.gen-Xy_1", "orders!", "ünï", "a" * 255])
def test_build_declare_ok_matches_pamqp(queue):
    """Byte for byte what pamqp builds where pamqp builds it; names pamqp's validate() refuses
    (RabbitMQ takes any UTF-8 up to 255 bytes) decode back by pamqp."""
    built = fp.build_declare_ok(3, queue, 7, 2)
    n, channel, frame = pframe.unmarshal(built)
    assert (n, channel) == (len(built), 3)
    assert (frame.queue, frame.message_count, frame.consumer_count) == (queue, 7, 2)
    if all(c.isascii() and (c.isalnum() or c in "-_.:") for c in queue):
        assert built == pframe.marshal(C.Queue.DeclareOk(queue=queue, message_count=7,
                                                         consumer_count=2), 3)
