"""Replication (docs/CLUSTER.md section 4, issue 12 step 5): followers fetch from the leader,
confirms wait for the high watermark, too few in-sync replicas nack, acks replicate. Three
real nodes, a real etcd, pika and the management API; the leader is killed with SIGKILL."""
import glob
import os

import pika
import pytest

from amqpbroker.supervisor.owner import queue_dir_name
from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import connect, declare_quorum, drain, queue_on


def publish_confirmed(node, queue, bodies):
    """Publish each body with confirms (pika raises on a nack); returns what was confirmed."""
    conn = connect(node)
    ch = conn.channel()
    ch.confirm_delivery()
    confirmed = []
    for body in bodies:
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2),
                         mandatory=True)
        confirmed.append(body)
    conn.close()
    return confirmed


def queue_dir(node, name):
    """The directory of ``name``'s copy on ``node`` (vhost "/")."""
    return os.path.join(node.data_dir, "queues", queue_dir_name("/", name))


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3) as c:
        yield c


def test_confirmed_messages_survive_the_leader_killed_in_order_and_acked_ones_stay_gone(cluster):
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


def test_publishes_with_too_few_in_sync_replicas_are_nacked(cluster):
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


def test_a_followers_log_is_byte_identical_to_the_leaders(cluster):
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


def test_a_stalled_follower_leaves_the_isr_after_the_lag_time_and_returns_caught_up(tmp_path):
    """SIGSTOP a follower: the leader removes it from the ISR after ``--replica-lag-time``
    (1 s here, far inside the 15 s lease: the controller does not see it dead), confirms go
    on with the other follower; after SIGCONT it catches up and the leader adds it back."""
    import signal
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=15,
                      args=("--replica-lag-time", "1")) as cluster:
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


def test_an_old_leader_back_with_an_unconfirmed_tail_truncates_it_and_follows(tmp_path):
    """The followers are killed; the leader appends messages it cannot get confirmed, and is
    killed too before it could drop them from the ISR (a 10 s lease). The followers return,
    one leads and takes new messages; the old leader returns, finds its tail is not the
    new leader's, cuts it, and copies the new leader's log byte for byte. The unconfirmed
    messages are never delivered."""
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=10) as cluster:
        old = declare_quorum(cluster, "repl-tail")
        followers = [n for n in cluster.nodes if n is not old]
        publish_confirmed(old, "repl-tail", [b"c%d" % i for i in range(5)])
        for n in followers:
            n.kill()
        conn = connect(old)
        ch = conn.channel()             # no confirms: they could not come
        for i in range(7):
            ch.basic_publish("", "repl-tail", b"lost%d" % i,
                             pika.BasicProperties(delivery_mode=2))
        conn.close()
        # on the old leader's disk, on no follower's
        cluster.wait_until(lambda: old.api("partitions/%2F/repl-tail")["durable_offset"] == 12)
        old.kill()
        for n in followers:
            cluster.start_node(n)
        new = cluster.node(cluster.wait_until(lambda: (lambda q: q.get("leader") not in (
            None, f"amqpbroker@{old.node}") and q["leader"])(
            queue_on(followers[0], "repl-tail")), timeout=60).split("@")[1])
        # the ISR is the two nodes alive (min_isr 2): a follower started more than the lag
        # time after the new leader was elected (a loaded machine) is out until it catches
        # up, and a publish meanwhile is nacked, as it should be
        alive = {f"amqpbroker@{n.node}" for n in followers}
        cluster.wait_until(lambda: set(queue_on(new, "repl-tail").get("isr", ())) == alive,
                           timeout=60)
        publish_confirmed(new, "repl-tail", [b"n%d" % i for i in range(4)])
        cluster.start_node(old)

        def segment_bytes(node):
            out = b""
            d = queue_dir(node, "repl-tail")
            for p in sorted(glob.glob(os.path.join(d, "*.log"))):
                if os.path.basename(p)[0].isdigit():
                    with open(p, "rb") as f:
                        out += f.read()
            return out
        cluster.wait_until(lambda: segment_bytes(old) == segment_bytes(new) != b"")
        assert any("diverges from the leader" in line for line in old.output)
        got = drain(old, "repl-tail", 10)
        assert [b for b, _ in got] == ([b"c%d" % i for i in range(5)]
                                       + [b"n%d" % i for i in range(4)])


def publish_unconfirmed(node, queue, bodies):
    """Publish without confirms (they could not come: too few replicas alive to reach)."""
    conn = connect(node)
    ch = conn.channel()
    for body in bodies:
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    conn.close()


def log_bytes(node, name):
    out = b""
    for p in sorted(glob.glob(os.path.join(queue_dir(node, name), "*.log"))):
        if os.path.basename(p)[0].isdigit():
            with open(p, "rb") as f:
                out += f.read()
    return out


