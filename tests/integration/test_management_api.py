"""Management API input, where we go beyond RabbitMQ 3.10 (the shared behaviour is tested in
interop/test_management_validation.py, against RabbitMQ too):

* bodies RabbitMQ answers with 500 (``"tags": 5``, a number as a permission regex or as a
  password) or stores unusable (a vhost description of 5) are 400 here, and nothing of
  them is stored, in memory or in ``definitions.json``;
* a definitions import, and a users bulk delete, either applies whole or changes nothing
  (RabbitMQ stops at the first bad entry and keeps what it applied before it);
* a bad permission stored by an older version refuses access instead of failing every
  operation of its user with 541.
"""
from __future__ import annotations

import json
import os

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ProbableAuthenticationError

from amqpbroker.frontend.auth import check_password
from amqpbroker.testing import BrokerProcess
from amqpbroker.testing.mgmt_client import ManagementClient


@pytest.fixture
def broker(tmp_path):
    with BrokerProcess(tmp_path, management=True) as b:
        yield b


def client(b: BrokerProcess) -> ManagementClient:
    return ManagementClient(f"http://127.0.0.1:{b.management_port}")


def as_guest(b: BrokerProcess, method: str, path: str, body=None, raw=None):
    status, value, _ = client(b).request(method, path, "guest", "guest", body=body, raw=raw)
    return status, value


def stored(b: BrokerProcess) -> bytes:
    """The stored definitions: the snapshot and the journal of changes since."""
    out = b""
    for name in ("definitions.json", "definitions.journal"):
        with open(os.path.join(b.data_dir, name), "rb") as f:
            out += f.read()
    return out


def amqp(b: BrokerProcess, user: str, password: str, vhost: str = "/"):
    return pika.BlockingConnection(pika.ConnectionParameters(
        b.host, b.port, vhost, pika.PlainCredentials(user, password)))


MISTYPED = [
    ("PUT", "/api/users/u", {"password": "pw", "tags": 5}, "tags: expected a comma-separated "
     "string or a list of strings, got 5"),
    ("PUT", "/api/users/u", {"password": "pw", "tags": ["administrator", 5]},
     "tags: expected a comma-separated string or a list of strings, got [\"administrator\", 5]"),
    ("PUT", "/api/users/u", {"password": 5, "tags": "administrator"},
     "password: expected a string, got 5"),
    ("PUT", "/api/users/u", {"password_hash": "aGVsbG8=", "tags": "",
                             "hashing_algorithm": "rabbit_password_hashing_md5"},
     'hashing_algorithm: "rabbit_password_hashing_md5" is not one of '
     'rabbit_password_hashing_sha256'),
    ("PUT", "/api/vhosts/v", {"tags": 5},
     "tags: expected a comma-separated string or a list of strings, got 5"),
    ("PUT", "/api/vhosts/v", {"description": 5}, "description: expected a string, got 5"),
    ("PUT", "/api/permissions/%2F/guest", {"configure": 5, "write": ".*", "read": ".*"},
     "configure: expected a string, got 5"),
    ("PUT", "/api/permissions/%2F/guest", {"configure": ".*", "write": [".*"], "read": ".*"},
     'write: expected a string, got [".*"]'),
    ("PUT", "/api/topic-permissions/%2F/guest", {"exchange": 5, "write": ".*", "read": ".*"},
     "exchange: expected a string, got 5"),
    ("PUT", "/api/topic-permissions/%2F/guest", {"exchange": "x", "write": 5, "read": ".*"},
     "write: expected a string, got 5"),
    ("POST", "/api/users/bulk-delete", {"users": "guest"},
     'users: expected a list, got "guest"'),
    ("PUT", "/api/cluster-name", {"name": 5}, "name: expected a non-empty string, got 5"),
    ("PUT", "/api/global-parameters/cluster_name", {"value": 5},
     "value: expected a non-empty string, got 5"),
    ("POST", "/api/definitions", {"global_parameters": [{"name": "cluster_name", "value": 5}]},
     "global_parameters[0].value: expected a non-empty string, got 5"),
    ("POST", "/api/definitions", {"users": 5}, "users: expected a list, got 5"),
    ("POST", "/api/definitions", {"vhosts": [{"name": 5}]},
     "vhosts[0].name: expected a non-empty string, got 5"),
    ("POST", "/api/definitions", {"vhosts": [{"description": "no name"}]},
     "vhosts[0]: key_missing: name"),
    ("POST", "/api/definitions", {"queues": [{"name": "q", "vhost": "/", "durable": "yes"}]},
     'queues[0].durable: expected true or false, got "yes"'),
    ("POST", "/api/definitions", {"queues": [{"name": 5, "vhost": "/"}]},
     "queues[0].name: expected a string, got 5"),
    ("POST", "/api/definitions", {"exchanges": [{"name": "x", "vhost": "/", "type": "direct",
                                                 "arguments": [1]}]},
     "exchanges[0].arguments: expected an object, got [1]"),
]


