"""amqpbroker.stream_protocol.amqp10: AMQP 1.0 messages (stream protocol) to AMQP 0-9-1 and back,
as RabbitMQ 3.10.8's rabbit_msg_record; checked against rstream's own AMQP 1.0 codec."""
import datetime
import uuid

import pika
import pytest
from hypothesis import given, strategies as st
from rstream._pyamqp.message import Header, Properties
from rstream.amqp import AMQPMessage, amqp_decoder

from amqpbroker.stream_protocol.amqp10 import (NotAmqp10, encode_properties, from_amqp091,
                                               to_amqp091)

UTC = datetime.timezone.utc


def rstream_bytes(**kwargs) -> bytes:
    return bytes(AMQPMessage(**kwargs))


def section(code: int, encoded_value: bytes) -> bytes:
    """A section with a small-ulong descriptor, its value already encoded."""
    return bytes([0x00, 0x53, code]) + encoded_value


def str8(kind: int, text: str) -> bytes:
    raw = text.encode()
    return bytes([kind, len(raw)]) + raw


def map8(*encoded_items: bytes) -> bytes:
    items = b"".join(encoded_items)
    return bytes([0xc1, len(items) + 1, len(encoded_items)]) + items


def data(body: bytes) -> bytes:
    return section(0x75, bytes([0xa0, len(body)]) + body)


# --- AMQP 1.0 (from rstream) -> 0-9-1 --------------------------------------------------------

def test_rstream_message_maps_to_basic_properties():
    message = rstream_bytes(
        body=b"hello",
        header=Header(durable=True),
        properties=Properties(message_id="m-1", user_id=b"guest", reply_to="replies",
                              correlation_id="c-1", content_type="text/plain",
                              content_encoding="gzip", creation_time=1700000000999),
        application_properties={"s": "v", "n": 42, "big": 2 ** 40, "t": True, "f": False,
                                "bin": b"\x00\xff", "d": 1.5, "none": None})
    kw, body = to_amqp091(message)
    assert body == b"hello"
    assert kw == {
        "message_id": "m-1", "user_id": "guest", "reply_to": "replies", "correlation_id": "c-1",
        "content_type": "text/plain", "content_encoding": "gzip",
        "timestamp": 1700000000,  # creation-time ms div 1000
        "delivery_mode": 2,       # header durable (3.13's mc_amqpl: 3.10.8 has no header)
        "headers": {"s": "v", "n": 42, "big": 2 ** 40, "t": True, "f": False,
                    "bin": b"\x00\xff", "d": 1.5, "none": None},
    }
    del kw["headers"]["d"]  # (pika 1.4 encodes no float in a table; RabbitMQ has doubles)
    assert pika.BasicProperties(**kw).encode()  # pika can encode the rest


def test_header_durable_false_priority_and_ttl():
    kw, _ = to_amqp091(rstream_bytes(body=b"x", header=Header(durable=False, priority=7, ttl=6000)))
    assert kw == {"delivery_mode": 1, "priority": 7, "expiration": "6000"}


def test_header_without_durable_leaves_delivery_mode_to_the_annotation():
    kw, _ = to_amqp091(rstream_bytes(body=b"x", header=Header(priority=1)))
    assert kw == {"priority": 1}
    kw, _ = to_amqp091(rstream_bytes(body=b"x", header=Header(priority=1),
                                     message_annotations={"x-basic-delivery-mode": 2}))
    assert kw == {"priority": 1, "delivery_mode": 2}


def test_x_basic_annotations_and_application_properties():
    # what 3.10.8 stores for an AMQP 0-9-1 publish: the 0-9-1-only properties ride along
    message = rstream_bytes(
        body=b"x",
        message_annotations={"x-basic-priority": 4, "x-basic-delivery-mode": 2,
                             "x-basic-expiration": "1000", "x-exchange": "amq.direct",
                             "x-routing-key": "rk", "x-other": "dropped", "plain": 1},
        application_properties={"x-basic-type": "kind", "x-basic-app-id": "app", "h": "v"})
    kw, _ = to_amqp091(message)
    # 3.10.8 reads only the x-basic-* annotations: the others do not become headers
    assert kw == {"priority": 4, "delivery_mode": 2, "expiration": "1000", "type": "kind",
                  "app_id": "app", "headers": {"h": "v"}}


