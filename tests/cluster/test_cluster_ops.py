"""The operator's side of a cluster (docs/CLUSTER.md sections 1-2): a definitions import that
goes through etcd, `ctl reassign`, `ctl drain`, leadership back to the preferred replica,
exclusive queues on their node's lease; three real nodes, a real etcd, pika and HTTP."""
import base64
import json
import subprocess
import urllib.error
import urllib.request

import pika
import pytest

from amqpbroker import child

LEASE_TTL = 3          # the cluster fixture's lease TTL (conftest.py)


def connect(node):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.port, credentials=pika.PlainCredentials("guest", "guest")))


def call(node, method, path, body=None):
    """(status, decoded JSON body or None) of a management API call."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{node.management_port}/api/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                 "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            data = r.read()
            return r.status, json.loads(data) if data else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def queues(node):
    return {q["name"]: q for q in node.api("queues")}


def ctl(node, *args):
    return subprocess.run([*child.command("amqpbroker"), "ctl", "--url",
                           f"http://127.0.0.1:{node.management_port}", *args],
                          capture_output=True, text=True, timeout=60)


def bound(node, exchange, queue, key) -> bool:
    return any(b["source"] == exchange and b["destination"] == queue
               and b["routing_key"] == key for b in node.api("bindings"))


# ---------------------------------------------------------------- the definitions import
def test_an_import_on_one_node_declares_everywhere_and_a_bad_one_changes_nothing(cluster):
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


def test_a_per_vhost_import_goes_through_etcd_too(cluster):
    n1, n2, _ = cluster.nodes
    doc = {"queues": [{"name": "vh-imp", "durable": True, "auto_delete": False,
                       "arguments": {}}],
           "exchanges": [{"name": "vh-x", "type": "fanout", "durable": True,
                          "auto_delete": False, "internal": False, "arguments": {}}],
           "bindings": [{"source": "vh-x", "destination": "vh-imp",
                         "destination_type": "queue", "routing_key": "", "arguments": {}}]}
    assert call(n2, "POST", "definitions/%2F", doc)[0] == 204
    cluster.wait_until(lambda: bound(n1, "vh-x", "vh-imp", ""))
