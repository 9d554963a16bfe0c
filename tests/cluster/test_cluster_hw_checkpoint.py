"""The high watermark checkpoint (issue 12, docs/CLUSTER.md section 4, cluster/checkpoint.py):
a node that restarts and still leads a quorum queue serves its consumers what was confirmed
before, at once, with no follower able to fetch from it (they are down), and a
single-replica queue on it still shows everything it stored. Three real nodes, a real
etcd, pika and the management API; the leader stops cleanly (SIGTERM), the followers are
killed (the worker-death case is tests/cluster/test_cluster_leader_worker_death.py)."""
import pika

from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import connect, declare_quorum, drain, queue_on

DEADLINE = 60.0


def publish_confirmed(node, queue, bodies):
    conn = connect(node)
    ch = conn.channel()
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    conn.close()


def declare_single_replica_on(cluster, node, prefix):
    """A replication-factor-1 quorum queue led by ``node`` (the controller places each new
    one: declared until one lands there)."""
    conn = connect(node)
    ch = conn.channel()
    try:
        for i in range(2 * len(cluster.nodes)):
            name = f"{prefix}-{i}"
            ch.queue_declare(name, durable=True, arguments={
                "x-queue-type": "quorum", "x-quorum-initial-group-size": 1})
            leader = cluster.wait_until(lambda: queue_on(node, name).get("leader"))
            if leader == f"amqpbroker@{node.node}":
                return name
    finally:
        conn.close()
    raise AssertionError(f"no single-replica queue placed on {node.node}")


def test_a_restarted_leader_serves_what_was_confirmed_with_no_follower_to_fetch(tmp_path):
    # a lag time longer than the test: the dead followers stay in the ISR, so no HW can
    # rise from fetches; without its checkpoint the leader would show nothing, ever
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3,
                      args=("--replica-lag-time", "60")) as cluster:
        name = "hwcp"
        leader = declare_quorum(cluster, name)
        single = declare_single_replica_on(cluster, leader, "hwcp-rf1")
        confirmed = [b"c%03d" % i for i in range(20)]
        publish_confirmed(leader, name, confirmed)
        publish_confirmed(leader, single, [b"s%d" % i for i in range(5)])
        for n in cluster.nodes:
            if n is not leader:
                n.kill()
        leader.stop()                   # a clean stop writes every HW (checkpoint.py)
        cluster.start_node(leader)

        def replica():
            return (leader.api(f"partitions/%2F/{name}") or {}).get("replica") or {}
        back = cluster.wait_until(lambda: (lambda r: r if r.get("role") == "leader"
                                           else None)(replica()), timeout=DEADLINE)
        # before any fetch (none can come): the checkpointed HW, not the log start
        assert back["high_watermark"] == 20 and back["log_end_offset"] == 20, back
        assert back["high_watermark_checkpoint"] == 20, back
        got = drain(leader, name, len(confirmed))
        assert [b for b, _ in got] == confirmed
        assert all(r for _, r in got)   # recovered after a restart: flagged
        # a single replica is no replicated partition: all it stored, as before
        assert [b for b, _ in drain(leader, single, 5)] == [b"s%d" % i for i in range(5)]
