"""At-least-once dead-lettering of quorum queues (``x-dead-letter-strategy: at-least-once``
with ``x-overflow: reject-publish``; worker/discards.py), in both process layouts.

What RabbitMQ 3.10.8 does was measured with the same steps (``dead_letter_worker_publisher_
confirm_timeout`` set to 1000 ms there, as ``--dead-letter-confirm-timeout`` is here): a dead
letter with no route, or refused by a full target, stays in its source queue — not ready,
counted in ``messages`` and ``messages_dlx`` — and goes once it can; a held one counts toward
the source's length limit; with another overflow the strategy falls back to at-most-once
with a warning; switched off, the held ones are deleted. Here they also survive SIGKILL.

The held messages' retries are timed (the confirm timeout): the tests wait for the
deliveries themselves (a consumer), or poll the management API's counts with a deadline.
"""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import wait_until
from interop.conftest import reject_all

CONFIRM_TIMEOUT_MS = 500
QUORUM = {"x-queue-type": "quorum"}
HELD = {**QUORUM, "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("dlx-alo"), *LAYOUTS[request.param],
                       "--dead-letter-confirm-timeout", str(CONFIRM_TIMEOUT_MS),
                       management=True) as b:
        yield b


def publish(ch, queue: str, bodies) -> list[bool]:
    """Publish each body with confirms: True if acked, False if nacked."""
    out = []
    for body in bodies:
        try:
            ch.basic_publish("", queue, body)
            out.append(True)
        except pika.exceptions.NackError:
            out.append(False)
    return out


def counts(broker, queue: str) -> tuple:
    q = broker.api(f"queues/%2F/{queue}")
    return q["messages"], q["messages_ready"], q.get("messages_dlx"), q.get("message_bytes_dlx")


def held(broker, queue: str, n: int, size: int) -> None:
    """Wait until the queue holds ``n`` dead letters of ``size`` bytes and nothing else."""
    wait_until(lambda: counts(broker, queue) == (n, 0, n, size), timeout=10,
               what=f"{queue} to hold {n} dead letters")


def emptied(broker, queue: str) -> None:
    """Wait until the queue holds nothing: no message, no dead letter."""
    wait_until(lambda: counts(broker, queue) == (0, 0, 0, 0), timeout=10,
               what=f"{queue} to be empty")


def consume(ch, queue: str, n: int, timeout: float = 10) -> list:
    """The next ``n`` messages of ``queue`` as (body, headers), acked, as they arrive."""
    out = []
    for method, props, body in ch.consume(queue, inactivity_timeout=timeout):
        assert method is not None, f"{queue}: {len(out)} of {n} messages came"
        ch.basic_ack(method.delivery_tag)
        out.append((body, props.headers or {}))
        if len(out) == n:
            break
    ch.cancel()
    return out


def route(ch, exchange: str, queue: str, arguments=None) -> None:
    ch.exchange_declare(exchange, "fanout")
    ch.queue_declare(queue, durable=True, arguments=arguments)
    ch.queue_bind(queue, exchange)


def test_a_dead_letter_with_no_route_is_held_until_it_has_one(broker, ch):
    ch.queue_declare("alo-src", durable=True,
                     arguments={**HELD, "x-dead-letter-exchange": "alo-dlx"})
    assert publish(ch, "alo-src", [b"m0", b"m1", b"m2"]) == [True] * 3
    reject_all(ch, "alo-src", 3)
    held(broker, "alo-src", 3, 6)
    assert ch.queue_declare("alo-src", passive=True).method.message_count == 0
    assert ch.basic_get("alo-src")[0] is None       # held ones are no consumer's
    route(ch, "alo-dlx", "alo-dlq")
    got = consume(ch, "alo-dlq", 3)
    assert [body for body, _ in got] == [b"m0", b"m1", b"m2"]
    death = got[0][1]["x-death"][0]
    assert (death["reason"], death["queue"], death["count"]) == ("rejected", "alo-src", 1)
    emptied(broker, "alo-src")
    assert "Cannot forward any dead-letter messages from source quorum queue 'alo-src' in " \
           "vhost '/' because its configured dead-letter-exchange exchange 'alo-dlx' in " \
           "vhost '/' does not exist." in "".join(broker.output)


