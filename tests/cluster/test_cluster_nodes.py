"""Three broker processes and an etcd on loopback: membership, controller failover, fencing,
clean leave, as /api/nodes, the ready line, the logs and ``amqpbroker ctl cluster`` show them.
(A node's start without a cluster: test_cluster_node_start.py.)
"""
import subprocess
import time

import pika

from amqpbroker import child

TTL = 3          # the lease TTL the cluster fixture gives its nodes (conftest.py)


def names(nodes):
    return sorted(n["node_name"] for n in nodes)


def view(cluster, node):
    """(the node names, the controller's name, the fenced ones) as ``node`` sees them"""
    nodes = cluster.nodes_seen_by(node)
    return (names(nodes), [n["node_name"] for n in nodes if n["controller"]],
            [n["node_name"] for n in nodes if n["fenced"]])


def whole_view(cluster, node, names=("n1", "n2", "n3")):
    """``node`` sees ``names`` and none else, none fenced, and one controller among them:
    that controller's name, else None"""
    seen, controllers, fenced = view(cluster, node)
    if seen == sorted(names) and not fenced and len(controllers) == 1 \
            and controllers[0] in names:
        return controllers[0]
    return None


def said_since(node, start: int, text: str) -> bool:
    """``node`` logged ``text`` since its output had ``start`` lines (the module's cluster
    is shared: what a node said in an earlier test does not count)"""
    return any(text in line for line in node.output[start:])


# The first two tests share the module's cluster and leave it as they found it
# (``shared_cluster``); the next four stop, kill or fence nodes and share it too
# (``restored_cluster``: the nodes they leave down are started again after each), so they
# find the controller where the tests before left it and do not count on n1.

def test_three_nodes_see_each_other_and_agree_on_one_controller(shared_cluster):
    cluster = shared_cluster
    assert [n.node for n in cluster.nodes] == ["n1", "n2", "n3"]
    controllers = set()
    for node in cluster.nodes:
        assert node.cluster_port > 0
        controllers.add(cluster.wait_until(lambda: whole_view(cluster, node)))
    assert len(controllers) == 1
    nodes = {n["node_name"]: n for n in cluster.nodes_seen_by(cluster.nodes[1])}
    for node in cluster.nodes:
        me = nodes[node.node]
        assert me["name"] == f"amqpbroker@{node.node}" and me["running"]
        assert (me["host"], me["amqp_port"], me["management_port"], me["cluster_port"]) == \
            ("127.0.0.1", node.port, node.management_port, node.cluster_port)
    assert "fd_used" in nodes["n2"]             # the node asked adds its own figures
    assert "fd_used" not in nodes["n1"]
    assert cluster.nodes[1].api("overview")["node"] == "amqpbroker@n2"
    # and each node is a broker as before
    conn = pika.BlockingConnection(pika.URLParameters(cluster.nodes[2].url))
    try:
        ch = conn.channel()
        ch.queue_declare("cluster-smoke", auto_delete=True)
        ch.basic_publish("", "cluster-smoke", b"hello")
        assert ch.basic_get("cluster-smoke", auto_ack=True)[2] == b"hello"
        ch.queue_delete("cluster-smoke")        # the next test counts partitions: none
    finally:
        conn.close()


