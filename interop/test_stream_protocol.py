"""The stream protocol as RabbitMQ's rabbitmq_stream plugin serves it (port 5552), driven by the
rstream client: the same steps pass against RabbitMQ 3.10.8 with the plugins
``rabbitmq_stream`` and ``rabbitmq_stream_management`` enabled (``AMQP_STREAM_PORT``, with
``stream.advertised_host``/``stream.advertised_port`` set to the address the tests connect
to) and against ours.

What is compared: publishing with confirms and consuming with consecutive offsets, every offset
specification (first, next, last, offset, timestamp), server-side offset tracking (store and
query, NO_OFFSET when nothing was stored), publisher deduplication by reference and publishing
id, sub-entry batching (uncompressed and gzip), stream creation and deletion and the response codes of what fails (exists, missing,
different arguments, queues that are not streams, missing permissions), the metadata answer,
the AMQP 0-9-1 <-> AMQP 1.0 conversion both ways as far as RabbitMQ 3.10.8 maps the fields,
opaque (non-AMQP) payloads, credit flow over 2,000 messages, bad credentials and virtual hosts,
and what the management API shows of a stream connection (``/api/connections`` and the
``/api/stream/...`` endpoints). The RabbitMQ quirks left out on purpose: invalid argument
values (``max-age=banana``) crash RabbitMQ 3.10.8's stream connection, and an AMQP 0-9-1
consumer of a message with an AMQP 1.0 header section, raw bytes or an empty body gets 541.
"""
from __future__ import annotations

import asyncio
import time
import urllib.parse

import pika
import pytest
from rstream import (AMQPMessage, CompressionType, ConsumerOffsetSpecification, Consumer,
                     OffsetType, Producer, Properties, RawMessage, amqp_decoder, exceptions,
                     schema)
from rstream.compression import CompressionHelper
from rstream.client import Client

from .conftest import await_until, q

TIMEOUT = 10.0

# Response codes of the stream protocol.
OK = 1
STREAM_DOES_NOT_EXIST = 2
SUBSCRIPTION_ID_ALREADY_EXISTS = 3
SUBSCRIPTION_ID_DOES_NOT_EXIST = 4
STREAM_ALREADY_EXISTS = 5
ACCESS_REFUSED = 16
PRECONDITION_FAILED = 17
PUBLISHER_DOES_NOT_EXIST = 18
NO_OFFSET = 19


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def skw(stream_address, broker_url):
    """Keyword arguments for rstream's Producer and Consumer: the stream listener and the
    credentials and virtual host of the AMQP URL."""
    u = urllib.parse.urlparse(broker_url)
    vhost = urllib.parse.unquote(u.path[1:]) if len(u.path) > 1 else "/"
    return dict(host=stream_address[0], port=stream_address[1],
                username=urllib.parse.unquote(u.username or "guest"),
                password=urllib.parse.unquote(u.password or "guest"), vhost=vhost)


@pytest.fixture
async def streams(skw, uniq):
    """Names of streams (``streams()``), deleted at teardown whoever created them."""
    made: list[str] = []

    def make(prefix: str = "stream") -> str:
        name = uniq(prefix)
        made.append(name)
        return name

    yield make
    if made:
        async with Producer(**skw) as p:
            for name in made:
                await p.delete_stream(name, missing_ok=True)


@pytest.fixture
async def stream(streams, skw):
    """A new stream, created over the stream protocol; returns its name."""
    name = streams()
    async with Producer(**skw) as p:
        await p.create_stream(name)
    return name


@pytest.fixture
async def producer(skw):
    async with Producer(**skw) as p:
        yield p


@pytest.fixture
async def low(skw):
    """Open low-level rstream clients (one connection each), to see response codes that the
    Producer and Consumer turn into exceptions or hide."""
    opened: list[Client] = []

    async def make(username=None, password=None, vhost=None, name="interop-low") -> Client:
        c = Client(skw["host"], skw["port"], frame_max=1048576, heartbeat=60,
                   connection_name=name)
        opened.append(c)
        await c.start()
        await c.authenticate(vhost=vhost or skw["vhost"], username=username or skw["username"],
                             password=password or skw["password"])
        return c

    yield make
    for c in opened:
        await c.close()


async def call(client: Client, frame_cls, resp_cls, **fields):
    """One request with a fresh correlation id; the response frame, whatever its code."""
    frame = frame_cls(client._corr_id_seq.next(), **fields)
    return await client.sync_request(frame, resp_cls, raise_exception=False)


async def consume(skw, stream: str, n: int, spec=None, decoder=None, after_subscribe=None,
                  **kw) -> list[tuple[object, int]]:
    """Subscribe, run ``after_subscribe()`` (if any), wait for ``n`` messages; returns
    ``[(message, offset)]``."""
    got: list[tuple[object, int]] = []
    enough = asyncio.Event()

    async def on_message(msg, ctx):
        got.append((msg, ctx.offset))
        if len(got) >= n:
            enough.set()

    async with Consumer(**skw) as c:
        await c.subscribe(stream, on_message, offset_specification=spec, decoder=decoder, **kw)
        if after_subscribe is not None:
            await after_subscribe()
        await asyncio.wait_for(enough.wait(), TIMEOUT)
    return got


def spec(kind: OffsetType, value=None) -> ConsumerOffsetSpecification:
    return ConsumerOffsetSpecification(kind, value)


def props(**kw) -> Properties:
    """AMQP 1.0 properties with only ``kw`` set."""
    fields = dict.fromkeys(Properties._fields)
    fields.update(kw)
    return Properties(**fields)


