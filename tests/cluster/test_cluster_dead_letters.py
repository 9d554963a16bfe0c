"""At-least-once dead letters of a replicated quorum queue (worker/discards.py) across a
failover: the held ones are marked in the queue's delivery-count log, which replicates with
the partition, so the new leader holds them too, and sends them once they have a route —
to a queue that may live on another node. Three real nodes, a real etcd, pika."""
import pika

from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import connect, declare_quorum, queue_on

DEADLINE = 60.0
HELD = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
        "x-dead-letter-exchange": "held-dlx"}


def test_a_new_leader_holds_the_dead_letters_and_sends_them(tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3, together=True,
                      args=("--dead-letter-confirm-timeout", "500")) as cluster:
        leader = declare_quorum(cluster, "held", HELD)
        other = next(n for n in cluster.nodes if n is not leader)
        conn = connect(other)
        ch = conn.channel()
        ch.confirm_delivery()
        for body in (b"d0", b"d1"):
            ch.basic_publish("", "held", body, pika.BasicProperties(delivery_mode=2))
        for _ in range(2):
            method, _, _ = ch.basic_get("held")
            ch.basic_reject(method.delivery_tag, requeue=False)     # no route: held
        # confirmed once every follower fetched past it, the rejects' marks before it
        ch.basic_publish("", "held", b"marker", pika.BasicProperties(delivery_mode=2))
        conn.close()
        cluster.wait_until(lambda: queue_on(other, "held").get("messages_dlx") == 2,
                           timeout=DEADLINE)

        leader.kill()
        cluster.wait_until(lambda: queue_on(other, "held").get("leader") not in
                           (None, f"amqpbroker@{leader.node}"), timeout=DEADLINE)
        cluster.wait_until(lambda: queue_on(other, "held").get("messages_dlx") == 2,
                           timeout=DEADLINE)
        conn = connect(other)
        ch = conn.channel()
        ch.exchange_declare("held-dlx", "fanout")
        ch.queue_declare("held-dlq", durable=True)
        ch.queue_bind("held-dlq", "held-dlx")
        got = []
        for method, props, body in ch.consume("held-dlq", inactivity_timeout=DEADLINE):
            assert method is not None, f"only {got} came"
            ch.basic_ack(method.delivery_tag)
            got.append((body, props.headers["x-death"][0]["reason"]))
            if len(got) == 2:
                break
        ch.cancel()
        assert got == [(b"d0", "rejected"), (b"d1", "rejected")]
        cluster.wait_until(lambda: queue_on(other, "held").get("messages_dlx") == 0,
                           timeout=DEADLINE)
        method, _, body = cluster.wait_until(
            lambda: (lambda r: r if r[0] is not None else None)(
                ch.basic_get("held", auto_ack=True)), timeout=DEADLINE)
        assert body == b"marker"
        conn.close()