def test_header_wins_over_x_basic_annotations():
    kw, _ = to_amqp091(rstream_bytes(
        body=b"x", header=Header(durable=False, priority=9, ttl=5),
        message_annotations={"x-basic-priority": 4, "x-basic-delivery-mode": 2,
                             "x-basic-expiration": "1000"}))
    assert kw == {"delivery_mode": 1, "priority": 9, "expiration": "5"}


@pytest.mark.parametrize("field, type_header", [("message_id", "x-message-id-type"),
                                                ("correlation_id", "x-correlation-id-type")])
def test_non_string_ids(field, type_header):
    long_header = type_header[:-len("-type")]
    the_uuid = uuid.UUID("0123456789abcdef0123456789abcdef")
    cases = [
        (the_uuid, "01234567-89ab-cdef-0123-456789abcdef", {type_header: "uuid"}),
        (12345, "12345", {type_header: "ulong"}),
        (b"\x01\x02\x03", "AQID", {type_header: "binary"}),  # base64
        (b"\xff" * 191, None, None),  # base64 of 256 bytes: over a shortstr
        (b"\xff" * 192, None, {long_header: b"\xff" * 192}),
        (b"a" * 192, None, {long_header: "a" * 192}),  # a longstr pika reads as str
        ("s" * 255, "s" * 255, None),
        ("s" * 256, None, {long_header: "s" * 256}),
    ]
    for value, expected_id, expected_headers in cases:
        kw, _ = to_amqp091(rstream_bytes(body=b"x", properties=Properties(**{field: value})))
        if expected_id is None and expected_headers is None:  # the 191-byte binary
            expected_headers = {long_header: value}
        assert kw.get(field) == expected_id, value
        assert kw.get("headers") == expected_headers, value


def test_id_headers_come_before_application_properties():
    kw, _ = to_amqp091(rstream_bytes(
        body=b"x", properties=Properties(message_id=1, correlation_id=b"\x00"),
        application_properties={"a": 1, "x-message-id-type": "mine"}))
    assert list(kw["headers"].items()) == [("x-correlation-id-type", "binary"),
                                           ("x-message-id-type", "ulong"), ("a", 1)]


def test_application_property_types():
    ts = 1700000000123
    message = (section(0x74, map8(
        str8(0xa1, "sym"), str8(0xa3, "a-symbol"),
        str8(0xa1, "ts"), b"\x83" + ts.to_bytes(8, "big"),
        str8(0xa1, "ulong"), b"\x80" + (2 ** 63 - 1).to_bytes(8, "big"),
        str8(0xa1, "ushort"), b"\x60\xff\xff",
        str8(0xa1, "byte"), b"\x51\xff",
        str8(0xa1, "float"), b"\x72\x3f\xc0\x00\x00",
        str8(0xa1, "uuid"), b"\x98" + bytes(16),            # no 0-9-1 mapping: dropped
        str8(0xa1, "1969"), b"\x83" + (-1000).to_bytes(8, "big", signed=True),  # dropped
        str8(0xa1, "char"), b"\x73\x00\x00\x00\x41",        # dropped
        str8(0xa1, "decimal"), b"\x74\x00\x00\x00\x01",     # dropped
        str8(0xa1, "array"), b"\xe0\x04\x02\x54\x01\x02",   # dropped
        str8(0xa1, "list"), b"\xc0\x15\x03\x54\x01\x41\x98" + bytes(16),  # [1, true, uuid]
    )) + data(b"x"))
    kw, _ = to_amqp091(message)
    assert kw["headers"] == {
        "sym": "a-symbol",
        "ts": datetime.datetime.fromtimestamp(1700000000, UTC),
        "ulong": 2 ** 63 - 1, "ushort": 65535, "byte": -1, "float": 1.5,
        "list": [1, True],
    }


