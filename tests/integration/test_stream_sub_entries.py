"""Sub-entry batching of the stream protocol (amqpbroker/stream_protocol/sub_entry.py), in
both process layouts: rstream's ``send_sub_entry`` uncompressed and gzipped, what stream and
AMQP consumers read of it, a publisher reference's de-duplication of a whole sub-entry, and
the sub-entries refused with PublishError on a connection that goes on (raw sockets).

Every wait is on a confirm, a callback's future, or a socket read with a timeout.
"""
from __future__ import annotations

import asyncio
import struct
import zlib

import pika
import pytest
from rstream import AMQPMessage, CompressionType, amqp_decoder

from amqpbroker.stream_protocol import frames as f
from amqpbroker.stream_protocol import sub_entry
from amqpbroker.testing import LAYOUTS, BrokerProcess
from tests.integration.test_stream_protocol import (  # noqa: F401 - names: a fixture
    TIMEOUT, body_of, collect, declare_publisher, handshake, names, producer, read_frame,
    read_response, request, s)

pytestmark = pytest.mark.own_layout         # every broker here names its layout


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("subentry"), *LAYOUTS[request.param],
                       "--stream-port", "-1", management=True) as b:
        yield b


def publish(pid: int, entries: list[tuple[int, bytes]]) -> bytes:
    """A Publish (version 1) of (publishing id, entry bytes): a simple entry is its size and
    bytes, a sub-entry ``sub_entry.encode``'s."""
    return f.frame(f.PUBLISH, struct.pack(">Bi", pid, len(entries))
                   + b"".join(struct.pack(">Q", i) + e for i, e in entries))


def simple(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


async def answers(reader, count: int) -> tuple[list, list]:
    """The publishing ids confirmed and (id, code) refused, until ``count`` ids are answered."""
    confirmed: list = []
    refused: list = []
    while len(confirmed) + len(refused) < count:
        key, body = await read_frame(reader)
        n = struct.unpack_from(">i", body, 1)[0]
        if key == f.PUBLISH_CONFIRM:
            confirmed += struct.unpack_from(f">{n}Q", body, 5)
        elif key == f.PUBLISH_ERROR:
            refused += [struct.unpack_from(">QH", body, 5 + 10 * k) for k in range(n)]
        else:
            assert key == f.HEARTBEAT, f"not an answer to a publish: {key}"
    return confirmed, refused


async def test_rstream_sub_entries_are_stored_as_their_messages(broker, names):
    stream = names()
    confirms: list = []
    loop = asyncio.get_running_loop()
    all_confirmed = loop.create_future()

    def on_confirm(status) -> None:
        confirms.append(status)
        if len(confirms) == 3 and not all_confirmed.done():
            all_confirmed.set_result(None)
    async with producer(broker) as p:
        await p.create_stream(stream)
        await p.send_wait(stream, b"before")
        await p.send_sub_entry(stream, [b"plain-%d" % i for i in range(5)],
                               compression_type=CompressionType.No,
                               on_publish_confirm=on_confirm)
        await p.send_sub_entry(stream, [b"gz-%d" % i for i in range(300)]
                               + [AMQPMessage(body=b"an amqp 1.0 message")],
                               compression_type=CompressionType.Gzip,
                               on_publish_confirm=on_confirm)
        await p.send_sub_entry(stream, [b"one"], compression_type=CompressionType.Gzip,
                               on_publish_confirm=on_confirm)
        await asyncio.wait_for(all_confirmed, TIMEOUT)
        await p.send_wait(stream, b"after")
    # one confirm per sub-entry, each a success
    assert len(confirms) == 3 and all(c.is_confirmed for c in confirms)
    got = await collect(broker, stream, 309)
    assert [o for o, _ in got] == list(range(309))      # an offset per message
    messages = [m for _, m in got]
    assert messages[:6] == [b"before"] + [b"plain-%d" % i for i in range(5)]
    assert messages[6:306] == [b"gz-%d" % i for i in range(300)]
    assert messages[307:] == [b"one", b"after"]
    # an AMQP 1.0 message in a sub-entry is one as any other: AMQP 0-9-1 reads its body
    conn = pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.port))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    for method, _props, body in ch.consume(stream, arguments={"x-stream-offset": 306},
                                           inactivity_timeout=TIMEOUT):
        assert method is not None, "the sub-entry's AMQP 1.0 message did not arrive over AMQP"
        assert body == b"an amqp 1.0 message"
        break
    ch.cancel()
    conn.close()
    # ... and a stream consumer gets it back as an AMQP 1.0 message
    assert body_of(amqp_decoder(messages[306])) == b"an amqp 1.0 message"


