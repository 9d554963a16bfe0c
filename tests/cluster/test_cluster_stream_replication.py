"""Replicated streams and consumer-group offsets (issue 12, docs/CLUSTER.md "As built (step
6)"): a stream with ``x-initial-cluster-size`` 3 is fetched by its followers as a quorum
queue is; its readers see only below the high watermark and keep reading after the leader is
SIGKILLed; a group's commits replicate with the partition, so its next owner resumes from
them. Three real nodes, a real etcd, pika and the management API."""
import os
import signal
import threading
import time

import pika

from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import connect, queue_on

DEADLINE = 60.0


def agreed_leader(cluster, name, replicas=3, among=None):
    """Wait until every node (of ``among``) names one leader of ``name`` with ``replicas``
    in its ISR; that leader's BrokerProcess."""
    nodes = among or cluster.nodes

    def agreed():
        seen = [queue_on(n, name) for n in nodes]
        leaders = {q.get("leader") for q in seen}
        if len(leaders) == 1 and None not in leaders and all(
                len(q.get("isr", ())) == replicas for q in seen):
            return leaders.pop()
        return None
    leader = cluster.wait_until(agreed, timeout=DEADLINE)
    return cluster.node(leader.split("@")[1])


def new_leader(cluster, name, old, survivor):
    """After ``old`` died: the leader ``survivor`` sees for ``name`` once it is another, and
    that node leads its replica (promoted: a client of it is served there)."""
    gone = f"amqpbroker@{old.node}"
    leader = cluster.wait_until(lambda: (lambda q: q.get("leader") not in (None, gone)
                                         and q["leader"])(queue_on(survivor, name)),
                                timeout=DEADLINE)
    node = cluster.node(leader.split("@")[1])
    cluster.wait_until(lambda: (node.api(f"partitions/%2F/{name}")["replica"] or {}).get(
        "role") == "leader", timeout=DEADLINE)
    return node


def publish_confirmed(node, exchange, routing_key, bodies):
    conn = connect(node)
    ch = conn.channel()
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish(exchange, routing_key, body, pika.BasicProperties(delivery_mode=2),
                         mandatory=True)
    conn.close()
    return list(bodies)


def read_stream(node, name, count, offset="first", prefetch=50):
    """Consume ``count`` messages of stream ``name`` from ``x-stream-offset`` ``offset``:
    the first ``count`` [(x-stream-offset, body)], acked as they come (credit)."""
    conn = connect(node)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got = []

    def on_message(ch, method, props, body):
        got.append((props.headers["x-stream-offset"], body))
        ch.basic_ack(method.delivery_tag)
    ch.basic_consume(name, on_message, arguments={"x-stream-offset": offset})
    end = time.monotonic() + DEADLINE
    while len(got) < count and time.monotonic() < end:
        conn.process_data_events(time_limit=0.05)
    conn.close()
    return got[:count]


# the next four tests share the module's cluster (``restored_cluster``: the leader each
# kills is started again after it, a paused node resumed); each has a stream or exchange of
# its own

def test_a_topic_declared_while_a_node_is_paused_is_replicated_and_forwarded_there(
        restored_cluster):
    """A node that reads a topic's key and its partition's key in one go from the etcd
    watch (paused in between here; a loaded or restarted node does so too) makes the
    partition's queue after its replication's and forwarder's passes over that change: they
    run again once the partition exists. Before, the partition stayed a plain queue on that
    node until the next etcd change: publishes through it were stored and confirmed there
    instead of on the leader (its consumers got nothing: the group test's flake on the
    shared cluster), and the copy was cut once it followed: confirmed messages lost."""
    cluster = restored_cluster
    n1, n2, n3 = cluster.nodes
    os.killpg(n3.proc.pid, signal.SIGSTOP)      # its process group: the node and children
    try:
        conn = connect(n1)
        conn.channel().exchange_declare("paused", exchange_type="x-partitioned", arguments={
            "x-partitions": 1, "x-replication-factor": 3})
        conn.close()
        # placed by the controller while n3 sleeps (well within its lease)
        cluster.wait_until(lambda: queue_on(n1, "paused-0").get("leader"), timeout=2.5,
                           interval=0.02)
    finally:
        os.killpg(n3.proc.pid, signal.SIGCONT)
    leader = agreed_leader(cluster, "paused-0")
    bodies = [b"p%03d" % i for i in range(50)]
    confirmed = publish_confirmed(n3, "paused", "k", bodies)
    # every replica holds them, the leader's HW is past them, and its readers get them
    cluster.wait_until(lambda: len({(p.get("log_end_offset"), p.get("high_watermark"),
                                     p.get("crc32c")) for p in (
        n.api("partitions/%2F/paused-0")["replica"] or {} for n in cluster.nodes)}) == 1
        and leader.api("partitions/%2F/paused-0")["replica"]["high_watermark"] == 50,
        timeout=DEADLINE)
    assert read_stream(leader, "paused-0", 50) == list(enumerate(confirmed))