# ---------------------------------------------------------------------------------------------
# Publishing and consuming
# ---------------------------------------------------------------------------------------------

async def test_publish_with_confirms_and_consume_from_first(skw, producer, stream):
    ids = [await producer.send_wait(stream, f"m{i}".encode()) for i in range(10)]
    assert ids == list(range(1, 11))
    got = await consume(skw, stream, 10, spec(OffsetType.FIRST))
    assert got == [(f"m{i}".encode(), i) for i in range(10)]


async def test_opaque_bytes_round_trip_without_decoder(skw, producer, stream):
    # Not an AMQP 1.0 message at all: stored and delivered as the very same bytes.
    payloads = [bytes(range(256)), b"\x00", b"\xff" * 3000, b"\x00Su\xa0"]
    for p in payloads:
        await producer.send_wait(stream, p)
    got = await consume(skw, stream, len(payloads))
    assert got == [(p, i) for i, p in enumerate(payloads)]


async def test_an_amqp_1_0_message_comes_back_to_a_stream_consumer_as_it_was_sent(
        skw, producer, stream):
    """The broker stores what a stream publisher sends as it is: every section comes back
    byte for byte (rstream's own test_amqp_message), however the 0-9-1 view maps it --
    annotations, properties and application properties around one data section, an
    amqp-value string, and a body of two data sections."""
    two_sections = bytes(AMQPMessage(properties=Properties(message_id="two"), body=b"one")) \
        + b"\x00\x53\x75\xa0\x03two"
    sent = [
        bytes(AMQPMessage(properties=Properties(subject=b"test-subject"),
                          message_annotations={b"test": 42}, body=b"test-body")),
        bytes(AMQPMessage(properties=Properties(message_id="mid", content_type="text/plain"),
                          application_properties={"k": "v", "n": 7}, body=b"")),
        b"\x00\x53\x77\xa1\x05value",            # an amqp-value holding "value"
        two_sections,
    ]
    for data in sent:
        await producer.send_wait(stream, RawMessage(data))
    got = await consume(skw, stream, len(sent), spec(OffsetType.FIRST))
    assert got == [(data, i) for i, data in enumerate(sent)]
    decoded = await consume(skw, stream, 1, spec(OffsetType.FIRST), decoder=amqp_decoder)
    message = decoded[0][0]
    assert (message.properties.subject, message.message_annotations) == (
        b"test-subject", {b"test": 42})


async def test_a_publish_frame_larger_than_frame_max_is_taken(skw, producer, stream, low):
    """RabbitMQ refuses no frame for its size past the tuned frame_max, and rstream's
    Producer.send puts all it was given in a few milliseconds into one Publish frame: 100,000
    small messages are 1.5 MB, past the 1 MiB frame_max. The confirms and the deliveries
    (chunks, within the frame_max) all come."""
    client = await low()
    confirmed: list[int] = []
    done = asyncio.Event()

    def on_confirm(frame) -> None:
        confirmed.extend(frame.publishing_ids)
        if len(confirmed) == 100_000:
            done.set()
    client.add_handler(schema.PublishConfirm, on_confirm, name="big-frame")
    await client.declare_publisher(stream, None, 1)
    await client.publish([schema.Message(publishing_id=i, filter_value=None, data=b"one")
                          for i in range(100_000)], 1)
    await asyncio.wait_for(done.wait(), 60)
    assert sorted(confirmed) == list(range(100_000))
    got = await consume(skw, stream, 100_000, spec(OffsetType.FIRST))
    assert [offset for _, offset in got] == list(range(100_000))
    assert {message for message, _ in got} == {b"one"}


async def test_credit_flow_delivers_2000_messages(skw, producer, stream):
    confirmed: list[tuple[int, bool]] = []
    all_confirmed = asyncio.Event()

    def on_confirm(status):
        confirmed.append((status.message_id, status.is_confirmed))
        if len(confirmed) == 2000:
            all_confirmed.set()

    for i in range(2000):
        await producer.send(stream, i.to_bytes(4, "big"), on_publish_confirm=on_confirm)
    await asyncio.wait_for(all_confirmed.wait(), 30)
    assert sorted(confirmed) == [(i, True) for i in range(1, 2001)]
    # rstream subscribes with 10 credits and grants one more per chunk delivered
    got = await consume(skw, stream, 2000, spec(OffsetType.FIRST), initial_credit=10)
    assert got == [(i.to_bytes(4, "big"), i) for i in range(2000)]


async def test_publish_to_missing_stream_refused(producer, streams):
    with pytest.raises(exceptions.StreamDoesNotExist):
        await producer.send_wait(streams(), b"nowhere")


# ---------------------------------------------------------------------------------------------
# Offset specifications
# ---------------------------------------------------------------------------------------------

@pytest.fixture
async def twelve(producer, stream):
    """a0..a4 and b0..b2 one confirmed publish at a time (one chunk each), then c0..c3 in one
    publish frame (one chunk: offsets 8..11). Returns the stream name."""
    for i in range(5):
        await producer.send_wait(stream, f"a{i}".encode())
    for i in range(3):
        await producer.send_wait(stream, f"b{i}".encode())
    confirmed = asyncio.Event()
    await producer.send_batch(stream, [f"c{i}".encode() for i in range(4)],
                              on_publish_confirm=lambda s: s.message_id == 12 and confirmed.set())
    await asyncio.wait_for(confirmed.wait(), TIMEOUT)
    return stream


TWELVE = [b"a0", b"a1", b"a2", b"a3", b"a4", b"b0", b"b1", b"b2", b"c0", b"c1", b"c2", b"c3"]


