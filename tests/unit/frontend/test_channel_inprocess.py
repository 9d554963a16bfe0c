"""The middle layer in one process, without sockets: a ``Session`` fed AMQP bytes, its
channels, the partition client, a ``LocalLink`` (plain, and through the codec) and the
partition host with its queue on disk (the ``client`` fixture: ``conftest.py``). What goes
out is decoded by pamqp, the generic codec.
"""
from __future__ import annotations

from pamqp import commands as C
from pamqp.body import ContentBody
from pamqp.header import ContentHeader


async def test_declare_publish_confirm_consume_ack(client):
    client.send(1, C.Channel.Open())
    await client.expect(C.Channel.OpenOk)
    client.send(1, C.Confirm.Select(), C.Queue.Declare(queue="jobs", durable=True))
    await client.expect(C.Confirm.SelectOk)
    [ok] = await client.expect(C.Queue.DeclareOk)
    assert (ok.queue, ok.message_count, ok.consumer_count) == ("jobs", 0, 0)

    for i in range(3):
        client.publish(1, "jobs", b"job %d" % i)
    acks = []
    while not acks or acks[-1].delivery_tag < 3:
        acks += await client.expect(C.Basic.Ack)
    covered = set()
    for a in acks:                        # every publish confirmed, none twice
        new = set(range(max(covered, default=0) + 1, a.delivery_tag + 1)) if a.multiple \
            else {a.delivery_tag}
        assert not new & covered
        covered |= new
    assert covered == {1, 2, 3}

    client.send(1, C.Basic.Qos(prefetch_count=10), C.Basic.Consume(queue="jobs",
                                                                   consumer_tag="c1"))
    await client.expect(C.Basic.ConsumeOk)
    delivers = await client.expect(C.Basic.Deliver, 3)
    bodies = [f.value for _, f in client.seen if isinstance(f, ContentBody)]
    assert [d.delivery_tag for d in delivers] == [1, 2, 3]
    assert bodies == [b"job 0", b"job 1", b"job 2"]

    client.send(1, C.Basic.Ack(delivery_tag=3, multiple=True),
                C.Queue.Declare(queue="jobs", passive=True))
    [ok] = await client.expect(C.Queue.DeclareOk)
    assert (ok.message_count, ok.consumer_count) == (0, 1)


async def test_a_channel_error_closes_only_that_channel(client):
    client.send(1, C.Channel.Open())
    client.send(2, C.Channel.Open())
    client.send(1, C.Queue.Declare(queue="missing", passive=True))
    [close] = await client.expect(C.Channel.Close)
    assert close.reply_code == 404
    assert "no queue 'missing' in vhost '/'" in close.reply_text
    client.send(2, C.Queue.Declare(queue="other"))
    [ok] = await client.expect(C.Queue.DeclareOk)
    assert ok.queue == "other"


def publish_frames(routing_key: str, bodies) -> list:
    out = []
    for body in bodies:
        out += [C.Basic.Publish(exchange="", routing_key=routing_key),
                ContentHeader(0, len(body)), ContentBody(body)]
    return out


async def test_publishes_read_in_one_go_are_confirmed_by_one_multiple_ack(client):
    """The partition host gets the publishes of one read as one batch (``LocalLink.hold``):
    one watermark for all of them, so the channel confirms them with one multiple ack."""
    client.send(1, C.Channel.Open(), C.Confirm.Select(), C.Queue.Declare(queue="burst"))
    await client.expect(C.Queue.DeclareOk)
    client.send(1, *publish_frames("burst", [b"m%d" % i for i in range(200)]))
    acks = await client.expect(C.Basic.Ack)
    assert [(a.delivery_tag, a.multiple) for a in acks] == [(200, True)]


async def test_a_command_after_held_publishes_sees_them(client):
    """Anything but a publish hands the held publishes to the host first: a basic.get and a
    passive declare in the same read as three publishes see all three, in order."""
    client.send(1, C.Channel.Open(), C.Queue.Declare(queue="order"))
    await client.expect(C.Queue.DeclareOk)
    client.send(1, *publish_frames("order", [b"a", b"b", b"c"]), C.Basic.Get(queue="order"),
                C.Queue.Declare(queue="order", passive=True))
    [got] = await client.expect(C.Basic.GetOk)
    [ok] = await client.expect(C.Queue.DeclareOk)
    assert got.message_count == 2
    assert [f.value for _, f in client.seen if isinstance(f, ContentBody)] == [b"a"]
    assert ok.message_count == 2


async def test_more_publishes_than_a_batch_holds_are_all_stored(client):
    """Past ``HOLD_MAX`` held publishes the host gets them without waiting for the read's
    end; none is lost or reordered, and the confirms cover every one exactly once."""
    client.send(1, C.Channel.Open(), C.Confirm.Select(), C.Queue.Declare(queue="many"))
    await client.expect(C.Queue.DeclareOk)
    n = 700
    client.send(1, *publish_frames("many", [b"%d" % i for i in range(n)]))
    acks = []
    while not acks or acks[-1].delivery_tag < n:
        acks += await client.expect(C.Basic.Ack)
    covered: list = []
    for a in acks:                        # in order, each publish once
        covered += range(covered[-1] + 1 if covered else 1, a.delivery_tag + 1) \
            if a.multiple else [a.delivery_tag]
    assert covered == list(range(1, n + 1))
    assert 1 < len(acks) < 10             # a few batches, not one ack per publish
    client.send(1, C.Basic.Qos(prefetch_count=n), C.Basic.Consume(queue="many", no_ack=True))
    await client.expect(C.Basic.Deliver, n)
    assert [f.value for _, f in client.seen if isinstance(f, ContentBody)] == \
        [b"%d" % i for i in range(n)]
