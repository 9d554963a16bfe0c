"""Forwarding (docs/CLUSTER.md section 3, issue 12 step 4): a client on any node uses any
queue; the node forwards to the partition's leader over the cluster link and back. Three real
nodes, a real etcd, pika and the management API."""
import threading
import time

import pika
import pytest

from amqpbroker.testing.cluster_clients import connect, queue_on


def declare_led_by(cluster, node, name, **kw):
    """Declare classic queue ``name`` on ``node`` (which then leads it) and wait until every
    node forwards to it."""
    conn = connect(node)
    conn.channel().queue_declare(name, durable=True, **kw)
    conn.close()
    leader = f"amqpbroker@{node.node}"
    cluster.wait_until(lambda: all(queue_on(n, name).get("leader") == leader
                                   for n in cluster.nodes))


def pump_until(conn, condition, timeout=30.0):
    """Let pika handle what arrives until ``condition()`` holds (else fail)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met within the timeout"
        conn.process_data_events(time_limit=0.1)


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
            pump_until(conn, lambda: len(self.seen) >= self.total)
            conn.close()
        except Exception as exc:        # reported by the test
            self.error = exc
            self.ready.set()


def test_publish_on_one_node_consume_on_two_others_every_message_once_in_order(
        shared_cluster):
    cluster = shared_cluster
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


def test_get_purge_and_counts_on_any_node_are_the_leaders(shared_cluster):
    cluster = shared_cluster
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


def test_the_leader_lost_nacks_and_cancels_then_forwarding_resumes_when_it_returns(
        restored_cluster):
    cluster = restored_cluster
    n1, n2, n3 = cluster.nodes
    declare_led_by(cluster, n3, "fwd-loss")
    pub = connect(n1)
    pch = pub.channel()
    pch.confirm_delivery()
    for i in range(5):
        pch.basic_publish("", "fwd-loss", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    conn = connect(n2)
    ch = conn.channel()
    got, cancelled = [], []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume("fwd-loss", lambda ch, m, p, body: got.append(body))  # never acked
    pump_until(conn, lambda: len(got) == 5)
    assert got == [f"m{i}".encode() for i in range(5)]

    n3.kill()                           # SIGKILL: the link from n1 and n2 breaks
    pump_until(conn, lambda: cancelled)     # consumer-cancel-notify: the client knows
    assert cancelled == [tag]
    with pytest.raises(pika.exceptions.NackError):      # not stored anywhere: nacked
        pch.basic_publish("", "fwd-loss", b"lost", pika.BasicProperties(delivery_mode=2))
    pub.close()

    cluster.start_node(n3)              # back: the links are dialled again, queues reopened
    # the five were unacked when n3 died: ready again, counted by n3 whichever node asks
    cluster.wait_until(lambda: all(queue_on(n, "fwd-loss").get("messages") == 5
                                   for n in cluster.nodes), timeout=60)
    got.clear()
    ch.basic_consume("fwd-loss", lambda ch, m, p, body: (got.append(body),
                                                         ch.basic_ack(m.delivery_tag)))
    pump_until(conn, lambda: len(got) == 5)
    assert got == [f"m{i}".encode() for i in range(5)]
    conn.close()
    pub = connect(n1)
    pch = pub.channel()
    pch.confirm_delivery()
    pch.basic_publish("", "fwd-loss", b"after", pika.BasicProperties(delivery_mode=2))
    pub.close()
    cluster.wait_until(lambda: queue_on(n3, "fwd-loss").get("messages") == 1)


def test_forwarding_follows_the_new_leader_of_a_quorum_queue(restored_cluster):
    cluster = restored_cluster
    n1 = cluster.nodes[0]
    conn = connect(n1)
    conn.channel().queue_declare("fwd-quorum", durable=True,
                                 arguments={"x-queue-type": "quorum"})
    conn.close()
    leader = cluster.wait_until(lambda: (lambda ls: ls.pop() if len(ls) == 1 and None not in ls
                                         else None)(
        {queue_on(n, "fwd-quorum").get("leader") for n in cluster.nodes}))
    old = cluster.node(leader.split("@")[1])
    publisher, getter = [n for n in cluster.nodes if n is not old]
    old.kill()
    new = cluster.wait_until(lambda: all(
        queue_on(n, "fwd-quorum").get("leader") not in (None, leader)
        for n in (publisher, getter)) and queue_on(publisher, "fwd-quorum")["leader"])
    assert new in (f"amqpbroker@{publisher.node}", f"amqpbroker@{getter.node}")
    assert queue_on(getter, "fwd-quorum")["leader"] == new
    conn = connect(publisher)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", "fwd-quorum", b"to the new leader",
                     pika.BasicProperties(delivery_mode=2))
    conn.close()
    conn = connect(getter)              # one of the two forwards to the other
    _, _, body = conn.channel().basic_get("fwd-quorum", auto_ack=True)
    assert body == b"to the new leader"
    conn.close()


def test_a_publish_right_after_declare_ok_goes_to_the_leader_the_controller_chose(cluster):
    """The declare waits for the placement: the publish that follows declare-ok on the same
    connection goes to the leader, not to the declaring node's idle copy."""
    n1, n2, n3 = cluster.nodes
    conn = connect(n3)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("fwd-fresh", durable=True, arguments={"x-queue-type": "quorum"})
    ch.basic_publish("", "fwd-fresh", b"first", pika.BasicProperties(delivery_mode=2))
    conn.close()
    leader = queue_on(n3, "fwd-fresh")["leader"]
    assert leader == "amqpbroker@n1"        # the first leadership goes to n1 (ties by name)
    conn = connect(n1)
    _, _, body = conn.channel().basic_get("fwd-fresh", auto_ack=True)
    assert body == b"first"
    conn.close()