async def test_offset_first(skw, twelve):
    got = await consume(skw, twelve, 12, spec(OffsetType.FIRST))
    assert got == list(zip(TWELVE, range(12)))


async def test_offset_last_starts_at_the_last_chunk(skw, producer, twelve):
    # The last chunk holds the four messages of the last publish frame: all four come.
    got = await consume(skw, twelve, 4, spec(OffsetType.LAST))
    assert got == [(b"c0", 8), (b"c1", 9), (b"c2", 10), (b"c3", 11)]
    await producer.send_wait(twelve, b"d0")
    # now the last chunk is a single message
    got = await consume(skw, twelve, 1, spec(OffsetType.LAST))
    assert got == [(b"d0", 12)]


async def test_offset_last_on_empty_stream_gets_what_comes(skw, producer, stream):
    async def publish():
        await producer.send_wait(stream, b"first")

    got = await consume(skw, stream, 1, spec(OffsetType.LAST), after_subscribe=publish)
    assert got == [(b"first", 0)]


async def test_offset_next_only_new_messages(skw, producer, twelve):
    async def publish():
        await producer.send_wait(twelve, b"n0")
        await producer.send_wait(twelve, b"n1")

    got = await consume(skw, twelve, 2, spec(OffsetType.NEXT), after_subscribe=publish)
    assert got == [(b"n0", 12), (b"n1", 13)]


async def test_offset_absolute(skw, twelve):
    got = await consume(skw, twelve, 9, spec(OffsetType.OFFSET, 3))
    assert got == list(zip(TWELVE[3:], range(3, 12)))
    # inside the chunk 8..11: delivered from offset 9 on (the client skips 8)
    got = await consume(skw, twelve, 3, spec(OffsetType.OFFSET, 9))
    assert got == [(b"c1", 9), (b"c2", 10), (b"c3", 11)]


async def test_offset_beyond_the_end_attaches_at_the_end(low, producer, twelve):
    # Seen on the wire (rstream's Consumer would drop offsets below the one asked for): the
    # subscription is accepted and the next chunk written is delivered with its real offset.
    c = await low()
    chunks: asyncio.Queue = asyncio.Queue()
    c.add_handler(schema.Deliver, lambda frame: None, name="1")
    await c.run_queue_listener_task(subscriber_id=1, handler=chunks.put)
    await c.subscribe(twelve, 1, schema.OffsetSpec.from_params(OffsetType.OFFSET, 100),
                      initial_credit=10)
    await producer.send_wait(twelve, b"late")
    frame = await asyncio.wait_for(chunks.get(), TIMEOUT)
    assert (frame.chunk_first_offset, frame.num_entries, frame.get_messages()) == (12, 1, [b"late"])
    assert chunks.empty()


async def test_offset_timestamp(skw, producer, stream):
    for i in range(3):
        await producer.send_wait(stream, f"early{i}".encode())
    # let the broker's millisecond clock move on, so that the later chunks have later times
    await asyncio.sleep(0.05)
    for i in range(3):
        await producer.send_wait(stream, f"late{i}".encode())
    stamps: list[tuple[bytes, int, int]] = []
    done = asyncio.Event()

    async def on_message(msg, ctx):
        stamps.append((msg, ctx.offset, ctx.timestamp))
        if len(stamps) == 6:
            done.set()

    async with Consumer(**skw) as c:
        await c.subscribe(stream, on_message)
        await asyncio.wait_for(done.wait(), TIMEOUT)
    assert [s[:2] for s in stamps] == [(b"early0", 0), (b"early1", 1), (b"early2", 2),
                                       (b"late0", 3), (b"late1", 4), (b"late2", 5)]
    # chunk timestamps are milliseconds since the epoch, in publish order
    times = [s[2] for s in stamps]
    assert times == sorted(times)
    assert abs(times[0] - time.time() * 1000) < 300_000
    late_at = stamps[3][2]
    assert stamps[2][2] < late_at
    got = await consume(skw, stream, 3, spec(OffsetType.TIMESTAMP, late_at))
    assert got == [(b"late0", 3), (b"late1", 4), (b"late2", 5)]
    got = await consume(skw, stream, 6, spec(OffsetType.TIMESTAMP, 0))
    assert [o for _, o in got] == list(range(6))


async def test_offset_timestamp_in_the_future_gets_only_new_messages(skw, producer, stream):
    await producer.send_wait(stream, b"old")

    async def publish():
        await producer.send_wait(stream, b"new")

    future = int(time.time() * 1000) + 3_600_000
    got = await consume(skw, stream, 1, spec(OffsetType.TIMESTAMP, future),
                        after_subscribe=publish)
    assert got == [(b"new", 1)]


# ---------------------------------------------------------------------------------------------
# Offset tracking
# ---------------------------------------------------------------------------------------------

async def test_store_and_query_offset(skw, stream, uniq, low):
    name = uniq("app")
    async with Consumer(**skw) as c:
        with pytest.raises(exceptions.OffsetNotFound):
            await c.query_offset(stream, name)
        await c.store_offset(stream, name, 7)
        # store has no answer; the query on the same connection comes after it
        assert await c.query_offset(stream, name) == 7
        await c.store_offset(stream, name, 3)           # backwards is allowed: last one wins
        assert await c.query_offset(stream, name) == 3
        await c.store_offset(stream, name, 1000)        # beyond the end is allowed too
        assert await c.query_offset(stream, name) == 1000
    async with Consumer(**skw) as c:                    # kept by the broker, not the connection
        assert await c.query_offset(stream, name) == 1000
        with pytest.raises(exceptions.OffsetNotFound):
            await c.query_offset(stream, uniq("other"))
    client = await low()
    r = await call(client, schema.QueryOffset, schema.QueryOffsetResponse,
                   reference=uniq("none"), stream=stream)
    assert (r.response_code, r.offset) == (NO_OFFSET, 0)
    r = await call(client, schema.QueryOffset, schema.QueryOffsetResponse,
                   reference=name, stream=stream)
    assert (r.response_code, r.offset) == (OK, 1000)