def test_a_stream_is_replicated_and_its_readers_keep_reading_after_the_leader_is_killed(
        restored_cluster):
    cluster = restored_cluster
    conn = connect(cluster.nodes[0])
    conn.channel().queue_declare("events", durable=True, arguments={
        "x-queue-type": "stream", "x-initial-cluster-size": 3})
    conn.close()
    leader = agreed_leader(cluster, "events")
    others = [n for n in cluster.nodes if n is not leader]
    bodies = [b"e%04d" % i for i in range(300)]
    # confirmed at the high watermark: from a follower's client, and from the leader's own
    confirmed = publish_confirmed(others[0], "", "events", bodies[:150])
    confirmed += publish_confirmed(leader, "", "events", bodies[150:])
    # every replica reports the same log up to the HW (byte-identical batches)
    cluster.wait_until(lambda: len({(p.get("log_end_offset"), p.get("high_watermark"),
                                     p.get("crc32c")) for p in (
        n.api("partitions/%2F/events")["replica"] for n in cluster.nodes)}) == 1
        and leader.api("partitions/%2F/events")["replica"]["high_watermark"] == 300,
        timeout=DEADLINE)
    # a reader from offset 100 on a follower's node (forwarded to the leader)
    got = read_stream(others[1], "events", 50, offset=100)
    assert got == [(100 + i, confirmed[100 + i]) for i in range(50)]
    leader.kill()
    new = new_leader(cluster, "events", leader, others[0])
    assert new in others
    # after the failover every confirmed message is there, in order, at its offset (a client
    # of the new leader, as a multi-host client reconnects)
    got = read_stream(new, "events", 300)
    assert got == list(enumerate(confirmed))
    more = publish_confirmed(new, "", "events", [b"after"])
    got = read_stream(new, "events", 1, offset=300)
    assert got == [(300, more[0])]


def test_a_groups_commits_replicate_and_its_next_owner_resumes_from_them(restored_cluster):
    cluster = restored_cluster
    conn = connect(cluster.nodes[0])
    conn.channel().exchange_declare("orders", exchange_type="x-partitioned", arguments={
        "x-partitions": 1, "x-replication-factor": 3})
    conn.close()
    leader = agreed_leader(cluster, "orders-0")
    others = [n for n in cluster.nodes if n is not leader]
    bodies = [b"o%04d" % i for i in range(200)]
    publish_confirmed(others[0], "orders", "k", bodies)

    # a member on the partition leader's node acks the first 120 (commits by acks)
    conn = connect(leader)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    got = []

    def on_message(ch, method, props, body):
        got.append((props.headers["x-stream-offset"], body))
        if len(got) <= 120:
            ch.basic_ack(method.delivery_tag)
    ch.basic_consume("orders", on_message, arguments={"x-consumer-group": "billing",
                                                      "x-stream-offset": "first"})
    end = time.monotonic() + DEADLINE
    while len(got) < 130 and time.monotonic() < end:
        conn.process_data_events(time_limit=0.05)
    assert [b for _, b in got[:130]] == bodies[:130]

    def committed(node):
        groups = node.api("partitions/%2F/orders-0")["replica"].get("group_offsets") or {}
        return groups.get("billing")
    # the commit is on every replica before the leader dies
    cluster.wait_until(lambda: all(committed(n) == 120 for n in cluster.nodes),
                       timeout=DEADLINE)
    leader.kill()
    new = new_leader(cluster, "orders-0", leader, others[0])
    assert new in others

    # the group's next owner (on the new leader's node) resumes at the commit: offsets
    # 120.. once each (the 10 delivered and never acked come again: at-least-once)
    conn2 = connect(new)
    ch2 = conn2.channel()
    ch2.basic_qos(prefetch_count=50)
    again = []

    def on_message2(ch, method, props, body):
        again.append((props.headers["x-stream-offset"], body))
        ch.basic_ack(method.delivery_tag)
    ch2.basic_consume("orders", on_message2, arguments={"x-consumer-group": "billing",
                                                        "x-stream-offset": "first"})
    end = time.monotonic() + DEADLINE
    while len(again) < 80 and time.monotonic() < end:
        conn2.process_data_events(time_limit=0.05)
    conn2.process_data_events(time_limit=0.3)
    assert again == [(120 + i, bodies[120 + i]) for i in range(80)]
    conn2.close()


