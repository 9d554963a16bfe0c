"""MQTT 3.1.1 (``--mqtt-port``; amqpbroker/mqtt), as RabbitMQ 3.10's rabbitmq_mqtt plugin
serves it, in both process layouts: paho-mqtt clients, and raw sockets where a test needs
to misbehave (no DISCONNECT, no keepalive, garbage).

Every wait is on a client's callback or a socket read with a timeout, no sleeps.
"""
from __future__ import annotations

import socket
import struct

import pika
import pytest

from amqpbroker.mqtt import frames as f
from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.closing import closing_clients
from amqpbroker.testing.mqtt_clients import TIMEOUT, Client, closed_by_broker, raw, \
    read_packet

pytestmark = pytest.mark.own_layout         # every broker here names its layout


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("mqtt"), *LAYOUTS[request.param],
                       "--mqtt-port", "-1", "--web-mqtt-port", "-1", management=True) as b:
        yield b


def at(broker) -> tuple:
    return broker.host, broker.mqtt_port


@pytest.fixture
def clients(broker):
    with closing_clients(lambda client_id, **kw: Client(at(broker), client_id, **kw)) as make:
        yield make


def test_publish_subscribe_qos0_and_qos1_with_wildcards(clients):
    sub = clients("sub-wild")
    assert sub.subscribe(("home/+/temp", 0), ("home/#", 1)) == [0, 1]
    pub = clients("pub-wild")
    pub.publish("home/kitchen/temp", b"21", qos=0)
    pub.publish("home/hall/light", b"on", qos=1)
    got = sorted((m.topic, m.payload, m.qos) for m in sub.take(3))
    # home/kitchen/temp matches both filters: once through each subscription queue
    assert got == [("home/hall/light", b"on", 1), ("home/kitchen/temp", b"21", 0),
                   ("home/kitchen/temp", b"21", 0)]


def test_order_holds_within_a_topic(clients):
    sub = clients("sub-order")
    assert sub.subscribe(("order/t", 1)) == [1]
    pub = clients("pub-order")
    for i in range(200):
        pub.c.publish("order/t", str(i).encode(), qos=1)
    pub.publish("order/t", b"last", qos=1)
    assert [m.payload for m in sub.take(201)] == [str(i).encode() for i in range(200)] + \
        [b"last"]


def test_large_payloads_cross_in_several_amqp_frames(clients):
    """Bodies over the AMQP connection's frame_max (131072) are split into body frames."""
    sub = clients("sub-large")
    assert sub.subscribe(("large/t", 1)) == [1]
    pub = clients("pub-large")
    payloads = [bytes([i]) * size for i, size in enumerate((131_000, 131_072, 300_001, 1))]
    for payload in payloads:
        pub.publish("large/t", payload, qos=1)
    assert [m.payload for m in sub.take(len(payloads))] == payloads


def test_a_slow_qos0_reader_leaves_messages_in_its_queue(broker, clients):
    """A QoS 0 subscriber that stops reading: once its socket buffers are full the rest
    wait in its queue (at most a window of 1,000 deliveries is out, what the kernel's socket
    buffers hold among them), and when it reads again every message comes, in order."""
    s = raw(at(broker), "slow-reader")
    s.sendall(f._packet(f.SUBSCRIBE, 2, b"\x00\x01" + f._string("slow/t") + b"\x00"))
    assert read_packet(s) == (f.SUBACK << 4, b"\x00\x01\x00")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    # 8 MiB: more than the window (1 MiB) and what the kernel's socket buffers take (~4 MiB
    # on loopback), less than the backlog that holds publishers back (Queue.FLOW_HIGH)
    n, size = 8000, 1024
    for i in range(n):
        ch.basic_publish("amq.topic", "slow.t", str(i).encode().ljust(size, b"."))
    queue = broker.api("queues/%2F/mqtt-subscription-slow-readerqos0")
    # with auto-ack all would have left the queue for the broker's buffers
    assert queue["messages_ready"] >= 1000, queue["messages_ready"]
    assert queue["messages_unacknowledged"] <= 1000
    conn.close()
    got = []
    while len(got) < n:
        first, packet = read_packet(s)
        assert first >> 4 == f.PUBLISH
        got.append(int(packet[2 + len(b"slow/t"):].rstrip(b".")))
    assert got == list(range(n))
    s.close()


