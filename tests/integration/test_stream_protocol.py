"""RabbitMQ's stream protocol (``--stream-port``; amqpbroker/stream_protocol), as the
rabbitmq_stream plugin serves it, in both process layouts: rstream (RabbitMQ's Python stream
client) producers and consumers, pika on the AMQP side, raw sockets where a test needs to
misbehave. What RabbitMQ 3.10.8 itself answers is pinned by interop/test_stream_protocol.py,
which runs against ours too.

Every wait is on a confirm, a callback's future, or a socket read with a timeout.
"""
from __future__ import annotations

import asyncio
import os
import signal
import struct

import pika
import pytest
from rstream import (AMQPMessage, Consumer, ConsumerOffsetSpecification, OffsetType, Producer,
                     amqp_decoder)
from rstream._pyamqp.message import Properties
from rstream.exceptions import OffsetNotFound, StreamAlreadyExists, StreamDoesNotExist

from amqpbroker.stream_protocol import frames as f
from amqpbroker.testing import LAYOUTS, BrokerProcess

pytestmark = pytest.mark.own_layout         # every broker here names its layout
TIMEOUT = 20


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("stream"), *LAYOUTS[request.param],
                       "--stream-port", "-1", management=True) as b:
        yield b


@pytest.fixture
def names(request):
    counter = iter(range(1000))
    base = request.node.name.replace("[", "-").replace("]", "").replace(" ", "")[-60:]
    return lambda prefix="s": f"{prefix}-{base}-{next(counter)}"


def producer(broker, **kw) -> Producer:
    kw.setdefault("username", "guest")
    kw.setdefault("password", "guest")
    return Producer(broker.host, broker.stream_port, **kw)


def consumer(broker, **kw) -> Consumer:
    kw.setdefault("username", "guest")
    kw.setdefault("password", "guest")
    return Consumer(broker.host, broker.stream_port, **kw)


async def collect(broker, stream: str, count: int, *, offset=None, decoder=None,
                  vhost: str = "/", **kw):
    """The first ``count`` messages a new subscription gets: [(offset, message)]."""
    got: list = []
    done = asyncio.get_running_loop().create_future()

    def on_message(msg, ctx):
        got.append((ctx.offset, msg))
        if len(got) >= count and not done.done():
            done.set_result(None)
    async with consumer(broker, vhost=vhost) as c:
        await c.subscribe(stream, on_message, decoder=decoder,
                          offset_specification=offset or ConsumerOffsetSpecification(
                              OffsetType.FIRST, None), **kw)
        await asyncio.wait_for(done, TIMEOUT)
    return got


def body_of(message: AMQPMessage) -> bytes:
    """An AMQP 1.0 message's data sections (rstream gives one as bytes, several as a list)."""
    body = message.body
    return b"".join(body) if isinstance(body, list) else body


def amqp(broker) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.port))


async def test_raw_bytes_round_trip_in_order_with_consecutive_offsets(broker, names):
    stream = names()
    async with producer(broker) as p:
        await p.create_stream(stream)
        for i in range(50):
            await p.send_wait(stream, f"m{i}".encode())
        await p.send_batch(stream, [f"b{i}".encode() for i in range(150)])
    got = await collect(broker, stream, 200)
    assert [o for o, _ in got] == list(range(200))
    assert [m for _, m in got] == [f"m{i}".encode() for i in range(50)] + \
        [f"b{i}".encode() for i in range(150)]
    async with producer(broker) as p:
        await p.delete_stream(stream)