def test_a_ulong_beyond_a_signed_long_is_dropped():
    """No AMQP 0-9-1 field type holds 2**63 or more: the header is left out (the properties
    still encode; they raised TypeError in pamqp before)."""
    message = section(0x74, map8(
        str8(0xa1, "big"), b"\x80" + (2 ** 63).to_bytes(8, "big"),
        str8(0xa1, "kept"), b"\x80" + (2 ** 63 - 1).to_bytes(8, "big"))) + data(b"x")
    kw, _ = to_amqp091(message)
    assert kw["headers"] == {"kept": 2 ** 63 - 1}
    assert encode_properties(kw).endswith(b"\x04keptl\x7f\xff\xff\xff\xff\xff\xff\xff")


def test_a_creation_time_after_the_year_9999_is_kept():
    """A 64-bit AMQP 0-9-1 timestamp holds it (encode_properties raised ValueError on it
    before: year 10000 is out of range)."""
    for ms in (253402300799999, 253402300800000, 2 ** 63 - 1):
        properties = section(0x73, bytes([0xc0, 19, 10]) + b"\x40" * 9 + b"\x83" +
                             ms.to_bytes(8, "big"))
        kw, _ = to_amqp091(properties + data(b"x"))
        assert kw["timestamp"] == ms // 1000
        assert encode_properties(kw) == b"\x00\x40" + (ms // 1000).to_bytes(8, "big")


def test_creation_time_before_1970_is_no_timestamp():
    # a 0-9-1 timestamp is unsigned
    assert to_amqp091(rstream_bytes(body=b"x", properties=Properties(creation_time=-1000))) \
        == ({}, b"x")


def test_body_of_several_data_sections_is_their_concatenation():
    kw, body = to_amqp091(data(b"abc") + data(b"") + data(b"def"))
    assert (kw, body) == ({}, b"abcdef")


def test_amqp_value_string_or_binary_is_the_body():
    assert to_amqp091(rstream_bytes(value="héllo")) == ({}, "héllo".encode())
    assert to_amqp091(rstream_bytes(value=b"\x00bin")) == ({}, b"\x00bin")


def test_other_bodies_are_the_encoded_sections_typed_amqp_1_0():
    message = rstream_bytes(value=42, properties=Properties(message_id="m"))
    kw, body = to_amqp091(message)
    assert kw == {"message_id": "m", "type": "amqp-1.0"}
    assert body == b"\x00\x53\x77\x54\x2a"  # the amqp-value section as published
    assert amqp_decoder(body).value == 42

    message = rstream_bytes(sequence=[[1, "two"], [3]],
                            application_properties={"x-basic-type": "overridden"})
    kw, body = to_amqp091(message)
    assert kw == {"type": "amqp-1.0"}
    assert amqp_decoder(body).sequence == [[1, b"two"], [3]]


def test_symbolic_descriptors():
    def named(name: str, encoded_value: bytes) -> bytes:
        return b"\x00" + str8(0xa3, name) + encoded_value

    message = (named("amqp:properties:list", b"\xc0\x05\x01" + str8(0xa1, "id"))
               + named("amqp:data:binary", b"\xa0\x02hi"))
    assert to_amqp091(message) == ({"message_id": "id"}, b"hi")
    # a ulong descriptor in its 8-byte form too
    assert to_amqp091(b"\x00\x80" + (0x75).to_bytes(8, "big") + b"\xa0\x01z") == ({}, b"z")


def test_delivery_annotations_and_footer_are_ignored():
    message = rstream_bytes(body=b"x", delivery_annotations={"x-d": 1}, footer={"x-f": 2})
    assert to_amqp091(message) == ({}, b"x")


@pytest.mark.parametrize("bad", [
    b"",                                                   # no section
    rstream_bytes(body=b"", properties=Properties(message_id="m")),  # no body section
    data(b"x") + b"\x00",                                  # trailing bytes
    data(b"x") + b"\x40",                                  # a value that is no section
    section(0x10, b"\xa0\x00"),                            # not a section's descriptor
    b"\x00\xa3\x08amqp:foo\xa0\x00",                       # an unknown symbolic descriptor
    section(0x75, b"\xa1\x01x"),                           # data holding a string
    section(0x74, b"\xc0\x01\x00") + data(b"x"),           # application properties as a list
    section(0x74, b"\xc1\x02\x01\x40") + data(b"x"),       # a map with an odd count
    section(0x74, b"\xc1\x05\x02\x40\x40") + data(b"x"),   # a size beyond its items
    section(0x77, b"\xa1\x02\xc3\x28"),                    # a string that is not UTF-8
    section(0x77, b"\x56\x02"),                            # a boolean that is neither
    section(0x77, b"\x99"),                                # unknown constructor
    section(0x77, b"\xf0\xff\xff\xff\xff\x00\x00\x00\x01\x40"),  # array beyond the bytes
    section(0x77, b"\xe0\x02\xff\x40"),                    # 255 nulls in 2 bytes
    b"\x00" * 5000,                                        # descriptors nested without end
])
def test_not_amqp10(bad):
    with pytest.raises(NotAmqp10):
        to_amqp091(bad)


# --- AMQP 0-9-1 -> 1.0 (read back by rstream) ------------------------------------------------

def test_from_amqp091_is_rabbitmq_3_10_8s_bytes():
    # rabbit_stream_queue:msg_to_iodata/1 of a publish to the default exchange, key "q",
    # as amqp10_binary_generator writes it
    props = pika.BasicProperties(delivery_mode=2, message_id="m1", headers={"h": "v"})
    annotations = map8(str8(0xa3, "x-routing-key"), str8(0xa1, "q"),
                       str8(0xa3, "x-exchange"), str8(0xa1, ""),
                       str8(0xa3, "x-basic-delivery-mode"), b"\x50\x02")
    properties = b"\xc0\x11\x0d" + str8(0xa1, "m1") + b"\x40" * 12  # all 13 fields
    expected = (section(0x72, annotations) + section(0x73, properties)
                + section(0x74, map8(str8(0xa1, "h"), str8(0xa1, "v"))) + data(b"hi"))
    assert from_amqp091(props, b"hi", exchange="", routing_key="q") == expected


def test_from_amqp091_leaves_out_empty_sections():
    assert from_amqp091(pika.BasicProperties(), b"") == b"\x00\x53\x75\xa0\x00"
    assert from_amqp091(pika.BasicProperties(headers={}), b"ab") == data(b"ab")


def test_from_amqp091_read_by_rstream():
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", delivery_mode=2, priority=5,
        correlation_id="c", reply_to="r", expiration="60000", message_id="m", timestamp=1700000000,
        type="t", user_id="guest", app_id="app",
        headers={"s": "v", "n": 7, "big": -2 ** 40, "yes": True, "b": b"\x01", "f": 2.5,
                 "none": None, "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
                 "table": {"a": 1}, "array": [1, 2]})
    body = bytes(range(256)) * 3  # a large data section (0xb0)
    message = amqp_decoder(from_amqp091(props, body, exchange="ex", routing_key="rk"))
    assert message.body == body
    assert message.header is None  # 3.10.8 writes none: see the annotations
    assert message.message_annotations == {
        b"x-routing-key": b"rk", b"x-exchange": b"ex", b"x-basic-priority": 5,
        b"x-basic-delivery-mode": 2, b"x-basic-expiration": b"60000"}
    assert message.properties == Properties(
        message_id=b"m", user_id=b"guest", reply_to=b"r", correlation_id=b"c",
        content_type=b"application/json", content_encoding=b"utf-8",
        creation_time=1700000000000)
    # tables and arrays are left out, as 3.10.8 does
    assert message.application_properties == {
        b"x-basic-type": b"t", b"x-basic-app-id": b"app", b"s": b"v", b"n": 7,
        b"big": -2 ** 40, b"yes": True, b"b": b"\x01", b"f": 2.5, b"none": None,
        b"when": int(datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()) * 1000}


