"""Bodies of the management API that RabbitMQ refuses with 400 ``bad_request`` (or 415), and
users without a password, which RabbitMQ never lets log in. Each refused request must leave
nothing behind. (The bodies RabbitMQ 3.10 answers with 500, and the all-or-nothing import,
are ours only: tests/integration/test_management_api.py.)"""
from __future__ import annotations

import json

import pika
import pytest

from amqpbroker.testing.mgmt_client import ManagementClient, q

from .conftest import url_with

@pytest.fixture
def http(mgmt_url):
    return ManagementClient(mgmt_url)


@pytest.fixture
def user_name(uniq, mgmt):
    """A user name that the test may create; deleted at teardown."""
    name = uniq("u")
    yield name
    mgmt.delete(f"/api/users/{q(name)}")


def admin_doc(name: str) -> dict:
    return {"users": [{"name": name, "password": "pw", "tags": "administrator"}]}


def assert_bad_request(answer, reason: str | None = None):
    status, body = answer[:2]
    assert status == 400, answer
    assert body["error"] == "bad_request", answer
    if reason is not None:
        assert body["reason"] == reason, answer


def can_log_in(http, broker_url, name: str, password: str) -> tuple[bool, bool]:
    """(over HTTP, over AMQP)."""
    over_http = http.get("/api/whoami", name, password)[0] == 200
    try:
        pika.BlockingConnection(pika.URLParameters(
            url_with(broker_url, user=name, password=password))).close()
        over_amqp = True
    except pika.exceptions.ProbableAuthenticationError:
        over_amqp = False
    return over_http, over_amqp


def test_malformed_json_creates_no_user(http, user_name, broker_url):
    answer = http.request("PUT", f"/api/users/{q(user_name)}", "guest", "guest",
                          raw=b'{"password": "x", "tags": "administrator"')
    assert_bad_request(answer, "not_json")
    assert http.get(f"/api/users/{q(user_name)}", "guest", "guest")[0] == 404
    assert can_log_in(http, broker_url, user_name, "") == (False, False)


@pytest.mark.parametrize("body", [{"tags": "administrator"},
                                  {"tags": "administrator", "password": ""},
                                  {"tags": "administrator", "password_hash": ""}])
def test_user_without_password_cannot_log_in(http, mgmt, user_name, broker_url, body):
    assert mgmt.put(f"/api/users/{q(user_name)}", body) == 201
    assert mgmt.put(f"/api/permissions/%2F/{q(user_name)}",
                    {"configure": ".*", "write": ".*", "read": ".*"}) == 201
    for password in ("", "pw", "guest", "x"):
        assert can_log_in(http, broker_url, user_name, password) == (False, False), password


def test_user_updated_without_password_loses_it(http, mgmt, user_name, broker_url):
    path = f"/api/users/{q(user_name)}"
    assert mgmt.put(path, {"tags": "administrator", "password": "pw"}) == 201
    assert mgmt.put(f"/api/permissions/%2F/{q(user_name)}",
                    {"configure": ".*", "write": ".*", "read": ".*"}) == 201
    assert can_log_in(http, broker_url, user_name, "pw") == (True, True)
    assert mgmt.put(path, {"tags": "administrator"}) == 204
    assert can_log_in(http, broker_url, user_name, "pw") == (False, False)
    assert can_log_in(http, broker_url, user_name, "") == (False, False)


@pytest.mark.parametrize("body, reason", [
    ({}, "tags_not_present"),
    ({"password": "pw"}, "tags_not_present"),
    ({"password": "pw", "password_hash": "aGVsbG8=", "tags": ""},
     "both_password_and_password_hash_are_provided"),
    ({"password_hash": "!!not base64", "tags": ""}, None),
    ([{"password": "pw", "tags": "administrator"}], "not_json"),
])
def test_bad_user_body_is_400(http, user_name, body, reason):
    assert_bad_request(http.request("PUT", f"/api/users/{q(user_name)}", "guest", "guest",
                                    body=body), reason)
    assert http.get(f"/api/users/{q(user_name)}", "guest", "guest")[0] == 404


@pytest.mark.parametrize("body", [
    {"configure": ".*"},
    {"configure": "(", "write": ".*", "read": ".*"},
    {"configure": ".*", "write": ".*", "read": "[a-"},
])
def test_bad_permission_body_is_400_and_keeps_the_old_one(http, mgmt, user_name, body):
    assert mgmt.put(f"/api/users/{q(user_name)}", {"password": "pw", "tags": ""}) == 201
    path = f"/api/permissions/%2F/{q(user_name)}"
    assert mgmt.put(path, {"configure": "^c", "write": "^w", "read": "^r"}) == 201
    assert_bad_request(http.request("PUT", path, "guest", "guest", body=body))
    assert mgmt.get(path) == {"user": user_name, "vhost": "/", "configure": "^c",
                              "write": "^w", "read": "^r"}


def test_permission_of_unknown_user_or_vhost_is_400(http, uniq):
    perm = {"configure": ".*", "write": ".*", "read": ".*"}
    for path in (f"/api/permissions/%2F/{uniq('nobody')}",
                 f"/api/permissions/{uniq('novhost')}/guest"):
        assert_bad_request(http.request("PUT", path, "guest", "guest", body=perm),
                           "vhost_or_user_not_found")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_definitions_import_must_be_json(http, user_name, content_type):
    # what a page on another site can make a browser POST, with its cached credentials
    status, _, _ = http.request("POST", "/api/definitions", "guest", "guest",
                                raw=json.dumps(admin_doc(user_name)).encode(),
                                content_type=content_type)
    assert status == 415
    assert http.get(f"/api/users/{q(user_name)}", "guest", "guest")[0] == 404


