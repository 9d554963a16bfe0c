"""Metadata in etcd (docs/CLUSTER.md section 1) and placement by the controller (section 2),
on three real nodes and a real etcd, with pika and the management API."""
import asyncio
import os
import subprocess
import threading

import pika
import pytest

from amqpbroker import child
from amqpbroker.cluster.etcd import EtcdClient
from amqpbroker.cluster.metadata import META
from amqpbroker.supervisor.owner import queue_dir_name
from amqpbroker.testing.cluster_clients import connect

LEASE_TTL = 3          # the cluster fixture's lease TTL (conftest.py)


def call(node, method, path, body=None):
    return node.request(method, path, body)[0]


def queues(node):
    return {q["name"]: q for q in node.api("queues")}


def passive_ok(node, queue) -> bool:
    conn = connect(node)
    try:
        conn.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False
    finally:
        if conn.is_open:
            conn.close()


def bound(node, exchange, queue, key) -> bool:
    return any(b["source"] == exchange and b["destination"] == queue
               and b["routing_key"] == key for b in node.api("bindings"))


def test_declared_on_one_node_is_everywhere_redeclare_is_checked_delete_goes_everywhere(
        shared_cluster):
    cluster = shared_cluster
    n1, n2, n3 = cluster.nodes
    conn = connect(n1)
    ch = conn.channel()
    ch.exchange_declare("orders-x", "direct", durable=True)
    ch.queue_declare("orders", durable=True)
    ch.queue_bind("orders", "orders-x", "new")
    conn.close()
    for node in (n2, n3):
        cluster.wait_until(lambda: "orders" in queues(node)
                           and bound(node, "orders-x", "orders", "new"))
        assert any(x["name"] == "orders-x" and x["durable"] for x in node.api("exchanges"))
        assert queues(node)["orders"]["durable"] is True
        assert passive_ok(node, "orders")
    # the binding routes on n2 (to n2's copy until forwarding: docs/CLUSTER.md)
    conn = connect(n2)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("orders-x", "new", b"routed on n2", mandatory=True)
    assert ch.basic_get("orders", auto_ack=True)[2] == b"routed on n2"
    # an inequivalent redeclare on n2: RabbitMQ's 406, from the stored object
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare("orders", durable=False)
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'orders' in vhost '/': "
        "received 'false' but current is 'true'")
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.exchange_declare("orders-x", "fanout", durable=True)
    assert info.value.reply_text == (
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'orders-x' in vhost '/': "
        "received 'fanout' but current is 'direct'")
    conn.close()
    # deleted on n3: gone everywhere, with its binding, and its files on every node
    conn = connect(n3)
    conn.channel().queue_delete("orders")
    conn.close()
    assert not passive_ok(n3, "orders")         # read-your-writes on the deleting node
    for node in (n1, n2):
        cluster.wait_until(lambda: "orders" not in queues(node))
        assert not passive_ok(node, "orders")
        assert not bound(node, "orders-x", "orders", "new")
        directory = os.path.join(node.data_dir, "queues", queue_dir_name("/", "orders"))
        cluster.wait_until(lambda: not os.path.exists(directory))


def test_what_one_node_answered_routes_at_once_through_every_other(shared_cluster):
    routes_at_once(shared_cluster)


def test_in_every_layout_what_one_node_answered_routes_at_once(shared_layout_cluster):
    """The other nodes' front-end processes have the change too before the answer."""
    routes_at_once(shared_layout_cluster)


def routes_at_once(cluster) -> None:
    """RabbitMQ's promise: once exchange.declare-ok, queue.declare-ok and bind-ok came from
    one node, a publish through any node is routed. Each node applied etcd's change when its
    watch brought it, a few milliseconds later; a client that published through another
    node at once found no binding now and then (2 of 100 here: a mandatory publish came
    back). Now the declaring node answers once every node has applied the change
    (cluster/metadata.py ``visible_everywhere``). 200 rounds, published through both other
    nodes: before, ~98 % of runs failed."""
    n1, others = cluster.nodes[0], cluster.nodes[1:]
    declaring = connect(n1).channel()
    publishers = []
    for node in others:
        ch = connect(node).channel()
        ch.confirm_delivery()
        publishers.append(ch)
    unroutable = []
    for i in range(200):
        exchange, queue = f"at-once-{i}", f"at-once-q{i}"
        declaring.exchange_declare(exchange, "direct")
        declaring.queue_declare(queue)
        declaring.queue_bind(queue, exchange, routing_key="k")
        for node, ch in zip(others, publishers):
            try:
                ch.basic_publish(exchange, "k", b"m", mandatory=True)
            except pika.exceptions.UnroutableError:
                unroutable.append((i, node.node))
        declaring.queue_delete(queue)
        declaring.exchange_delete(exchange)
    assert unroutable == []
    for ch in (declaring, *publishers):
        ch.connection.close()


