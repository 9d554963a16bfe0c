"""A leader paused (SIGSTOP) past its lease wakes up deposed: it must deliver nothing more
from its copy (issue 12's fencing; the checker's ``pause_leader`` found a confirmed message
delivered twice, the second time unflagged, by the old leader after SIGCONT). Three real
nodes, a real etcd, pika."""
import os
import signal
import time

import pika

from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import connect


def leader_seen_by(node, queue):
    q = {q["name"]: q for q in node.api("queues")}.get(queue, {})
    return (q.get("leader") or "@").split("@", 1)[1] or None, q.get("leader_epoch")


def test_a_paused_leader_that_wakes_deposed_delivers_nothing_unflagged(tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3, together=True) as cluster:
        n1 = cluster.nodes[0]
        conn = connect(n1)
        ch = conn.channel()
        ch.queue_declare("zombie", durable=True, arguments={
            "x-queue-type": "quorum", "x-quorum-initial-group-size": 3})
        name = cluster.wait_until(lambda: (lambda le: le[0] if all(
            leader_seen_by(n, "zombie") == le for n in cluster.nodes) else None)(
            leader_seen_by(n1, "zombie")))
        old = cluster.node(name)
        others = [n for n in cluster.nodes if n is not old]
        ch.confirm_delivery()
        for i in range(5):
            ch.basic_publish("", "zombie", b"m%d" % i, pika.BasicProperties(delivery_mode=2))
        conn.close()

        # a consumer on the leader itself, prefetch 1: it holds m0
        c = connect(old)
        cch = c.channel()
        cch.basic_qos(prefetch_count=1)
        got = []            # (body, redelivered)
        cancels = []
        cch.add_on_cancel_callback(cancels.append)
        cch.basic_consume("zombie", lambda ch_, m, p, b: got.append((b, m.redelivered, m)))
        deadline = time.monotonic() + 30
        while not got:
            assert time.monotonic() < deadline
            c.process_data_events(time_limit=0.05)
        assert got[0][:2] == (b"m0", False)

        os.killpg(old.proc.pid, signal.SIGSTOP)
        try:
            # acked while the leader sleeps: the frame waits in its socket
            cch.basic_ack(got[0][2].delivery_tag)
            cluster.wait_until(lambda: all(leader_seen_by(n, "zombie")[0] not in (None, name)
                                           for n in others), timeout=60)
        finally:
            os.killpg(old.proc.pid, signal.SIGCONT)
        # awake and deposed: the ack may count or not, but nothing more comes from its copy
        # unflagged; the move cancels the consumer
        deadline = time.monotonic() + 30
        while not cancels and not c.is_closed:
            assert time.monotonic() < deadline, got
            c.process_data_events(time_limit=0.05)
        assert [b for b, redelivered, _ in got[1:] if not redelivered] == [], got
        c.close()
