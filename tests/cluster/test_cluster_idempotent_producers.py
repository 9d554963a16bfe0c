"""Idempotent producers across a failover (README "Idempotent producers", issue 12): a
producer's retry of a message the old leader confirmed is confirmed by the new leader and
not stored again. A follower copies the leader's records, not its producer state
(``producers.log``); the new leader rebuilds that state from its log's tail when it starts to
lead (``dedup.ProducerTable.catch_up``), as Kafka rebuilds producer state from the log.
Before, the retry was stored twice. Three real nodes, a real etcd, pika."""
import pika

from amqpbroker.testing import leaks
from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import connect, declare_quorum, drain, queue_on

DEADLINE = 60.0


def idempotent(seq: int) -> pika.BasicProperties:
    return pika.BasicProperties(delivery_mode=2,
                                headers={"x-producer-id": "producer-1", "x-sequence": seq})


def publish_until_confirmed(node, queue: str, seqs, size: int = 0) -> None:
    """Publish each sequence until it is confirmed, as a client retries a nack or a broken
    connection (during a failover a node forwards to the old leader, or nacks)."""
    pending = list(seqs)

    def publish():
        conn = connect(node, timeout=10)
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            while pending:
                body = b"m%d" % pending[0]
                ch.basic_publish("", queue, body.ljust(size, b"."), idempotent(pending[0]))
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
    count = conn.channel().queue_declare("idem", passive=True).method.message_count
    conn.close()
    assert [body for body, _ in drain(other, "idem", count)] == \
        [b"m%d" % s for s in range(1, 12)]


def test_the_producers_state_outlives_the_consumed_segments_it_came_from(tmp_path):
    """Small segments: the producer's messages are consumed and their segments deleted on
    every replica before the failover, so the new leader's log holds none of them. Its
    producer state came with the fetches (``FetchReply.producers``, its own
    ``producers.log``): the retry of the last one is still a duplicate. (Rebuilt from the
    log alone, it was stored again.)"""
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3,
                      args=("--segment-bytes", "4096")) as cluster:
        leader = declare_quorum(cluster, "idem-small")
        other = next(n for n in cluster.nodes if n is not leader)
        publish_until_confirmed(other, "idem-small", range(1, 6), size=1000)
        conn = connect(other)
        ch = conn.channel()
        ch.confirm_delivery()
        for _ in range(5):
            method, _, _ = ch.basic_get("idem-small")
            ch.basic_ack(method.delivery_tag)
        for i in range(6):          # a segment each: the producer's ones are not active
            ch.basic_publish("", "idem-small", b"filler" * 700,
                             pika.BasicProperties(delivery_mode=2))
        conn.close()
        cluster.wait_until(lambda: all(
            r["log_start_offset"] >= 5 for r in (n.api("partitions/%2F/idem-small")["replica"]
                                                 for n in cluster.nodes)), timeout=DEADLINE)
        leader.kill()
        cluster.wait_until(lambda: queue_on(other, "idem-small").get("leader") not in
                           (None, f"amqpbroker@{leader.node}"), timeout=DEADLINE)
        publish_until_confirmed(other, "idem-small", [5])      # a retry of the last one
        conn = connect(other)
        ch = conn.channel()
        assert ch.queue_declare("idem-small", passive=True).method.message_count == 6
        conn.close()
