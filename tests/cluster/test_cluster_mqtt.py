"""MQTT in a cluster (``--mqtt-port`` on every node; amqpbroker/mqtt): each node's MQTT
listener reaches the queues through its own AMQP listener, so an MQTT client on any node
meets the others, and a kept session (its QoS 1 queue lives on one node) is picked up again
through another node; a client id is the cluster's: connecting on another node closes the
older connection. Three real nodes, a real etcd, paho-mqtt, raw sockets and pika."""
from paho.mqtt.subscribeoptions import SubscribeOptions

from amqpbroker.mqtt import frames as f
from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import connect
from amqpbroker.testing.mqtt_clients import Client, Client5, closed_by_broker, raw, \
    read_packet


def test_mqtt_clients_on_different_nodes_meet(tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3, together=True,
                      args=("--mqtt-port", "-1")) as cluster:
        n1, n2, n3 = cluster.nodes
        amqp = connect(n3).channel()
        q = amqp.queue_declare("mqtt-watch", durable=True).method.queue
        amqp.queue_bind(q, "amq.topic", "plant.#")
        sub = Client((n2.host, n2.mqtt_port), "keeper", clean=False)
        assert sub.subscribe(("plant/+/temp", 1)) == [1]
        pub = Client((n1.host, n1.mqtt_port), "publisher")
        try:
            pub.publish("plant/a/temp", b"first", qos=1)
            (m,) = sub.take()
            assert (m.topic, m.payload) == ("plant/a/temp", b"first")
            sub.close()
            pub.publish("plant/b/temp", b"while away", qos=1)
            back = Client((n3.host, n3.mqtt_port), "keeper", clean=False)   # another node
            try:
                assert back.connack[1:] == (0, True)                       # session present
                (m,) = back.take()
                assert (m.topic, m.payload) == ("plant/b/temp", b"while away")
            finally:
                back.close()
        finally:
            pub.close()
        got = []
        for method, _, body in amqp.consume(q, auto_ack=True, inactivity_timeout=30):
            assert method is not None, f"only {got} came"
            got.append((method.routing_key, body))
            if len(got) == 2:
                break
        assert got == [("plant.a.temp", b"first"), ("plant.b.temp", b"while away")]
        amqp.cancel()
        amqp.connection.close()


def test_a_client_id_is_taken_over_across_nodes(tmp_path):
    """The same client id on n2 closes its connection on n1 (as on one node, as RabbitMQ's
    cluster-wide tracking); the newer connection stays, and a third on n3 closes it."""
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3, together=True,
                      args=("--mqtt-port", "-1")) as cluster:
        n1, n2, n3 = cluster.nodes
        first = raw((n1.host, n1.mqtt_port), "roaming-device")
        second = raw((n2.host, n2.mqtt_port), "roaming-device")
        try:
            assert closed_by_broker(first)
            second.sendall(f._packet(f.PINGREQ, 0, b""))
            assert read_packet(second) == (f.PINGRESP << 4, b"")
            third = raw((n3.host, n3.mqtt_port), "roaming-device")
            try:
                assert closed_by_broker(second)
                third.sendall(f._packet(f.PINGREQ, 0, b""))
                assert read_packet(third) == (f.PINGRESP << 4, b"")
            finally:
                third.close()
        finally:
            first.close()
            second.close()


def test_an_mqtt5_session_keeps_its_subscription_options_on_another_node(tmp_path):
    """An MQTT 5 session's subscription identifier and No Local live in its binding's
    arguments, which every node has from etcd: taken up through another node, they hold."""
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3, together=True,
                      args=("--mqtt-port", "-1")) as cluster:
        n1, n2, n3 = cluster.nodes
        session = {"SessionExpiryInterval": 600}
        first = Client5((n1.host, n1.mqtt_port), "roamer5", properties=session)
        assert first.subscribe(("r5/t", SubscribeOptions(1, noLocal=True)),
                               properties={"SubscriptionIdentifier": 11}) == [1]
        first.disconnect()
        back = Client5((n2.host, n2.mqtt_port), "roamer5", clean_start=False,
                       properties=session)
        other = Client5((n3.host, n3.mqtt_port), "r5-pub")
        try:
            assert back.connack[2] is True
            back.publish("r5/t", b"own", qos=1)                 # No Local: not back to it
            other.publish("r5/t", b"other", qos=1)
            (m,) = back.take()
            assert (m.payload, m.properties.SubscriptionIdentifier) == (b"other", [11])
            back.disconnect(properties={"SessionExpiryInterval": 0})
        finally:
            back.close()
            other.close()
