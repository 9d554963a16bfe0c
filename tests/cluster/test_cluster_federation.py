"""Federation in a cluster: upstreams are defined on any node (an etcd key every node keeps),
the links run on the controller alone, every node reports them (the controller's answer),
and the next controller takes them over when the controller is killed. The upstream is a
single broker of ours beside the cluster."""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing import BrokerProcess
from amqpbroker.testing.cluster_clients import connect, controller, depth


@pytest.fixture
def upstream(tmp_path):
    with BrokerProcess(tmp_path / "upstream", management=True) as b:
        assert b.request("PUT", "global-parameters/cluster_name",
                         {"name": "cluster_name", "value": "upstream"})[0] in (201, 204)
        yield b


def federate_from(node, up: BrokerProcess, name: str) -> None:
    assert node.request("PUT", f"parameters/federation-upstream/%2F/{name}", {"value": {
        "uri": f"amqp://guest:guest@127.0.0.1:{up.port}"}})[0] == 201
    assert node.request("PUT", f"policies/%2F/{name}", {
        "pattern": f"^{name}$", "apply-to": "exchanges",
        "definition": {"federation-upstream": name}})[0] == 201


def bound_queue(node, exchange: str, queue: str) -> None:
    """A federated exchange and a quorum queue bound to it (replicated: it outlives a node)."""
    conn = connect(node)
    ch = conn.channel()
    ch.exchange_declare(exchange, "fanout", durable=True)
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_bind(queue, exchange)
    conn.close()


def publish(up: BrokerProcess, exchange: str, body: bytes) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(up.url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(exchange, "", body, pika.BasicProperties(delivery_mode=2))
    conn.close()


def link_of(node, name: str) -> list:
    return [x for x in node.request("GET", "federation-links")[1] if x["exchange"] == name]


def upstream_bound(up: BrokerProcess, exchange: str) -> bool:
    return any(b["source"] == exchange and b["destination"].startswith("federation: ")
               for b in up.request("GET", "bindings")[1])


def test_links_run_on_the_controller_and_every_node_reports_them(shared_cluster, upstream):
    cluster = shared_cluster
    leader = controller(cluster)
    other = next(n for n in cluster.nodes if n is not leader)
    federate_from(other, upstream, "cfed")
    bound_queue(leader, "cfed", "cfed-q")
    for node in cluster.nodes:
        [link] = cluster.wait_until(lambda: [x for x in link_of(node, "cfed")
                                             if x["status"] == "running"])
        assert link["node"] == f"amqpbroker@{leader.node}"
    cluster.wait_until(lambda: upstream_bound(upstream, "cfed"))
    publish(upstream, "cfed", b"into the cluster")
    cluster.wait_until(lambda: depth(other, "cfed-q") == 1)
    assert other.request("DELETE", "policies/%2F/cfed")[0] == 204
    for node in cluster.nodes:
        cluster.wait_until(lambda: not link_of(node, "cfed"))
    assert other.request("DELETE", "parameters/federation-upstream/%2F/cfed")[0] == 204
    conn = connect(leader)
    conn.channel().queue_delete("cfed-q")
    conn.channel().exchange_delete("cfed")
    conn.close()


def test_the_next_controller_takes_the_links_over(restored_cluster, upstream):
    cluster = restored_cluster
    old = controller(cluster)
    survivor = next(n for n in cluster.nodes if n is not old)
    federate_from(survivor, upstream, "cfed-move")
    bound_queue(survivor, "cfed-move", "cfed-move-q")
    cluster.wait_until(lambda: upstream_bound(upstream, "cfed-move"))
    publish(upstream, "cfed-move", b"before")
    cluster.wait_until(lambda: depth(survivor, "cfed-move-q") == 1)
    old.kill()
    new = controller(cluster, not_=old)
    cluster.wait_until(lambda: [(x["status"], x["node"]) for x in
                                link_of(survivor, "cfed-move")]
                       == [("running", f"amqpbroker@{new.node}")])
    publish(upstream, "cfed-move", b"after")       # waits upstream until a link takes it
    cluster.wait_until(lambda: depth(survivor, "cfed-move-q") >= 2)
