"""Membership's lease, the fencing hook and the election, in-process against a real etcd.

Two ``Membership`` + ``Controller`` pairs in one process stand for two nodes; what a node
process adds around them (the supervisor, /api/nodes) is tested in test_cluster_nodes.py.
"""
import asyncio
import time

import pytest

from amqpbroker.cluster.controller import Controller
from amqpbroker.cluster.etcd import EtcdClient
from amqpbroker.cluster.membership import Membership

TTL = 2


class Node:
    def __init__(self, url, name):
        self.etcd = EtcdClient(url)
        self.membership = Membership(self.etcd, name, {"host": "127.0.0.1"}, TTL)
        self.controller = Controller(self.membership)
        self.fence_changes = []
        self.membership.on_fence.append(self.fence_changes.append)

    async def until(self, condition, timeout=10.0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            assert loop.time() < deadline, "condition not met in time"
            try:
                await asyncio.wait_for(self.membership.changed(), 0.1)
            except asyncio.TimeoutError:
                pass
        return loop.time()

    async def close(self):
        await self.membership.leave()
        await self.etcd.close()


@pytest.fixture
async def nodes(etcd):
    made = []

    async def make(name):
        node = Node(etcd.url, name)
        await node.membership.join(10)
        made.append(node)
        return node
    yield make
    for node in made:
        await node.close()


async def test_join_registers_and_the_first_node_is_controller(nodes):
    n1 = await nodes("n1")
    n2 = await nodes("n2")
    await n2.until(lambda: set(n2.membership.nodes()) == {"n1", "n2"})
    await n1.until(lambda: n1.controller.is_controller())
    assert not n2.controller.is_controller()
    assert n1.controller.leader() == n2.controller.leader() == "n1"
    assert n1.membership.holds_lease() and not n1.membership.fenced.is_set()
    assert n1.membership.nodes()["n2"]["state"] == "running"


async def test_clean_leave_hands_over_at_once(nodes):
    n1 = await nodes("n1")
    n2 = await nodes("n2")
    await n2.until(lambda: n2.controller.leader() == "n1")
    epoch = n2.controller.epoch()
    started = asyncio.get_running_loop().time()
    await n1.membership.leave()
    at = await n2.until(n2.controller.is_controller)
    assert at - started < 1.0                   # not after the lease TTL: at once
    assert "n1" not in n2.membership.nodes()
    assert n2.controller.epoch() > epoch        # a new controller, a higher epoch


async def test_etcd_paused_fences_within_the_ttl_and_recovers(etcd, nodes):
    n1 = await nodes("n1")
    await n1.until(n1.controller.is_controller)
    etcd.pause()
    paused = asyncio.get_running_loop().time()
    try:
        at = await n1.until(n1.membership.fenced.is_set, timeout=TTL + 5)
        # fenced no later than the lease could have expired in etcd
        assert at - paused <= TTL + 0.5
        assert not n1.membership.holds_lease()
        assert not n1.controller.is_controller()
        assert n1.fence_changes == [True]
    finally:
        etcd.resume()
    old_lease = n1.membership.lease
    await n1.until(lambda: not n1.membership.fenced.is_set(), timeout=TTL + 10)
    assert n1.fence_changes == [True, False]
    assert n1.membership.holds_lease() and n1.membership.lease not in (0, old_lease)
    await n1.until(lambda: n1.membership.key in n1.membership.view
                   and n1.controller.is_controller())


async def test_etcd_restarted_fences_then_recovers(etcd, nodes):
    n1 = await nodes("n1")
    etcd.stop()
    try:
        await n1.until(n1.membership.fenced.is_set, timeout=TTL + 5)
    finally:
        etcd.restart()
    await n1.until(lambda: not n1.membership.fenced.is_set(), timeout=TTL + 15)
    await n1.until(n1.controller.is_controller)


async def test_a_node_that_slept_past_its_lease_knows_before_any_timer_runs(nodes):
    """A paused node (SIGSTOP, a GC or disk stall) wakes up: the first check it makes,
    synchronously, before the loop runs a renewal or the fencing timer, says no."""
    n1 = await nodes("n1")
    await n1.until(n1.controller.is_controller)
    assert n1.membership.holds_lease()
    time.sleep(TTL + 0.2)                       # the whole event loop stalls
    assert not n1.membership.holds_lease()
    assert not n1.controller.is_controller()
    # and then it rejoins: renews, or, when etcd expired the lease meanwhile, a new one
    await n1.until(lambda: n1.membership.holds_lease() and n1.controller.is_controller(),
                   timeout=TTL + 10)


async def test_a_change_right_after_asking_for_the_next_one_is_not_missed(nodes):
    """``wait_for(m.changed(), t)``: the waiter is registered when asked for, not when its
    task first runs, so a change that comes in between wakes it (it used to sleep through
    it: a cluster start waiting for its own writes hung for 10 s now and then)."""
    n1 = await nodes("n1")
    m = n1.membership
    waiting = asyncio.ensure_future(asyncio.wait_for(m.changed(), 5))
    m._notify()                 # the mirror applies a change before that task has run
    await asyncio.wait_for(waiting, 1)
