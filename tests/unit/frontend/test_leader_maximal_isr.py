"""A leader's high watermark counts the followers its ISR writes add from the moment a write
is sent, not from when its etcd view shows it (Kafka's "maximal ISR", KIP-497).

Found by the checker (seed 302, `cut_leader_from_etcd` then the preferred leader's return):
the interim leader wrote the returning follower back into the ISR; the controller saw that
write and elected the follower at once; meanwhile the interim leader, its view still showing
the old ISR, moved the HW without the follower and confirmed a message the follower never
got. The new leader's log lacked it, the others truncated to it: a confirmed message lost.

In one process: the session, the partition client, a ``LocalLink`` and the host, with a
``Leader`` of cluster/replication.py on the host's queue, driven by fetches of two
followers that a test hands it directly, and an etcd that only records ISR writes.
"""
from __future__ import annotations

import asyncio

from pamqp import commands as C

from amqpbroker import contract as c
from amqpbroker.cluster.replication import Roles

EPOCH = 1


class Link:
    """A follower's end of the cluster link, as the leader sees it."""

    def __init__(self, node: str):
        self.node = node
        self.replies: list = []

    def emit(self, m) -> None:
        self.replies.append(m)


class Node(Roles):
    """This node (n1) leading, always holding its lease; its ISR writes are only recorded."""

    me = "n1"

    def __init__(self, loop):
        super().__init__()
        self.loop = loop
        self.writes: list[tuple[list[str], int]] = []

    def holds_lease(self) -> bool:
        return True

    def write_isr(self, leader, isr: list[str], seq: int) -> None:
        self.writes.append((list(isr), seq))


def partition(isr: list[str], written: tuple[int, int] | None = None) -> dict:
    p = {"replicas": ["n1", "n2", "n3"], "leader": "n1", "leader_epoch": EPOCH, "isr": isr,
         "min_isr": 2}
    if written is not None:
        p["isr_write"] = list(written)
    return p


async def leading(c_, roles: Node, isr: list[str]):
    """Queue ``qq`` declared with confirms on; this node its leader with ``isr``."""
    c_.send(1, C.Channel.Open())
    await c_.expect(C.Channel.OpenOk)
    c_.send(1, C.Queue.Declare(queue="qq", durable=True), C.Confirm.Select())
    await c_.expect(C.Queue.DeclareOk)
    await c_.expect(C.Confirm.SelectOk)
    host = c_.session.server.broker.partitions[0].link.host
    [q] = [q for q in host.queues.values() if q.name == "qq"]
    roles._lead(("/", "qq"), "partitions/qq", host, q, partition(isr))
    return roles.leading[("/", "qq")], q


async def stored(c_, q, n: int) -> None:
    """Publish one message and wait until the leader's log holds ``n`` durable."""
    c_.publish(1, "qq", b"m%d" % n)
    for _ in range(1000):
        if q.store.log.durable_offset >= n:
            return
        await asyncio.sleep(0.001)      # the commit round's fsync runs in a thread
    raise AssertionError(f"the log never held {n} durable")


def fetch(leader, link: Link, offset: int) -> None:
    leader.fetch(link, c.Fetch(req=offset + 1, qid=leader.queue.qid, offset=offset,
                               last_epoch=EPOCH, fetched_epoch=EPOCH, max_bytes=1 << 20))


async def n3_written_back(client, roles: Node):
    """ISR [n1, n2], one message confirmed, then n3 caught up and written back into the
    ISR (write 1, not yet in the view): (the leader, its queue, n2's link, n3's link)."""
    n2, n3 = Link("n2"), Link("n3")
    leader, q = await leading(client, roles, ["n1", "n2"])
    await stored(client, q, 1)
    fetch(leader, n2, 1)
    assert leader.hw == 1
    [ack] = await client.expect(C.Basic.Ack)
    assert ack.delivery_tag == 1
    fetch(leader, n3, 1)                    # n3 caught up: it goes back into the ISR
    leader._check_isr()
    assert roles.writes == [(["n1", "n2", "n3"], 1)]
    return leader, q, n2, n3


async def test_a_follower_being_added_to_the_isr_holds_the_hw_back_at_once(client):
    roles = Node(asyncio.get_running_loop())
    try:
        leader, q, n2, n3 = await n3_written_back(client, roles)
        # the write may be in etcd already (and n3 elected) while our view is behind
        await stored(client, q, 2)
        fetch(leader, n2, 2)
        assert leader.hw == 1               # not without n3: before, 2 (and confirmed)
        assert not [f for _, f in client.seen if isinstance(f, C.Basic.Ack)]
        leader.update(partition(["n1", "n2"]))      # a view from before the write
        assert leader.hw == 1
        fetch(leader, n3, 2)
        assert leader.hw == 2
        [ack] = await client.expect(C.Basic.Ack)
        assert ack.delivery_tag == 2
        leader.update(partition(["n1", "n2", "n3"], (EPOCH, 1)))   # the write, in the view
        assert leader.maximal_isr() == {"n1", "n2", "n3"} and not leader._adding
    finally:
        roles.stop_all()


async def test_an_addition_that_never_lands_is_dropped_by_the_next_write(client):
    roles = Node(asyncio.get_running_loop())
    try:
        leader, q, n2, n3 = await n3_written_back(client, roles)   # write 1: etcd refuses it
        leader._check_isr()                 # still counted: no second write for it
        assert len(roles.writes) == 1
        await stored(client, q, 2)
        fetch(leader, n2, 2)
        assert leader.hw == 1
        leader.caught_up["n3"] -= 2 * leader.lag_time   # n3 behind for long: lagging
        leader._check_isr()
        assert roles.writes[-1] == (["n1", "n2"], 2)
        assert leader.hw == 1               # write 2 is not in the view yet either
        leader.update(partition(["n1", "n2"], (EPOCH, 2)))
        assert leader.maximal_isr() == {"n1", "n2"}
        assert leader.hw == 2
        [ack] = await client.expect(C.Basic.Ack)
        assert ack.delivery_tag == 2
    finally:
        roles.stop_all()
