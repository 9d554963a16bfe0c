"""A publish that reaches a follower's copy of a replicated queue (forwarded across a leader
move, or sent by a node whose etcd view is behind) is nacked, never confirmed: only the
leader stores. Before, the copy stored it, confirmed it after its own commit round, and the
follower later cut it as a divergent tail: a confirmed message lost (the checker's cuts).
In one process: the session, the partition client, a ``LocalLink`` and the host, with a
``Follower`` of cluster/replication.py on the host's queue that never reaches a leader."""
from __future__ import annotations

import asyncio

from pamqp import commands as C

from amqpbroker.cluster.replication import Follower, Roles


class NoLeader(Roles):
    """The node as a follower sees it when its leader cannot be reached."""

    me = "n2"

    def __init__(self, loop):
        super().__init__()
        self.loop = loop

    def leader_address(self, follower):
        return None


async def declared_with_confirms(c, name: str):
    """Channel 1 open, queue ``name`` declared durable, confirms on: (its host, the queue)."""
    c.send(1, C.Channel.Open())
    await c.expect(C.Channel.OpenOk)
    c.send(1, C.Queue.Declare(queue=name, durable=True), C.Confirm.Select())
    await c.expect(C.Queue.DeclareOk)
    await c.expect(C.Confirm.SelectOk)
    host = c.session.server.broker.partitions[0].link.host
    [q] = [q for q in host.queues.values() if q.name == name]
    return host, q


async def test_a_publish_to_a_followers_copy_is_nacked_and_not_stored(client):
    c = client
    host, q = await declared_with_confirms(c, "qq")
    roles = NoLeader(asyncio.get_running_loop())
    follower = roles.following[("/", "qq")] = Follower(roles, ("/", "qq"), q)
    try:
        c.publish(1, "qq", b"to a follower")
        [nack] = await c.expect(C.Basic.Nack)
        assert nack.delivery_tag == 1
        assert q.store.log.end_offset == 0          # nothing stored in the follower's copy
        follower.stop()                             # no longer a replica here: stored again
        c.publish(1, "qq", b"to a plain queue")
        [ack] = await c.expect(C.Basic.Ack)
        assert ack.delivery_tag == 2
        assert q.replication is None and host.replicating == 0
    finally:
        roles.stop_all()


async def test_a_publish_to_a_replicas_copy_while_the_node_leaves_is_nacked(client):
    """``stop_all`` (the node leaving the cluster: SIGTERM) stops the roles before the AMQP
    listener closes: a publish still reaching the copy meanwhile is nacked, not stored as in
    a plain queue (which confirmed it, and the copy cut it later as a divergent tail: the
    checker's rolling restart lost 106 confirmed messages that way)."""
    c = client
    _, q = await declared_with_confirms(c, "qq")
    roles = NoLeader(asyncio.get_running_loop())
    roles.following[("/", "qq")] = Follower(roles, ("/", "qq"), q)
    roles.stop_all()
    c.publish(1, "qq", b"while the node leaves")
    [nack] = await c.expect(C.Basic.Nack)
    assert nack.delivery_tag == 1
    assert q.store.log.end_offset == 0