async def test_a_sub_entry_is_deduplicated_whole_by_its_publishing_id(broker, names):
    stream, name = names(), names("pub")
    async with producer(broker) as p:
        await p.create_stream(stream)
    reader, writer = await asyncio.open_connection(broker.host, broker.stream_port)
    try:
        await handshake(reader, writer)
        assert await declare_publisher(reader, writer, 3, name, stream) == f.OK
        first = sub_entry.encode([b"a", b"b", b"c"], sub_entry.GZIP)
        writer.write(publish(3, [(1, simple(b"zero")), (2, first)]))
        assert await answers(reader, 2) == ([1, 2], [])
        # the same again, then the next: the sub-entry is confirmed and not stored again
        writer.write(publish(3, [(2, first),
                                 (3, sub_entry.encode([b"d", b"e"], sub_entry.NONE))]))
        assert sorted((await answers(reader, 2))[0]) == [2, 3]
        writer.write(request(f.QUERY_PUBLISHER_SEQUENCE, 6, s(name) + s(stream)))
        _key, _corr, code, rest = await read_response(reader)
        assert code == f.OK and struct.unpack(">Q", rest)[0] == 3
        writer.write(publish(3, [(4, simple(b"last"))]))
        assert await answers(reader, 1) == ([4], [])
    finally:
        writer.close()
    got = await collect(broker, stream, 7)
    assert [m for _, m in got] == [b"zero", b"a", b"b", b"c", b"d", b"e", b"last"]


def zstd_entry() -> bytes:
    """A sub-entry saying zstd (type 4): its data need not be zstd to be refused."""
    data = simple(b"x")
    return struct.pack(">BHII", 0x80 | 4 << 4, 1, len(data), len(data)) + data


def gzip_entry_lying_about_size() -> bytes:
    raw = simple(b"y" * 100)
    data = zlib.compress(raw, wbits=16 + zlib.MAX_WBITS)
    return struct.pack(">BHII", 0x80 | 1 << 4, 1, len(raw) - 10, len(data)) + data


def not_gzip_entry() -> bytes:
    return struct.pack(">BHII", 0x80 | 1 << 4, 1, 5, 7) + b"garbage"


def huge_entry() -> bytes:
    """A gzip bomb in the making: a small frame that says it holds 1 GiB."""
    data = zlib.compress(b"\0" * 1000, wbits=16 + zlib.MAX_WBITS)
    return struct.pack(">BHII", 0x80 | 1 << 4, 1, 1 << 30, len(data)) + data


def too_few_messages_entry() -> bytes:
    raw = simple(b"only one")
    return struct.pack(">BHII", 0x80, 2, len(raw), len(raw)) + raw


@pytest.mark.parametrize("entry", [zstd_entry, gzip_entry_lying_about_size, not_gzip_entry,
                                   huge_entry, too_few_messages_entry])
async def test_sub_entries_that_cannot_be_stored_are_refused_and_the_connection_goes_on(
        broker, names, entry):
    stream = names()
    async with producer(broker) as p:
        await p.create_stream(stream)
    reader, writer = await asyncio.open_connection(broker.host, broker.stream_port)
    try:
        await handshake(reader, writer)
        assert await declare_publisher(reader, writer, 0, "", stream) == f.OK
        writer.write(publish(0, [(1, simple(b"first")), (2, entry()),
                                 (3, sub_entry.encode([b"third"]))]))
        confirmed, refused = await answers(reader, 3)
        assert sorted(confirmed) == [1, 3]
        assert refused == [(2, f.PRECONDITION_FAILED)]
        # the publisher's counts: three published, two confirmed, one errored
        (pub,) = [x for x in broker.api("stream/publishers")
                  if x["queue"]["name"] == stream]
        assert (pub["published"], pub["confirmed"], pub["errored"]) == (3, 2, 1)
    finally:
        writer.close()
    got = await collect(broker, stream, 2)
    assert [m for _, m in got] == [b"first", b"third"]
