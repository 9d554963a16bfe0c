"""Direct deliveries (``frontend/adapters.py``): a session whose verified adapter claim names
an adapter of this process hands a stream's records to it instead of writing
``basic.deliver`` frames; acks come back as from any consumer. A claim naming no adapter
here, or a claim whose token was altered, gets the frames. The middle layer in one process
(``conftest.py``): a ``Session`` fed AMQP bytes, its channels, the partition client, a
``LocalLink`` (plain and through the codec) and the stream on disk."""
from __future__ import annotations

import asyncio

from pamqp import commands as C
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from amqpbroker.frontend import adapters
from amqpbroker.testing.feeder import frames

SECRET = "test-internal-secret"


class Adapter:
    """What the stream protocol's adapter takes: the records handed over, in order."""

    def __init__(self):
        self.got: list = []

    def deliver_stream_run(self, channel_number, tag, offset, records):
        for i, rec in enumerate(records):
            self.got.append((channel_number, tag + i, offset + i, rec.body, rec.timestamp))


async def adapted(client, token: str | None, tamper: bool = False):
    """Another connection to ``client``'s broker, claiming to be a stream protocol client's
    (``token``: the adapter it names)."""
    client.session.broker.users.internal_secret = SECRET
    claim = adapters.claim(SECRET, "stream", ("127.0.0.1", 40000), ("127.0.0.1", 5552),
                           False, {}, token)
    if tamper:
        claim["direct"] = adapters.register_direct(Adapter())
    return await client.another({adapters.PROPERTY: claim})


async def until(done, reader=None, seconds: float = 10.0):
    """Poll ``done()`` while the stream's commit rounds run (their fsync is on a thread:
    loop turns alone do not wait for it), collecting what ``reader`` is sent."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        if reader is not None:          # what the session wrote, kept in ``seen``
            reader.seen += frames(bytes(reader.transport.out))
            reader.transport.out.clear()
        if done():
            return
        assert asyncio.get_running_loop().time() < deadline, "not done in time"
        await asyncio.sleep(0.005)


def kinds(reader, kind) -> list:
    return [f for _, f in reader.seen if isinstance(f, kind)]


async def consume_stream(reader, publisher, name: str, bodies: list) -> None:
    """``bodies`` published to stream ``name``, then ``reader`` consumes it from the first."""
    publisher.send(1, C.Channel.Open())
    await publisher.expect(C.Channel.OpenOk)
    publisher.send(1, C.Queue.Declare(queue=name, durable=True,
                                      arguments={"x-queue-type": "stream"}))
    await publisher.expect(C.Queue.DeclareOk)
    for body in bodies:
        publisher.send(1, C.Basic.Publish(exchange="", routing_key=name),
                       ContentHeader(0, len(body)), ContentBody(body))
    reader.send(1, C.Channel.Open())
    await reader.expect(C.Channel.OpenOk)
    reader.send(1, C.Basic.Qos(prefetch_count=100))
    await reader.expect(C.Basic.QosOk)
    reader.send(1, C.Basic.Consume(queue=name, consumer_tag="stream-1",
                                   arguments={"x-stream-offset": "first"}))
    await reader.expect(C.Basic.ConsumeOk)


async def test_records_are_handed_to_an_adapter_of_this_process(client):
    adapter = Adapter()
    token = adapters.register_direct(adapter)
    reader = await adapted(client, token)
    assert reader.session.direct is adapter
    bodies = [b"m%d" % i for i in range(5)]
    await consume_stream(reader, client, "direct-s", bodies)
    await until(lambda: len(adapter.got) == len(bodies), reader)
    assert [(ch, tag, off, body) for ch, tag, off, body, _ in adapter.got] == [
        (1, i + 1, i, b"m%d" % i) for i in range(5)]
    assert all(stamp > 0 for *_, stamp in adapter.got)
    assert not [f for _, f in reader.seen if isinstance(f, (C.Basic.Deliver, ContentBody))]
    # the session counts them unacked, as written ones: a multiple ack settles them all, a
    # tag it never handed over is refused as RabbitMQ refuses it
    assert len(reader.session.channels[1].unacked) == 5
    reader.send(1, C.Basic.Ack(delivery_tag=5, multiple=True))
    reader.send(1, C.Basic.Ack(delivery_tag=6))
    [close] = await reader.expect(C.Channel.Close)
    assert close.reply_code == 406 and close.reply_text == \
        "PRECONDITION_FAILED - unknown delivery tag 6"
    adapters.unregister_direct(token)
    assert adapters.direct_target(token) is None
    reader.session.connection_lost(None)


async def test_a_token_naming_no_adapter_here_gets_the_frames(client):
    token = adapters.register_direct(Adapter())
    adapters.unregister_direct(token)           # as in another process: names nothing
    reader = await adapted(client, token)
    assert reader.session.direct is None and reader.session.protocol == "stream"
    await consume_stream(reader, client, "framed-s", [b"a", b"b"])
    await until(lambda: len(kinds(reader, ContentBody)) == 2, reader)
    delivers = kinds(reader, C.Basic.Deliver)
    bodies = kinds(reader, ContentBody)
    headers = kinds(reader, ContentHeader)
    assert [d.delivery_tag for d in delivers] == [1, 2]
    assert [b.value for b in bodies] == [b"a", b"b"]
    # the stream protocol's headers, which the adapter reads off the socket
    assert [h.properties.headers["x-stream-offset"] for h in headers] == [0, 1]
    assert all(h.properties.headers["x-stream-timestamp"] > 0 for h in headers)
    reader.session.connection_lost(None)


async def test_a_claim_whose_token_was_changed_is_not_an_adapters(client):
    adapter = Adapter()
    reader = await adapted(client, adapters.register_direct(adapter), tamper=True)
    # the signature covers the token: not verified, so neither adapted nor direct
    assert reader.session.direct is None and reader.session.protocol == "AMQP 0-9-1"
    await consume_stream(reader, client, "tampered-s", [b"x"])
    await until(lambda: kinds(reader, ContentBody), reader)
    [deliver] = kinds(reader, C.Basic.Deliver)
    [header] = kinds(reader, ContentHeader)
    assert deliver.delivery_tag == 1 and adapter.got == []
    assert "x-stream-timestamp" not in header.properties.headers     # an AMQP client's
    reader.session.connection_lost(None)
