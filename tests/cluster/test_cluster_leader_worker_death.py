"""A leader's worker that dies alone (issue 12, docs/CLUSTER.md "As built (layouts)"): on a
node with worker processes, the worker hosting a quorum queue's leader replica is SIGKILLed
while the node keeps its etcd lease (it stays the leader); the supervisor restarts it. The
restarted leader must not show consumers what the followers do not have (its high
watermark starts at the one it checkpointed, cluster/checkpoint.py, not at its own log
end), yet serves what was confirmed at once, before any follower fetches again; no
confirmed message is lost, followers continue, and consumers on every node continue (what
was delivered unacked is redelivered, flagged). And a follower's worker that dies alone
(twice in a row): the restarted worker opens the follower's copy again and fetches, so
the ISR keeps the replica and publishes are confirmed by all three. Three real nodes with
``--workers 2``, a real etcd, pika and the management API."""
import asyncio
import os
import signal
import threading

import aiormq
import pika
from pamqp import commands as spec

from amqpbroker.frontend.broker import worker_of
from amqpbroker.testing.checker import worker_pid
from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import connect, declare_quorum

DEADLINE = 60.0
WORKERS = 2
PREFETCH = 5        # three consumers hold 15 of the 20 confirmed messages: each gets some


class Consumer:
    """A pika consumer on one node that keeps consuming: a connection or a consumer the
    broker closes or cancels is opened again (as a client's reconnect would)."""

    def __init__(self, node, queue):
        self.node, self.queue = node, queue
        self.got: list[tuple[bytes, bool]] = []     # (body, redelivered) as delivered
        self.unacked: list[int] = []
        self.ack = False                # ack as they come (else hold them)
        self.conn = self.ch = None

    def _open(self):
        self.conn = connect(self.node)
        self.ch = self.conn.channel()
        self.ch.basic_qos(prefetch_count=PREFETCH)
        self.ch.basic_consume(self.queue, self._on_message)
        self.unacked = []

    def _on_message(self, ch, method, props, body):
        self.got.append((body, method.redelivered))
        if self.ack:
            ch.basic_ack(method.delivery_tag)
        else:
            self.unacked.append(method.delivery_tag)

    def poll(self):
        try:
            if self.conn is None or self.conn.is_closed or not self.ch.consumer_tags:
                if self.conn is not None and self.conn.is_open:
                    self.conn.close()
                self.conn = None
                self._open()
            if self.ack and self.unacked:
                for tag in self.unacked:
                    self.ch.basic_ack(tag)
                self.unacked = []
            self.conn.process_data_events(time_limit=0.02)
        except (pika.exceptions.AMQPError, OSError):
            self.conn = None

    def close(self):
        if self.conn is not None and self.conn.is_open:
            self.conn.close()


async def publish_all(url: str, queue: str, bodies) -> list[str]:
    """Publish ``bodies`` at once with confirms (aiormq): "ack", "nack" or "lost" (the
    connection or channel closed first) each."""
    conn = await aiormq.connect(url)
    ch = await conn.channel()

    async def one(body):
        try:
            r = await ch.basic_publish(body, routing_key=queue,
                                       properties=spec.Basic.Properties(delivery_mode=2))
        except aiormq.exceptions.DeliveryError:
            return "nack"
        except (aiormq.exceptions.AMQPError, ConnectionError, asyncio.CancelledError):
            return "lost"
        return "ack" if isinstance(r, spec.Basic.Ack) else "nack"
    try:
        return await asyncio.wait_for(asyncio.gather(*map(one, bodies)), DEADLINE)
    finally:
        try:
            await conn.close()
        except Exception:
            pass


def poll_until(consumers, cluster, condition):
    def step():
        for c in consumers:
            c.poll()
        return condition()
    try:
        return cluster.wait_until(step, timeout=DEADLINE, interval=0)
    except AssertionError:
        raise AssertionError("consumers got: " + "; ".join(
            f"{c.node.node}: {c.got}" for c in consumers)) from None


