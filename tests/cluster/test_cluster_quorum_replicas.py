"""RabbitMQ 3.13's quorum replica operations over HTTP (mgmt/quorum_replicas.py): add and
delete a member, grow and shrink a node's replicas, rebalance the leaders — each carried out
by the controller as a reassignment. Three real nodes, a real etcd; the answers and bodies
are RabbitMQ 3.13's (rabbit_mgmt_wm_quorum_queue_replicas_*, rabbit_mgmt_wm_rebalance_queues,
read from its source: the reference RabbitMQ here is 3.10, which has none of them)."""
from urllib.parse import quote

from amqpbroker.testing.cluster_clients import connect, ctl, declare_quorum, queue_on
from amqpbroker.testing.mgmt_client import ManagementClient

DEADLINE = 60.0


def members(node, queue: str) -> set:
    return set(queue_on(node, queue).get("members") or ())


def reassigned(cluster, queue: str, replicas: list[str]) -> None:
    """Put the queue's replicas on these nodes (the first its preferred leader) and wait."""
    n1 = cluster.nodes[0]
    assert n1.request("PUT", f"reassignments/%2F/{quote(queue)}",
                      {"replicas": replicas})[0] == 202
    want = [f"amqpbroker@{r}" for r in replicas]
    cluster.wait_until(lambda: all(queue_on(n, queue).get("members") == want
                                   and queue_on(n, queue).get("leader") == want[0]
                                   and len(queue_on(n, queue).get("isr", ())) == len(want)
                                   for n in cluster.nodes), timeout=DEADLINE)


def test_a_member_is_added_and_deleted(shared_cluster):
    cluster = shared_cluster
    declare_quorum(cluster, "qr-member")
    reassigned(cluster, "qr-member", ["n1", "n2"])
    n2 = cluster.nodes[1]
    path = "queues/quorum/%2F/qr-member/replicas"
    assert n2.request("POST", f"{path}/add", {"node": "amqpbroker@n3"})[0] == 204
    cluster.wait_until(lambda: members(n2, "qr-member") == {
        "amqpbroker@n1", "amqpbroker@n2", "amqpbroker@n3"}, timeout=DEADLINE)
    assert n2.request("POST", f"{path}/add", {"node": "n3"})[0] == 204      # one already
    assert n2.request("DELETE", f"{path}/delete", {"node": "amqpbroker@n1"})[0] == 202
    cluster.wait_until(lambda: members(n2, "qr-member") == {
        "amqpbroker@n2", "amqpbroker@n3"}, timeout=DEADLINE)
    # rabbitmq-queues' verbs in ctl
    out = ctl(n2, "add-member", "qr-member", "n1")
    assert out.returncode == 0 and "a replica on n1 asked for" in out.stdout, out.stderr
    cluster.wait_until(lambda: len(members(n2, "qr-member")) == 3, timeout=DEADLINE)
    out = ctl(n2, "delete-member", "qr-member", "n1")
    assert out.returncode == 0, out.stderr
    cluster.wait_until(lambda: len(members(n2, "qr-member")) == 2, timeout=DEADLINE)
    out = ctl(n2, "add-member", "qr-member", "n9")
    assert out.returncode == 1 and "n9" in out.stderr
    # RabbitMQ's refusals: no such queue, no node named, not a quorum queue, no such node
    assert n2.request("POST", "queues/quorum/%2F/qr-none/replicas/add",
                      {"node": "n3"})[0] == 404
    status, body = n2.request("POST", f"{path}/add", {})
    assert status == 400 and "node" in body["reason"]
    conn = connect(n2)
    conn.channel().queue_declare("qr-classic", durable=True)
    conn.close()
    assert n2.request("POST", "queues/quorum/%2F/qr-classic/replicas/add",
                      {"node": "n3"})[0] == 503
    assert n2.request("POST", f"{path}/add", {"node": "n9"})[0] == 503


