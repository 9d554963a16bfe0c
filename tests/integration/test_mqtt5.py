"""MQTT 5 (``--mqtt-port``; amqpbroker/mqtt), as RabbitMQ 3.13's rabbitmq_mqtt serves it, in
both process layouts: paho-mqtt's MQTT 5 client, pika for what AMQP clients see of MQTT 5
messages, and raw sockets where a test needs to misbehave or read the bytes.

Every wait is on a client's callback, a socket read with a timeout or a polled management
API, no sleeps.
"""
from __future__ import annotations

import socket
import struct
import time
import urllib.parse

import pika
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from amqpbroker.mqtt import frames as f
from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.closing import closing_clients
from amqpbroker.testing.leaks import wait_until
from amqpbroker.testing.mqtt_clients import TIMEOUT, Client5, closed_by_broker, read_packet

pytestmark = pytest.mark.own_layout         # every broker here names its layout


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("mqtt5"), *LAYOUTS[request.param],
                       "--mqtt-port", "-1", management=True) as b:
        yield b


def at(broker) -> tuple:
    return broker.host, broker.mqtt_port


@pytest.fixture
def clients(broker):
    with closing_clients(lambda client_id, **kw: Client5(at(broker), client_id, **kw)) as make:
        yield make


def queue_info(broker, name: str):
    status, body = broker.request("GET", f"queues/%2F/{urllib.parse.quote(name, safe='')}")
    return body if status == 200 else None


def raw5(broker, client_id: str, properties: dict | None = None, **kw) -> socket.socket:
    """A socket that sent an MQTT 5 CONNECT and read its CONNACK (asserted accepted)."""
    s = socket.create_connection(at(broker), timeout=TIMEOUT)
    s.sendall(f.connect_packet(client_id, level=5, properties=properties, **kw))
    first, body = read_packet(s)
    assert first == f.CONNACK << 4 and body[1] == 0, body
    return s


def parse5(first_and_body):
    """A packet the broker sent an MQTT 5 client, decoded by the broker's own codec."""
    first, body = first_and_body
    p = f.Parser()
    p.level = 5
    (packet,) = p.feed(bytes([first]) + f._varint(len(body)) + body)
    return packet


# ------------------------------------------------------------------ CONNECT, CONNACK
def test_connack_says_what_the_broker_takes(broker, clients):
    c = clients("c5-props", properties={"SessionExpiryInterval": 999_999_999})
    _, code, present, props = c.connack
    assert (code, present) == (0, False)
    assert (props.MaximumQoS, props.TopicAliasMaximum) == (1, 16)
    assert not hasattr(props, "SharedSubscriptionAvailable")    # 1, the default: there are
    assert props.SessionExpiryInterval == 86_400          # capped at the broker's maximum
    assert props.MaximumPacketSize > 1 << 20
    assert not hasattr(props, "AssignedClientIdentifier")
    c.disconnect(properties={"SessionExpiryInterval": 0})
    anonymous = clients("")
    assigned = anonymous.connack[3].AssignedClientIdentifier
    assert assigned and assigned != clients("").connack[3].AssignedClientIdentifier
    wait_until(lambda: [c for c in broker.api("connections")
                        if c.get("client_properties", {}).get("client_id") == assigned],
               TIMEOUT)


def test_refusals_have_reason_codes(broker):
    assert broker.request("PUT", "vhosts/m5")[0] in (201, 204)
    assert broker.request("PUT", "users/m5-user", {"password": "pw", "tags": ""})[0] in \
        (201, 204)

    def connack(client_id, **kw) -> int:
        s = socket.create_connection(at(broker), timeout=TIMEOUT)
        s.sendall(f.connect_packet(client_id, level=5, **kw))
        first, body = read_packet(s)
        assert first == f.CONNACK << 4
        if body[1]:
            assert body[2:] == b"\x00"          # no properties on a refusal
            assert closed_by_broker(s)
        s.close()
        return body[1]

    assert connack("r1", username="guest", password="nope") == f.BAD_USER_NAME_OR_PASSWORD
    assert connack("r2", username="nope:guest", password="guest") == \
        f.BAD_USER_NAME_OR_PASSWORD                         # no such vhost: as RabbitMQ
    assert connack("r3", username="m5-user", password="pw") == f.NOT_AUTHORIZED_5
    assert connack("r4", properties={"authentication_method": "SCRAM-SHA-1"}) == \
        f.BAD_AUTHENTICATION_METHOD
    assert connack("r5", will=("w/t", b"x", 2, False)) == f.QOS_NOT_SUPPORTED
    assert connack("r6") == f.SUCCESS


