"""Policies: what interop/test_policies.py cannot check against RabbitMQ 3.10 — that they are
durable, reach queues that a start restores, choose by queue type (``apply-to`` of 3.12+),
act on quorum queues and streams, and that the keys without effect here are taken (so a
RabbitMQ 3.x export imports) and said to be without effect.
"""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing import BrokerProcess, leaks

QUORUM = {"x-queue-type": "quorum"}
STREAM = {"x-queue-type": "stream"}


@pytest.fixture
def broker(tmp_path):
    with BrokerProcess(tmp_path / "data", management=True) as b:
        yield b


def channel(b):
    return pika.BlockingConnection(pika.ConnectionParameters(b.host, b.port)).channel()


def put_policy(b, name: str, body: dict) -> int:
    return b.request("PUT", f"policies/%2F/{name}", body)[0]


def count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def publish(ch, queue: str, n: int) -> None:
    for i in range(n):
        ch.basic_publish("", queue, b"m%d" % i)


def test_durable_and_applied_to_the_queues_a_start_restores(broker):
    ch = channel(broker)
    ch.queue_declare("jobs", durable=True)
    assert put_policy(broker, "cap", {"pattern": "^jobs$", "definition": {"max-length": 2},
                                      "priority": 4}) == 201
    broker.kill()                                   # answered: on disk
    broker.start()
    assert broker.api("policies/%2F/cap")["priority"] == 4
    assert broker.api("queues/%2F/jobs")["policy"] == "cap"
    ch = channel(broker)
    publish(ch, "jobs", 5)
    assert count(ch, "jobs") == 2
    assert broker.request("DELETE", "policies/%2F/cap")[0] == 204
    broker.stop()                                   # the deletion too
    broker.start()
    assert broker.request("GET", "policies/%2F/cap")[0] == 404
    ch = channel(broker)
    publish(ch, "jobs", 5)
    assert count(ch, "jobs") == 5                   # the restart dropped transient ones


@pytest.mark.parametrize("apply_to, classic, quorum", [
    ("classic_queues", 1, 4), ("quorum_queues", 4, 1), ("queues", 1, 1), ("exchanges", 4, 4)])
def test_apply_to_chooses_by_queue_type(broker, apply_to, classic, quorum):
    ch = channel(broker)
    ch.queue_declare("t-classic", durable=True)
    ch.queue_declare("t-quorum", durable=True, arguments=QUORUM)
    assert put_policy(broker, "p", {"pattern": "^t-", "apply-to": apply_to,
                                    "definition": {"max-length": 1}}) == 201
    for name in ("t-classic", "t-quorum"):
        publish(ch, name, 4)
    assert (count(ch, "t-classic"), count(ch, "t-quorum")) == (classic, quorum)


def test_a_quorum_queues_delivery_limit_and_dead_lettering(broker):
    ch = channel(broker)
    ch.queue_declare("qq", durable=True, arguments=QUORUM)
    ch.queue_declare("qq-dead", durable=True)
    assert put_policy(broker, "poison", {"pattern": "^qq$", "definition": {
        "delivery-limit": 1, "dead-letter-exchange": "", "dead-letter-routing-key": "qq-dead"}}) \
        == 201
    ch.basic_publish("", "qq", b"poison")
    for _ in range(2):                              # returned twice: one more than the limit
        method, _, _ = leaks.wait_until(lambda: ch.basic_get("qq"), what="a delivery")
        ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, body = leaks.wait_until(lambda: (lambda g: g if g[0] else None)(
        ch.basic_get("qq-dead", auto_ack=True)), what="the dead-lettered message")
    assert body == b"poison"
    assert props.headers["x-death"][0]["reason"] == "delivery_limit"
    assert count(ch, "qq") == 0


def test_a_streams_retention(broker):
    ch = channel(broker)
    ch.queue_declare("events", durable=True, arguments={
        **STREAM, "x-stream-max-segment-size-bytes": 1000})
    ch.confirm_delivery()                           # each in the log before the next
    for i in range(40):
        ch.basic_publish("", "events", b"%03d" % i + b"x" * 200)
    assert count(ch, "events") == 40
    assert put_policy(broker, "keep-4k", {"pattern": "^events$", "apply-to": "streams",
                                          "definition": {"max-length-bytes": 4000}}) == 201
    kept = count(ch, "events")              # applied before the answer: whole old segments
    assert 12 <= kept <= 24, kept
    assert broker.api("partitions/%2F/events")["log_start_offset"] == 40 - kept


