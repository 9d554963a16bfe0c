"""The operator's side of a cluster (docs/CLUSTER.md sections 1-2): a definitions import that
goes through etcd, `ctl reassign`, `ctl drain`, leadership back to the preferred replica,
exclusive queues on their node's lease; three real nodes, a real etcd, pika and HTTP."""
import json
import os
import subprocess

import pika
import pytest

from amqpbroker import child
from amqpbroker.testing.cluster_clients import connect, ctl

LEASE_TTL = 3          # the cluster fixture's lease TTL (conftest.py)


def call(node, method, path, body=None):
    """(status, decoded JSON body or None) of a management API call."""
    return node.request(method, path, body)


def queues(node):
    return {q["name"]: q for q in node.api("queues")}


def bound(node, exchange, queue, key) -> bool:
    return any(b["source"] == exchange and b["destination"] == queue
               and b["routing_key"] == key for b in node.api("bindings"))


# ---------------------------------------------------------------- the definitions import
def test_an_import_on_one_node_declares_everywhere_and_a_bad_one_changes_nothing(
        restored_cluster):
    cluster = restored_cluster
    n1, n2, n3 = cluster.nodes
    bad = {"vhosts": [{"name": "imported"}],
           "exchanges": [{"name": "imp-x", "vhost": "/", "type": "topic", "durable": True,
                          "auto_delete": False, "internal": False, "arguments": {}}],
           "queues": [{"name": "imp-bad", "vhost": "/", "durable": True,
                       "auto_delete": False, "arguments": {}}],
           "bindings": [{"source": "imp-x", "vhost": "/", "destination": "imp-bad",
                         "destination_type": "queue", "routing_key": "a.*",
                         "arguments": {}},
                        {"source": "imp-x", "vhost": "nowhere", "destination": "imp-bad",
                         "destination_type": "queue", "routing_key": "a.*",
                         "arguments": {}}]}
    status, body = call(n1, "POST", "definitions", bad)
    assert status == 400 and "no_such_vhost 'nowhere'" in body["reason"]
    good = {"vhosts": [{"name": "imported"}],
            "permissions": [{"user": "guest", "vhost": "imported", "configure": ".*",
                             "write": ".*", "read": ".*"}],
            "exchanges": [{"name": "imp-x", "vhost": "/", "type": "topic", "durable": True,
                           "auto_delete": False, "internal": False, "arguments": {}}],
            "queues": [{"name": "imp-q", "vhost": "/", "durable": True, "auto_delete": False,
                        "arguments": {"x-max-length": 5}},
                       {"name": "imp-quorum", "vhost": "imported", "durable": True,
                        "auto_delete": False, "arguments": {"x-queue-type": "quorum"}}],
            "bindings": [{"source": "imp-x", "vhost": "/", "destination": "imp-q",
                          "destination_type": "queue", "routing_key": "a.*",
                          "arguments": {}}]}
    assert call(n1, "POST", "definitions", good)[0] == 204
    # on the importing node at once (read-your-writes), on the others from etcd
    assert bound(n1, "imp-x", "imp-q", "a.*")
    for node in (n2, n3):
        cluster.wait_until(lambda: bound(node, "imp-x", "imp-q", "a.*")
                           and any(q["name"] == "imp-quorum" and q["vhost"] == "imported"
                                   for q in node.api("queues")))
        assert queues(node)["imp-q"]["arguments"] == {"x-max-length": 5}
        # nothing of the refused document anywhere
        assert "imp-bad" not in queues(node)
    assert "imp-bad" not in queues(n1)
    # the imported quorum queue is placed like a declared one
    q = cluster.wait_until(lambda: next((q for q in n2.api("queues")
                                         if q["name"] == "imp-quorum" and q.get("leader")),
                                        None))
    assert len(q["members"]) == 3
    # the binding routes on n3, and a restart of n2 keeps all of it (it is etcd's now)
    conn = connect(n3)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("imp-x", "a.b", b"imported route", mandatory=True)
    assert ch.basic_get("imp-q", auto_ack=True)[2] == b"imported route"
    conn.close()
    n2.stop()
    cluster.start_node(n2)
    assert "imp-q" in queues(n2) and bound(n2, "imp-x", "imp-q", "a.*")
    # an import of what exists keeps what exists (RabbitMQ's rule), on every node
    again = {"queues": [{"name": "imp-q", "vhost": "/", "durable": True, "auto_delete": False,
                         "arguments": {"x-max-length": 99}}]}
    assert call(n3, "POST", "definitions", again)[0] == 204
    assert queues(n1)["imp-q"]["arguments"] == {"x-max-length": 5}


