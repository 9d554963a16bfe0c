"""RabbitMQ's own ``rabbitmqadmin`` (Debian's ``/usr/bin/rabbitmqadmin``, 3.10) against our
management API, unchanged: list, show, declare, delete, publish, get, purge, export, import
and close, in both process layouts (one process; two front-ends and two workers, where the
connection, channel and consumer lists gather every front-end's)."""
from __future__ import annotations

import json
import subprocess

import pika
import pytest
from pika.exceptions import ConnectionClosedByBroker

from amqpbroker.testing import LAYOUTS, BrokerProcess, leaks

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

RABBITMQADMIN = "/usr/bin/rabbitmqadmin"


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("rabbitmqadmin"), *LAYOUTS[request.param],
                       management=True) as b:
        b.layout = request.param
        yield b


def admin(b: BrokerProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([RABBITMQADMIN, "-H", b.host, "-P", str(b.management_port),
                           "-u", "guest", "-p", "guest", *args],
                          capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


def listed(b: BrokerProcess, *args: str):
    return json.loads(admin(b, "-f", "raw_json", *args).stdout)


def queue_depth(b: BrokerProcess, name: str):
    return {q["name"]: q["messages"] for q in listed(b, "list", "queues", "name",
                                                      "messages")}.get(name)


def test_declare_publish_get_purge_and_delete(broker):
    admin(broker, "declare", "queue", "name=jobs", "durable=true",
          'arguments={"x-max-length": 100}')
    admin(broker, "declare", "exchange", "name=work", "type=topic")
    admin(broker, "declare", "binding", "source=work", "destination=jobs",
          "routing_key=job.*")
    [q] = [q for q in listed(broker, "list", "queues") if q["name"] == "jobs"]
    assert (q["durable"], q["arguments"], q["messages"]) == (True, {"x-max-length": 100}, 0)
    assert {"name": "work", "type": "topic"} in listed(broker, "list", "exchanges", "name",
                                                       "type")
    assert {"source": "work", "destination": "jobs", "routing_key": "job.*"} in \
        listed(broker, "list", "bindings", "source", "destination", "routing_key")

    admin(broker, "publish", "exchange=work", "routing_key=job.a", "payload=first",
          'properties={"delivery_mode": 2, "headers": {"attempt": 1}}')
    admin(broker, "publish", "exchange=amq.default", "routing_key=jobs", "payload=second")
    assert queue_depth(broker, "jobs") == 2
    peeked = listed(broker, "get", "queue=jobs", "count=2")        # ack_requeue_true
    assert [(m["payload"], m["routing_key"], m["redelivered"]) for m in peeked] == \
        [("first", "job.a", False), ("second", "jobs", False)]
    assert peeked[0]["properties"] == {"delivery_mode": 2, "headers": {"attempt": 1}}
    assert queue_depth(broker, "jobs") == 2
    taken = listed(broker, "get", "queue=jobs", "ackmode=ack_requeue_false")
    assert [(m["payload"], m["redelivered"], m["message_count"]) for m in taken] == \
        [("first", True, 1)]
    # the table format rabbitmqadmin prints by default reads the same answer
    assert "second" in admin(broker, "get", "queue=jobs").stdout

    # a message published through rabbitmqadmin reaches an AMQP consumer
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        admin(broker, "publish", "exchange=work", "routing_key=job.b", "payload=to-pika")
        got = []
        ch.basic_consume("jobs", lambda c, m, p, body: got.append(body), auto_ack=True)
        leaks.wait_until(lambda: len(got) == 2, what="deliveries",
                         step=lambda: conn.process_data_events(0.05))
        assert got == [b"second", b"to-pika"]
    finally:
        conn.close()

    for i in range(3):
        admin(broker, "publish", "exchange=amq.default", "routing_key=jobs", f"payload={i}")
    assert queue_depth(broker, "jobs") == 3
    admin(broker, "purge", "queue", "name=jobs")
    assert queue_depth(broker, "jobs") == 0

    [bd] = [bd for bd in listed(broker, "list", "bindings") if bd["source"] == "work"]
    admin(broker, "delete", "binding", "source=work", "destination_type=queue",
          "destination=jobs", f"properties_key={bd['properties_key']}")
    assert not [bd for bd in listed(broker, "list", "bindings") if bd["source"] == "work"]
    admin(broker, "delete", "exchange", "name=work")
    admin(broker, "delete", "queue", "name=jobs")
    assert queue_depth(broker, "jobs") is None
    assert "work" not in [x["name"] for x in listed(broker, "list", "exchanges")]
    missing = admin(broker, "delete", "queue", "name=jobs", check=False)
    assert missing.returncode != 0
    assert "Not found: /api/queues/%2F/jobs" in missing.stderr + missing.stdout


def test_export_and_import_definitions(broker, tmp_path):
    admin(broker, "declare", "vhost", "name=shop")
    admin(broker, "declare", "permission", "vhost=shop", "user=guest", "configure=.*",
          "write=.*", "read=.*")
    admin(broker, "-V", "shop", "declare", "queue", "name=orders", "durable=true")
    admin(broker, "-V", "shop", "declare", "exchange", "name=sales", "type=fanout")
    admin(broker, "-V", "shop", "declare", "binding", "source=sales", "destination=orders")
    whole, shop = tmp_path / "whole.json", tmp_path / "shop.json"
    admin(broker, "export", str(whole))
    admin(broker, "-V", "shop", "export", str(shop))
    exported = json.loads(whole.read_text())
    assert {"name": "orders", "vhost": "shop", "durable": True, "auto_delete": False,
            "arguments": {}} in exported["queues"]
    assert [q["name"] for q in json.loads(shop.read_text())["queues"]] == ["orders"]

    admin(broker, "delete", "vhost", "name=shop")
    assert "shop" not in [v["name"] for v in listed(broker, "list", "vhosts")]
    admin(broker, "import", str(whole))
    assert [(q["name"], q["vhost"]) for q in listed(broker, "-V", "shop", "list", "queues")] \
        == [("orders", "shop")]
    assert {"source": "sales", "destination": "orders"} in \
        listed(broker, "-V", "shop", "list", "bindings", "source", "destination")

    admin(broker, "declare", "vhost", "name=shop2")
    admin(broker, "-V", "shop2", "import", str(shop))       # one vhost's, into another
    assert [q["name"] for q in listed(broker, "-V", "shop2", "list", "queues")] == ["orders"]
    assert "sales" in [x["name"] for x in listed(broker, "-V", "shop2", "list", "exchanges")]
    for vhost in ("shop", "shop2"):
        admin(broker, "delete", "vhost", f"name={vhost}")


def _connect(b: BrokerProcess, name: str) -> pika.BlockingConnection:
    params = pika.URLParameters(b.url)
    params.client_properties = {"connection_name": name}
    return pika.BlockingConnection(params)


def test_connections_channels_consumers_and_close(broker):
    """Connections until there is one on every front-end, each consuming; rabbitmqadmin
    lists them all and closes one, and only that one."""
    frontends = {"one process": {0}, "2 workers + 2 front-ends": {0, 1}}[broker.layout]
    conns, where = {}, {}
    try:
        admin(broker, "declare", "queue", "name=watched", "durable=false")
        for i in range(100):
            name = f"client-{i}"
            conn = conns[name] = _connect(broker, name)
            ch = conn.channel()
            ch.basic_qos(prefetch_count=3)
            ch.basic_consume("watched", lambda *a: None, consumer_tag=f"tag-{i}")
            where = {c["client_properties"].get("connection_name"): c["frontend"]
                     for c in listed(broker, "list", "connections")}
            if set(where.values()) >= frontends:
                break
        assert set(where.values()) == frontends
        names = {c["client_properties"]["connection_name"]: c["name"]
                 for c in listed(broker, "list", "connections")}
        assert set(names) == set(conns)
        assert sorted(c["name"] for c in listed(broker, "list", "channels")) == \
            sorted(f"{n} (1)" for n in names.values())
        consumers = listed(broker, "list", "consumers")
        assert sorted(c["consumer_tag"] for c in consumers) == \
            sorted(f"tag-{i}" for i in range(len(conns)))
        assert all(c["queue"] == {"name": "watched", "vhost": "/"} and c["prefetch_count"] == 3
                   for c in consumers)
        table = admin(broker, "list", "connections").stdout          # name, user, channels
        assert all(n in table for n in names.values())

        victim = max(conns)                 # the last one: on the front-end found last
        admin(broker, "close", "connection", f"name={names[victim]}")
        with pytest.raises(ConnectionClosedByBroker) as closed:
            leaks.wait_until(lambda: not conns[victim].is_open, what="the close",
                             step=lambda: conns[victim].process_data_events(0.05))
        assert (closed.value.reply_code, closed.value.reply_text) == \
            (320, "CONNECTION_FORCED - Closed via management plugin")
        leaks.wait_until(lambda: names[victim] not in
                         [c["name"] for c in listed(broker, "list", "connections")],
                         what="the closed connection to leave the list")
        for name, conn in conns.items():
            if name != victim:
                conn.process_data_events(0)
                assert conn.is_open, name
    finally:
        for conn in conns.values():
            if conn.is_open:
                conn.close()
        admin(broker, "delete", "queue", "name=watched")


def test_show_and_list_the_node(broker):
    [overview] = listed(broker, "show", "overview")
    assert overview["object_totals"]["queues"] >= 0 and overview["node"]
    assert "cluster_name" in admin(broker, "show", "overview").stdout
    [node] = listed(broker, "list", "nodes")
    assert node["name"] == overview["node"] and node["running"] is True
    assert "/" in [v["name"] for v in listed(broker, "list", "vhosts")]
    assert ["guest"] == [u["name"] for u in listed(broker, "list", "users")]
    assert {"user": "guest", "vhost": "/"} in listed(broker, "list", "permissions", "user",
                                                     "vhost")
    sorted_desc = [x["name"] for x in listed(broker, "--sort", "name", "--sort-reverse",
                                             "list", "exchanges", "name")]
    assert sorted_desc == sorted(sorted_desc, reverse=True)


def test_policies(broker):
    """rabbitmqadmin's policy and operator policy verbs: declare (its definition and priority
    are JSON), list, delete; the policy acts on the queue it names."""
    admin(broker, "declare", "queue", "name=capped", "durable=true")
    admin(broker, "declare", "policy", "name=cap", "pattern=^capped$",
          'definition={"max-length": 2}', "priority=5", "apply-to=queues")
    assert listed(broker, "list", "policies") == [
        {"vhost": "/", "name": "cap", "pattern": "^capped$", "apply-to": "queues",
         "definition": {"max-length": 2}, "priority": 5}]
    for i in range(4):
        admin(broker, "publish", "routing_key=capped", f"payload=m{i}")
    assert queue_depth(broker, "capped") == 2
    assert listed(broker, "list", "operator_policies") == []
    # an operator policy caps it lower: merged, the lower value wins
    admin(broker, "declare", "operator_policy", "name=ops-cap", "pattern=^capped$",
          'definition={"max-length": 1}', "apply-to=queues")
    assert listed(broker, "list", "operator_policies") == [
        {"vhost": "/", "name": "ops-cap", "pattern": "^capped$", "apply-to": "queues",
         "definition": {"max-length": 1}, "priority": 0}]
    assert queue_depth(broker, "capped") == 1
    admin(broker, "delete", "operator_policy", "name=ops-cap")
    assert listed(broker, "list", "operator_policies") == []
    admin(broker, "delete", "policy", "name=cap")
    assert listed(broker, "list", "policies") == []
    admin(broker, "delete", "queue", "name=capped")


def test_a_vhosts_limits_as_a_parameter(broker):
    """rabbitmqadmin's parameter verbs on the one component this broker has: a vhost's
    limits (``vhost-limits``/``limits``) declared, listed and deleted, and enforced."""
    admin(broker, "declare", "vhost", "name=limited")
    try:
        admin(broker, "-V", "limited", "declare", "parameter", "component=vhost-limits",
              "name=limits", 'value={"max-queues": 1}')
        assert listed(broker, "list", "parameters") == [
            {"value": {"max-queues": 1}, "vhost": "limited", "component": "vhost-limits",
             "name": "limits"}]
        admin(broker, "-V", "limited", "declare", "queue", "name=first")
        refused = admin(broker, "-V", "limited", "declare", "queue", "name=second",
                        check=False)
        assert refused.returncode != 0 and "queue limit in vhost 'limited' (1)" in \
            refused.stdout + refused.stderr
        admin(broker, "-V", "limited", "delete", "parameter", "component=vhost-limits",
              "name=limits")
        assert listed(broker, "list", "parameters") == []
        admin(broker, "-V", "limited", "declare", "queue", "name=second")
    finally:
        admin(broker, "delete", "vhost", "name=limited")
