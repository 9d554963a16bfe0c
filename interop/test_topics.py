"""Partitioned topics (``x-partitioned`` exchanges) from unchanged pika and aio-pika code.

A topic is ours (RabbitMQ answers 503 "unknown exchange type"), so these tests start their own
broker in each process layout — one process, and 2 workers + 2 front-ends — whatever
``AMQP_URL`` says. Partitions are classic queues here (``x-partition-type: classic``): the
default, streams, is tested at the end of this file and where streams are.
"""
from __future__ import annotations

import asyncio
import json
import urllib.request

import aio_pika
import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, UnroutableError

from amqpbroker.partitioner import partition_of
from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.mgmt_client import ManagementClient, q

from .conftest import drain, wait_until

CLASSIC = {"x-partition-type": "classic"}


@pytest.fixture(scope="module", params=list(LAYOUTS.values()), ids=list(LAYOUTS))
def topic_broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("topics"), *request.param, management=True) as b:
        yield b


@pytest.fixture
def ch(topic_broker):
    conn = pika.BlockingConnection(pika.URLParameters(topic_broker.url))
    yield conn.channel()
    if conn.is_open:
        conn.close()


@pytest.fixture
def topic(ch, uniq):
    """A fresh topic name; the topic is deleted at teardown (with its partitions)."""
    names = []

    def make(partitions: int = 6, **arguments) -> str:
        name = uniq("orders")
        ch.exchange_declare(name, exchange_type="x-partitioned",
                            arguments={"x-partitions": partitions, **CLASSIC, **arguments})
        names.append(name)
        return name
    yield make
    conn = ch.connection
    if conn.is_open:
        cleanup = conn.channel()
        for name in names:
            cleanup.exchange_delete(name)


def counts(ch, name: str, n: int) -> list[int]:
    return [ch.queue_declare(f"{name}-{i}", passive=True).method.message_count
            for i in range(n)]


def mgmt(b: BrokerProcess, method: str, path: str, body=None):
    return ManagementClient(f"http://127.0.0.1:{b.management_port}").request(
        method, path, "guest", "guest", body=body)[:2]


# ------------------------------------------------------------------ routing
def test_keyed_publishes_land_where_kafkas_partitioner_puts_them(ch, topic):
    name = topic(6)
    ch.confirm_delivery()
    keys = [f"customer-{i}" for i in range(60)] + ["21", "foobar", "abc", "ключ"]
    for key in keys:
        ch.basic_publish(name, key, key.encode(), mandatory=True)
    for i in range(6):
        got = sorted(body.decode() for _, _, body in drain(ch, f"{name}-{i}",
                                                           counts(ch, name, 6)[i]))
        assert got == sorted(k for k in keys if partition_of(k.encode(), 6) == i)
    assert counts(ch, name, 6) == [0] * 6


def test_the_partition_key_header_wins_over_the_routing_key(ch, topic):
    name = topic(6)
    ch.confirm_delivery()
    for i in range(30):
        ch.basic_publish(name, "ignored", str(i).encode(), pika.BasicProperties(
            headers={"x-partition-key": f"user-{i % 5}"}))
    expected = [0] * 6
    for i in range(30):
        expected[partition_of(f"user-{i % 5}".encode(), 6)] += 1
    assert counts(ch, name, 6) == expected
    assert expected[partition_of(b"ignored", 6)] != 30      # the routing key was not used


def test_order_per_key_holds_within_its_partition(ch, topic):
    name = topic(4)
    ch.confirm_delivery()
    keys = [f"k{j}" for j in range(8)]
    for seq in range(50):
        for key in keys:
            ch.basic_publish(name, key, json.dumps([key, seq]).encode())
    seen: dict[str, list[int]] = {}
    for i, n in enumerate(counts(ch, name, 4)):
        for _, _, body in drain(ch, f"{name}-{i}", n):
            key, seq = json.loads(body)
            assert partition_of(key.encode(), 4) == i
            seen.setdefault(key, []).append(seq)
    assert seen == {key: list(range(50)) for key in keys}


