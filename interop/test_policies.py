"""Policies (``PUT /api/policies/{vhost}/{name}``), as RabbitMQ 3.10 applies them to queues
that exist and to queues declared later: one policy per queue (the highest priority), its
keys combined with the queue's own arguments, taking effect at once, gone when deleted.

Runs against RabbitMQ too (``AMQP_URL`` / ``AMQP_MGMT_URL``, conftest.py): what is checked
here is what both brokers do. RabbitMQ HTML-escapes its reasons (``&lt;&lt;"x"&gt;&gt;``):
compared unescaped. Ours only (restarts, apply-to by queue type, quorum queues, streams,
mirroring keys): tests/integration/test_policies.py.
"""
from __future__ import annotations

import html

import pika
import pika.exceptions
import pytest

from amqpbroker.testing.mgmt_client import ManagementClient

from .conftest import bodies, q, wait_until


@pytest.fixture
def http(mgmt_url):
    return ManagementClient(mgmt_url)


def setter(mgmt, path: str):
    """Yields ``put(name, body)``, which sets a policy under ``path`` (``/api/policies``,
    ``/api/operator-policies``) in vhost '/'; ``put.made`` names more to delete: every one
    is deleted after."""
    made = []

    def put(name: str, body: dict) -> int:
        made.append(name)
        return mgmt.put(f"{path}/%2F/{q(name)}", body)
    put.made = made
    yield put
    for name in made:
        mgmt.delete(f"{path}/%2F/{q(name)}")


@pytest.fixture
def policies(mgmt):
    """``policies(name, body)`` sets a policy in vhost '/', deleted at teardown."""
    yield from setter(mgmt, "/api/policies")


def count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def publish(ch, queue: str, n: int, prefix: str = "m") -> None:
    for i in range(n):
        ch.basic_publish("", queue, f"{prefix}{i}".encode())


@pytest.mark.parametrize("body, reason", [
    ({"pattern": "^x", "definition": {"foo": 1}},
     'Validation failed\n\n[{<<"foo">>,1}] are not recognised policy settings\n'),
    ({"pattern": "^x", "definition": {"message-ttl": "x"}},
     'Validation failed\n\n<<"x">> is not a valid message TTL\n'),
    ({"pattern": "^x", "definition": {"message-ttl": -1}},
     "Validation failed\n\n-1 is not a valid message TTL\n"),
    ({"pattern": "^x", "definition": {"expires": 0}},
     "Validation failed\n\n0 is not a valid queue expiry\n"),
    ({"pattern": "^x", "definition": {"max-length": -1}},
     "Validation failed\n\n-1 is not a valid maximum length\n"),
    ({"pattern": "^x", "definition": {"overflow": "bad"}},
     'Validation failed\n\n<<"bad">> is not a valid overflow value\n'),
    ({"pattern": "^x", "definition": {"dead-letter-exchange": 5}},
     "Validation failed\n\n5 is not a valid dead letter exchange name\n"),
    ({"pattern": "^x", "definition": {"max-age": "1Z"}},
     'Validation failed\n\n<<"1Z">> is not a valid max age\n'),
    ({"pattern": "^x", "definition": {"max-length": 1}, "priority": "x"},
     'Validation failed\n\npriority should be a number, actually was <<"x">>\n'),
    ({"pattern": 5, "definition": {"max-length": 1}},
     "Validation failed\n\npattern should be a binary but was 5\n"),
    ({"pattern": "^x", "definition": {}}, "Validation failed\n\nno policy provided\n"),
    ({"definition": {"max-length": 1}}, "[{key_missing,pattern}]"),
    ({"pattern": "(", "definition": {"max-length": 1}}, None),
    ({"pattern": "^x", "definition": {"max-length": 1}, "apply-to": "nope"}, None),
], ids=["unknown-key", "ttl-type", "ttl-negative", "expires-zero", "max-length", "overflow",
        "dlx", "max-age", "priority", "pattern-type", "empty", "no-pattern", "bad-regex",
        "apply-to"])
def test_a_refused_policy_is_not_set(http, uniq, body, reason):
    name = uniq("bad")
    status, answer, _ = http.request("PUT", f"/api/policies/%2F/{name}", "guest", "guest",
                                     body=body)
    assert status == 400, answer
    assert answer["error"] == "bad_request"
    if reason is not None:
        assert html.unescape(answer["reason"]) == reason
    else:
        assert answer["reason"].startswith("Validation failed\n\n")
    assert http.get(f"/api/policies/%2F/{name}", "guest", "guest")[0] == 404


