"""Three broker processes and an etcd on loopback: membership, controller failover, fencing,
clean leave, as /api/nodes, the ready line, the logs and ``amqpbroker ctl cluster`` show them.
"""
import os
import re
import signal
import subprocess
import time

import pika

from amqpbroker import child
from amqpbroker.testing import BrokerProcess
from amqpbroker.testing.etcd import free_port

TTL = 3          # the lease TTL the cluster fixture gives its nodes (conftest.py)


def names(nodes):
    return sorted(n["node_name"] for n in nodes)


def view(cluster, node):
    """(the node names, the controller's name, the fenced ones) as ``node`` sees them"""
    nodes = cluster.nodes_seen_by(node)
    return (names(nodes), [n["node_name"] for n in nodes if n["controller"]],
            [n["node_name"] for n in nodes if n["fenced"]])


def test_three_nodes_see_each_other_and_agree_on_one_controller(cluster):
    assert [n.node for n in cluster.nodes] == ["n1", "n2", "n3"]
    for node in cluster.nodes:
        assert node.cluster_port > 0
        cluster.wait_until(lambda: view(cluster, node) == (["n1", "n2", "n3"], ["n1"], []))
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
    finally:
        conn.close()


def test_killed_controller_is_replaced_within_the_lease_ttl_plus_a_second(cluster):
    n1, n2, n3 = cluster.nodes
    cluster.wait_until(lambda: view(cluster, n2) == (["n1", "n2", "n3"], ["n1"], []))
    killed = time.monotonic()
    n1.kill()                                   # SIGKILL: no leave, the lease must expire
    cluster.wait_until(lambda: view(cluster, n2)[1] == ["n2"], interval=0.02)
    elected = time.monotonic() - killed
    print(f"\ncontroller failover after SIGKILL: {elected:.2f}s (lease TTL {TTL}s)")
    assert elected < TTL + 1.0
    cluster.wait_until(lambda: view(cluster, n3) == (["n2", "n3"], ["n2"], []))
    cluster.wait_until(lambda: any("controller: node n1 was lost" in line
                                   for line in n2.output))
    n1.proc = None                              # killed and reaped: nothing to stop


def test_a_node_cut_from_etcd_is_fenced_and_recovers(cluster):
    n1, n2, n3 = cluster.nodes
    cluster.wait_until(lambda: view(cluster, n3) == (["n1", "n2", "n3"], ["n1"], []))
    cluster.etcd.pause()                        # SIGSTOP: connections stay, nothing answers
    paused = time.monotonic()
    try:
        for node in cluster.nodes:
            cluster.wait_until(lambda: view(cluster, node)[2] == [node.node],
                               timeout=TTL + 10)
        fenced_after = time.monotonic() - paused
        for node in cluster.nodes:              # a fenced node is no controller
            assert node.node not in view(cluster, node)[1]
            assert any(f"node {node.node} is FENCED" in line for line in node.output)
        # the AMQP side keeps answering meanwhile (the data layer's fencing comes next)
        conn = pika.BlockingConnection(pika.URLParameters(n2.url))
        conn.close()
    finally:
        cluster.etcd.resume()
    print(f"\nall three fenced {fenced_after:.2f}s after etcd stopped (TTL {TTL}s)")
    assert fenced_after < TTL + 2.0
    for node in cluster.nodes:
        cluster.wait_until(lambda: view(cluster, node)[0] == ["n1", "n2", "n3"]
                           and not view(cluster, node)[2] and len(view(cluster, node)[1]) == 1,
                           timeout=TTL + 15)
        assert any(f"node {node.node} is no longer fenced" in line for line in node.output)
    leaders = {view(cluster, node)[1][0] for node in cluster.nodes}
    assert len(leaders) == 1                    # all agree again on one controller


def test_etcd_restart_fences_then_every_node_rejoins(cluster):
    cluster.etcd.stop()
    try:
        for node in cluster.nodes:
            cluster.wait_until(lambda: view(cluster, node)[2] == [node.node],
                               timeout=TTL + 10)
    finally:
        cluster.etcd.restart()
    for node in cluster.nodes:
        cluster.wait_until(lambda: view(cluster, node)[0] == ["n1", "n2", "n3"]
                           and not view(cluster, node)[2] and len(view(cluster, node)[1]) == 1,
                           timeout=TTL + 15)