def test_keyless_publishes_spread_evenly(ch, topic):
    name = topic(6)
    ch.confirm_delivery()
    for i in range(60):
        ch.basic_publish(name, "", str(i).encode())
    # round-robin per front-end process: one connection, so exactly even
    assert counts(ch, name, 6) == [10] * 6


# ------------------------------------------------------------------ layout and declare
def test_the_layout_is_a_super_streams(topic_broker, ch, topic):
    name = topic(3)
    status, defs = mgmt(topic_broker, "GET", "/api/definitions")
    assert status == 200
    [ex] = [e for e in defs["exchanges"] if e["name"] == name]
    assert ex["type"] == "x-partitioned" and ex["durable"] is True
    assert ex["arguments"] == {"x-partitions": 3, "x-partition-type": "classic",
                               "x-super-stream": True}
    bindings = sorted((b["destination"], b["routing_key"], b["arguments"])
                      for b in defs["bindings"] if b["source"] == name)
    assert bindings == [(f"{name}-{i}", str(i), {"x-stream-partition-order": i})
                        for i in range(3)]
    queues = {qu["name"]: qu for qu in defs["queues"] if qu["name"].startswith(name + "-")}
    assert sorted(queues) == [f"{name}-{i}" for i in range(3)]
    assert all(qu["durable"] and qu["arguments"] == {"x-queue-type": "classic"}
               for qu in queues.values())


def test_partitions_go_round_the_workers(topic_broker, ch, topic):
    name = topic(4)
    workers = [topic_broker.api(f"queues/%2F/{q(f'{name}-{i}')}")["worker"] for i in range(4)]
    w = max(1, len(topic_broker.worker_pids))
    assert workers == [(workers[0] + i) % w for i in range(4)]
    assert len(set(workers)) == w


def test_redeclare(ch, topic):
    name = topic(6)
    # the same count (durable or not: a topic is always durable) is fine
    ch.exchange_declare(name, exchange_type="x-partitioned",
                        arguments={"x-partitions": 6, **CLASSIC})
    ch.exchange_declare(name, exchange_type="x-partitioned", passive=True)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(name, exchange_type="x-partitioned",
                            arguments={"x-partitions": 8, **CLASSIC})
    assert e.value.reply_code == 406
    assert e.value.reply_text == (f"PRECONDITION_FAILED - inequivalent arg 'x-partitions' for "
                                  f"exchange '{name}' in vhost '/': received '8' but current "
                                  f"is '6'")


def test_redeclare_as_another_type(topic_broker, topic):
    name = topic(2)
    conn = pika.BlockingConnection(pika.URLParameters(topic_broker.url))
    try:
        with pytest.raises(ChannelClosedByBroker) as e:
            conn.channel().exchange_declare(name, exchange_type="direct")
        assert e.value.reply_text == (f"PRECONDITION_FAILED - inequivalent arg 'type' for "
                                      f"exchange '{name}' in vhost '/': received 'direct' but "
                                      f"current is 'x-partitioned'")
    finally:
        conn.close()


BAD_ARGUMENTS = [
    ({}, "missing (a topic needs its number of partitions)"),
    ({"x-partitions": 0}, "{value_zero,0}"),
    ({"x-partitions": -2}, "{value_negative,-2}"),
    ({"x-partitions": "6"}, '"expected integer, got longstr"'),
    ({"x-partitions": 1001}, "{value_too_large,1001} (at most 1000)"),
]


@pytest.mark.parametrize("arguments,reason", BAD_ARGUMENTS,
                         ids=[r for _, r in BAD_ARGUMENTS])
def test_bad_partition_counts_are_refused(topic_broker, ch, uniq, arguments, reason):
    name = uniq("bad")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(name, exchange_type="x-partitioned", arguments=arguments)
    assert e.value.reply_code == 406
    assert e.value.reply_text == (f"PRECONDITION_FAILED - invalid arg 'x-partitions' for "
                                  f"exchange '{name}' in vhost '/': {reason}")
    assert not any(x["name"] == name for x in topic_broker.api("exchanges"))
    assert not any(qu["name"].startswith(name) for qu in topic_broker.api("queues"))