async def test_amqp10_messages_meet_amqp091_both_ways(broker, names):
    stream = names()
    async with producer(broker) as p:
        await p.create_stream(stream)
        await p.send_wait(stream, AMQPMessage(
            body=b"from-stream", application_properties={"k": "v", "n": 7, "f": 2.5},
            properties=Properties(message_id="m-1", correlation_id="c-1",
                                  content_type="text/plain", reply_to="back")))
    conn = amqp(broker)
    ch = conn.channel()
    ch.basic_publish("", stream, b"from-amqp", pika.BasicProperties(
        content_type="application/json", correlation_id="c-2", headers={"h": "w", "i": 3}))
    ch.basic_qos(prefetch_count=10)
    seen = []
    for method, props, body in ch.consume(stream, arguments={"x-stream-offset": "first"},
                                          inactivity_timeout=TIMEOUT):
        assert method is not None, "the stream's messages did not arrive over AMQP"
        seen.append((props, body))
        ch.basic_ack(method.delivery_tag)
        if len(seen) == 2:
            break
    ch.cancel()
    conn.close()
    props, body = seen[0]
    assert body == b"from-stream"
    assert (props.message_id, props.correlation_id, props.content_type, props.reply_to) == \
        ("m-1", "c-1", "text/plain", "back")
    assert (props.headers["k"], props.headers["n"]) == ("v", 7)     # (pika reads no doubles)
    assert seen[1][1] == b"from-amqp"

    got = await collect(broker, stream, 2, decoder=amqp_decoder)
    first, second = got[0][1], got[1][1]
    assert body_of(first) == b"from-stream"
    assert first.application_properties[b"k"] in (b"v", "v")
    assert first.application_properties[b"f"] == 2.5               # a double both ways
    assert body_of(second) == b"from-amqp"
    assert second.properties.content_type in (b"application/json", "application/json")
    assert second.properties.correlation_id in (b"c-2", "c-2")
    assert second.application_properties[b"h"] in (b"w", "w")
    assert second.application_properties[b"i"] == 3
    assert b"x-stream-offset" not in second.application_properties


@pytest.mark.parametrize("spec", ["first", "next", "last", "offset", "timestamp"])
async def test_offset_specifications(broker, names, spec):
    stream = names()
    async with producer(broker) as p:
        await p.create_stream(stream)
        for i in range(10):
            await p.send_wait(stream, f"old{i}".encode())
        if spec == "first":
            got = await collect(broker, stream, 10)
            assert [m for _, m in got] == [f"old{i}".encode() for i in range(10)]
            return
        if spec == "offset":
            got = await collect(broker, stream, 4,
                                offset=ConsumerOffsetSpecification(OffsetType.OFFSET, 6))
            assert [o for o, _ in got] == [6, 7, 8, 9]
            return
        if spec == "last":
            got = await collect(broker, stream, 1,
                                offset=ConsumerOffsetSpecification(OffsetType.LAST, None))
            assert got[0][0] <= 9 and got[-1][1] == b"old9"
            return
        if spec == "timestamp":
            # an hour ago: everything; RabbitMQ's timestamps are milliseconds
            import time
            got = await collect(broker, stream, 10, offset=ConsumerOffsetSpecification(
                OffsetType.TIMESTAMP, int(time.time() * 1000) - 3600_000))
            assert [o for o, _ in got] == list(range(10))
            return
        # next: only what is published after the subscription
        got: list = []
        done = asyncio.get_running_loop().create_future()

        def on_message(msg, ctx):
            got.append((ctx.offset, msg))
            if not done.done():
                done.set_result(None)
        async with consumer(broker) as c:
            await c.subscribe(stream, on_message, offset_specification=(
                ConsumerOffsetSpecification(OffsetType.NEXT, None)))
            await p.send_wait(stream, b"new")
            await asyncio.wait_for(done, TIMEOUT)
        assert got == [(10, b"new")]


async def test_stored_offset_is_kept_by_the_stream_and_shown_as_a_group(broker, names):
    stream, reference = names(), names("ref")
    async with producer(broker) as p:
        await p.create_stream(stream)
        await p.send_batch(stream, [f"m{i}".encode() for i in range(20)])
    async with consumer(broker) as c:
        await c.start()
        with pytest.raises(OffsetNotFound):             # NO_OFFSET (0x13)
            await c.query_offset(stream, reference)
        await c.store_offset(stream, reference, 12)
        assert await c.query_offset(stream, reference) == 12
    # a new connection sees it; resuming there gives what comes after it
    async with consumer(broker) as c:
        await c.start()
        stored = await c.query_offset(stream, reference)
    assert stored == 12
    got = await collect(broker, stream, 7, offset=ConsumerOffsetSpecification(
        OffsetType.OFFSET, stored + 1))
    assert [o for o, _ in got] == list(range(13, 20))
    group = broker.api(f"consumer-groups/%2F/{reference}")
    assert [p["committed_offset"] for p in group["partitions"]] == [13]


