"""Publishes are counted into the statistics lazily: a channel's fast path appends each body
size to its counters' ``pending``, which is folded into the exchange's count and the size
histogram by a snapshot, the channel's close, a publish to another exchange, or once
``FOLD_EVERY`` wait (amqpbroker/stats/counters.py), not after every read (a lone message's
read paid for that: bench/RESULTS.md, "latency_1: a lone message's Python"). What the
snapshot reports is the same either way; these tests hold that, and the bound."""
from __future__ import annotations

from pamqp import commands as C
from pamqp import frame as pframe
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from amqpbroker.stats.counters import CHANNEL_FIELDS, FOLD_EVERY, SIZE_BOUNDS


def publishes(n: int, size: int) -> bytes:
    one = b"".join(pframe.marshal(f, 1) for f in (
        C.Basic.Publish(exchange="", routing_key="counted"), ContentHeader(0, size),
        ContentBody(b"x" * size)))
    return one * n


async def declared(client):
    client.send(1, C.Channel.Open())
    await client.expect(C.Channel.OpenOk)
    client.send(1, C.Queue.Declare(queue="counted"))
    await client.expect(C.Queue.DeclareOk)


def snapshot(client) -> dict:
    broker = client.session.broker
    return broker.stats.snapshot(broker, [client.session])


async def test_publishes_read_one_by_one_are_all_in_the_snapshot(client):
    await declared(client)
    for _ in range(5):                      # five reads of one publish each
        client.session.data_received(publishes(1, 50))
    client.session.data_received(publishes(3, 5000))     # and one read of three
    snap = snapshot(client)
    assert snap["totals"]["publish"] == 8
    assert [(vh, name, n_in) for vh, name, n_in, _ in snap["exchanges"]] == [("/", "", 8)]
    below_100, below_10k = 0, SIZE_BOUNDS.index(10_000)
    assert snap["sizes"][below_100] == 5 and snap["sizes"][below_10k] == 3
    assert snap["size_sum"] == 5 * 50 + 3 * 5000
    again = snapshot(client)                # folded once: nothing counted twice
    assert again["exchanges"] == snap["exchanges"] and again["sizes"] == snap["sizes"]


async def test_a_channels_waiting_publishes_are_bounded_and_counted_once(client):
    await declared(client)
    stats = client.session.channels[1].stats
    node = client.session.broker.stats
    for _ in range(FOLD_EVERY + 10):        # one read each, none folded per read
        client.session.data_received(publishes(1, 16))
    # folded when FOLD_EVERY waited (the channel's fast path), the rest still waiting
    assert len(stats.pending) == 10
    assert sum(node.exchange_in.values()) == FOLD_EVERY
    assert dict(zip(CHANNEL_FIELDS, stats.values()))["publish"] == FOLD_EVERY + 10
    snap = snapshot(client)
    assert [n_in for _, _, n_in, _ in snap["exchanges"]] == [FOLD_EVERY + 10]
    assert snap["sizes"][0] == FOLD_EVERY + 10 and snap["size_sum"] == 16 * (FOLD_EVERY + 10)
    assert stats.pending == []


async def test_a_closed_channel_is_let_go_without_a_snapshot(client):
    """With no snapshot taken (management off), a channel that published and closed is not
    kept in the node's list of channels to fold."""
    await declared(client)
    node = client.session.broker.stats
    stats = client.session.channels[1].stats
    client.session.data_received(publishes(3, 16))
    assert node.dirty == [stats]
    client.send(1, C.Channel.Close(reply_code=200, reply_text="bye", class_id=0,
                                     method_id=0))
    await client.expect(C.Channel.CloseOk)
    assert node.dirty == []
    assert dict(zip(CHANNEL_FIELDS, node.closed_totals))["publish"] == 3
    assert node.sizes[0] == 3 and sum(node.exchange_in.values()) == 3