def test_set_shown_listed_deleted(http, mgmt, policies, uniq):
    name = uniq("pol")
    assert policies(name, {"pattern": "^orders\\.", "definition": {"max-length": 10},
                           "priority": 3, "apply-to": "queues"}) == 201
    expected = {"vhost": "/", "name": name, "pattern": "^orders\\.", "apply-to": "queues",
                "definition": {"max-length": 10}, "priority": 3}
    assert mgmt.get(f"/api/policies/%2F/{name}") == expected
    assert expected in mgmt.get("/api/policies")
    assert expected in mgmt.get("/api/policies/%2F")
    assert policies(name, {"pattern": "^orders\\.", "definition": {"max-length": 20}}) == 204
    assert mgmt.get(f"/api/policies/%2F/{name}")["apply-to"] == "all"     # the default
    assert mgmt.delete(f"/api/policies/%2F/{name}") == 204
    assert http.get(f"/api/policies/%2F/{name}", "guest", "guest")[0] == 404
    assert mgmt.delete(f"/api/policies/%2F/{name}") == 404
    assert http.request("PUT", "/api/policies/no-such-vhost/p", "guest", "guest",
                        body={"pattern": "x", "definition": {"max-length": 1}})[0] == 404


def test_a_length_policy_trims_a_queue_that_exists_and_goes_with_the_policy(
        ch, cleanup, policies, uniq):
    name = cleanup.queue(uniq("pol-len"))
    ch.queue_declare(name, durable=True)
    publish(ch, name, 10)
    assert policies(name, {"pattern": f"^{name}$", "definition": {"max-length": 3}}) == 201
    wait_until(lambda: count(ch, name) == 3)            # dropped from the head
    publish(ch, name, 2, "n")
    assert bodies(ch, name) == [b"m9", b"n0", b"n1"]
    assert policies(name, {"pattern": "^never-matches$", "definition": {"max-length": 3}}) \
        == 204                                          # the same name, matching no more

    def grows_past_the_limit():      # RabbitMQ applies a policy change after its answer
        ch.basic_publish("", name, b"after")
        return count(ch, name) > 3
    wait_until(grows_past_the_limit)


def test_a_queue_declared_later_gets_it(ch, cleanup, policies, uniq):
    prefix = uniq("pol-later")
    assert policies(prefix, {"pattern": f"^{prefix}", "definition": {"max-length": 2}}) == 201
    name = cleanup.queue(prefix + "-q")
    ch.queue_declare(name, durable=True)
    publish(ch, name, 5)
    assert bodies(ch, name) == [b"m3", b"m4"]


def test_the_highest_priority_wins_and_policies_do_not_merge(ch, cleanup, policies, uniq):
    name = cleanup.queue(uniq("pol-prio"))
    assert policies(name + "-low", {"pattern": f"^{name}$", "priority": 1,
                                    "definition": {"max-length": 5,
                                                   "dead-letter-exchange": "nowhere"}}) == 201
    assert policies(name + "-high", {"pattern": f"^{name}$", "priority": 7,
                                     "definition": {"max-length": 2}}) == 201
    ch.queue_declare(name, durable=True)    # after: RabbitMQ applies a change to a running
                                            # queue after its answer, a new one at declare
    publish(ch, name, 6)
    assert bodies(ch, name) == [b"m4", b"m5"]


def test_with_equal_priorities_one_of_them_applies_whole(ch, cleanup, policies, uniq):
    name = cleanup.queue(uniq("pol-tie"))
    assert policies(name + "-b", {"pattern": f"^{name}$", "definition": {"max-length": 4}}) \
        == 201
    assert policies(name + "-a", {"pattern": f"^{name}$", "definition": {"max-length": 1}}) \
        == 201
    ch.queue_declare(name, durable=True)
    publish(ch, name, 6)
    # one of them, whole: RabbitMQ leaves the choice among equals undefined (its docs; it
    # varies with the names), ours takes the first name (tests/unit/test_policy_resolution.py)
    assert bodies(ch, name) in ([b"m5"], [b"m2", b"m3", b"m4", b"m5"])