def test_a_user_added_on_one_node_logs_in_on_another(shared_cluster):
    cluster = shared_cluster
    n1, n2, _ = cluster.nodes
    assert call(n1, "PUT", "users/alice", {"password": "s3cret", "tags": ""}) in (201, 204)
    assert call(n1, "PUT", "permissions/%2F/alice",
                {"configure": ".*", "write": ".*", "read": ".*"}) in (201, 204)

    def logs_in():
        try:
            connect(n2, "alice", "s3cret").close()
            return True
        except (pika.exceptions.ProbableAuthenticationError,     # the user not there yet
                pika.exceptions.ProbableAccessDeniedError):     # its permission not yet
            return False
    cluster.wait_until(logs_in)
    call(n2, "DELETE", "users/alice")
    cluster.wait_until(lambda: "alice" not in {u["name"] for u in n1.api("users")})


def test_a_user_vhost_and_permission_made_through_the_api_log_in_at_once_elsewhere(
        shared_cluster):
    """RabbitMQ answers a management change once every node has it; here the answer came
    before the change was even in etcd (pushed behind it), so a client logging in through
    another node at once was refused. Now the API answers once etcd has it and every node
    applied it (``EtcdMetadata.everywhere``)."""
    n1, others = shared_cluster.nodes[0], shared_cluster.nodes[1:]
    refused = []
    for i in range(10):
        user, vhost = f"at-once-{i}", f"at-once-vh-{i}"
        assert call(n1, "PUT", f"vhosts/{vhost}", {}) == 201
        assert call(n1, "PUT", f"users/{user}", {"password": "pw", "tags": ""}) == 201
        assert call(n1, "PUT", f"permissions/{vhost}/{user}",
                    {"configure": ".*", "write": ".*", "read": ".*"}) == 201
        for node in others:
            params = pika.URLParameters(node.url)
            params.credentials = pika.PlainCredentials(user, "pw")
            params.virtual_host = vhost
            try:
                pika.BlockingConnection(params).close()
            except (pika.exceptions.ProbableAuthenticationError,
                    pika.exceptions.ProbableAccessDeniedError) as exc:
                refused.append((i, node.node, type(exc).__name__))
        assert call(n1, "DELETE", f"users/{user}") == 204
        assert call(n1, "DELETE", f"vhosts/{vhost}") == 204
    assert refused == []


def test_a_topic_permission_set_on_one_node_applies_at_once_on_every_node(shared_cluster):
    """Topic permissions are etcd keys as permissions are: set through n1, a publish through
    n2 or n3 is refused as soon as the API answered; deleted through n2, lifted everywhere;
    a deleted user's go from etcd too."""
    cluster = shared_cluster
    n1, n2, n3 = cluster.nodes
    assert call(n1, "PUT", "users/carol", {"password": "pw", "tags": ""}) == 201
    assert call(n1, "PUT", "permissions/%2F/carol",
                {"configure": ".*", "write": ".*", "read": ".*"}) == 201
    assert call(n1, "PUT", "topic-permissions/%2F/carol",
                {"exchange": "amq.topic", "write": "^ok$", "read": ".*"}) == 201

    def publishes(node, key) -> bool:
        conn = connect(node, "carol", "pw")
        ch = conn.channel()
        ch.confirm_delivery()
        try:
            ch.basic_publish("amq.topic", key, b"m")
            return True
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 403 and "access to topic" in exc.reply_text
            return False
        finally:
            if conn.is_open:
                conn.close()
    assert [publishes(node, key) for node in (n2, n3) for key in ("ok", "no")] == \
        [True, False, True, False]
    assert call(n2, "DELETE", "topic-permissions/%2F/carol") == 204
    assert [publishes(node, "no") for node in (n1, n3)] == [True, True]
    assert call(n3, "PUT", "topic-permissions/%2F/carol",
                {"exchange": "amq.topic", "write": "^ok$", "read": ".*"}) == 201
    assert publishes(n1, "no") is False
    assert call(n1, "DELETE", "users/carol") == 204
    cluster.wait_until(lambda: all(p["user"] != "carol" for node in cluster.nodes
                                   for p in node.api("topic-permissions")))

    async def topic_permission_keys():
        client = EtcdClient(cluster.etcd.url)
        try:
            kvs, _ = await client.range(META + "topic-permission/")
            return [kv.key for kv in kvs]
        finally:
            await client.close()
    assert not [k for k in asyncio.run(topic_permission_keys()) if "carol" in k]


