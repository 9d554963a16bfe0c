"""Fuzz the management API's request bodies against a running broker.

Every route that takes a body (``PUT /api/users/{name}``, ``/api/vhosts/{vhost}``,
``/api/permissions/{vhost}/{user}``, ``/api/topic-permissions/{vhost}/{user}``,
``/api/cluster-name``, ``/api/global-parameters/{name}``,
``/api/parameters/vhost-limits/{vhost}/limits``, ``/api/parameters/shovel/{vhost}/{name}``,
``POST /api/users/bulk-delete``,
``POST /api/definitions``) is fed JSON values of every
type — at the top and in each field its schema names, well-formed and not — and bytes that are
not JSON at all. Invariants:

* every answer is 2xx or 4xx, never 5xx, and a 4xx has RabbitMQ's shape
  ``{"error": ..., "reason": ...}``;
* another client keeps being served: an AMQP connection publishes and gets a message back
  between requests;
* nothing is persisted that does not load again, or cannot be used: at the end the broker
  restarts on its data directory, comes up, exports the very definitions it exported before,
  and every stored vhost, queue and exchange answers a client (a login, a passive declare, a
  publish with headers).

The fuzzing runs as its own users in vhosts of their own (``fuzzadmin``, ``fuzzside``,
``side``), which no generated request may touch: a body may make any other user an
administrator or take away any permission, but not lock the test out.
"""
from __future__ import annotations

import json

import pika
import pytest
from hypothesis import assume, given
from hypothesis import strategies as hs

from amqpbroker.testing import BrokerProcess
from amqpbroker.testing.fuzzing import fuzz, time_limit
from amqpbroker.testing.mgmt_client import ManagementClient, q

ADMIN, SIDE = ("fuzzadmin", "secret-a"), ("fuzzside", "secret-s")
KEPT_USERS = {"guest", ADMIN[0], SIDE[0]}
KEPT_VHOSTS = {"side"}

# ----------------------------------------------------------------------------- JSON values

SCALARS = hs.one_of(hs.none(), hs.booleans(), hs.integers(), hs.integers(-2 ** 70, 2 ** 70),
                    hs.floats(allow_nan=False, allow_infinity=False), hs.text(max_size=12),
                    hs.sampled_from(["", ".*", "^$", "(", "administrator", "management",
                                     "administrator,monitoring", "/", "amq.direct", "direct",
                                     "headers", "all", "x-match", "aGVsbG8=", "not base64!"]))
JSON = hs.recursive(SCALARS, lambda inner: hs.one_of(
    hs.lists(inner, max_size=4), hs.dictionaries(hs.text(max_size=8), inner, max_size=4)),
    max_leaves=10)

USER_FIELDS = ["password", "password_hash", "hashing_algorithm", "tags", "administrator"]
VHOST_FIELDS = ["description", "tags", "tracing"]
PERMISSION_FIELDS = ["configure", "write", "read"]
TOPIC_PERMISSION_FIELDS = ["exchange", "write", "read"]
TABLE_KEYS = ["x-match", "a", "x-message-ttl", "x-expires", "x-max-length", "x-overflow",
              "x-dead-letter-exchange", "alternate-exchange", "x-max-priority"]


@hs.composite
def shaped(draw, fields: list[str], required: dict | None = None):
    """An object with (some of) the schema's fields, each a plausible value or any JSON."""
    out = {}
    for f in fields:
        if draw(hs.booleans()):
            out[f] = draw(JSON)
    for f, strategy in (required or {}).items():
        if draw(hs.integers(0, 9)):
            out[f] = draw(strategy)
    return out


NAMES = hs.one_of(hs.sampled_from(["v1", "v2", "/", "u1", "u2", "", "amq.x", "q", "ex",
                                   "ünï"]), hs.text(max_size=8))
ARG_TABLES = hs.one_of(JSON, hs.dictionaries(hs.sampled_from(TABLE_KEYS), JSON, max_size=3))