async def test_query_offset_on_missing_stream(low, streams):
    client = await low()
    r = await call(client, schema.QueryOffset, schema.QueryOffsetResponse,
                   reference="app", stream=streams())
    assert r.response_code == STREAM_DOES_NOT_EXIST


async def test_resume_from_stored_offset(skw, producer, stream, uniq):
    for i in range(6):
        await producer.send_wait(stream, f"m{i}".encode())
    name = uniq("app")
    async with Consumer(**skw) as c:
        await c.store_offset(stream, name, 3)
        resume = await c.query_offset(stream, name)
    got = await consume(skw, stream, 2, spec(OffsetType.OFFSET, resume + 1))
    assert got == [(b"m4", 4), (b"m5", 5)]


# ---------------------------------------------------------------------------------------------
# Publisher deduplication
# ---------------------------------------------------------------------------------------------

async def test_deduplication_by_publisher_reference(skw, stream, uniq, low):
    ref = uniq("pub")
    async with Producer(**skw) as p:
        for i in (1, 2, 3):
            assert await p.send_wait(stream, RawMessage(f"d{i}".encode(), publishing_id=i),
                                     publisher_name=ref) == i
        client = await p.default_client
        assert await client.query_publisher_sequence(stream, ref) == 3
        # a publishing id already seen: confirmed, but not stored again
        assert await p.send_wait(stream, RawMessage(b"again", publishing_id=2),
                                 publisher_name=ref) == 2
        assert await p.send_wait(stream, RawMessage(b"d4", publishing_id=4),
                                 publisher_name=ref) == 4
        client = await p.default_client
        assert await client.query_publisher_sequence(stream, ref) == 4
        assert await client.query_publisher_sequence(stream, uniq("unknown")) == 0
    async with Producer(**skw) as p:
        # a new producer with the same reference goes on from the stored sequence
        assert await p.send_wait(stream, b"d5", publisher_name=ref) == 5
        assert await p.send_wait(stream, RawMessage(b"old", publishing_id=1),
                                 publisher_name=ref) == 1
    got = await consume(skw, stream, 5)
    assert got == [(b"d1", 0), (b"d2", 1), (b"d3", 2), (b"d4", 3), (b"d5", 4)]
    client = await low()
    r = await call(client, schema.QueryPublisherSequence, schema.QueryPublisherSequenceResponse,
                   publisher_ref=ref, stream=stream)
    assert (r.response_code, r.sequence) == (OK, 5)


async def test_without_reference_nothing_is_deduplicated(skw, stream):
    async with Producer(**skw) as p:
        await p.send_wait(stream, RawMessage(b"x", publishing_id=1))
        await p.send_wait(stream, RawMessage(b"y", publishing_id=1))
    got = await consume(skw, stream, 2)
    assert got == [(b"x", 0), (b"y", 1)]


async def test_sub_entries_one_confirm_an_offset_per_message_deduplicated_whole(
        skw, stream, uniq, low):
    """Sub-entry batching (Publish version 1): rstream's ``send_sub_entry``, uncompressed
    and gzip; one confirm per sub-entry; its messages read one by one, each at its own
    offset; a publisher reference's sub-entry sent twice under one publishing id is stored
    once, and the publishing id is what QueryPublisherSequence answers."""
    confirmed: list = []
    three = asyncio.get_running_loop().create_future()

    def on_confirm(status) -> None:
        confirmed.append(status.is_confirmed)
        if len(confirmed) == 2 and not three.done():
            three.set_result(None)
    async with Producer(**skw) as p:
        await p.send_sub_entry(stream, [b"n0", b"n1", b"n2"], on_publish_confirm=on_confirm,
                               compression_type=CompressionType.No)
        await p.send_sub_entry(stream, [f"g{i}".encode() for i in range(50)],
                               compression_type=CompressionType.Gzip,
                               on_publish_confirm=on_confirm)
        await asyncio.wait_for(three, TIMEOUT)
    assert confirmed == [True, True]
    got = await consume(skw, stream, 53, spec(OffsetType.FIRST))
    assert got == [(m, i) for i, m in enumerate(
        [b"n0", b"n1", b"n2"] + [f"g{i}".encode() for i in range(50)])]

    ref = uniq("pub")
    c = await low()
    answers: asyncio.Queue = asyncio.Queue()
    c.add_handler(schema.PublishConfirm, lambda fr: answers.put_nowait(fr.publishing_ids),
                  name="confirms")
    r = await call(c, schema.DeclarePublisher, schema.DeclarePublisherResponse,
                   publisher_id=1, stream=stream, reference=ref)
    assert r.response_code == OK
    codec = CompressionHelper.compress([b"s0", b"s1"], CompressionType.Gzip)
    for _ in range(2):
        await c.send_frame(schema.PublishSubBatching(
            publisher_id=1, number_of_root_messages=1, publishing_id=7,
            compress_type=0x80 | codec.compression_type() << 4,
            subbatching_message_count=codec.messages_count(),
            uncompressed_data_size=codec.uncompressed_size(),
            compressed_data_size=codec.compressed_size(), messages=codec.data()))
        assert await asyncio.wait_for(answers.get(), TIMEOUT) == [7]
    r = await call(c, schema.QueryPublisherSequence, schema.QueryPublisherSequenceResponse,
                   publisher_ref=ref, stream=stream)
    assert (r.response_code, r.sequence) == (OK, 7)
    await c.send_frame(schema.Publish(publisher_id=1, messages=[
        schema.Message(publishing_id=8, filter_value=None, data=b"after")]))
    assert await asyncio.wait_for(answers.get(), TIMEOUT) == [8]
    got = await consume(skw, stream, 3, spec(OffsetType.OFFSET, 53))
    assert got == [(b"s0", 53), (b"s1", 54), (b"after", 55)]