def test_rstream_message_survives_0_9_1_and_back():
    message = rstream_bytes(
        body=b"payload", header=Header(durable=True, priority=2),
        properties=Properties(message_id=uuid.uuid4(), correlation_id=b"\x07", reply_to="r"),
        application_properties={"k": "v"})
    kw, body = to_amqp091(message)
    again = to_amqp091(from_amqp091(pika.BasicProperties(**kw), body))
    assert again == (kw, body)


# --- properties -------------------------------------------------------------------------------

def shortstr(**kwargs):
    return st.text(max_size=40, **kwargs)


HEADER_VALUES = st.one_of(st.text(max_size=60), st.integers(-2 ** 63, 2 ** 63 - 1),
                          st.booleans(), st.binary(max_size=60), st.none(),
                          st.floats(allow_nan=False))
BASIC_PROPERTIES = st.fixed_dictionaries({}, optional={
    "content_type": shortstr(), "content_encoding": shortstr(),
    # 3.10.8 takes x-basic-type / x-basic-app-id application properties as type / app_id
    "headers": st.dictionaries(shortstr().filter(
        lambda key: key not in ("x-basic-type", "x-basic-app-id")), HEADER_VALUES, max_size=8),
    "delivery_mode": st.sampled_from([1, 2]), "priority": st.integers(0, 255),
    "correlation_id": shortstr(), "reply_to": shortstr(),
    "expiration": st.integers(0, 2 ** 32 - 1).map(str), "message_id": shortstr(),
    "timestamp": st.integers(0, 2 ** 53), "type": shortstr(), "user_id": shortstr(),
    "app_id": shortstr(),
})