def test_the_management_api_shows_mqtt_5(broker, clients):
    clients("c5-mgmt")

    def listed():
        return [c for c in broker.api("connections")
                if c.get("client_properties", {}).get("client_id") == "c5-mgmt"]
    (conn,) = wait_until(listed, TIMEOUT)
    assert conn["protocol"] == "MQTT 5.0"
    flags = {f["name"]: f["state"] for f in broker.api("feature-flags")}
    assert flags["mqtt_v5"] == "enabled"                  # RabbitMQ 3.13's flag for it


# ------------------------------------------------------------------ messages
def test_properties_reach_mqtt_5_subscribers(clients):
    sub = clients("p5-sub")
    assert sub.subscribe(("p5/+", 1)) == [1]
    pub = clients("p5-pub")
    sent = {"UserProperty": [("k", "v"), ("n", "2")], "ContentType": "text/plain",
            "ResponseTopic": "p5/reply", "CorrelationData": b"\xffcorr",
            "PayloadFormatIndicator": 1, "MessageExpiryInterval": 3600}
    assert pub.publish("p5/a", b"hello", qos=1, properties=sent) == 0
    (m,) = sub.take()
    assert (m.topic, m.payload, m.qos, m.retain) == ("p5/a", b"hello", 1, False)
    p = m.properties
    assert (p.UserProperty, p.ContentType, p.ResponseTopic, p.CorrelationData,
            p.PayloadFormatIndicator) == ([("k", "v"), ("n", "2")], "text/plain", "p5/reply",
                                          b"\xffcorr", 1)
    assert 3599 <= p.MessageExpiryInterval <= 3600          # what is left of it


def test_what_amqp_clients_see_of_mqtt_5_messages_and_back(broker, clients):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "amq.topic", "a5.in")
        clients("a5-pub").publish("a5/in", b"req", qos=1, properties={
            "UserProperty": [("k", "v"), ("k", "second")], "ContentType": "app/x",
            "ResponseTopic": "a5/reply/+", "CorrelationData": b"id-1",
            "MessageExpiryInterval": 60})
        method, props, body = next(ch.consume(q, auto_ack=True, inactivity_timeout=TIMEOUT))
        assert (method.routing_key, body, props.delivery_mode) == ("a5.in", b"req", 2)
        assert (props.content_type, props.correlation_id, props.expiration) == \
            ("app/x", "id-1", "60000")
        assert props.timestamp is not None and abs(props.timestamp - time.time()) < 60
        assert props.headers == {"k": "v", "x-reply-to-topic": "a5.reply.*",
                                 "x-mqtt-publish-qos": 1, "x-mqtt-dup": False}
        # an AMQP answer to it, as RabbitMQ's interop: to x-reply-to-topic, correlation_id
        sub = clients("a5-sub")
        assert sub.subscribe(("a5/reply/#", 1)) == [1]
        ch.basic_publish("amq.topic", "a5.reply.one", b"resp", pika.BasicProperties(
            correlation_id="id-1", content_type="text/plain", headers={
                "s": "str", "i": 7, "b": True, "t": {"nested": 1},
                "x-reply-to-topic": "a5.back"}))
        (m,) = sub.take()
        p = m.properties
        assert (m.topic, m.payload, m.qos) == ("a5/reply/one", b"resp", 1)
        assert (p.CorrelationData, p.ContentType, p.ResponseTopic) == \
            (b"id-1", "text/plain", "a5/back")
        assert sorted(p.UserProperty) == [("b", "true"), ("i", "7"), ("s", "str")]
        assert not hasattr(p, "MessageExpiryInterval")
    finally:
        conn.close()


