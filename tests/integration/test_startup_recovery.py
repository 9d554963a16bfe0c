"""A start never loses data: what was stored comes back, a queue that cannot be opened stays.

* Restore: a data directory holding every kind of object a client or the management API can
  create comes back after a restart (clean and crash) exactly as RabbitMQ keeps it: durable
  exchanges of every type (internal, auto-delete, with arguments), durable queues (server-named
  ``amq.gen-…`` ones too, auto-delete, with every argument), queue and exchange-to-exchange
  bindings with arguments, vhosts, users with tags, permissions, persistent messages. Transient
  exchanges, non-durable and exclusive queues, and bindings to them, do not come back.
  An HTTP import restores the same way, but skips ``amq.*`` names as RabbitMQ's import does.
* Under a real low RLIMIT_NOFILE the node starts with every queue (the file cache bounds the
  open files). A queue whose files cannot be opened at start (here: its ack log is a
  directory) stays defined and keeps its files; the node starts without it (``state:
  "down"``, declares refused with 404); the next start that can open it has every message.
  The same holds when a restarted worker cannot open a queue, or a stored argument fails
  today's checks.
* A start removes only the directories a delete recorded; any other is kept.
* Queue directories: two (vhost, name) pairs never share one, and directories named the old
  way (``sha1(vhost NUL name)``) are renamed at start.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request

import pika
import pika.exceptions
import pytest

from amqpbroker import child
from amqpbroker.supervisor.definitions import read_definitions
from amqpbroker.testing import BrokerProcess
from amqpbroker.testing.leaks import wait_until

PERSISTENT = pika.BasicProperties(delivery_mode=2)


# ------------------------------------------------------------------------------------- helpers
def connect(b: BrokerProcess, vhost: str = "/", user: str = "guest", password: str = "guest"):
    params = pika.ConnectionParameters(b.host, b.port, vhost,
                                       pika.PlainCredentials(user, password),
                                       connection_attempts=1, blocked_connection_timeout=30)
    return pika.BlockingConnection(params)


def api(b: BrokerProcess, method: str, path: str, body=None):
    """(status, decoded JSON or None) of a management API call as guest."""
    req = urllib.request.Request(f"http://{b.host}:{b.management_port}/api/{path}",
                                 method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = resp.read()
            return resp.status, json.loads(data) if data else None
    except urllib.error.HTTPError as err:
        return err.code, None


def down(b: BrokerProcess, how: str) -> None:
    if how == "sigkill":
        b.kill()
    else:
        assert b.stop() == 0, "".join(b.output)


def drain(ch, queue: str, timeout: float = 10.0) -> list[str]:
    """Every message of ``queue``, by basic.get with ack, until it says empty."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return got
        got.append(body.decode())
    raise AssertionError(f"{queue} did not run empty in {timeout}s ({len(got)} read)")


