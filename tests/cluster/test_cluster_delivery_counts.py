"""A quorum queue's delivery counts across a failover (README "Quorum queues", issue 12): the
count of a message's returns (``x-delivery-count``, worker/quorum.py) replicates with the
partition, as the acks do (``FetchReply.counts``), so a new leader goes on counting where the
old one was and ``x-delivery-limit`` still bounds a poison message's deliveries. Before, a
follower never copied ``counts.log`` and a new leader counted from 0. Three real nodes, a
real etcd, pika."""
import pika

from amqpbroker.testing.cluster_clients import connect, declare_quorum, queue_on

DEADLINE = 60.0


def test_a_new_leader_goes_on_counting_returns_and_drops_past_the_limit(cluster):
    leader = declare_quorum(cluster, "counted", {"x-delivery-limit": 1})
    other = next(n for n in cluster.nodes if n is not leader)
    conn = connect(other)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", "counted", b"poison", pika.BasicProperties(delivery_mode=2))
    method, props, body = ch.basic_get("counted")
    assert body == b"poison" and not (props.headers or {}).get("x-delivery-count")
    ch.basic_reject(method.delivery_tag, requeue=True)             # its first return
    # confirmed once every follower fetched past it, with the count changed before it
    ch.basic_publish("", "counted", b"marker", pika.BasicProperties(delivery_mode=2))
    conn.close()

    leader.kill()
    cluster.wait_until(lambda: queue_on(other, "counted").get("leader") not in
                       (None, f"amqpbroker@{leader.node}"), timeout=DEADLINE)

    def ready():            # the new leader answers, with both messages
        c = connect(other)
        try:
            return c.channel().queue_declare("counted", passive=True).method.message_count == 2
        except pika.exceptions.ChannelClosedByBroker:   # still moving to the new leader
            return False
        finally:
            if c.is_open:
                c.close()
    cluster.wait_until(ready, timeout=DEADLINE)
    conn = connect(other)
    ch = conn.channel()
    method, props, body = ch.basic_get("counted")
    assert body == b"poison"
    assert (props.headers or {}).get("x-delivery-count") == 1      # the old leader's count
    ch.basic_reject(method.delivery_tag, requeue=True)             # its second: past 1
    # the next message is the marker (the poison was dropped), once the new leader's high
    # watermark passed it again (it rises as the other follower fetches from it)
    method, _, body = cluster.wait_until(
        lambda: (lambda r: r if r[0] is not None else None)(
            ch.basic_get("counted", auto_ack=True)), timeout=DEADLINE)
    assert body == b"marker"
    assert ch.basic_get("counted") == (None, None, None)
    conn.close()