@pytest.mark.parametrize("own, policy, kept", [(4, 2, 2), (1, 3, 1)])
def test_for_lengths_the_lower_of_argument_and_policy_wins(ch, cleanup, policies, uniq, own,
                                                           policy, kept):
    name = cleanup.queue(uniq("pol-min"))
    assert policies(name, {"pattern": f"^{name}$", "definition": {"max-length": policy}}) \
        == 201
    ch.queue_declare(name, durable=True, arguments={"x-max-length": own})
    publish(ch, name, 6)
    assert len(bodies(ch, name)) == kept


def test_for_overflow_the_argument_wins(connect, cleanup, policies, uniq):
    ch = connect().channel()
    name = cleanup.queue(uniq("pol-overflow"))
    assert policies(name, {"pattern": f"^{name}$",
                           "definition": {"max-length": 2, "overflow": "drop-head"}}) == 201
    ch.queue_declare(name, durable=True, arguments={"x-overflow": "reject-publish"})
    ch.confirm_delivery()
    publish(ch, name, 2)
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", name, b"over")
    assert bodies(ch, name) == [b"m0", b"m1"]


def test_dead_lettering_by_policy(ch, cleanup, policies, uniq):
    name, dlq = cleanup.queue(uniq("pol-dl")), cleanup.queue(uniq("pol-dlq"))
    assert policies(name, {"pattern": f"^{name}$", "definition": {
        "dead-letter-exchange": "", "dead-letter-routing-key": dlq}}) == 201
    ch.queue_declare(name, durable=True)
    ch.queue_declare(dlq, durable=True)
    ch.basic_publish("", name, b"poison")
    method, _, _ = wait_until(lambda: _got(ch, name))
    ch.basic_reject(method.delivery_tag, requeue=False)
    got = wait_until(lambda: ch.basic_get(dlq, auto_ack=True)[2])
    assert got == b"poison"


def _got(ch, queue):
    method, props, body = ch.basic_get(queue)
    return (method, props, body) if method is not None else None


def test_a_ttl_policy_applies_to_messages_published_after_it(ch, cleanup, policies, uniq):
    """RabbitMQ stamps a message's expiry when it is queued: the messages a queue held
    before the policy do not expire by it."""
    prefix = uniq("pol-ttl")
    old, fresh = cleanup.queue(prefix + "-old"), cleanup.queue(prefix + "-fresh")
    for name in (old, fresh):
        ch.queue_declare(name, durable=True)
    ch.confirm_delivery()           # queued before the policy: confirmed before it is set
    publish(ch, old, 3, "old")
    assert policies(prefix, {"pattern": f"^{prefix}-", "definition": {"message-ttl": 50}}) \
        == 201
    publish(ch, fresh, 1, "new")
    wait_until(lambda: count(ch, fresh) == 0)           # its TTL has passed since the policy
    assert bodies(ch, old) == [b"old0", b"old1", b"old2"]


def test_the_queue_shows_its_policy(mgmt, ch, cleanup, policies, uniq):
    name = cleanup.queue(uniq("pol-show"))
    ch.queue_declare(name, durable=True)
    assert policies(name, {"pattern": f"^{name}$", "definition": {"max-length": 9}}) == 201
    shown = wait_until(lambda: (lambda info: info if info.get("policy") == name else None)(
        mgmt.get(f"/api/queues/%2F/{q(name)}")), timeout=15)   # RabbitMQ's stats lag
    assert shown["effective_policy_definition"] == {"max-length": 9}
    assert shown["arguments"] == {}                    # the declared ones, unchanged


def test_who_may(http, mgmt, broker_url, uniq, policies):
    name = uniq("pol-who")
    assert policies(name, {"pattern": "^who", "definition": {"max-length": 1}}) == 201
    users = {}
    for tag in ("management", "policymaker"):
        user = uniq(tag)
        users[tag] = user
        assert mgmt.put(f"/api/users/{q(user)}", {"password": "pw", "tags": tag}) == 201
        assert mgmt.put(f"/api/permissions/%2F/{q(user)}",
                        {"configure": ".*", "write": ".*", "read": ".*"}) == 201
    try:
        status, body, _ = http.request("GET", "/api/policies/%2F", users["management"], "pw")
        assert status == 200 and name in [p["name"] for p in body]     # listing: yes
        status, body, _ = http.request("GET", f"/api/policies/%2F/{name}",
                                       users["management"], "pw")
        assert status == 401                                           # one: no
        status, body, _ = http.request(
            "PUT", f"/api/policies/%2F/{name}x", users["management"], "pw",
            body={"pattern": "x", "definition": {"max-length": 1}})
        assert status == 401
        status, body, _ = http.request("GET", "/api/policies/%2F", users["policymaker"], "pw")
        assert status == 200 and name in [p["name"] for p in body]
        policies.made.append(name + "pm")
        status, _, _ = http.request(
            "PUT", f"/api/policies/%2F/{name}pm", users["policymaker"], "pw",
            body={"pattern": "x", "definition": {"max-length": 1}})
        assert status == 201
    finally:
        for user in users.values():
            mgmt.delete(f"/api/users/{q(user)}")