async def test_publisher_reference_deduplicates_as_rabbitmq(broker, names):
    stream, name = names(), names("pub")
    async with producer(broker) as p:
        await p.create_stream(stream)
        for i in range(5):
            await p.send_wait(stream, f"m{i}".encode(), publisher_name=name)
    # a new connection, same reference: the sequence goes on from the stream's answer
    async with producer(broker) as p:
        await p.send_wait(stream, b"m5", publisher_name=name)
        client = await p.default_client
        assert await client.query_publisher_sequence(stream, name) >= 5
    # publishing ids at or below the highest are confirmed and not stored again
    reader, writer = await asyncio.open_connection(broker.host, broker.stream_port)
    try:
        await handshake(reader, writer)
        assert await declare_publisher(reader, writer, 1, name, stream) == f.OK
        writer.write(request(f.QUERY_PUBLISHER_SEQUENCE, 3, s(name) + s(stream)))
        _key, _corr, code, rest = await read_response(reader)
        highest = struct.unpack(">Q", rest)[0]
        assert code == f.OK and highest >= 6       # rstream numbers from 1
        msgs = [(1, b"dup-first"), (highest, b"dup-highest"), (highest + 1, b"m6")]
        writer.write(f.frame(f.PUBLISH, struct.pack(">Bi", 1, len(msgs)) + b"".join(
            struct.pack(">QI", i, len(d)) + d for i, d in msgs)))
        confirmed: list = []
        while len(confirmed) < 3:
            key, body = await read_frame(reader)
            assert key == f.PUBLISH_CONFIRM, f"not a confirm: {key}"
            n = struct.unpack_from(">i", body, 1)[0]
            confirmed += list(struct.unpack_from(f">{n}Q", body, 5))
        assert sorted(confirmed) == [1, highest, highest + 1]
    finally:
        writer.close()
    got = await collect(broker, stream, 7)
    assert [m for _, m in got] == [f"m{i}".encode() for i in range(7)]


async def test_stream_errors_are_answered_with_the_protocols_codes(broker, names):
    stream = names()
    async with producer(broker) as p:
        await p.create_stream(stream)
        with pytest.raises(StreamAlreadyExists):
            await p.create_stream(stream, exists_ok=False)
        await p.delete_stream(stream)
        with pytest.raises(StreamDoesNotExist):
            await p.delete_stream(stream)
        assert not await p.stream_exists(stream)
    async with consumer(broker) as c:
        with pytest.raises(StreamDoesNotExist):
            await c.subscribe(stream, lambda m, ctx: None)


async def test_credit_flow_delivers_everything_to_a_slow_start(broker, names):
    stream = names()
    payloads = [os.urandom(64) for _ in range(3000)]
    async with producer(broker) as p:
        await p.create_stream(stream)
        for i in range(0, 3000, 500):
            await p.send_batch(stream, payloads[i:i + 500])
    got = await collect(broker, stream, 3000, initial_credit=1)
    assert [m for _, m in got] == payloads
    assert [o for o, _ in got] == list(range(3000))


async def test_confirmed_messages_survive_kill_9(tmp_path, names):
    layout = LAYOUTS["one process"]
    stream = names()
    with BrokerProcess(tmp_path, *layout, "--stream-port", "-1") as b:
        async with producer(b) as p:
            await p.create_stream(stream)
            await p.send_batch(stream, [f"k{i}".encode() for i in range(300)])
            await p.send_wait(stream, b"last")
        os.kill(b.proc.pid, signal.SIGKILL)
        b.proc.wait(TIMEOUT)
    with BrokerProcess(tmp_path, *layout, "--stream-port", "-1") as b:
        got = await collect(b, stream, 301)
    assert [m for _, m in got] == [f"k{i}".encode() for i in range(300)] + [b"last"]


