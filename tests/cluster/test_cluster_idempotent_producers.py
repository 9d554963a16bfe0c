"""Idempotent producers across a failover (README "Idempotent producers", issue 12): a
producer's retry of a message the old leader confirmed is confirmed by the new leader and
not stored again. A follower copies the leader's records, not its producer state
(``producers.log``); the new leader rebuilds that state from its log's tail when it starts to
lead (``dedup.ProducerTable.catch_up``), as Kafka rebuilds producer state from the log.
Before, the retry was stored twice. Three real nodes, a real etcd, pika."""
import pika

from amqpbroker.testing import leaks
from amqpbroker.testing.cluster_clients import connect, declare_quorum, queue_on

DEADLINE = 60.0


def idempotent(seq: int) -> pika.BasicProperties:
    return pika.BasicProperties(delivery_mode=2,
                                headers={"x-producer-id": "producer-1", "x-sequence": seq})


def publish_until_confirmed(node, queue: str, seqs) -> None:
    """Publish each sequence until it is confirmed, as a client retries a nack or a broken
    connection (during a failover a node forwards to the old leader, or nacks)."""
    pending = list(seqs)

    def publish():
        conn = connect(node, timeout=10)
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            while pending:
                ch.basic_publish("", queue, b"m%d" % pending[0], idempotent(pending[0]))
                pending.pop(0)
            return True
        except (pika.exceptions.NackError, pika.exceptions.AMQPError):
            return False
        finally:
            if conn.is_open:
                conn.close()
    leaks.wait_until(publish, timeout=DEADLINE, what="every publish confirmed")


def test_a_retry_of_what_the_old_leader_confirmed_is_not_stored_again(cluster):
    leader = declare_quorum(cluster, "idem")
    other = next(n for n in cluster.nodes if n is not leader)
    publish_until_confirmed(other, "idem", range(1, 11))
    leader.kill()
    cluster.wait_until(lambda: queue_on(other, "idem").get("leader") not in
                       (None, f"amqpbroker@{leader.node}"), timeout=DEADLINE)
    # the producer never saw 10 confirmed (say its connection broke): it sends 10 again
    publish_until_confirmed(other, "idem", [10, 11])
    conn = connect(other)
    ch = conn.channel()
    bodies = []
    while True:
        method, _, body = ch.basic_get("idem", auto_ack=True)
        if method is None:
            break
        bodies.append(body)
    conn.close()
    assert bodies == [b"m%d" % s for s in range(1, 12)]