async def test_publisher_declaration_codes(low, stream, streams, uniq):
    c = await low()
    ref = uniq("pub")
    r = await call(c, schema.DeclarePublisher, schema.DeclarePublisherResponse,
                   publisher_id=1, stream=streams(), reference="")
    assert r.response_code == STREAM_DOES_NOT_EXIST
    r = await call(c, schema.DeclarePublisher, schema.DeclarePublisherResponse,
                   publisher_id=1, stream=stream, reference=ref)
    assert r.response_code == OK
    r = await call(c, schema.DeclarePublisher, schema.DeclarePublisherResponse,
                   publisher_id=1, stream=stream, reference="")
    assert r.response_code == PRECONDITION_FAILED          # publisher id in use
    r = await call(c, schema.DeclarePublisher, schema.DeclarePublisherResponse,
                   publisher_id=2, stream=stream, reference=ref)
    assert r.response_code == PRECONDITION_FAILED          # reference in use on the stream
    r = await call(c, schema.QueryPublisherSequence, schema.QueryPublisherSequenceResponse,
                   publisher_ref=ref, stream=stream)
    assert (r.response_code, r.sequence) == (OK, 0)
    r = await call(c, schema.QueryPublisherSequence, schema.QueryPublisherSequenceResponse,
                   publisher_ref=ref, stream=streams())
    assert r.response_code == STREAM_DOES_NOT_EXIST
    r = await call(c, schema.DeletePublisher, schema.DeletePublisherResponse, publisher_id=7)
    assert r.response_code == PUBLISHER_DOES_NOT_EXIST
    r = await call(c, schema.DeletePublisher, schema.DeletePublisherResponse, publisher_id=1)
    assert r.response_code == OK


# ---------------------------------------------------------------------------------------------
# Streams: create, delete, exists, metadata; subscriptions
# ---------------------------------------------------------------------------------------------

async def test_create_exists_delete(producer, streams, mgmt, skw):
    name = streams()
    assert await producer.stream_exists(name) is False
    await producer.create_stream(name, arguments={"max-length-bytes": 1000000, "max-age": "1h",
                                                  "stream-max-segment-size-bytes": 500000})
    assert await producer.stream_exists(name) is True
    queue = mgmt.get(f"/api/queues/{q(skw['vhost'])}/{q(name)}")
    assert queue["type"] == "stream"
    assert (queue["durable"], queue["auto_delete"], queue["exclusive"]) == (True, False, False)
    assert queue["arguments"] == {"x-queue-type": "stream", "x-max-length-bytes": 1000000,
                                  "x-max-age": "1h", "x-stream-max-segment-size-bytes": 500000}
    with pytest.raises(exceptions.StreamAlreadyExists) as e:
        await producer.create_stream(name, arguments={
            "max-length-bytes": 1000000, "max-age": "1h", "stream-max-segment-size-bytes": 500000})
    assert e.value.code == STREAM_ALREADY_EXISTS
    await producer.create_stream(name, arguments={
        "max-length-bytes": 1000000, "max-age": "1h", "stream-max-segment-size-bytes": 500000},
        exists_ok=True)
    await producer.delete_stream(name)
    assert await producer.stream_exists(name) is False
    with pytest.raises(exceptions.StreamDoesNotExist):
        await producer.delete_stream(name)
    await producer.delete_stream(name, missing_ok=True)


async def test_create_response_codes(low, streams):
    c = await low()
    name = streams()
    r = await call(c, schema.Create, schema.CreateResponse, stream=name,
                   arguments=[schema.Property("max-age", "1h")])
    assert r.response_code == OK
    r = await call(c, schema.Create, schema.CreateResponse, stream=name,
                   arguments=[schema.Property("max-age", "1h")])
    assert r.response_code == STREAM_ALREADY_EXISTS
    # the same name with other arguments: not equivalent
    r = await call(c, schema.Create, schema.CreateResponse, stream=name, arguments=[])
    assert r.response_code == PRECONDITION_FAILED
    r = await call(c, schema.Create, schema.CreateResponse, stream=name,
                   arguments=[schema.Property("max-age", "2h")])
    assert r.response_code == PRECONDITION_FAILED
    r = await call(c, schema.Create, schema.CreateResponse, stream="", arguments=[])
    assert r.response_code == PRECONDITION_FAILED
    r = await call(c, schema.Create, schema.CreateResponse, stream="amq.stream", arguments=[])
    assert r.response_code == PRECONDITION_FAILED
    r = await call(c, schema.Delete, schema.DeleteResponse, stream=name)
    assert r.response_code == OK
    r = await call(c, schema.Delete, schema.DeleteResponse, stream=name)
    assert r.response_code == STREAM_DOES_NOT_EXIST


