"""The controller's pass per etcd event looks at the partitions the event touched
(``Placement``'s module doc, "A pass per change"), and every duty of the controller still
fires when its key changes: a new queue or topic placed, a deleted one's partitions gone, a
node's loss (new leaders from the ISR), ``ctl reassign``, ``ctl drain``, the preferred leader
back when its node returns.

In one process (``amqpbroker/testing/etcdview.py``): a node that is the controller, its
``Controller`` and ``Placement`` called back by a real ``Membership`` whose view the test
changes as the etcd watch does; the controller's writes change the same view and come back
as the next event (``settle``). A ``quiet`` change is one no event names: the probe of what a
pass looks at (a whole pass acts on it, a pass over the touched keys does not).
"""
from __future__ import annotations

import pytest

from amqpbroker.cluster.membership import NODES
from amqpbroker.cluster.metadata import meta_key
from amqpbroker.cluster.placement import PARTITIONS, partition_key, reassign_key
from amqpbroker.testing.etcdview import ViewNode

QUORUM = {"x-queue-type": "quorum"}


@pytest.fixture
async def ctl():
    """n1, the controller of a cluster of n1, n2, n3, with the vhost "/"."""
    n = ViewNode(None, controller=True)
    for name in ("n1", "n2", "n3"):
        n.put_node(name, 1)
    n.put_vhost("/")
    n.fresh_list()
    await n.settle()
    assert n.controller.active
    yield n
    await n.close()


def part(n: ViewNode, queue: str, i: int = 0) -> dict | None:
    return n.state(partition_key("/", queue, i))


async def declared(n: ViewNode, *names, arguments=QUORUM) -> None:
    for name in names:
        n.put_queue("/", name, arguments)
    n.event()
    await n.settle()


async def topic(n: ViewNode, name: str, partitions: int, factor: int) -> None:
    n.put(meta_key("exchange", "/", name), {
        "vhost": "/", "name": name, "type": "x-partitioned", "durable": True,
        "auto_delete": False, "internal": False,
        "arguments": {"x-partitions": partitions, "x-replication-factor": factor}})
    n.event()
    await n.settle()


def rewrite(n: ViewNode, queue: str, quiet: bool = False, **changes) -> None:
    """The partition state of ``queue`` with ``changes``, as its leader or the controller
    writes it."""
    n.put(partition_key("/", queue, 0), dict(part(n, queue), **changes), quiet)


async def test_a_pass_looks_at_the_partitions_the_event_touched(ctl):
    await declared(ctl, *(f"q{i}" for i in range(20)))
    assert all(part(ctl, f"q{i}")["leader"] for i in range(20))
    # a state a pass over every partition would act on: q0's leader is no live node
    rewrite(ctl, "q0", quiet=True, leader="gone")
    await declared(ctl, "new")
    assert part(ctl, "new")["replicas"]
    assert part(ctl, "q0")["leader"] == "gone", \
        "a pass over every partition: one the event did not touch acted on"
    before = ctl.placement.examined
    await declared(ctl, "new2")
    assert ctl.placement.examined - before == 2     # its declare, then its placement

    rewrite(ctl, "q0", leader="gone")               # now an event names it: failed over
    await ctl.settle()
    assert part(ctl, "q0")["leader"] in ("n1", "n2", "n3")

    rewrite(ctl, "q1", quiet=True, leader="gone")
    ctl.fresh_list()                                # a fresh list: every partition
    await ctl.settle()
    assert part(ctl, "q1")["leader"] in ("n1", "n2", "n3")


