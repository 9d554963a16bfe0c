"""Partial cuts (issue 12; docs/CLUSTER.md, "Fencing" and "The checker, as built"): the
leader of a replication-factor-3 quorum queue cut from etcd only, or from the other nodes
only, while the clients still reach it. Three real nodes, each in its own network namespace
(``NetnsLab``; root, ``nft``), a real etcd on the bridge, pika clients in the root namespace.
A cut is an nft drop rule in the node's namespace, so TCP hangs, never resets.

- From etcd only: the leader fences itself within the lease TTL, confirms nothing more (a
  publish through it is nacked), a new leader from the ISR takes over, and after healing
  every confirmed message is there once, in order.
- From its peers only: the leader keeps its lease (not fenced, still the leader in etcd);
  its followers cannot fetch, so it drops them from the ISR after the lag time, and then
  ``min-insync`` (2 of 3) nacks publishes; after healing they return and nothing confirmed
  is lost."""
import base64
import json
import time
import urllib.request

import pika
import pytest

from amqpbroker.cluster.placement import partition_key
from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.netns import NetnsLab
from amqpbroker.testing.cluster_clients import (connect, declare_quorum, drain,
                                               publish_until_confirmed, queue_on)

TTL = 3
LAG = 2.0       # --replica-lag-time: a follower that cannot fetch leaves the ISR after it


@pytest.fixture
def cluster(tmp_path):
    with NetnsLab(["n1", "n2", "n3"]) as lab, \
            LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=TTL, netns=lab,
                         args=("--replica-lag-time", str(LAG)), together=True) as c:
        yield c


def bodies(got):
    return [b for b, _ in got]


def partition_in_etcd(cluster, queue):
    """The queue's partition state as etcd has it: where the decisions are made."""
    body = json.dumps({"key": base64.b64encode(partition_key("/", queue, 0).encode()).decode()})
    req = urllib.request.Request(cluster.etcd.url + "/v3/kv/range", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        kvs = json.load(resp).get("kvs", [])
    return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else {}


def publish(node, queue, bodies):
    """Publish with confirms, one at a time; pika raises NackError on a nack."""
    conn = connect(node, timeout=10)
    ch = conn.channel()
    ch.confirm_delivery()
    try:
        for body in bodies:
            ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        if conn.is_open:
            conn.close()


def fenced(node):
    return [n for n in node.api("nodes") if n["node_name"] == node.node][0]["fenced"]


def healed(cluster, queue):
    """Every node sees three unfenced nodes and a full ISR of the queue."""
    for node in cluster.nodes:
        view = node.api("nodes")
        if len(view) != 3 or any(n["fenced"] for n in view):
            return False
        if len(queue_on(node, queue).get("isr", ())) != 3:
            return False
    return True


def test_a_leader_cut_from_etcd_only_fences_itself_and_a_new_leader_takes_over(cluster):
    leader = declare_quorum(cluster, "cut-etcd")
    others = [n for n in cluster.nodes if n is not leader]
    before = [b"before-%03d" % i for i in range(50)]
    publish(leader, "cut-etcd", before)

    cluster.netns.cut_from_etcd(leader.node, cluster.etcd.client_port)
    cut = time.monotonic()
    try:
        # the clients still reach it, and it says it is fenced within the TTL
        cluster.wait_until(lambda: fenced(leader), timeout=2 * TTL, interval=0.05)
        assert time.monotonic() - cut < TTL + 1
        # it confirms nothing: a publish through it is nacked
        with pytest.raises(pika.exceptions.NackError):
            publish(leader, "cut-etcd", [b"through-the-fenced-leader"])
        # a new leader from the ISR, elected without it
        new = cluster.wait_until(lambda: (lambda p: p.get("leader") not in (None, leader.node)
                                          and p)(partition_in_etcd(cluster, "cut-etcd")),
                                 timeout=4 * TTL)
        assert new["leader"] in {n.node for n in others}
        assert new["leader_epoch"] > 0 and leader.node not in new["isr"]
        # which confirms, through either survivor
        during = [b"during-%03d" % i for i in range(30)]
        publish_until_confirmed(others[0], "cut-etcd", during[:15])
        publish_until_confirmed(others[1], "cut-etcd", during[15:])
    finally:
        cluster.netns.heal(leader.node)
    cluster.wait_until(lambda: healed(cluster, "cut-etcd"), timeout=60, interval=0.2)
    got = bodies(drain(others[0], "cut-etcd", len(before) + len(during) + 1))
    assert got == before + during       # the nacked message was never stored
    assert bodies(drain(others[1], "cut-etcd", 1)) == []


def test_a_leader_cut_from_its_peers_only_keeps_its_lease_and_nacks_below_min_insync(cluster):
    leader = declare_quorum(cluster, "cut-peers")
    others = [n for n in cluster.nodes if n is not leader]
    before = [b"before-%03d" % i for i in range(50)]
    publish(leader, "cut-peers", before)
    epoch = partition_in_etcd(cluster, "cut-peers")["leader_epoch"]

    cluster.netns.cut_from_peers(leader.node)
    try:
        # its followers stop fetching: it drops them from the ISR (through etcd, which it
        # still reaches) after the lag time, and stays the leader at the same epoch
        shrunk = cluster.wait_until(lambda: (lambda p: p.get("isr") == [leader.node] and p)(
            partition_in_etcd(cluster, "cut-peers")), timeout=LAG + 4 * TTL, interval=0.1)
        assert shrunk["leader"] == leader.node and shrunk["leader_epoch"] == epoch
        assert not fenced(leader)
        # one in-sync replica of the 2 that min-insync asks for: a publish is nacked
        with pytest.raises(pika.exceptions.NackError):
            publish(leader, "cut-peers", [b"below-min-insync"])
        assert not fenced(leader) and \
            partition_in_etcd(cluster, "cut-peers")["leader"] == leader.node
    finally:
        cluster.netns.heal(leader.node)
    # the followers fetch again and return to the ISR; publishes are confirmed again
    cluster.wait_until(lambda: healed(cluster, "cut-peers"), timeout=60, interval=0.2)
    after = [b"after-%03d" % i for i in range(20)]
    publish_until_confirmed(others[0], "cut-peers", after)
    got = bodies(drain(others[1], "cut-peers", len(before) + len(after) + 1))
    assert got == before + after
    assert bodies(drain(leader, "cut-peers", 1)) == []