def test_amqp_and_mqtt_exchange_messages_both_ways(broker, clients):
    sub = clients("sub-amqp")
    assert sub.subscribe(("sensors/+/temp", 1)) == [1]
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "amq.topic", "from.mqtt.*")
        # AMQP -> MQTT: the routing key's dots are the topic's levels
        ch.basic_publish("amq.topic", "sensors.kitchen.temp", b"19.5")
        (m,) = sub.take()
        assert (m.topic, m.payload, m.qos) == ("sensors/kitchen/temp", b"19.5", 1)
        # MQTT -> AMQP: the publisher's QoS in a header, QoS 1 persistent
        clients("pub-amqp").publish("from/mqtt/x", b"hello", qos=1)
        method, props, body = next(ch.consume(q, auto_ack=True, inactivity_timeout=TIMEOUT))
        assert (method.routing_key, body) == ("from.mqtt.x", b"hello")
        assert props.headers == {"x-mqtt-publish-qos": 1, "x-mqtt-dup": False}
        assert props.delivery_mode == 2
    finally:
        conn.close()


def test_qos1_message_is_redelivered_until_pubacked(broker):
    """A QoS 1 delivery the client never PUBACKs goes back to the queue when the client
    goes, and comes again, flagged DUP, to its next session."""
    s = raw(at(broker), "noack", clean_session=False)
    s.sendall(f._packet(f.SUBSCRIBE, 2, struct.pack(">H", 1) + f._string("noack/t") + b"\x01"))
    assert read_packet(s) == (f.SUBACK << 4, b"\x00\x01\x01")
    p = raw(at(broker), "noack-pub")
    p.sendall(f.publish_packet("noack/t", b"m1", qos=1, packet_id=7))
    assert read_packet(p) == (f.PUBACK << 4, b"\x00\x07")
    first, body = read_packet(s)
    assert first == (f.PUBLISH << 4 | 0x02) and body.endswith(b"m1")      # QoS 1, no DUP
    s.close()                                   # without PUBACK, without DISCONNECT
    s2 = socket.create_connection((broker.host, broker.mqtt_port), timeout=TIMEOUT)
    s2.sendall(f.connect_packet("noack", clean_session=False))
    assert read_packet(s2) == (f.CONNACK << 4, b"\x01\x00")                # session present
    first, body = read_packet(s2)
    assert first == (f.PUBLISH << 4 | 0x08 | 0x02) and body.endswith(b"m1")   # DUP now
    packet_id = body[2 + len(b"noack/t"):4 + len(b"noack/t")]
    s2.sendall(f._packet(f.PUBACK, 0, packet_id))
    s2.sendall(f._packet(f.DISCONNECT, 0, b""))
    assert closed_by_broker(s2)
    p.close()


def test_persistent_session_keeps_subscriptions_and_messages(broker, clients):
    first = Client(at(broker), "keeper", clean=False)
    assert first.connack[2] is False
    assert first.subscribe(("keep/#", 1)) == [1]
    first.close()
    pub = clients("keep-pub")
    for i in range(3):
        pub.publish(f"keep/{i}", str(i).encode(), qos=1)
    again = clients("keeper", clean=False)
    assert again.connack[1:] == (0, True)                  # session present
    assert [(m.topic, m.payload) for m in again.take(3)] == \
        [("keep/0", b"0"), ("keep/1", b"1"), ("keep/2", b"2")]


def test_clean_session_deletes_the_stored_one(broker, clients):
    old = Client(at(broker), "cleaner", clean=False)
    assert old.subscribe(("clean/t", 1)) == [1]
    old.close()
    assert broker.request("GET", "queues/%2F/mqtt-subscription-cleanerqos1")[0] == 200
    fresh = clients("cleaner", clean=True)
    assert fresh.connack[1:] == (0, False)
    assert broker.request("GET", "queues/%2F/mqtt-subscription-cleanerqos1")[0] == 404