async def test_a_topic_is_a_super_stream(broker, names):
    topic = names("topic")
    conn = amqp(broker)
    ch = conn.channel()
    ch.exchange_declare(topic, "x-partitioned", durable=True, arguments={"x-partitions": 3})
    conn.close()
    reader, writer = await asyncio.open_connection(broker.host, broker.stream_port)
    try:
        await handshake(reader, writer)
        writer.write(request(f.PARTITIONS, 2, s(topic)))
        _key, corr, code, rest = await read_response(reader)
        assert code == f.OK
        assert strings(rest) == [f"{topic}-0", f"{topic}-1", f"{topic}-2"]
        writer.write(request(f.ROUTE, 3, s("some-key") + s(topic)))
        _key, corr, code, rest = await read_response(reader)
        assert code == f.OK and len(strings(rest)) == 1
        routed = strings(rest)[0]
    finally:
        writer.close()
    # what AMQP routes by that key lands in the partition Route named
    conn = amqp(broker)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(topic, "some-key", b"keyed")
    conn.close()
    got = await collect(broker, routed, 1, decoder=amqp_decoder)
    assert body_of(got[0][1]) == b"keyed"


# ------------------------------------------------------------------ bad input, raw
def s(text: str) -> bytes:
    b = text.encode()
    return struct.pack(">h", len(b)) + b


def strings(data: bytes) -> list:
    n = struct.unpack_from(">i", data)[0]
    pos, out = 4, []
    for _ in range(n):
        ln = struct.unpack_from(">h", data, pos)[0]
        out.append(data[pos + 2:pos + 2 + ln].decode())
        pos += 2 + ln
    return out


def request(key: int, corr: int, payload: bytes) -> bytes:
    return f.frame(key, struct.pack(">I", corr) + payload)


async def read_frame(reader) -> tuple:
    size = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), TIMEOUT))[0]
    data = await asyncio.wait_for(reader.readexactly(size), TIMEOUT)
    return struct.unpack_from(">H", data)[0], data[4:]


async def read_response(reader) -> tuple:
    """(key, correlation id, code, the rest) of the next response (heartbeats skipped)."""
    while True:
        key, body = await read_frame(reader)
        if key == f.HEARTBEAT:
            continue
        if key == f.RESPONSE | f.METADATA:
            return key, struct.unpack_from(">I", body)[0], None, body[4:]
        corr, code = struct.unpack_from(">IH", body)
        return key, corr, code, body[6:]


async def declare_publisher(reader, writer, pid: int, reference: str, stream: str) -> int:
    """DeclarePublisher over a raw connection: the response's code."""
    writer.write(request(f.DECLARE_PUBLISHER, 2, struct.pack(">B", pid) + s(reference)
                         + s(stream)))
    return (await read_response(reader))[2]


async def handshake(reader, writer, user="guest", password="guest", vhost="/") -> int:
    """The handshake as a client does it; the code of the first refusal, or OK."""
    writer.write(request(f.PEER_PROPERTIES, 1, struct.pack(">i", 0)))
    assert (await read_response(reader))[2] == f.OK
    writer.write(request(f.SASL_HANDSHAKE, 2, b""))
    assert "PLAIN" in strings((await read_response(reader))[3])
    auth = b"\x00" + user.encode() + b"\x00" + password.encode()
    writer.write(request(f.SASL_AUTHENTICATE, 3, s("PLAIN") + struct.pack(">i", len(auth))
                         + auth))
    code = (await read_response(reader))[2]
    if code != f.OK:
        return code
    key, body = await read_frame(reader)
    assert key == f.TUNE
    writer.write(f.tune(*struct.unpack(">II", body)))
    writer.write(request(f.OPEN, 4, s(vhost)))
    return (await read_response(reader))[2]


async def test_bad_credentials_and_vhost_are_refused(broker):
    reader, writer = await asyncio.open_connection(broker.host, broker.stream_port)
    try:
        assert await handshake(reader, writer, password="wrong") == f.AUTHENTICATION_FAILURE
        assert await reader.read() == b""               # and the connection is closed
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection(broker.host, broker.stream_port)
    try:
        assert await handshake(reader, writer, vhost="no-such-vhost") == \
            f.VHOST_ACCESS_FAILURE
    finally:
        writer.close()


async def test_garbage_closes_only_that_connection(broker, names):
    stream = names()
    async with producer(broker) as p:
        await p.create_stream(stream)
        reader, writer = await asyncio.open_connection(broker.host, broker.stream_port)
        try:
            await handshake(reader, writer)
            writer.write(struct.pack(">IHH", 8, 0x7ABC, 1) + b"\x00" * 4)   # unknown command
            key, body = await read_frame(reader)
            assert key == f.CLOSE
            assert struct.unpack_from(">H", body, 4)[0] == f.UNKNOWN_FRAME
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        finally:
            writer.close()
        # the other client goes on
        await p.send_wait(stream, b"still here")
    got = await collect(broker, stream, 1)
    assert got[0][1] == b"still here"