def test_in_the_definitions(mgmt, policies, uniq):
    name = uniq("pol-defs")
    assert policies(name, {"pattern": "^defs", "definition": {"message-ttl": 5000},
                           "priority": 2, "apply-to": "queues"}) == 201
    exported = [p for p in mgmt.get("/api/definitions")["policies"] if p["name"] == name]
    assert exported == [{"vhost": "/", "name": name, "pattern": "^defs", "apply-to": "queues",
                         "definition": {"message-ttl": 5000}, "priority": 2}]
    assert mgmt.delete(f"/api/policies/%2F/{q(name)}") == 204
    assert mgmt.request("POST", "/api/definitions", {"policies": exported})[0] in (201, 204)
    assert mgmt.get(f"/api/policies/%2F/{q(name)}")["definition"] == {"message-ttl": 5000}


QUORUM = {"x-queue-type": "quorum"}


def test_a_quorum_queue_resolves_its_own_way(connect, cleanup, policies, uniq):
    """RabbitMQ 3.10's ra_machine_config: the lower delivery-limit, the policy's overflow."""
    ch = connect().channel()
    prefix = uniq("pol-qq")
    limited, capped, dead = (cleanup.queue(f"{prefix}-{s}") for s in ("limit", "cap", "dead"))
    assert policies(prefix, {"pattern": f"^{prefix}-(limit|cap)$", "definition": {
        "delivery-limit": 1, "overflow": "drop-head", "max-length": 10}}) == 201
    ch.queue_declare(dead, durable=True)
    ch.queue_declare(limited, durable=True, arguments={
        **QUORUM, "x-delivery-limit": 5, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead})
    ch.queue_declare(capped, durable=True, arguments={
        **QUORUM, "x-overflow": "reject-publish", "x-max-length": 2})
    ch.basic_publish("", limited, b"poison")
    for _ in range(2):                          # returned twice: past the lower limit, 1
        method, _, _ = wait_until(lambda: _got(ch, limited))
        ch.basic_nack(method.delivery_tag, requeue=True)
    wait_until(lambda: count(ch, dead) == 1)
    ch.confirm_delivery()
    publish(ch, capped, 4)                      # drop-head: every publish confirmed
    assert bodies(ch, capped) == [b"m2", b"m3"]


def test_expires_is_the_lower_for_classic_and_the_policys_for_quorum(
        ch, mgmt, cleanup, policies, uniq):
    prefix = uniq("pol-exp")
    classic, quorum = cleanup.queue(prefix + "-classic"), cleanup.queue(prefix + "-quorum")
    assert policies(prefix, {"pattern": f"^{prefix}-", "definition": {"expires": 600000}}) \
        == 201
    ch.queue_declare(classic, durable=True, arguments={"x-expires": 300})
    ch.queue_declare(quorum, durable=True, arguments={**QUORUM, "x-expires": 300})

    def names():                                # a passive declare would renew them
        return {q["name"] for q in mgmt.get("/api/queues/%2F?columns=name")}
    wait_until(lambda: classic not in names())  # 300 ms have passed since the policy
    assert quorum in names()