def _entry(fields: dict):
    return shaped(list(fields), fields)


# shovel definitions whose URIs never connect (a shovel that ran would declare queues while
# the test compares exports): refused ones, or a closed port
SHOVEL_URIS = hs.one_of(JSON, hs.sampled_from(["amqp://127.0.0.1:1", "amqps://127.0.0.1:1/%2F",
                                               "http://x", "amqp://h:99999", "amqp://:5/",
                                               "amqp://127.0.0.1:1/a%zz", "amqp:///no/pe"]))
SHOVEL_KEYS = ["src-queue", "src-exchange", "src-exchange-key", "src-queue-args",
               "src-consumer-args", "src-prefetch-count", "src-delete-after", "dest-queue",
               "dest-exchange", "dest-exchange-key", "dest-queue-args",
               "dest-publish-properties", "dest-add-forward-headers", "ack-mode",
               "reconnect-delay", "src-protocol", "x-unknown"]
SHOVELS = shaped(SHOVEL_KEYS, {"src-uri": SHOVEL_URIS, "dest-uri": SHOVEL_URIS,
                               "src-queue": NAMES})


DEFINITIONS = hs.fixed_dictionaries({}, optional={
    "users": hs.one_of(JSON, hs.lists(_entry({"name": NAMES, "password": JSON,
                                              "tags": JSON}), max_size=3)),
    "vhosts": hs.one_of(JSON, hs.lists(_entry({"name": NAMES, "description": JSON,
                                               "metadata": JSON}), max_size=3)),
    "permissions": hs.one_of(JSON, hs.lists(_entry({
        "user": NAMES, "vhost": NAMES, "configure": JSON, "write": JSON, "read": JSON}),
        max_size=3)),
    "topic_permissions": hs.one_of(JSON, hs.lists(_entry({
        "user": NAMES, "vhost": NAMES, "exchange": JSON, "write": JSON, "read": JSON}),
        max_size=3)),
    "global_parameters": hs.one_of(JSON, hs.lists(_entry({"name": NAMES, "value": JSON}),
                                                  max_size=3)),
    "parameters": hs.one_of(JSON, hs.lists(_entry({
        "vhost": NAMES, "name": NAMES, "component": hs.sampled_from(["shovel", "vhost-limits",
                                                                     "federation-upstream"]),
        "value": hs.one_of(SHOVELS, JSON)}), max_size=2)),
    "exchanges": hs.one_of(JSON, hs.lists(_entry({
        "name": NAMES, "vhost": NAMES, "type": hs.sampled_from(["direct", "topic", "headers",
                                                                "x-nope", "x-delayed-message",
                                                                5]),
        "durable": JSON, "arguments": ARG_TABLES}), max_size=3)),
    "queues": hs.one_of(JSON, hs.lists(_entry({
        "name": NAMES, "vhost": NAMES, "durable": JSON, "auto_delete": JSON,
        "arguments": ARG_TABLES}), max_size=3)),
    "bindings": hs.one_of(JSON, hs.lists(_entry({
        "source": NAMES, "vhost": NAMES, "destination": NAMES,
        "destination_type": hs.sampled_from(["queue", "exchange", "nope"]),
        "routing_key": JSON, "arguments": ARG_TABLES}), max_size=3)),
})


def encoded(value) -> hs.SearchStrategy[bytes]:
    return hs.just(json.dumps(value).encode())


RAW = hs.one_of(
    hs.binary(max_size=40),
    hs.sampled_from([b"{", b"[]", b"null", b"NaN", b'{"password": NaN}', b'{"tags": Infinity}',
                     b'{"password": "\\ud800", "tags": ""}', b'{"description": "\\udc80"}',
                     b'{"configure": "\\ud800", "write": ".*", "read": ".*"}',
                     b'{"vhosts": [{"name": "\\ud800x"}]}', b"\xff\xfe", b'"just a string"',
                     b"[" * 5000, b'{"a": ' * 3000 + b"1" + b"}" * 3000]))


