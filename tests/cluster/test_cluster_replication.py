"""Replication (docs/CLUSTER.md section 4, issue 12 step 5): followers fetch from the leader,
confirms wait for the high watermark, too few in-sync replicas nack, acks replicate. Three
real nodes, a real etcd, pika and the management API; the leader is killed with SIGKILL."""
import asyncio
import glob
import os
import signal

import aiormq
import pika
import pytest

from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import (
    connect, declare_quorum, drain, publish_confirmed, queue_dir, queue_on)


# the first three tests share the module's cluster (``restored_cluster``: the nodes they
# kill are started again after them); each has a queue of its own


def test_confirmed_messages_survive_the_leader_killed_in_order_and_acked_ones_stay_gone(
        restored_cluster):
    cluster = restored_cluster
    leader = declare_quorum(cluster, "repl-kill")
    others = [n for n in cluster.nodes if n is not leader]
    bodies = [b"m%04d" % i for i in range(200)]
    confirmed = publish_confirmed(others[0], "repl-kill", bodies)
    assert confirmed == bodies
    # consume and ack the first 50 through the leader; a confirmed publish after the acks
    # (same connection order at the leader) means a fetch past them carried the acks too
    conn = connect(leader)
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(50):
        method, _, body = ch.basic_get("repl-kill", auto_ack=False)
        assert body == bodies[i]
        ch.basic_ack(method.delivery_tag)
    # 10 delivered and not acked: they come back after the failover, flagged
    for i in range(50, 60):
        method, _, body = ch.basic_get("repl-kill", auto_ack=False)
        assert body == bodies[i]
    ch.basic_publish("", "repl-kill", b"after-acks", pika.BasicProperties(delivery_mode=2))
    confirmed.append(b"after-acks")
    leader.kill()
    new = cluster.wait_until(lambda: (lambda q: q.get("leader") not in (
        None, f"amqpbroker@{leader.node}") and q["leader"])(queue_on(others[1], "repl-kill")))
    assert new in {f"amqpbroker@{n.node}" for n in others}
    got = drain(others[1], "repl-kill", len(confirmed) - 50)
    assert [b for b, _ in got] == confirmed[50:]
    assert all(r for b, r in got[:10])      # delivered before the kill: flagged
    assert drain(others[0], "repl-kill", 1) == []


def test_publishes_with_too_few_in_sync_replicas_are_nacked(restored_cluster):
    cluster = restored_cluster
    leader = declare_quorum(cluster, "repl-minisr")
    assert publish_confirmed(leader, "repl-minisr", [b"ok"]) == [b"ok"]
    for n in cluster.nodes:
        if n is not leader:
            n.kill()
    # the controller drops the dead followers from the ISR: 1 < min_isr 2
    cluster.wait_until(lambda: len(queue_on(leader, "repl-minisr").get("isr", ())) == 1,
                       timeout=60)
    conn = connect(leader)
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "repl-minisr", b"refused", pika.BasicProperties(delivery_mode=2))
    conn.close()
    got = drain(leader, "repl-minisr", 2)
    assert [b for b, _ in got] == [b"ok"]


def test_node_is_quorum_critical_names_the_queues_a_stop_would_take_below_min_isr(
        restored_cluster):
    """RabbitMQ's pre-upgrade check (``/api/health/checks/node-is-quorum-critical``): with
    all three replicas in sync no node is critical (min ISR 2); with one killed and out of
    the ISR, stopping either of the two left would take the queue below 2: both say so."""
    cluster = restored_cluster
    leader = declare_quorum(cluster, "repl-critical")
    check = "health/checks/node-is-quorum-critical"
    for n in cluster.nodes:
        assert n.request("GET", check) == (200, {"status": "ok"}), n.node
    victim = next(n for n in cluster.nodes if n is not leader)
    victim.kill()
    cluster.wait_until(lambda: len(queue_on(leader, "repl-critical").get("isr", ())) == 2,
                       timeout=60)
    for n in cluster.nodes:
        if n is victim:
            continue
        status, body = cluster.wait_until(lambda: (lambda a: a if a[0] == 503 else None)(
            n.request("GET", check)))
        assert body["reason"] == ("There are quorum queues that would lose their quorum if "
                                  "the target node is shut down")
        assert {"name": "repl-critical", "virtual_host": "/", "type": "quorum",
                "readable_name": "queue 'repl-critical' in vhost '/'"} in body["queues"]