@pytest.mark.parametrize("method, path, body, reason", MISTYPED,
                         ids=[f"{m} {p} {json.dumps(b)[:40]}" for m, p, b, _ in MISTYPED])
def test_mistyped_body_is_400_and_stores_nothing(broker, method, path, body, reason):
    before_file, before = stored(broker), as_guest(broker, "GET", "/api/definitions")
    assert as_guest(broker, method, path, body) == (400, {"error": "bad_request",
                                                          "reason": reason})
    assert as_guest(broker, "GET", "/api/definitions") == before
    assert stored(broker) == before_file


def test_an_import_with_a_binding_its_exchange_type_refuses_changes_nothing(broker):
    """A consistent-hash binding whose key is no weight, a headers binding with a bad
    x-match: 400 naming the entry, before anything is applied (our rule for every body;
    RabbitMQ 3.10.8 answers 204, imports the rest and skips the binding, measured)."""
    ex = {"name": "imp-chash", "vhost": "/", "type": "x-consistent-hash", "durable": True}
    for kind, routing_key, arguments, reason in (
            ("x-consistent-hash", "abc", {}, "bindings[0].routing_key: The binding key must be "
                                             'an integer: <<"abc">>'),
            ("x-consistent-hash", "0", {}, "bindings[0].routing_key: The binding key must be "
                                           "greater than 0"),
            ("headers", "", {"x-match": "bogus"}, 'bindings[0].arguments: Invalid x-match '
             'field value <<"bogus">>; expected all, any, all-with-x, or any-with-x')):
        doc = {"exchanges": [dict(ex, type=kind)],
               "bindings": [{"source": "imp-chash", "vhost": "/", "destination": "amq.direct",
                             "destination_type": "exchange", "routing_key": routing_key,
                             "arguments": arguments}]}
        assert as_guest(broker, "POST", "/api/definitions", doc) == (
            400, {"error": "bad_request", "reason": reason})
        assert as_guest(broker, "GET", "/api/exchanges/%2F/imp-chash")[0] == 404


def test_failed_import_changes_nothing(broker):
    doc = {"vhosts": [{"name": "imp"}],
           "users": [{"name": "imp-admin", "password": "pw", "tags": "administrator"}],
           "permissions": [{"user": "imp-admin", "vhost": "imp", "configure": ".*",
                            "write": ".*", "read": ".*"}],
           "exchanges": [{"name": "imp-x", "vhost": "imp", "type": "fanout"}],
           "queues": [{"name": "imp-q", "vhost": "imp"}],
           "bindings": [{"source": "imp-x", "vhost": "imp", "destination": "imp-q",
                         "destination_type": "queue"}]}
    bad = dict(doc, queues=doc["queues"] + [{"name": "lost", "durable": True}])  # no vhost
    before_file = stored(broker)
    assert as_guest(broker, "POST", "/api/definitions", bad) == (
        400, {"error": "bad_request", "reason": "queues[1]: key_missing: vhost"})

    def nothing_imported():
        for path in ("/api/vhosts/imp", "/api/users/imp-admin", "/api/permissions/imp/imp-admin",
                     "/api/exchanges/imp/imp-x", "/api/queues/imp/imp-q"):
            assert as_guest(broker, "GET", path)[0] == 404, path
        with pytest.raises(ProbableAuthenticationError):
            amqp(broker, "imp-admin", "pw", "imp")

    nothing_imported()
    assert stored(broker) == before_file
    broker.restart()
    nothing_imported()

    # the same document without its bad entry imports whole
    assert as_guest(broker, "POST", "/api/definitions", doc)[0] == 204
    conn = amqp(broker, "imp-admin", "pw", "imp")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("imp-x", "", b"through the imported binding")
    assert ch.basic_get("imp-q", auto_ack=True)[2] == b"through the imported binding"
    conn.close()


