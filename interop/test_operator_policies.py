"""Operator policies (``PUT /api/operator-policies/{vhost}/{name}``), as RabbitMQ 3.10 applies
them: chosen as policies are, from their own set, then merged into the queue's policy — the
lower value where both set a key — so an operator caps what users' policies ask for and
cannot raise it. Only administrators read, set and delete one; numeric limits only.

Runs against RabbitMQ too (``AMQP_URL`` / ``AMQP_MGMT_URL``, conftest.py): what is checked
here is what both brokers do. Ours only (a restart, the definitions, ctl, a cluster):
tests/integration/test_operator_policies.py.
"""
from __future__ import annotations

import html

import pytest

from amqpbroker.testing.mgmt_client import ManagementClient

from .conftest import bodies, q, wait_until
from .test_policies import count, policies, publish, setter  # noqa: F401 (a fixture)


@pytest.fixture
def http(mgmt_url):
    return ManagementClient(mgmt_url)


@pytest.fixture
def operator(mgmt):
    """``operator(name, body)`` sets an operator policy in vhost '/'; deleted at teardown."""
    yield from setter(mgmt, "/api/operator-policies")


def shown(mgmt, name: str, operator_policy):
    """The queue's management object once it names ``operator_policy`` (RabbitMQ's
    statistics lag a few seconds)."""
    return wait_until(lambda: (lambda info: info if info.get("operator_policy")
                               == operator_policy else None)(
        mgmt.get(f"/api/queues/%2F/{q(name)}")), timeout=15)


@pytest.mark.parametrize("body, reason", [
    ({"pattern": "^x", "definition": {"overflow": "drop-head"}},
     'Validation failed\n\n[{<<"overflow">>,<<"drop-head">>}] are not recognised policy '
     'settings\n'),
    ({"pattern": "^x", "definition": {"dead-letter-exchange": "dlx"}},
     'Validation failed\n\n[{<<"dead-letter-exchange">>,<<"dlx">>}] are not recognised '
     'policy settings\n'),
    ({"pattern": "^x", "definition": {"max-age": "1D"}},
     'Validation failed\n\n[{<<"max-age">>,<<"1D">>}] are not recognised policy settings\n'),
    ({"pattern": "^x", "definition": {"message-ttl": -1}},
     "Validation failed\n\n-1 is not a valid message TTL\n"),
    ({"pattern": "^x", "definition": {"max-length": "a"}},
     'Validation failed\n\n<<"a">> is not a valid maximum length\n'),
    ({"pattern": "^x", "definition": {}}, "Validation failed\n\nno policy provided\n"),
    ({"pattern": "^x", "definition": {"max-length": 1}, "apply-to": "classic_queues"},
     "Validation failed\n\napply-to 'classic_queues' unrecognised; should be 'queues', "
     "'exchanges' or 'all'\n"),
    ({"pattern": "^x"}, "[{key_missing,definition}]"),
])
def test_a_refused_operator_policy_is_not_set(http, uniq, body, reason):
    name = uniq("op-bad")
    status, answer, _ = http.request("PUT", f"/api/operator-policies/%2F/{name}", "guest",
                                     "guest", body=body)
    assert status == 400
    assert html.unescape(answer["reason"]) == reason
    assert http.get(f"/api/operator-policies/%2F/{name}", "guest", "guest")[0] == 404


def test_set_shown_listed_deleted(http, mgmt, operator, uniq):
    name = uniq("op")
    assert operator(name, {"pattern": "^orders\\.", "definition": {"max-length": 10,
                                                                    "delivery-limit": 3},
                           "priority": 2, "apply-to": "queues"}) == 201
    expected = {"vhost": "/", "name": name, "pattern": "^orders\\.", "apply-to": "queues",
                "definition": {"max-length": 10, "delivery-limit": 3}, "priority": 2}
    assert mgmt.get(f"/api/operator-policies/%2F/{name}") == expected
    assert expected in mgmt.get("/api/operator-policies")
    assert expected in mgmt.get("/api/operator-policies/%2F")
    assert expected not in mgmt.get("/api/policies")            # a set of their own
    assert operator(name, {"pattern": "^orders\\.", "definition": {"max-length": 20}}) == 204
    assert mgmt.get(f"/api/operator-policies/%2F/{name}")["apply-to"] == "all"
    assert mgmt.delete(f"/api/operator-policies/%2F/{name}") == 204
    assert http.get(f"/api/operator-policies/%2F/{name}", "guest", "guest")[0] == 404
    assert mgmt.delete(f"/api/operator-policies/%2F/{name}") == 404
    assert http.request("PUT", "/api/operator-policies/no-such-vhost/p", "guest", "guest",
                        body={"pattern": "x", "definition": {"max-length": 1}})[0] == 404


