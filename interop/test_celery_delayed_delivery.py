"""Celery's native delayed delivery (kombu ``native_delayed_delivery``, celery 5.5+'s ETA and
countdown tasks on quorum queues): 28 levels of topic exchanges and quorum queues with a
TTL of 2^level s, ``x-overflow: reject-publish`` and ``x-dead-letter-strategy:
at-least-once`` (``classic``: classic queues, at most once), each dead-lettering expired
messages into the next level down, the routing key's bits choosing which levels a message
waits in; level 0 ends in
``celery_delayed_delivery``, bound to the task's exchange. It exercises quorum queue TTL,
at-least-once dead-lettering through topic exchanges, exchange-to-exchange bindings and
the routing key kept by dead-lettering, as kombu sets them up — against either broker.

The levels' names are kombu's and so shared by the whole broker: a prefix of this test
keeps them apart from another run's (kombu's ``prefix``)."""
from __future__ import annotations

import time

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange, calculate_routing_key,
    declare_native_delayed_delivery_exchanges_and_queues, level_name)

LEVELS = 28


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_a_countdown_task_arrives_after_its_delay(broker_url, uniq, cleanup, queue_type):
    prefix = uniq("nd")
    tasks = Exchange(uniq("tasks"), type="topic", durable=True)
    queue = Queue(uniq("celery"), exchange=tasks, routing_key="work.#", durable=True,
                  queue_arguments={"x-queue-type": queue_type})
    cleanup.queue(queue.name)
    cleanup.exchange(tasks.name)
    for level in range(LEVELS):
        cleanup.queue(level_name(level, prefix))
        cleanup.exchange(level_name(level, prefix))
    cleanup.exchange(f"{prefix}_celery_delayed_delivery")
    with Connection(broker_url, connect_timeout=5) as conn:
        declare_native_delayed_delivery_exchanges_and_queues(conn, queue_type, prefix)
        with conn.channel() as ch:
            queue.bind(ch).declare()
        bind_queue_to_native_delayed_delivery_exchange(conn, queue, prefix)
        got = []

        def arrived(body, msg) -> None:
            got.append((body, msg, time.monotonic()))
            msg.ack()
        with conn.channel() as ch, Consumer(ch, queues=[queue], accept=["json"],
                                            callbacks=[arrived]):
            producer = Producer(ch, exchange=Exchange(level_name(LEVELS - 1, prefix),
                                                      type="topic"), serializer="json")
            sent = time.monotonic()
            producer.publish({"task": "later"}, routing_key=calculate_routing_key(3, "work.x"),
                             delivery_mode=2, retry=False)
            conn.drain_events(timeout=30)   # the delivery itself (socket.timeout: never)
    [(body, msg, at)] = got
    assert body == {"task": "later"}
    assert 2.9 <= at - sent < 10, at - sent   # 3 s: the 2 s and 1 s levels' TTLs
    assert msg.delivery_info["routing_key"] == calculate_routing_key(3, "work.x")
