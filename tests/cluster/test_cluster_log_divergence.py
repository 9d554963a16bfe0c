"""Log divergence (docs/CLUSTER.md section 4, issue 12 step 5): a leader that wrote a tail
nobody else got, and lost the leadership, returns as a follower, finds where its log leaves
the new leader's (by leader epoch, KIP-279) and cuts it; its log is then the leader's, byte
for byte, and the unconfirmed messages are never delivered. Three real nodes with a 10 s
lease (a leader killed before it could drop its dead followers from the ISR), a real etcd,
pika and the management API. (Split from test_cluster_replication.py: CI runs one module
per test process, so the longest module bounds the run.)"""
import pika
import pytest

from amqpbroker.testing.cluster import LocalCluster
from amqpbroker.testing.cluster_clients import (
    connect, declare_quorum, drain, log_bytes, publish_confirmed, queue_on)


# both tests kill every node in turn and start them again: they share one cluster, each
# with a queue of its own, and look only at what a node logged since the test began
@pytest.fixture(scope="module")
def _diverging_cluster(tmp_path_factory):
    with LocalCluster(3, str(tmp_path_factory.mktemp("cluster")), lease_ttl=10,
                      together=True) as c:
        yield c


@pytest.fixture
def cluster(_diverging_cluster):
    yield _diverging_cluster
    _diverging_cluster.heal()


def publish_unconfirmed(node, queue, bodies):
    """Publish without confirms (they could not come: too few replicas alive to reach)."""
    conn = connect(node)
    ch = conn.channel()
    for body in bodies:
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    conn.close()


def test_an_old_leader_back_with_an_unconfirmed_tail_truncates_it_and_follows(cluster):
    """The followers are killed; the leader appends messages it cannot get confirmed, and is
    killed too before it could drop them from the ISR (a 10 s lease). The followers return,
    one leads and takes new messages; the old leader returns, finds its tail is not the
    new leader's, cuts it, and copies the new leader's log byte for byte. The unconfirmed
    messages are never delivered."""
    logged = {n.node: len(n.output) for n in cluster.nodes}     # this test's lines after
    old = declare_quorum(cluster, "repl-tail")
    followers = [n for n in cluster.nodes if n is not old]
    publish_confirmed(old, "repl-tail", [b"c%d" % i for i in range(5)])
    for n in followers:
        n.kill()
    conn = connect(old)
    ch = conn.channel()             # no confirms: they could not come
    for i in range(7):
        ch.basic_publish("", "repl-tail", b"lost%d" % i,
                         pika.BasicProperties(delivery_mode=2))
    conn.close()
    # on the old leader's disk, on no follower's
    cluster.wait_until(lambda: old.api("partitions/%2F/repl-tail")["durable_offset"] == 12)
    old.kill()
    for n in followers:
        cluster.start_node(n)
    new = cluster.node(cluster.wait_until(lambda: (lambda q: q.get("leader") not in (
        None, f"amqpbroker@{old.node}") and q["leader"])(
        queue_on(followers[0], "repl-tail")), timeout=60).split("@")[1])
    # the ISR is the two nodes alive (min_isr 2): a follower started more than the lag
    # time after the new leader was elected (a loaded machine) is out until it catches
    # up, and a publish meanwhile is nacked, as it should be
    alive = {f"amqpbroker@{n.node}" for n in followers}
    cluster.wait_until(lambda: set(queue_on(new, "repl-tail").get("isr", ())) == alive,
                       timeout=60)
    publish_confirmed(new, "repl-tail", [b"n%d" % i for i in range(4)])
    cluster.start_node(old)
    cluster.wait_until(lambda: log_bytes(old, "repl-tail") == log_bytes(new, "repl-tail")
                       != b"")
    assert any("diverges from the leader" in line for line in old.output[logged[old.node]:])
    # old, the preferred replica, gets the leadership back once in the ISR: drain after that
    # move, not across it (an ack in flight across a move is lost, its message redelivered)
    cluster.wait_until(lambda: (lambda q: q.get("leader") == f"amqpbroker@{old.node}" and len(
        q.get("isr", ())) == 3)(queue_on(new, "repl-tail")), timeout=60)
    got = drain(old, "repl-tail", 10)
    assert [b for b, _ in got] == ([b"c%d" % i for i in range(5)]
                                   + [b"n%d" % i for i in range(4)])