def test_a_client_of_a_stopping_leader_gets_320_before_the_node_leaves_and_keeps_its_confirms(
        restored_cluster):
    """SIGTERM to the leader's node while its client keeps 50 confirmed publishes in
    flight: the node closes its AMQP side first (320 CONNECTION_FORCED, RabbitMQ's wording
    for a shutdown) and leaves the cluster after. When it left first, the client stayed
    connected to a node that no longer led: what waited for the HW then was nacked. Now
    nothing is nacked, and every confirmed message is served by the new leader, in order."""
    cluster = restored_cluster
    leader = declare_quorum(cluster, "repl-stop-320")
    other = next(n for n in cluster.nodes if n is not leader)

    async def publish_until_closed():
        conn = await aiormq.connect(leader.url)
        closing = conn.closing          # an observer of the close, and what closed it
        ch = await conn.channel(publisher_confirms=True)
        confirmed, nacked, sent, ended = [], [], 0, False
        window: list[tuple[bytes, asyncio.Future]] = []
        while not ended:
            while len(window) < 50 and not closing.done():
                body = b"s%05d" % sent
                sent += 1
                window.append((body, asyncio.ensure_future(ch.basic_publish(
                    body, routing_key="repl-stop-320",
                    properties=aiormq.spec.Basic.Properties(delivery_mode=2)))))
            if not window:
                break
            body, answer = window.pop(0)
            try:
                await answer
                confirmed.append(body)
                if len(confirmed) == 200:
                    leader.proc.send_signal(signal.SIGTERM)
            except aiormq.exceptions.DeliveryError:
                nacked.append(body)
            except (aiormq.exceptions.AMQPError, ConnectionError, asyncio.CancelledError):
                if not closing.done() and not conn.is_closed:
                    raise       # not the connection's close (or this test's own timeout)
                ended = True
            assert sent < 200_000, "the stopping node never closed the connection"
        for _, answer in window:
            answer.cancel()
        await asyncio.wait({closing}, timeout=30)
        closed = closing.exception() if closing.done() and not closing.cancelled() else None
        return confirmed, nacked, closed

    try:
        confirmed, nacked, closed = asyncio.run(asyncio.wait_for(publish_until_closed(), 120))
    finally:    # the shutdown SIGTERM began, finished (a failure leaves no node half-stopped)
        stopped = leader.stop()
    assert nacked == []
    assert isinstance(closed, aiormq.exceptions.ConnectionClosed), closed
    assert (closed.errno, closed.strerror) == (
        320, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")
    assert stopped == 0
    cluster.wait_until(lambda: queue_on(other, "repl-stop-320").get("leader") not in (
        None, f"amqpbroker@{leader.node}"))
    got = [b for b, _ in drain(other, "repl-stop-320", len(confirmed) + 50)]
    # the publishes unanswered when the connection closed may or may not have been stored
    assert got[:len(confirmed)] == confirmed


def test_a_followers_log_is_byte_identical_to_the_leaders(shared_cluster):
    cluster = shared_cluster
    leader = declare_quorum(cluster, "repl-bytes")
    bodies = [os.urandom(100 + i) for i in range(300)]
    publish_confirmed(leader, "repl-bytes", bodies[:150])
    publish_confirmed(cluster.nodes[2] if leader is not cluster.nodes[2] else cluster.nodes[1],
                      "repl-bytes", bodies[150:])

    def segment_bytes(node):
        d = queue_dir(node, "repl-bytes")
        out = b""
        for p in sorted(glob.glob(os.path.join(d, "*.log"))):
            if os.path.basename(p)[0].isdigit():
                with open(p, "rb") as f:
                    out += f.read()
        return out
    want = segment_bytes(leader)
    assert len(want) > sum(len(b) for b in bodies)
    for n in cluster.nodes:
        if n is not leader:     # every follower reaches the leader's end (all confirmed)
            cluster.wait_until(lambda: segment_bytes(n) == want)

    # /api/partitions: each node's replica, the same high watermark and checksum up to it
    def replicas():
        return [n.api("partitions/%2F/repl-bytes")["replica"] for n in cluster.nodes]
    seen = cluster.wait_until(lambda: (lambda rs: rs if len(
        {(r["high_watermark"], r["crc32c"]) for r in rs}) == 1 else None)(replicas()))
    assert {r["high_watermark"] for r in seen} == {300}
    lead = next(r for r in seen if r["role"] == "leader")
    assert lead["node"] == leader.node and sorted(lead["isr"]) == ["n1", "n2", "n3"]
    assert all(f["in_sync"] and f["lag"] == 0 for f in lead["followers"].values())
    assert sorted(r["role"] for r in seen) == ["follower", "follower", "leader"]

    # RabbitMQ 3.13's quorum queue status, the same from every node (the leader's)
    def status(node):
        return node.request("GET", "queues/quorum/%2F/repl-bytes/status")[1]
    members = cluster.wait_until(lambda: (lambda m: m if all(
        x["Last Log Index"] == 300 for x in m) else None)(status(leader)))
    assert [(m["Node Name"], m["Membership"], m["Commit Index"], m["Term"]) for m in members] \
        == [(f"amqpbroker@n{i}", "voter", 300, lead["leader_epoch"]) for i in (1, 2, 3)]
    assert [m["Node Name"] for m in members if m["Raft State"] == "leader"] == [
        f"amqpbroker@{leader.node}"]
    for n in cluster.nodes:
        assert status(n) == members


def test_a_stalled_follower_leaves_the_isr_after_the_lag_time_and_returns_caught_up(tmp_path):
    """SIGSTOP a follower: the leader removes it from the ISR after ``--replica-lag-time``
    (1 s here, far inside the 15 s lease: the controller does not see it dead), confirms go
    on with the other follower; after SIGCONT it catches up and the leader adds it back."""
    import signal
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=15,
                      args=("--replica-lag-time", "1"), together=True) as cluster:
        leader = declare_quorum(cluster, "repl-lag")
        stalled, other = [n for n in cluster.nodes if n is not leader]
        publish_confirmed(leader, "repl-lag", [b"before"])
        os.kill(stalled.proc.pid, signal.SIGSTOP)
        try:
            # a publish now waits for the stalled follower until the leader drops it
            publish_confirmed(other, "repl-lag", [b"while stalled"])
            isr = queue_on(leader, "repl-lag")["isr"]
            assert f"amqpbroker@{stalled.node}" not in isr and len(isr) == 2
            # the leader's doing, not the controller's: the stalled node is still a member
            assert stalled.node in {n["node_name"] for n in leader.api("nodes")}
        finally:
            os.kill(stalled.proc.pid, signal.SIGCONT)
        cluster.wait_until(lambda: len(queue_on(leader, "repl-lag").get("isr", ())) == 3)
        got = drain(stalled, "repl-lag", 2)
        assert [b for b, _ in got] == [b"before", b"while stalled"]


# ------------------------------------------------------------ process layouts
# Replication where the replicas' queues live in worker processes (followers fetch from a
# worker, the leader's HW and confirms in a worker) and clients are served by front-end
# processes; and a mixed cluster (docs/CLUSTER.md "As built (layouts)").
# (the ``layout_cluster`` fixture: tests/cluster/conftest.py)


def test_in_every_layout_confirmed_messages_survive_the_leader_killed(restored_layout_cluster):
    test_confirmed_messages_survive_the_leader_killed_in_order_and_acked_ones_stay_gone(
        restored_layout_cluster)


def test_in_every_layout_publishes_with_too_few_in_sync_replicas_are_nacked(
        restored_layout_cluster):
    test_publishes_with_too_few_in_sync_replicas_are_nacked(restored_layout_cluster)


def test_in_every_layout_a_followers_log_is_byte_identical_to_the_leaders(
        shared_layout_cluster):
    test_a_followers_log_is_byte_identical_to_the_leaders(shared_layout_cluster)
