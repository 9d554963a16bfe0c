"""Forwarding (docs/CLUSTER.md section 3, issue 12 step 4): a client on any node uses any
queue; the node forwards to the partition's leader over the cluster link and back. Three real
nodes, a real etcd, pika and the management API."""
import threading

import pika
import pytest

from amqpbroker.testing.cluster import LocalCluster


def connect(node):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.port, credentials=pika.PlainCredentials("guest", "guest")))


def queue_on(node, name):
    return {q["name"]: q for q in node.api("queues")}.get(name, {})


def declare_led_by(cluster, node, name, **kw):
    """Declare classic queue ``name`` on ``node`` (which then leads it) and wait until every
    node forwards to it."""
    conn = connect(node)
    conn.channel().queue_declare(name, durable=True, **kw)
    conn.close()
    leader = f"amqpbroker@{node.node}"
    cluster.wait_until(lambda: all(queue_on(n, name).get("leader") == leader
                                   for n in cluster.nodes))


class Collector(threading.Thread):
    """A consumer on one node, in its own thread (pika's connections are not shared)."""

    def __init__(self, node, queue, expected_total, seen):
        super().__init__(daemon=True)
        self.node, self.queue, self.total, self.seen = node, queue, expected_total, seen
        self.bodies: list[int] = []
        self.ready = threading.Event()
        self.error = None

    def run(self):
        try:
            conn = connect(self.node)
            ch = conn.channel()
            ch.basic_qos(prefetch_count=20)

            def on_message(ch, method, props, body):
                self.bodies.append(int(body))
                self.seen.append(int(body))
                ch.basic_ack(method.delivery_tag)
            ch.basic_consume(self.queue, on_message)
            self.ready.set()
            while len(self.seen) < self.total:
                conn.process_data_events(time_limit=0.1)
            conn.close()
        except Exception as exc:        # reported by the test
            self.error = exc
            self.ready.set()


def test_publish_on_one_node_consume_on_two_others_every_message_once_in_order(cluster):
    n1, n2, n3 = cluster.nodes
    declare_led_by(cluster, n3, "fwd-work")
    seen: list[int] = []
    consumers = [Collector(n2, "fwd-work", 400, seen), Collector(n3, "fwd-work", 400, seen)]
    for c in consumers:
        c.start()
        assert c.ready.wait(10)
    conn = connect(n1)                  # neither the leader nor a consumer's node
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(400):                # each publish waits for its confirm (pika raises on
        ch.basic_publish("", "fwd-work", str(i).encode(),   # a nack)
                         pika.BasicProperties(delivery_mode=2), mandatory=True)
    conn.close()
    for c in consumers:
        c.join(30)
        assert c.error is None and not c.is_alive()
    assert sorted(seen) == list(range(400))             # every message, once
    for c in consumers:
        assert c.bodies == sorted(c.bodies)             # in publish order per consumer
    assert consumers[0].bodies, "the consumer on n2 got nothing: n2 did not forward"
    counts = cluster.wait_until(lambda: all(queue_on(n, "fwd-work").get("messages") == 0
                                            for n in cluster.nodes))
    assert counts


def test_get_purge_and_counts_on_any_node_are_the_leaders(cluster):
    n1, n2, n3 = cluster.nodes
    declare_led_by(cluster, n2, "fwd-get")
    conn = connect(n1)
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", "fwd-get", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()
    # /api/queues on every node shows the leader's count, not a copy of its own
    cluster.wait_until(lambda: all(queue_on(n, "fwd-get").get("messages") == 10
                                   for n in cluster.nodes))
    conn = connect(n3)
    ch = conn.channel()
    method, _, body = ch.basic_get("fwd-get", auto_ack=True)
    assert body == b"m0" and method.message_count == 9
    assert ch.queue_declare("fwd-get", passive=True).method.message_count == 9
    conn.close()
    conn = connect(n1)
    assert conn.channel().queue_purge("fwd-get").method.message_count == 9
    conn.close()
    cluster.wait_until(lambda: all(queue_on(n, "fwd-get").get("messages") == 0
                                   for n in cluster.nodes))
