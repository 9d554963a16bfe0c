"""One etcd event costs what it changed: the metadata applier applies the ``meta/`` keys the
event touched (``Membership.touched``) and the replication reviews the queues whose keys it
touched, each in the order and with the rules of a whole pass; a fresh list of etcd, a node's
key and a vhost's stay whole passes.

In one process (``amqpbroker/testing/etcdview.py``): a ``--workers 0`` node's broker with its
applier, replication and forwarder called back by a real ``Membership``, whose view the test
changes as the etcd watch does. A ``quiet`` change is one the next event does not name: the
probe of what a pass looks at (a whole pass applies it, a pass over the touched keys not).
"""
from __future__ import annotations

import asyncio
import socket

import pytest

from amqpbroker.cluster.membership import NODES
from amqpbroker.cluster.metadata import META, binding_key, meta_key
from amqpbroker.config import Config
from amqpbroker.frontend.partition_client import PartitionClient
from amqpbroker.links.local import LocalLink
from amqpbroker.supervisor.owner import MetadataOwner
from amqpbroker.supervisor.topics import TYPE as TOPIC
from amqpbroker.testing.etcdview import ViewNode
from amqpbroker.worker.host import PartitionHost


@pytest.fixture
async def node(tmp_path):
    """A node n1 of a cluster with n2: the vhost "/", the exchange "x", after its start."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))     # n2's cluster port: dialled only
    config = Config(data_dir=str(tmp_path))
    broker = MetadataOwner(config, loop)
    partition = PartitionClient.of(broker, 0)
    LocalLink(PartitionHost(config, loop), partition)
    broker.start([partition])
    n = ViewNode(broker)
    n.put_vhost("/")
    n.put_node("n1", listener.getsockname()[1])
    n.put_node("n2", listener.getsockname()[1])
    n.put_exchange("/", "x")
    n.fresh_list()
    try:
        yield n
    finally:
        await n.close()
        broker.close()
        listener.close()


async def settled(n: ViewNode) -> None:
    """What the passes started (queue opens) is done."""
    await n.metadata._settle()
    for vh in n.broker.vhosts.values():
        for ref in list(vh.queues.values()):
            await ref.opened


def bound(n: ViewNode, vhost: str = "/") -> set:
    return {(ex.name, dest.name, rk) for ex, dest, _, rk, _ in n.broker.vhosts[vhost].bindings()
            if ex.name}


async def test_the_applier_applies_the_keys_an_event_touched(node):
    vh = node.broker.vhosts["/"]
    node.put_queue("/", "a")
    node.put_queue("/", "b")
    node.event()
    await settled(node)
    assert {"a", "b"} <= set(vh.queues)

    node.delete(meta_key("queue", "/", "a"), quiet=True)    # not named by the next event
    node.put_queue("/", "c")
    node.event()
    await settled(node)
    assert "c" in vh.queues
    assert "a" in vh.queues, "a pass over every key: a key the event did not touch applied"

    node.fresh_list()                   # a fresh list of etcd (a broken watch): every key
    await settled(node)
    assert "a" not in vh.queues


async def test_a_key_deleted_and_created_again_or_touched_twice_in_one_event(node):
    """One event: queue b deleted and declared again with other arguments (another create
    revision: the old incarnation goes, its binding with it, the new one comes, bound
    again); c declared and deleted (nothing); d declared twice (the second one)."""
    vh = node.broker.vhosts["/"]
    node.put_queue("/", "b")
    node.event()
    node.put_binding("/", "x", "b", "k")
    node.event()
    await settled(node)
    old = vh.queues["b"]
    assert bound(node) == {("x", "b", "k")}

    node.delete(binding_key("/", "x", "queue", "b", "k", {}))
    node.delete(meta_key("queue", "/", "b"))
    node.put_queue("/", "b", {"x-max-length": 5})
    node.put_binding("/", "x", "b", "k")
    node.put_queue("/", "c")
    node.delete(meta_key("queue", "/", "c"))
    node.put_queue("/", "d", {"x-max-length": 1})
    node.put_queue("/", "d", {"x-max-length": 2})
    node.event()
    await settled(node)
    assert vh.queues["b"] is not old and old.deleted
    assert vh.queues["b"].arguments == {"x-max-length": 5}
    assert bound(node) == {("x", "b", "k")}
    assert "c" not in vh.queues
    assert vh.queues["d"].arguments == {"x-max-length": 2}


async def test_kinds_in_order_and_a_vhost_deleted_with_everything_in_it(node):
    """Puts in kind order (a binding after both ends, whatever the keys' order), deletes in
    reverse; a vhost deleted with every key under it (the push's prefix deletes: one event)
    takes them all."""
    node.put_vhost("v")
    node.put_exchange("v", "y")
    node.put_queue("v", "e")
    node.put_binding("v", "y", "e", "k")
    node.event()
    await settled(node)
    assert bound(node, "v") == {("y", "e", "k")}

    def of_v(keys) -> list:
        return [k for k in keys if k.startswith(META) and k[len(META):].split("/")[1] == "v"]
    assert len(of_v(node.membership.view)) == 4
    for key in of_v(node.membership.view):
        node.delete(key)
    node.event()
    await settled(node)
    assert "v" not in node.broker.vhosts
    assert of_v(node.metadata.applied) == []
    assert "/" in node.broker.vhosts and bound(node) == set()


async def replicated(node, *names) -> None:
    """Queues with replicas n1, n2, n1 leading, each a ``Leader`` here."""
    for name in names:
        node.put_queue("/", name)
        node.put_partition("/", name, ["n1", "n2"], "n1")
    node.event()
    await settled(node)
    node.replication.review()               # as the retry after the opens does
    assert set(node.replication.leading) == {("/", name) for name in names}


async def test_replication_reviews_the_queues_whose_keys_an_event_touched(node):
    repl = node.replication
    await replicated(node, "r1", "r2")
    node.put_partition("/", "r1", ["n1", "n2"], "n1", isr=["n1"])
    node.put_partition("/", "r2", ["n1", "n2"], "n1", isr=["n1"], quiet=True)
    node.event()
    assert repl.leading["/", "r1"].isr == ["n1"]
    assert repl.leading["/", "r2"].isr == ["n1", "n2"], \
        "a pass over every queue: a partition the event did not touch reviewed"
    node.put_partition("/", "r2", ["n1", "n2"], "n1", isr=["n1"])
    node.event()
    assert repl.leading["/", "r2"].isr == ["n1"]

    # the queue's object deleted: its role ends with it
    node.delete(meta_key("queue", "/", "r1"))
    node.event()
    assert ("/", "r1") not in repl.leading and ("/", "r1") not in repl.following


async def test_a_node_key_or_a_fresh_list_reviews_every_queue(node):
    """A node's key (it died, left, registered again) may change every partition it holds:
    every queue is reviewed, as after a fresh list of etcd."""
    repl = node.replication
    await replicated(node, "r3", "r4", "r5")
    node.put_partition("/", "r3", ["n1", "n2"], "n2", 1, quiet=True)
    node.put_partition("/", "r4", ["n1", "n2"], "n2", 1, quiet=True)
    node.delete(NODES + "n2")
    node.event()
    assert set(repl.following) == {("/", "r3"), ("/", "r4")}
    assert set(repl.leading) == {("/", "r5")}

    node.put_partition("/", "r5", ["n1", "n2"], "n1", 0, isr=["n1"], quiet=True)
    node.fresh_list()
    assert repl.leading["/", "r5"].isr == ["n1"]


async def test_the_node_keys_are_found_again_only_when_one_changes(node):
    """``Membership.nodes`` (the controller's and the forwarder's every pass) reads the node
    keys found once (``under``), until an event touches one of them: not a scan of every
    queue's keys per event."""
    m = node.membership
    found = m.under(NODES)
    node.put_queue("/", "z")
    node.event()
    assert m.under(NODES) is found
    node.put_node("n3", 1)
    node.event()
    assert set(m.nodes()) == {"n1", "n2", "n3"}
    node.delete(NODES + "n2")
    node.event()
    assert set(m.nodes()) == {"n1", "n3"}
    node.fresh_list()
    assert set(m.nodes()) == {"n1", "n3"}


async def test_the_local_copies_looked_at_are_those_of_the_queues_an_event_touched(node):
    """A queue led by another node keeps its copy here (forward.py's ``local_copies``); the
    copy goes with the queue's delete, found by the queues the event touched, not by a look
    at every copy on every event (O(forwarded queues) per event on every node)."""
    fw, vh = node.forwarder, node.broker.vhosts["/"]
    for name in ("f1", "f2"):
        node.put_queue("/", name)
    node.event()
    await settled(node)
    for name in ("f1", "f2"):
        node.put_partition("/", name, ["n2"], "n2")
    node.event()
    f1, f2 = vh.queues["f1"], vh.queues["f2"]
    assert f1 in fw.local_copies and f2 in fw.local_copies
    f2.deleted = True               # the probe: a copy to drop that no event names
    node.put_queue("/", "other")
    node.event()
    await node.metadata._settle()   # (f1 and f2 open on n2, which never answers here)
    await vh.queues["other"].opened
    assert f2 in fw.local_copies, "every copy looked at on an event that did not touch it"
    node.delete(meta_key("queue", "/", "f1"))
    node.event()
    await node.metadata._settle()
    assert f1.deleted and f1 not in fw.local_copies
    node.fresh_list()               # a fresh list: every copy
    assert f2 not in fw.local_copies


def local_copy(node, name: str):
    """This node's open copy of queue ``name`` (the host's ``Queue``)."""
    vh = node.broker.vhosts["/"]
    return node.forwarder.local_host().queues[node.replication._local_qid(vh.queues[name])]


async def test_a_replicated_queue_without_a_leader_holds_its_copy_here(node):
    """A queue the controller will replicate but has not placed yet (a quorum queue, a
    topic's partition with ``x-replication-factor`` 2), and a replicated partition whose
    leader is gone with no in-sync replica alive: the copy here is held (``Held``), it takes
    no publish and delivers nothing, until a leader is placed. A classic queue (one replica,
    placed on its declaring node) is served meanwhile."""
    repl = node.replication
    node.put_queue("/", "qq", {"x-queue-type": "quorum"})
    node.put_queue("/", "classic")
    node.put(meta_key("exchange", "/", "t"), {
        "vhost": "/", "name": "t", "type": TOPIC, "durable": True, "auto_delete": False,
        "internal": False, "arguments": {"x-partitions": 2, "x-replication-factor": 2}})
    node.event()
    await settled(node)                     # held at once: the opens here are synchronous
    assert set(repl.held) == {("/", "qq"), ("/", "t-0"), ("/", "t-1")}
    q = local_copy(node, "qq")
    held = repl.held["/", "qq"]
    assert q.replication is held and not held.accepting() and not held.serving()
    assert local_copy(node, "classic").replication is None

    node.put_partition("/", "qq", ["n1", "n2"], "n1")
    node.event()
    leader = repl.leading["/", "qq"]
    assert ("/", "qq") not in repl.held and q.replication is leader
    assert q.host.replicating == 3          # the leader and the topic's two held partitions

    node.put_partition("/", "qq", ["n1", "n2"], None, 1, isr=["n2"])     # no leader alive
    node.event()
    assert ("/", "qq") not in repl.leading and leader.stopped
    held = repl.held["/", "qq"]
    assert q.replication is held and not held.accepting()
    assert q.host.replicating == 3
    node.delete(meta_key("queue", "/", "qq"))
    node.event()
    assert ("/", "qq") not in repl.held and q.host.replicating == 2
