"""AMQP 1.0 in a cluster (amqpbroker/amqp10, on every node's AMQP port): a client of any node
reaches the queues through that node's own AMQP listener, so AMQP 1.0 clients on different
nodes meet at a quorum queue led by whichever node leads it, and what one accepts is gone for
all. Three real nodes, a real etcd, qpid-proton."""
import pika
from proton import Message
from proton.utils import BlockingConnection

from amqpbroker.testing.amqp10_clients import settle_modified
from amqpbroker.testing.cluster_clients import connect, declare_quorum, queue_on
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


def test_a_modified_outcomes_annotations_reach_the_leader_from_another_node(shared_cluster):
    """A ``modified`` outcome with message annotations settled on a node that does not lead
    the quorum queue: the settlement is forwarded to the leader (contract ``Modify``) and
    the redelivery carries the annotations."""
    from proton import symbol
    n1 = shared_cluster.nodes[0]
    with pika.BlockingConnection(pika.ConnectionParameters(n1.host, n1.port)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("amqp10-modified", durable=True, arguments={"x-queue-type": "quorum"})
        ch.basic_publish("", "amqp10-modified", b"m")
    leader = wait_until(lambda: n1.api("queues/%2F/amqp10-modified").get("leader"), 30,
                        "the queue's leader")
    leader = leader.removeprefix("amqpbroker@")        # RabbitMQ's form of a node name
    assert leader in {n.node for n in shared_cluster.nodes}
    follower = next(n for n in shared_cluster.nodes if n.node != leader)
    c = amqp10(follower)
    try:
        receiver = c.create_receiver("/amq/queue/amqp10-modified", credit=1)
        assert receiver.receive(timeout=20).body == b"m"
        settle_modified(receiver, {symbol("x-opt-reason"): "retry"})
        again = receiver.receive(timeout=20)
        receiver.accept()
    finally:
        c.close()
    assert again.body == b"m" and dict(again.annotations) == {symbol("x-opt-reason"): "retry"}
    with pika.BlockingConnection(pika.ConnectionParameters(n1.host, n1.port)) as conn:
        conn.channel().queue_delete("amqp10-modified")


def test_a_new_leader_delivers_a_message_with_its_modified_annotations(cluster):
    """The properties a ``modified`` outcome gave a quorum queue's message replicate with
    the partition (``FetchReply.modified``), as its delivery count does: after the leader
    dies, the new leader delivers the message with the annotations."""
    from proton import symbol
    leader = declare_quorum(cluster, "modified-failover", {})
    other = next(n for n in cluster.nodes if n is not leader)
    conn = connect(other)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", "modified-failover", b"m", pika.BasicProperties(delivery_mode=2))
    c = amqp10(other)
    try:
        receiver = c.create_receiver("/amq/queue/modified-failover", credit=1)
        assert receiver.receive(timeout=20).body == b"m"
        settle_modified(receiver, {symbol("x-opt-reason"): "retry"})
        again = receiver.receive(timeout=20)        # the leader took the outcome
        receiver.release(delivered=False)
    finally:
        c.close()
    assert dict(again.annotations) == {symbol("x-opt-reason"): "retry"}
    # confirmed once every follower fetched past it, with the properties set before it
    ch.basic_publish("", "modified-failover", b"marker", pika.BasicProperties(delivery_mode=2))
    conn.close()

    leader.kill()
    cluster.wait_until(lambda: queue_on(other, "modified-failover").get("leader") not in
                       (None, f"amqpbroker@{leader.node}"), timeout=60)

    def first():            # the new leader answers, the message first
        try:
            c = amqp10(other)
        except Exception:                           # noqa: BLE001 -- still moving
            return None
        try:
            receiver = c.create_receiver("/amq/queue/modified-failover", credit=1)
            m = receiver.receive(timeout=5)
            receiver.accept()
            return m
        except Exception:                           # noqa: BLE001 -- still moving
            return None
        finally:
            c.close()
    m = cluster.wait_until(first, timeout=60)
    assert m.body == b"m" and dict(m.annotations) == {symbol("x-opt-reason"): "retry"}
