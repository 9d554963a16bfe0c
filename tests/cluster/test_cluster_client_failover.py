"""A client's own node dies (issue 12: "pika's and aio-pika's multi-host reconnects work when
the client's own node dies"). Three real nodes, a real etcd, a replication-factor-3 quorum
queue; the client publishes with confirms and consumes on one node, that node is SIGKILLed,
and the client reconnects as pika's docs show for several hosts (a list of parameters, tried
in order, in the application's own retry loop) or, with aio-pika (``connect_robust`` takes
one URL), in a loop over the nodes' URLs. Within the lease TTL plus a few seconds it must be
on another node, declare the queue again (same arguments), publish with confirms and
consume; every confirmed message is delivered, and those it had unacked come back flagged.

Two cases: the client is on the leader's node (the reconnect may land on a node before the
election moved the leadership: a 404 for a moment, then the new leader serves it through
that node), and on a follower's node (the leader lives on). And a publisher through a node
that forwards, while the leadership moves: every publish in flight is answered (the link
to the old leader used to be closed with them unanswered)."""
import asyncio
import time

import aio_pika
import pika
import pytest

from amqpbroker.testing.cluster_clients import declare_quorum, queue_on

LEASE_TTL = 3           # the fixtures' (conftest.py)

QUEUE = "failover"      # a prefix: each test's queue is its own (the module shares a cluster)
ARGS = {"x-queue-type": "quorum", "x-quorum-initial-group-size": 3}
# lease TTL (the dead node's lease expires, a follower is elected) plus a few seconds
REJOIN = LEASE_TTL + 7.0
BEFORE = [b"before-%d" % i for i in range(6)]
AFTER = [b"after-%d" % i for i in range(6)]


def ordered(cluster, first):
    """The nodes, the client's own node first (pika tries a parameter list in order)."""
    return [first] + [n for n in cluster.nodes if n is not first]


def pika_params(nodes):
    return [pika.URLParameters(n.url + "?socket_timeout=2&connection_attempts=1")
            for n in nodes]


class PikaClient:
    """A pika BlockingConnection over several nodes' parameters: confirmed publishes, and a
    consumer that acks the first ``ack_first`` deliveries and leaves the rest unacked."""

    def __init__(self, nodes, queue, ack_first=0):
        self.params = pika_params(nodes)
        self.queue = queue
        self.deliveries: list[tuple[bytes, bool]] = []
        self.ack_first = ack_first
        self.conn = self.ch = None
        self.connected_to = None
        self.refused: list[tuple[int, str]] = []     # (port, why) of attempts refused

    def connect(self):
        """One attempt: connect (pika tries the list in order), declare, subscribe; None
        when it fails (a node dead, or the queue's leader not reachable yet)."""
        try:
            conn = pika.BlockingConnection(self.params)
        except (pika.exceptions.AMQPConnectionError, ValueError):
            # ValueError: pika's connector when a dying node resets a connection it had
            # just accepted ("Expected connected socket, but getpeername() failed")
            return None
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.queue_declare(self.queue, durable=True, arguments=ARGS)
            ch.basic_qos(prefetch_count=100)
            ch.basic_consume(self.queue, self._on_message)
        except pika.exceptions.AMQPError as exc:
            self.refused.append((conn._impl.params.port, repr(exc)[:200]))
            if conn.is_open:
                conn.close()
            return None
        self.conn, self.ch = conn, ch
        self.connected_to = conn._impl.params.port
        return conn

    def _on_message(self, ch, method, _props, body):
        self.deliveries.append((body, method.redelivered))
        if len(self.deliveries) <= self.ack_first:
            ch.basic_ack(method.delivery_tag)

    def publish(self, body) -> bool:
        """True once confirmed; False when nacked or the connection/channel went."""
        try:
            self.ch.basic_publish("", self.queue, body, pika.BasicProperties(delivery_mode=2))
            return True
        except (pika.exceptions.NackError, pika.exceptions.AMQPError):
            return False

    def pump(self) -> bool:
        """Handle what arrived; False once the connection is gone."""
        try:
            self.conn.process_data_events(time_limit=0.05)
        except pika.exceptions.AMQPError:
            return False
        return self.conn.is_open

    def delivered(self):
        return {b for b, _ in self.deliveries}

    def close(self):
        if self.conn is not None and self.conn.is_open:
            self.conn.close()


def wait_for(condition, timeout, what, seen=None):
    """Poll ``condition`` until true (its value) or ``timeout``; ``seen()`` says what the
    failure message shows."""
    deadline = time.monotonic() + timeout
    while True:
        last = condition()
        if last:
            return last
        assert time.monotonic() < deadline, \
            f"{what}: not within {timeout}s" + (f"; {seen()}" if seen else "")