def test_only_administrators_set_read_and_delete_one(http, mgmt, operator, uniq):
    name = uniq("op-who")
    assert operator(name, {"pattern": "^who", "definition": {"max-length": 1}}) == 201
    users = {}
    for tag in ("management", "policymaker"):
        user = users[tag] = uniq(tag)
        assert mgmt.put(f"/api/users/{q(user)}", {"password": "pw", "tags": tag}) == 201
        assert mgmt.put(f"/api/permissions/%2F/{q(user)}",
                        {"configure": ".*", "write": ".*", "read": ".*"}) == 201
    try:
        for user in users.values():
            status, body, _ = http.request("GET", "/api/operator-policies/%2F", user, "pw")
            assert status == 200 and name in [p["name"] for p in body]   # listing: yes
            for method, path, body in (
                    ("GET", f"/api/operator-policies/%2F/{name}", None),
                    ("PUT", f"/api/operator-policies/%2F/{name}x",
                     {"pattern": "x", "definition": {"max-length": 1}}),
                    ("DELETE", f"/api/operator-policies/%2F/{name}", None)):
                status, answer, _ = http.request(method, path, user, "pw", body=body)
                assert status == 401, (user, method)
                assert answer["reason"] == "Not administrator user"
        assert mgmt.get(f"/api/operator-policies/%2F/{name}")["name"] == name
    finally:
        for user in users.values():
            mgmt.delete(f"/api/users/{q(user)}")


def test_it_caps_the_queues_policy_and_the_lower_value_wins(ch, mgmt, cleanup, operator,
                                                            policies, uniq):
    prefix = uniq("op-cap")
    capped, under = cleanup.queue(prefix + "-capped"), cleanup.queue(prefix + "-under")
    assert policies(prefix + "-user", {"pattern": f"^{prefix}-capped$", "definition": {
        "max-length": 10, "message-ttl": 30000, "expires": 3600000}}) == 201
    assert policies(prefix + "-low", {"pattern": f"^{prefix}-under$",
                                      "definition": {"max-length": 3}}) == 201
    assert operator(prefix, {"pattern": f"^{prefix}", "apply-to": "queues", "definition": {
        "max-length": 5, "message-ttl": 60000}}) == 201
    ch.confirm_delivery()            # counted once queued (RabbitMQ's count may lag)
    for name in (capped, under):
        ch.queue_declare(name)
        publish(ch, name, 8)
    assert bodies(ch, capped) == [b"m3", b"m4", b"m5", b"m6", b"m7"]   # the operator's 5
    assert bodies(ch, under) == [b"m5", b"m6", b"m7"]                  # the policy's 3
    info = shown(mgmt, capped, prefix)
    assert info["policy"] == prefix + "-user"
    assert info["effective_policy_definition"] == {
        "max-length": 5, "message-ttl": 30000, "expires": 3600000}
    assert shown(mgmt, under, prefix)["effective_policy_definition"] == {
        "max-length": 3, "message-ttl": 60000}


def test_alone_it_applies_at_once_and_goes_with_its_deletion(ch, mgmt, cleanup, operator,
                                                             uniq):
    name = cleanup.queue(uniq("op-alone"))
    ch.queue_declare(name, durable=True)
    publish(ch, name, 6)
    assert operator(name, {"pattern": f"^{name}$", "definition": {"max-length": 2}}) == 201
    wait_until(lambda: count(ch, name) == 2)            # dropped from the head
    info = shown(mgmt, name, name)
    assert info["policy"] is None and info["effective_policy_definition"] == {"max-length": 2}
    assert mgmt.delete(f"/api/operator-policies/%2F/{q(name)}") == 204

    def grows_past_the_cap():       # RabbitMQ applies a change after its answer
        ch.basic_publish("", name, b"after")
        return count(ch, name) > 2
    wait_until(grows_past_the_cap)


def test_one_with_a_key_the_queue_type_lacks_is_skipped_for_the_next(ch, mgmt, cleanup,
                                                                     operator, uniq):
    """A classic queue has no delivery limit: RabbitMQ 3.10 does not apply to it an operator
    policy that sets one — not even its other keys — and takes the next that applies."""
    name = cleanup.queue(uniq("op-skip"))
    assert operator(name + "-qq", {"pattern": f"^{name}$", "priority": 10, "definition": {
        "max-length": 1, "delivery-limit": 2}}) == 201
    assert operator(name + "-any", {"pattern": f"^{name}$", "definition": {
        "max-length": 4}}) == 201
    ch.queue_declare(name)
    ch.confirm_delivery()            # counted once queued (RabbitMQ's count may lag)
    publish(ch, name, 6)
    assert count(ch, name) == 4
    assert shown(mgmt, name, name + "-any")["effective_policy_definition"] == {
        "max-length": 4}