def test_puback_says_when_no_queue_took_the_message(clients):
    pub = clients("nm-pub")
    assert pub.publish("nm/nobody/listens", b"x", qos=1) == f.NO_MATCHING_SUBSCRIBERS
    sub = clients("nm-sub")
    assert sub.subscribe(("nm/#", 1)) == [1]
    assert pub.publish("nm/nobody/listens", b"y", qos=1) == 0
    assert [m.payload for m in sub.take()] == [b"y"]


def test_a_client_puback_with_a_failure_code_discards_the_message(broker):
    s = raw5(broker, "fail-ack", {"session_expiry_interval": 60})
    s.sendall(f._packet(f.SUBSCRIBE, 2, b"\x00\x01\x00" + f._string("fa/t") + b"\x01"))
    assert read_packet(s)[0] == f.SUBACK << 4
    p = raw5(broker, "fail-ack-pub")
    p.sendall(f.publish_packet("fa/t", b"m", 1, 3, level=5))
    assert read_packet(p)[0] == f.PUBACK << 4
    publish = parse5(read_packet(s))
    s.sendall(f._packet(f.PUBACK, 0, struct.pack(">HB", publish.packet_id, 0x80) + b"\x00"))
    wait_until(lambda: (queue_info(broker, "mqtt-subscription-fail-ackqos1") or {}).get(
        "messages") == 0, TIMEOUT)
    s.sendall(f.disconnect_packet(0, {"session_expiry_interval": 0}))
    s.close()
    p.close()


# ------------------------------------------------------------------ subscriptions
def test_subscription_identifiers_of_every_filter_matched(clients):
    sub = clients("si-sub")
    assert sub.subscribe(("si/+", 1), properties={"SubscriptionIdentifier": 2}) == [1]
    assert sub.subscribe(("si/#", 1), properties={"SubscriptionIdentifier": 3}) == [1]
    assert sub.subscribe(("si/x", 1)) == [1]                # no identifier
    clients("si-pub").publish("si/x", b"m", qos=1)
    (m,) = sub.take()
    assert sorted(m.properties.SubscriptionIdentifier) == [2, 3]


def test_no_local_keeps_a_clients_own_messages_from_it(clients):
    a = clients("nl-a")
    b = clients("nl-b")
    assert a.subscribe(("nl/t", SubscribeOptions(1, noLocal=True))) == [1]
    assert b.subscribe(("nl/t", SubscribeOptions(1, noLocal=True))) == [1]
    a.publish("nl/t", b"from a", qos=1)
    b.publish("nl/t", b"from b", qos=1)
    assert [m.payload for m in b.take()] == [b"from a"]
    assert [m.payload for m in a.take()] == [b"from b"]     # not its own "from a" first


def test_retain_as_published_and_retain_handling(clients):
    pub = clients("rh-pub")
    pub.publish("rh/t", b"kept", qos=1, retain=True)
    plain = clients("rh-plain")
    assert plain.subscribe(("rh/t", 1)) == [1]
    (m,) = plain.take()
    assert (m.payload, m.retain) == (b"kept", True)         # a retained message on subscribe
    rap = clients("rh-rap")
    assert rap.subscribe(("rh/t", SubscribeOptions(1, retainAsPublished=True,
                                                   retainHandling=2))) == [1]   # none sent
    once = clients("rh-once")
    assert once.subscribe(("rh/t", SubscribeOptions(1, retainHandling=1))) == [1]
    assert [m.payload for m in once.take()] == [b"kept"]
    assert once.subscribe(("rh/t", SubscribeOptions(1, retainHandling=1))) == [1]  # not new
    pub.publish("rh/t", b"live", qos=1, retain=True)
    # a live message published retained: flagged only where Retain As Published
    assert [(m.payload, m.retain) for m in rap.take()] == [(b"live", True)]
    assert [(m.payload, m.retain) for m in plain.take()] == [(b"live", False)]
    assert [(m.payload, m.retain) for m in once.take()] == [(b"live", False)]
    pub.publish("rh/t", b"", qos=1, retain=True)            # clears the retained message
    for c in (rap, plain, once):
        assert [m.payload for m in c.take()] == [b""]