async def test_metadata(low, producer, stream, streams, stream_address):
    leader, replicas = await (await producer.default_client).query_leader_and_replicas(stream)
    assert (leader.host, leader.port, replicas) == (*stream_address, [])
    c = await low()
    missing = streams()
    r = await call(c, schema.Metadata, schema.MetadataResponse, streams=[stream, missing])
    assert [(b.reference, b.host, b.port) for b in r.brokers] == [(0, *stream_address)]
    # one entry per stream asked for, in no particular order
    assert sorted((m.name, m.response_code, m.leader_ref, m.replicas_refs)
                  for m in r.metadata) == sorted([(stream, OK, 0, []),
                                                  (missing, STREAM_DOES_NOT_EXIST, 0xFFFF, [])])
    r = await call(c, schema.Metadata, schema.MetadataResponse, streams=[missing])
    assert r.brokers == []
    assert [(m.name, m.response_code, m.leader_ref) for m in r.metadata] == [
        (missing, STREAM_DOES_NOT_EXIST, 0xFFFF)]


async def test_subscription_codes(low, stream, streams):
    c = await low()
    first = schema.OffsetSpec(OffsetType.FIRST)
    r = await call(c, schema.Subscribe, schema.SubscribeResponse, subscription_id=1,
                   stream=streams(), offset_spec=first, credit=10, properties=[])
    assert r.response_code == STREAM_DOES_NOT_EXIST
    r = await call(c, schema.Subscribe, schema.SubscribeResponse, subscription_id=1,
                   stream=stream, offset_spec=first, credit=10, properties=[])
    assert r.response_code == OK
    r = await call(c, schema.Subscribe, schema.SubscribeResponse, subscription_id=1,
                   stream=stream, offset_spec=first, credit=10, properties=[])
    assert r.response_code == SUBSCRIPTION_ID_ALREADY_EXISTS
    r = await call(c, schema.Unsubscribe, schema.UnsubscribeResponse, subscription_id=9)
    assert r.response_code == SUBSCRIPTION_ID_DOES_NOT_EXIST
    r = await call(c, schema.Unsubscribe, schema.UnsubscribeResponse, subscription_id=1)
    assert r.response_code == OK


async def test_subscribe_to_missing_stream_refused(skw, streams):
    async with Consumer(**skw) as c:
        with pytest.raises(exceptions.StreamDoesNotExist):
            await c.subscribe(streams(), lambda m, ctx: None)


@pytest.mark.parametrize("arguments", [{}, {"x-queue-type": "quorum"}], ids=["classic", "quorum"])
async def test_queues_that_are_not_streams(arguments, ch, cleanup, uniq, low, producer):
    name = cleanup.queue(uniq("queue"))
    ch.queue_declare(name, durable=True, arguments=arguments)
    c = await low()
    r = await call(c, schema.Subscribe, schema.SubscribeResponse, subscription_id=1, stream=name,
                   offset_spec=schema.OffsetSpec(OffsetType.FIRST), credit=10, properties=[])
    assert r.response_code == STREAM_DOES_NOT_EXIST
    r = await call(c, schema.DeclarePublisher, schema.DeclarePublisherResponse,
                   publisher_id=1, stream=name, reference="")
    assert r.response_code == STREAM_DOES_NOT_EXIST
    r = await call(c, schema.Create, schema.CreateResponse, stream=name, arguments=[])
    assert r.response_code == PRECONDITION_FAILED
    r = await call(c, schema.Delete, schema.DeleteResponse, stream=name)
    assert r.response_code == STREAM_DOES_NOT_EXIST
    assert await producer.stream_exists(name) is False
    # still there, untouched
    assert ch.queue_declare(name, passive=True).method.queue == name


# ---------------------------------------------------------------------------------------------
# AMQP 0-9-1 <-> stream protocol
# ---------------------------------------------------------------------------------------------

async def test_amqp091_publish_read_over_stream_protocol(ch, skw, streams):
    name = streams()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    ch.confirm_delivery()
    ch.basic_publish("", name, b"hello-091", pika.BasicProperties(
        content_type="text/plain", content_encoding="gzip", correlation_id="corr-1",
        message_id="mid-1", reply_to="rq", expiration="60000", timestamp=1700000000,
        type="t1", user_id=skw["username"], app_id="app1", priority=3, delivery_mode=2,
        headers={"s": "v", "i": 5, "b": True, "neg": -7, "big": 2 ** 40, "by": b"bytes",
                 "list": [1, "x"], "table": {"k": "v"}}))
    ch.basic_publish("", name, b"plain", pika.BasicProperties())
    got = await consume(skw, name, 2, decoder=amqp_decoder)
    (full, o1), (plain, o2) = got
    assert (o1, o2) == (0, 1)
    assert full.body == b"hello-091"
    assert full.header is None
    assert full.message_annotations == {
        b"x-routing-key": name.encode(), b"x-exchange": b"", b"x-basic-priority": 3,
        b"x-basic-delivery-mode": 2, b"x-basic-expiration": b"60000"}
    p = full.properties
    assert (p.message_id, p.user_id, p.reply_to, p.correlation_id) == (
        b"mid-1", skw["username"].encode(), b"rq", b"corr-1")
    assert (p.content_type, p.content_encoding) == (b"text/plain", b"gzip")
    assert p.creation_time == 1700000000 * 1000
    assert (p.to, p.subject, p.absolute_expiry_time, p.group_id) == (None, None, None, None)
    # type and app-id as application properties; array and table headers are left out
    assert full.application_properties == {
        b"x-basic-type": b"t1", b"x-basic-app-id": b"app1", b"s": b"v", b"i": 5, b"b": True,
        b"neg": -7, b"big": 2 ** 40, b"by": b"bytes"}
    assert plain.body == b"plain"
    assert (plain.header, plain.properties, plain.application_properties) == (None, None, None)
    assert plain.message_annotations == {b"x-routing-key": name.encode(), b"x-exchange": b""}


