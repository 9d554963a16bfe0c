"""Nothing one client sets up stalls the node: topic bindings whose matching was exponential,
dead-letter cycles that turned forever (and, at TTL 0, recursed until RecursionError).

One broker (with its management API) for the module; ``AMQPBROKER_WORKERS=2
AMQPBROKER_FRONTENDS=2`` runs the same tests split. Nothing here is timed: before the fixes
the publish below never completed (its test ran into the suite's timeout) and the cycle was
never reported; ``tests/property/test_topic_matching.py`` bounds the matcher's work in steps.
"""
from __future__ import annotations

import uuid

import pytest

from amqpbroker.testing import BrokerProcess, leaks
from interop.conftest import bodies


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = BrokerProcess(tmp_path_factory.mktemp("no-stall"), management=True).start()
    try:
        yield b
    finally:
        b.stop()
    log = "".join(b.output)
    assert "Traceback" not in log and "RecursionError" not in log, log[-5000:]


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_pathological_topic_bindings_route_at_once(broker, ch):
    """The issue's binding (six '#' then a word) with 40 words it does not match held every
    connection and the management API for seconds, and each more '#' cost ~8x: twelve '#'s
    would take about a day at 40 words, far longer at 127 (a 253-byte key). They route now,
    and the node serves."""
    ex = name("topic")
    ch.exchange_declare(ex, "topic", auto_delete=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    for hashes in (6, 12):
        ch.queue_bind(q, ex, ".".join(["#"] * hashes + ["z"]))
    ch.queue_bind(q, ex, "#.*.#.*.#.*.#.*.#.*.#.y")
    keys = {
        b"40 words": ".".join(["w"] * 39 + ["z"]),
        b"127 words": ".".join(["w"] * 126 + ["z"]),
        b"no match": ".".join(["w"] * 127),
        b"empty words": "." * 100 + "z",
    }
    assert all(len(k) <= 255 for k in keys.values())
    for body, key in keys.items():
        ch.basic_publish(ex, key, body)            # confirmed: routed
    assert bodies(ch, q) == [b"40 words", b"127 words", b"empty words"]
    assert broker.api("overview")["node"]


def test_dead_letter_cycle_is_dropped_and_logged(broker, ch):
    """A -> B -> A at TTL 0: the message is dropped on its way back into A, with RabbitMQ's
    warning, and the queues end empty (interop/test_dead_letter_cycles.py has the behaviour
    against any broker; this is the log line)."""
    a, b = name("cycle-a"), name("cycle-b")
    ch.queue_declare(a, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": b})
    ch.queue_declare(b, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": a})
    ch.basic_publish("", a, b"round")
    warning = f"Dead-letter queues cycle detected in vhost '/': ['{a}', '{b}', '{a}']"
    leaks.wait_until(lambda: any(warning in line for line in broker.output),
                     what="the cycle's warning")
    # logged when dropped: the one message is in neither queue
    assert [ch.queue_declare(q, passive=True).method.message_count for q in (a, b)] == [0, 0]
    ch.queue_delete(a)
    ch.queue_delete(b)
    assert broker.api("overview")["node"]

