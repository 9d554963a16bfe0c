"""Policies in a cluster (README "Policies"): etcd carries them to every node; each node
applies them to the copies of a queue it holds — where it leads, and the follower's
replica it keeps open — so a follower that becomes the leader enforces a policy set while
it followed. (The other nodes do not tell a leader elsewhere: its own node does.)
Three real nodes, a real etcd, pika."""
from amqpbroker.testing.cluster_clients import (connect, declare_quorum, depth,
                                                 publish_until_confirmed, queue_on)

DEADLINE = 60.0


def call(node, method, path, body=None):
    return node.request(method, path, body)[0]


def test_a_follower_that_takes_over_leads_under_the_policy_set_while_it_followed(cluster):
    takes_over(cluster)


def test_in_every_layout_a_follower_that_takes_over_leads_under_the_policy(layout_cluster):
    """The mixed cluster: the replicas live in worker processes on n2 and n3, whose
    supervisors tell them the policy's arguments."""
    takes_over(layout_cluster)


def takes_over(cluster) -> None:
    leader = declare_quorum(cluster, "capped")
    follower = next(n for n in cluster.nodes if n is not leader)
    assert call(follower, "PUT", "policies/%2F/cap",
                {"pattern": "^capped$", "definition": {"max-length": 3}}) == 201
    for node in cluster.nodes:
        cluster.wait_until(lambda: queue_on(node, "capped").get("policy") == "cap")
    publish_until_confirmed(follower, "capped", [b"m%d" % i for i in range(5)])
    assert depth(follower, "capped") == 3
    leader.kill()
    cluster.wait_until(lambda: queue_on(follower, "capped").get("leader") not in
                       (None, f"amqpbroker@{leader.node}"), timeout=DEADLINE)
    publish_until_confirmed(follower, "capped", [b"n%d" % i for i in range(5)])
    assert depth(follower, "capped") == 3           # the new leader drops from the head
    conn = connect(follower)
    ch = conn.channel()
    got = [ch.basic_get("capped", auto_ack=True)[2] for _ in range(3)]
    conn.close()
    assert got == [b"n2", b"n3", b"n4"]


def test_an_operator_policy_reaches_every_node_and_a_restarted_one(cluster):
    """Set on one node, through etcd to the others (the leader's own node applies it), and
    read back by a node that starts again (``operator-policy`` keys)."""
    leader = declare_quorum(cluster, "ops-capped")
    other = next(n for n in cluster.nodes if n is not leader)
    assert call(other, "PUT", "operator-policies/%2F/ops",
                {"pattern": "^ops-capped$", "definition": {"max-length": 2},
                 "apply-to": "queues"}) == 201
    for node in cluster.nodes:
        cluster.wait_until(lambda: queue_on(node, "ops-capped").get("operator_policy")
                           == "ops")
    publish_until_confirmed(other, "ops-capped", [b"m%d" % i for i in range(5)])
    assert depth(other, "ops-capped") == 2
    other.stop()
    cluster.start_node(other)
    assert other.api("operator-policies/%2F") == [
        {"vhost": "/", "name": "ops", "pattern": "^ops-capped$", "apply-to": "queues",
         "definition": {"max-length": 2}, "priority": 0}]
    assert call(leader, "DELETE", "operator-policies/%2F/ops") == 204
    cluster.wait_until(lambda: other.api("operator-policies/%2F") == [])
