"""A node's start and stop without a shared cluster: no etcd reachable, no ``--cluster`` at
all, and the local cluster tool's Ctrl-C (split from test_cluster_nodes.py so that pytest-xdist
runs them beside its cluster tests).
"""
import os
import re
import signal
import subprocess

from amqpbroker import child
from amqpbroker.testing import BrokerProcess
from amqpbroker.testing.etcd import free_port


def names(nodes):
    return sorted(n["node_name"] for n in nodes)


def test_no_etcd_reachable_is_a_one_line_start_failure(tmp_path):
    # a short join timeout (15 s by default: a real start waits for etcd to come up)
    cmd = [*child.command("amqpbroker"), "serve", "--port", "0", "--management-port", "0", "--prometheus-port", "0",
           "--data-dir", str(tmp_path), "--cluster", f"http://127.0.0.1:{free_port()}",
           "--node-name", "lonely", "--cluster-port", "0", "--cluster-join-timeout", "1"]
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