@pytest.mark.timeout(300)       # three lease expiries (10 s each) and five node starts
def test_two_failovers_with_unreplicated_tails_are_both_cut_by_leader_epoch(cluster):
    """KIP-279's case: two leaders in a row each write a tail nobody else gets, in two
    epochs. The third leader's log has neither. The first returns as a follower, cuts its
    tail, and once it is back in the ISR the third leader takes more messages; then the
    second returns: its tail lies inside the third leader's range, in an epoch the third
    leader never had, and the answer by epoch cuts it. All three logs are then the same
    bytes, with the same epochs. No unconfirmed message is delivered."""
    q = "repl-kip279"
    logged = {n.node: len(n.output) for n in cluster.nodes}     # this test's lines after
    first = declare_quorum(cluster, q)
    publish_confirmed(first, q, [b"c%d" % i for i in range(5)])
    others = [n for n in cluster.nodes if n is not first]
    for n in others:
        n.kill()
    publish_unconfirmed(first, q, [b"first-lost%d" % i for i in range(7)])
    cluster.wait_until(lambda: first.api(f"partitions/%2F/{q}")["durable_offset"] == 12)
    first.kill()
    for n in others:
        cluster.start_node(n)

    def leader_among(nodes, not_in):
        def led():
            for n in nodes:
                got = queue_on(n, q).get("leader")
                if got and got not in not_in:
                    return got.split("@")[1]
        return cluster.node(cluster.wait_until(led, timeout=60))

    def leads(n, isr=1):
        r = n.api(f"partitions/%2F/{q}").get("replica") or {}
        return r.get("role") == "leader" and len(r.get("isr", ())) >= isr
    second = leader_among(others, {f"amqpbroker@{first.node}"})
    third = next(n for n in others if n is not second)
    # both in its ISR (min 2): its tail is stored, and third stays eligible
    cluster.wait_until(lambda: leads(second, isr=2))
    third.kill()
    publish_unconfirmed(second, q, [b"second-lost%d" % i for i in range(4)])
    cluster.wait_until(lambda: second.api(f"partitions/%2F/{q}")["durable_offset"] == 9)
    second_epochs = second.api(f"partitions/%2F/{q}")["replica"]["leader_epochs"]
    second.kill()
    cluster.start_node(third)
    assert leader_among([third], {f"amqpbroker@{first.node}",
                                  f"amqpbroker@{second.node}"}) is third
    # first returns (its tail cut) and rejoins the ISR (the controller may then move
    # the leadership back to it, the preferred replica): the partition takes publishes
    # again; then second returns, its tail inside what has been written since
    cluster.start_node(first)

    def leader_with_isr():
        name = queue_on(third, q).get("leader", "@").split("@")[1]
        n = cluster.node(name) if name in ("n1", "n2", "n3") else None
        return n if n is not None and n is not second and leads(n, isr=2) else None
    cluster.wait_until(leader_with_isr, timeout=60)
    publish_confirmed(third, q, [b"n0", b"n1"])
    cluster.start_node(second)
    publish_confirmed(third, q, [b"n2", b"n3"])
    leader = cluster.wait_until(leader_with_isr)
    cluster.wait_until(lambda: log_bytes(first, q) == log_bytes(leader, q)
                       == log_bytes(second, q) == log_bytes(third, q), timeout=60)
    for n in (first, second):
        assert any("diverges from the leader" in line for line in n.output[logged[n.node]:])
    # each batch carries the epoch it was written in, on every replica alike: c0..c4
    # the first leader's, n0..n3 a later one's than second's, whose tail is gone
    starts = [n.api(f"partitions/%2F/{q}")["replica"]["leader_epochs"]
              for n in cluster.nodes]
    assert starts[0] == starts[1] == starts[2]
    assert starts[0][0] == [0, 0] and second_epochs == [[0, 0], [second_epochs[1][0], 5]]
    assert starts[0][1][1] == 5 and starts[0][1][0] > second_epochs[1][0]
    got = drain(third, q, 10)
    assert [b for b, _ in got] == ([b"c%d" % i for i in range(5)]
                                   + [b"n%d" % i for i in range(4)])