def test_ctl_cluster_lists_the_nodes(shared_cluster):
    cluster = shared_cluster
    n1 = cluster.nodes[0]
    controller = cluster.wait_until(lambda: whole_view(cluster, n1))

    def rows():
        out = subprocess.run([*child.command("amqpbroker"), "ctl", "--url",
                              f"http://127.0.0.1:{n1.management_port}", "cluster"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].split() == ["node", "state", "controller", "leads", "replicas",
                                    "amqp", "management"]
        return [line.split() for line in lines[1:]]
    want = [[n, "running", "yes" if n == controller else "no", "0", "0"]
            for n in ("n1", "n2", "n3")]
    # the smoke test's queue was deleted just before: its partition goes a moment later
    got = cluster.wait_until(lambda: (lambda r: r if [x[:5] for x in r] == want else None)(
        rows()))
    assert got[1][5] == f"127.0.0.1:{cluster.nodes[1].port}"


def test_killed_controller_is_replaced_within_the_lease_ttl_plus_a_second(restored_cluster):
    cluster = restored_cluster
    old = cluster.node(cluster.wait_until(lambda: whole_view(cluster, cluster.nodes[0])))
    survivors = [n for n in cluster.nodes if n is not old]
    names_left = [n.node for n in survivors]
    start = {n.node: len(n.output) for n in survivors}
    killed = time.monotonic()
    old.kill()                                  # SIGKILL: no leave, the lease must expire
    new = cluster.wait_until(
        lambda: (lambda ctl: ctl[0] if len(ctl) == 1 and ctl[0] != old.node else None)(
            view(cluster, survivors[0])[1]), interval=0.02)
    elected = time.monotonic() - killed
    print(f"\ncontroller failover after SIGKILL: {elected:.2f}s (lease TTL {TTL}s)")
    assert elected < TTL + 1.0
    assert new in names_left
    for node in survivors:
        cluster.wait_until(lambda: whole_view(cluster, node, names_left) == new)
    new_node = cluster.node(new)
    cluster.wait_until(lambda: said_since(new_node, start[new],
                                          f"controller: node {old.node} was lost"))


def test_a_node_cut_from_etcd_is_fenced_and_recovers(restored_cluster):
    cluster = restored_cluster
    for node in cluster.nodes:
        cluster.wait_until(lambda: whole_view(cluster, node))
    start = {n.node: len(n.output) for n in cluster.nodes}
    cluster.etcd.pause()                        # SIGSTOP: connections stay, nothing answers
    paused = time.monotonic()
    try:
        for node in cluster.nodes:
            cluster.wait_until(lambda: view(cluster, node)[2] == [node.node],
                               timeout=TTL + 10)
        fenced_after = time.monotonic() - paused
        for node in cluster.nodes:              # a fenced node is no controller
            assert node.node not in view(cluster, node)[1]
            assert said_since(node, start[node.node], f"node {node.node} is FENCED")
        # the AMQP side keeps answering meanwhile (the data layer's fencing comes next)
        conn = pika.BlockingConnection(pika.URLParameters(cluster.nodes[1].url))
        conn.close()
    finally:
        cluster.etcd.resume()
    print(f"\nall three fenced {fenced_after:.2f}s after etcd stopped (TTL {TTL}s)")
    assert fenced_after < TTL + 2.0
    controllers = set()
    for node in cluster.nodes:
        controllers.add(cluster.wait_until(lambda: whole_view(cluster, node),
                                           timeout=TTL + 15))
        cluster.wait_until(lambda: said_since(node, start[node.node],
                                              f"node {node.node} is no longer fenced"))
    assert len(controllers) == 1                # all agree again on one controller


def test_etcd_restart_fences_then_every_node_rejoins(restored_cluster):
    cluster = restored_cluster
    cluster.etcd.stop()
    try:
        for node in cluster.nodes:
            cluster.wait_until(lambda: view(cluster, node)[2] == [node.node],
                               timeout=TTL + 10)
    finally:
        cluster.etcd.restart()
    for node in cluster.nodes:
        cluster.wait_until(lambda: whole_view(cluster, node), timeout=TTL + 15)


def test_sigterm_leaves_cleanly_and_at_once(restored_cluster):
    cluster = restored_cluster
    leaver = cluster.node(cluster.wait_until(lambda: whole_view(cluster, cluster.nodes[0])))
    rest = [n for n in cluster.nodes if n is not leaver]
    names_left = [n.node for n in rest]
    start = {n.node: len(n.output) for n in cluster.nodes}
    started = time.monotonic()
    assert leaver.stop() == 0                   # SIGTERM: the controller leaves
    new = cluster.wait_until(lambda: whole_view(cluster, rest[1], names_left), interval=0.02)
    handed_over = time.monotonic() - started
    print(f"\ncontroller handed over on SIGTERM in {handed_over:.2f}s")
    assert handed_over < TTL              # not by lease expiry
    assert said_since(leaver, start[leaver.node], f"node {leaver.node} left the cluster")
    new_node = cluster.node(new)
    cluster.wait_until(lambda: said_since(new_node, start[new],
                                          f"controller: node {leaver.node} left"))
    (follower,) = [n for n in rest if n is not new_node]
    assert follower.stop() == 0                 # a follower leaves too
    cluster.wait_until(lambda: view(cluster, new_node) == ([new], [new], []), timeout=TTL)
    # and comes back, with its data directory
    cluster.start_node(leaver)
    cluster.wait_until(lambda: whole_view(cluster, leaver, [leaver.node, new]) == new)
