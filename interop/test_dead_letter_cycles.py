"""Dead-letter cycles and chains, as RabbitMQ runs them.

A message that dies in a ring of queues by TTL alone (A -> B -> A, or a queue into itself) is
dropped when it would enter, for the second time, a queue where it died with no rejection
since (RabbitMQ's ``rabbit_dead_letter`` cycle check); it must not turn forever. A chain of
queues that dead-letter at once (TTL 0) delivers at its end, however long.

Every queue of a ring dead-letters through a fanout exchange that also feeds a tap queue, so
each death leaves a copy in a tap. The dropped message has then left exactly one copy in
every tap. A probe published afterwards takes the same way: had the first message kept
turning, it would be ahead of the probe in every queue of the ring (FIFO) and so in every tap.
"""
from __future__ import annotations

import pika
import pytest

from .conftest import drain


def ready(ch, q) -> int:
    return ch.queue_declare(q, passive=True).method.message_count


def build_ring(ch, uniq, cleanup, size: int, ttl: int, dl_routing_key: str | None):
    """``size`` queues, each dead-lettering into the next (the last into the first) through an
    exchange that also feeds a tap queue: a fanout, or with ``dl_routing_key`` a direct
    exchange the queues dead-letter to with that key."""
    queues = [cleanup.queue(uniq(f"ring{i}")) for i in range(size)]
    taps = [cleanup.queue(uniq(f"tap{i}")) for i in range(size)]
    exchanges = [cleanup.exchange(uniq(f"dlx{i}")) for i in range(size)]
    for x in exchanges:
        ch.exchange_declare(x, "fanout" if dl_routing_key is None else "direct")
    for i, q in enumerate(queues):
        arguments = {"x-message-ttl": ttl, "x-dead-letter-exchange": exchanges[i]}
        if dl_routing_key is not None:
            arguments["x-dead-letter-routing-key"] = dl_routing_key
        ch.queue_declare(q, arguments=arguments)
        ch.queue_declare(taps[i])
    for i, x in enumerate(exchanges):
        ch.queue_bind(taps[i], x, dl_routing_key or "")
        ch.queue_bind(queues[(i + 1) % size], x, dl_routing_key or "")
    return queues, taps


def assert_other_clients_served(connect, uniq, cleanup):
    c = connect()
    ch = c.channel()
    ch.confirm_delivery()
    q = cleanup.queue(ch.queue_declare(uniq("side")).method.queue)
    ch.basic_publish("", q, b"side")
    ((_, _, body),) = drain(ch, q, 1)
    assert body == b"side"
    c.close()


@pytest.mark.parametrize("dl_routing_key", [None, "k"])
@pytest.mark.parametrize("ttl", [10, 0])
@pytest.mark.parametrize("size", [2, 1])
def test_ttl_cycle_drops_the_message(conn, connect, uniq, cleanup, size, ttl, dl_routing_key):
    ch = conn.channel()
    ch.confirm_delivery()
    queues, taps = build_ring(ch, uniq, cleanup, size, ttl, dl_routing_key)
    ch.basic_publish("", queues[0], b"m")
    # it dies once in every queue of the ring, then would enter the first again: dropped
    for i, tap in enumerate(taps):
        ((_, props, body),) = drain(ch, tap, 1)
        assert body == b"m"
        deaths = props.headers["x-death"]
        assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == \
            [(q, "expired", 1) for q in reversed(queues[:i + 1])]
    assert_other_clients_served(connect, uniq, cleanup)
    ch.basic_publish("", queues[0], b"probe")
    for tap in taps:
        ((_, _, body),) = drain(ch, tap, 1)
        assert body == b"probe", "the first message went round the ring again"
    assert [ready(ch, q) for q in queues + taps] == [0] * (2 * size)
    assert_other_clients_served(connect, uniq, cleanup)