def test_the_stream_port_is_listed(broker):
    listeners = broker.api("overview")["listeners"]
    assert {"protocol": "stream", "port": broker.stream_port} in [
        {"protocol": x["protocol"], "port": x["port"]} for x in listeners]


async def test_publisher_without_write_permission_gets_errors(broker, names):
    stream, user = names(), names("u")
    async with producer(broker) as p:
        await p.create_stream(stream)
    assert broker.request("PUT", f"users/{user}", {"password": "pw", "tags": ""})[0] in (201, 204)
    assert broker.request("PUT", f"permissions/%2F/{user}",
                          {"configure": "", "write": "", "read": ".*"})[0] in (201, 204)
    reader, writer = await asyncio.open_connection(broker.host, broker.stream_port)
    try:
        assert await handshake(reader, writer, user=user, password="pw") == f.OK
        assert await declare_publisher(reader, writer, 1, "", stream) == f.ACCESS_REFUSED
        writer.write(request(f.CREATE, 10, s(names()) + struct.pack(">i", 0)))
        assert (await read_response(reader))[2] == f.ACCESS_REFUSED
    finally:
        writer.close()
    assert broker.request("DELETE", f"users/{user}")[0] == 204


async def test_filtering_with_rstreams_filter_values(broker, names):
    """RabbitMQ 3.13's stream filtering through the protocol: Publish version 2 carries
    each message's filter value, a subscription's ``filter.N`` properties name the values
    it wants; filtering here is exact, so rstream's post-filter sees only matches."""
    from rstream import FilterConfiguration
    stream = names()

    async def region(message) -> str:               # the message as the producer has it
        return message.application_properties["region"]
    async with producer(broker, filter_value_extractor=region) as p:
        await p.create_stream(stream)
        sent = [AMQPMessage(body=f"{r}{i}".encode(), application_properties={"region": r})
                for i in range(30) for r in ("eu", "us")]
        await p.send_batch(stream, sent)
        await p.send_wait(stream, AMQPMessage(body=b"eu-last",
                                              application_properties={"region": "eu"}))
    got = await collect(broker, stream, 31, decoder=amqp_decoder,
                        filter_input=FilterConfiguration(values_to_filter=["eu"]))
    assert [body_of(m) for _, m in got] == [f"eu{i}".encode() for i in range(30)] + \
        [b"eu-last"]


async def test_super_stream_consumer_reads_a_topic(broker, names):
    """rstream's SuperStreamConsumer on a topic: it asks Partitions and subscribes to each;
    what AMQP clients publish to the topic arrives, each key's messages in order."""
    from rstream import SuperStreamConsumer
    topic = names("t")
    conn = amqp(broker)
    ch = conn.channel()
    ch.exchange_declare(topic, "x-partitioned", durable=True, arguments={"x-partitions": 3})
    ch.confirm_delivery()
    for i in range(60):
        ch.basic_publish(topic, f"key-{i % 6}", f"{i % 6}:{i}".encode())
    conn.close()
    got: list = []
    done = asyncio.get_running_loop().create_future()

    def on_message(msg, ctx):
        got.append((ctx.stream, body_of(msg).decode()))
        if len(got) == 60 and not done.done():
            done.set_result(None)
    async with SuperStreamConsumer(broker.host, broker.stream_port, username="guest",
                                   password="guest", super_stream=topic) as c:
        await c.subscribe(on_message, decoder=amqp_decoder,
                          offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST,
                                                                           None))
        await asyncio.wait_for(done, TIMEOUT)
    assert {stream for stream, _ in got} <= {f"{topic}-{i}" for i in range(3)}
    for key in range(6):
        mine = [body for _, body in got if body.startswith(f"{key}:")]
        assert mine == [f"{key}:{i}" for i in range(key, 60, 6)]
        assert len({stream for stream, body in got if body.startswith(f"{key}:")}) == 1