def test_definitions_import_as_json_works(http, user_name):
    status, _, _ = http.request("POST", "/api/definitions", "guest", "guest",
                                body=admin_doc(user_name),
                                content_type="application/json;charset=UTF-8")
    assert status == 204
    assert http.get(f"/api/users/{q(user_name)}", "guest", "guest")[0] == 200


def _bad_docs(n: str):
    """(label, document with one bad entry, the path of what it would have created)."""
    ex = {"name": n, "vhost": "/", "type": "direct", "durable": True, "auto_delete": False,
          "internal": False, "arguments": {}}
    qu = {"name": n, "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}
    perm = {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    topic = {"user": "guest", "vhost": "/", "exchange": "amq.topic", "write": ".*", "read": ".*"}
    made_q, made_x, made_u = f"/api/queues/%2F/{n}", f"/api/exchanges/%2F/{n}", f"/api/users/{n}"
    return [
        ("unknown exchange type", {"exchanges": [{**ex, "type": "bogus"}]}, made_x),
        ("exchange without vhost", {"exchanges": [{k: v for k, v in ex.items() if k != "vhost"}]},
         made_x),
        ("exchange in unknown vhost", {"exchanges": [{**ex, "vhost": n}]},
         f"/api/exchanges/{n}/{n}"),
        ("queue without vhost", {"queues": [{k: v for k, v in qu.items() if k != "vhost"}]},
         made_q),
        ("queue in unknown vhost", {"queues": [{**qu, "vhost": n}]}, f"/api/queues/{n}/{n}"),
        ("queue with a bad x-argument", {"queues": [{**qu, "arguments": {"x-max-length": "ten"}}]},
         made_q),
        ("user without tags", {"users": [{"name": n, "password": "pw"}]}, made_u),
        ("user with a bad hash", {"users": [{"name": n, "password_hash": "!!", "tags": ""}]},
         made_u),
        ("permission with a bad regex",
         {"users": [{"name": n, "password": "pw", "tags": ""}],
          "permissions": [{**perm, "user": n, "configure": "("}]}, f"/api/permissions/%2F/{n}"),
        ("permission of an unknown user", {"permissions": [{**perm, "user": n}]},
         f"/api/permissions/%2F/{n}"),
        ("topic permission with a bad regex",
         {"users": [{"name": n, "password": "pw", "tags": ""}],
          "topic_permissions": [{**topic, "user": n, "write": "("}]},
         f"/api/topic-permissions/%2F/{n}"),
        ("topic permission of an unknown user", {"topic_permissions": [{**topic, "user": n}]},
         f"/api/topic-permissions/%2F/{n}"),
        ("topic permission in an unknown vhost",
         {"users": [{"name": n, "password": "pw", "tags": ""}],
          "topic_permissions": [{**topic, "user": n, "vhost": n}]},
         f"/api/topic-permissions/{n}/{n}"),
        ("binding to a bad destination type",
         {"bindings": [{"source": "amq.direct", "vhost": "/", "destination": n,
                        "destination_type": "nothing", "routing_key": n, "arguments": {}}]},
         None),
    ]


@pytest.mark.parametrize("case", range(len(_bad_docs("x"))),
                         ids=[label for label, _, _ in _bad_docs("x")])
def test_definitions_import_refuses_a_bad_entry(http, mgmt, uniq, case):
    name = uniq("d")
    label, doc, made = _bad_docs(name)[case]
    try:
        assert_bad_request(http.request("POST", "/api/definitions", "guest", "guest", body=doc))
        if made is not None:
            assert http.get(made, "guest", "guest")[0] == 404, label
    finally:
        mgmt.delete(f"/api/users/{q(name)}")
        mgmt.delete(f"/api/vhosts/{q(name)}")


def test_malformed_definitions_are_400(http):
    assert_bad_request(http.request("POST", "/api/definitions", "guest", "guest",
                                    raw=b'{"users": ['))


def test_exported_definitions_import_back(http):
    status, defs = http.get("/api/definitions", "guest", "guest")
    assert status == 200
    assert http.request("POST", "/api/definitions", "guest", "guest", body=defs)[0] == 204
    assert http.get("/api/definitions", "guest", "guest")[1]["users"] == defs["users"]


def test_import_leaves_existing_and_reserved_objects_alone(http, mgmt, connect, uniq, cleanup):
    """What RabbitMQ's import skips: an exchange or queue that exists stays as it is, even
    when the document defines it otherwise; ``amq.*`` names are not created."""
    qname, xname, reserved = cleanup.queue(uniq("q")), cleanup.exchange(uniq("x")), uniq("amq.x")
    ch = connect().channel()
    ch.queue_declare(qname, durable=True)
    ch.exchange_declare(xname, "fanout", durable=True)
    doc = {"queues": [{"name": qname, "vhost": "/", "durable": False, "auto_delete": True,
                       "arguments": {"x-max-length": 5}}],
           "exchanges": [{"name": xname, "vhost": "/", "type": "direct", "durable": False,
                          "auto_delete": False, "internal": False, "arguments": {}},
                         {"name": reserved, "vhost": "/", "type": "direct", "durable": True,
                          "auto_delete": False, "internal": False, "arguments": {}}]}
    assert http.request("POST", "/api/definitions", "guest", "guest", body=doc)[0] == 204
    queue = mgmt.get(f"/api/queues/%2F/{q(qname)}")
    assert (queue["durable"], queue["auto_delete"], queue["arguments"]) == (True, False, {})
    exchange = mgmt.get(f"/api/exchanges/%2F/{q(xname)}")
    assert (exchange["type"], exchange["durable"]) == ("fanout", True)
    assert http.get(f"/api/exchanges/%2F/{q(reserved)}", "guest", "guest")[0] == 404
