"""A quorum queue's dead-letter strategy (``x-dead-letter-strategy``), as RabbitMQ 3.10+ has
it: ``at-least-once`` with ``x-overflow: reject-publish`` holds each dead letter in its
source queue until every target confirmed it; with any other overflow it is at-most-once.

These run against either broker (RabbitMQ's management counts lag up to its 5 s statistics
interval: the counts are polled). The retries after the confirm timeout (RabbitMQ's 180 s
``dead_letter_worker_publisher_confirm_timeout``) are tested against our broker with a
short one: tests/integration/test_dead_letter_at_least_once.py.
"""
from __future__ import annotations

import pika

from .conftest import drain, q, reject_all, wait_until

HELD = {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish"}


def counts(mgmt, queue: str) -> tuple:
    o = mgmt.get(f"/api/queues/%2F/{q(queue)}")
    return (o.get("messages"), o.get("messages_ready"), o.get("messages_dlx"),
            o.get("message_bytes_dlx"))


def test_dead_letters_with_no_route_are_held_in_their_source(ch, mgmt, uniq, cleanup):
    src, dlx = cleanup.queue(uniq("alo")), cleanup.exchange(uniq("alo-dlx"))
    ch.confirm_delivery()           # a quorum queue has a message once it confirmed it
    ch.queue_declare(src, durable=True, arguments={**HELD, "x-dead-letter-exchange": dlx})
    for body in (b"one", b"two", b"three"):
        ch.basic_publish("", src, body)
    reject_all(ch, src, 3)
    # not ready, not unacknowledged, counted: messages and bytes include them
    wait_until(lambda: counts(mgmt, src) == (3, 0, 3, 11), timeout=15,
               message="for the dead letters to be counted as held")
    assert ch.basic_get(src)[0] is None
    assert ch.queue_declare(src, passive=True).method.message_count == 0


def test_a_routable_dead_letter_goes_at_once_and_leaves_nothing_held(ch, mgmt, uniq, cleanup):
    src, dlq = cleanup.queue(uniq("alo")), cleanup.queue(uniq("alo-dlq"))
    dlx = cleanup.exchange(uniq("alo-dlx"))
    ch.confirm_delivery()
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq, durable=True)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(src, durable=True, arguments={**HELD, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", src, b"gone", pika.BasicProperties(headers={"k": "v"}))
    reject_all(ch, src, 1)
    [(_, props, body)] = drain(ch, dlq, 1)
    assert body == b"gone" and props.headers["k"] == "v"
    death = props.headers["x-death"][0]
    assert (death["queue"], death["reason"], death["count"]) == (src, "rejected", 1)
    assert props.headers["x-first-death-reason"] == "rejected"
    wait_until(lambda: counts(mgmt, src) == (0, 0, 0, 0), timeout=15,
               message="for the source to be empty")


def test_without_reject_publish_the_strategy_is_at_most_once(ch, mgmt, uniq, cleanup):
    src, dlx = cleanup.queue(uniq("alo")), uniq("alo-nowhere")
    ch.confirm_delivery()
    ch.queue_declare(src, durable=True,
                     arguments={"x-queue-type": "quorum", "x-dead-letter-exchange": dlx,
                                "x-dead-letter-strategy": "at-least-once"})
    ch.basic_publish("", src, b"lost")
    reject_all(ch, src, 1)
    # no route, nothing held: gone (RabbitMQ logs why it falls back)
    wait_until(lambda: counts(mgmt, src) == (0, 0, 0, 0), timeout=15,
               message="for the rejected message to be gone")
    assert ch.basic_get(src)[0] is None