def leader_on(cluster, node, queue):
    """Declare the queue and have ``node`` lead it (the controller's reassignment, the same
    replicas with ``node`` first), as every node sees it; returns ``node``."""
    leader = declare_quorum(cluster, queue, ARGS)
    if leader is not node:
        replicas = [node.node] + [n.node for n in cluster.nodes if n is not node]
        status, body = node.request("PUT", "reassignments/%2F/" + queue,
                                    {"replicas": replicas})
        assert status == 202, body
    cluster.wait_until(lambda: all(queue_on(n, queue).get("leader", "").endswith(
        "@" + node.node) and len(queue_on(n, queue).get("isr", ())) == 3
        for n in cluster.nodes))
    return node


def pika_failover(cluster, queue, victim_is_leader: bool, lead: int = 0):
    """The client's list is its own node then the others in order (n1, n2, n3 without
    it); ``lead``: the index of the node that leads the queue."""
    leader = leader_on(cluster, cluster.nodes[lead], queue)
    own = leader if victim_is_leader else next(n for n in cluster.nodes if n is not leader)
    client = PikaClient(ordered(cluster, own), queue, ack_first=2)
    assert wait_for(client.connect, 10, "first connect")
    assert client.connected_to == own.port
    for body in BEFORE:
        assert client.publish(body)
    wait_for(lambda: client.pump() and len(client.deliveries) == len(BEFORE), 10,
             "deliveries before the kill")

    own.kill()
    wait_for(lambda: not client.pump(), 10, "the client sees its node go")
    confirmed = []

    def back():
        client.close()
        if not client.connect():
            time.sleep(0.1)         # the client's retry pause (the deadline is the poll)
            return False
        if not client.publish(AFTER[0]):
            return False
        confirmed.append(AFTER[0])
        return True
    wait_for(back, REJOIN, "reconnected, declared and confirmed on another node",
             lambda: f"the last refusals: {client.refused[-3:]}")
    assert client.connected_to != own.port
    for body in AFTER[1:]:
        assert client.publish(body), f"{body!r} not confirmed after the failover"
        confirmed.append(body)
    expected = set(BEFORE) | set(confirmed)
    wait_for(lambda: client.pump() and expected <= client.delivered(), 15,
             "every confirmed message delivered",
             lambda: f"missing {sorted(expected - client.delivered())}")
    # the four it left unacked come back from the new leader, flagged
    flagged = {b for b, redelivered in client.deliveries if redelivered}
    assert set(BEFORE[2:]) <= flagged, client.deliveries
    client.close()


def test_pika_multi_host_reconnect_when_the_leaders_node_dies(restored_cluster):
    pika_failover(restored_cluster, QUEUE + "-pika-leader", victim_is_leader=True)


def test_pika_multi_host_reconnect_when_a_followers_node_dies(restored_cluster):
    pika_failover(restored_cluster, QUEUE + "-pika-follower", victim_is_leader=False)


async def aio_failover(cluster, queue, victim_is_leader: bool):
    leader = declare_quorum(cluster, queue, ARGS)
    own = leader if victim_is_leader else next(n for n in cluster.nodes if n is not leader)
    urls = [n.url for n in ordered(cluster, own)]
    deliveries: list[tuple[bytes, bool]] = []

    async def on_message(message):
        deliveries.append((message.body, message.redelivered))
        if len(deliveries) <= 2:
            await message.ack()

    async def session():
        """The application's loop over the nodes: the first whose connect, declare and
        subscribe succeed (``connect_robust`` reconnects to one URL only)."""
        for url in urls:
            try:
                conn = await aio_pika.connect_robust(url, timeout=2)
            except (OSError, aio_pika.exceptions.AMQPConnectionError, asyncio.TimeoutError):
                continue
            try:
                ch = await conn.channel(publisher_confirms=True)
                await ch.set_qos(prefetch_count=100)
                q = await ch.declare_queue(queue, durable=True, arguments=ARGS)
                await q.consume(on_message)
                return url, conn, ch
            except (aio_pika.exceptions.AMQPError, asyncio.TimeoutError, OSError):
                await conn.close()
        return None

    async def until(condition, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            last = await condition()
            if last:
                return last
            assert time.monotonic() < deadline, f"{what}: not within {timeout}s"

    async def publish(ch, body):
        try:
            await ch.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue, timeout=5)
            return True
        except (aio_pika.exceptions.AMQPError, aio_pika.exceptions.DeliveryError,
                asyncio.TimeoutError, OSError, RuntimeError):
            return False

    url, conn, ch = await until(session, 10, "first connect")
    assert url == own.url
    for body in BEFORE:
        assert await publish(ch, body)

    async def all_before():
        await asyncio.sleep(0.05)
        return len(deliveries) >= len(BEFORE)
    await until(all_before, 10, "deliveries before the kill")

    await asyncio.get_running_loop().run_in_executor(None, own.kill)
    await conn.close()          # the application drops the dead node's connection
    confirmed = []
    state = {}

    async def back():
        if state.get("conn") is not None:
            await state["conn"].close()
            state["conn"] = None
        got = await session()
        if got is None:
            await asyncio.sleep(0.1)
            return False
        state["url"], state["conn"], state["ch"] = got
        if not await publish(state["ch"], AFTER[0]):
            return False
        confirmed.append(AFTER[0])
        return True
    await until(back, REJOIN, "reconnected, declared and confirmed on another node")
    assert state["url"] != own.url
    for body in AFTER[1:]:
        assert await publish(state["ch"], body), f"{body!r} not confirmed after the failover"
        confirmed.append(body)
    expected = set(BEFORE) | set(confirmed)

    async def all_delivered():
        await asyncio.sleep(0.05)
        return expected <= {b for b, _ in deliveries}
    await until(all_delivered, 15, "every confirmed message delivered")
    assert set(BEFORE[2:]) <= {b for b, r in deliveries if r}, deliveries
    await state["conn"].close()