def test_a_leaders_worker_killed_alone_restarts_behind_its_followers(tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3,
                      args=("--workers", str(WORKERS), "--replica-lag-time", "60"),
                      together=True) as cluster:
        name = "wdie"
        leader = declare_quorum(cluster, name)
        followers = [n for n in cluster.nodes if n is not leader]
        w = worker_of("/", name, WORKERS)
        consumers = [Consumer(n, name) for n in cluster.nodes]

        conn = connect(leader)
        ch = conn.channel()
        ch.confirm_delivery()
        confirmed = [b"c%03d" % i for i in range(20)]
        for body in confirmed:
            ch.basic_publish("", name, body, pika.BasicProperties(delivery_mode=2))
        conn.close()
        # consumers on every node hold what they got, unacked
        poll_until(consumers, cluster, lambda: all(len(c.got) == PREFETCH for c in consumers))

        # the followers' workers stop fetching; the leader stores more it cannot confirm
        stopped = [n.worker_pids[w] for n in followers]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            # ten publishes with confirms in flight, waiting for a HW that cannot move
            tail = [b"u%03d" % i for i in range(10)]
            outcomes = []
            publisher = threading.Thread(target=lambda: outcomes.extend(
                asyncio.run(publish_all(leader.url, name, tail))))
            publisher.start()

            def replica():
                return (leader.api(f"partitions/%2F/{name}") or {}).get("replica") or {}
            cluster.wait_until(lambda: replica().get("log_end_offset") == 30,
                               timeout=DEADLINE)
            assert replica()["high_watermark"] == 20
            # the leader's checkpoint file holds that HW (written within 5 s of its move)
            cluster.wait_until(lambda: replica().get("high_watermark_checkpoint") == 20,
                               timeout=DEADLINE)

            os.kill(leader.worker_pids[w], signal.SIGKILL)
            publisher.join(DEADLINE)
            # nothing unconfirmed is confirmed: the dead worker's publishes are not acked
            assert len(outcomes) == len(tail) and "ack" not in outcomes, outcomes
            back = cluster.wait_until(lambda: (lambda r: r if r.get("role") == "leader"
                                               else None)(replica()), timeout=DEADLINE)
            assert back["log_end_offset"] == 30
            # the restarted leader shows consumers what was confirmed (its checkpointed HW),
            # never the tail the followers do not have
            assert back["high_watermark"] == 20, back
            # and serves it at once, no follower fetching: the consumer on its node fills
            # its prefetch again, with confirmed messages only
            marks = [len(c.got) for c in consumers]
            at_leader = cluster.nodes.index(leader)
            poll_until(consumers, cluster,
                       lambda: len(consumers[at_leader].got) - marks[at_leader] >= PREFETCH)
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        assert not {b for c in consumers for b, _ in c.got} & set(tail)

        # the followers fetch again: every node's consumer goes on, each filling its prefetch
        # again; what was confirmed comes flagged (the restarted worker flags all it recovered)
        poll_until(consumers, cluster, lambda: all(
            len(c.got) - m >= PREFETCH for c, m in zip(consumers, marks)))
        after = [d for c, m in zip(consumers, marks) for d in c.got[m:]]
        assert all(r for b, r in after if b in confirmed), after
        for c in consumers:
            c.ack = True
        everything = set(confirmed) | set(tail)
        poll_until(consumers, cluster, lambda: {b for c in consumers
                                                for b, _ in c.got} >= everything)
        for c in consumers:
            c.close()
        deliveries = [d for c in consumers for d in c.got]
        firsts = {}
        for body, redelivered in deliveries:
            if body in firsts:
                assert redelivered, f"{body!r} delivered twice, the second time unflagged"
            firsts[body] = True
        # what was delivered unacked before the kill came again, flagged
        for body in {b for c in consumers for b, _ in c.got[:PREFETCH]}:
            assert sum(1 for b, r in deliveries if b == body and r) >= 1, body

        def replicas():
            return [n.api(f"partitions/%2F/{name}")["replica"] for n in cluster.nodes]
        seen = cluster.wait_until(lambda: (lambda rs: rs if all(rs) and len(
            {(r["high_watermark"], r["crc32c"]) for r in rs}) == 1 else None)(replicas()),
            timeout=DEADLINE)
        assert {r["high_watermark"] for r in seen} == {30}
        assert sorted(r["role"] for r in seen) == ["follower", "follower", "leader"]


def test_a_followers_worker_killed_alone_opens_its_copy_again_and_fetches(tmp_path):
    """Found by the checker's ``kill_follower_worker``: the follower's copy of the queue is
    a forwarded queue's local copy, which its restarted worker did not open again; the
    role the supervisor told it again waited for it forever, the replica never fetched, and
    (with a lag time this long) no publish was confirmed any more."""
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3,
                      args=("--workers", str(WORKERS), "--replica-lag-time", "60"),
                      together=True) as cluster:
        name = "fdie"
        leader = declare_quorum(cluster, name)
        follower = next(n for n in cluster.nodes if n is not leader)
        w = worker_of("/", name, WORKERS)
        first = [b"a%03d" % i for i in range(10)]
        assert asyncio.run(publish_all(leader.url, name, first)) == ["ack"] * 10

        def replica(node):
            return (node.api(f"partitions/%2F/{name}") or {}).get("replica") or {}
        for round_ in range(2):         # the restarted worker killed again
            killed = worker_pid(follower.proc.pid, w)
            os.kill(killed, signal.SIGKILL)
            cluster.wait_until(lambda: worker_pid(follower.proc.pid, w) not in (None, killed),
                               timeout=DEADLINE)
            cluster.wait_until(lambda: replica(follower).get("role") == "follower",
                               timeout=DEADLINE)
        more = [b"b%03d" % i for i in range(10)]
        assert asyncio.run(publish_all(leader.url, name, more)) == ["ack"] * 10
        both = cluster.wait_until(lambda: (lambda lr, fr: (lr, fr) if fr.get(
            "high_watermark") == 20 and lr.get("crc32c") == fr.get("crc32c") else None)(
                replica(leader), replica(follower)), timeout=DEADLINE)
        assert both[0]["isr"] == sorted(n.node for n in cluster.nodes)
        assert both[1]["log_end_offset"] == 20