def test_dead_letter_arguments_win_over_the_policy(ch, cleanup, policies, uniq):
    prefix = uniq("pol-dlarg")
    mine, theirs = cleanup.queue(prefix + "-mine"), cleanup.queue(prefix + "-theirs")
    assert policies(prefix, {"pattern": f"^{prefix}-(classic|quorum)$", "definition": {
        "dead-letter-exchange": "", "dead-letter-routing-key": theirs}}) == 201
    for name in (mine, theirs):
        ch.queue_declare(name, durable=True)
    sources = []
    for kind, extra in (("classic", {}), ("quorum", QUORUM)):
        name = cleanup.queue(f"{prefix}-{kind}")
        ch.queue_declare(name, durable=True, arguments={
            **extra, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": mine})
        sources.append(name)
    for name in sources:
        ch.basic_publish("", name, b"x")
        method, _, _ = wait_until(lambda: _got(ch, name))
        ch.basic_reject(method.delivery_tag, requeue=False)
    wait_until(lambda: count(ch, mine) == 2)
    assert count(ch, theirs) == 0


def test_an_alternate_exchange_by_policy_and_the_argument_wins(ch, cleanup, policies, uniq):
    prefix = uniq("pol-ae")
    alt, own_alt = cleanup.exchange(prefix + "-alt"), cleanup.exchange(prefix + "-own-alt")
    caught, own_caught = cleanup.queue(prefix + "-caught"), cleanup.queue(prefix + "-own")
    plain, with_arg = cleanup.exchange(prefix + "-x"), cleanup.exchange(prefix + "-x-arg")
    assert policies(prefix, {"pattern": f"^{prefix}-x", "apply-to": "exchanges",
                             "definition": {"alternate-exchange": alt}}) == 201
    assert policies(prefix + "-q", {"pattern": f"^{prefix}-x", "apply-to": "queues",
                                    "priority": 9,
                                    "definition": {"alternate-exchange": "nowhere"}}) == 201
    for exchange, queue in ((alt, caught), (own_alt, own_caught)):
        ch.exchange_declare(exchange, "fanout")
        ch.queue_declare(queue, durable=True)
        ch.queue_bind(queue, exchange)
    ch.exchange_declare(plain, "direct")
    ch.exchange_declare(with_arg, "direct", arguments={"alternate-exchange": own_alt})
    ch.basic_publish(plain, "no-binding", b"to-the-policy's")
    ch.basic_publish(with_arg, "no-binding", b"to-its-own")
    assert wait_until(lambda: _got(ch, caught))[2] == b"to-the-policy's"
    assert wait_until(lambda: _got(ch, own_caught))[2] == b"to-its-own"


def test_a_policy_with_a_key_the_queue_type_lacks_is_skipped_for_the_next(ch, cleanup,
                                                                         policies, uniq):
    """A classic queue has no delivery limit: RabbitMQ 3.10 does not apply to it a policy
    that sets one — not even its other keys — and takes the next that applies."""
    name = cleanup.queue(uniq("pol-skip"))
    assert policies(name + "-qq", {"pattern": f"^{name}$", "priority": 10, "definition": {
        "max-length": 1, "delivery-limit": 2}}) == 201
    assert policies(name + "-any", {"pattern": f"^{name}$", "definition": {
        "max-length": 4}}) == 201
    ch.queue_declare(name, durable=True)
    ch.confirm_delivery()            # counted once queued (RabbitMQ's count may lag)
    publish(ch, name, 6)
    assert count(ch, name) == 4


@pytest.mark.parametrize("pattern, applies, not_applies", [
    ("^{p}[[:digit:]]+$", ["{p}7"], ["{p}x", "{p}:"]),
    ("^{p}7\\z", ["{p}7"], ["{p}77"]),
    ("^\\Q{p}.b\\E$", ["{p}.b"], ["{p}xb"]),
    ("^(?<n>{p})\\k<n>$", ["{p}{p}"], ["{p}{p}x"]),
], ids=["posix-class", "z", "quoted", "named-group"])
def test_a_pattern_is_read_as_pcre(mgmt, ch, cleanup, policies, uniq, pattern, applies,
                                   not_applies):
    """RabbitMQ reads a policy's pattern as PCRE (Erlang's ``re``): its syntax applies
    here too (pcre.py). Before, ``[[:digit:]]`` meant a set of ``[:dgit`` to ours, and
    ``\\z``, ``\\Q..\\E`` and ``(?<n>..)`` were refused."""
    p = uniq("pcre").replace("-", "")
    names = {n.format(p=p): n in applies for n in (*applies, *not_applies)}
    for name in names:
        ch.queue_declare(cleanup.queue(name))
    assert policies(p, {"pattern": pattern.format(p=p), "apply-to": "queues",
                        "definition": {"max-length": 9}}) == 201

    def shown():                    # RabbitMQ's stats lag
        got = {n: mgmt.get(f"/api/queues/%2F/{q(n)}").get("policy") == p for n in names}
        return got if got == names else None
    assert wait_until(shown, timeout=15) == names