def test_a_node_grows_into_matching_queues_and_shrinks_out_of_them(shared_cluster):
    cluster = shared_cluster
    for name in ("qr-grow-even", "qr-grow-odd", "qr-other"):
        declare_quorum(cluster, name)
    reassigned(cluster, "qr-grow-even", ["n1", "n2"])
    reassigned(cluster, "qr-grow-odd", ["n1"])
    reassigned(cluster, "qr-other", ["n2"])
    n1 = cluster.nodes[0]
    assert n1.request("POST", "queues/quorum/replicas/on/amqpbroker@n3/grow", {
        "vhost_pattern": "^/$", "queue_pattern": "^qr-grow", "strategy": "even"})[0] == 204
    cluster.wait_until(lambda: "amqpbroker@n3" in members(n1, "qr-grow-even"),
                       timeout=DEADLINE)
    assert n1.request("POST", "queues/quorum/replicas/on/n3/grow", {
        "vhost_pattern": ".*", "queue_pattern": "grow", "strategy": "all"})[0] == 204
    cluster.wait_until(lambda: "amqpbroker@n3" in members(n1, "qr-grow-odd"),
                       timeout=DEADLINE)
    assert members(n1, "qr-other") == {"amqpbroker@n2"}             # not matched
    assert n1.request("POST", "queues/quorum/replicas/on/n9/grow", {
        "vhost_pattern": ".*", "queue_pattern": ".*", "strategy": "all"})[0] == 404
    assert n1.request("POST", "queues/quorum/replicas/on/n3/grow", {
        "vhost_pattern": ".*", "queue_pattern": ".*", "strategy": "most"})[0] == 400
    out = ctl(n1, "shrink", "n3")
    assert out.returncode == 0, out.stderr
    cluster.wait_until(lambda: members(n1, "qr-grow-even") == {
        "amqpbroker@n1", "amqpbroker@n2"} and members(n1, "qr-grow-odd") == {
        "amqpbroker@n1"}, timeout=DEADLINE)
    assert n1.request("DELETE", "queues/quorum/replicas/on/n2/shrink")[0] == 202
    cluster.wait_until(lambda: members(n1, "qr-grow-even") == {"amqpbroker@n1"},
                       timeout=DEADLINE)
    assert members(n1, "qr-other") == {"amqpbroker@n2"}             # its last: kept


def test_rebalance_spreads_the_leaders(cluster):
    queues = [f"qr-lead-{i}" for i in range(3)]
    for name in queues:
        declare_quorum(cluster, name)
        reassigned(cluster, name, ["n1", "n2", "n3"])       # every one led by n1
    n3 = cluster.nodes[2]
    assert n3.request("PUT", "users/qr-monitor", {"password": "p", "tags": "monitoring"})[0] \
        == 201
    client = ManagementClient(f"http://{n3.host}:{n3.management_port}")
    assert client.request("POST", "/api/rebalance/queues", "qr-monitor", "p")[0] == 401
    out = ctl(n3, "rebalance")
    assert out.returncode == 0, out.stderr
    cluster.wait_until(lambda: {queue_on(n3, q).get("leader") for q in queues} == {
        "amqpbroker@n1", "amqpbroker@n2", "amqpbroker@n3"}, timeout=DEADLINE)
    assert "User 'guest' has initiated a queue rebalance" in "".join(n3.output)


def test_a_client_local_queue_is_led_by_the_node_it_was_declared_through(shared_cluster):
    """RabbitMQ's ``x-queue-leader-locator: client-local``: the leader is the node the
    declaring client is connected to (without it, the controller balances leaders)."""
    cluster = shared_cluster
    for node in cluster.nodes[1:]:
        name = f"qr-local-{node.node}"
        conn = connect(node)
        conn.channel().queue_declare(name, durable=True, arguments={
            "x-queue-type": "quorum", "x-quorum-initial-group-size": 3,
            "x-queue-leader-locator": "client-local"})
        conn.close()
        cluster.wait_until(lambda: queue_on(node, name).get("leader") is not None,
                           timeout=DEADLINE)
        assert queue_on(node, name)["leader"] == f"amqpbroker@{node.node}"
        assert len(queue_on(node, name)["members"]) == 3