def test_permission_regex_that_is_a_number_is_never_stored(broker):
    assert as_guest(broker, "PUT", "/api/users/u", {"password": "pw", "tags": ""})[0] == 201
    perm = {"configure": "^ok", "write": ".*", "read": ".*"}
    assert as_guest(broker, "PUT", "/api/permissions/%2F/u", perm)[0] == 201
    assert as_guest(broker, "PUT", "/api/permissions/%2F/u", dict(perm, configure=5))[0] == 400

    def configure_is_still_limited_to_ok():
        conn = amqp(broker, "u", "pw")
        assert conn.channel().queue_declare("ok-q").method.queue == "ok-q"
        with pytest.raises(ChannelClosedByBroker) as exc:
            conn.channel().queue_declare("other")
        assert exc.value.reply_code == 403
        conn.close()

    configure_is_still_limited_to_ok()
    broker.restart()
    configure_is_still_limited_to_ok()


def test_bad_permission_stored_by_an_older_version_refuses_access(broker):
    # what the API stored before it checked bodies: {"configure": 5} for user u
    assert as_guest(broker, "PUT", "/api/users/u", {"password": "pw", "tags": ""})[0] == 201
    assert as_guest(broker, "PUT", "/api/permissions/%2F/u",
                    {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    broker.stop()
    path = os.path.join(broker.data_dir, "definitions.json")
    with open(path) as f:
        defs = json.load(f)
    for p in defs["permissions"]:
        if p["user"] == "u":
            p["configure"] = 5
    with open(path, "w") as f:
        json.dump(defs, f)
    broker.start()
    conn = amqp(broker, "u", "pw")
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as exc:
        ch.queue_declare("q")
    assert exc.value.reply_code == 403            # not 541 INTERNAL_ERROR
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.fanout", "", b"write is still allowed")
    conn.close()


def test_cross_site_put_is_not_preflighted(broker):
    """PUT and DELETE take any content type (as RabbitMQ's do) because a browser sends them
    cross-site only after a CORS preflight, which this API never grants."""
    status, _, headers = client(broker).request(
        "OPTIONS", "/api/users/evil", None,
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "PUT",
                 "Access-Control-Request-Headers": "content-type"})
    assert status >= 400
    assert "Access-Control-Allow-Origin" not in headers


def test_a_bulk_delete_naming_a_missing_user_deletes_none(broker):
    """RabbitMQ 3.10.8 deletes the users before the missing one, then answers 400."""
    assert as_guest(broker, "PUT", "/api/users/first", {"password": "pw", "tags": ""})[0] == 201
    assert as_guest(broker, "POST", "/api/users/bulk-delete",
                    {"users": ["first", "missing"]}) == (
        400, {"error": "bad_request", "reason": ["no_such_user", "missing"]})
    assert as_guest(broker, "GET", "/api/users/first")[0] == 200


def test_only_the_user_or_an_administrator_lists_or_closes_a_users_connections(broker):
    """``/api/connections/username/{user}`` (RabbitMQ 3.10.8 answers 500 to any
    non-administrator here): the user itself and monitors list them, the user itself and
    administrators close them; another management user gets 401."""
    api = client(broker)
    for name, tags in (("owner", "management"), ("other", "management"),
                       ("watcher", "monitoring")):
        assert as_guest(broker, "PUT", f"/api/users/{name}", {"password": "pw",
                                                              "tags": tags})[0] == 201
        assert as_guest(broker, "PUT", f"/api/permissions/%2F/{name}",
                        {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    conn = amqp(broker, "owner", "pw")
    path = "/api/connections/username/owner"
    refused = (401, {"error": "not_authorised", "reason": "User not authorised to access object"})
    assert api.request("GET", path, "other", "pw")[:2] == refused
    assert api.request("DELETE", path, "other", "pw")[:2] == refused
    assert api.request("DELETE", path, "watcher", "pw")[:2] == refused
    assert conn.is_open
    for who in ("owner", "watcher"):
        status, listed, _ = api.request("GET", path, who, "pw")
        assert status == 200 and [c["user"] for c in listed] == ["owner"]
    assert api.request("DELETE", path, "owner", "pw")[0] == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
        for _ in range(100):                    # closed within 10 s, or the raises fails
            conn.process_data_events(0.1)


def test_rabbitmq_3_13_endpoints_deprecated_features_hash_password_vhost_start(broker):
    """What RabbitMQ 3.13 added and 3.10 (the interop reference) has not, read from its
    source: deprecated features (``used``: what the definitions use now), a password hash as
    the definitions store one, a vhost's start (always running here), a topic permission
    deleted by its exchange, the detailed queue list."""
    listed = as_guest(broker, "GET", "/api/deprecated-features")[1]
    assert [f["name"] for f in listed] == [
        "classic_queue_mirroring", "global_qos", "management_metrics_collection",
        "ram_node_type", "transient_nonexcl_queues"]
    assert {f["deprecation_phase"] for f in listed} == {"permitted_by_default"}
    assert as_guest(broker, "GET", "/api/deprecated-features/used")[1] == []
    assert as_guest(broker, "PUT", "/api/policies/%2F/mirror", {
        "pattern": "^m$", "definition": {"ha-mode": "all"}})[0] == 201
    assert as_guest(broker, "PUT", "/api/queues/%2F/transient", {"durable": False})[0] == 201
    assert [f["name"] for f in as_guest(broker, "GET", "/api/deprecated-features/used")[1]] \
        == ["classic_queue_mirroring", "transient_nonexcl_queues"]

    status, body = as_guest(broker, "GET", "/api/auth/hash_password/s3cret")
    assert status == 200 and check_password("s3cret", body["ok"])
    assert as_guest(broker, "PUT", "/api/users/hashed", {
        "password_hash": body["ok"], "tags": ""})[0] == 201
    assert as_guest(broker, "PUT", "/api/permissions/%2F/hashed", {
        "configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    amqp(broker, "hashed", "s3cret").close()          # the hash logs in

    node = as_guest(broker, "GET", "/api/overview")[1]["node"]
    assert as_guest(broker, "POST", f"/api/vhosts/%2F/start/{node}")[0] == 204
    assert as_guest(broker, "POST", "/api/vhosts/nope/start/" + node)[0] == 404
    assert as_guest(broker, "POST", "/api/vhosts/%2F/start/other@node") == (
        400, {"error": "bad_request",
              "reason": "Request to node other@node failed with {badrpc,nodedown}"})

    for exchange in ("amq.topic", "t2"):
        assert as_guest(broker, "PUT", "/api/topic-permissions/%2F/guest", {
            "exchange": exchange, "write": ".*", "read": ".*"})[0] in (201, 204)
    assert len(as_guest(broker, "GET", "/api/topic-permissions/%2F/guest/t2")[1]) == 2
    assert as_guest(broker, "DELETE", "/api/topic-permissions/%2F/guest/t2")[0] == 204
    assert [p["exchange"] for p in as_guest(broker, "GET",
                                            "/api/topic-permissions/%2F/guest")[1]] == [
        "amq.topic"]

    detailed = as_guest(broker, "GET", "/api/queues/detailed")[1]
    assert [q["name"] for q in detailed] == ["transient"]
    assert detailed == as_guest(broker, "GET", "/api/queues")[1]


def test_a_quorum_queues_status_lists_its_members(broker):
    """RabbitMQ 3.13's ``/api/queues/quorum/{vhost}/{queue}/status``, on one node: the queue
    is its own leader; a classic queue and a stream are 503 with RabbitMQ's reasons."""
    with amqp(broker, "guest", "guest") as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("qs", durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_declare("qs-classic", durable=True)
        ch.queue_declare("qs-stream", durable=True, arguments={"x-queue-type": "stream"})
        for i in range(3):
            ch.basic_publish("", "qs", b"m%d" % i)
    node = as_guest(broker, "GET", "/api/overview")[1]["node"]
    assert as_guest(broker, "GET", "/api/queues/quorum/%2F/qs/status") == (200, [{
        "Node Name": node, "Raft State": "leader", "Membership": "voter",
        "Last Log Index": 3, "Last Written": 3, "Last Applied": 3, "Commit Index": 3,
        "Snapshot Index": 0, "Term": 0, "Machine Version": 3}])
    assert as_guest(broker, "GET", "/api/queues/quorum/%2F/qs-classic/status") == (
        503, {"status": "failed", "reason": "classic_queue_not_supported"})
    assert as_guest(broker, "GET", "/api/queues/quorum/%2F/qs-stream/status") == (
        503, {"status": "failed", "reason": "not_quorum_queue"})
    assert as_guest(broker, "GET", "/api/queues/quorum/%2F/nope/status")[0] == 404


def test_quorum_replica_operations_on_one_node(broker):
    """RabbitMQ 3.13's replica operations (mgmt/quorum_replicas.py; the cluster's tests:
    tests/cluster/test_cluster_quorum_replicas.py) on a single node: no other node to add
    or delete a member on (503 with the reason); grow onto this node, shrink and rebalance
    change nothing; administrators only."""
    with amqp(broker, "guest", "guest") as conn:
        ch = conn.channel()
        ch.queue_declare("qr", durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_declare("qr-classic", durable=True)
    node = as_guest(broker, "GET", "/api/overview")[1]["node"]
    status, body = as_guest(broker, "POST", "/api/queues/quorum/%2F/qr/replicas/add",
                            {"node": "amqpbroker@elsewhere"})
    assert status == 503 and body["status"] == "failed" and "not in a cluster" in body["reason"]
    status, body = as_guest(broker, "POST", "/api/queues/quorum/%2F/qr-classic/replicas/add",
                            {"node": node})
    assert status == 503 and "only quorum queues" in body["reason"]
    assert as_guest(broker, "POST", "/api/queues/quorum/%2F/nope/replicas/add",
                    {"node": node})[0] == 404
    assert as_guest(broker, "POST", "/api/queues/quorum/%2F/qr/replicas/add", {})[0] == 400
    grow = {"vhost_pattern": ".*", "queue_pattern": ".*", "strategy": "all"}
    assert as_guest(broker, "POST", f"/api/queues/quorum/replicas/on/{node}/grow",
                    grow)[0] == 204
    assert as_guest(broker, "POST", "/api/queues/quorum/replicas/on/amqpbroker@x/grow",
                    grow)[0] == 404
    assert as_guest(broker, "DELETE", f"/api/queues/quorum/replicas/on/{node}/shrink")[0] == 202
    assert as_guest(broker, "POST", "/api/rebalance/queues")[0] == 204
    assert as_guest(broker, "PUT", "/api/users/qr-monitor",
                    {"password": "p", "tags": "monitoring"})[0] == 201
    status, _, _ = client(broker).request("POST", "/api/rebalance/queues", "qr-monitor", "p")
    assert status == 401
    assert as_guest(broker, "GET", "/api/queues/%2F/qr")[1]["type"] == "quorum"
