"""The event exchange in a cluster (``--event-exchange`` on every node; frontend/events.py):
a change made through one node is published once, by that node, not again by the nodes that
apply it from etcd; a client's connection events come from the node it is connected to.
Three real nodes, a real etcd, pika."""
from collections import Counter

from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import connect


def test_each_change_is_published_once_by_the_node_that_made_it(tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3, together=True,
                      args=("--event-exchange",)) as cluster:
        n1, n2, n3 = cluster.nodes
        listen = connect(n1)
        ch = listen.channel()
        q = ch.queue_declare("ev-listener", durable=True).method.queue
        ch.queue_bind(q, "amq.rabbitmq.event", "queue.*")
        ch.queue_bind(q, "amq.rabbitmq.event", "connection.*")
        ch.queue_bind(q, "amq.rabbitmq.event", "exchange.*")
        for node, name in ((n2, "ev-two"), (n3, "ev-three")):
            conn = connect(node)
            conn.channel().queue_declare(name, durable=True)
            conn.channel().exchange_declare(name, "fanout", durable=True)
            conn.close()
        conn = connect(n3)
        conn.channel().queue_delete("ev-two")       # made on n2, deleted through n3
        conn.close()
        want = Counter({("queue.created", "ev-two"): 1, ("queue.created", "ev-three"): 1,
                        ("exchange.created", "ev-two"): 1, ("exchange.created", "ev-three"): 1,
                        ("queue.deleted", "ev-two"): 1,
                        ("connection.created", n2.port): 1, ("connection.closed", n2.port): 1,
                        ("connection.created", n3.port): 2, ("connection.closed", n3.port): 2})
        got = Counter()
        for method, props, _ in ch.consume(q, auto_ack=True, inactivity_timeout=30):
            assert method is not None, f"only {got} came"
            name = props.headers["name"]
            key = (method.routing_key, int(name.rsplit(":", 1)[1])
                   if method.routing_key.startswith("connection.") else name)
            got[key] += 1
            if sum(got.values()) == sum(want.values()):
                break
        ch.cancel()
        assert got == want
        # nothing more: no node published the others' changes again
        assert ch.queue_declare(q, passive=True).method.message_count == 0
        listen.close()