def test_a_retained_message_keeps_its_properties_and_expiry(clients):
    pub = clients("rp-pub")
    pub.publish("rp/t", b"kept", qos=1, retain=True, properties={
        "ContentType": "text/plain", "UserProperty": [("k", "v")],
        "MessageExpiryInterval": 600})
    sub = clients("rp-sub")
    assert sub.subscribe(("rp/#", 1), properties={"SubscriptionIdentifier": 5}) == [1]
    (m,) = sub.take()
    p = m.properties
    assert (m.payload, m.retain, p.ContentType, p.UserProperty, p.SubscriptionIdentifier) \
        == (b"kept", True, "text/plain", [("k", "v")], [5])
    assert 599 <= p.MessageExpiryInterval <= 600
    pub.publish("rp/t", b"", qos=1, retain=True)


def test_dollar_topics_and_leading_wildcards(clients):
    wild = clients("d5-wild")
    assert wild.subscribe(("+/+", 1), properties={"SubscriptionIdentifier": 1}) == [1]
    assert wild.subscribe(("$SYS/+", 1), properties={"SubscriptionIdentifier": 2}) == [1]
    pub = clients("d5-pub")
    pub.publish("$SYS/x", b"system", qos=1)
    pub.publish("plain/x", b"plain", qos=1)
    got = [(m.payload, m.properties.SubscriptionIdentifier) for m in wild.take(2)]
    assert got == [(b"system", [2]), (b"plain", [1])]


def test_shared_subscriptions_share_the_messages(broker, clients):
    """``$share/<name>/<filter>``: the share's queue, consumed by every member -- each
    message goes to one member; a plain subscriber of the filter gets every one; a message
    a member left unacknowledged goes to another member. b takes one message and, with
    Receive Maximum 1, no more until it acks, so the others all go to a."""
    b = raw5(broker, "sh-b", {"receive_maximum": 1})
    b.sendall(f._packet(f.SUBSCRIBE, 2, b"\x00\x01\x00" + f._string("$share/g/sh/+")
                        + b"\x01"))
    assert read_packet(b) == (f.SUBACK << 4, b"\x00\x01\x00\x01")
    plain = clients("sh-plain")
    assert plain.subscribe(("sh/+", 1)) == [1]
    pub = clients("sh-pub")
    pub.publish("sh/t", b"0", qos=1)
    first = parse5(read_packet(b))          # not acknowledged
    assert (first.payload, first.qos) == (b"0", 1)
    a = clients("sh-a")
    assert not hasattr(a.connack[3], "SharedSubscriptionAvailable")     # 1: available
    assert a.subscribe(("$share/g/sh/+", 1),
                       properties={"SubscriptionIdentifier": 7}) == [1]
    assert queue_info(broker, "mqtt-shared-g-sh.*")["consumers"] == 2
    for i in range(1, 5):
        pub.publish("sh/t", str(i).encode(), qos=1)
    got = a.take(4)
    assert [m.payload for m in got] == [b"1", b"2", b"3", b"4"]
    assert {tuple(m.properties.SubscriptionIdentifier) for m in got} == {(7,)}
    assert sorted(m.payload for m in plain.take(5)) == [b"0", b"1", b"2", b"3", b"4"]
    b.close()                               # without its PUBACK: "0" goes to a
    (m,) = a.take()
    assert (m.payload, m.dup) == (b"0", True)
    assert a.unsubscribe("$share/g/sh/+") == [0]
    assert queue_info(broker, "mqtt-shared-g-sh.*")["consumers"] == 0