def test_retained_messages_go_to_new_subscriptions_and_are_cleared(clients):
    pub = clients("ret-pub")
    pub.publish("ret/a/b", b"kept", qos=1, retain=True)
    pub.publish("ret/a/c", b"also", qos=0, retain=True)
    exact = clients("ret-exact")
    assert exact.subscribe(("ret/a/b", 1)) == [1]
    (m,) = exact.take()
    assert (m.topic, m.payload, m.retain, m.qos) == ("ret/a/b", b"kept", True, 1)
    wild = clients("ret-wild")
    assert wild.subscribe(("ret/a/+", 1)) == [1]
    # the lower of the subscription's and the retained message's QoS
    assert sorted((m.topic, m.payload, m.qos) for m in wild.take(2)) == \
        [("ret/a/b", b"kept", 1), ("ret/a/c", b"also", 0)]
    pub.publish("ret/a/b", b"", qos=1, retain=True)      # empty: cleared
    pub.publish("ret/a/c", b"", qos=1, retain=True)
    later = clients("ret-later")
    assert later.subscribe(("ret/#", 0), ("ret/end", 0)) == [0, 0]
    pub.publish("ret/end", b"marker")       # what came first would be a retained message
    assert [(m.topic, m.payload, m.retain) for m in later.take(1)] == \
        [("ret/end", b"marker", False)]


def test_will_is_published_when_a_client_vanishes_not_after_disconnect(broker, clients):
    watcher = clients("will-watch")
    assert watcher.subscribe(("wills/#", 1)) == [1]
    polite = raw(at(broker), "will-polite", will=("wills/polite", b"gone", 1, False))
    polite.sendall(f._packet(f.DISCONNECT, 0, b""))
    assert closed_by_broker(polite)
    rude = raw(at(broker), "will-rude", will=("wills/rude", b"vanished", 1, False))
    rude.close()
    (m,) = watcher.take()
    assert (m.topic, m.payload) == ("wills/rude", b"vanished")
    assert watcher.messages.empty()


def test_keepalive_missed_closes_and_publishes_the_will(broker, clients):
    watcher = clients("ka-watch")
    assert watcher.subscribe(("ka/will", 0)) == [0]
    s = raw(at(broker), "ka-silent", keepalive=1, will=("ka/will", b"timed out", 0, False))
    assert closed_by_broker(s)          # after 1.5 s without a packet
    (m,) = watcher.take()
    assert m.payload == b"timed out"


def test_pingreq_is_answered(broker):
    s = raw(at(broker), "pinger", keepalive=1)
    for _ in range(3):
        s.sendall(f._packet(f.PINGREQ, 0, b""))
        assert read_packet(s) == (f.PINGRESP << 4, b"")
    s.sendall(f._packet(f.DISCONNECT, 0, b""))
    assert closed_by_broker(s)


def test_a_second_connection_with_the_same_client_id_takes_over(broker, clients):
    old = raw(at(broker), "twin")
    new = clients("twin")
    assert new.connack[1] == 0
    assert closed_by_broker(old)
    new.publish("twin/alive", b"x", qos=1)


def test_unsubscribe_stops_deliveries(clients):
    sub = clients("unsub")
    assert sub.subscribe(("u/a", 1), ("u/b", 0)) == [1, 0]
    sub.c.unsubscribe("u/a")
    sub.event("unsuback")
    pub = clients("unsub-pub")
    pub.publish("u/a", b"not for you", qos=1)
    pub.publish("u/b", b"for you", qos=1)
    assert [m.payload for m in sub.take(1)] == [b"for you"]
    assert sub.messages.empty()


def test_resubscribing_with_another_qos_replaces_the_subscription(clients):
    sub = clients("resub")
    assert sub.subscribe(("r/t", 1)) == [1]
    assert sub.subscribe(("r/t", 0)) == [0]
    pub = clients("resub-pub")
    pub.publish("r/t", b"once", qos=1)
    pub.publish("r/end", b"x", qos=1)
    assert sub.subscribe(("r/end", 0)) == [0]
    pub.publish("r/end", b"marker", qos=1)
    assert [(m.payload, m.qos) for m in sub.take(2)] == [(b"once", 0), (b"marker", 0)]


def test_qos2_is_taken_as_qos1(broker, clients):
    sub = clients("q2-sub")
    assert sub.subscribe(("q2/t", 2)) == [1]                # granted: 1
    s = raw(at(broker), "q2-pub")
    s.sendall(f.publish_packet("q2/t", b"two", qos=2, packet_id=9))
    assert read_packet(s) == (f.PUBACK << 4, b"\x00\x09")   # PUBACK, not PUBREC
    (m,) = sub.take()
    assert (m.payload, m.qos) == (b"two", 1)
    s.close()