async def test_deleting_a_stream_tells_its_publishers_and_subscribers(broker, names):
    """RabbitMQ's MetadataUpdate (0x06, the stream) to every connection with a publisher
    or a subscription on a stream another client deletes; their ids are free again."""
    stream = names()
    async with producer(broker) as p:
        await p.create_stream(stream)
    conns = [await asyncio.open_connection(broker.host, broker.stream_port) for _ in range(3)]
    try:
        for reader, writer in conns:
            assert await handshake(reader, writer) == f.OK
        (r1, w1), (r2, w2), (r3, w3) = conns
        w1.write(request(f.SUBSCRIBE, 5, struct.pack(">B", 7) + s(stream)
                         + struct.pack(">HHi", f.OFFSET_FIRST, 10, 0)))
        assert (await read_response(r1))[2] == f.OK
        assert await declare_publisher(r2, w2, 3, "", stream) == f.OK
        w3.write(request(f.DELETE, 5, s(stream)))
        assert (await read_response(r3))[2] == f.OK
        for reader in (r1, r2):
            key, body = await read_frame(reader)
            while key == f.HEARTBEAT:
                key, body = await read_frame(reader)
            assert key == f.METADATA_UPDATE
            assert struct.unpack_from(">H", body)[0] == f.STREAM_NOT_AVAILABLE
            assert body[4:].decode() == stream
        w1.write(request(f.UNSUBSCRIBE, 6, struct.pack(">B", 7)))
        assert (await read_response(r1))[2] == f.SUBSCRIPTION_ID_DOES_NOT_EXIST
        w2.write(request(f.DELETE_PUBLISHER, 6, struct.pack(">B", 3)))
        assert (await read_response(r2))[2] == f.PUBLISHER_DOES_NOT_EXIST
    finally:
        for _, writer in conns:
            writer.close()


async def test_single_active_consumer_hands_over_where_the_last_one_stopped(broker, names):
    """RabbitMQ 3.11's single active consumer: two rstream consumers named alike on one
    stream, one consumes; when it leaves the other is made active (ConsumerUpdate) and
    starts where its listener says, here after the offset the first one stored."""
    from rstream import OffsetSpecification
    stream, name = names(), names("app")
    got: dict = {"a": [], "b": []}
    updates: list = []
    b_started = asyncio.get_running_loop().create_future()

    def collector(who, enough):
        def on_message(msg, ctx):
            got[who].append((ctx.offset, msg))
            if len(got[who]) == enough[0] and not enough[1].done():
                enough[1].set_result(None)
        return on_message

    async def resume(active, ctx):
        updates.append(active)
        try:
            stored = await ctx.consumer.query_offset(ctx.stream, name)
        except OffsetNotFound:
            return OffsetSpecification(OffsetType.FIRST, 0)
        return OffsetSpecification(OffsetType.OFFSET, stored + 1)
    sac = {"single-active-consumer": "true", "name": name}
    async with producer(broker) as p:
        await p.create_stream(stream)
        await p.send_batch(stream, [b"m%d" % i for i in range(10)])
        a_first = [10, asyncio.get_running_loop().create_future()]
        async with consumer(broker) as a, consumer(broker) as b:
            await a.subscribe(stream, collector("a", a_first), properties=sac,
                              subscriber_name=name, consumer_update_listener=resume)
            await asyncio.wait_for(a_first[1], TIMEOUT)
            await b.subscribe(stream, collector("b", [3, b_started]), properties=sac,
                              subscriber_name=name, consumer_update_listener=resume)
            await a.store_offset(stream, name, 9)
            await a.close()                     # b takes over after offset 9
            await p.send_batch(stream, [b"n%d" % i for i in range(3)])
            await asyncio.wait_for(b_started, TIMEOUT)
    assert [o for o, _ in got["a"]] == list(range(10))
    assert got["b"] == [(10, b"n0"), (11, b"n1"), (12, b"n2")]
    assert updates == [True, True]              # a when it came, b when a left


