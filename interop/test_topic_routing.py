"""Topic routing edge cases, every binding key against every routing key.

The expected routes come from the plain reference matcher (``amqpbroker.testing.topic``);
run against RabbitMQ (``AMQP_URL``) this checks that the reference is RabbitMQ's semantics,
which the property tests then hold the broker's own matcher to. Publishes are confirmed, so
a following basic.get proves presence and absence.
"""
from __future__ import annotations

from amqpbroker.testing.topic import topic_matches

BINDING_KEYS = [
    "", "#", "*", "#.#", "*.*", "#.*", "*.#", "#.*.#", "#.#.*", "*.*.*",
    "a", "a.b", "a.b.c", "a.*", "a.#", "#.a", "*.a", "a.#.b", "a.*.b", "a.#.#.b", "#.b.#",
    "a.*.#", "a.", ".a", ".", "..", "a..b", "a#", "*b", "#.#.#.#.#.#.z", "ä.*",
]
ROUTING_KEYS = [
    "", ".", "..", "a", "b", "z", "a.b", "a.b.c", "c.a.b", "a..b", "a.", ".a", "a.x.y.b",
    "b.a", "a#", "ab", "*b", "a.*", "#", "*", "x.z", "a.b.z", "ä.x", "ä", "a.b.c.d.e.f.g.h",
]


def test_topic_binding_keys_against_routing_keys(conn, uniq, cleanup):
    ch = conn.channel()
    ch.confirm_delivery()
    ex = cleanup.exchange(uniq("topic"))
    ch.exchange_declare(ex, "topic")
    queues = []
    for key in BINDING_KEYS:
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, ex, key)
        queues.append(q)
    for i, key in enumerate(ROUTING_KEYS):
        ch.basic_publish(ex, key, str(i).encode())
    for binding, q in zip(BINDING_KEYS, queues):
        got = []
        while True:
            m, _, body = ch.basic_get(q, auto_ack=True)
            if m is None:
                break
            got.append(ROUTING_KEYS[int(body)])
        want = [k for k in ROUTING_KEYS if topic_matches(binding, k)]
        assert got == want, f"binding key {binding!r}"