def test_a_bad_partition_type_is_refused(ch, uniq):
    name = uniq("bad")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(name, exchange_type="x-partitioned",
                            arguments={"x-partitions": 2, "x-partition-type": "lazy"})
    assert e.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-partition-type' for exchange '{name}' in vhost "
        f"'/': \"unsupported partition type 'lazy'\" (expected stream, classic, quorum)")


def test_a_queue_in_the_way_is_refused_and_an_equal_one_adopted(topic_broker, ch, uniq):
    name = uniq("orders")
    ch.queue_declare(f"{name}-1", durable=True, arguments={"x-max-length": 5})
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(name, exchange_type="x-partitioned",
                            arguments={"x-partitions": 3, **CLASSIC})
    assert e.value.reply_text == (f"PRECONDITION_FAILED - cannot make partition '{name}-1' of "
                                  f"topic '{name}' in vhost '/': a queue of that name exists "
                                  f"and is not one")
    ch = ch.connection.channel()
    assert not any(qu["name"] in (f"{name}-0", f"{name}-2")
                   for qu in topic_broker.api("queues"))
    ch.queue_delete(f"{name}-1")
    ch.queue_declare(f"{name}-1", durable=True, arguments={"x-queue-type": "classic"})
    ch.basic_publish("", f"{name}-1", b"was here before")
    ch.exchange_declare(name, exchange_type="x-partitioned",
                        arguments={"x-partitions": 3, **CLASSIC})
    assert counts(ch, name, 3) == [0, 1, 0]
    ch.exchange_delete(name)


def test_declaring_a_topic_needs_permissions_on_its_partitions(topic_broker, ch, uniq):
    user = uniq("u")
    name = uniq("orders")
    assert mgmt(topic_broker, "PUT", f"/api/users/{user}",
                {"password": "pw", "tags": ""})[0] == 201
    assert mgmt(topic_broker, "PUT", f"/api/permissions/%2F/{user}",
                {"configure": f"^{name}$", "write": ".*", "read": ".*"})[0] == 201
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        topic_broker.host, topic_broker.port, "/", pika.PlainCredentials(user, "pw")))
    try:
        with pytest.raises(ChannelClosedByBroker) as e:
            conn.channel().exchange_declare(name, exchange_type="x-partitioned",
                                            arguments={"x-partitions": 2, **CLASSIC})
        assert e.value.reply_code == 403
        assert e.value.reply_text == (f"ACCESS_REFUSED - access to queue '{name}-0' in vhost "
                                      f"'/' refused for user '{user}'")
    finally:
        conn.close()
        mgmt(topic_broker, "DELETE", f"/api/users/{user}")
    assert not any(x["name"] == name for x in topic_broker.api("exchanges"))


# ------------------------------------------------------------------ delete
def test_deleting_the_topic_deletes_its_partitions(topic_broker, ch, uniq):
    name = uniq("orders")
    ch.exchange_declare(name, exchange_type="x-partitioned",
                        arguments={"x-partitions": 3, **CLASSIC})
    ch.confirm_delivery()
    ch.basic_publish(name, "k", b"m")
    ch.exchange_delete(name)
    for i in range(3):
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_declare(f"{name}-{i}", passive=True)
        assert e.value.reply_code == 404
        ch = ch.connection.channel()
    assert not any(x["name"] == name for x in topic_broker.api("exchanges"))
    assert mgmt(topic_broker, "GET", f"/api/topics/%2F/{name}")[0] == 404


def test_if_unused_counts_only_bindings_besides_the_partitions(ch, topic, uniq):
    name = topic(2)
    ch.exchange_delete(name, if_unused=True)
    ch.exchange_declare(name, exchange_type="x-partitioned",
                        arguments={"x-partitions": 2, **CLASSIC})
    other = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(other, name, "0")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_delete(name, if_unused=True)
    assert e.value.reply_text == f"PRECONDITION_FAILED - exchange '{name}' in vhost '/' in use"


