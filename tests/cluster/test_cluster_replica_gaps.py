"""A quorum follower across a gap in the middle of the leader's log (issue 12, docs/CLUSTER.md
"As built (step 6)"): the leader deleted a segment whose messages were all acked, between two
that are not; a replica added afterwards by a reassignment makes the same gap in its own log
(vouched for by the leader's ack runs), reaches the ISR, holds the leader's batches (same
checksum) and, promoted, delivers exactly the unacked messages. Three real nodes, a real etcd,
pika and the management API."""
import glob
import os
import time

import pika

from amqpbroker.supervisor.owner import queue_dir_name
from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import connect, queue_on

DEADLINE = 60.0


def segment_bases(node, name):
    """Base offsets of the segments of ``name``'s copy on ``node`` (vhost "/")."""
    d = os.path.join(node.data_dir, "queues", queue_dir_name("/", name))
    return sorted(int(os.path.basename(p)[:-4]) for p in glob.glob(os.path.join(d, "*.log"))
                  if os.path.basename(p)[0].isdigit())


def test_a_replica_added_after_a_middle_segment_was_deleted_makes_the_same_gap(tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3,
                      args=("--segment-bytes", "4000"), together=True) as cluster:
        conn = connect(cluster.nodes[0])
        conn.channel().queue_declare("gapped", durable=True, arguments={
            "x-queue-type": "quorum", "x-quorum-initial-group-size": 2})
        conn.close()
        seen = cluster.wait_until(lambda: (lambda q: q if q.get("leader") and len(
            q.get("isr", ())) == 2 else None)(queue_on(cluster.nodes[0], "gapped")),
            timeout=DEADLINE)
        leader = cluster.node(seen["leader"].split("@")[1])
        (outsider,) = [n for n in cluster.nodes if f"amqpbroker@{n.node}" not in seen["members"]]
        # ~510 B messages confirmed one at a time: a batch each, ~7 to a 4000 B segment
        bodies = [b"g%04d" % i + b"." * 500 for i in range(100)]
        conn = connect(leader)
        ch = conn.channel()
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", "gapped", body, pika.BasicProperties(delivery_mode=2))
        # the first message stays unacked (its segment stays), 1..89 are acked (their
        # segments go), 90..99 stay: a gap in the middle of the log
        first, _, body = ch.basic_get("gapped", auto_ack=False)
        assert body == bodies[0]
        for i in range(1, 90):
            method, _, body = ch.basic_get("gapped", auto_ack=False)
            assert body == bodies[i]
            ch.basic_ack(method.delivery_tag)
        ch.basic_reject(first.delivery_tag, requeue=True)
        ch.basic_publish("", "gapped", b"last", pika.BasicProperties(delivery_mode=2))
        conn.close()
        bases = cluster.wait_until(lambda: (lambda b: b if len(b) >= 2 and b[0] == 0 and all(
            x >= 80 for x in b[1:]) else None)(segment_bases(leader, "gapped")),
            timeout=DEADLINE)                # a gap between segment 0 and the one holding 89

        status, _ = leader.request("PUT", "reassignments/%2F/gapped",
                                   {"replicas": [leader.node, outsider.node]})
        assert status in (200, 201, 202, 204)
        target = sorted(f"amqpbroker@{n.node}" for n in (leader, outsider))
        cluster.wait_until(lambda: sorted(queue_on(outsider, "gapped").get("isr", ())) ==
                           target and leader.api("reassignments") == [], timeout=DEADLINE)

        def replica(n):
            return n.api("partitions/%2F/gapped")["replica"]
        new = cluster.wait_until(lambda: (lambda r: r if r["log_end_offset"] == 101
                                          and r["high_watermark"] == 101 else None)(
            replica(outsider)), timeout=DEADLINE)
        old = replica(leader)
        assert new["log_start_offset"] == old["log_start_offset"] == 0
        assert new["crc32c"] == old["crc32c"]
        assert new["role"] == "follower" and not new["diverged"]
        theirs = segment_bases(outsider, "gapped")
        assert bases[1] in theirs and not [b for b in theirs if 0 < b < bases[1]]

        leader.kill()
        gone = f"amqpbroker@{leader.node}"
        cluster.wait_until(lambda: queue_on(outsider, "gapped").get("leader") not in (
            None, gone), timeout=DEADLINE)
        cluster.wait_until(lambda: replica(outsider)["role"] == "leader", timeout=DEADLINE)
        conn = connect(outsider)
        ch = conn.channel()
        got = []
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and len(got) < 12:
            method, _, body = ch.basic_get("gapped", auto_ack=False)
            if method is None:
                conn.sleep(0.05)
                continue
            got.append((body, method.redelivered))
            ch.basic_ack(method.delivery_tag)
        conn.close()
        assert [b for b, _ in got] == [bodies[0]] + bodies[90:] + [b"last"]
        assert all(r for _, r in got)