def test_keys_without_effect_are_taken_and_said_to_be(broker):
    ch = channel(broker)
    ch.queue_declare("mirrored", durable=True)
    assert put_policy(broker, "ha", {"pattern": "^mirrored$", "definition": {
        "ha-mode": "exactly", "ha-params": 2, "ha-sync-mode": "automatic",
        "queue-mode": "lazy", "max-length": 3}}) == 201
    leaks.wait_until(lambda: any("policy 'ha' in vhost '/': ha-mode, ha-params, ha-sync-mode, "
                                 "queue-mode change(s) nothing on this broker" in line
                                 for line in broker.output), what="the warning")
    info = broker.api("queues/%2F/mirrored")
    assert info["policy"] == "ha" and info["arguments"] == {}
    publish(ch, "mirrored", 5)
    assert count(ch, "mirrored") == 3               # its other keys act


def test_a_deleted_vhost_takes_its_policies(broker):
    assert broker.request("PUT", "vhosts/tmp", {})[0] == 201
    assert broker.request("PUT", "policies/tmp/p", {"pattern": ".", "definition": {
        "max-length": 1}})[0] == 201
    assert broker.request("DELETE", "vhosts/tmp")[0] == 204
    assert broker.request("PUT", "vhosts/tmp", {})[0] == 201
    assert broker.api("policies/tmp") == []