async def test_placement_balances_with_the_load_kept_across_passes(ctl):
    """Queues declared one event at a time: each placed where the fewest replicas and
    leaderships are, from the load counted once and kept up to date from the partition keys
    events touch (the same as counted afresh)."""
    for i in range(9):                  # one partition, one replica: anywhere
        await topic(ctl, f"c{i}", partitions=1, factor=1)
    assert [part(ctl, f"c{i}")["leader"] for i in range(9)] == ["n1", "n2", "n3"] * 3
    await declared(ctl, "q")
    assert part(ctl, "q")["replicas"] == ["n1", "n2", "n3"]
    assert ctl.placement._load == {"n1": [4, 4], "n2": [4, 3], "n3": [4, 3]}
    ctl.delete(meta_key("exchange", "/", "c0"))
    ctl.event()
    await ctl.settle()
    assert part(ctl, "c0") is None
    assert ctl.placement._load == {"n1": [3, 3], "n2": [4, 3], "n3": [4, 3]}
    ctl.fresh_list()                                # counted afresh: the same
    await ctl.settle()
    assert ctl.placement._load == {"n1": [3, 3], "n2": [4, 3], "n3": [4, 3]}


async def test_a_lost_node_s_partitions_get_leaders_from_the_isr(ctl):
    await declared(ctl, *(f"l{i}" for i in range(6)))
    led = [f"l{i}" for i in range(6) if part(ctl, f"l{i}")["leader"] == "n2"]
    assert led
    ctl.delete(NODES + "n2")
    ctl.event()
    await ctl.settle()
    for name in (f"l{i}" for i in range(6)):
        p = part(ctl, name)
        assert p["leader"] in ("n1", "n3") and "n2" not in p["isr"], (name, p)
        assert p["leader_epoch"] == (1 if name in led else 0), (name, p)


async def test_the_preferred_leaders_lead_again_when_their_node_is_back(ctl):
    """n2 returns (its key: a whole pass) and is in the ISR of the partitions it prefers
    again: their leadership moves back, one per pass, each next one a partition the pass
    before left, not found by a pass over every partition."""
    names = [f"p{i}" for i in range(12)]
    await declared(ctl, *names)
    preferred = [q for q in names if part(ctl, q)["replicas"][0] == "n2"]
    assert len(preferred) == 4
    ctl.delete(NODES + "n2")
    ctl.event()
    await ctl.settle()
    assert all(part(ctl, q)["leader"] != "n2" for q in names)
    for q in names:                 # the leaders took n2 back into their ISRs (no event yet)
        rewrite(ctl, q, quiet=True, isr=part(ctl, q)["isr"] + ["n2"])
    before = ctl.placement.examined
    ctl.put_node("n2", 1)
    ctl.event()
    await ctl.settle()
    assert [q for q in names if part(ctl, q)["leader"] == "n2"] == preferred
    # one whole pass (12), then one pass per move with what is left: 4 + 3 + 2 + 1
    assert ctl.placement.examined - before <= 12 + 4 + 3 + 2 + 1 + 4


async def test_a_reassignment_adds_then_finishes_when_the_new_replica_is_in_sync(ctl):
    await declared(ctl, "r", arguments={"x-queue-type": "quorum",
                                        "x-quorum-initial-group-size": 2})
    old = part(ctl, "r")["replicas"]
    new = next(n for n in ("n1", "n2", "n3") if n not in old)
    target = [new, old[0]]
    assert await ctl.placement.request_reassign("/", "r", target) == [0]
    ctl.event()
    await ctl.settle()
    p = part(ctl, "r")
    assert p["replicas"] == target + [old[1]] and new not in p["isr"]
    assert ctl.state(reassign_key(partition_key("/", "r", 0))) is not None
    rewrite(ctl, "r", isr=p["isr"] + [new])        # the leader: the new replica caught up
    await ctl.settle()
    p = part(ctl, "r")
    assert p["replicas"] == target and sorted(p["isr"]) == sorted(target)
    assert ctl.state(reassign_key(partition_key("/", "r", 0))) is None


