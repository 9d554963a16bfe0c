"""MQTT as RabbitMQ's rabbitmq_mqtt plugin serves it: the same steps pass against RabbitMQ
3.10.8 with the plugin enabled (``AMQP_MQTT_PORT``) and against ours (``--mqtt-port``).

What is compared: the topic <-> routing key mapping both ways and the headers an AMQP
consumer sees, the subscription queues' names and properties, QoS 2 taken as 1, kept and
clean sessions, wills, client-id take-over, retained messages on the exact topic, and the
CONNACK codes of logins.
"""
from __future__ import annotations

import socket

import pytest

from amqpbroker.mqtt import frames as f
from amqpbroker.testing.closing import closing_clients
from amqpbroker.testing.mqtt_clients import TIMEOUT, Client, closed_by_broker, raw, \
    read_packet

from .conftest import q, wait_until


@pytest.fixture
def mqtt(mqtt_address):
    with closing_clients(lambda client_id, **kw: Client(mqtt_address, client_id, **kw)) as make:
        yield make


def test_topics_are_routing_keys_of_amq_topic_both_ways(ch, mqtt, uniq):
    word = uniq("w")
    sub = mqtt(uniq("sub"))
    assert sub.subscribe((f"{word}/+/temp", 1)) == [1]
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, "amq.topic", f"{word}.mqtt.*")
    ch.basic_publish("amq.topic", f"{word}.kitchen.temp", b"19.5")
    (m,) = sub.take()
    assert (m.topic, m.payload, m.qos, m.retain) == (f"{word}/kitchen/temp", b"19.5", 1, False)
    pub = mqtt(uniq("pub"))
    pub.publish(f"{word}/mqtt/q0", b"zero", qos=0)
    pub.publish(f"{word}/mqtt/q1", b"one", qos=1)
    got = []
    for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=TIMEOUT):
        assert method is not None
        got.append((method.routing_key, body, props.headers, props.delivery_mode))
        if len(got) == 2:
            break
    ch.cancel()
    assert got == [(f"{word}.mqtt.q0", b"zero", {"x-mqtt-publish-qos": 0, "x-mqtt-dup": False}, 1),
                   (f"{word}.mqtt.q1", b"one", {"x-mqtt-publish-qos": 1, "x-mqtt-dup": False}, 2)]


def test_subscription_queues(mgmt, mqtt, uniq):
    cid = uniq("cid")
    c = mqtt(cid, clean=False)
    assert c.subscribe(("sq/a", 0), ("sq/b", 1)) == [0, 1]
    q0 = mgmt.get(f"/api/queues/%2F/{q(f'mqtt-subscription-{cid}qos0')}")
    q1 = mgmt.get(f"/api/queues/%2F/{q(f'mqtt-subscription-{cid}qos1')}")
    assert (q0["durable"], q0["auto_delete"], q0["arguments"]) == (False, True, {})
    assert (q1["durable"], q1["auto_delete"], q1["arguments"]) == \
        (True, False, {"x-expires": 86400000})
    bindings = mgmt.get(f"/api/queues/%2F/{q(f'mqtt-subscription-{cid}qos1')}/bindings")
    assert [(b["source"], b["routing_key"]) for b in bindings if b["source"]] == \
        [("amq.topic", "sq.b")]
    c.close()
    again = mqtt(cid, clean=True)                   # a clean session deletes the kept one
    assert again.connack[1:] == (0, False)
    with pytest.raises(Exception) as refused:
        mgmt.get(f"/api/queues/%2F/{q(f'mqtt-subscription-{cid}qos1')}")
    assert getattr(refused.value, "code", None) == 404


def test_qos2_is_granted_and_acknowledged_as_qos1(mqtt_address, mqtt, uniq):
    topic = f"{uniq('q2')}/t"
    sub = mqtt(uniq("sub"))
    assert sub.subscribe((topic, 2)) == [1]
    s = raw(mqtt_address, uniq("pub"))
    s.sendall(f.publish_packet(topic, b"two", qos=2, packet_id=9))
    assert read_packet(s) == (f.PUBACK << 4, b"\x00\x09")
    (m,) = sub.take()
    assert (m.payload, m.qos) == (b"two", 1)
    s.close()


def test_kept_session_gets_what_came_while_away(mqtt_address, mqtt, uniq):
    cid, topic = uniq("keep"), f"{uniq('k')}/t"
    first = Client(mqtt_address, cid, clean=False)
    assert first.connack[1:] == (0, False)
    assert first.subscribe((topic, 1)) == [1]
    first.close()
    pub = mqtt(uniq("pub"))
    for i in range(3):
        pub.publish(topic, str(i).encode(), qos=1)
    again = mqtt(cid, clean=False)
    assert again.connack[1:] == (0, True)
    assert [m.payload for m in again.take(3)] == [b"0", b"1", b"2"]
    again.close()
    Client(mqtt_address, cid, clean=True).close()       # the kept queue goes