async def test_single_active_consumers_spread_a_super_streams_partitions(broker, names):
    """With ``super-stream`` (RabbitMQ 3.11), a group's consumers share a super stream: each
    partition's active consumer is the one at its index modulo the group's size, so two
    SuperStreamConsumers of one name read one partition each, together everything."""
    from rstream import OffsetSpecification, SuperStreamConsumer
    topic, name = names("t"), names("grp")
    conn = amqp(broker)
    ch = conn.channel()
    ch.exchange_declare(topic, "x-partitioned", durable=True, arguments={"x-partitions": 2})
    conn.close()
    seen: dict = {0: [], 1: []}
    done = asyncio.get_running_loop().create_future()

    def collector(i):
        def on_message(msg, ctx):
            seen[i].append((ctx.stream, body_of(msg)))
            if len(seen[0]) + len(seen[1]) >= 40 and not done.done():
                done.set_result({k: list(v) for k, v in seen.items()})
        return on_message

    async def from_first(active, ctx):
        return OffsetSpecification(OffsetType.FIRST, 0)
    props = {"single-active-consumer": "true", "name": name, "super-stream": topic}
    kw = dict(username="guest", password="guest", super_stream=topic)
    async with SuperStreamConsumer(broker.host, broker.stream_port, **kw) as c0, \
            SuperStreamConsumer(broker.host, broker.stream_port, **kw) as c1:
        for i, c in enumerate((c0, c1)):
            await c.subscribe(collector(i), decoder=amqp_decoder, properties=props,
                              subscriber_name=name, consumer_update_listener=from_first)
        conn = amqp(broker)
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(40):
            ch.basic_publish(topic, f"k{i}", f"m{i}".encode())
        conn.close()
        got = await asyncio.wait_for(done, TIMEOUT)
        # (leaving, c1 goes first: c0 then takes partition 1 over, from its listener's
        # offset; what is asserted is what came before)
    assert {s for s, _ in got[0]} == {f"{topic}-0"}
    assert {s for s, _ in got[1]} == {f"{topic}-1"}
    assert sorted(b for i in (0, 1) for _, b in got[i]) == sorted(f"m{i}".encode()
                                                                   for i in range(40))


async def test_create_and_delete_a_super_stream(broker, names):
    """RabbitMQ 3.13's CreateSuperStream / DeleteSuperStream, through rstream's
    SuperStreamProducer: a direct exchange, its partition streams bound with their keys and
    ``x-stream-partition-order``; hashed publishes spread over them and a
    SuperStreamConsumer reads them all; a second create answers 0x05; delete removes the
    streams and the exchange. A topic is deleted the same way."""
    from rstream import SuperStreamConsumer, SuperStreamProducer
    from rstream.superstream import SuperStreamCreationOption
    name = names("ss")
    kw = dict(username="guest", password="guest", super_stream=name)

    async def key_of(message) -> str:
        return message.application_properties["k"]
    async with SuperStreamProducer(broker.host, broker.stream_port, **kw,
                                   routing_extractor=key_of,
                                   super_stream_creation_option=SuperStreamCreationOption(
                                       n_partitions=3)) as p:
        for i in range(30):
            await p.send(AMQPMessage(body=f"m{i}".encode(), application_properties={"k": f"{i}"}))
    parts = [f"{name}-{i}" for i in range(3)]
    reader, writer = await asyncio.open_connection(broker.host, broker.stream_port)
    try:                                # again: 0x05 (rstream's exists_ok reads it)
        assert await handshake(reader, writer) == f.OK
        writer.write(request(f.CREATE_SUPER_STREAM, 9, s(name) + struct.pack(">i", 3)
                             + b"".join(s(x) for x in parts) + struct.pack(">i", 3)
                             + b"".join(s(str(i)) for i in range(3)) + struct.pack(">i", 0)))
        assert (await read_response(reader))[2] == f.STREAM_ALREADY_EXISTS
    finally:
        writer.close()
    bindings = broker.api(f"exchanges/%2F/{name}/bindings/source")
    assert sorted((b["destination"], b["routing_key"], b["arguments"]) for b in bindings) == [
        (p, str(i), {"x-stream-partition-order": i}) for i, p in enumerate(parts)]
    got: list = []
    done = asyncio.get_running_loop().create_future()

    def on_message(msg, ctx):
        got.append((ctx.stream, body_of(msg)))
        if len(got) == 30 and not done.done():
            done.set_result(None)
    async with SuperStreamConsumer(broker.host, broker.stream_port, **kw) as c:
        await c.subscribe(on_message, decoder=amqp_decoder, offset_specification=(
            ConsumerOffsetSpecification(OffsetType.FIRST, None)))
        await asyncio.wait_for(done, TIMEOUT)
    assert sorted(b for _, b in got) == sorted(f"m{i}".encode() for i in range(30))
    assert len({s for s, _ in got}) > 1                 # spread over the partitions
    topic = names("topic")
    conn = amqp(broker)
    conn.channel().exchange_declare(topic, "x-partitioned", durable=True,
                                    arguments={"x-partitions": 2})
    conn.close()
    async with SuperStreamProducer(broker.host, broker.stream_port, username="guest",
                                   password="guest", super_stream=name,
                                   routing_extractor=key_of) as p:
        await p.delete_super_stream(name)
        await p.delete_super_stream(topic)
        for stream in parts + [f"{topic}-0", f"{topic}-1"]:
            assert not await p.stream_exists(stream)
    names_left = {x["name"] for x in broker.api("exchanges")}
    assert name not in names_left and topic not in names_left