def test_shared_subscriptions_refuse_what_mqtt_5_refuses(broker):
    s = raw5(broker, "sh-bad")
    s.sendall(f._packet(f.SUBSCRIBE, 2, b"\x00\x02\x00" + b"".join(
        f._string(bad) + b"\x01" for bad in ("$share//sh/t", "$share/a+b/sh/t", "$share/g"))))
    assert read_packet(s) == (f.SUBACK << 4, b"\x00\x02\x00" + bytes([0x8F] * 3))
    s.close()
    s = raw5(broker, "sh-nolocal")
    s.sendall(f._packet(f.SUBSCRIBE, 2, b"\x00\x01\x00" + f._string("$share/g/x")
                        + bytes([0x01 | 0x04])))          # No Local on a share
    assert parse5(read_packet(s)) == f.Disconnect(f.PROTOCOL_ERROR)
    assert closed_by_broker(s)


def test_unsuback_reason_codes(clients):
    c = clients("us")
    assert c.subscribe(("us/a", 1), ("us/b", 0)) == [1, 0]
    assert c.unsubscribe("us/a", "us/never") == [0, f.NO_SUBSCRIPTION_EXISTED]
    assert c.unsubscribe("us/b") == [0]


def test_a_refused_subscription_says_why_then_closes(broker):
    assert broker.request("PUT", "users/m5-reader", {"password": "pw", "tags": ""})[0] in \
        (201, 204)
    assert broker.request("PUT", "permissions/%2F/m5-reader",
                          {"configure": ".*", "write": ".*", "read": "^$"})[0] in (201, 204)
    s = socket.create_connection(at(broker), timeout=TIMEOUT)
    s.sendall(f.connect_packet("ref-sub", level=5, username="m5-reader", password="pw"))
    assert read_packet(s)[1][1] == 0
    s.sendall(f._packet(f.SUBSCRIBE, 2, b"\x00\x05\x00" + f._string("rs/a") + b"\x01"
                        + f._string("rs/b") + b"\x00"))
    suback = read_packet(s)
    assert suback == (f.SUBACK << 4, b"\x00\x05\x00" + bytes([f.NOT_AUTHORIZED_5] * 2))
    assert closed_by_broker(s)


def test_subscription_options_outlive_the_connection_in_a_kept_session(clients):
    c = clients("ks5", properties={"SessionExpiryInterval": 300})
    assert c.subscribe(("ks5/t", SubscribeOptions(1, noLocal=True)),
                       properties={"SubscriptionIdentifier": 9}) == [1]
    c.disconnect()
    back = clients("ks5", clean_start=False, properties={"SessionExpiryInterval": 300})
    assert back.connack[2] is True
    back.publish("ks5/t", b"own", qos=1)                    # No Local still holds
    clients("ks5-pub").publish("ks5/t", b"other", qos=1)
    (m,) = back.take()
    assert (m.payload, m.properties.SubscriptionIdentifier) == (b"other", [9])
    back.disconnect(properties={"SessionExpiryInterval": 0})


# ------------------------------------------------------------------ topic aliases
def test_topic_aliases_from_the_client(broker, clients):
    sub = clients("ta-sub")
    assert sub.subscribe(("ta/#", 1)) == [1]
    s = raw5(broker, "ta-pub")
    s.sendall(f.publish_packet("ta/long/topic", b"1", 1, 1, level=5,
                               properties={"topic_alias": 3}))
    s.sendall(f.publish_packet("", b"2", 1, 2, level=5, properties={"topic_alias": 3}))
    assert [parse5(read_packet(s)).packet_id for _ in range(2)] == [1, 2]
    assert [(m.topic, m.payload) for m in sub.take(2)] == [("ta/long/topic", b"1"),
                                                          ("ta/long/topic", b"2")]
    s.sendall(f.publish_packet("", b"3", 1, 3, level=5, properties={"topic_alias": 4}))
    assert parse5(read_packet(s)) == f.Disconnect(f.PROTOCOL_ERROR)      # never set
    assert closed_by_broker(s)
    s = raw5(broker, "ta-pub2")
    s.sendall(f.publish_packet("ta/x", b"4", 1, 1, level=5, properties={"topic_alias": 17}))
    assert parse5(read_packet(s)) == f.Disconnect(f.TOPIC_ALIAS_INVALID)  # over 16
    assert closed_by_broker(s)


