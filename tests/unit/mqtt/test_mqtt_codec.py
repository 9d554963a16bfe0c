"""The MQTT packet codec, the topic mapping and retained-message matching, without a broker."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from amqpbroker.mqtt import frames as f
from amqpbroker.mqtt.retained import RetainedStore, matches
from amqpbroker.mqtt.topics import pick_vhost, to_amqp, to_mqtt, valid_filter, valid_topic, \
    vhost_and_user

topics = st.text(st.characters(blacklist_characters="+#\0", blacklist_categories=("Cs",)),
                 min_size=1, max_size=40)


@given(topic=topics, payload=st.binary(max_size=300), qos=st.integers(0, 1),
       retain=st.booleans(), dup=st.booleans(), packet_id=st.integers(1, 0xFFFF),
       split=st.integers(0, 400))
def test_publish_round_trips_through_the_parser_in_any_split(topic, payload, qos, retain,
                                                              dup, packet_id, split):
    raw = f.publish_packet(topic, payload, qos, packet_id if qos else None, retain, dup)
    p = f.Parser()
    got = p.feed(raw[:split]) + p.feed(raw[split:])
    assert got == [f.Publish(topic, payload, qos, retain, dup, packet_id if qos else None)]
    assert not p.buf


def test_connect_with_will_and_credentials():
    raw = f.connect_packet("cid", clean_session=False, keepalive=42, username="vh:u",
                           password="pw", will=("w/t", b"bye", 1, True))
    (c,) = f.Parser().feed(raw)
    assert c == f.Connect("MQTT", 4, False, 42, "cid", "w/t", b"bye", 1, True, "vh:u", "pw")


def test_remaining_length_of_four_bytes_and_the_limit():
    body = b"\x00\x01t" + b"x" * 2_097_152           # needs 4 length bytes
    raw = f._packet(f.PUBLISH, 0, body)
    assert raw[1:5] == bytes([0x83, 0x80, 0x80, 0x01])
    assert f.Parser().feed(raw)[0].payload == b"x" * 2_097_152
    with pytest.raises(f.FrameError):
        f.Parser(max_length=1000).feed(raw[:5])
    with pytest.raises(f.FrameError):
        f.Parser().feed(b"\x30\xff\xff\xff\xff\x01")   # a fifth length byte


@pytest.mark.parametrize("raw", [
    f._packet(f.PUBLISH, 0x06, b"\x00\x01t\x00\x01"),   # QoS 3
    f._packet(f.SUBSCRIBE, 0, b"\x00\x01\x00\x01t\x00"),  # flags must be 2
    f._packet(f.SUBSCRIBE, 2, b"\x00\x01"),              # no topic
    f._packet(f.PUBLISH, 0, b"\x00\x05ab"),              # string longer than the packet
    f._packet(f.PUBLISH, 0, b"\x00\x02\xff\xfe"),        # not UTF-8
])
def test_malformed_packets_raise(raw):
    with pytest.raises(f.FrameError):
        f.Parser().feed(raw)


def test_subscribe_and_unsubscribe():
    p = f.Parser()
    (s,) = p.feed(f._packet(f.SUBSCRIBE, 2, b"\x00\x07" + f._string("a/+") + b"\x01"
                            + f._string("#") + b"\x02"))
    assert s == f.Subscribe(7, [f.Subscription("a/+", 1), f.Subscription("#", 2)])
    (u,) = p.feed(f._packet(f.UNSUBSCRIBE, 2, b"\x00\x08" + f._string("a/+")))
    assert u == f.Unsubscribe(8, ["a/+"])


# ------------------------------------------------------------ MQTT 5
user_properties = st.lists(st.tuples(topics, st.text(max_size=20)), max_size=3)
properties = st.fixed_dictionaries({}, optional={
    "payload_format_indicator": st.integers(0, 1),
    "message_expiry_interval": st.integers(0, 2**32 - 1),
    "content_type": st.text(max_size=30),
    "response_topic": topics,
    "correlation_data": st.binary(max_size=40),
    "topic_alias": st.integers(1, 0xFFFF),
    "user_property": user_properties.filter(bool),
    "subscription_identifier": st.lists(st.integers(1, 268_435_455), min_size=1, max_size=3),
})


@given(topic=topics, payload=st.binary(max_size=300), qos=st.integers(0, 1),
       packet_id=st.integers(1, 0xFFFF), props=properties, split=st.integers(0, 400))
def test_mqtt5_publish_with_properties_round_trips(topic, payload, qos, packet_id, props,
                                                   split):
    raw = f.publish_packet(topic, payload, qos, packet_id if qos else None, level=5,
                           properties=props)
    p = f.Parser()
    p.level = 5
    got = p.feed(raw[:split]) + p.feed(raw[split:])
    assert got == [f.Publish(topic, payload, qos, False, False, packet_id if qos else None,
                             props)]


def test_mqtt5_connect_sets_the_level_of_what_follows():
    raw = f.connect_packet("c5", level=5, keepalive=9, properties={
        "session_expiry_interval": 300, "receive_maximum": 5, "topic_alias_maximum": 4,
        "user_property": [("a", "1"), ("a", "2")]},
        will=("w/t", b"bye", 1, False), will_properties={"will_delay_interval": 7,
                                                         "content_type": "text/plain"})
    p = f.Parser()
    (c,) = p.feed(raw)
    assert (c.level, c.keepalive, c.client_id, p.level) == (5, 9, "c5", 5)
    assert c.properties == {"session_expiry_interval": 300, "receive_maximum": 5,
                            "topic_alias_maximum": 4, "user_property": [("a", "1"), ("a", "2")]}
    assert c.will_properties == {"will_delay_interval": 7, "content_type": "text/plain"}
    assert (c.will_topic, c.will_message, c.will_qos) == ("w/t", b"bye", 1)
    # a PUBACK with a reason code, a bare DISCONNECT and one with a reason and properties
    (ack, d1, d2) = p.feed(b"\x40\x03\x00\x05\x10" + b"\xe0\x00"
                           + f.disconnect_packet(0x04, {"session_expiry_interval": 0}))
    assert ack == f.PubAck(5, 0x10)
    assert d1 == f.Disconnect()
    assert d2 == f.Disconnect(0x04, {"session_expiry_interval": 0})


def test_mqtt5_subscription_options():
    p = f.Parser()
    p.level = 5
    body = b"\x00\x07" + f.encode_properties({"subscription_identifier": [42]}) \
        + f._string("a/+") + bytes([0x01 | 0x04 | 0x08 | 0x20]) + f._string("#") + b"\x00"
    (s,) = p.feed(f._packet(f.SUBSCRIBE, 2, body))
    assert s == f.Subscribe(7, [f.Subscription("a/+", 1, True, True, 2),
                                f.Subscription("#", 0)], {"subscription_identifier": [42]})


@pytest.mark.parametrize("raw", [
    # reserved option bits
    f._packet(f.SUBSCRIBE, 2, b"\x00\x01\x00" + f._string("t") + b"\x40"),
    # retain handling 3
    f._packet(f.SUBSCRIBE, 2, b"\x00\x01\x00" + f._string("t") + b"\x30"),
    # an unknown property identifier
    f._packet(f.PUBLISH, 0, f._string("t") + b"\x02\x7f\x00"),
    # a property given twice that may not repeat
    f._packet(f.PUBLISH, 0, f._string("t") + b"\x04\x01\x00\x01\x01"),
    # properties longer than the packet
    f._packet(f.PUBLISH, 0, f._string("t") + b"\x09\x01\x00"),
])
def test_malformed_mqtt5_packets_raise(raw):
    p = f.Parser()
    p.level = 5
    with pytest.raises(f.FrameError):
        p.feed(raw)


def test_mqtt5_acknowledgements_as_built():
    assert f.puback_packet(3, level=5) == b"\x40\x02\x00\x03"
    assert f.puback_packet(3, 0x10, level=5) == b"\x40\x03\x00\x03\x10"
    assert f.suback_packet(3, [1, 0x80], level=5) == b"\x90\x05\x00\x03\x00\x01\x80"
    assert f.unsuback_packet(3, [0, 0x11], level=5) == b"\xb0\x05\x00\x03\x00\x00\x11"
    assert f.connack_packet(0, True, level=5, properties={"receive_maximum": 10}) == \
        b"\x20\x06\x01\x00\x03\x21\x00\x0a"


def test_topic_mapping_as_rabbitmq():
    assert to_amqp("a/+/c/#") == "a.*.c.#"
    assert to_mqtt("a.b.c") == "a/b/c"
    assert to_mqtt(to_amqp("sensors/+/temp")) == "sensors/+/temp"
    assert vhost_and_user("a:b:user", "/") == ("a:b", "user")      # at the last colon
    assert vhost_and_user("user", "/dev") == ("/dev", "user")


def test_the_vhost_of_a_login_as_rabbitmq_picks_it():
    ports, certs = {"1884": "by-port"}, {"CN=alice": "by-cert"}

    def pick(user, cert=None, port=1883):
        return pick_vhost(user, cert, port, "/", ports, certs)
    assert pick("bob") == ("/", "bob")
    assert pick("bob", port=1884) == ("by-port", "bob")
    assert pick("v:bob", port=1884) == ("v", "bob")             # the user name's first
    assert pick("v:bob", "CN=alice", 1884) == ("by-cert", "v:bob")   # a certificate's first
    assert pick("v:bob", "CN=carol", 1884) == ("by-port", "v:bob")
    assert pick("v:bob", "CN=carol") == ("v", "bob")
    assert pick_vhost("bob", None, 1884, "/", None, None) == ("/", "bob")   # no parameters
    assert pick_vhost("bob", None, 1884, "/", {"1884": 5}, None) == ("/", "bob")


def test_topic_and_filter_validity():
    assert valid_topic("a/b") and not valid_topic("a/+") and not valid_topic("")
    assert valid_filter("a/+/#") and valid_filter("#") and valid_filter("+")
    assert not valid_filter("a/#/b") and not valid_filter("a+") and not valid_filter("a/b#")


@pytest.mark.parametrize("topic_filter,topic,expected", [
    ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False),
    ("a/#", "a", True), ("a/#", "a/b/c", True), ("#", "a/b", True), ("+/+", "a/b", True),
    ("+", "$SYS", False), ("#", "$SYS/x", False), ("$SYS/#", "$SYS/x", True),
    ("a/b", "a/c", False),
])
def test_matching(topic_filter, topic, expected):
    assert matches(topic_filter, topic) is expected


def test_retained_mqtt5_properties_and_expiry_persist(tmp_path):
    store = RetainedStore(str(tmp_path))
    props = {"content_type": "text/plain", "correlation_data": b"\xff\x00",
             "user_property": [("k", "v"), ("k", "w")], "topic_alias": 3}
    store.retain("/", "p/kept", b"1", 1, dict(props, message_expiry_interval=100))
    store.retain("/", "p/gone", b"2", 1, {"message_expiry_interval": 0})
    store.flush()
    again = RetainedStore(str(tmp_path))
    ((topic, payload, qos, got),) = again.matching("/", "p/#")
    assert (topic, payload, qos) == ("p/kept", b"1", 1)
    assert 99 <= got.pop("message_expiry_interval") <= 100     # what is left of it
    del props["topic_alias"]                                    # not the message's own
    assert got == props
    assert again.matching("/", "p/gone") == []


def test_retained_store_persists_and_clears(tmp_path):
    store = RetainedStore(str(tmp_path))
    store.retain("/", "a/b", b"1", 1)
    store.retain("/", "a/c", b"2", 0)
    store.retain("v", "a/b", b"other vhost", 0)
    store.flush()
    again = RetainedStore(str(tmp_path))
    assert again.matching("/", "a/+") == [("a/b", b"1", 1, {}), ("a/c", b"2", 0, {})]
    assert again.matching("v", "a/b") == [("a/b", b"other vhost", 0, {})]
    again.retain("/", "a/b", b"", 1)                # empty payload: cleared
    again.vhost_deleted("v")
    again.flush()
    third = RetainedStore(str(tmp_path))
    assert third.matching("/", "#") == [("a/c", b"2", 0, {})]
    assert third.matching("v", "#") == []


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("dup", [False, True])
def test_an_mqtt5_publish_without_properties_is_stored_as_a_3_1_1_one(qos, dup):
    """The MQTT 5 publish path takes the 3.1.1 clients' precomputed properties when a
    message has no properties of its own: they must say the same."""
    from amqpbroker.mqtt import mqtt5
    from amqpbroker.mqtt.connection import PROPERTIES
    from amqpbroker.protocol import properties as P
    five, three = (P.decode(raw) for raw in (mqtt5.to_amqp_properties(qos, dup, False, {}, 0),
                                             PROPERTIES[qos][dup]))
    assert (five.headers, five.delivery_mode) == (three.headers, three.delivery_mode)
    assert mqtt5.from_amqp_properties(PROPERTIES[qos][dup], 0).properties == {}