async def test_a_traced_vhosts_stream_consumer_gets_every_message_once(broker, names):
    """With tracing on, deliveries go one by one (``Channel._send_delivery``): a stream
    protocol consumer still gets each message once, in order, at its offset, and the
    firehose has a ``deliver`` trace of each."""
    vhost, stream = names("traced"), names()
    assert broker.request("PUT", f"vhosts/{vhost}", {"tracing": True})[0] in (201, 204)
    assert broker.request("PUT", f"permissions/{vhost}/guest",
                          {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
    conn = pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.port, vhost))
    ch = conn.channel()
    traces = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(traces, "amq.rabbitmq.trace", f"deliver.{stream}")
    async with producer(broker, vhost=vhost) as p:
        await p.create_stream(stream)
        await p.send_batch(stream, [f"t{i}".encode() for i in range(20)])
    got = await collect(broker, stream, 20, vhost=vhost)
    assert got == [(i, f"t{i}".encode()) for i in range(20)]
    traced = []
    for method, props, body in ch.consume(traces, auto_ack=True, inactivity_timeout=TIMEOUT):
        assert method is not None, f"{len(traced)} of 20 deliveries traced"
        traced.append(body)
        if len(traced) == 20:
            break
    ch.cancel()
    conn.close()
    assert traced == [f"t{i}".encode() for i in range(20)]
    assert broker.request("DELETE", f"vhosts/{vhost}")[0] == 204


async def test_a_timestamp_in_the_middle_of_a_second_starts_at_the_first_message_stored_from_it(
        broker, names):
    """A subscription from a timestamp (ms) gets nothing stored before it, though the AMQP
    consumer behind it starts at the whole second (``x-stream-offset``'s timestamp has
    seconds): what was stored earlier in that second is dropped by the adapter."""
    stream = names()
    stamped: list = []                      # (offset, timestamp) of each message stored

    async def stamps_from_first(count: int) -> list:
        got: list = []
        done = asyncio.get_running_loop().create_future()

        def on_message(_msg, ctx):
            got.append((ctx.offset, ctx.timestamp))
            if len(got) >= count and not done.done():
                done.set_result(None)
        async with consumer(broker) as c:
            await c.subscribe(stream, on_message, offset_specification=(
                ConsumerOffsetSpecification(OffsetType.FIRST, None)))
            await asyncio.wait_for(done, TIMEOUT)
        return got

    def later_in_its_second():
        """A stored time with an earlier one in the same second, if there is one."""
        for _, earlier in stamped:
            for _, later in stamped:
                if earlier < later and earlier // 1000 == later // 1000:
                    return later
        return None
    async with producer(broker) as p:
        await p.create_stream(stream)
        while later_in_its_second() is None:
            assert len(stamped) < 500, "no two rounds stored in one second"
            for i in range(10):             # each its own commit round, a ms or more apart
                await p.send_wait(stream, b"m%d" % (len(stamped) + i))
            stamped = await stamps_from_first(len(stamped) + 10)
    since = later_in_its_second()
    want = [o for o, t in stamped if t >= since]
    got = await collect(broker, stream, len(want), offset=ConsumerOffsetSpecification(
        OffsetType.TIMESTAMP, since))
    assert [o for o, _ in got] == want
    assert want[0] > 0 and all(t < since for o, t in stamped if o < want[0])