async def test_stream_protocol_publish_read_over_amqp091(producer, stream, connect, skw):
    await producer.send_wait(stream, AMQPMessage(
        body=b"hello-stream",
        properties=props(message_id="mid-2", user_id=skw["username"].encode(), to="dest",
                         subject="subj", reply_to="rq2", correlation_id="corr-2",
                         content_type="application/json", content_encoding="utf-8",
                         absolute_expiry_time=1800000000000, creation_time=1700000000123,
                         group_id="g", group_sequence=4, reply_to_group_id="rg"),
        application_properties={"s": "v", "i": 5, "b": True, "neg": -3, "big": 2 ** 40,
                                "by": b"bb"},
        message_annotations={"x-note": "n"}))
    await producer.send_wait(stream, AMQPMessage(body=b"bare"))
    ch = connect().channel()
    ch.basic_qos(prefetch_count=10)
    got = []
    for method, properties, body in ch.consume(stream, arguments={"x-stream-offset": "first"},
                                               inactivity_timeout=TIMEOUT):
        assert method is not None, "no message within the timeout"
        got.append((method, properties, body))
        ch.basic_ack(method.delivery_tag)
        if len(got) == 2:
            break
    ch.cancel()
    (m1, p1, b1), (m2, p2, b2) = got
    assert (b1, b2) == (b"hello-stream", b"bare")
    assert (m1.exchange, m1.routing_key, m1.redelivered) == ("", stream, False)
    assert (p1.message_id, p1.correlation_id, p1.reply_to, p1.user_id) == (
        "mid-2", "corr-2", "rq2", skw["username"])
    assert (p1.content_type, p1.content_encoding) == ("application/json", "utf-8")
    assert p1.timestamp == 1700000000                   # milliseconds to seconds
    assert (p1.expiration, p1.type, p1.app_id, p1.priority, p1.delivery_mode) == (
        None, None, None, None, None)
    assert p1.headers == {"s": "v", "i": 5, "b": True, "neg": -3, "big": 2 ** 40, "by": b"bb",
                          "x-stream-offset": 0}
    assert p2.headers == {"x-stream-offset": 1}
    assert (p2.message_id, p2.content_type, p2.timestamp) == (None, None, None)


# ---------------------------------------------------------------------------------------------
# Connections: credentials, virtual hosts, permissions, management
# ---------------------------------------------------------------------------------------------

async def test_bad_credentials(skw, uniq):
    with pytest.raises(exceptions.AuthenticationFailure) as e:
        async with Producer(**dict(skw, password="not-the-password")):
            pass
    assert e.value.code == 8
    with pytest.raises(exceptions.AuthenticationFailure):
        async with Consumer(**dict(skw, username=uniq("nobody"), password="x")):
            pass


async def test_virtual_host_refused(skw, uniq, mgmt):
    with pytest.raises(exceptions.VirtualHostAccessFailure) as e:
        async with Producer(**dict(skw, vhost=uniq("no-such-vhost"))):
            pass
    assert e.value.code == 12
    # a virtual host that exists, for a user without permissions there
    vhost, user = uniq("vh"), uniq("user")
    assert mgmt.put(f"/api/vhosts/{q(vhost)}", {}) in (201, 204)
    assert mgmt.put(f"/api/users/{q(user)}", {"password": "pw", "tags": ""}) in (201, 204)
    try:
        with pytest.raises(exceptions.VirtualHostAccessFailure):
            async with Producer(**dict(skw, username=user, password="pw", vhost=vhost)):
                pass
    finally:
        mgmt.delete(f"/api/users/{q(user)}")
        mgmt.delete(f"/api/vhosts/{q(vhost)}")


async def test_no_permissions_access_refused(skw, uniq, mgmt, low, stream, streams):
    user = uniq("user")
    assert mgmt.put(f"/api/users/{q(user)}", {"password": "pw", "tags": ""}) in (201, 204)
    try:
        assert mgmt.put(f"/api/permissions/{q(skw['vhost'])}/{q(user)}",
                        {"configure": "^$", "write": "^$", "read": "^$"}) in (201, 204)
        c = await low(username=user, password="pw")
        r = await call(c, schema.Create, schema.CreateResponse, stream=streams(), arguments=[])
        assert r.response_code == ACCESS_REFUSED
        r = await call(c, schema.Delete, schema.DeleteResponse, stream=stream)
        assert r.response_code == ACCESS_REFUSED
        r = await call(c, schema.DeclarePublisher, schema.DeclarePublisherResponse,
                       publisher_id=1, stream=stream, reference="")
        assert r.response_code == ACCESS_REFUSED
        r = await call(c, schema.Subscribe, schema.SubscribeResponse, subscription_id=1,
                       stream=stream, offset_spec=schema.OffsetSpec(OffsetType.FIRST), credit=10,
                       properties=[])
        assert r.response_code == ACCESS_REFUSED
        r = await call(c, schema.QueryOffset, schema.QueryOffsetResponse, reference="r",
                       stream=stream)
        assert r.response_code == ACCESS_REFUSED
    finally:
        mgmt.delete(f"/api/users/{q(user)}")
    async with Producer(**skw) as p:                    # refused means untouched
        assert await p.stream_exists(stream) is True


