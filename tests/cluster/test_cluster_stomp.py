"""STOMP in a cluster (``--stomp-port`` on every node; amqpbroker/stomp): each node's STOMP
listener reaches the queues through its own AMQP listener, so a STOMP client on any node
meets the others: a quorum queue declared through one node is consumed through another, and
a durable topic subscription is picked up again through a third. Three real nodes, a real
etcd, stomp.py."""
import queue

from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.stomp_clients import Client


def test_stomp_clients_on_different_nodes_meet(tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3, together=True,
                      args=("--stomp-port", "-1")) as cluster:
        n1, n2, n3 = cluster.nodes
        made = []

        def client(node):
            made.append(Client((node.host, node.stomp_port)))
            return made[-1]
        try:
            worker = client(n2)
            worker.subscribe("/queue/stomp-jobs", "w", ack="client-individual",
                             **{"x-queue-type": "quorum"})
            producer = client(n1)
            producer.c.send("/queue/stomp-jobs", "job", headers={"persistent": "true",
                                                                 "x-queue-type": "quorum",
                                                                 "receipt": "r"})
            assert producer.receipt() == "r"         # confirmed by the queue's replicas
            m = worker.message()
            assert (m.body, m.headers["destination"]) == ("job", "/queue/stomp-jobs")
            worker.c.ack(m.headers["ack"])
            away = client(n2)
            away.subscribe("/topic/stomp.events", "keep", durable="true",
                           **{"auto-delete": "false"})
            away.close()
            producer.c.send("/topic/stomp.events", "while away", receipt="r2")
            assert producer.receipt() == "r2"
            back = client(n3)                         # another node
            back.subscribe("/topic/stomp.events", "keep", durable="true",
                           **{"auto-delete": "false"})
            try:
                m = back.message()
            except queue.Empty:
                raise AssertionError(("no message", [(n.node, n.api("queues"))
                                                     for n in (n1, n2, n3)])) from None
            assert (m.body, m.headers["destination"]) == ("while away", "/topic/stomp.events")
        finally:
            for c in made:
                c.close()
        queues = {q["name"]: q for q in n3.api("queues")}
        assert queues["stomp-jobs"]["type"] == "quorum"