@pytest.mark.timeout(300)       # three lease expiries (10 s each) and five node starts
def test_two_failovers_with_unreplicated_tails_are_both_cut_by_leader_epoch(tmp_path):
    """KIP-279's case: two leaders in a row each write a tail nobody else gets, in two
    epochs. The third leader's log has neither. The first returns as a follower, cuts its
    tail, and once it is back in the ISR the third leader takes more messages; then the
    second returns: its tail lies inside the third leader's range, in an epoch the third
    leader never had, and the answer by epoch cuts it. All three logs are then the same
    bytes, with the same epochs. No unconfirmed message is delivered."""
    q = "repl-kip279"
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=10) as cluster:
        first = declare_quorum(cluster, q)
        publish_confirmed(first, q, [b"c%d" % i for i in range(5)])
        others = [n for n in cluster.nodes if n is not first]
        for n in others:
            n.kill()
        publish_unconfirmed(first, q, [b"first-lost%d" % i for i in range(7)])
        cluster.wait_until(lambda: first.api(f"partitions/%2F/{q}")["durable_offset"] == 12)
        first.kill()
        for n in others:
            cluster.start_node(n)

        def leader_among(nodes, not_in):
            def led():
                for n in nodes:
                    got = queue_on(n, q).get("leader")
                    if got and got not in not_in:
                        return got.split("@")[1]
            return cluster.node(cluster.wait_until(led, timeout=60))

        def leads(n, isr=1):
            r = n.api(f"partitions/%2F/{q}").get("replica") or {}
            return r.get("role") == "leader" and len(r.get("isr", ())) >= isr
        second = leader_among(others, {f"amqpbroker@{first.node}"})
        third = next(n for n in others if n is not second)
        # both in its ISR (min 2): its tail is stored, and third stays eligible
        cluster.wait_until(lambda: leads(second, isr=2))
        third.kill()
        publish_unconfirmed(second, q, [b"second-lost%d" % i for i in range(4)])
        cluster.wait_until(lambda: second.api(f"partitions/%2F/{q}")["durable_offset"] == 9)
        second_epochs = second.api(f"partitions/%2F/{q}")["replica"]["leader_epochs"]
        second.kill()
        cluster.start_node(third)
        assert leader_among([third], {f"amqpbroker@{first.node}",
                                      f"amqpbroker@{second.node}"}) is third
        # first returns (its tail cut) and rejoins the ISR (the controller may then move
        # the leadership back to it, the preferred replica): the partition takes publishes
        # again; then second returns, its tail inside what has been written since
        cluster.start_node(first)

        def leader_with_isr():
            name = queue_on(third, q).get("leader", "@").split("@")[1]
            n = cluster.node(name) if name in ("n1", "n2", "n3") else None
            return n if n is not None and n is not second and leads(n, isr=2) else None
        cluster.wait_until(leader_with_isr, timeout=60)
        publish_confirmed(third, q, [b"n0", b"n1"])
        cluster.start_node(second)
        publish_confirmed(third, q, [b"n2", b"n3"])
        leader = cluster.wait_until(leader_with_isr)
        cluster.wait_until(lambda: log_bytes(first, q) == log_bytes(leader, q)
                           == log_bytes(second, q) == log_bytes(third, q), timeout=60)
        for n in (first, second):
            assert any("diverges from the leader" in line for line in n.output)
        # each batch carries the epoch it was written in, on every replica alike: c0..c4
        # the first leader's, n0..n3 a later one's than second's, whose tail is gone
        starts = [n.api(f"partitions/%2F/{q}")["replica"]["leader_epochs"]
                  for n in cluster.nodes]
        assert starts[0] == starts[1] == starts[2]
        assert starts[0][0] == [0, 0] and second_epochs == [[0, 0], [second_epochs[1][0], 5]]
        assert starts[0][1][1] == 5 and starts[0][1][0] > second_epochs[1][0]
        got = drain(third, q, 10)
        assert [b for b, _ in got] == ([b"c%d" % i for i in range(5)]
                                       + [b"n%d" % i for i in range(4)])


# ------------------------------------------------------------ process layouts
# Replication where the replicas' queues live in worker processes (followers fetch from a
# worker, the leader's HW and confirms in a worker) and clients are served by front-end
# processes; and a mixed cluster (docs/CLUSTER.md "As built (layouts)").
# (the ``layout_cluster`` fixture: tests/cluster/conftest.py)


def test_in_every_layout_confirmed_messages_survive_the_leader_killed(layout_cluster):
    test_confirmed_messages_survive_the_leader_killed_in_order_and_acked_ones_stay_gone(
        layout_cluster)


def test_in_every_layout_publishes_with_too_few_in_sync_replicas_are_nacked(layout_cluster):
    test_publishes_with_too_few_in_sync_replicas_are_nacked(layout_cluster)


def test_in_every_layout_a_followers_log_is_byte_identical_to_the_leaders(layout_cluster):
    test_a_followers_log_is_byte_identical_to_the_leaders(layout_cluster)
