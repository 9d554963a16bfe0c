"""``amqpbroker ctl`` as an operator and a script use it: the real command (a subprocess of
this worktree's amqpbroker) against a broker the test starts, in both process layouts (one
process; two front-ends and two workers, where connections and consumers are gathered from
every front-end), with pika on the other side of what it does. Exit statuses: 0 done, 1
refused (the API's reason on stderr), 2 usage, 3 cannot connect."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pika
import pytest
from pika.exceptions import ConnectionClosedByBroker

import amqpbroker
from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import wait_until as wait_for

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("ctl"), *LAYOUTS[request.param],
                       management=True) as b:
        yield b


def ctl(b: BrokerProcess | None, *args: str, stdin: bytes | str | None = None,
        env: dict | None = None, url: str | None = None) -> subprocess.CompletedProcess:
    """``amqpbroker ctl`` of the code under test; ``--url`` points at ``b`` unless ``url``
    (or, with ``url=""``, the environment) says otherwise."""
    root = str(Path(amqpbroker.__file__).resolve().parents[1])
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(
        filter(None, [root, os.environ.get("PYTHONPATH")]))}
    if url is None:
        url = f"http://127.0.0.1:{b.management_port}"
    cmd = [sys.executable, "-m", "amqpbroker", "ctl", *(["--url", url] if url else []), *args]
    binary = isinstance(stdin, bytes)
    return subprocess.run(cmd, env=full_env, input=stdin, capture_output=True,
                          text=not binary, timeout=60)


def ok(b, *args, **kw) -> str:
    done = ctl(b, *args, **kw)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout


def listed(b, *args) -> list:
    return json.loads(ok(b, *args, "--format", "json"))


def connect(b, name: str | None = None) -> pika.BlockingConnection:
    params = pika.URLParameters(b.url)
    if name:
        params.client_properties = {"connection_name": name}
    return pika.BlockingConnection(params)


# ------------------------------------------------------------------ queues and messages
def test_queue_declare_list_publish_get_purge_delete(broker):
    assert ok(broker, "queues", "declare", "ctl-jobs", "-a", "x-max-length=100") == \
        "queue 'ctl-jobs' declared in vhost '/'\n"
    [q] = [q for q in listed(broker, "queues", "list") if q["name"] == "ctl-jobs"]
    assert (q["durable"], q["arguments"], q["messages"], q["state"]) == \
        (True, {"x-max-length": 100}, 0, "running")
    table = ok(broker, "queues", "list").splitlines()
    assert table[0].split() == ["name", "type", "durable", "messages", "messages_ready",
                                "messages_unacknowledged", "consumers", "state"]
    assert ["ctl-jobs", "classic", "true", "0", "0", "0", "0", "running"] in \
        [line.split() for line in table[1:]]
    # every line of the table is as wide as its columns: aligned
    assert len({line.index("classic") for line in table[1:] if "classic" in line}) == 1
    assert listed(broker, "queues", "list", "--columns", "name,durable")[0].keys() == \
        {"name", "durable"}

    # published by ctl, received by pika with its properties and headers
    assert ok(broker, "publish", "-k", "ctl-jobs", "first", "-p", "content_type=text/plain",
              "-p", "priority=3", "-H", "attempt=1", "--persistent") == \
        "published 5 bytes to exchange '' with routing key 'ctl-jobs'\n"
    conn = connect(broker)
    try:
        ch = conn.channel()
        method, props, body = ch.basic_get("ctl-jobs", auto_ack=True)
        assert body == b"first" and method.routing_key == "ctl-jobs"
        assert (props.content_type, props.priority, props.headers, props.delivery_mode) == \
            ("text/plain", 3, {"attempt": 1}, 2)
        ch.confirm_delivery()       # queued before ctl reads it, in every layout
        ch.basic_publish("", "ctl-jobs", b"from pika", pika.BasicProperties(message_id="m1"))
        ch.basic_publish("", "ctl-jobs", b"second")
    finally:
        conn.close()

    # get: ack_requeue_true leaves them, ack_requeue_false takes them
    peeked = listed(broker, "get", "ctl-jobs", "--count", "5")
    # no properties at all is [], not {}: RabbitMQ's shape (an empty Erlang proplist)
    assert [(m["payload"], m["redelivered"], (m["properties"] or {}).get("message_id"))
            for m in peeked] == [("from pika", False, "m1"), ("second", False, None)]
    table = ok(broker, "get", "ctl-jobs").splitlines()
    assert table[0].split() == ["routing_key", "exchange", "redelivered", "message_count",
                                "payload_bytes", "payload"]
    assert table[1].split()[0] == "ctl-jobs" and table[1].endswith("from pika")
    assert queue_depth(broker, "ctl-jobs") == 2
    taken = ctl(broker, "get", "ctl-jobs", "--ackmode", "ack_requeue_false", "--payload-only",
                stdin=b"")
    assert (taken.returncode, taken.stdout) == (0, b"from pika\n")
    assert queue_depth(broker, "ctl-jobs") == 1
    assert ok(broker, "queues", "purge", "ctl-jobs") == "queue 'ctl-jobs' purged\n"
    assert queue_depth(broker, "ctl-jobs") == 0
    assert ok(broker, "queues", "delete", "ctl-jobs") == "queue 'ctl-jobs' deleted\n"
    assert queue_depth(broker, "ctl-jobs") is None
    gone = ctl(broker, "queues", "delete", "ctl-jobs")
    assert (gone.returncode, gone.stdout, gone.stderr) == \
        (1, "", "Error: queue 'ctl-jobs' in vhost '/' not found\n")


def queue_depth(b, name: str):
    return {q["name"]: q["messages"] for q in listed(b, "queues", "list")}.get(name)


def test_queue_delete_conditions_and_declare_refusals(broker):
    ok(broker, "queues", "declare", "ctl-busy", "--transient")
    ok(broker, "publish", "-k", "ctl-busy", "x")
    refused = ctl(broker, "queues", "delete", "ctl-busy", "--if-empty")
    assert refused.returncode == 1 and refused.stderr.startswith("Error: ")
    assert "ctl-busy" in refused.stderr and "not empty" in refused.stderr
    # a redeclare with other properties: the broker's AMQP wording, as RabbitMQ's API gives it
    clash = ctl(broker, "queues", "declare", "ctl-busy")
    assert clash.returncode == 1
    assert "inequivalent arg 'durable' for queue 'ctl-busy'" in clash.stderr
    ok(broker, "queues", "delete", "ctl-busy")


# ------------------------------------------------------------------ exchanges and bindings
def test_exchange_bindings_and_binary_publish_from_stdin(broker):
    assert ok(broker, "exchanges", "declare", "ctl-events", "--type", "topic") == \
        "exchange 'ctl-events' declared in vhost '/'\n"
    assert {"name": "ctl-events", "type": "topic", "durable": True} in \
        listed(broker, "exchanges", "list", "--columns", "name,type,durable")
    assert "(AMQP default)" in ok(broker, "exchanges", "list")
    ok(broker, "queues", "declare", "ctl-audit", "--transient")
    assert ok(broker, "bindings", "bind", "ctl-events", "ctl-audit", "-k", "order.*") == \
        "bound queue 'ctl-audit' to exchange 'ctl-events' with routing key 'order.*'\n"
    assert {"source": "ctl-events", "destination": "ctl-audit", "routing_key": "order.*"} in \
        listed(broker, "bindings", "list", "--columns", "source,destination,routing_key")

    body = bytes(range(256))                # not UTF-8: sent base64-encoded
    conn = connect(broker)
    try:
        ch = conn.channel()
        assert ok(broker, "publish", "-e", "ctl-events", "-k", "order.paid", stdin=body) == \
            b"published 256 bytes to exchange 'ctl-events' with routing key 'order.paid'\n"
        method, _, got = ch.basic_get("ctl-audit", auto_ack=True)
        assert (got, method.exchange, method.routing_key) == (body, "ctl-events", "order.paid")
    finally:
        conn.close()

    assert ok(broker, "bindings", "unbind", "ctl-events", "ctl-audit", "-k", "order.*") == \
        "unbound queue 'ctl-audit' from exchange 'ctl-events' (routing key 'order.*')\n"
    nowhere = ctl(broker, "publish", "-e", "ctl-events", "-k", "order.paid", "x", "--mandatory")
    assert (nowhere.returncode, nowhere.stderr) == \
        (1, "Error: NO_ROUTE - exchange 'ctl-events' routed the message with routing key "
            "'order.paid' to no queue\n")
    dropped = ctl(broker, "publish", "-e", "ctl-events", "-k", "order.paid", "x")
    assert dropped.returncode == 0 and "routed it to no queue" in dropped.stderr
    again = ctl(broker, "bindings", "unbind", "ctl-events", "ctl-audit", "-k", "order.*")
    assert (again.returncode, again.stderr) == \
        (1, "Error: no binding from exchange 'ctl-events' to queue 'ctl-audit' with routing "
            "key 'order.*' in vhost '/'\n")
    assert ok(broker, "exchanges", "delete", "ctl-events") == "exchange 'ctl-events' deleted\n"
    assert "ctl-events" not in [e["name"] for e in listed(broker, "exchanges", "list")]
    ok(broker, "queues", "delete", "ctl-audit")


# ------------------------------------------------------------------ connections, consumers
def test_connections_consumers_and_close_with_a_reason(broker):
    conn = connect(broker, "ctl-test-client")
    try:
        ch = conn.channel()
        ch.queue_declare("ctl-work", auto_delete=False)
        tag = ch.basic_consume("ctl-work", lambda *a: None)
        consumers = wait_for(lambda: [c for c in listed(broker, "consumers", "list")
                                      if c["consumer_tag"] == tag], what="the consumer")
        assert consumers[0]["queue"]["name"] == "ctl-work"
        assert tag in ok(broker, "consumers", "list")
        mine = [c for c in listed(broker, "connections", "list")
                if c["client_properties"].get("connection_name") == "ctl-test-client"]
        assert len(mine) == 1 and (mine[0]["user"], mine[0]["vhost"]) == ("guest", "/")
        name = mine[0]["name"]
        assert name in ok(broker, "connections", "list", "--all-vhosts")
        assert ok(broker, "connections", "close", name, "--reason", "maintenance window") == \
            f"connection '{name}' closed: maintenance window\n"
        with pytest.raises(ConnectionClosedByBroker) as closed:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.1)
        assert closed.value.reply_code == 320
        assert "maintenance window" in closed.value.reply_text
    finally:
        if conn.is_open:
            conn.close()
    wait_for(lambda: name not in ok(broker, "connections", "list"), what="the close")
    gone = ctl(broker, "connections", "close", name)
    assert gone.returncode == 1 and gone.stderr.startswith("Error: ")
    ok(broker, "queues", "delete", "ctl-work")


# ------------------------------------------------------------------ definitions
def test_definitions_export_to_a_file_and_import_from_stdin(broker, tmp_path):
    ok(broker, "exchanges", "declare", "ctl-defs-x", "--type", "fanout")
    ok(broker, "queues", "declare", "ctl-defs-q", "-a", "x-message-ttl=60000")
    ok(broker, "bindings", "bind", "ctl-defs-x", "ctl-defs-q")
    saved = tmp_path / "defs.json"
    assert ok(broker, "definitions", "export", str(saved)) == \
        f"definitions exported to {saved}\n"
    defs = json.loads(saved.read_text())
    assert {"name": "ctl-defs-q", "vhost": "/", "durable": True, "auto_delete": False,
            "arguments": {"x-message-ttl": 60000}}.items() <= \
        [q for q in defs["queues"] if q["name"] == "ctl-defs-q"][0].items()
    assert json.loads(ok(broker, "definitions", "export")) == defs        # stdout

    ok(broker, "exchanges", "delete", "ctl-defs-x")
    ok(broker, "queues", "delete", "ctl-defs-q")
    assert ok(broker, "definitions", "import", stdin=saved.read_text()) == \
        "definitions imported from stdin\n"
    [q] = [q for q in listed(broker, "queues", "list") if q["name"] == "ctl-defs-q"]
    assert q["arguments"] == {"x-message-ttl": 60000}
    assert {"source": "ctl-defs-x", "destination": "ctl-defs-q"} in \
        listed(broker, "bindings", "list", "--columns", "source,destination")
    vhost_only = json.loads(ok(broker, "definitions", "export", "--only-vhost"))
    assert "ctl-defs-q" in [q["name"] for q in vhost_only["queues"]]
    assert "vhosts" not in vhost_only
    ok(broker, "exchanges", "delete", "ctl-defs-x")
    ok(broker, "queues", "delete", "ctl-defs-q")

    (tmp_path / "bad.json").write_text("{not json")
    bad = ctl(broker, "definitions", "import", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and bad.stderr.startswith(f"Error: {tmp_path}/bad.json is not "
                                                         f"JSON: ")
    missing = ctl(broker, "definitions", "import", str(tmp_path / "none.json"))
    assert (missing.returncode, missing.stderr) == \
        (2, f"Error: cannot read {tmp_path}/none.json: No such file or directory\n")
    refused = ctl(broker, "definitions", "import", stdin='{"queues": [{"name": 5}]}')
    assert refused.returncode == 1 and refused.stderr.startswith("Error: ")


# ------------------------------------------------------------------ alarms, exit statuses
def test_alarms_none_in_effect(broker):
    done = ctl(broker, "alarms")
    assert (done.returncode, done.stdout, done.stderr) == (0, "no alarms in effect\n", "")
    assert listed(broker, "alarms") == []


def test_alarms_in_effect_exit_1_and_are_listed(tmp_path):
    with BrokerProcess(tmp_path, "--workers", "0", "--frontends", "0",
                       "--memory-high-watermark", "0.000001", management=True) as b:
        done = wait_for(lambda: (lambda d: d if d.returncode == 1 else None)(
            ctl(b, "alarms")), what="the memory alarm")
        assert done.stdout.split() == ["node", "resource", "amqpbroker@localhost", "memory"]
        assert done.stderr == "Error: There are alarms in effect in the cluster\n"
        as_json = ctl(b, "alarms", "--format", "json")
        assert json.loads(as_json.stdout) == [{"node": "amqpbroker@localhost",
                                               "resource": "memory"}]


def test_exit_statuses_and_messages(broker):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))            # bound, not listening: refused
        port = s.getsockname()[1]
        down = ctl(None, "queues", "list", url=f"http://127.0.0.1:{port}")
    assert down.returncode == 3
    assert down.stderr.startswith(f"Error: cannot connect to http://127.0.0.1:{port}: ")
    usage = ctl(broker, "queues", "lst")
    assert usage.returncode == 2 and "invalid choice: 'lst'" in usage.stderr
    assert ctl(broker, "queues", "declare").returncode == 2      # no name
    assert ctl(broker, "get", "q", "--count", "many").returncode == 2
    login = ctl(broker, "queues", "list", "--password", "wrong")
    assert (login.returncode, login.stdout, login.stderr) == (1, "", "Error: Login failed\n")
    vhost = ctl(broker, "queues", "list", "--vhost", "no-such-vhost")
    assert (vhost.returncode, vhost.stderr) == (1, "Error: vhost 'no-such-vhost' not found\n")
    # the connection flags from the environment; flags after the command win
    env = {"AMQPBROKER_CTL_URL": f"http://127.0.0.1:{broker.management_port}",
           "AMQPBROKER_CTL_PASSWORD": "wrong"}
    assert ctl(None, "exchanges", "list", env=env, url="").returncode == 1
    assert "amq.topic" in ok(None, "exchanges", "list", "--password", "guest", env=env, url="")


# ------------------------------------------------------------------ vhosts and policies
def test_vhosts_with_a_default_queue_type_and_policies(broker):
    out = ok(broker, "vhosts", "add", "ctl-vh", "--description", "orders",
             "--default-queue-type", "quorum")
    assert out == "vhost 'ctl-vh' added\n"
    [vh] = [v for v in listed(broker, "vhosts", "list") if v["name"] == "ctl-vh"]
    assert (vh["description"], vh["default_queue_type"]) == ("orders", "quorum")
    params = pika.URLParameters(broker.url)
    params.virtual_host = "ctl-vh"
    conn = pika.BlockingConnection(params)          # the creator has every permission
    ch = conn.channel()
    ch.queue_declare("jobs", durable=True)
    assert ok(broker, "policies", "set", "cap", "^jobs$", '{"max-length": 2}',
              "--apply-to", "quorum_queues", "--priority", "3", "--vhost", "ctl-vh") == \
        "policy 'cap' set in vhost 'ctl-vh'\n"
    assert listed(broker, "policies", "list", "--vhost", "ctl-vh") == [
        {"vhost": "ctl-vh", "name": "cap", "pattern": "^jobs$", "apply-to": "quorum_queues",
         "definition": {"max-length": 2}, "priority": 3}]
    for i in range(4):
        ch.basic_publish("", "jobs", b"m%d" % i)
    assert ch.queue_declare("jobs", passive=True).method.message_count == 2
    assert ok(broker, "operator-policies", "set", "ops", "^jobs$", '{"max-length": 1}',
              "--apply-to", "queues", "--vhost", "ctl-vh") == \
        "operator policy 'ops' set in vhost 'ctl-vh'\n"
    assert listed(broker, "operator-policies", "list", "--vhost", "ctl-vh") == [
        {"vhost": "ctl-vh", "name": "ops", "pattern": "^jobs$", "apply-to": "queues",
         "definition": {"max-length": 1}, "priority": 0}]
    assert ch.queue_declare("jobs", passive=True).method.message_count == 1
    bad = ctl(broker, "operator-policies", "set", "o", "x", '{"overflow": "drop-head"}',
              "--vhost", "ctl-vh")
    assert bad.returncode == 1 and "are not recognised policy settings" in bad.stderr
    assert ok(broker, "operator-policies", "clear", "ops", "--vhost", "ctl-vh") == \
        "operator policy 'ops' cleared\n"
    conn.close()
    bad = ctl(broker, "policies", "set", "p", "x", '{"nope": 1}', "--vhost", "ctl-vh")
    assert bad.returncode == 1 and "are not recognised policy settings" in bad.stderr
    assert ctl(broker, "policies", "set", "p", "x", "not json").returncode == 2
    assert ok(broker, "policies", "clear", "cap", "--vhost", "ctl-vh") == \
        "policy 'cap' cleared\n"
    gone = ctl(broker, "policies", "clear", "cap", "--vhost", "ctl-vh")
    assert gone.returncode == 1 and "policy 'cap' in vhost 'ctl-vh' not found" in gone.stderr
    assert ok(broker, "vhosts", "delete", "ctl-vh") == "vhost 'ctl-vh' deleted\n"


def test_federation_upstream_status_restart_delete(broker):
    """A vhost of this broker federating an exchange from another vhost of it (an upstream
    URI of its own address: a vhost differs, so no cycle; guest made that vhost, so may use
    it)."""
    assert ok(broker, "vhosts", "add", "ctl-fed-up") == "vhost 'ctl-fed-up' added\n"
    uri = f"amqp://guest:guest@127.0.0.1:{broker.port}/ctl-fed-up"
    assert ok(broker, "federation", "set-upstream", "ctl-up", json.dumps({"uri": uri})) == \
        "federation upstream 'ctl-up' set in vhost '/'\n"
    assert ok(broker, "policies", "set", "ctl-fed", "^ctl-fed-x$",
              '{"federation-upstream": "ctl-up"}', "--apply-to", "exchanges").startswith(
        "policy 'ctl-fed' set")
    conn = connect(broker)
    ch = conn.channel()
    ch.exchange_declare("ctl-fed-x", "fanout")
    wait_for(lambda: [x["status"] for x in listed(broker, "federation", "status")]
             == ["running"], 20, "running")
    [link] = listed(broker, "federation", "status")
    assert (link["type"], link["exchange"], link["upstream"]) == \
        ("exchange", "ctl-fed-x", "ctl-up")
    assert ok(broker, "federation", "restart", link["id"]) == \
        f"federation link '{link['id']}' restarted\n"
    gone = ctl(broker, "federation", "restart", "00000000")
    assert gone.returncode == 1 and "not found" in gone.stderr
    bad = ctl(broker, "federation", "set-upstream", "bad", '{"uri": 5}')
    assert bad.returncode == 1 and "uri should be list, actually was 5" in bad.stderr
    assert ok(broker, "federation", "delete-upstream", "ctl-up") == \
        "federation upstream 'ctl-up' deleted\n"
    wait_for(lambda: listed(broker, "federation", "status") == [], 20, "the link gone")
    ok(broker, "policies", "clear", "ctl-fed")
    ch.exchange_delete("ctl-fed-x")
    conn.close()
    ok(broker, "vhosts", "delete", "ctl-fed-up")


def test_shovels_set_list_restart_delete(broker):
    conn = connect(broker)
    ch = conn.channel()
    ch.queue_declare("ctl-sh-src", durable=True)
    ch.basic_publish("", "ctl-sh-src", b"moved")
    definition = json.dumps({"src-uri": "amqp://", "src-queue": "ctl-sh-src",
                             "dest-uri": "amqp://", "dest-queue": "ctl-sh-dest"})
    assert ok(broker, "shovels", "set", "ctl-sh", definition) == \
        "shovel 'ctl-sh' set in vhost '/'\n"
    wait_for(lambda: [s["state"] for s in listed(broker, "shovels", "list")] == ["running"],
               20, "running")
    [shovel] = listed(broker, "shovels", "list")
    assert (shovel["name"], shovel["src_queue"], shovel["dest_queue"]) == (
        "ctl-sh", "ctl-sh-src", "ctl-sh-dest")
    wait_for(lambda: ch.queue_declare("ctl-sh-dest", durable=True).method.message_count,
               20, "moved")
    assert ok(broker, "shovels", "restart", "ctl-sh") == "shovel 'ctl-sh' restarted\n"
    bad = ctl(broker, "shovels", "set", "bad", '{"src-uri": "amqp://"}')
    assert bad.returncode == 1 and "Must specify 'src-exchange' or 'src-queue'" in bad.stderr
    assert ok(broker, "shovels", "delete", "ctl-sh") == "shovel 'ctl-sh' deleted\n"
    gone = ctl(broker, "shovels", "delete", "ctl-sh")
    assert gone.returncode == 1 and "shovel 'ctl-sh' in vhost '/' not found" in gone.stderr
    assert listed(broker, "shovels", "list") == []
    ch.queue_delete("ctl-sh-src")
    ch.queue_delete("ctl-sh-dest")
    conn.close()
