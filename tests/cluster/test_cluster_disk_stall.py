"""A leader whose disk stops answering (LavinMQ #2151: a disk stall left a zombie leader that
kept its lease) must stop confirming and lose the leadership within the lease time, and no
confirmed message may be lost. Three real nodes and a real etcd; each node's data directory
is a FUSE pass-through (``amqpbroker.testing.diskstall``, root and ``bindfs``) whose daemon
is SIGSTOPped: every operation that reaches that file system then waits in the kernel, as on
a hung device, until it is SIGCONTed (docs/CLUSTER.md, "Fencing")."""
import base64
import json
import os
import time
import urllib.request

import pika
import pytest

from amqpbroker.cluster.placement import partition_key
from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.diskstall import StallableDir
from amqpbroker.testing.cluster_clients import (connect, declare_quorum, drain,
                                               publish_until_confirmed, queue_on)

TTL = 3


@pytest.fixture
def stalls(tmp_path):
    """A stallable data directory per node, n1..n3, mounted where LocalCluster puts them."""
    made = {}
    try:
        for name in ("n1", "n2", "n3"):
            made[name] = StallableDir(tmp_path / "disks" / name,
                                      tmp_path / "cluster" / name).mount()
        yield made
    finally:
        for d in made.values():     # resumed and unmounted even when a node still waits on it
            d.close()


def bodies(got):
    return [b for b, _ in got]


def leader_seen_by(node, queue):
    return queue_on(node, queue).get("leader")


def leader_in_etcd(cluster, queue):
    """The queue's partition leader as etcd has it (a node's management API may itself wait
    on the stalled leader, so the decision is read where it is made)."""
    body = json.dumps({"key": base64.b64encode(partition_key("/", queue, 0).encode()).decode()})
    req = urllib.request.Request(cluster.etcd.url + "/v3/kv/range", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        kvs = json.load(resp).get("kvs", [])
    return json.loads(base64.b64decode(kvs[0]["value"]))["leader"] if kvs else None


def test_a_leader_whose_disk_stalls_loses_the_leadership_within_the_lease_and_loses_nothing(
        tmp_path, stalls):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=TTL,
                      together=True) as cluster:
        leader = declare_quorum(cluster, "stall")
        others = [n for n in cluster.nodes if n is not leader]
        before = [b"before-%03d" % i for i in range(50)]
        conn = connect(others[0])
        ch = conn.channel()
        ch.confirm_delivery()
        for body in before:
            ch.basic_publish("", "stall", body, pika.BasicProperties(delivery_mode=2))
        conn.close()

        # the disk stops while the leader is idle: nothing asks it to write, so only the
        # node's own check of its disk can tell (the zombie of #2151 kept its lease so)
        stalls[leader.node].pause()
        stalled = time.monotonic()
        assert leader_in_etcd(cluster, "stall") == leader.node
        new = cluster.wait_until(lambda: (lambda now: now != leader.node and now)(
            leader_in_etcd(cluster, "stall")), timeout=4 * TTL, interval=0.02)
        took = time.monotonic() - stalled
        print(f"leadership moved from {leader.node} to {new} {took:.2f}s after its disk stalled")
        # within the lease time (the loop stuck on the disk would only let the lease run out
        # a TTL after it stuck: 5.6 s measured without the heartbeat)
        assert took < TTL

        # the new leader confirms publishes made through either survivor while the old
        # leader's disk is still stalled
        during = [b"during-%03d" % i for i in range(30)]
        publish_until_confirmed(others[0], "stall", during[:15])
        publish_until_confirmed(others[1], "stall", during[15:])
        assert leader_seen_by(others[0], "stall") == f"amqpbroker@{new}"

        # the disk answers again: the old leader rejoins (as a follower, its lease new) and
        # every confirmed message is there once, in order
        stalls[leader.node].resume()
        cluster.wait_until(lambda: all(len(queue_on(n, "stall").get("isr", ())) == 3
                                       for n in cluster.nodes), timeout=60)
        got = bodies(drain(others[1], "stall", len(before) + len(during)))
        assert got == before + during
        assert bodies(drain(others[0], "stall", 1)) == []
        assert os.path.ismount(stalls[leader.node].mountpoint)