def test_topic_aliases_to_the_client(broker, clients):
    s = raw5(broker, "tao-sub", {"topic_alias_maximum": 1})
    s.sendall(f._packet(f.SUBSCRIBE, 2, b"\x00\x01\x00" + f._string("tao/#") + b"\x00"))
    assert read_packet(s)[0] == f.SUBACK << 4
    pub = clients("tao-pub")
    for topic in ("tao/first", "tao/first", "tao/second"):
        pub.publish(topic, b"m", qos=1)
    got = [parse5(read_packet(s)) for _ in range(3)]
    assert [(p.topic, p.properties.get("topic_alias")) for p in got] == [
        ("tao/first", 1), ("", 1), ("tao/second", None)]   # one alias allowed: given once
    s.close()


def test_qos_2_is_refused(broker):
    s = raw5(broker, "q2")
    s.sendall(f.publish_packet("q2/t", b"x", 2, 1, level=5))
    assert parse5(read_packet(s)) == f.Disconnect(f.QOS_NOT_SUPPORTED)
    assert closed_by_broker(s)


# ------------------------------------------------------------------ flow
def test_receive_maximum_is_the_prefetch_and_maximum_packet_size_drops(broker, clients):
    s = raw5(broker, "fl-sub", {"receive_maximum": 2, "maximum_packet_size": 200})
    s.sendall(f._packet(f.SUBSCRIBE, 2, b"\x00\x01\x00" + f._string("fl/t") + b"\x01"))
    assert read_packet(s)[0] == f.SUBACK << 4

    def consumer():
        found = [c for c in broker.api("consumers")
                 if c["queue"]["name"] == "mqtt-subscription-fl-subqos1"]
        return found[0] if found else None
    assert wait_until(consumer, TIMEOUT)["prefetch_count"] == 2
    pub = clients("fl-pub")
    pub.publish("fl/t", b"x" * 500, qos=1)                  # over 200 bytes: dropped
    pub.publish("fl/t", b"small", qos=1)
    publish = parse5(read_packet(s))
    assert publish.payload == b"small"
    s.sendall(f.puback_packet(publish.packet_id))
    wait_until(lambda: (queue_info(broker, "mqtt-subscription-fl-subqos1") or {}).get(
        "messages") == 0, TIMEOUT)                          # the big one acked, not kept
    s.close()


# ------------------------------------------------------------------ sessions
def test_session_expiry_is_the_queues_x_expires_and_disconnect_changes_it(broker, clients):
    q1 = "mqtt-subscription-se5qos1"
    c = clients("se5", properties={"SessionExpiryInterval": 30})
    assert c.connack[3].SessionExpiryInterval == 30
    assert c.subscribe(("se5/t", 1)) == [1]
    info = queue_info(broker, q1)
    assert (info["durable"], info["auto_delete"], info["arguments"]) == \
        (True, False, {"x-expires": 30_000})
    c.disconnect(properties={"SessionExpiryInterval": 120})
    wait_until(lambda: queue_info(broker, q1)["arguments"] == {"x-expires": 120_000}, TIMEOUT)
    back = clients("se5", clean_start=False, properties={"SessionExpiryInterval": 60})
    assert back.connack[2] is True
    assert queue_info(broker, q1)["arguments"] == {"x-expires": 60_000}
    clients("se5-pub").publish("se5/t", b"still subscribed", qos=1)
    assert [m.payload for m in back.take()] == [b"still subscribed"]
    back.disconnect(properties={"SessionExpiryInterval": 0})     # ends the session now
    wait_until(lambda: queue_info(broker, q1) is None, TIMEOUT)
    again = clients("se5", clean_start=False)
    assert again.connack[2] is False