def test_a_replica_added_behind_the_leaders_log_start_follows_from_there(restored_cluster):
    """Retention deleted the stream's first segments; a reassignment adds a replica whose
    log is empty (ends at 0, below the leader's log start): it restarts its log at the
    leader's log start (Kafka's OffsetOutOfRange reset), catches up, joins the ISR (so the
    reassignment completes), holds the leader's batches byte for byte, and serves the
    stream once the old leader is killed."""
    cluster = restored_cluster
    conn = connect(cluster.nodes[0])
    conn.channel().queue_declare("rolling", durable=True, arguments={
        "x-queue-type": "stream", "x-initial-cluster-size": 2,
        "x-stream-max-segment-size-bytes": 4000, "x-max-length-bytes": 20000})
    conn.close()
    leader = agreed_leader(cluster, "rolling", replicas=2)
    members = queue_on(leader, "rolling")["members"]
    (outsider,) = [n for n in cluster.nodes if f"amqpbroker@{n.node}" not in members]
    bodies = [b"r%04d" % i + b"." * 500 for i in range(200)]
    for i in range(0, 200, 20):         # one batch (commit round) per 20: segments roll
        publish_confirmed(leader, "", "rolling", bodies[i:i + 20])
    start = leader.api("partitions/%2F/rolling")["log_start_offset"]
    assert start > 0                    # retention removed the first segments

    status, _ = leader.request("PUT", "reassignments/%2F/rolling",
                               {"replicas": [leader.node, outsider.node]})
    assert status in (200, 201, 202, 204)
    # the new replica joins the ISR only once it fetched up to the HW: the move completes
    target = sorted(f"amqpbroker@{n.node}" for n in (leader, outsider))
    cluster.wait_until(lambda: sorted(queue_on(outsider, "rolling").get("isr", ())) ==
                       target and
                       leader.api("reassignments") == [], timeout=DEADLINE)

    def replica(n):
        return n.api("partitions/%2F/rolling")["replica"]
    new = cluster.wait_until(lambda: (lambda r: r if r["log_end_offset"] == 200
                                      and r["high_watermark"] == 200 else None)(
        replica(outsider)), timeout=DEADLINE)
    old = replica(leader)
    assert new["log_start_offset"] == old["log_start_offset"] == start
    assert new["crc32c"] == old["crc32c"]
    assert new["role"] == "follower" and not new["diverged"]

    leader.kill()
    survivor = next(n for n in cluster.nodes if n is not leader)
    assert new_leader(cluster, "rolling", leader, survivor) is outsider
    got = read_stream(outsider, "rolling", 200 - start)
    assert got == [(o, bodies[o]) for o in range(start, 200)]


