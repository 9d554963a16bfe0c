"""The leader's fsync and its followers' overlap (docs/CLUSTER.md section 4, "Overlapped
fsyncs"): followers fetch what the leader has written, fsynced or not, and the high watermark
still counts the leader's own durable end, so nothing is confirmed before the leader's fsync.
Three real nodes, a real etcd, aiormq (its confirm is a future we can watch without waiting
on it) and the management API. The leader's fsync is held back by the queue's own policy:
``x-fsync=interval`` with an interval of an hour, so the leader writes at once and fsyncs
never during the test; then it is killed (SIGKILL)."""
import asyncio

import aiormq
import pytest
from pamqp import commands as spec

from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import declare_quorum, drain, queue_on

HOUR_MS = "3600000"


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3,
                      args=("--fsync-interval-ms", HOUR_MS), together=True) as c:
        yield c


def partition(node, queue):
    return node.api(f"partitions/%2F/{queue}")


async def wait_for(condition, timeout=20.0):
    """Poll ``condition`` (a blocking look at the management API) with a deadline, the
    client's loop running between looks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_a_record_the_followers_fetched_before_the_leaders_fsync_is_not_confirmed(cluster):
    leader = declare_quorum(cluster, "overlap", {"x-fsync": "interval"})
    followers = [n for n in cluster.nodes if n is not leader]

    async def publish_and_watch():
        conn = await aiormq.connect(leader.url)
        ch = await conn.channel()               # publisher confirms
        confirm = asyncio.ensure_future(ch.basic_publish(
            b"unsynced", routing_key="overlap",
            properties=spec.Basic.Properties(delivery_mode=2)))
        # written on the leader, not fsynced there (an hour's interval) ...
        await wait_for(lambda: partition(leader, "overlap")["log_end_offset"] == 1)
        assert partition(leader, "overlap")["durable_offset"] == 0
        # ... and yet both followers fetched it (served from the written log) ...
        await wait_for(lambda: all(partition(n, "overlap")["replica"]["log_end_offset"] == 1
                                   for n in followers))
        # ... and told the leader so with their next fetches: each of those moved the HW
        # as far as it may, which is not past the leader's own durable end
        await wait_for(lambda: all(
            f["log_end_offset"] == 1
            for f in partition(leader, "overlap")["replica"]["followers"].values()))
        replica = partition(leader, "overlap")["replica"]
        assert replica["high_watermark"] == 0
        # ahead of the leader's durable end is no lag (not -1)
        assert [f["lag"] for f in replica["followers"].values()] == [0, 0]
        assert not confirm.done(), confirm.result()
        leader.kill()                           # before it ever fsynced the record
        try:
            outcome = await asyncio.wait_for(confirm, 30)
        except Exception as exc:                # the connection died with the leader
            outcome = exc
        assert not isinstance(outcome, spec.Basic.Ack), "confirmed before the " \
            "leader's fsync"

    asyncio.run(publish_and_watch())
    # the new leader has the record (a follower fetched it): it may be delivered, flagged
    # (the old leader may have delivered it), though its publisher got no confirm
    cluster.wait_until(lambda: queue_on(followers[0], "overlap").get("leader") not in (
        None, f"amqpbroker@{leader.node}"), timeout=30)
    got = drain(followers[0], "overlap", 1)
    assert got == [(b"unsynced", True)]
