"""AMQP 1.0 in a cluster (amqpbroker/amqp10, on every node's AMQP port): a client of any node
reaches the queues through that node's own AMQP listener, so AMQP 1.0 clients on different
nodes meet at a quorum queue led by whichever node leads it, and what one accepts is gone for
all. Three real nodes, a real etcd, qpid-proton."""
import pika
from proton import Message
from proton.utils import BlockingConnection

from amqpbroker.testing.leaks import wait_until


def amqp10(node) -> BlockingConnection:
    return BlockingConnection(f"amqp://guest:guest@{node.host}:{node.port}", timeout=20,
                              allowed_mechs="PLAIN")


def test_amqp10_clients_on_different_nodes_meet_at_a_quorum_queue(shared_cluster):
    n1, n2, n3 = shared_cluster.nodes
    with pika.BlockingConnection(pika.ConnectionParameters(n1.host, n1.port)) as conn:
        conn.channel().queue_declare("amqp10-jobs", durable=True,
                                     arguments={"x-queue-type": "quorum"})
    producer, consumer = amqp10(n2), amqp10(n3)
    try:
        sender = producer.create_sender("/amq/queue/amqp10-jobs")
        for i in range(5):                  # unsettled: accepted once the replicas have it
            sender.send(Message(body=f"job {i}", durable=True))
        receiver = consumer.create_receiver("/amq/queue/amqp10-jobs", credit=5)
        got = []
        for _ in range(5):
            got.append(receiver.receive(timeout=20).body)
            receiver.accept()
        assert got == [f"job {i}" for i in range(5)]
        consumer.create_sender("/amq/queue/amqp10-jobs", name="flush").close()
    finally:
        producer.close()
        consumer.close()
    # ready and unacknowledged together: accepts lost would leave the five (requeued)
    wait_until(lambda: n1.api("queues/%2F/amqp10-jobs").get("messages") == 0, 30,
               "the accepted jobs gone, as n1 counts them")
    with pika.BlockingConnection(pika.ConnectionParameters(n1.host, n1.port)) as conn:
        conn.channel().queue_delete("amqp10-jobs")
