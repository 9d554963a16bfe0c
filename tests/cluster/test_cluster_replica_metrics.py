"""Issue 12: the replication metrics (kafka_exporter's ``kafka_topic_partition_*`` and our
per-follower lag), scraped from a real 3-node cluster's ``/metrics``; and publishes waiting
on a high watermark that cannot move are nacked after ``--replica-confirm-timeout``."""
import asyncio
import os
import signal
import time
import urllib.request

import aiormq
import pytest
from pamqp import commands as spec
from prometheus_client.parser import text_string_to_metric_families

from amqpbroker.frontend.broker import worker_of
from amqpbroker.testing.cluster import LocalCluster

from test_cluster_replication import declare_quorum, drain, publish_confirmed, queue_on


def scrape(node) -> dict:
    """{(sample name, frozenset of labels): value} of the node's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.prometheus_port}/metrics",
                                timeout=10) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def sample(metrics: dict, name: str, **labels):
    return metrics.get((name, frozenset(labels.items())))


def started(n, args):
    cluster = LocalCluster(n, lease_ttl=15, args=args)
    for node in cluster.nodes:
        node.prometheus = True
    return cluster


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "workers"])
def test_replication_metrics_show_a_paused_follower_under_replicated_then_back(tmp_path,
                                                                              workers):
    """The leader serves the partition's replicas, ISR, leader and each follower's lag; a
    follower SIGSTOPped (with ``--workers 2``: the worker hosting the queue, while the
    supervisor serves ``/metrics`` and asks its worker) leaves the ISR after the 1 s lag
    time (under-replicated 1, its lag and seconds since its last fetch grow), and after
    SIGCONT it is back (0, lag 0). Only the leader reports the partition."""
    name = f"metrics-w{workers}"
    with started(3, ("--workers", str(workers), "--replica-lag-time", "1")) as cluster:
        leader = declare_quorum(cluster, name)
        stalled, other = [n for n in cluster.nodes if n is not leader]
        publish_confirmed(leader, name, [b"m%d" % i for i in range(10)])
        part = dict(vhost="/", topic=name, partition="0")

        def healthy():
            m = scrape(leader)
            return m if (sample(m, "kafka_topic_partition_in_sync_replica", **part) == 3
                         and sample(m, "amqpbroker_replica_lag_messages", **part,
                                    replica=stalled.node) == 0) else None
        m = cluster.wait_until(healthy)
        assert sample(m, "kafka_topic_partition_replicas", **part) == 3
        assert sample(m, "kafka_topic_partition_under_replicated_partition", **part) == 0
        assert sample(m, "kafka_topic_partition_leader", **part, leader=leader.node) in (0, 1, 2)
        for f in (stalled, other):
            assert sample(m, "amqpbroker_replica_in_sync", **part, replica=f.node) == 1
            assert 0 <= sample(m, "amqpbroker_replica_last_fetch_seconds", **part,
                               replica=f.node) < 5
        for n in (stalled, other):          # followers do not report the partition
            assert sample(scrape(n), "kafka_topic_partition_replicas", **part) is None

        pid = (stalled.worker_pids[worker_of("/", name, workers)] if workers
               else stalled.proc.pid)
        os.kill(pid, signal.SIGSTOP)
        try:
            publish_confirmed(leader, name, [b"while paused %d" % i for i in range(5)])
            m = cluster.wait_until(lambda: (lambda m: m if sample(
                m, "kafka_topic_partition_under_replicated_partition", **part) == 1
                else None)(scrape(leader)))
            assert sample(m, "kafka_topic_partition_in_sync_replica", **part) == 2
            assert sample(m, "amqpbroker_replica_in_sync", **part, replica=stalled.node) == 0
            assert sample(m, "amqpbroker_replica_lag_messages", **part,
                          replica=stalled.node) == 5
            assert sample(m, "amqpbroker_replica_lag_messages", **part, replica=other.node) == 0
            assert sample(m, "amqpbroker_replica_last_fetch_seconds", **part,
                          replica=stalled.node) >= 1
        finally:
            os.kill(pid, signal.SIGCONT)
        m = cluster.wait_until(lambda: (lambda m: m if sample(
            m, "kafka_topic_partition_under_replicated_partition", **part) == 0
            else None)(scrape(leader)), timeout=60)
        assert sample(m, "kafka_topic_partition_in_sync_replica", **part) == 3
        assert sample(m, "amqpbroker_replica_lag_messages", **part, replica=stalled.node) == 0
        assert len(drain(leader, name, 15)) == 15


async def _publish_outcome(url: str, queue: str, body: bytes, within: float):
    """Publish one persistent message with confirms: "ack" or "nack", and the seconds it
    took; raises TimeoutError if the broker answers neither ``within`` seconds."""
    conn = await aiormq.connect(url)
    try:
        ch = await conn.channel()
        t = time.monotonic()
        try:
            r = await asyncio.wait_for(ch.basic_publish(
                body, routing_key=queue, properties=spec.Basic.Properties(delivery_mode=2)),
                within)
        except aiormq.exceptions.DeliveryError:       # aiormq's way of saying nack
            return "nack", time.monotonic() - t
        assert isinstance(r, spec.Basic.Ack), r
        return "ack", time.monotonic() - t
    finally:
        await conn.close()


def publish_outcome(node, queue, body, within=30.0):
    return asyncio.run(_publish_outcome(node.url, queue, body, within))


def test_publishes_waiting_on_a_high_watermark_that_cannot_move_are_nacked_after_the_timeout(
        tmp_path):
    """Both followers paused: a publish is accepted (the ISR is still whole), then the ISR
    falls to the leader alone (lag time 1 s) below min-insync 2, so the high watermark
    cannot pass it: it is nacked after ``--replica-confirm-timeout`` (3 s), not never (this
    test gives up after 30 s). New publishes meanwhile are nacked at once; after SIGCONT
    publishes are confirmed again."""
    with started(3, ("--replica-lag-time", "1", "--replica-confirm-timeout", "3")) as cluster:
        leader = declare_quorum(cluster, "timeout-q")
        followers = [n for n in cluster.nodes if n is not leader]
        publish_confirmed(leader, "timeout-q", [b"first"])
        for f in followers:
            os.kill(f.proc.pid, signal.SIGSTOP)
        try:
            outcome, waited = publish_outcome(leader, "timeout-q", b"stuck")
            assert outcome == "nack" and waited >= 3 - 0.1
            cluster.wait_until(lambda: len(queue_on(leader, "timeout-q")["isr"]) == 1)
            outcome, waited = publish_outcome(leader, "timeout-q", b"refused")
            assert outcome == "nack" and waited < 3
        finally:
            for f in followers:
                os.kill(f.proc.pid, signal.SIGCONT)
        cluster.wait_until(lambda: len(queue_on(leader, "timeout-q").get("isr", ())) == 3,
                           timeout=60)
        assert publish_outcome(leader, "timeout-q", b"after")[0] == "ack"
        # as Kafka's timed-out produce: the nacked message stayed in the log and the HW
        # passed it once the followers were back; the refused one was never stored
        assert [b for b, _ in drain(leader, "timeout-q", 3)] == [b"first", b"stuck", b"after"]