# ------------------------------------------------------------------ aio-pika
async def test_aio_pika_publishes_and_consumes_per_partition(topic_broker, uniq):
    name = uniq("orders")
    async with await aio_pika.connect(topic_broker.url) as conn:
        channel = await conn.channel()          # publisher confirms on by default
        await channel.declare_exchange(name, "x-partitioned",
                                       arguments={"x-partitions": 3, **CLASSIC})
        exchange = await channel.get_exchange(name)
        sent = {key: [f"{key}:{seq}" for seq in range(20)] for key in ("a", "b", "c", "d")}
        for seq in range(20):
            for key in sent:
                await exchange.publish(aio_pika.Message(sent[key][seq].encode()), key)
        got: dict[str, list[str]] = {}
        for i in range(3):
            queue = await channel.declare_queue(f"{name}-{i}", passive=True)
            expected = sum(20 for key in sent if partition_of(key.encode(), 3) == i)
            async with queue.iterator() as it:
                n = 0
                while n < expected:
                    message = await asyncio.wait_for(it.__anext__(), 5)
                    async with message.process():
                        key = message.body.decode().split(":")[0]
                        assert partition_of(key.encode(), 3) == i
                        got.setdefault(key, []).append(message.body.decode())
                    n += 1
        assert got == sent
        await exchange.delete()
    wait_until(lambda: not any(qu["name"].startswith(name)
                               for qu in topic_broker.api("queues")))


def test_a_partition_deleted_by_hand_routes_nowhere(topic_broker, ch, topic):
    name = topic(3)
    key = next(f"k{i}" for i in range(100) if partition_of(f"k{i}".encode(), 3) == 1)
    other = next(f"k{i}" for i in range(100) if partition_of(f"k{i}".encode(), 3) == 0)
    ch.queue_delete(f"{name}-1")
    ch.confirm_delivery()
    with pytest.raises(UnroutableError) as e:
        ch.basic_publish(name, key, b"lost", mandatory=True)
    [returned] = e.value.messages
    assert (returned.method.reply_code, returned.method.reply_text, returned.body) == \
        (312, "NO_ROUTE", b"lost")
    ch.basic_publish(name, other, b"kept", mandatory=True)
    assert ch.queue_declare(f"{name}-0", passive=True).method.message_count == 1


def test_queues_named_like_partitions_but_not_ones_are_plain_queues(ch, topic):
    name = topic(2)
    for qname in (f"{name}-²", f"{name}-01", f"{name}-2", f"{name}-x"):
        ch.queue_declare(qname, exclusive=True)
        ch.basic_publish("", qname, b"m")
        assert ch.queue_declare(qname, passive=True).method.message_count == 1


# ------------------------------------------------------------------ the default: stream partitions
def test_by_default_partitions_are_streams_read_from_any_offset(topic_broker, ch, uniq):
    """A topic declared with only ``x-partitions`` has stream partitions: keyed messages are
    kept after they are read, in publish order per key, and every delivery names its offset."""
    name = uniq("events")
    ch.exchange_declare(name, exchange_type="x-partitioned", arguments={"x-partitions": 3})
    try:
        ch.confirm_delivery()
        keys = ["alice", "bob", "carol", "dave"]
        for i in range(40):
            key = keys[i % 4]
            ch.basic_publish(name, key, f"{key}:{i}".encode())
        for i in range(3):
            ok = ch.queue_declare(f"{name}-{i}", passive=True)
            assert ok.method.message_count == sum(
                10 for k in keys if partition_of(k.encode(), 3) == i)
        exported = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{topic_broker.management_port}/api/queues/%2F/{name}-0",
            headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})).read())
        assert exported["type"] == "stream"

        for read in range(2):                   # read twice: acks delete nothing from a stream
            for i in range(3):
                expected = [f"{k}:{n}" for n in range(40) for k in [keys[n % 4]]
                            if partition_of(k.encode(), 3) == i]
                got = []
                ch.basic_qos(prefetch_count=100)
                tag = ch.basic_consume(
                    f"{name}-{i}", lambda c, m, p, b: (got.append((p.headers, b.decode())),
                                                      c.basic_ack(m.delivery_tag)),
                    arguments={"x-stream-offset": "first"})
                wait_until(lambda: ch.connection.process_data_events(0.05) or
                           len(got) >= len(expected), 10,
                           message=f"partition {i}: {len(got)} of {len(expected)}")
                ch.basic_cancel(tag)
                assert [b for _, b in got] == expected
                assert [h["x-stream-offset"] for h, _ in got] == list(range(len(expected)))
    finally:
        ch.exchange_delete(name)