def test_dead_letter_chain_of_ttl_zero_queues_delivers_at_its_end(conn, uniq, cleanup):
    """200 queues, each dead-lettering what it gets at once into the next: one message goes
    the whole way (no recursion that grows with the chain)."""
    ch = conn.channel()
    ch.confirm_delivery()
    chain = [cleanup.queue(uniq(f"chain{i}")) for i in range(200)]
    ch.queue_declare(chain[-1])
    for q, nxt in zip(chain, chain[1:]):
        ch.queue_declare(q, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                       "x-dead-letter-routing-key": nxt})
    ch.basic_publish("", chain[0], b"down the chain")
    ((_, props, body),) = drain(ch, chain[-1], 1)
    assert body == b"down the chain"
    # (RabbitMQ 3.10 does not keep more than two x-death entries in order: compare as sets)
    assert sorted((d["queue"], d["reason"], d["count"]) for d in props.headers["x-death"]) \
        == sorted((q, "expired", 1) for q in chain[:-1])
    assert [ready(ch, q) for q in chain] == [0] * len(chain)


def test_max_length_self_cycle_drops_the_head(conn, uniq, cleanup):
    """A full queue (drop-head) dead-letters its head into itself: the head is dropped there,
    not put back to push the next one out, and so on forever."""
    ch = conn.channel()
    ch.confirm_delivery()
    x = cleanup.exchange(uniq("dlx"))
    ch.exchange_declare(x, "fanout")
    q = cleanup.queue(ch.queue_declare(uniq("full"), arguments={
        "x-max-length": 1, "x-dead-letter-exchange": x}).method.queue)
    tap = cleanup.queue(ch.queue_declare(uniq("tap")).method.queue)
    ch.queue_bind(q, x)
    ch.queue_bind(tap, x)
    ch.basic_publish("", q, b"1")
    for body in (b"2", b"3"):
        ch.basic_publish("", q, body)
        ((_, props, dropped),) = drain(ch, tap, 1)
        assert dropped == str(int(body) - 1).encode()
        assert [(d["queue"], d["reason"]) for d in props.headers["x-death"]] == [(q, "maxlen")]
    assert ready(ch, tap) == 0
    ((_, _, body),) = drain(ch, q, 1)
    assert body == b"3" and ready(ch, q) == 0


@pytest.mark.parametrize("route", ["headers exchange", "direct exchange bound to a headers one"])
def test_dead_letters_route_by_their_headers(conn, uniq, cleanup, route):
    """A dead letter's own headers (and those dead-lettering added) route it through a
    headers exchange, whether it is the dead-letter exchange or one bound to it."""
    ch = conn.channel()
    ch.confirm_delivery()
    match = cleanup.exchange(uniq("match"))
    ch.exchange_declare(match, "headers")
    dlx = match
    if route != "headers exchange":
        dlx = cleanup.exchange(uniq("dlx"))
        ch.exchange_declare(dlx, "direct")
        ch.exchange_bind(match, dlx, "rk")
    red = cleanup.queue(ch.queue_declare(uniq("red")).method.queue)
    expired = cleanup.queue(ch.queue_declare(uniq("expired")).method.queue)
    ch.queue_bind(red, match, arguments={"x-match": "all", "colour": "red"})
    ch.queue_bind(expired, match, arguments={"x-match": "all",
                                             "x-first-death-reason": "expired"})
    source = cleanup.queue(ch.queue_declare(uniq("src"), arguments={
        "x-message-ttl": 0, "x-dead-letter-exchange": dlx,
        "x-dead-letter-routing-key": "rk"}).method.queue)
    ch.basic_publish("", source, b"r", pika.BasicProperties(headers={"colour": "red"}))
    ch.basic_publish("", source, b"b", pika.BasicProperties(headers={"colour": "blue"}))
    assert [b for _, _, b in drain(ch, red, 1)] == [b"r"]
    assert sorted(b for _, _, b in drain(ch, expired, 2)) == [b"b", b"r"]
    assert (ready(ch, red), ready(ch, expired)) == (0, 0)