# ------------------------------------------------------------ process layouts
# The same tests on nodes whose queues live in worker processes and whose connections are
# served by front-end processes (the layout of a machine with 4 CPUs or more), and on a mixed
# cluster (n1 one process, n2 and n3 with workers and front-ends): a front-end forwards, and
# a worker's queues are reached from other nodes (docs/CLUSTER.md "As built (layouts)").
# (the ``layout_cluster`` fixture: tests/cluster/conftest.py)


def test_in_every_layout_publish_on_one_node_consume_on_two_others(shared_layout_cluster):
    test_publish_on_one_node_consume_on_two_others_every_message_once_in_order(
        shared_layout_cluster)


def test_in_every_layout_forwarding_goes_both_ways_between_two_nodes(shared_layout_cluster):
    """n1 reaches n2's queue and n2 reaches n1's: the two directions of one pair, each node's
    front-ends the caller, each node's workers the leader's end."""
    layout_cluster = shared_layout_cluster
    n1, n2, _ = layout_cluster.nodes
    for leader, caller, name in ((n1, n2, "fwd-lay-a"), (n2, n1, "fwd-lay-b")):
        declare_led_by(layout_cluster, leader, name)
        for _ in range(3):              # three connections: both front-ends, most likely
            conn = connect(caller)
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish("", name, b"x", pika.BasicProperties(delivery_mode=2),
                             mandatory=True)
            conn.close()
        layout_cluster.wait_until(lambda: queue_on(leader, name).get("messages") == 3)
        conn = connect(caller)
        ch = conn.channel()
        got = [ch.basic_get(name, auto_ack=True)[2] for _ in range(3)]
        conn.close()
        assert got == [b"x"] * 3
        assert queue_on(leader, name).get("messages") == 0


def test_in_every_layout_forwarding_follows_the_new_leader_of_a_quorum_queue(
        restored_layout_cluster):
    test_forwarding_follows_the_new_leader_of_a_quorum_queue(restored_layout_cluster)