def test_the_cluster_name_is_the_clusters(shared_cluster):
    """``PUT /api/cluster-name`` on one node names every node's overview and new
    connections at once (a global parameter in etcd); deleted, each is back to its
    default."""
    n1, n2, n3 = shared_cluster.nodes
    assert call(n1, "PUT", "cluster-name", {"name": "three-nodes"}) == 204
    for node in (n2, n3):
        assert node.api("overview")["cluster_name"] == "three-nodes"
        conn = connect(node)
        assert conn._impl.server_properties["cluster_name"] == "three-nodes"
        conn.close()
    assert call(n3, "DELETE", "global-parameters/cluster_name") == 204
    assert all(node.api("cluster-name")["name"] != "three-nodes" for node in (n1, n2))


def test_a_node_restarted_after_changes_catches_up(restored_cluster):
    cluster = restored_cluster
    n1, _, n3 = cluster.nodes
    conn = connect(n1)
    ch = conn.channel()
    ch.queue_declare("stays", durable=True)
    # a queue's files are made by its first write, so "goes" is replicated to every node
    # and holds a message: n3, a follower, has written its copy
    ch.queue_declare("goes", durable=True, arguments={"x-queue-type": "quorum",
                                                      "x-quorum-initial-group-size": 3})
    ch.confirm_delivery()
    ch.basic_publish("", "goes", b"m", pika.BasicProperties(delivery_mode=2))
    conn.close()
    cluster.wait_until(lambda: {"stays", "goes"} <= set(queues(n3)))
    goes_dir = os.path.join(n3.data_dir, "queues", queue_dir_name("/", "goes"))
    cluster.wait_until(lambda: os.path.isdir(goes_dir))
    n3.stop()
    logged = len(n3.output)             # what n3 logs from its restart on
    conn = connect(n1)
    ch = conn.channel()
    ch.queue_delete("goes")
    ch.queue_declare("new-while-away", durable=True)
    conn.close()
    call(n1, "PUT", "users/bob", {"password": "pw", "tags": ""})
    call(n1, "PUT", "permissions/%2F/bob", {"configure": ".*", "write": ".*", "read": ".*"})
    cluster.start_node(n3)
    names = set(queues(n3))       # caught up before ready: no waiting
    assert "stays" in names and "new-while-away" in names and "goes" not in names
    cluster.wait_until(lambda: not os.path.exists(goes_dir))
    connect(n3, "bob", "pw").close()
    assert "deleted in the cluster" in "".join(n3.output[logged:])


def test_a_queue_that_deletes_itself_goes_everywhere(shared_cluster):
    """auto-delete: the node where its last consumer went deletes it in etcd too."""
    cluster = shared_cluster
    n1, n2, _ = cluster.nodes
    conn = connect(n1)
    ch = conn.channel()
    ch.queue_declare("short-lived", auto_delete=True)
    ch.exchange_declare("short-x", "fanout", auto_delete=True)
    ch.queue_bind("short-lived", "short-x", "")
    tag = ch.basic_consume("short-lived", lambda *a: None)
    cluster.wait_until(lambda: "short-lived" in queues(n2)
                       and bound(n2, "short-x", "short-lived", ""))
    ch.basic_cancel(tag)
    cluster.wait_until(lambda: "short-lived" not in queues(n1))
    # gone on n2 too, and the auto-delete exchange with its last binding
    cluster.wait_until(lambda: "short-lived" not in queues(n2))
    cluster.wait_until(lambda: "short-x" not in {x["name"] for x in n2.api("exchanges")})
    assert not passive_ok(n2, "short-lived")
    conn.close()