def test_aio_pika_reconnect_over_the_nodes_when_the_leaders_node_dies(restored_cluster):
    asyncio.run(aio_failover(restored_cluster, QUEUE + "-aio-leader", victim_is_leader=True))


def test_aio_pika_reconnect_over_the_nodes_when_a_followers_node_dies(restored_cluster):
    asyncio.run(aio_failover(restored_cluster, QUEUE + "-aio-follower", victim_is_leader=False))


@pytest.mark.parametrize("lead", [0, 1], ids=["n1-leads", "n2-leads"])
@pytest.mark.parametrize("victim_is_leader", [True, False], ids=["leader", "follower"])
def test_in_every_layout_pika_reconnects_when_its_node_dies(restored_layout_cluster,
                                                            victim_is_leader, lead):
    queue = f"{QUEUE}-pika-{'leader' if victim_is_leader else 'follower'}-n{lead + 1}-leads"
    pika_failover(restored_layout_cluster, queue, victim_is_leader, lead)



# ------------------------------------------------------------ publishes across a leader move
ANSWER = 10.0       # seconds: a publish unanswered this long was forgotten, not slow


async def publish_across_a_move(cluster, queue, publishers=8):
    """Confirmed publishes through n3, forwarded to the leader n1, go on while leadership
    moves to n2 (the controller's reassignment, every node and link up): each publish is
    answered, confirmed or nacked; none is left without an answer."""
    n1, n2, n3 = cluster.nodes
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, leader_on, cluster, n1, queue)
    conn = await aio_pika.connect(n3.url)
    ch = await conn.channel(publisher_confirms=True)
    stop = asyncio.Event()
    counts = {"confirmed": 0, "nacked": 0}
    unanswered = []

    async def publisher(i):
        n = 0
        while not stop.is_set():
            n += 1
            body = b"m-%d-%d" % (i, n)
            try:
                await ch.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue, timeout=ANSWER)
                counts["confirmed"] += 1
            except aio_pika.exceptions.DeliveryError:
                counts["nacked"] += 1       # refused: the client may publish it again
            except asyncio.TimeoutError:
                unanswered.append(body)

    async def confirmed_past(n, timeout):
        deadline = time.monotonic() + timeout
        while counts["confirmed"] < n:
            assert time.monotonic() < deadline, (counts, unanswered)
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(publisher(i)) for i in range(publishers)]
    await confirmed_past(20, 30)
    status, body = await loop.run_in_executor(
        None, n1.request, "PUT", "reassignments/%2F/" + queue, {"replicas": ["n2", "n1", "n3"]})
    assert status == 202, body
    await loop.run_in_executor(None, lambda: cluster.wait_until(lambda: all(
        queue_on(n, queue).get("leader") == "amqpbroker@n2" for n in cluster.nodes)))
    await confirmed_past(counts["confirmed"] + 20, 30)     # confirmed by the new leader
    stop.set()
    await asyncio.gather(*tasks)
    await conn.close()
    assert unanswered == [], f"{len(unanswered)} publishes never answered; {counts}"


def test_publishes_in_flight_across_a_leader_move_are_answered(shared_cluster):
    asyncio.run(publish_across_a_move(shared_cluster, QUEUE + "-move"))


def test_in_every_layout_publishes_in_flight_across_a_leader_move_are_answered(
        shared_layout_cluster):
    asyncio.run(publish_across_a_move(shared_layout_cluster, QUEUE + "-move"))