def test_a_per_vhost_import_goes_through_etcd_too(shared_cluster):
    cluster = shared_cluster
    n1, n2, _ = cluster.nodes
    doc = {"queues": [{"name": "vh-imp", "durable": True, "auto_delete": False,
                       "arguments": {}}],
           "exchanges": [{"name": "vh-x", "type": "fanout", "durable": True,
                          "auto_delete": False, "internal": False, "arguments": {}}],
           "bindings": [{"source": "vh-x", "destination": "vh-imp",
                         "destination_type": "queue", "routing_key": "", "arguments": {}}]}
    assert call(n2, "POST", "definitions/%2F", doc)[0] == 204
    cluster.wait_until(lambda: bound(n1, "vh-x", "vh-imp", ""))


def test_load_definitions_at_start_goes_through_etcd_and_a_refused_file_stops_the_start(
        cluster, tmp_path):
    n1, n2, n3 = cluster.nodes
    good = tmp_path / "good.json"
    good.write_text(json.dumps({
        "exchanges": [{"name": "boot-x", "vhost": "/", "type": "direct", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "queues": [{"name": "boot-q", "vhost": "/", "durable": True, "auto_delete": False,
                    "arguments": {}}],
        "bindings": [{"source": "boot-x", "vhost": "/", "destination": "boot-q",
                      "destination_type": "queue", "routing_key": "k", "arguments": {}}]}))
    n3.stop()
    n3.args += ["--load-definitions", str(good)]
    cluster.start_node(n3)
    assert bound(n3, "boot-x", "boot-q", "k")           # loaded before the ready line
    cluster.wait_until(lambda: bound(n1, "boot-x", "boot-q", "k"))
    # a file with a refused entry: the start fails in one line, nothing of it applied
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({
        "queues": [{"name": "never", "vhost": "/", "durable": True, "auto_delete": False,
                    "arguments": {}},
                   {"name": "never-2", "vhost": "no-such-vhost", "durable": True,
                    "auto_delete": False, "arguments": {}}]}))
    cmd = [*child.command("amqpbroker"), "serve", "--port", "0", "--management-port", "0",
           "--prometheus-port", "0", "--data-dir", str(tmp_path / "n4"),
           "--cluster", cluster.etcd.url, "--node-name", "n4", "--cluster-port", "0",
           "--load-definitions", str(bad)]
    env = dict(os.environ, AMQPBROKER_WORKERS="0", AMQPBROKER_FRONTENDS="0")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1
    assert f"cannot start: --load-definitions {bad}: queues[1].vhost: no_such_vhost " \
        "'no-such-vhost'" in out.stderr
    assert "amqpbroker ready" not in out.stdout
    assert "never" not in queues(n1) and "never" not in queues(n2)


# ---------------------------------------------------------------- the controller's moves
def placed(node, queue, vhost="/"):
    """The queue's placement fields (``leader`` ... ``isr``), bare node names, once it has
    a leader."""
    for q in node.api("queues"):
        if q["name"] == queue and q["vhost"] == vhost and q.get("leader"):
            bare = lambda names: [n.split("@", 1)[1] for n in names]    # noqa: E731
            return {"leader": q["leader"].split("@", 1)[1], "members": bare(q["members"]),
                    "isr": bare(q["isr"]), "leader_epoch": q["leader_epoch"]}
    return None


def test_reassign_moves_the_replicas_and_the_leader_to_the_preferred_replica(
        shared_cluster):
    cluster = shared_cluster
    n1, n2, n3 = cluster.nodes
    conn = connect(n1)
    conn.channel().queue_declare("moving", durable=True, arguments={
        "x-queue-type": "quorum", "x-quorum-initial-group-size": 2})
    conn.close()
    before = cluster.wait_until(lambda: placed(n2, "moving"))
    (outsider,) = {"n1", "n2", "n3"} - set(before["members"])
    stays = before["members"][1]                # a follower stays; the leader leaves
    target = [outsider, stays]
    out = ctl(n2, "reassign", "moving", "--replicas", ",".join(target), "--wait")
    assert out.returncode == 0, out.stderr
    assert f"reassigning queue 'moving' (1 partition) to {outsider},{stays}" in out.stdout
    # the new replica is the preferred leader: it leads once the move is done
    after = cluster.wait_until(lambda: (lambda p: p if p and p["leader"] == outsider
                                        else None)(placed(n3, "moving")))
    assert after["members"] == target and sorted(after["isr"]) == sorted(target)
    assert after["leader_epoch"] >= 1
    assert n2.api("reassignments") == []
    # every node's view agrees
    cluster.wait_until(lambda: placed(n1, "moving") == after)
    # refused: a node that is not in the cluster, a queue that is not placed
    status, body = call(n1, "PUT", "reassignments/%2F/moving", {"replicas": ["n1", "n9"]})
    assert status == 400 and body["reason"] == \
        "replicas: node 'n9' is not a live member of the cluster"
    status, body = call(n1, "PUT", "reassignments/%2F/nowhere", {"replicas": ["n1"]})
    assert status == 404
    out = ctl(n1, "reassign", "moving", "--replicas", "n1,n1")
    assert out.returncode == 1
    assert "replicas: a list of distinct node names expected" in out.stderr


def test_drain_moves_every_replica_off_the_node_and_new_queues_avoid_it(cluster):
    n1, n2, n3 = cluster.nodes
    conn = connect(n3)
    ch = conn.channel()
    ch.queue_declare("on-n3", durable=True)                     # classic: n3's only
    ch.queue_declare("q3", durable=True, arguments={"x-queue-type": "quorum"})
    ch.exchange_declare("drained-topic", "x-partitioned", durable=True, arguments={
        "x-partitions": 2, "x-replication-factor": 1})
    conn.close()
    cluster.wait_until(lambda: all(placed(n1, q) for q in ("on-n3", "q3", "drained-topic-0",
                                                           "drained-topic-1")))
    assert placed(n1, "on-n3")["members"] == ["n3"]
    out = ctl(n1, "drain", "n3", "--wait")
    assert out.returncode == 0, out.stderr
    for q in ("on-n3", "q3", "drained-topic-0", "drained-topic-1"):
        p = cluster.wait_until(lambda: (lambda p: p if p and "n3" not in p["members"]
                                        else None)(placed(n2, q)))
        assert p["leader"] in ("n1", "n2") and "n3" not in p["isr"]
    assert len(placed(n2, "on-n3")["members"]) == 1            # moved, not dropped
    assert sorted(placed(n2, "q3")["members"]) == ["n1", "n2"]  # nowhere else to go
    # ctl cluster says so; a queue declared on n3 now is placed elsewhere
    rows = [line.split() for line in ctl(n1, "cluster").stdout.splitlines()[1:]]
    assert [r[:2] for r in rows if r[0] == "n3"] == [["n3", "draining"]]
    assert [r[4] for r in rows if r[0] == "n3"] == ["0"]
    conn = connect(n3)
    ch = conn.channel()
    ch.queue_declare("declared-on-drained", durable=True)
    ch.queue_declare("q-after", durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()
    assert placed_soon(cluster, n1, "declared-on-drained")["members"] in (["n1"], ["n2"])
    assert sorted(placed_soon(cluster, n1, "q-after")["members"]) == ["n1", "n2"]
    # revive: new placements may use n3 again
    out = ctl(n1, "revive", "n3")
    assert out.returncode == 0, out.stderr
    cluster.wait_until(lambda: not any(n["draining"] for n in n2.api("nodes")))
    conn = connect(n3)
    conn.channel().queue_declare("after-revive", durable=True)
    conn.close()
    assert placed_soon(cluster, n1, "after-revive")["members"] == ["n3"]


def placed_soon(cluster, node, queue):
    return cluster.wait_until(lambda: placed(node, queue))


def test_leadership_returns_to_the_preferred_replica_when_it_is_back(restored_cluster):
    cluster = restored_cluster
    n1, n2, n3 = cluster.nodes
    conn = connect(n1)
    conn.channel().queue_declare("pref", durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()
    first = placed_soon(cluster, n1, "pref")
    preferred = first["members"][0]
    assert first["leader"] == preferred
    victim = cluster.node(preferred)
    other = next(n for n in cluster.nodes if n is not victim)
    victim.kill()
    victim.proc = None
    moved = cluster.wait_until(lambda: (lambda p: p if p and p["leader"] != preferred
                                        else None)(placed(other, "pref")),
                               timeout=LEASE_TTL + 20)
    assert moved["leader_epoch"] == 1 and preferred not in moved["isr"]
    cluster.start_node(victim)
    back = cluster.wait_until(lambda: (lambda p: p if p and p["leader"] == preferred
                                       else None)(placed(other, "pref")))
    assert back["leader_epoch"] == 2 and preferred in back["isr"]
    assert back["members"] == first["members"]
    assert any(f"%2F/pref/0 leader {moved['leader']} -> {preferred} (epoch 2), the "
               "preferred replica" in line for n in cluster.nodes for line in n.output)


# ---------------------------------------------------------------- exclusive queues
def test_an_exclusive_queue_is_listed_everywhere_locked_elsewhere_and_goes_with_its_node(
        restored_cluster):
    cluster = restored_cluster
    n1, n2, n3 = cluster.nodes
    owner = connect(n3)
    ch = owner.channel()
    ch.queue_declare("mine-only", exclusive=True)
    server_named = ch.queue_declare("", exclusive=True).method.queue

    def listed(node):
        qs = queues(node)
        return all(qs.get(n, {}).get("exclusive") for n in ("mine-only", server_named)) and qs
    for node in (n1, n2):
        qs = cluster.wait_until(lambda: listed(node))
        assert qs["mine-only"]["node"] == "amqpbroker@n3"
    # another connection, on another node or on its own: 405, as RabbitMQ's
    for node in (n1, n3):
        conn = connect(node)
        for passive in (False, True):
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
                conn.channel().queue_declare("mine-only", passive=passive)
            assert info.value.reply_code == 405
            assert info.value.reply_text.startswith(
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue "
                "'mine-only' in vhost '/'")
        conn.close()
    # its owner closes it: gone everywhere, the name free again
    ch.queue_delete("mine-only")
    cluster.wait_until(lambda: "mine-only" not in queues(n1))
    conn = connect(n1)
    conn.channel().queue_declare("mine-only", exclusive=True)
    cluster.wait_until(lambda: queues(n2).get("mine-only", {}).get("node") == "amqpbroker@n1")
    conn.close()                                # closed with its connection: gone too
    cluster.wait_until(lambda: "mine-only" not in queues(n2))
    # the owner's node SIGKILLed: its exclusive queues leave the others' lists with its lease
    n3.kill()
    n3.proc = None
    cluster.wait_until(lambda: server_named not in queues(n1) and
                       server_named not in queues(n2), timeout=LEASE_TTL + 5)
