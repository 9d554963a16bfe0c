"""A replicated queue's leadership moves while every node and every cluster link stays up
(issue 12, the checker's "stalled" finding): the consumers of every node, those forwarded
to the old leader and those on it, get ``basic.cancel``, resubscribe, and are served by the
new leader; what they held unacked comes back from it, flagged ``redelivered``. Three real
nodes, a real etcd, pika with consumer-cancel-notify."""
import time

import pika

from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import connect

LEASE_TTL = 3


def placed(node, queue):
    for q in node.api("queues"):
        if q["name"] == queue and q.get("leader"):
            return {"leader": q["leader"].split("@", 1)[1],
                    "members": [m.split("@", 1)[1] for m in q["members"]],
                    "isr": [m.split("@", 1)[1] for m in q["isr"]]}
    return None


class Consumer:
    """A pika consumer on one node that records deliveries and broker cancels, and
    subscribes again after a cancel (as the checker's clients do)."""

    def __init__(self, node, queue):
        self.node, self.queue = node, queue
        self.conn = connect(node)
        self.ch = self.conn.channel()
        self.cancels = 0
        self.bodies: list[bytes] = []       # acked
        self.held: list[bytes] = []         # delivered, left unacked (``holding``)
        self.redelivered: list[bytes] = []
        self.holding = True
        self.ch.add_on_cancel_callback(self._cancelled)
        self.subscribe()

    def subscribe(self):
        self.ch.basic_consume(self.queue, self._on_message)

    def _cancelled(self, _frame):
        self.cancels += 1

    def _on_message(self, ch, method, _props, body):
        if method.redelivered:
            self.redelivered.append(body)
        if self.holding:
            self.held.append(body)
            return
        self.bodies.append(body)
        ch.basic_ack(method.delivery_tag)

    def pump(self):
        self.conn.process_data_events(time_limit=0.05)


def pump_all(consumers, condition, timeout=30.0):
    """Let every consumer's connection handle what arrives until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, \
            [(c.node.node, c.cancels, c.bodies) for c in consumers]
        for c in consumers:
            c.pump()


def publish_confirmed(node, queue, bodies):
    conn = connect(node)
    ch = conn.channel()
    ch.confirm_delivery()
    for b in bodies:
        ch.basic_publish("", queue, b, pika.BasicProperties(delivery_mode=2), mandatory=True)
    conn.close()


def test_consumers_everywhere_are_cancelled_when_the_leader_moves_with_links_up(tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=LEASE_TTL,
                      together=True) as cluster:
        n1 = cluster.nodes[0]
        conn = connect(n1)
        conn.channel().queue_declare("moving-leader", durable=True, arguments={
            "x-queue-type": "quorum", "x-quorum-initial-group-size": 3})
        conn.close()
        before = cluster.wait_until(lambda: (lambda p: p if p and len(p["isr"]) == 3
                                             else None)(placed(n1, "moving-leader")))
        cluster.wait_until(lambda: all(placed(n, "moving-leader") == before
                                       for n in cluster.nodes))
        old = before["leader"]
        consumers = [Consumer(n, "moving-leader") for n in cluster.nodes]
        leader = cluster.node(old)
        pump_all(consumers, lambda: {q["name"]: q for q in leader.api("queues")}[
            "moving-leader"].get("consumers") == 3)

        # messages the consumers hold unacked when the leader moves
        publish_confirmed(n1, "moving-leader", [b"held-%d" % i for i in range(3)])
        pump_all(consumers, lambda: sum(len(c.held) for c in consumers) == 3)

        # the same replicas, another first: the controller makes it the leader (preferred)
        new = next(n for n in before["members"] if n != old)
        target = [new] + [n for n in before["members"] if n != new]
        status, body = n1.request("PUT", "reassignments/%2F/moving-leader",
                                  {"replicas": target})
        assert status == 202, body
        cluster.wait_until(lambda: all((placed(n, "moving-leader") or {}).get("leader") == new
                                       for n in cluster.nodes))

        # every consumer hears of the move (no node died, no link broke)
        pump_all(consumers, lambda: all(c.cancels == 1 for c in consumers))
        for c in consumers:
            c.holding = False
            c.subscribe()
        publish_confirmed(cluster.nodes[2], "moving-leader", [b"after-%d" % i for i in range(6)])
        # what was held comes back from the new leader, flagged; everything else once
        pump_all(consumers, lambda: sum(len(c.bodies) for c in consumers) == 9)
        got = sorted(b for c in consumers for b in c.bodies)
        assert got == [b"after-%d" % i for i in range(6)] + [b"held-%d" % i for i in range(3)]
        assert sorted(b for c in consumers for b in c.redelivered) == [
            b"held-%d" % i for i in range(3)]
        for c in consumers:
            c.conn.close()