def test_held_dead_letters_count_toward_the_length_limit(broker, ch):
    ch.queue_declare("alo-lim", durable=True,
                     arguments={**HELD, "x-dead-letter-exchange": "alo-lim-dlx",
                                "x-max-length": 2})
    assert publish(ch, "alo-lim", [b"a", b"b"]) == [True, True]
    reject_all(ch, "alo-lim", 2)
    held(broker, "alo-lim", 2, 2)
    assert publish(ch, "alo-lim", [b"c"]) == [False]        # full of dead letters
    route(ch, "alo-lim-dlx", "alo-lim-dlq")
    assert [body for body, _ in consume(ch, "alo-lim-dlq", 2)] == [b"a", b"b"]
    wait_until(lambda: counts(broker, "alo-lim")[2] == 0, timeout=10,
               what="the dead letters to be settled")
    assert publish(ch, "alo-lim", [b"d"]) == [True]


def test_a_full_target_gets_the_rest_once_it_has_room(broker, ch):
    route(ch, "alo-full-dlx", "alo-full-dlq",
          {"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.queue_declare("alo-full", durable=True,
                     arguments={**HELD, "x-dead-letter-exchange": "alo-full-dlx"})
    assert publish(ch, "alo-full", [b"d0", b"d1", b"d2"]) == [True] * 3
    reject_all(ch, "alo-full", 3)
    held(broker, "alo-full", 2, 4)                   # d0 went; the target refused d1, d2
    assert ch.queue_declare("alo-full-dlq", passive=True).method.message_count == 1
    # each one taken makes room for the next, sent again after the confirm timeout
    assert [body for body, _ in consume(ch, "alo-full-dlq", 3)] == [b"d0", b"d1", b"d2"]
    emptied(broker, "alo-full")


def test_expired_and_over_the_delivery_limit_are_held_too(broker, ch):
    ch.queue_declare("alo-why", durable=True,
                     arguments={**HELD, "x-dead-letter-exchange": "alo-why-dlx",
                                "x-message-ttl": 100, "x-delivery-limit": 0})
    assert publish(ch, "alo-why", [b"late"]) == [True]
    held(broker, "alo-why", 1, 4)                    # expired, no route yet
    ch.queue_declare("alo-why-b", durable=True,
                     arguments={**HELD, "x-dead-letter-exchange": "alo-why-dlx",
                                "x-delivery-limit": 0})
    assert publish(ch, "alo-why-b", [b"twice"]) == [True]
    reject_all(ch, "alo-why-b", 1, requeue=True)     # past its limit of 0 returns
    held(broker, "alo-why-b", 1, 5)
    route(ch, "alo-why-dlx", "alo-why-dlq")
    got = {body: h["x-death"][0]["reason"] for body, h in consume(ch, "alo-why-dlq", 2)}
    assert got == {b"late": "expired", b"twice": "delivery_limit"}


def test_held_dead_letters_survive_sigkill(broker, ch):
    ch.queue_declare("alo-kill", durable=True,
                     arguments={**HELD, "x-dead-letter-exchange": "alo-kill-dlx"})
    assert publish(ch, "alo-kill", [b"k0", b"k1"]) == [True, True]
    reject_all(ch, "alo-kill", 2)
    held(broker, "alo-kill", 2, 4)
    # confirmed after the rejects in the same queue: the round that made it durable wrote
    # the rejects' marks too
    assert publish(ch, "alo-kill", [b"k2"]) == [True]
    ch.connection.close()
    broker.kill()
    broker.start()
    wait_until(lambda: counts(broker, "alo-kill") == (3, 1, 2, 4), timeout=10,
               what="the held dead letters to be recovered")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        again = conn.channel()
        route(again, "alo-kill-dlx", "alo-kill-dlq")
        assert [body for body, _ in consume(again, "alo-kill-dlq", 2)] == [b"k0", b"k1"]
        method, _, body = again.basic_get("alo-kill", auto_ack=True)
        assert body == b"k2" and method.redelivered
    finally:
        conn.close()


def test_no_dead_letter_is_lost_to_a_crash_mid_way(broker, ch):
    """2,000 messages rejected at once, the broker SIGKILLed while their dead letters are
    on their way: after the restart, every one is in the target (some may be twice) or
    still in the source, and the source's are rejected again; at the end the target has
    each of them."""
    n = 2000
    ch.exchange_declare("alo-crash-dlx", "fanout", durable=True)     # it outlives the crash
    ch.queue_declare("alo-crash-dlq", durable=True)
    ch.queue_bind("alo-crash-dlq", "alo-crash-dlx")
    ch.queue_declare("alo-crash", durable=True,
                     arguments={**HELD, "x-dead-letter-exchange": "alo-crash-dlx"})
    bodies = [b"c%d" % i for i in range(n)]
    ch.basic_qos(prefetch_count=n)
    for body in bodies:
        ch.basic_publish("", "alo-crash", body, pika.BasicProperties(delivery_mode=2))
    last = None
    for method, _, _ in ch.consume("alo-crash", inactivity_timeout=10):
        assert method is not None
        last = method.delivery_tag
        if last == n:
            break
    ch.basic_nack(last, multiple=True, requeue=False)
    ch.connection.close()           # after the nack: the close does not requeue them
    broker.kill()
    broker.start()
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        again = conn.channel()
        while True:                             # what never died: it dies now
            method, _, _ = again.basic_get("alo-crash")
            if method is None:
                break
            again.basic_reject(method.delivery_tag, requeue=False)
        seen = set()
        for method, _, body in again.consume("alo-crash-dlq", auto_ack=True,
                                             inactivity_timeout=15):
            assert method is not None, f"{n - len(seen)} dead letters never came"
            seen.add(body)
            if len(seen) == n:
                break
        again.cancel()
        assert seen == set(bodies)
        emptied(broker, "alo-crash")
    finally:
        conn.close()


def test_without_reject_publish_dead_letters_go_at_most_once(broker, ch):
    ch.queue_declare("alo-off", durable=True,
                     arguments={**QUORUM, "x-dead-letter-strategy": "at-least-once",
                                "x-dead-letter-exchange": "alo-off-dlx"})
    assert publish(ch, "alo-off", [b"x", b"y"]) == [True, True]
    reject_all(ch, "alo-off", 2)
    emptied(broker, "alo-off")
    assert "Falling back to dead-letter-strategy at-most-once for queue 'alo-off' in vhost " \
           "'/' because configured dead-letter-strategy at-least-once is incompatible with " \
           "effective overflow strategy drop-head." in "".join(broker.output)


def test_switched_off_by_policy_the_held_ones_are_deleted(broker, ch):
    status, _ = broker.request("PUT", "policies/%2F/alo-pol", {
        "pattern": "^alo-pol$", "apply-to": "queues",
        "definition": {"dead-letter-strategy": "at-least-once"}})
    assert status == 201
    try:
        ch.queue_declare("alo-pol", durable=True,
                         arguments={**QUORUM, "x-overflow": "reject-publish",
                                    "x-dead-letter-exchange": "alo-pol-dlx"})
        assert publish(ch, "alo-pol", [b"p0", b"p1"]) == [True, True]
        reject_all(ch, "alo-pol", 2)
        held(broker, "alo-pol", 2, 4)
        status, _ = broker.request("PUT", "policies/%2F/alo-pol", {
            "pattern": "^alo-pol$", "apply-to": "queues",
            "definition": {"dead-letter-strategy": "at-most-once"}})
        assert status == 204
        emptied(broker, "alo-pol")
        assert "Deleted 2 dead-lettered messages (with total messages size of 4 bytes) in " \
               "queue 'alo-pol' in vhost '/'" in "".join(broker.output)
    finally:
        broker.request("DELETE", "policies/%2F/alo-pol")