def test_sigterm_leaves_cleanly_and_at_once(cluster):
    n1, n2, n3 = cluster.nodes
    cluster.wait_until(lambda: view(cluster, n3) == (["n1", "n2", "n3"], ["n1"], []))
    started = time.monotonic()
    assert n1.stop() == 0                       # SIGTERM: the controller leaves
    cluster.wait_until(lambda: view(cluster, n3) == (["n2", "n3"], ["n2"], []),
                       interval=0.02)
    handed_over = time.monotonic() - started
    print(f"\ncontroller handed over on SIGTERM in {handed_over:.2f}s")
    assert handed_over < TTL              # not by lease expiry
    assert any("node n1 left the cluster" in line for line in n1.output)
    cluster.wait_until(lambda: any("controller: node n1 left" in line for line in n2.output))
    assert n3.stop() == 0                       # a follower leaves too
    cluster.wait_until(lambda: view(cluster, n2) == (["n2"], ["n2"], []), timeout=TTL)
    # and comes back, with its data directory
    cluster.start_node(n1)
    cluster.wait_until(lambda: view(cluster, n1) == (["n1", "n2"], ["n2"], []))


def test_ctl_cluster_lists_the_nodes(cluster):
    n1 = cluster.nodes[0]
    cluster.wait_until(lambda: len(cluster.nodes_seen_by(n1)) == 3)
    out = subprocess.run([*child.command("amqpbroker"), "ctl", "--url",
                          f"http://127.0.0.1:{n1.management_port}", "cluster"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["node", "state", "controller", "leads", "replicas", "amqp",
                                "management"]
    rows = [line.split() for line in lines[1:]]
    assert [r[:5] for r in rows] == [["n1", "running", "yes", "0", "0"],
                                     ["n2", "running", "no", "0", "0"],
                                     ["n3", "running", "no", "0", "0"]]
    assert rows[1][5] == f"127.0.0.1:{cluster.nodes[1].port}"


def test_no_etcd_reachable_is_a_one_line_start_failure(tmp_path):
    cmd = [*child.command("amqpbroker"), "serve", "--port", "0", "--management-port", "0", "--prometheus-port", "0",
           "--data-dir", str(tmp_path), "--cluster", f"http://127.0.0.1:{free_port()}",
           "--node-name", "lonely", "--cluster-port", "0"]
    env = dict(os.environ, AMQPBROKER_WORKERS="0", AMQPBROKER_FRONTENDS="0")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1
    assert "cannot start: cannot join the cluster: no etcd endpoint answered" in out.stderr
    assert "amqpbroker ready" not in out.stdout


def test_a_single_node_is_as_before(tmp_path):
    """Without --cluster: no node= in the ready line, /api/nodes as it was."""
    with BrokerProcess(tmp_path, management=True) as broker:
        assert broker.node == "" and broker.cluster_port == 0
        assert "node=" not in "".join(broker.output)
        (node,) = broker.api("nodes")
        assert node["name"] == "amqpbroker@localhost"
        assert "controller" not in node and "node_name" not in node
        assert broker.api("overview")["node"] == "amqpbroker@localhost"


def test_the_local_cluster_tool_stops_everything_on_ctrl_c():
    """``python -m amqpbroker.testing.cluster --nodes 2``: etcd and two nodes, then SIGINT
    (what Ctrl-C sends) stops every process it printed and removes the data."""
    proc = subprocess.Popen([*child.command("amqpbroker.testing.cluster"), "--nodes", "2",
                             "--lease-ttl", "3"], stdout=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        text = "".join(lines)
        assert "n1 " in text and "n2 " in text and "etcd " in text, text
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", text)]
        data = re.search(r"^data\s+(\S+)", text, re.M)[1]
        assert len(pids) == 3 and os.path.isdir(data)
        mgmt = re.search(r"management http://127.0.0.1:(\d+)/", text)[1]
        seen = BrokerProcess(data, management=True)
        seen.management_port = int(mgmt)
        assert names(seen.api("nodes")) == ["n1", "n2"]
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and rest.strip().endswith("stopped")
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    assert not os.path.exists(data)