def wait_get(ch, queue: str, timeout: float = 10.0) -> str:
    """The next message of ``queue`` (acked), waiting for one to arrive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            return body.decode()
        ch.connection.process_data_events(time_limit=0.05)
    raise AssertionError(f"nothing arrived in {queue} in {timeout}s")


def stored(definitions: dict) -> dict:
    """The durable objects of an export, each kind as a sorted list (order is not kept)."""
    out = {}
    for kind in ("users", "vhosts", "permissions", "exchanges", "queues", "bindings"):
        out[kind] = sorted(json.dumps(item, sort_keys=True) for item in definitions[kind])
    return out


# ------------------------------------------------------------------ every object comes back
VH = "restore-vh"
EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
# every queue argument the broker knows, with values that keep messages (no expiry, no drops)
EVERY_ARGUMENT = {
    "x-message-ttl": 3_600_000, "x-expires": 86_400_000, "x-max-length": 1000,
    "x-max-length-bytes": 1 << 20, "x-overflow": "reject-publish",
    "x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead",
    "x-single-active-consumer": True, "x-max-priority": 5, "x-queue-type": "classic",
    "x-fsync": "interval",
    # a client's own arguments, of each type pika sends and a JSON document holds
    "app-string": "text", "app-int": 7, "app-long": 1 << 40, "app-bool": False,
    "app-table": {"a": 1, "b": "two", "c": [1, "x"]}, "app-array": [1, 2],
}


def make_every_object(b: BrokerProcess) -> dict:
    """Create, through the API and a pika client, one of every kind of object; returns the
    names a check needs (the server-named queue's name)."""
    assert api(b, "PUT", f"vhosts/{VH}", {"description": "kept", "tags": ["t1", "t2"]})[0] == 201
    assert api(b, "PUT", "users/restorer",
               {"password": "pw", "tags": "monitoring,policymaker"})[0] == 201
    assert api(b, "PUT", "users/plain", {"password": "pw2", "tags": ""})[0] == 201
    assert api(b, "PUT", f"permissions/{VH}/restorer",
               {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    assert api(b, "PUT", f"permissions/{VH}/plain",
               {"configure": "^$", "write": "^$", "read": "^q-plain$"})[0] == 201

    conn = connect(b, VH, "restorer", "pw")
    ch = conn.channel()
    ch.confirm_delivery()
    for t in EXCHANGE_TYPES:
        ch.exchange_declare(f"x-{t}", t, durable=True)
        ch.exchange_declare(f"x-{t}-transient", t, durable=False)
        ch.exchange_declare(f"x-{t}-internal", t, durable=True, internal=True)
        ch.exchange_declare(f"x-{t}-autodelete", t, durable=True, auto_delete=True)
    ch.exchange_declare("x-ae", "fanout", durable=True)
    ch.exchange_declare("x-args", "direct", durable=True,
                        arguments={"alternate-exchange": "x-ae", "app-arg": 3})
    ch.exchange_declare("dlx", "direct", durable=True)

    server_named = ch.queue_declare("", durable=True).method.queue
    assert server_named.startswith("amq.gen-")
    ch.queue_declare("q-plain", durable=True)
    ch.queue_declare("q-autodelete", durable=True, auto_delete=True)
    ch.queue_declare("q-args", durable=True, arguments=EVERY_ARGUMENT)
    ch.queue_declare("q-dead", durable=True)
    ch.queue_declare("q-ae", durable=True)
    ch.queue_declare("q-transient", durable=False)
    ch.queue_declare("q-exclusive", durable=True, exclusive=True)

    # queue bindings, some with arguments; exchange-to-exchange bindings with arguments
    ch.queue_bind(server_named, "x-direct", "to-gen")
    ch.queue_bind("q-plain", "x-topic", "a.*.c", arguments={"app-binding": "k"})
    ch.queue_bind("q-plain", "x-headers", "",
                  arguments={"x-match": "all", "kind": "order", "level": 3})
    ch.queue_bind("q-args", "x-fanout")
    ch.queue_bind("q-dead", "dlx", "dead")
    ch.queue_bind("q-ae", "x-ae")
    ch.queue_bind("q-autodelete", "x-direct-autodelete", "ad")
    ch.exchange_bind("x-fanout-internal", "x-topic", "e2e.#", arguments={"app-e2e": 1})
    ch.exchange_bind("x-headers-internal", "x-headers", "",
                     arguments={"x-match": "any", "route": "internal"})
    ch.queue_bind("q-plain", "x-fanout-internal")
    ch.queue_bind("q-plain", "x-headers-internal", "",
                  arguments={"x-match": "all", "route": "internal"})
    ch.queue_bind("q-transient", "x-direct", "to-transient")     # gone with its queue
    ch.queue_bind("q-plain", "x-direct-transient", "gone")       # gone with its exchange

    # one persistent message per route, each proving a binding or a queue kept its messages
    ch.basic_publish("x-direct", "to-gen", b"gen-1", PERSISTENT)
    ch.basic_publish("x-topic", "a.b.c", b"plain-topic", PERSISTENT)
    ch.basic_publish("x-headers", "", b"plain-headers",
                     pika.BasicProperties(delivery_mode=2,
                                          headers={"kind": "order", "level": 3}))
    ch.basic_publish("x-fanout", "", b"args-1",
                     pika.BasicProperties(delivery_mode=2, priority=4))
    ch.basic_publish("x-direct-autodelete", "ad", b"ad-1", PERSISTENT)
    ch.basic_publish("x-args", "unrouted", b"ae-1", PERSISTENT)
    ch.basic_publish("x-direct", "to-transient", b"lost-with-its-queue", PERSISTENT)
    conn.close()
    return {"server_named": server_named}


def check_every_object(b: BrokerProcess, names: dict, before: dict) -> None:
    status, after = api(b, "GET", "definitions")
    assert status == 200
    assert stored(after) == stored(before)

    status, vhost = api(b, "GET", f"vhosts/{VH}")
    assert (status, vhost["description"], vhost["tags"]) == (200, "kept", ["t1", "t2"])
    assert api(b, "GET", "users/restorer")[1]["tags"] == ["monitoring", "policymaker"]
    assert api(b, "GET", f"permissions/{VH}/plain")[1]["read"] == "^q-plain$"
    queues = {q["name"]: q for q in api(b, "GET", f"queues/{VH}")[1]}
    assert set(queues) == {names["server_named"], "q-plain", "q-autodelete", "q-args",
                           "q-dead", "q-ae"}
    assert all(q["state"] == "running" and q["durable"] for q in queues.values())
    assert queues["q-args"]["arguments"] == EVERY_ARGUMENT
    exchanges = {e["name"]: e for e in api(b, "GET", f"exchanges/{VH}")[1]}
    for t in EXCHANGE_TYPES:
        assert exchanges[f"x-{t}"]["type"] == t
        assert f"x-{t}-transient" not in exchanges
        assert exchanges[f"x-{t}-internal"]["internal"] is True
        assert exchanges[f"x-{t}-autodelete"]["auto_delete"] is True

    conn = connect(b, VH, "restorer", "pw")
    ch = conn.channel()
    ch.confirm_delivery()
    # every declaration is still equivalent to what the client declared
    for t in EXCHANGE_TYPES:
        ch.exchange_declare(f"x-{t}", t, durable=True)
        ch.exchange_declare(f"x-{t}-internal", t, durable=True, internal=True)
        ch.exchange_declare(f"x-{t}-autodelete", t, durable=True, auto_delete=True)
    ch.exchange_declare("x-args", "direct", durable=True,
                        arguments={"alternate-exchange": "x-ae", "app-arg": 3})
    # a server-named queue can only be declared passively by name (RabbitMQ refuses a
    # non-passive declare of any 'amq.' name with 403, existing or not)
    ch.queue_declare(names["server_named"], passive=True)
    ch.queue_declare("q-args", durable=True, arguments=EVERY_ARGUMENT)
    ch.queue_declare("q-autodelete", durable=True, auto_delete=True)
    # the messages stored before are all there, in order, nothing else
    assert drain(ch, names["server_named"]) == ["gen-1"]
    assert drain(ch, "q-plain") == ["plain-topic", "plain-headers"]
    assert drain(ch, "q-args") == ["args-1"]
    assert drain(ch, "q-autodelete") == ["ad-1"]
    assert drain(ch, "q-ae") == ["ae-1"]
    # every binding routes as before: queue bindings, e2e bindings, alternate exchange
    ch.basic_publish("x-direct", "to-gen", b"gen-2", PERSISTENT)
    ch.basic_publish("x-topic", "e2e.x", b"via-e2e", PERSISTENT)
    ch.basic_publish("x-headers", "", b"via-headers-e2e",
                     pika.BasicProperties(delivery_mode=2, headers={"route": "internal"}))
    ch.basic_publish("x-args", "nowhere", b"ae-2", PERSISTENT)
    assert drain(ch, names["server_named"]) == ["gen-2"]
    assert drain(ch, "q-plain") == ["via-e2e", "via-headers-e2e"]
    assert drain(ch, "q-ae") == ["ae-2"]
    # dead-lettering through the restored arguments: a rejected message goes to q-dead
    ch.basic_publish("x-fanout", "", b"to-reject", PERSISTENT)
    method, _, _ = ch.basic_get("q-args")
    ch.basic_reject(method.delivery_tag, requeue=False)
    assert wait_get(ch, "q-dead") == "to-reject"
    for name in ("q-transient", "q-exclusive"):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            conn.channel().queue_declare(name, passive=True)
        assert exc.value.reply_code == 404
    conn.close()
    # the permissions came back as they were
    plain = connect(b, VH, "plain", "pw2")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        plain.channel().queue_declare("q-new", durable=True)
    assert exc.value.reply_code == 403
    plain.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
@pytest.mark.parametrize("layout", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_every_object_comes_back(tmp_path, how, layout):
    b = BrokerProcess(tmp_path / "data", *layout, management=True).start()
    try:
        names = make_every_object(b)
        status, before = api(b, "GET", "definitions")
        assert status == 200
        down(b, how)
        b.start()
        check_every_object(b, names, before)
        down(b, how)        # and again: what the first restart saved is complete too
        b.start()
        assert stored(api(b, "GET", "definitions")[1]) == stored(before)
    finally:
        b.stop()
    assert "Traceback" not in "".join(b.output)


def test_import_restores_without_client_checks_and_skips_amq_names(tmp_path):
    """An HTTP import creates what is missing as stored and keeps what exists (no equivalence
    check); names beginning with ``amq.`` are skipped with a warning, as RabbitMQ's import
    does (``rabbit_definitions:add_queue_int``)."""
    b = BrokerProcess(tmp_path / "data", management=True).start()
    try:
        conn = connect(b)
        ch = conn.channel()
        ch.queue_declare("existing-q", durable=True)
        ch.exchange_declare("existing-x", "fanout", durable=True)
        conn.close()
        imported = {
            "queues": [
                {"name": "existing-q", "vhost": "/", "durable": True, "auto_delete": False,
                 "arguments": {"x-max-length": 5}},
                {"name": "new-q", "vhost": "/", "durable": True, "auto_delete": False,
                 "arguments": {"x-max-priority": 3}},
                {"name": "amq.gen-imported", "vhost": "/", "durable": True,
                 "auto_delete": False, "arguments": {}}],
            "exchanges": [
                {"name": "existing-x", "vhost": "/", "type": "topic", "durable": True,
                 "auto_delete": False, "internal": False, "arguments": {}},
                {"name": "amq.imported", "vhost": "/", "type": "topic", "durable": True,
                 "auto_delete": False, "internal": False, "arguments": {}}],
            "bindings": [{"source": "existing-x", "vhost": "/", "destination": "new-q",
                          "destination_type": "queue", "routing_key": "", "arguments": {}}]}
        assert api(b, "POST", "definitions", imported)[0] == 204
        queues = {q["name"]: q for q in api(b, "GET", "queues/%2F")[1]}
        assert queues["existing-q"]["arguments"] == {}
        assert queues["new-q"]["arguments"] == {"x-max-priority": 3}
        assert "amq.gen-imported" not in queues
        exchanges = {e["name"]: e for e in api(b, "GET", "exchanges/%2F")[1]}
        assert exchanges["existing-x"]["type"] == "fanout"
        assert "amq.imported" not in exchanges
        conn = connect(b)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("existing-x", "", b"routed", PERSISTENT)
        assert drain(ch, "new-q") == ["routed"]
        conn.close()
    finally:
        b.stop()
    assert "Skipping import of queue 'amq.gen-imported'" in "".join(b.output)
    assert "Traceback" not in "".join(b.output)


# ------------------------------------------------------- a queue that cannot be opened stays
QUEUES = 145


def fill(b: BrokerProcess) -> None:
    conn = connect(b)
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(QUEUES):
        ch.queue_declare(f"q{i:03d}", durable=True)
        ch.basic_publish("", f"q{i:03d}", f"m{i:03d}".encode(), PERSISTENT)
    conn.close()


def queue_dirs(data) -> set[str]:
    return set(os.listdir(data / "queues"))


def dir_of(data, body: bytes) -> str:
    """The directory of the queue whose first segment holds ``body``."""
    return next(d for d in queue_dirs(data)
                if body in (data / "queues" / d / "00000000000000000000.log").read_bytes())


@pytest.mark.parametrize("layout", [[], ["--workers", "1"]], ids=["one-process", "workers"])
def test_queues_that_cannot_open_stay_defined_and_keep_their_messages(tmp_path, layout):
    """Under an open-files limit far below what every queue's files take (a real
    RLIMIT_NOFILE of 256 on the broker and its workers; 145 queues use 4 files each) the node
    starts with every queue open: its file cache keeps at most half the limit open (it used to
    leave queues down, or not start at all). A queue whose files cannot be opened (here its
    ack log was replaced by a directory: EISDIR) starts down, stays defined and keeps its
    files; either way the next start has every queue and every message."""
    data = tmp_path / "data"
    b = BrokerProcess(data, *layout, management=True).start()
    try:
        fill(b)
    finally:
        assert b.stop() == 0
    assert len(queue_dirs(data)) == QUEUES
    broken = {name: data / "queues" / dir_of(data, f"m{name[1:]}".encode()) / "acks.log"
              for name in ("q007", "q100")}
    for acks in broken.values():
        if acks.exists():       # made by the first ack (none yet: a first write makes it)
            acks.rename(acks.with_suffix(".aside"))
        acks.mkdir()

    limited = BrokerProcess(data, *layout, management=True,
                            command=["prlimit", "--nofile=256:256",
                                     *child.command("amqpbroker")])
    limited.start()
    try:
        queues = {q["name"]: q for q in api(limited, "GET", "queues/%2F")[1]}
        assert len(queues) == QUEUES
        down = sorted(n for n, q in queues.items() if q["state"] == "down")
        assert down == sorted(broken)
        assert all(q["state"] == "running" and q["messages"] == 1
                   for n, q in queues.items() if n not in down)
        assert len(api(limited, "GET", "definitions")[1]["queues"]) == QUEUES
        conn = connect(limited)
        for passive in (False, True):
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
                conn.channel().queue_declare(down[0], durable=True, passive=passive)
            assert exc.value.reply_code == 404
            assert exc.value.reply_text == (
                f"NOT_FOUND - queue '{down[0]}' in vhost '/' has crashed and failed to "
                f"restart: Is a directory")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            conn.channel().basic_get(down[0])
        assert exc.value.reply_code == 404
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            conn.channel().basic_consume(down[0], lambda *a: None)
        assert exc.value.reply_code == 404
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.NackError):    # not stored: never confirmed
            ch.basic_publish("", down[0], b"refused", PERSISTENT)
        # deleting a down queue deletes its files, as RabbitMQ deletes a crashed queue
        deleted = down[-1]
        assert ch.queue_delete(deleted).method.message_count == 0
        conn.close()
        log = "".join(limited.output)
        assert f"queue '{down[0]}' in vhost '/' is down" in log
        assert "Too many open files" not in log
    finally:
        limited.stop()
    assert "Traceback" not in "".join(limited.output)
    kept = broken[down[0]]
    kept.rmdir()
    if kept.with_suffix(".aside").exists():
        kept.with_suffix(".aside").rename(kept)

    b.start()
    try:
        queues = {q["name"]: q for q in api(b, "GET", "queues/%2F")[1]}
        expected = {f"q{i:03d}" for i in range(QUEUES)} - {deleted}
        assert set(queues) == expected
        assert all(q["state"] == "running" for q in queues.values())
        conn = connect(b)
        ch = conn.channel()
        for name in sorted(expected):
            assert drain(ch, name) == [f"m{name[1:]}"]
        conn.close()
    finally:
        b.stop()
    assert len(queue_dirs(data)) == len(expected)
    assert "Traceback" not in "".join(b.output)


def test_a_queue_its_restarted_worker_cannot_open_stays_defined_until_it_can(tmp_path):
    """A queue that was open, whose worker restarts and then cannot open it (here its ack
    log was replaced by a directory: EISDIR), is down, and the definitions keep it; when a
    later restart can open it, it is back with its messages."""
    data = tmp_path / "data"
    b = BrokerProcess(data, "--workers", "1", management=True).start()
    try:
        conn = connect(b)
        ch = conn.channel()
        ch.confirm_delivery()
        for name in ("victim", "bystander"):
            ch.queue_declare(name, durable=True)
            ch.basic_publish("", name, f"{name}-1".encode(), PERSISTENT)
        conn.close()
        victim = next(d for d in queue_dirs(data)
                      if b"victim-1" in (data / "queues" / d / "00000000000000000000.log")
                      .read_bytes())
        acks = data / "queues" / victim / "acks.log"

        def restart_worker(change, restarts: int) -> dict:
            """Stop the worker, change its files, kill it; the states once it is back."""
            pid = api(b, "GET", "nodes")[1][0]["workers"][0]["pid"]
            os.kill(pid, signal.SIGSTOP)
            change()
            os.kill(pid, signal.SIGKILL)

            def reopened():
                worker = api(b, "GET", "nodes")[1][0]["workers"][0]
                if worker["restarts"] != restarts or not worker["running"]:
                    return None
                queues = api(b, "GET", "queues/%2F")[1]
                if all(q["state"] == "down" or q["messages"] == 1 for q in queues):
                    return {q["name"]: q["state"] for q in queues}
                return None
            return wait_until(reopened, 60, f"worker restart {restarts} and its queues")

        def break_acks():
            if acks.exists():   # made by the first ack (none yet: a first write makes it)
                acks.rename(acks.with_suffix(".aside"))
            acks.mkdir()

        def mend_acks():
            acks.rmdir()
            if acks.with_suffix(".aside").exists():
                acks.with_suffix(".aside").rename(acks)

        assert restart_worker(break_acks, 1) == {"victim": "down", "bystander": "running"}
        stored = read_definitions(str(data / "definitions.json"))["queues"]
        assert {q["name"] for q in stored} == {"victim", "bystander"}
        conn = connect(b)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            conn.channel().queue_declare("victim", durable=True)
        assert exc.value.reply_text == ("NOT_FOUND - queue 'victim' in vhost '/' has crashed "
                                        "and failed to restart: Is a directory")
        conn.close()

        assert restart_worker(mend_acks, 2) == {"victim": "running", "bystander": "running"}
        conn = connect(b)
        ch = conn.channel()
        assert drain(ch, "victim") == ["victim-1"]
        assert drain(ch, "bystander") == ["bystander-1"]
        conn.close()
    finally:
        b.stop()
    assert "queue 'victim' in vhost '/' is open again" in "".join(b.output)


def test_a_queue_stored_with_an_argument_now_refused_is_down_not_fatal(tmp_path):
    """Arguments are checked when a client declares; what was stored is restored. A stored
    argument that today's checks refuse (as after a version tightened them; here the file is
    edited) leaves that queue down with its files, and the node up."""
    data = tmp_path / "data"
    b = BrokerProcess(data, management=True).start()
    try:
        conn = connect(b)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("odd", durable=True, arguments={"x-overflow": "drop-head"})
        ch.queue_declare("fine", durable=True)
        for name in ("odd", "fine"):
            ch.basic_publish("", name, name.encode(), PERSISTENT)
        conn.close()
    finally:
        b.stop()
    path = data / "definitions.json"
    good = path.read_text()
    path.write_text(good.replace('"x-overflow":"drop-head"', '"x-overflow":"sideways"'))
    assert path.read_text() != good

    b.start()
    try:
        queues = {q["name"]: q for q in api(b, "GET", "queues/%2F")[1]}
        assert (queues["odd"]["state"], queues["fine"]["state"]) == ("down", "running")
        assert queues["odd"]["arguments"] == {"x-overflow": "sideways"}
        conn = connect(b)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            conn.channel().queue_declare("odd", passive=True)
        assert exc.value.reply_text.startswith(
            "NOT_FOUND - queue 'odd' in vhost '/' has crashed and failed to restart: invalid "
            "arg 'x-overflow'")
        assert drain(conn.channel(), "fine") == ["fine"]
        conn.close()
    finally:
        b.stop()
    assert "sideways" in path.read_text()           # still stored as it was

    path.write_text(good)
    b.start()
    try:
        conn = connect(b)
        assert drain(conn.channel(), "odd") == ["odd"]
        conn.close()
    finally:
        b.stop()
    assert "Traceback" not in "".join(b.output)


def test_start_removes_only_the_files_a_delete_recorded(tmp_path):
    """A directory no defined queue owns is kept at start (it may hold the only copy of its
    messages). Removed are only a deleted queue's files the definitions name (a tombstone,
    written when a vhost's queues are forgotten before their worker removed the files: here
    that worker is stopped by SIGSTOP, then the node is killed) and ``*.deleted`` ones."""
    data = tmp_path / "data"
    b = BrokerProcess(data, "--workers", "1", management=True).start()
    try:
        assert api(b, "PUT", "vhosts/doomed", {})[0] == 201
        conn = connect(b, "doomed")
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("dq", durable=True)
        ch.basic_publish("", "dq", b"goes with its vhost", PERSISTENT)
        conn.close()
        conn = connect(b)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("kept", durable=True)
        ch.basic_publish("", "kept", b"stays", PERSISTENT)
        conn.close()
        before = queue_dirs(data)
        assert len(before) == 2
        os.kill(b.worker_pids[0], signal.SIGSTOP)    # it cannot remove dq's files now
        assert api(b, "DELETE", "vhosts/doomed")[0] == 204
        definitions = read_definitions(str(data / "definitions.json"))
        assert "doomed" not in {v["name"] for v in definitions["vhosts"]}
        tombstones = definitions["amqpbroker_deleted_queues"]
        assert len(tombstones) == 1 and tombstones[0] in before
    finally:
        b.kill()
    assert queue_dirs(data) == before             # the worker never got to dq's files
    (data / "queues" / "unknown").mkdir()
    (data / "queues" / "unknown" / "00000000000000000000.log").write_bytes(b"precious")
    (data / "queues" / "half-removed.deleted").mkdir()

    b.start()
    try:
        assert queue_dirs(data) == (before - set(tombstones)) | {"unknown"}
        assert (data / "queues" / "unknown" / "00000000000000000000.log").read_bytes() == \
            b"precious"
        assert "amqpbroker_deleted_queues" not in json.loads(
            (data / "definitions.json").read_text())
        conn = connect(b)
        assert drain(conn.channel(), "kept") == ["stays"]
        conn.close()
    finally:
        b.stop()
    assert "belongs to no defined queue: kept" in "".join(b.output)


# ------------------------------------------------------------------- queue directory names
def test_names_with_nul_get_their_own_directories(tmp_path):
    """("v", "x\\0y") and ("v\\0x", "y") were one directory, sha1("v\\0x\\0y"): each queue
    read the other's log. The queues are made by a definitions import (a queue.declare-ok
    naming "x\\0y" is another matter: issue 9, names)."""
    b = BrokerProcess(tmp_path / "data", management=True).start()
    pairs = [("v", "x\x00y", "first"), ("v\x00x", "y", "second")]
    try:
        imported = {"vhosts": [{"name": vhost} for vhost, _, _ in pairs],
                    "permissions": [{"user": "guest", "vhost": vhost, "configure": ".*",
                                     "write": ".*", "read": ".*"} for vhost, _, _ in pairs],
                    "queues": [{"name": name, "vhost": vhost, "durable": True,
                                "auto_delete": False, "arguments": {}}
                               for vhost, name, _ in pairs]}
        assert api(b, "POST", "definitions", imported)[0] == 204
        for vhost, name, body in pairs:
            conn = connect(b, vhost)
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish("", name, body.encode(), PERSISTENT, mandatory=True)
            conn.close()
        assert len(queue_dirs(tmp_path / "data")) == 2
        for restart in (False, True):
            if restart:
                b.kill()
                b.start()
            for vhost, name, body in pairs:
                path = "queues/" + urllib.parse.quote(vhost, safe="") + "/" + \
                    urllib.parse.quote(name, safe="")
                status, queue = api(b, "GET", path)
                assert (status, queue["messages"]) == (200, 1), (vhost, name, restart)
        for vhost, name, body in pairs:
            conn = connect(b, vhost)
            assert drain(conn.channel(), name) == [body]
            conn.close()
    finally:
        b.stop()


def test_old_directory_names_are_renamed_at_start(tmp_path):
    """A data directory written with the old naming (sha1 of vhost NUL name) is migrated: the
    queue keeps its messages, under the new name."""
    data = tmp_path / "data"
    b = BrokerProcess(data).start()
    try:
        conn = connect(b)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("legacy", durable=True)
        for i in range(3):
            ch.basic_publish("", "legacy", f"old-{i}".encode(), PERSISTENT)
        conn.close()
    finally:
        b.stop()
    (current,) = queue_dirs(data)
    old = hashlib.sha1(b"/\x00legacy").hexdigest()
    if current != old:
        os.rename(data / "queues" / current, data / "queues" / old)

    b.start()
    try:
        (migrated,) = queue_dirs(data)
        assert migrated != old
        conn = connect(b)
        assert drain(conn.channel(), "legacy") == ["old-0", "old-1", "old-2"]
        conn.close()
    finally:
        b.stop()
    assert queue_dirs(data) == {migrated}
