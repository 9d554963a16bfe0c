"""Membership's lease, the fencing hook and the election, in-process against a real etcd.

Two ``Membership`` + ``Controller`` pairs in one process stand for two nodes; what a node
process adds around them (the supervisor, /api/nodes) is tested in test_cluster_nodes.py.
"""
import asyncio
import os
import time

import pytest

from amqpbroker.cluster.controller import Controller
from amqpbroker.cluster.etcd import EtcdClient
from amqpbroker.cluster.membership import DiskHeartbeat, Membership
from amqpbroker.testing.diskstall import StallableDir

TTL = 2


class Node:
    def __init__(self, url, name):
        self.etcd = EtcdClient(url)
        self.membership = Membership(self.etcd, name, {"host": "127.0.0.1"}, TTL)
        self.controller = Controller(self.membership)
        self.fence_changes = []
        self.membership.on_fence.append(self.fence_changes.append)
        # what holds_lease() said at each fencing change, when the data layer acts on it
        self.lease_held_at_change = []
        self.membership.on_fence.append(
            lambda fenced: self.lease_held_at_change.append(self.membership.holds_lease()))

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
        # the watch dies with the cut (it may, silently): the node lists afresh on its way
        # back, and its view lags its new registration for that round trip
        mirror = n1.membership._tasks[1]
        mirror.cancel()
        await asyncio.gather(mirror, return_exceptions=True)
    finally:
        etcd.resume()
    old_lease = n1.membership.lease
    await n1.until(lambda: not n1.membership.fenced.is_set(), timeout=TTL + 10)
    assert n1.fence_changes == [True, False]
    # unfenced only once the view has seen the new registration: a data layer that rejoins
    # on "no longer fenced" must find the lease held then (CI once saw it not held yet)
    assert n1.lease_held_at_change == [False, True]
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


async def test_a_node_whose_disk_stalls_while_its_loop_runs_fences_itself(etcd, nodes, tmp_path):
    """LavinMQ #2151: the disk hangs but nothing on the event loop touches it, so renewals
    keep succeeding; without a look at the disk the node keeps its lease (a zombie leader).
    The data directory is a FUSE mount whose daemon is SIGSTOPped (a real stall: the
    heartbeat's write waits in the kernel). Within TTL/2 and a beat the node fences itself,
    its key leaves etcd (the others see it go), and it does not register again until the
    disk answers; then it does, with a new lease."""
    n1 = await nodes("n1")
    n2 = await nodes("n2")
    with StallableDir(tmp_path / "disk", tmp_path / "data") as disk:
        n1.membership.watch_disk(disk.mountpoint)
        await n1.until(lambda: os.path.exists(disk.mountpoint + "/" + DiskHeartbeat.FILE))
        await n1.until(n1.controller.is_controller)
        old_lease = n1.membership.lease
        loop = asyncio.get_running_loop()
        disk.pause()
        stalled = loop.time()
        try:
            at = await n1.until(lambda: not n1.membership.holds_lease(), timeout=4 * TTL)
            assert at - stalled < TTL       # TTL/2 of a pending fsync, the beat, the watch
            await n1.until(n1.membership.fenced.is_set)
            assert not n1.controller.is_controller()
            # the lease was revoked: n2 sees n1's key go and takes the controller's place
            await n2.until(lambda: "n1" not in n2.membership.nodes(), timeout=TTL)
            await n2.until(n2.controller.is_controller, timeout=TTL)
            # renewals and registrations go on, and etcd answers them, yet n1 stays out
            await asyncio.sleep(TTL)        # a span of the fault, not a synchronisation
            assert n1.membership.fenced.is_set() and not n1.membership.holds_lease()
            assert "n1" not in n2.membership.nodes()
        finally:
            disk.resume()
        await n1.until(lambda: not n1.membership.fenced.is_set(), timeout=TTL + 10)
        assert n1.membership.holds_lease() and n1.membership.lease not in (0, old_lease)
        await n2.until(lambda: "n1" in n2.membership.nodes())
        n1.membership.disk.stop()