async def test_a_drain_moves_replicas_off_the_node_and_new_queues_avoid_it(ctl):
    await declared(ctl, *(f"d{i}" for i in range(4)),
                   arguments={"x-queue-type": "quorum", "x-quorum-initial-group-size": 2})
    on_n3 = [f"d{i}" for i in range(4) if "n3" in part(ctl, f"d{i}")["replicas"]]
    assert on_n3
    await ctl.placement.set_draining("n3", True)
    ctl.event()
    await ctl.settle()
    for q in on_n3:             # the replica added on n1 or n2 waits to be in the ISR
        p = part(ctl, q)
        assert "n3" in p["replicas"] and len(p["replicas"]) == 3, (q, p)
        rewrite(ctl, q, isr=sorted(set(p["isr"]) | {"n1", "n2"}))   # the leader: caught up
    await ctl.settle()
    assert all("n3" not in part(ctl, f"d{i}")["replicas"] for i in range(4))
    await declared(ctl, "after", arguments=QUORUM)
    assert sorted(part(ctl, "after")["replicas"]) == ["n1", "n2"]


async def test_deleted_queues_and_topics_lose_their_partitions(ctl):
    await declared(ctl, "gone")
    await topic(ctl, "t", partitions=3, factor=2)
    assert [len(part(ctl, "t", i)["replicas"]) for i in range(3)] == [2, 2, 2]
    ctl.delete(meta_key("queue", "/", "gone"))
    ctl.delete(meta_key("exchange", "/", "t"))
    ctl.event()
    await ctl.settle()
    assert part(ctl, "gone") is None
    assert [k for k in ctl.membership.view if k.startswith(PARTITIONS)] == []


class CountingView(dict):
    """The membership's view, counting the passes over it (iterations of every key)."""
    scans = 0

    def __iter__(self):
        CountingView.scans += 1
        return super().__iter__()

    def items(self):
        CountingView.scans += 1
        return super().items()


async def test_an_exchange_event_costs_its_partitions_not_a_scan_of_the_view(ctl):
    """A topic object's event names its partitions, those it wants and those there are (a
    deleted topic's, with gaps as the controller deletes them one at a time), found
    without a pass over the view (bench/RESULTS.md "An exchange key event")."""
    await declared(ctl, *(f"q{i}" for i in range(50)))
    await topic(ctl, "t", partitions=12, factor=1)
    ctl.membership.view = CountingView(ctl.membership.view)
    ctl.put_exchange("/", "plain")
    ctl.event()
    await ctl.settle()
    CountingView.scans = 0
    ctl.put_exchange("/", "plain")                  # written again: an event, no change
    ctl.event()
    await ctl.settle()
    assert CountingView.scans == 0, "an exchange key's event scanned the view"

    for i in range(2, 10):                          # a gap: t-0, t-1, t-10, t-11 are left
        ctl.delete(partition_key("/", "t", i), quiet=True)
    ctl.delete(meta_key("exchange", "/", "t"))
    ctl.event()
    await ctl.settle()
    assert [k for k in ctl.membership.view if k.startswith(PARTITIONS + "%2F/t/")] == []
    assert all(part(ctl, f"q{i}")["leader"] for i in range(50))


@pytest.mark.parametrize("together", [False, True], ids=["two events", "one event"])
async def test_a_clean_leave_is_told_from_a_loss_however_the_watch_groups_it(ctl, caplog,
                                                                             together):
    """A node that leaves says "leaving" in its key, then revokes its lease (the key goes):
    the watch may bring both in one response (CI saw "was lost" for a clean leave), and the
    controller reads the state from the deleted key's last value."""
    caplog.set_level("INFO", logger="amqpbroker.cluster")
    leaving = ctl.state(NODES + "n2")
    leaving["state"] = "leaving"
    ctl.put(NODES + "n2", leaving)
    if not together:
        ctl.event()
    ctl.delete(NODES + "n2")
    ctl.event()
    ctl.delete(NODES + "n3")                   # no "leaving" first: its lease expired
    ctl.event()
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("controller:")]
    assert said == ["controller: node n2 left",
                    "controller: node n3 was lost (its lease expired)"]
    assert ctl.membership.departed == {}