def test_will_on_vanishing_not_on_disconnect(mqtt_address, mqtt, uniq):
    topic = uniq("wills")
    watcher = mqtt(uniq("watch"))
    assert watcher.subscribe((f"{topic}/#", 1)) == [1]
    polite = raw(mqtt_address, uniq("polite"), will=(f"{topic}/polite", b"gone", 1, False))
    polite.sendall(f._packet(f.DISCONNECT, 0, b""))
    assert closed_by_broker(polite)
    rude = raw(mqtt_address, uniq("rude"), will=(f"{topic}/rude", b"vanished", 1, False))
    rude.close()
    (m,) = watcher.take()
    assert (m.topic, m.payload) == (f"{topic}/rude", b"vanished")
    assert watcher.messages.empty()


def test_same_client_id_takes_over(mqtt_address, mqtt, uniq):
    cid = uniq("twin")
    old = raw(mqtt_address, cid)
    new = mqtt(cid)
    assert new.connack[1] == 0
    assert closed_by_broker(old)


def test_retained_message_on_its_topic(mqtt, uniq):
    topic = f"{uniq('ret')}/a"
    pub = mqtt(uniq("pub"))
    pub.publish(topic, b"kept", qos=1, retain=True)
    sub = mqtt(uniq("sub"))
    assert sub.subscribe((topic, 1)) == [1]
    (m,) = sub.take()
    assert (m.topic, m.payload, m.retain) == (topic, b"kept", True)
    pub.publish(topic, b"", qos=1, retain=True)             # cleared


def test_connack_codes_of_logins(mqtt_address, mgmt, uniq):
    vhost, user = uniq("mqv"), uniq("mqu")
    assert mgmt.put(f"/api/vhosts/{vhost}", {}) in (201, 204)
    assert mgmt.put(f"/api/users/{user}", {"password": "pw", "tags": ""}) in (201, 204)
    assert mgmt.put(f"/api/permissions/{vhost}/{user}",
                    {"configure": ".*", "write": ".*", "read": ".*"}) in (201, 204)

    def connack(client_id, **kw) -> int:
        s = socket.create_connection(mqtt_address, timeout=TIMEOUT)
        s.sendall(f.connect_packet(client_id, **kw))
        answer = read_packet(s)
        s.close()
        return answer[1][1]
    try:
        assert connack(uniq("a"), username="guest", password="wrong") == 4
        assert connack(uniq("b"), username=f"{vhost}:{user}", password="pw") == 0
        assert connack(uniq("c"), username=user, password="pw") == 5     # no access to /
        assert connack(uniq("d"), username=f"{uniq('none')}:guest", password="guest") == 4
        assert connack(uniq("e")) == 0                                    # anonymous
        assert connack("", clean_session=False) == 2
        assert connack(uniq("g"), level=3) == 0                          # MQTT 3.1
    finally:
        mgmt.delete(f"/api/users/{user}")
        mgmt.delete(f"/api/vhosts/{vhost}")


def test_management_shows_an_mqtt_client(mqtt_address, mgmt, mqtt, uniq):
    cid = uniq("shown")
    mqtt(cid)

    def found():
        return [c for c in mgmt.get("/api/connections")
                if c["client_properties"].get("client_id") == cid]
    wait_until(found, timeout=15, message="the MQTT client's connection is listed")
    [conn] = found()
    assert (conn["protocol"], conn["type"], conn["user"], conn["vhost"], conn["port"]) == \
        ("MQTT 3.1.1", "direct", "guest", "/", mqtt_address[1])
    assert conn["client_properties"] == {"client_id": cid, "product": "MQTT client"}
    assert conn["name"] == \
        f"{conn['peer_host']}:{conn['peer_port']} -> {conn['host']}:{mqtt_address[1]}"
    listeners = [(x["protocol"], x["port"]) for x in mgmt.get("/api/overview")["listeners"]]
    assert ("mqtt", mqtt_address[1]) in listeners


def test_mqtt_over_websockets(web_mqtt_address, mgmt, mqtt, uniq):
    """rabbitmq_web_mqtt: MQTT in binary WebSocket messages at /ws, the same topics as TCP."""
    cid, topic = uniq("ws"), uniq("wst")
    web = Client(web_mqtt_address, cid, websocket_path="/ws")
    try:
        assert web.connack[1] == 0
        assert web.subscribe((f"{topic}/+", 1)) == [1]
        mqtt(uniq("tcp")).publish(f"{topic}/a", b"to the browser", qos=1)
        (m,) = web.take()
        assert (m.topic, m.payload) == (f"{topic}/a", b"to the browser")

        def found():
            return [c for c in mgmt.get("/api/connections")
                    if c["client_properties"].get("client_id") == cid]
        wait_until(found, timeout=15, message="the Web MQTT client's connection is listed")
        [conn] = found()
        assert (conn["protocol"], conn["type"], conn["port"]) == \
            ("Web MQTT 3.1.1", "direct", web_mqtt_address[1])
    finally:
        web.close()