@hs.composite
def requests(draw):
    """(method, path, raw body) for one of the routes that take a body."""
    route = draw(hs.sampled_from(["user", "vhost", "permission", "topic-permission",
                                  "cluster-name", "global-parameter", "parameter",
                                  "shovel", "bulk-delete", "definitions"]))
    if route == "user":
        name = draw(NAMES.filter(lambda n: n not in KEPT_USERS and n))
        path, method, body = f"/api/users/{q(name)}", "PUT", shaped(USER_FIELDS)
    elif route == "vhost":
        name = draw(NAMES.filter(lambda n: n not in KEPT_VHOSTS and n))
        path, method, body = f"/api/vhosts/{q(name)}", "PUT", shaped(VHOST_FIELDS)
    elif route == "permission":
        vhost = draw(NAMES.filter(lambda n: n not in KEPT_VHOSTS and n))
        user = draw(NAMES.filter(lambda n: n not in KEPT_USERS and n))
        path, method = f"/api/permissions/{q(vhost)}/{q(user)}", "PUT"
        body = shaped(PERMISSION_FIELDS)
    elif route == "topic-permission":
        vhost = draw(NAMES.filter(lambda n: n not in KEPT_VHOSTS and n))
        user = draw(NAMES.filter(lambda n: n not in KEPT_USERS and n))
        path, method = f"/api/topic-permissions/{q(vhost)}/{q(user)}", "PUT"
        body = shaped(TOPIC_PERMISSION_FIELDS)
    elif route == "cluster-name":
        path, method, body = "/api/cluster-name", "PUT", shaped(["name"])
    elif route == "global-parameter":
        name = draw(NAMES.filter(bool))
        path, method = f"/api/global-parameters/{q(name)}", "PUT"
        body = shaped(["value", "name"])
    elif route == "parameter":
        vhost = draw(NAMES.filter(lambda n: n not in KEPT_VHOSTS and n))
        path, method = f"/api/parameters/vhost-limits/{q(vhost)}/limits", "PUT"
        body = shaped(["value", "component", "vhost", "name"])
    elif route == "shovel":
        vhost = draw(NAMES.filter(lambda n: n not in KEPT_VHOSTS and n))
        name = draw(NAMES.filter(bool))
        path, method = f"/api/parameters/shovel/{q(vhost)}/{q(name)}", "PUT"
        body = shaped(["value", "component", "vhost", "name"], {"value": SHOVELS})
    elif route == "bulk-delete":
        path, method = "/api/users/bulk-delete", "POST"
        body = hs.fixed_dictionaries({"users": hs.lists(
            NAMES.filter(lambda n: n not in KEPT_USERS), max_size=3)})
    else:
        path, method, body = "/api/definitions", "POST", DEFINITIONS
    raw = draw(hs.one_of(body.flatmap(encoded), JSON.flatmap(encoded), RAW))
    return method, path, raw