def test_logins(broker):
    assert broker.request("PUT", "vhosts/mq")[0] in (201, 204)
    assert broker.request("PUT", "users/mq-user", {"password": "pw", "tags": ""})[0] in (201, 204)
    assert broker.request("PUT", "permissions/mq/mq-user",
                          {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)

    def connack(client_id, **kw) -> bytes:
        s = socket.create_connection((broker.host, broker.mqtt_port), timeout=TIMEOUT)
        s.sendall(f.connect_packet(client_id, **kw))
        answer = read_packet(s)
        if answer[1][1] != 0:
            assert closed_by_broker(s)
        s.close()
        return answer[1]

    assert connack("l1", username="guest", password="nope") == b"\x00\x04"
    assert connack("l2", username="guest") == b"\x00\x04"          # no password
    assert connack("l3", username="mq:mq-user", password="pw") == b"\x00\x00"
    assert connack("l4", username="mq-user", password="pw") == b"\x00\x05"  # no access to /
    assert connack("l5", username="nope:guest", password="guest") == b"\x00\x04"  # no vhost
    assert connack("l6") == b"\x00\x00"         # anonymous: the default user
    assert connack("", clean_session=False) == b"\x00\x02"
    assert connack("l7", level=6) == b"\x00\x01"                   # no such MQTT
    assert connack("l8", level=3) == b"\x00\x00"                   # MQTT 3.1


def test_vhost_from_user_name_routes_within_that_vhost(broker, clients):
    assert broker.request("PUT", "vhosts/mqv")[0] in (201, 204)
    assert broker.request("PUT", "permissions/mqv/guest",
                          {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
    other = clients("vh-sub", username="mqv:guest")
    assert other.subscribe(("v/t", 0)) == [0]
    default = clients("vh-default")
    assert default.subscribe(("v/t", 0)) == [0]
    clients("vh-pub", username="mqv:guest").publish("v/t", b"in mqv", qos=1)
    assert [m.payload for m in other.take()] == [b"in mqv"]
    clients("vh-pub2").publish("v/t", b"in /", qos=1)
    assert [m.payload for m in default.take()] == [b"in /"]
    assert other.messages.empty()


def test_a_port_to_vhost_mapping_picks_the_vhost(broker, clients):
    """RabbitMQ's global parameter ``mqtt_port_to_vhost_mapping``: a user name without a
    vhost logs in to its port's vhost; ``vhost:user`` still wins."""
    assert broker.request("PUT", "vhosts/mq-port")[0] in (201, 204)
    assert broker.request("PUT", "permissions/mq-port/guest",
                          {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
    mapping = {str(broker.mqtt_port): "mq-port"}
    assert broker.request("PUT", "global-parameters/mqtt_port_to_vhost_mapping",
                          {"name": "mqtt_port_to_vhost_mapping", "value": mapping})[0] \
        in (201, 204)

    def vhost_of(client_id: str) -> str:
        return next(c["vhost"] for c in broker.api("connections")
                    if c["client_properties"].get("client_id") == client_id)
    try:
        clients("by-port")
        clients("by-name", username="/:guest")
        assert vhost_of("by-port") == "mq-port"
        assert vhost_of("by-name") == "/"
    finally:
        broker.request("DELETE", "global-parameters/mqtt_port_to_vhost_mapping")


def test_topic_permission_refusal_closes_the_connection(broker, clients):
    assert broker.request("PUT", "users/mq-topic", {"password": "pw", "tags": ""})[0] in (201, 204)
    assert broker.request("PUT", "permissions/%2F/mq-topic",
                          {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
    assert broker.request("PUT", "topic-permissions/%2F/mq-topic",
                          {"exchange": "amq.topic", "write": "^allowed\\.", "read": ".*"}
                          )[0] in (201, 204)
    s = raw(at(broker), "tp", username="mq-topic", password="pw")
    s.sendall(f.publish_packet("allowed/x", b"ok", qos=1, packet_id=1))
    assert read_packet(s) == (f.PUBACK << 4, b"\x00\x01")
    s.sendall(f.publish_packet("denied/x", b"no", qos=1, packet_id=2))
    assert closed_by_broker(s)
    # others are unaffected
    clients("tp-other").publish("denied/x", b"fine for guest", qos=1)


def test_bad_input_closes_only_that_connection(broker, clients):
    bystander = clients("bad-bystander")
    assert bystander.subscribe(("bad/#", 0)) == [0]
    filters = raw(at(broker), "bad-filters")            # paho refuses these before sending them
    filters.sendall(f._packet(f.SUBSCRIBE, 2, b"\x00\x05" + f._string("ok/#") + b"\x01"
                              + f._string("ba+d") + b"\x00" + f._string("a/#/b") + b"\x01"))
    assert read_packet(filters) == (f.SUBACK << 4, b"\x00\x05\x01\x80\x80")
    filters.close()
    for junk in (b"\xff\xff\xff\xff\xff", b"GET / HTTP/1.1\r\n\r\n",
                 f._packet(f.PUBLISH, 0, b"\x00")):
        s = socket.create_connection((broker.host, broker.mqtt_port), timeout=TIMEOUT)
        s.sendall(junk)
        assert closed_by_broker(s)
    big = socket.create_connection(at(broker), timeout=TIMEOUT)
    big.sendall(b"\x10\xa0\x8d\x06")        # a CONNECT of 100,000 bytes: over 65,536
    assert closed_by_broker(big)                # before the login (RabbitMQ 3.12's limit)
    wild = raw(at(broker), "bad-wild")
    wild.sendall(f.publish_packet("bad/+", b"x"))           # no wildcards in a topic name
    assert closed_by_broker(wild)
    second = raw(at(broker), "bad-second")
    second.sendall(f.connect_packet("bad-second"))          # CONNECT twice
    assert closed_by_broker(second)
    clients("bad-pub").publish("bad/ok", b"still here", qos=1)
    assert [m.payload for m in bystander.take()] == [b"still here"]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_retained_messages_survive_a_restart(tmp_path, layout):
    with BrokerProcess(tmp_path, *LAYOUTS[layout], "--mqtt-port", "-1") as b:
        pub = Client(at(b), "rr-pub")
        pub.publish("rr/t", b"after restart", qos=1, retain=True)
        pub.close()
        b.restart()
        sub = Client(at(b), "rr-sub")
        try:
            assert sub.subscribe(("rr/t", 1)) == [1]
            (m,) = sub.take()
            assert (m.payload, m.retain) == (b"after restart", True)
        finally:
            sub.close()


def test_management_lists_the_mqtt_listener_and_connections(broker, clients):
    c = clients("seen-by-mgmt")
    assert c.subscribe(("m/t", 1)) == [1]
    listeners = broker.api("overview")["listeners"]
    assert {"protocol": "mqtt", "port": broker.mqtt_port} in \
        [{"protocol": entry["protocol"], "port": entry["port"]} for entry in listeners]
    [conn] = [conn for conn in broker.api("connections")
              if conn["client_properties"].get("client_id") == "seen-by-mgmt"]
    # as RabbitMQ shows an MQTT client: its address, the MQTT port, the protocol
    assert (conn["protocol"], conn["peer_host"], conn["port"], conn["user"]) == \
        ("MQTT 3.1.1", "127.0.0.1", broker.mqtt_port, "guest")
    assert conn["name"] == f"127.0.0.1:{conn['peer_port']} -> 127.0.0.1:{broker.mqtt_port}"
    assert (conn["type"], conn["client_properties"]) == \
        ("direct", {"client_id": "seen-by-mgmt", "product": "MQTT client"})
    # an AMQP client cannot pass for one: a forged claim is dropped, the connection is AMQP's
    params = pika.URLParameters(broker.url)
    params.client_properties = {"connection_name": "forger", "amqpbroker_adapted": {
        "protocol": "MQTT 3.1.1", "peer_host": "10.9.9.9", "peer_port": 1, "host": "x",
        "port": 1, "ssl": False, "signature": "00" * 32}}
    forger = pika.BlockingConnection(params)
    try:
        [conn] = [conn for conn in broker.api("connections")
                  if conn["client_properties"].get("connection_name") == "forger"]
        assert (conn["protocol"], conn["peer_host"], conn["type"]) == \
            ("AMQP 0-9-1", "127.0.0.1", "network")
        assert "amqpbroker_adapted" not in conn["client_properties"]
    finally:
        forger.close()
    queues = [q["name"] for q in broker.api("queues")]
    assert "mqtt-subscription-seen-by-mgmtqos1" in queues


def test_mqtt_tls_port_without_a_certificate_is_refused_at_start(tmp_path):
    with pytest.raises(RuntimeError) as refused:
        BrokerProcess(tmp_path, *LAYOUTS["one process"], "--mqtt-tls-port", "-1").start()
    assert "cannot start: --mqtt-tls-port needs --tls-cert" in str(refused.value)


def test_mqtt_over_websockets_meets_mqtt_over_tcp(broker, clients):
    """RabbitMQ's web MQTT (``--web-mqtt-port``, path ``/ws``): a paho client over
    WebSockets and one over TCP share topics, retained messages and client ids."""
    web = Client(("127.0.0.1", broker.web_mqtt_port), "ws-sub", websocket_path="/ws")
    try:
        assert web.connack[1] == 0
        assert web.subscribe(("ws/+", 1)) == [1]
        [conn] = [conn for conn in broker.api("connections")
                  if conn["client_properties"].get("client_id") == "ws-sub"]
        assert (conn["protocol"], conn["port"]) == ("Web MQTT 3.1.1", broker.web_mqtt_port)
        tcp = clients("ws-pub")
        tcp.publish("ws/a", b"from tcp", qos=1)
        tcp.publish("ws/big", b"x" * 200_000, qos=1)          # over several WS frames
        assert [(m.topic, len(m.payload)) for m in web.take(2)] == \
            [("ws/a", 8), ("ws/big", 200_000)]
        web.publish("ws/back", b"from the web", qos=1, retain=True)
        late = clients("ws-late")
        assert late.subscribe(("ws/back", 0)) == [0]
        assert [(m.payload, m.retain) for m in late.take()] == [(b"from the web", True)]
        takeover = clients("ws-sub")                            # the same client id, TCP
        assert takeover.connack[1] == 0
        assert web.event("closed") == ("closed",)
    finally:
        web.close()
    listeners = [(x["protocol"], x["port"]) for x in broker.api("overview")["listeners"]]
    assert ("http/web-mqtt", broker.web_mqtt_port) in listeners
    for name, protocol in (("mqtt311", "mqtt"), ("web-mqtt", "http/web-mqtt")):
        assert broker.request("GET", f"health/checks/protocol-listener/{name}") == \
            (200, {"status": "ok", "protocol": protocol})       # RabbitMQ's names for them


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_disk_alarm_holds_mqtt_publishers_at_their_publish(tmp_path, layout):
    """As RabbitMQ's MQTT reader: during a resource alarm a SUBSCRIBE is answered, a QoS 1
    PUBLISH waits (no PUBACK, nothing routed), the connection stays up."""
    with BrokerProcess(tmp_path, *LAYOUTS[layout], "--mqtt-port", "-1", "--disk-free-limit",
                       str(1 << 60), management=True) as b:
        assert b.api("nodes")[0]["disk_free_alarm"] is True
        s = raw((b.host, b.mqtt_port), "alarm-pub")
        try:
            s.sendall(f._packet(f.SUBSCRIBE, 2, b"\x00\x01" + f._string("alarm/t") + b"\x01"))
            assert read_packet(s)[0] >> 4 == f.SUBACK                  # not held
            s.sendall(f.publish_packet("alarm/t", b"held", 1, 7))
            s.settimeout(2.0)
            with pytest.raises(socket.timeout):      # what must not come, bounded
                read_packet(s)
            queues = b.api("queues")
            assert [q["messages"] for q in queues if q["name"].startswith(
                "mqtt-subscription-alarm-pub")] == [0]
        finally:
            s.close()


def test_a_topic_starting_with_dollar_is_not_matched_by_a_leading_wildcard(clients):
    """MQTT 3.1.1 4.7.2: ``+/...`` (and ``#``) do not match ``$SYS/...``; ``$SYS/#`` does.
    The topic exchange knows no ``$``: the delivery is dropped (and acked) at the client."""
    wild = clients("dollar-wild")
    assert wild.subscribe(("+/dx1", 1), ("+/dx0", 0)) == [1, 0]
    exact = clients("dollar-exact")
    assert exact.subscribe(("$SYS/#", 1)) == [1]
    pub = clients("dollar-pub")
    for topic in ("$SYS/dx1", "$SYS/dx0", "plain/dx1", "plain/dx0"):
        pub.publish(topic, topic.encode(), qos=1)
    assert sorted(m.payload for m in exact.take(2)) == [b"$SYS/dx0", b"$SYS/dx1"]
    # the plain ones come, each through its filter; the $ ones through neither
    assert sorted(m.payload for m in wild.take(2)) == [b"plain/dx0", b"plain/dx1"]