def test_a_quorum_replica_added_after_acked_segments_were_deleted_follows_from_the_start(
        tmp_path):
    """A quorum queue's leader deletes a segment once all its messages are acked; a replica
    added afterwards (log end 0, below the leader's log start) restarts its log there,
    settles what the leader settled, and after the old leader is killed delivers exactly the
    unacked messages, flagged."""
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3,
                      args=("--segment-bytes", "4000"), together=True) as cluster:
        conn = connect(cluster.nodes[0])
        conn.channel().queue_declare("acked", durable=True, arguments={
            "x-queue-type": "quorum", "x-quorum-initial-group-size": 2})
        conn.close()
        leader = agreed_leader(cluster, "acked", replicas=2)
        members = queue_on(leader, "acked")["members"]
        (outsider,) = [n for n in cluster.nodes if f"amqpbroker@{n.node}" not in members]
        bodies = [b"q%04d" % i + b"." * 500 for i in range(100)]
        for i in range(0, 100, 10):
            publish_confirmed(leader, "", "acked", bodies[i:i + 10])
        conn = connect(leader)
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(90):
            method, _, body = ch.basic_get("acked", auto_ack=False)
            assert body == bodies[i]
            ch.basic_ack(method.delivery_tag)
        # a confirmed publish after the acks: their round (and the deletions after it) ran
        ch.basic_publish("", "acked", b"last", pika.BasicProperties(delivery_mode=2))
        conn.close()
        start = cluster.wait_until(lambda: (lambda s: s if s > 0 else None)(
            leader.api("partitions/%2F/acked")["log_start_offset"]), timeout=DEADLINE)

        status, _ = leader.request("PUT", "reassignments/%2F/acked",
                                   {"replicas": [leader.node, outsider.node]})
        assert status in (200, 201, 202, 204)
        target = sorted(f"amqpbroker@{n.node}" for n in (leader, outsider))
        cluster.wait_until(lambda: sorted(queue_on(outsider, "acked").get("isr", ())) ==
                           target and leader.api("reassignments") == [], timeout=DEADLINE)
        new = outsider.api("partitions/%2F/acked")["replica"]
        assert new["log_start_offset"] == start and new["log_end_offset"] == 101

        leader.kill()
        survivor = next(n for n in cluster.nodes if n is not leader)
        assert new_leader(cluster, "acked", leader, survivor) is outsider
        conn = connect(outsider)
        ch = conn.channel()
        got = []
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            method, _, body = ch.basic_get("acked", auto_ack=False)
            if method is None:
                if len(got) >= 11:
                    break
                conn.sleep(0.05)
                continue
            got.append((body, method.redelivered))
            ch.basic_ack(method.delivery_tag)
        conn.close()
        assert [b for b, _ in got] == bodies[90:] + [b"last"]
        assert all(r for _, r in got)


def test_a_stream_reader_sees_only_below_the_high_watermark(tmp_path):
    """A follower stalled (SIGSTOP, inside the lease and the lag time): what the leader
    appends is durable there but not below the HW, so a reader does not get it and its
    publisher no confirm; SIGCONT, the follower fetches, the HW moves, both arrive."""
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=15,
                      args=("--replica-lag-time", "60"), together=True) as cluster:
        conn = connect(cluster.nodes[0])
        conn.channel().queue_declare("held", durable=True, arguments={
            "x-queue-type": "stream", "x-initial-cluster-size": 3})
        conn.close()
        leader = agreed_leader(cluster, "held")
        stalled = next(n for n in cluster.nodes if n is not leader)
        publish_confirmed(leader, "", "held", [b"c%d" % i for i in range(5)])
        cluster.wait_until(lambda: all(
            n.api("partitions/%2F/held")["replica"]["high_watermark"] == 5
            for n in cluster.nodes))
        os.kill(stalled.proc.pid, signal.SIGSTOP)
        confirmed = threading.Event()
        try:
            # its confirm waits for the stalled follower (pika blocks: a thread)
            publisher = threading.Thread(target=lambda: (publish_confirmed(
                leader, "", "held", [b"held"]), confirmed.set()))
            publisher.start()
            cluster.wait_until(lambda: leader.api("partitions/%2F/held")["durable_offset"] == 6)
            rconn = connect(leader)
            rch = rconn.channel()
            rch.basic_qos(prefetch_count=50)
            got = []
            rch.basic_consume("held", lambda ch, m, p, body: (
                got.append(body), ch.basic_ack(m.delivery_tag)),
                arguments={"x-stream-offset": "first"})
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                rconn.process_data_events(time_limit=0.05)
            assert got == [b"c%d" % i for i in range(5)]
            assert not confirmed.is_set()
            assert leader.api("partitions/%2F/held")["replica"]["high_watermark"] == 5
        finally:
            os.kill(stalled.proc.pid, signal.SIGCONT)
        end = time.monotonic() + DEADLINE
        while len(got) < 6 and time.monotonic() < end:
            rconn.process_data_events(time_limit=0.05)
        assert got == [b"c%d" % i for i in range(5)] + [b"held"]
        publisher.join(DEADLINE)
        assert confirmed.is_set()
        rconn.close()
