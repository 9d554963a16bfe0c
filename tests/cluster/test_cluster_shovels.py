"""Dynamic shovels in a cluster: defined on any node (an etcd key every node keeps), run by
the controller alone, reported and restarted from any node (the controller's answer), gone
everywhere when deleted anywhere, and taken over by the next controller when the
controller is killed."""
from __future__ import annotations

import pika

from amqpbroker.testing.cluster_clients import connect, controller, depth


def declare(node, *queues: str, quorum: bool = False) -> None:
    conn = connect(node)
    try:
        for queue in queues:
            conn.channel().queue_declare(queue, durable=True, arguments={
                "x-queue-type": "quorum"} if quorum else None)
    finally:
        conn.close()


def publish(node, queue: str, bodies: list) -> None:
    conn = connect(node)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def statuses(node, name: str) -> list:
    return [s for s in node.request("GET", "shovels")[1] if s["name"] == name]


def define(node, name: str, src: str, dest: str) -> None:
    assert node.request("PUT", f"parameters/shovel/%2F/{name}", {"value": {
        "src-uri": "amqp://", "src-queue": src, "dest-uri": "amqp://",
        "dest-queue": dest}})[0] == 201


def test_a_shovel_runs_on_the_controller_and_every_node_reports_it(shared_cluster):
    cluster = shared_cluster
    leader = controller(cluster)
    other = next(n for n in cluster.nodes if n is not leader)
    declare(other, "csh-src", "csh-dest")
    publish(other, "csh-src", [b"a", b"b"])
    define(other, "csh", "csh-src", "csh-dest")
    cluster.wait_until(lambda: depth(leader, "csh-dest") == 2)
    for node in cluster.nodes:
        [status] = cluster.wait_until(lambda: statuses(node, "csh"))
        assert (status["state"], status["node"]) == ("running", f"amqpbroker@{leader.node}")
        assert node.request("GET", "parameters/shovel/%2F/csh")[0] == 200
    names = [c.get("client_properties", {}).get("connection_name")
             for node in cluster.nodes for c in node.request("GET", "connections")[1]]
    assert names.count("Shovel csh") == 2          # its source and destination, once
    assert other.request("DELETE", "shovels/vhost/%2F/csh/restart")[0] == 204
    publish(other, "csh-src", [b"c"])
    cluster.wait_until(lambda: depth(other, "csh-dest") == 3)
    assert other.request("DELETE", "shovels/vhost/%2F/csh")[0] == 204
    for node in cluster.nodes:
        cluster.wait_until(lambda: not statuses(node, "csh")
                           and node.request("GET", "parameters/shovel")[1] == [])
    conn = connect(leader)
    for queue in ("csh-src", "csh-dest"):
        conn.channel().queue_delete(queue)
    conn.close()


def test_the_next_controller_takes_a_shovel_over(restored_cluster):
    cluster = restored_cluster
    old = controller(cluster)
    survivor = next(n for n in cluster.nodes if n is not old)
    # quorum queues: replicated, they outlive the node killed (a classic queue there would
    # be unavailable to the shovel as to any client until its node returns)
    declare(survivor, "csh-move-src", "csh-move-dest", quorum=True)
    define(survivor, "csh-move", "csh-move-src", "csh-move-dest")
    publish(survivor, "csh-move-src", [b"before"])
    cluster.wait_until(lambda: depth(survivor, "csh-move-dest") == 1)
    old.kill()
    new = controller(cluster, not_=old)
    cluster.wait_until(lambda: [s["state"] for s in statuses(survivor, "csh-move")]
                       == ["running"] and statuses(survivor, "csh-move")[0]["node"]
                       == f"amqpbroker@{new.node}")
    publish(survivor, "csh-move-src", [b"after"])
    cluster.wait_until(lambda: depth(survivor, "csh-move-dest") >= 2)
    assert survivor.request("DELETE", "parameters/shovel/%2F/csh-move")[0] == 204
    conn = connect(survivor)
    for queue in ("csh-move-src", "csh-move-dest"):
        conn.channel().queue_delete(queue)
    conn.close()
