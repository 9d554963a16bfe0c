"""``amqpbroker ctl`` against the broker under test: ours by default, RabbitMQ's management
plugin with ``AMQP_URL`` / ``AMQP_MGMT_URL`` set, where the same assertions pass (ctl calls
RabbitMQ's paths and reads its shapes). Each test's objects have unique names and are
deleted. tests/integration/test_ctl.py covers the rest on our broker, in both layouts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pika
import pytest
from pika.exceptions import ConnectionClosedByBroker

import amqpbroker

from .conftest import url_with, wait_until


@pytest.fixture
def ctl(mgmt_url):
    u = urllib.parse.urlparse(mgmt_url)
    root = str(Path(amqpbroker.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [root, os.environ.get("PYTHONPATH")]))}

    def run(*args: str, stdin: str | None = None, check: bool = True):
        done = subprocess.run(
            [sys.executable, "-m", "amqpbroker", "ctl", "--url",
             f"{u.scheme}://{u.hostname}:{u.port}", "--user",
             urllib.parse.unquote(u.username or "guest"), "--password",
             urllib.parse.unquote(u.password or "guest"), *args],
            env=env, input=stdin, capture_output=True, text=True, timeout=60)
        if check:
            assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
        return done
    return run


def as_json(ctl, *args):
    return json.loads(ctl(*args, "--format", "json").stdout)


def test_declare_bind_publish_get_purge_delete(ctl, uniq, connect):
    queue, exchange = uniq("ctl-q"), uniq("ctl-x")
    try:
        ctl("queues", "declare", queue, "--transient", "-a", "x-max-length=10")
        ctl("exchanges", "declare", exchange, "--type", "direct", "--transient")
        ctl("bindings", "bind", exchange, queue, "-k", "jobs")
        [q] = [q for q in as_json(ctl, "queues", "list") if q["name"] == queue]
        assert (q["durable"], q["arguments"]) == (False, {"x-max-length": 10})
        assert {"name": exchange, "type": "direct"} in \
            as_json(ctl, "exchanges", "list", "--columns", "name,type")
        assert {"source": exchange, "destination": queue, "routing_key": "jobs"} in \
            as_json(ctl, "bindings", "list", "--columns", "source,destination,routing_key")

        assert ctl("publish", "-e", exchange, "-k", "jobs", "-H", "n=1", "--persistent",
                   stdin="from stdin").stdout == \
            f"published 10 bytes to exchange '{exchange}' with routing key 'jobs'\n"
        ch = connect().channel()
        ch.confirm_delivery()       # queued before ctl reads it, in every layout
        ch.basic_publish("", queue, b"from pika")
        peeked = as_json(ctl, "get", queue, "--count", "2")
        assert [(m["payload"], m["routing_key"]) for m in peeked] == \
            [("from stdin", "jobs"), ("from pika", queue)]
        assert peeked[0]["properties"] == {"delivery_mode": 2, "headers": {"n": 1}}
        taken = ctl("get", queue, "--ackmode", "ack_requeue_false", "--payload-only")
        assert taken.stdout == "from stdin\n"
        method, _, body = ch.basic_get(queue, auto_ack=True)
        assert body == b"from pika" and method.redelivered
        ctl("publish", "-k", queue, "again")
        ctl("queues", "purge", queue)
        assert ch.basic_get(queue, auto_ack=True) == (None, None, None)

        ctl("bindings", "unbind", exchange, queue, "-k", "jobs")
        nowhere = ctl("publish", "-e", exchange, "-k", "jobs", "x", "--mandatory", check=False)
        assert nowhere.returncode == 1 and "NO_ROUTE" in nowhere.stderr
    finally:
        ctl("exchanges", "delete", exchange, check=False)
        ctl("queues", "delete", queue, check=False)
    gone = ctl("queues", "delete", queue, check=False)
    assert (gone.returncode, gone.stderr) == \
        (1, f"Error: queue '{queue}' in vhost '/' not found\n")


def test_list_consumers_and_close_a_connection(ctl, uniq, connect):
    queue, name = uniq("ctl-q"), uniq("ctl-conn")
    conn = connect(client_properties={"connection_name": name})
    ch = conn.channel()
    ch.queue_declare(queue, exclusive=True)
    tag = ch.basic_consume(queue, lambda *a: None)
    # RabbitMQ's statistics arrive every few seconds: wait for them
    wait_until(lambda: tag in [c["consumer_tag"] for c in as_json(ctl, "consumers", "list")],
               timeout=30, message="the consumer")
    [listed] = wait_until(lambda: [c for c in as_json(ctl, "connections", "list")
                                   if c["client_properties"].get("connection_name") == name],
                          timeout=30, message="the connection")
    assert listed["user"] == "guest"
    ctl("connections", "close", listed["name"], "--reason", "ctl says bye")
    with pytest.raises(ConnectionClosedByBroker) as closed:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
    assert closed.value.reply_code == 320 and "ctl says bye" in closed.value.reply_text


def test_export_import_one_vhost_alarms_and_refusals(ctl, uniq, tmp_path):
    queue = uniq("ctl-q")
    try:
        ctl("queues", "declare", queue, "-a", "x-message-ttl=1000")
        saved = tmp_path / "defs.json"
        ctl("definitions", "export", str(saved), "--only-vhost")
        # import only this test's queue: the broker may be shared with other tests
        defs = json.loads(saved.read_text())
        assert "vhosts" not in defs
        mine = {"queues": [q for q in defs["queues"] if q["name"] == queue]}
        assert len(mine["queues"]) == 1
        saved.write_text(json.dumps(mine))
        ctl("queues", "delete", queue)
        ctl("definitions", "import", str(saved), "--only-vhost")
        [q] = [q for q in as_json(ctl, "queues", "list") if q["name"] == queue]
        assert (q["durable"], q["arguments"]) == (True, {"x-message-ttl": 1000})
    finally:
        ctl("queues", "delete", queue, check=False)
    assert ctl("alarms").stdout == "no alarms in effect\n"
    assert ctl("queues", "list", "--vhost", uniq("no-vhost"), check=False).returncode == 1
    login = ctl("queues", "list", "--password", "not-the-password", check=False)
    assert (login.returncode, login.stderr) == (1, "Error: Login failed\n")


def test_users_permissions_topic_permissions_and_the_cluster_name(ctl, uniq, broker_url):
    """rabbitmqctl's user and permission verbs, as ``ctl`` verbs: a user added with a
    password from stdin logs in over AMQP; its password and tags change without losing the
    other; its permissions and topic permissions are set, listed, enforced and cleared."""
    name = uniq("ctl-user")

    def login(password: str, vhost: str = "/"):
        params = pika.URLParameters(url_with(broker_url, user=name, password=password,
                                             vhost=vhost))
        return pika.BlockingConnection(params)
    try:
        missing = ctl("users", "add", name, check=False)
        assert missing.returncode == 2 and "--password-stdin" in missing.stderr
        ctl("users", "add", name, "--tags", "management", "--password-stdin", stdin="pw-1\n")
        assert {"name": name, "tags": "management"} in \
            as_json(ctl, "users", "list", "--columns", "name,tags")
        ctl("permissions", "set", name, ".*", ".*", ".*")
        assert as_json(ctl, "permissions", "list", "--of-user", name) == [
            {"user": name, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
        login("pw-1").close()
        ctl("users", "password", name, "--password-stdin", stdin="pw-2\n")
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            login("pw-1")
        ctl("users", "tags", name, "monitoring")
        assert {"name": name, "tags": "monitoring"} in \
            as_json(ctl, "users", "list", "--columns", "name,tags")
        conn = login("pw-2")                   # the tags changed, the password stayed
        ctl("topic-permissions", "set", name, "amq.topic", "^ok$", ".*")
        assert as_json(ctl, "topic-permissions", "list", "--of-user", name) == [
            {"user": name, "vhost": "/", "exchange": "amq.topic", "write": "^ok$",
             "read": ".*"}]
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "ok", b"allowed")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.basic_publish("amq.topic", "not-ok", b"refused")
        assert e.value.reply_code == 403
        conn.close()
        ctl("topic-permissions", "clear", name, "amq.topic")
        assert as_json(ctl, "topic-permissions", "list", "--of-user", name) == []
        ctl("permissions", "clear", name)
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
            login("pw-2")
        before = ctl("cluster-name").stdout.strip()
        try:
            ctl("cluster-name", "ctl-named")
            assert ctl("cluster-name").stdout == "ctl-named\n"
        finally:
            ctl("cluster-name", before)
        ctl("users", "delete", name)
        gone = ctl("users", "delete", name, check=False)
        assert (gone.returncode, gone.stderr) == (1, f"Error: user '{name}' not found\n")
    finally:
        ctl("users", "delete", name, check=False)


def test_vhosts_trace_turns_the_firehose_on_and_off_keeping_its_settings(ctl, uniq):
    """``ctl vhosts trace VHOST on|off``: rabbitmqctl's trace_on / trace_off."""
    vhost = uniq("ctl-traced")
    try:
        ctl("vhosts", "add", vhost, "--description", "kept")
        for state in ("on", "off"):
            ctl("vhosts", "trace", vhost, state)
            [got] = [v for v in as_json(ctl, "vhosts", "list") if v["name"] == vhost]
            assert (got["tracing"], got["description"]) == (state == "on", "kept")
    finally:
        ctl("vhosts", "delete", vhost, check=False)
