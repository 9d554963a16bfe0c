"""When a session's output is written: what a read makes for *other* connections (the
deliveries of its publishes) is written once that read is handled, as the reader's own
replies are, not at the end of the loop turn after every other connection's ready read
(bench/RESULTS.md, "latency_1 on 0be596d"). Two sessions of one in-process broker
(``conftest.py``); the ``Transport`` records what each writes, so "before the loop turns" is
exact."""
from __future__ import annotations

import asyncio

from pamqp import commands as C
from pamqp.body import ContentBody
from pamqp import frame as pframe
from pamqp.header import ContentHeader

from amqpbroker.testing.feeder import frames


async def consuming(client, queue: str, no_ack: bool) -> None:
    client.send(1, C.Channel.Open())
    await client.expect(C.Channel.OpenOk)
    client.send(1, C.Queue.Declare(queue=queue))
    await client.expect(C.Queue.DeclareOk)
    client.send(1, C.Basic.Consume(queue=queue, consumer_tag="c", no_ack=no_ack))
    await client.expect(C.Basic.ConsumeOk)


async def settle() -> None:
    """A few loop turns: what the set-up scheduled (the consumer's first dispatch) is done."""
    for _ in range(5):
        await asyncio.sleep(0)


def written(client) -> list:
    """The frames ``client``'s session has written so far (without turning the loop)."""
    return [f for _, f in frames(bytes(client.transport.out))]


async def test_a_delivery_is_written_in_its_publishs_read(client):
    consumer = client
    await consuming(consumer, "lone", no_ack=False)
    publisher = await client.another()
    publisher.send(1, C.Channel.Open())
    await publisher.expect(C.Channel.OpenOk)
    await settle()

    for i in range(3):
        publisher.publish(1, "lone", b"lone %d" % i)
        # no loop turn since the publisher's read: the delivery is on the consumer's socket
        out = written(consumer)
        consumer.transport.out.clear()
        delivers = [f for f in out if isinstance(f, C.Basic.Deliver)]
        assert [d.delivery_tag for d in delivers] == [i + 1]
        assert [f.value for f in out if isinstance(f, ContentBody)] == [b"lone %d" % i]
        consumer.send(1, C.Basic.Ack(delivery_tag=i + 1))
    publisher.session.connection_lost(None)


async def test_a_burst_read_at_once_is_one_write_per_consumer(client):
    consumer = client
    await consuming(consumer, "burst", no_ack=True)
    publisher = await client.another()
    publisher.send(1, C.Channel.Open())
    await publisher.expect(C.Channel.OpenOk)
    await settle()
    writes = []
    write = consumer.transport.writelines
    consumer.transport.writelines = lambda chunks: (writes.append(1), write(chunks))

    data = b"".join(b"".join(_publish_frames("burst", b"%d" % i)) for i in range(100))
    publisher.session.data_received(data)
    bodies = [f.value for f in written(consumer) if isinstance(f, ContentBody)]
    assert bodies == [b"%d" % i for i in range(100)]
    assert len(writes) == 1                 # the burst's deliveries share one write
    await settle()                          # the loop turns: nothing more is written
    assert len(writes) == 1
    publisher.session.connection_lost(None)


def _publish_frames(queue: str, body: bytes) -> list[bytes]:
    return [pframe.marshal(C.Basic.Publish(exchange="", routing_key=queue), 1),
            pframe.marshal(ContentHeader(0, len(body)), 1),
            pframe.marshal(ContentBody(body), 1)]


async def test_a_delivery_read_from_a_worker_is_written_in_that_batch(client):
    """Split layouts: a worker's deliveries reach the front-end as a batch read from its ring
    (``Broker.handle_events``), not within a session's read. They are written to the
    consumer's socket once that batch is handled, not at the end of the loop turn."""
    consumer = client
    await consuming(consumer, "ringed", no_ack=True)
    publisher = await client.another()
    publisher.send(1, C.Channel.Open())
    await publisher.expect(C.Channel.OpenOk)
    await settle()
    broker = consumer.session.broker
    partition = broker.partitions[0]
    state = partition.link.state
    events = []                             # what the host sends stays "in the ring"
    partition.link.emit = state.emit = events.append
    state._emit_many = events.extend
    publisher.publish(1, "ringed", b"from the worker")
    assert events                           # the delivery, not yet read by the front-end
    assert not [f for f in written(consumer) if isinstance(f, ContentBody)]

    broker.handle_events(partition, events)     # the front-end reads the ring's batch
    # no loop turn since: the delivery is on the consumer's socket
    assert [f.value for f in written(consumer) if isinstance(f, ContentBody)] == \
        [b"from the worker"]
    publisher.session.connection_lost(None)