def test_an_alternate_exchange_by_policy_reaches_running_exchanges_and_restarts(broker):
    """Set after the exchanges exist (applied before the answer: in the split layout the
    front-ends route by it, told with the exchange), and kept across a restart, also on a
    predeclared amq.* exchange, whose bindings stay."""
    ch = channel(broker)
    ch.exchange_declare("orders", "direct", durable=True)
    ch.exchange_declare("unroutable", "fanout", durable=True)
    ch.queue_declare("caught", durable=True)
    ch.queue_declare("direct-q", durable=True)
    ch.queue_bind("caught", "unroutable")
    ch.queue_bind("direct-q", "amq.direct", "k")
    assert put_policy(broker, "ae", {"pattern": "^(orders|amq\\.direct)$",
                                     "apply-to": "exchanges",
                                     "definition": {"alternate-exchange": "unroutable"}}) == 201
    assert broker.api("exchanges/%2F/orders")["policy"] == "ae"
    ch.confirm_delivery()
    ch.basic_publish("orders", "nobody", b"a", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("amq.direct", "nobody", b"b", pika.BasicProperties(delivery_mode=2))
    assert count(ch, "caught") == 2
    broker.stop()
    broker.start()
    ch = channel(broker)
    ch.confirm_delivery()
    ch.basic_publish("amq.direct", "k", b"c", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("amq.direct", "nobody", b"d", pika.BasicProperties(delivery_mode=2))
    assert (count(ch, "direct-q"), count(ch, "caught")) == (1, 3)
    assert broker.request("DELETE", "policies/%2F/ae")[0] == 204
    ch.basic_publish("orders", "nobody", b"e", pika.BasicProperties(delivery_mode=2))
    assert count(ch, "caught") == 3


def test_a_rabbitmq_3_10_export_with_mirroring_policies_imports_whole(broker):
    """The policies of a RabbitMQ 3.10.8 export (its shape, as `GET /api/definitions` wrote
    it there): imported as they are, the keys without effect here said once each."""
    policies = [
        {"vhost": "/", "name": "ae", "pattern": "^events$", "apply-to": "exchanges",
         "definition": {"alternate-exchange": "unroutable"}, "priority": 0},
        {"vhost": "/", "name": "dlx", "pattern": "^orders\\.", "apply-to": "queues",
         "definition": {"dead-letter-exchange": "dlx", "max-length": 1000,
                        "message-ttl": 60000, "overflow": "reject-publish"}, "priority": 5},
        {"vhost": "/", "name": "ha-all", "pattern": ".*", "apply-to": "queues",
         "definition": {"ha-mode": "all", "ha-sync-mode": "automatic"}, "priority": 0}]
    doc = {"rabbit_version": "3.10.8", "rabbitmq_version": "3.10.8", "product_name": "RabbitMQ",
           "users": [], "vhosts": [{"name": "/"}], "permissions": [], "parameters": [],
           "global_parameters": [], "policies": policies, "queues": [], "exchanges": [],
           "bindings": []}
    assert broker.request("POST", "definitions", doc)[0] == 204
    assert sorted(broker.api("policies/%2F"), key=lambda p: p["name"]) == policies
    leaks.wait_until(lambda: any("policy 'ha-all' in vhost '/': ha-mode, ha-sync-mode "
                                 "change(s) nothing" in line for line in broker.output),
                     what="the warning")
    ch = channel(broker)
    ch.queue_declare("orders.eu", durable=True)
    assert broker.api("queues/%2F/orders.eu")["policy"] == "dlx"     # priority 5 over 0


def test_operator_policies_are_durable_exported_imported_and_go_with_their_vhost(broker):
    """Ours beyond RabbitMQ 3.10, which neither exports nor imports them: an operator policy
    survives a kill (the journal) and a compaction-free restart, is in the definitions
    export under ``operator_policies`` and imports from it, and a deleted vhost takes it."""
    ch = channel(broker)
    ch.queue_declare("jobs", durable=True)
    body = {"pattern": "^jobs$", "definition": {"max-length": 2}, "apply-to": "queues",
            "priority": 1}
    assert broker.request("PUT", "operator-policies/%2F/ops", body)[0] == 201
    assert put_policy(broker, "user", {"pattern": "^jobs$", "definition": {
        "max-length": 5, "message-ttl": 60000}}) == 201
    broker.kill()                                   # answered: on disk
    broker.start()
    item = {"vhost": "/", "name": "ops", **body}
    assert broker.api("operator-policies/%2F/ops") == item
    info = broker.api("queues/%2F/jobs")
    assert (info["policy"], info["operator_policy"]) == ("user", "ops")
    assert info["effective_policy_definition"] == {"max-length": 2, "message-ttl": 60000}
    ch = channel(broker)
    publish(ch, "jobs", 5)
    assert count(ch, "jobs") == 2
    exported = broker.api("definitions")
    assert exported["operator_policies"] == [item]
    assert broker.request("DELETE", "operator-policies/%2F/ops")[0] == 204
    assert broker.request("POST", "definitions", {
        "operator_policies": exported["operator_policies"]})[0] == 204
    assert broker.api("operator-policies/%2F/ops") == item
    refused = broker.request("POST", "definitions", {"operator_policies": [
        {**item, "name": "bad", "definition": {"overflow": "drop-head"}}]})
    assert refused[0] == 400 and "are not recognised policy settings" in str(refused[1])
    assert broker.request("GET", "operator-policies/%2F/bad")[0] == 404
    broker.stop()
    broker.start()
    assert broker.api("operator-policies/%2F") == [item]
    assert broker.request("PUT", "vhosts/tmp", {})[0] == 201
    assert broker.request("PUT", "operator-policies/tmp/p", body)[0] == 201
    assert broker.request("DELETE", "vhosts/tmp")[0] == 204
    assert broker.request("PUT", "vhosts/tmp", {})[0] == 201
    assert broker.api("operator-policies/tmp") == []


def test_a_policy_with_a_key_a_queue_type_lacks_is_not_that_types(broker):
    """RabbitMQ 3.10.8, measured: a policy is skipped whole for a queue type that lacks one
    of its keys (a delivery-limit for classic queues, a max-length for streams), and the
    next that applies is chosen — for quorum queues and streams too, which RabbitMQ
    cannot check against here (interop/test_policies.py checks classic ones)."""
    ch = channel(broker)
    assert put_policy(broker, "qq", {"pattern": "^t-", "priority": 9, "definition": {
        "max-length": 1, "delivery-limit": 3}}) == 201
    assert put_policy(broker, "any", {"pattern": "^t-", "definition": {
        "max-length-bytes": 100000}}) == 201
    ch.queue_declare("t-classic", durable=True)
    ch.queue_declare("t-quorum", durable=True, arguments=QUORUM)
    ch.queue_declare("t-stream", durable=True, arguments=STREAM)
    assert {q: broker.api(f"queues/%2F/{q}")["policy"]
            for q in ("t-classic", "t-quorum", "t-stream")} == {
        "t-classic": "any", "t-quorum": "qq", "t-stream": "any"}
    publish(ch, "t-classic", 3)
    publish(ch, "t-quorum", 3)
    assert (count(ch, "t-classic"), count(ch, "t-quorum")) == (3, 1)


def test_the_messages_queued_before_a_ttl_policy_keep_no_ttl_across_a_restart(broker):
    """A TTL policy applies to messages queued after it (RabbitMQ stamps expiry at enqueue);
    the queue keeps which TTL applies from which offset across a restart (worker/ttls.py):
    before, the restarted queue applied the policy's TTL to the backlog too and expired it
    at the first read."""
    ch = channel(broker)
    ch.confirm_delivery()
    ch.queue_declare("backlog", durable=True)
    persistent = pika.BasicProperties(delivery_mode=2)
    for i in range(3):
        ch.basic_publish("", "backlog", b"old%d" % i, persistent)
    assert put_policy(broker, "ttl", {"pattern": "^backlog$",
                                      "definition": {"message-ttl": 50}}) == 201
    for i in range(2):
        ch.basic_publish("", "backlog", b"new%d" % i, persistent)
    broker.kill()
    broker.start()                                  # takes longer than 50 ms
    ch = channel(broker)
    got = []
    while (m := ch.basic_get("backlog", auto_ack=True))[0] is not None:
        got.append(m[2])
    assert got == [b"old0", b"old1", b"old2"]       # the new ones expired, the old ones not
    # the policy goes: messages from here on have no TTL, the file says so after a restart
    assert broker.request("DELETE", "policies/%2F/ttl")[0] == 204
    ch.basic_publish("", "backlog", b"later", persistent)
    broker.stop()
    broker.start()
    ch = channel(broker)
    assert ch.basic_get("backlog", auto_ack=True)[2] == b"later"