def _declare_at_once(nodes, queue, arguments):
    """Declare ``queue`` on every node at the same moment; each one's result."""
    barrier = threading.Barrier(len(nodes))
    results = [None] * len(nodes)

    def run(i, node, args):
        conn = connect(node)
        try:
            ch = conn.channel()
            barrier.wait()
            ch.queue_declare(queue, durable=True, arguments=args)
            results[i] = "ok"
        except pika.exceptions.ChannelClosedByBroker as exc:
            results[i] = (exc.reply_code, exc.reply_text)
        finally:
            if conn.is_open:
                conn.close()
    threads = [threading.Thread(target=run, args=(i, n, a))
               for i, (n, a) in enumerate(zip(nodes, arguments))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_declares_on_two_nodes(shared_cluster):
    cluster = shared_cluster
    n1, n2, n3 = cluster.nodes
    for i in range(5):
        assert _declare_at_once([n1, n2], f"same-{i}", [{"x-max-length": 10}] * 2) == \
            ["ok", "ok"]
        results = _declare_at_once([n1, n2], f"differ-{i}",
                                   [{"x-max-length": 10}, {"x-max-length": 20}])
        assert sorted(map(str, results)).count("ok") == 1, results
        (code, text), = [r for r in results if r != "ok"]
        assert code == 406 and text.startswith(
            f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'differ-{i}' "
            "in vhost '/': received '")
        # and every node holds the winner's object
        winner = {"x-max-length": 10} if results[0] == "ok" else {"x-max-length": 20}
        cluster.wait_until(lambda: queues(n3).get(f"differ-{i}", {}).get("arguments")
                           == winner)


def test_placement_members_leader_and_failover(cluster):
    n1, n2, n3 = cluster.nodes
    conn = connect(n2)
    ch = conn.channel()
    ch.queue_declare("classic-q", durable=True)
    ch.queue_declare("quorum-q", durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_declare("quorum-2", durable=True, arguments={
        "x-queue-type": "quorum", "x-quorum-initial-group-size": 2})
    ch.queue_declare("stream-q", durable=True, arguments={
        "x-queue-type": "stream", "x-initial-cluster-size": 2})
    ch.exchange_declare("events", "x-partitioned", durable=True, arguments={
        "x-partitions": 3, "x-replication-factor": 2})
    conn.close()
    every = ["amqpbroker@n1", "amqpbroker@n2", "amqpbroker@n3"]

    def placed():
        qs = queues(n1)
        names = ["classic-q", "quorum-q", "quorum-2", "stream-q", "events-0", "events-1",
                 "events-2"]
        return all(qs.get(n, {}).get("leader") for n in names) and qs
    qs = cluster.wait_until(placed)
    assert qs["classic-q"]["members"] == ["amqpbroker@n2"]       # where it was declared
    assert qs["classic-q"]["leader"] == "amqpbroker@n2" == qs["classic-q"]["node"]
    assert sorted(qs["quorum-q"]["members"]) == every
    assert sorted(qs["quorum-q"]["online"]) == every
    assert qs["quorum-q"]["leader"] in every and qs["quorum-q"]["leader_epoch"] == 0
    assert len(qs["quorum-2"]["members"]) == 2 and len(qs["stream-q"]["members"]) == 2
    for i in range(3):
        assert len(qs[f"events-{i}"]["members"]) == 2
    # leaders spread: no node leads all seven
    leaders = [q["leader"] for q in qs.values() if q.get("leader")]
    assert max(leaders.count(n) for n in every) < len(leaders)
    # the other nodes show the same placement
    cluster.wait_until(lambda: all(queues(n3).get(n, {}).get("leader") == qs[n]["leader"]
                                   for n in qs))
    # ctl cluster: leadership per node, and per partition
    out = subprocess.run([*child.command("amqpbroker"), "ctl", "--url",
                          f"http://127.0.0.1:{n1.management_port}", "cluster", "--partitions"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["vhost", "queue", "leader", "epoch", "members", "isr", "online"]
    quorum_row = next(line.split() for line in lines if " quorum-q " in line)
    assert quorum_row[2] == qs["quorum-q"]["leader"].split("@")[1] and quorum_row[3] == "0"
    # the quorum queue's leader dies: leadership moves within the ISR, epoch + 1
    old = qs["quorum-q"]["leader"]
    victim = cluster.node(old.split("@")[1])
    survivor = next(n for n in cluster.nodes if n is not victim)
    victim.kill()
    victim.proc = None
    moved = cluster.wait_until(
        lambda: (lambda q: q if q.get("leader") not in (None, old) else None)(
            queues(survivor)["quorum-q"]), timeout=LEASE_TTL + 20)
    assert moved["leader_epoch"] == 1
    assert old in moved["members"] and old not in moved["online"]
    assert old not in moved["isr"] and moved["leader"] in moved["isr"]
    if qs["classic-q"]["leader"] == old:
        # its only replica is gone: no leader, until it returns
        cluster.wait_until(lambda: queues(survivor)["classic-q"].get("leader") is None)
    cluster.wait_until(lambda: any(
        "controller: %2F/quorum-q/0 leader " + old.split("@")[1] + " -> " in line
        for n in cluster.nodes if n is not victim for line in n.output))


def test_a_vhosts_default_queue_type_makes_plain_declares_replicated(shared_cluster):
    """Unchanged client code gets a replicated queue: the vhost's default queue type
    (queue_args.with_default_type) is the cluster's, set on one node, used on another."""
    cluster = shared_cluster
    n1, n2, n3 = cluster.nodes
    assert call(n1, "PUT", "vhosts/ha", {"default_queue_type": "quorum"}) == 201
    cluster.wait_until(lambda: any(v["name"] == "ha" and v["default_queue_type"] == "quorum"
                                   for v in n3.api("vhosts")))
    params = pika.URLParameters(n3.url)
    params.virtual_host = "ha"
    cluster.wait_until(lambda: passive_vhost_ok(params))    # guest's permission arrived
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.queue_declare("orders", durable=True)                # no x-queue-type
    ch.queue_declare("scratch", durable=False)
    conn.close()
    every = ["amqpbroker@n1", "amqpbroker@n2", "amqpbroker@n3"]
    q = cluster.wait_until(lambda: next((q for q in n1.api("queues/ha")
                                         if q["name"] == "orders" and q.get("leader")), None))
    assert q["type"] == "quorum" and q["arguments"] == {"x-queue-type": "quorum"}
    assert sorted(q["members"]) == every
    scratch = next(q for q in n1.api("queues/ha") if q["name"] == "scratch")
    assert scratch["type"] == "classic" and scratch["members"] == ["amqpbroker@n3"]
    # changed on another node: every node declares with the new type
    assert call(n2, "PUT", "vhosts/ha", {"default_queue_type": "stream"}) == 204
    cluster.wait_until(lambda: next(v for v in n3.api("vhosts") if v["name"] == "ha")
                       ["default_queue_type"] == "stream")
    conn = pika.BlockingConnection(params)
    conn.channel().queue_declare("events", durable=True)
    conn.close()
    assert next(q for q in n1.api("queues/ha") if q["name"] == "events")["type"] == "stream"
    assert call(n1, "DELETE", "vhosts/ha") == 204


def passive_vhost_ok(params) -> bool:
    try:
        pika.BlockingConnection(params).close()
        return True
    except pika.exceptions.ProbableAccessDeniedError:
        return False


def test_a_policy_set_on_one_node_acts_on_every_node(shared_cluster):
    """Policies are the cluster's (etcd): set on n1, they act on a classic queue of n3 and
    on a quorum queue wherever it leads; deleted on n2, they stop everywhere."""
    cluster = shared_cluster
    n1, n2, n3 = cluster.nodes
    conn = connect(n3)
    ch = conn.channel()
    ch.queue_declare("pol-classic", durable=True)               # lives on n3
    ch.queue_declare("pol-quorum", durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()
    cluster.wait_until(lambda: queues(n2).get("pol-quorum", {}).get("leader"))
    assert call(n1, "PUT", "policies/%2F/cap", {"pattern": "^pol-",
                                                 "definition": {"max-length": 2}}) == 201
    for node in (n2, n3):
        cluster.wait_until(lambda: all(queues(node).get(n, {}).get("policy") == "cap"
                                       for n in ("pol-classic", "pol-quorum")))
    cluster.wait_until(lambda: queues(n1).get("pol-quorum", {}).get("policy") == "cap")
    conn = connect(n2)                                          # forwarded to n3, the leader
    ch = conn.channel()
    ch.confirm_delivery()
    for name in ("pol-classic", "pol-quorum"):
        for i in range(5):
            ch.basic_publish("", name, b"m%d" % i)
        assert ch.queue_declare(name, passive=True).method.message_count == 2
    assert call(n2, "DELETE", "policies/%2F/cap") == 204
    for node in (n1, n3):
        cluster.wait_until(lambda: queues(node)["pol-classic"]["policy"] is None
                           and queues(node)["pol-quorum"]["policy"] is None)
    for name in ("pol-classic", "pol-quorum"):
        for i in range(5):
            ch.basic_publish("", name, b"n%d" % i)
        assert ch.queue_declare(name, passive=True).method.message_count == 7
        ch.queue_delete(name)
    conn.close()