def test_session_expiry_0_ends_with_the_connection(broker, clients):
    c = clients("se0")                                      # no Session Expiry: 0
    assert c.subscribe(("se0/t", 1)) == [1]
    assert queue_info(broker, "mqtt-subscription-se0qos1")["auto_delete"] is True
    c.disconnect()
    wait_until(lambda: queue_info(broker, "mqtt-subscription-se0qos1") is None, TIMEOUT)
    # a kept session taken up with expiry 0 ends when that connection does
    kept = clients("se0k", properties={"SessionExpiryInterval": 300})
    assert kept.subscribe(("se0k/t", 1)) == [1]
    kept.disconnect()
    back = clients("se0k", clean_start=False)
    assert back.connack[2] is True
    back.disconnect()
    wait_until(lambda: queue_info(broker, "mqtt-subscription-se0kqos1") is None, TIMEOUT)


def test_a_second_connection_takes_the_session_over(broker, clients):
    """The first is told why; its will goes, as it ended without DISCONNECT (MQTT 5,
    3.1.3.2.2), where MQTT 3.1.1 (RabbitMQ 3.10) sends none on a take-over."""
    watcher = clients("to5-watch")
    assert watcher.subscribe(("to5/#", 1)) == [1]
    first = raw5(broker, "to5", will=("to5/will", b"taken over", 1, False))
    clients("to5")
    assert parse5(read_packet(first)) == f.Disconnect(f.SESSION_TAKEN_OVER)
    assert closed_by_broker(first)
    assert [m.payload for m in watcher.take()] == [b"taken over"]


# ------------------------------------------------------------------ wills
def test_a_will_goes_on_disconnect_with_reason_4_not_0(broker, clients):
    watcher = clients("w5-watch")
    assert watcher.subscribe(("w5/#", 1)) == [1]
    quiet = clients("w5-quiet", will=("w5/quiet", b"should not come", 1, False))
    quiet.disconnect(0)
    wait_until(lambda: not [c for c in broker.api("connections")
                            if c.get("client_properties", {}).get("client_id") == "w5-quiet"],
               TIMEOUT)
    loud = clients("w5-loud", will=("w5/loud", b"gone", 1, False),
                   will_properties={"ContentType": "text/plain",
                                    "UserProperty": [("why", "test")]})
    loud.disconnect(f.DISCONNECT_WITH_WILL)
    (m,) = watcher.take()
    assert (m.topic, m.payload, m.properties.ContentType, m.properties.UserProperty) == \
        ("w5/loud", b"gone", "text/plain", [("why", "test")])


def test_a_delayed_will_waits_and_a_return_cancels_it(broker, clients):
    watcher = clients("wd-watch")
    assert watcher.subscribe(("wd/#", 1)) == [1]
    session = {"SessionExpiryInterval": 60}
    cancelled = clients("wd-back", properties=session, will=("wd/back", b"no", 1, False),
                        will_properties={"WillDelayInterval": 30})
    cancelled.disconnect(f.DISCONNECT_WITH_WILL)
    wait_until(lambda: queue_info(broker, "mqtt-will-wd-back") is not None, TIMEOUT)
    clients("wd-back", clean_start=False, properties=session)   # back in time
    wait_until(lambda: queue_info(broker, "mqtt-will-wd-back") is None, TIMEOUT)
    started = time.monotonic()
    delayed = clients("wd-late", properties=session, will=("wd/late", b"late", 1, False),
                      will_properties={"WillDelayInterval": 1})
    delayed.disconnect(f.DISCONNECT_WITH_WILL)
    (m,) = watcher.take()
    assert (m.topic, m.payload) == ("wd/late", b"late")
    assert time.monotonic() - started >= 1.0