@given(BASIC_PROPERTIES, st.binary(max_size=600))
def test_round_trip_through_basic_properties(kw, body):
    encoded = from_amqp091(pika.BasicProperties(**kw), body)
    expected = {name: value for name, value in kw.items() if value not in (None, {})}
    back, back_body = to_amqp091(encoded)
    assert (back, back_body) == (expected, body)
    # pika can encode them (but for doubles in the table, which pika 1.4 cannot write)
    back["headers"] = {key: value for key, value in back.get("headers", {}).items()
                       if not isinstance(value, float)}
    assert pika.BasicProperties(**back).encode()
    assert amqp_decoder(encoded).body in (body, None)  # rstream reads b"" as no body


@given(st.binary(max_size=300).filter(lambda raw: raw[:2] != b"\x00\x53"))
def test_random_bytes_are_not_amqp10(raw):
    with pytest.raises(NotAmqp10):
        to_amqp091(raw)


@given(BASIC_PROPERTIES, st.binary(max_size=300), st.data())
def test_every_truncation_is_not_amqp10(kw, body, draw):
    whole = from_amqp091(pika.BasicProperties(**kw), body, exchange="x", routing_key="k")
    cut = draw.draw(st.integers(0, len(whole) - 1))
    with pytest.raises(NotAmqp10):
        to_amqp091(whole[:cut])


@given(st.binary(min_size=1, max_size=300), st.dictionaries(shortstr(), HEADER_VALUES, max_size=5))
def test_every_truncation_of_an_rstream_message_is_not_amqp10(body, application_properties):
    whole = rstream_bytes(body=body, header=Header(durable=True, priority=1),
                          message_annotations={"x-basic-expiration": "5"},
                          properties=Properties(message_id=7, creation_time=1),
                          application_properties=application_properties)
    to_amqp091(whole)
    for cut in range(len(whole)):
        with pytest.raises(NotAmqp10):
            to_amqp091(whole[:cut])


@given(BASIC_PROPERTIES, st.binary(max_size=100), st.data())
def test_damaged_messages_raise_only_not_amqp10(kw, body, draw):
    whole = bytearray(from_amqp091(pika.BasicProperties(**kw), body, exchange="x"))
    for _ in range(draw.draw(st.integers(1, 4))):
        whole[draw.draw(st.integers(0, len(whole) - 1))] = draw.draw(st.integers(0, 255))
    try:
        to_amqp091(bytes(whole))
    except NotAmqp10:
        pass