async def test_server_properties(producer, stream_address):
    client = await producer.default_client
    sp = client.server_properties
    assert sp["product"] and sp["version"]       # RabbitMQ's: "RabbitMQ", "3.10.8"
    # the Open answer: where clients should connect
    assert (sp["advertised_host"], sp["advertised_port"]) == (stream_address[0],
                                                               str(stream_address[1]))


async def test_management_lists_stream_connection(skw, mgmt, uniq, stream_address, low):
    label = uniq("conn")
    client = await low(name=label)

    def listed():
        return [c for c in mgmt.get("/api/connections") if c.get("user_provided_name") == label]

    # RabbitMQ lists a connection once its first statistics are emitted (about 5 s)
    (conn,) = await await_until(listed, 30, interval=0.2, message="stream connection listed")
    assert client.is_connection_alive()
    assert conn["protocol"] == "stream"
    assert (conn["user"], conn["vhost"], conn["port"]) == (skw["username"], skw["vhost"],
                                                           stream_address[1])
    peer, local = f"{conn['peer_host']}:{conn['peer_port']}", f"{conn['host']}:{conn['port']}"
    assert conn["name"] == f"{peer} -> {local}"
    assert conn["client_properties"]["connection_name"] == label
    assert conn["client_properties"]["product"] == "RabbitMQ Stream"
    assert conn["auth_mechanism"] == "PLAIN"


async def test_a_connection_closed_through_the_management_api_just_closes(
        skw, mgmt, uniq, streams, low):
    """RabbitMQ's stream reader stops on a forced close and closes the socket: no Close
    frame, no MetadataUpdate per stream, so rstream tells its close handler once, with
    every stream of the connection (its own connection-broke tests count on it)."""
    label = uniq("forced")
    names = [streams(), streams()]
    admin = await low()
    for name in names:
        await admin.create_stream(name)
    client = await low(name=label)
    frames: list = []
    client.add_handler(schema.MetadataUpdate, frames.append, name="forced-metadata")
    client.add_handler(schema.Close, frames.append, name="forced-close")
    for sid, name in enumerate(names, 1):
        await client.subscribe(name, sid, offset_spec=schema.OffsetSpec.from_params(
            OffsetType.FIRST, None), initial_credit=1)

    def listed():
        return [c for c in mgmt.get("/api/connections") if c.get("user_provided_name") == label]
    (conn,) = await await_until(listed, 30, interval=0.2, message="stream connection listed")
    assert mgmt.delete(f"/api/connections/{q(conn['name'])}") == 204
    await await_until(lambda: not client.is_connection_alive(), TIMEOUT, interval=0.05,
                      message="the connection closed")
    assert frames == []


async def test_stream_management_lists_publishers_and_consumers(skw, mgmt, uniq, stream):
    """RabbitMQ's rabbitmq_stream_management: ``/api/stream/connections``, ``publishers``
    and ``consumers`` with their counts (RabbitMQ emits them every few seconds: polled),
    one connection's publishers, and closing a connection with DELETE."""
    label, ref = uniq("smc"), uniq("pubref")
    got: list = []
    async with Producer(**dict(skw, connection_name=label)) as p:
        for i in range(3):
            await p.send_wait(stream, f"m{i}".encode(), publisher_name=ref)

        def published():
            return [x for x in mgmt.get(f"/api/stream/publishers/{q(skw['vhost'])}/{q(stream)}")
                    if x["reference"] == ref and x["confirmed"] == 3]
        (pub,) = await await_until(published, 30, interval=0.2, message="publisher listed")
        assert (pub["published"], pub["errored"], pub["queue"]) == (
            3, 0, {"name": stream, "vhost": skw["vhost"]})
        conns = [c for c in mgmt.get("/api/stream/connections")
                 if c["name"] == pub["connection_details"]["name"]]
        assert conns and conns[0]["user_provided_name"] == label
        assert conns[0]["protocol"] == "stream" and conns[0]["user"] == skw["username"]
        name = q(conns[0]["name"])
        assert [x["reference"] for x in mgmt.get(
            f"/api/stream/connections/{q(skw['vhost'])}/{name}/publishers")] == [ref]
        async with Consumer(**skw) as c:
            await c.subscribe(stream, lambda m, ctx: got.append(ctx.offset),
                              properties={"k": "v"},
                              offset_specification=spec(OffsetType.FIRST))
            # the client hands deliveries to the callback on its own task: the broker's
            # count can be ahead of what the callback saw, so wait for the callback first
            await await_until(lambda: len(got) == 3, 30, interval=0.05,
                              message="three deliveries seen by the callback")

            def consumed():
                return [x for x in mgmt.get("/api/stream/consumers")
                        if x["queue"]["name"] == stream and x["consumed"] == 3]
            (con,) = await await_until(consumed, 30, interval=0.2, message="consumer listed")
            # the offset read up to: RabbitMQ shows the last one sent (2) or, once its
            # reader moved on, the next (3), as its statistics catch up; ours the last
            assert con["offset"] in (2, 3)
            assert (con["offset_lag"], con["properties"]) == (0, {"k": "v"})
        status, _ = mgmt.request("DELETE", f"/api/stream/connections/{q(skw['vhost'])}/{name}")
        assert status == 204
        await await_until(lambda: not [c for c in mgmt.get("/api/stream/connections")
                                        if c.get("user_provided_name") == label],
                          30, interval=0.2, message="connection closed")
    assert got == [0, 1, 2]