def touches_kept(raw: bytes) -> bool:
    """A definitions import that would redefine the test's own users or vhost."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    if not isinstance(doc, dict):
        return False
    if isinstance(doc.get("users"), list) and any(u in KEPT_USERS for u in doc["users"]
                                                  if isinstance(u, str)):
        return True                     # a bulk delete of the test's own users
    for kind, key, kept in (("users", "name", KEPT_USERS), ("vhosts", "name", KEPT_VHOSTS),
                            ("permissions", "user", KEPT_USERS),
                            ("permissions", "vhost", KEPT_VHOSTS),
                            ("topic_permissions", "user", KEPT_USERS)):
        entries = doc.get(kind)
        if isinstance(entries, list) and any(
                isinstance(e, dict) and isinstance(e.get(key), str) and e[key] in kept
                for e in entries):
            return True
    return False


# ----------------------------------------------------------------------------- the target

@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = BrokerProcess(tmp_path_factory.mktemp("mgmt-fuzz"), management=True).start()
    try:
        api = ManagementClient(f"http://127.0.0.1:{b.management_port}")
        for user, password in (ADMIN, SIDE):
            assert api.request("PUT", f"/api/users/{user}", "guest", "guest", body={
                "password": password, "tags": "administrator"})[0] == 201
        assert api.request("PUT", "/api/vhosts/side", "guest", "guest", body={})[0] == 201
        assert api.request("PUT", f"/api/permissions/side/{SIDE[0]}", "guest", "guest", body={
            "configure": ".*", "write": ".*", "read": ".*"})[0] == 201
        yield b
    finally:
        b.stop()
    log = "".join(b.output)
    assert "Traceback" not in log and "Error handling request" not in log, log[-5000:]


def side_roundtrip(b: BrokerProcess, n: int) -> None:
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        b.host, b.port, "side", pika.PlainCredentials(*SIDE), heartbeat=0))
    try:
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", queue, b"%d" % n)
        for _ in range(100):
            method, _, body = ch.basic_get(queue, auto_ack=True)
            if method is not None:
                assert body == b"%d" % n
                return
            conn.sleep(0.02)
        raise AssertionError("the side client's message never came back")
    finally:
        conn.close()


def exported(api: ManagementClient):
    status, defs, _ = api.request("GET", "/api/definitions", *ADMIN)
    assert status == 200, defs
    for kind in ("users", "vhosts", "permissions", "exchanges", "queues", "bindings",
                 "parameters"):
        defs[kind] = sorted(defs[kind], key=lambda e: json.dumps(e, sort_keys=True))
    return defs


def usable(b: BrokerProcess, api: ManagementClient, defs: dict) -> None:
    """Every stored vhost takes a login, every stored queue a passive declare, every stored
    exchange a publish with headers (a stored headers binding is matched against them):
    answered, never with 541."""
    for vh in defs["vhosts"]:
        name = vh["name"]
        status = api.request("PUT", f"/api/permissions/{q(name)}/{ADMIN[0]}", *ADMIN, body={
            "configure": ".*", "write": ".*", "read": ".*"})[0]
        assert status in (201, 204), (name, status)
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            b.host, b.port, name, pika.PlainCredentials(*ADMIN), heartbeat=0))
        try:
            ch = conn.channel()
            for queue in (x for x in defs["queues"] if x["vhost"] == name):
                ch.queue_declare(queue["name"], passive=True)
            for ex in (x for x in defs["exchanges"] if x["vhost"] == name):
                ch.basic_publish(ex["name"], "k", b"x", pika.BasicProperties(
                    headers={"a": 1, "x-match": "any"}))
            ch.queue_declare("", exclusive=True)      # a round trip after the publishes
        finally:
            if conn.is_open:
                conn.close()


@pytest.mark.timeout(time_limit(120))
def test_bodies_of_any_shape_get_2xx_or_4xx_and_what_is_stored_loads_again(broker):
    api = ManagementClient(f"http://127.0.0.1:{broker.management_port}")
    sent = [0]

    @fuzz(150)
    @given(requests())
    def one_request(request):
        method, path, raw = request
        assume(not touches_kept(raw))
        status, value, _ = api.request(method, path, *ADMIN, raw=raw)
        assert status < 500, (status, value)
        assert status in (200, 201, 204) or 400 <= status < 500, status
        if status >= 400:
            assert isinstance(value, dict) and value.keys() == {"error", "reason"}, value
        sent[0] += 1
        if sent[0] % 25 == 0:
            side_roundtrip(broker, sent[0])

    one_request()
    side_roundtrip(broker, -1)
    before = exported(api)
    broker.restart()
    api = ManagementClient(f"http://127.0.0.1:{broker.management_port}")
    assert exported(api) == before
    usable(broker, api, before)
    side_roundtrip(broker, -2)
