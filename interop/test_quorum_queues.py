"""Quorum queues (``x-queue-type: quorum``) on one node, as RabbitMQ 4.0 has them.

What RabbitMQ 3.10 and 4.0 agree on runs against whichever broker the suite is pointed at
(``AMQP_URL``: the reference RabbitMQ 3.10 too). Where they differ, 4.0 is the reference and
the test runs against our broker only (the ``ours`` fixture starts one when the suite runs
against another broker); each such test says what 3.10 does instead. The restart tests start
their own brokers in both process layouts.
"""
from __future__ import annotations

import asyncio
import datetime

import aio_pika
import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from amqpbroker.testing import LAYOUTS, BrokerProcess

from .conftest import drain, q, wait_until

PERSISTENT = pika.BasicProperties(delivery_mode=2)
QUORUM = {"x-queue-type": "quorum"}


@pytest.fixture(scope="module")
def ours(_own_broker, tmp_path_factory):
    """The URL of our broker, whatever AMQP_URL says: for RabbitMQ 4.0 behaviour that the
    reference RabbitMQ 3.10 does not have."""
    if _own_broker is not None:
        yield _own_broker.url
        return
    b = BrokerProcess(tmp_path_factory.mktemp("quorum-ours")).start()
    try:
        yield b.url
    finally:
        b.stop()


@pytest.fixture
def och(ours):
    """A channel on our broker (see ``ours``)."""
    c = pika.BlockingConnection(pika.URLParameters(ours))
    yield c.channel()
    if c.is_open:
        c.close()


def declare(ch, name, **arguments):
    return ch.queue_declare(name, durable=True, arguments={**QUORUM, **arguments}).method.queue


def refusal(ch, name, *, durable=True, exclusive=False, auto_delete=False, **arguments):
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(name, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
                         arguments={**QUORUM, **arguments})
    return e.value.reply_code, e.value.reply_text


def get(ch, queue, auto_ack=False):
    """basic.get until a message comes (a requeue reaches the queue asynchronously)."""
    return drain(ch, queue, 1, auto_ack=auto_ack)[0]


def dead_letter_pair(ch, uniq, cleanup, **arguments):
    """A quorum queue dead-lettering through the default exchange to a classic DLQ."""
    dlq = cleanup.queue(ch.queue_declare(uniq("qq-dlq"), durable=True).method.queue)
    src = cleanup.queue(declare(ch, uniq("qq"), **{
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq, **arguments}))
    return src, dlq


# ------------------------------------------------------------------------------ declaration
def test_quorum_queue_is_declared_and_carries_messages(ch, uniq, cleanup):
    name = cleanup.queue(uniq("qq"))
    ok = ch.queue_declare(name, durable=True,
                          arguments={**QUORUM, "x-quorum-initial-group-size": 1})
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (name, 0, 0)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", name, f"m{i}".encode(), PERSISTENT)
    assert [b for _, _, b in drain(ch, name, 3)] == [b"m0", b"m1", b"m2"]
    # a redeclare with the same arguments is fine; passive works
    declare(ch, name, **{"x-quorum-initial-group-size": 1})
    assert ch.queue_declare(name, passive=True).method.message_count == 0


def test_management_shows_type_quorum(ch, mgmt, uniq, cleanup):
    name = cleanup.queue(declare(ch, uniq("qq"), **{"x-delivery-limit": 5}))
    info = wait_until(lambda: mgmt.get(f"/api/queues/%2F/{q(name)}"))
    assert info["type"] == "quorum"
    assert info["durable"] is True and info["auto_delete"] is False
    assert info["arguments"] == {"x-queue-type": "quorum", "x-delivery-limit": 5}


def test_definitions_import_and_export_keep_quorum_queues(ch, mgmt, uniq, cleanup):
    name = cleanup.queue(uniq("qq-def"))
    args = {"x-queue-type": "quorum", "x-delivery-limit": 7, "x-quorum-initial-group-size": 1}
    doc = {"queues": [{"name": name, "vhost": "/", "durable": True, "auto_delete": False,
                       "arguments": args}]}
    assert mgmt.request("POST", "/api/definitions", doc)[0] in (201, 204)
    assert mgmt.get(f"/api/queues/%2F/{q(name)}")["type"] == "quorum"
    exported = [x for x in mgmt.get("/api/definitions")["queues"] if x["name"] == name]
    assert len(exported) == 1 and exported[0]["arguments"] == args
    # the imported queue is the quorum queue a client declares
    declare(ch, name, **{"x-delivery-limit": 7, "x-quorum-initial-group-size": 1})


PROPERTY_REFUSALS = {
    # rabbit_quorum_queue:declare checks auto-delete, then exclusive, then durable
    "non-durable": (dict(durable=False), "non-durable"),
    "exclusive": (dict(exclusive=True), "exclusive-owner"),
    "auto-delete": (dict(auto_delete=True), "auto-delete"),
    "exclusive and auto-delete": (dict(exclusive=True, auto_delete=True), "auto-delete"),
    "exclusive and non-durable": (dict(durable=False, exclusive=True), "exclusive-owner"),
}


@pytest.mark.parametrize("case", PROPERTY_REFUSALS.values(), ids=PROPERTY_REFUSALS.keys())
def test_quorum_queue_properties_refused(conn, uniq, case):
    props, word = case
    name = uniq("qq")
    code, text = refusal(conn.channel(), name, **props)
    assert code == 406
    assert text == (f"PRECONDITION_FAILED - invalid property '{word}' for queue '{name}' in "
                    f"vhost '/'")
    with pytest.raises(ChannelClosedByBroker) as e:      # nothing was created
        conn.channel().queue_declare(name, passive=True)
    assert e.value.reply_code == 404


REFUSED_ARGUMENTS = {
    # arguments of classic queues and streams that quorum queues do not take
    "x-max-priority": {"x-max-priority": 5},
    "x-queue-mode": {"x-queue-mode": "lazy"},
    "x-queue-version": {"x-queue-version": 2},
    "x-queue-master-locator": {"x-queue-master-locator": "min-masters"},
    "x-max-age": {"x-max-age": "1D"},
    # the first refused one in the order the client sent them
    "x-queue-mode then x-max-priority": {"x-queue-mode": "lazy", "x-max-priority": 5},
}


@pytest.mark.parametrize("arguments", REFUSED_ARGUMENTS.values(), ids=REFUSED_ARGUMENTS.keys())
def test_arguments_quorum_queues_refuse(conn, uniq, arguments):
    name = uniq("qq")
    code, text = refusal(conn.channel(), name, **arguments)
    first = next(iter(arguments))
    assert code == 406
    assert text == (f"PRECONDITION_FAILED - invalid arg '{first}' for queue '{name}' in vhost "
                    f"'/' of queue type rabbit_quorum_queue")


def test_arguments_are_checked_before_properties(conn, uniq):
    name = uniq("qq")
    code, text = refusal(conn.channel(), name, durable=False, **{"x-max-priority": 5})
    assert (code, text) == (406, f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue "
                                 f"'{name}' in vhost '/' of queue type rabbit_quorum_queue")


BAD_VALUES = {
    "group size 0": ("x-quorum-initial-group-size", 0, "{value_zero,0}"),
    "group size -1": ("x-quorum-initial-group-size", -1, "{value_negative,-1}"),
    "group size string": ("x-quorum-initial-group-size", "x", '"expected integer, got longstr"'),
    "expires 0": ("x-expires", 0, "{value_zero,0}"),
    "max-length -1": ("x-max-length", -1, "{value_negative,-1}"),
    "overflow bogus": ("x-overflow", "bogus", "invalid_overflow"),
}


@pytest.mark.parametrize("case", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_argument_values_refused(conn, uniq, case):
    key, value, reason = case
    name = uniq("qq")
    code, text = refusal(conn.channel(), name, **{key: value})
    assert (code, text) == (406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{name}' "
                                 f"in vhost '/': {reason}")


ACCEPTED = {
    "message ttl": {"x-message-ttl": 60000},
    "overflow reject-publish": {"x-overflow": "reject-publish", "x-max-length": 10},
    "overflow reject-publish-dlx (drop-head in 4.0)": {"x-overflow": "reject-publish-dlx"},
    "single active consumer": {"x-single-active-consumer": True},
    "dead-letter strategy": {"x-dead-letter-strategy": "at-least-once",
                             "x-overflow": "reject-publish"},
    "leader locator": {"x-queue-leader-locator": "client-local"},
    "expires": {"x-expires": 600000},
    "in-memory length": {"x-max-in-memory-length": 5},
    "unlimited deliveries": {"x-delivery-limit": -1},
    "unknown argument": {"x-custom-thing": "kept"},
}


@pytest.mark.parametrize("arguments", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_arguments_quorum_queues_take(ch, uniq, cleanup, arguments):
    name = cleanup.queue(uniq("qq"))
    assert declare(ch, name, **arguments) == name
    declare(ch, name, **arguments)


def test_redeclare_must_be_equivalent(conn, uniq, cleanup):
    name = cleanup.queue(declare(conn.channel(), uniq("qq"), **{"x-delivery-limit": 3}))
    cases = [
        ({**QUORUM, "x-delivery-limit": 4}, "'x-delivery-limit'", "received '4' but current is '3'"),
        (QUORUM, "'x-delivery-limit'",
         "received none but current is the value '3' of type 'signedint'"),
        ({"x-delivery-limit": 3}, "'x-queue-type'",
         "received none but current is the value 'quorum' of type 'longstr'"),
        ({"x-queue-type": "classic", "x-delivery-limit": 3}, "'x-queue-type'",
         "received 'classic' but current is 'quorum'"),
    ]
    for arguments, key, detail in cases:
        with pytest.raises(ChannelClosedByBroker) as e:
            conn.channel().queue_declare(name, durable=True, arguments=arguments)
        assert (e.value.reply_code, e.value.reply_text) == (
            406, f"PRECONDITION_FAILED - inequivalent arg {key} for queue '{name}' in vhost "
                 f"'/': {detail}")


@pytest.mark.parametrize("flags", [dict(if_unused=True), dict(if_empty=True),
                                   dict(if_unused=True, if_empty=True)],
                         ids=["if-unused", "if-empty", "both"])
def test_delete_with_if_unused_or_if_empty_is_not_implemented(connect, uniq, cleanup, flags):
    c = connect()
    name = cleanup.queue(declare(c.channel(), uniq("qq")))
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        c.channel().queue_delete(name, **flags)
    flag = "if-unused" if flags.get("if_unused") else "if-empty"
    assert (e.value.reply_code, e.value.reply_text) == (
        540, f"NOT_IMPLEMENTED - cannot delete queue '{name}' in vhost '/'. queue.delete "
             f"operations with {flag} flag set are not supported by quorum queues")
    ch = connect().channel()
    assert ch.queue_declare(name, passive=True).method.queue == name     # still there
    ch.queue_delete(name)


@pytest.mark.parametrize("auto_ack", [False, True], ids=["manual ack", "auto ack"])
def test_consume_with_global_qos_is_not_implemented(connect, uniq, cleanup, auto_ack):
    # why celery has worker_detect_quorum_queues (test_celery_quorum.py)
    c = connect()
    name = cleanup.queue(declare(c.channel(), uniq("qq")))
    ch = c.channel()
    ch.basic_qos(prefetch_count=5, global_qos=True)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        ch.basic_consume(name, lambda *a: None, auto_ack=auto_ack)   # waits for consume-ok
    assert (e.value.reply_code, e.value.reply_text) == (
        540, f"NOT_IMPLEMENTED - queue '{name}' in vhost '/' does not support global qos")
    ch = connect().channel()
    ch.basic_qos(prefetch_count=5)                  # per consumer: fine
    ch.basic_consume(name, lambda *a: None)


# --------------------------------------------------------------------------- delivery limit
def test_poison_message_is_dead_lettered_past_the_delivery_limit(ch, uniq, cleanup):
    src, dlq = dead_letter_pair(ch, uniq, cleanup, **{"x-delivery-limit": 2})
    ch.basic_publish("", src, b"poison", pika.BasicProperties(delivery_mode=2,
                                                               headers={"app": "kept"}))
    seen = []
    for _ in range(3):           # limit 2: delivered three times, the third return kills it
        m, props, body = get(ch, src)
        seen.append((m.redelivered, (props.headers or {}).get("x-delivery-count")))
        ch.basic_nack(m.delivery_tag, requeue=True)
    # the first delivery's header is 0 in 3.10 and absent in 4.0: test_first_delivery_...
    assert [r for r, _ in seen] == [False, True, True]
    assert [n for _, n in seen[1:]] == [1, 2]
    # RabbitMQ writes the integers it adds as longs ('l'), which pika decodes as compat.long
    assert all(isinstance(n, pika.compat.long) for _, n in seen[1:])
    _, props, body = get(ch, dlq, auto_ack=True)
    assert body == b"poison"
    h = props.headers
    assert h["app"] == "kept"
    death = h["x-death"]
    assert len(death) == 1
    assert {k: death[0][k] for k in ("count", "reason", "queue", "exchange", "routing-keys")} == \
        {"count": 1, "reason": "delivery_limit", "queue": src, "exchange": "",
         "routing-keys": [src]}
    assert isinstance(death[0]["time"], datetime.datetime)
    assert isinstance(death[0]["count"], pika.compat.long)
    assert (h["x-first-death-reason"], h["x-first-death-queue"], h["x-first-death-exchange"]) \
        == ("delivery_limit", src, "")
    assert ch.queue_declare(src, durable=True, arguments={
        **QUORUM, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq,
        "x-delivery-limit": 2}).method.message_count == 0


def test_poison_message_without_dead_letter_exchange_is_dropped(ch, uniq, cleanup):
    src = cleanup.queue(declare(ch, uniq("qq"), **{"x-delivery-limit": 1}))
    ch.basic_publish("", src, b"poison", PERSISTENT)
    ch.basic_publish("", src, b"fine", PERSISTENT)
    for _ in range(2):
        m, _, body = get(ch, src)
        assert body == b"poison"
        ch.basic_reject(m.delivery_tag, requeue=True)
    m, _, body = get(ch, src, auto_ack=True)
    assert body == b"fine"
    wait_until(lambda: ch.queue_declare(src, passive=True).method.message_count == 0)
    assert ch.basic_get(src)[0] is None


def test_closed_channel_and_recover_count_as_returns(conn, uniq, cleanup):
    ch = conn.channel()
    src, dlq = dead_letter_pair(ch, uniq, cleanup, **{"x-delivery-limit": 2})
    ch.basic_publish("", src, b"m", PERSISTENT)
    other = conn.channel()
    get(other, src)
    other.close()                        # return 1: the channel's unacked message goes back
    m, props, _ = get(ch, src)
    assert m.redelivered and props.headers["x-delivery-count"] == 1
    ch.basic_recover(requeue=True)       # return 2
    m, props, _ = get(ch, src)
    assert props.headers["x-delivery-count"] == 2
    ch.close()                           # return 3: past the limit
    ch = conn.channel()
    _, props, body = get(ch, dlq, auto_ack=True)
    assert body == b"m" and props.headers["x-death"][0]["reason"] == "delivery_limit"


def test_reject_without_requeue_dead_letters_as_rejected(ch, uniq, cleanup):
    src, dlq = dead_letter_pair(ch, uniq, cleanup)
    ch.basic_publish("", src, b"no", PERSISTENT)
    m, _, _ = get(ch, src)
    ch.basic_reject(m.delivery_tag, requeue=False)
    _, props, _ = get(ch, dlq, auto_ack=True)
    assert props.headers["x-death"][0]["reason"] == "rejected"


async def test_aio_pika_consumer_and_poison_message(broker_url, uniq, cleanup):
    src_name, dlq_name = cleanup.queue(uniq("qq")), cleanup.queue(uniq("qq-dlq"))
    conn = await aio_pika.connect(broker_url)
    try:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=1)
        dlq = await ch.declare_queue(dlq_name, durable=True)
        src = await ch.declare_queue(src_name, durable=True, arguments={
            **QUORUM, "x-delivery-limit": 3, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq.name})
        await ch.default_exchange.publish(aio_pika.Message(b"ok"), routing_key=src.name)
        await ch.default_exchange.publish(aio_pika.Message(b"bad"), routing_key=src.name)
        processed, counts = [], []

        async def consume():
            async with src.iterator() as it:
                async for message in it:
                    if message.body == b"bad":
                        counts.append(message.headers.get("x-delivery-count"))
                        await message.nack(requeue=True)
                        continue
                    await message.ack()
                    processed.append(message.body)

        task = asyncio.create_task(consume())
        dead = await asyncio.wait_for(_get_one(dlq), 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert processed == [b"ok"]
        assert counts[1:] == [1, 2, 3]        # limit 3: four deliveries, the fourth return
        assert dead.body == b"bad"
        assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
    finally:
        await conn.close()


async def _get_one(queue):
    while True:
        m = await queue.get(no_ack=True, fail=False)
        if m is not None:
            return m
        await asyncio.sleep(0.02)


# ------------------------------------------ RabbitMQ 4.0 behaviour (3.10 differs): ours only
def test_first_delivery_has_no_delivery_count_header(och, uniq):
    # 4.0's x-delivery-count counts returns and is absent until the first one (rabbit_fifo_
    # client:add_delivery_count_header); 3.10 sends x-delivery-count 0 on the first delivery
    name = declare(och, uniq("qq"))
    try:
        och.basic_publish("", name, b"m", PERSISTENT)
        m, props, _ = get(och, name)
        assert not m.redelivered and "x-delivery-count" not in (props.headers or {})
        och.basic_nack(m.delivery_tag, requeue=True)
        m, props, _ = get(och, name, auto_ack=True)
        assert m.redelivered and props.headers == {"x-delivery-count": 1}
    finally:
        och.queue_delete(name)


def test_default_delivery_limit_is_20(och, uniq):
    # RabbitMQ 4.0 defaults x-delivery-limit to 20; 3.10 has no limit by default
    dlq = och.queue_declare(uniq("qq-dlq"), durable=True).method.queue
    name = declare(och, uniq("qq"), **{"x-dead-letter-exchange": "",
                                       "x-dead-letter-routing-key": dlq})
    try:
        och.basic_publish("", name, b"m", PERSISTENT)
        counts = []
        for _ in range(21):
            m, props, _ = get(och, name)
            counts.append((props.headers or {}).get("x-delivery-count"))
            och.basic_reject(m.delivery_tag, requeue=True)
        assert counts == [None] + list(range(1, 21))
        _, props, _ = get(och, dlq, auto_ack=True)
        assert props.headers["x-death"][0]["reason"] == "delivery_limit"
        assert och.basic_get(name)[0] is None
    finally:
        och.queue_delete(name)
        och.queue_delete(dlq)


def test_negative_delivery_limit_means_unlimited(och, uniq):
    # 4.0's rabbit_fifo turns a negative limit into none
    name = declare(och, uniq("qq"), **{"x-delivery-limit": -1})
    try:
        och.basic_publish("", name, b"m", PERSISTENT)
        for _ in range(25):
            m, _, _ = get(och, name)
            och.basic_reject(m.delivery_tag, requeue=True)
        _, props, _ = get(och, name, auto_ack=True)
        assert props.headers["x-delivery-count"] == 25
    finally:
        och.queue_delete(name)


def test_stream_arguments_refused(och, uniq):
    # 4.0 refuses every argument of streams; 3.10 refuses x-max-age only (the others are
    # checked by rabbit_stream_queue, which 3.10's quorum declaration never consults)
    for key, value in (("x-stream-max-segment-size-bytes", 1000), ("x-initial-cluster-size", 1)):
        name = uniq("qq")
        code, text = refusal(och.connection.channel(), name, **{key: value})
        assert (code, text) == (406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue "
                                     f"'{name}' in vhost '/' of queue type rabbit_quorum_queue")


# ----------------------------------------------------------------------------- restarts


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_restart_keeps_the_delivery_count(tmp_path, layout, how):
    b = BrokerProcess(tmp_path / "data", *layout).start()
    try:
        c = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = c.channel()
        dlq = ch.queue_declare("poison-dlq", durable=True).method.queue
        declare(ch, "work", **{"x-delivery-limit": 3, "x-dead-letter-exchange": "",
                               "x-dead-letter-routing-key": dlq})
        ch.confirm_delivery()
        ch.basic_publish("", "work", b"poison", PERSISTENT)
        # a quorum queue keeps transient messages too (and confirms them once durable)
        ch.basic_publish("", "work", b"transient", pika.BasicProperties(delivery_mode=1))
        for _ in range(2):
            m, _, _ = get(ch, "work")
            ch.basic_reject(m.delivery_tag, requeue=True)
        if how == "sigkill":
            # a confirmed publish to the same queue after the rejects: its commit round
            # writes and fsyncs the counts the rejects recorded (worker/committer.py)
            ch.basic_publish("", "work", b"barrier", PERSISTENT)
            c.close()
            b.kill()
        else:
            c.close()
            assert b.stop() == 0, "".join(b.output)
        b.start()
        c = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = c.channel()
        m, props, body = get(ch, "work")
        assert (body, m.redelivered, props.headers) == (b"poison", True, {"x-delivery-count": 2})
        ch.basic_reject(m.delivery_tag, requeue=True)
        m, props, body = get(ch, "work")
        assert (body, props.headers) == (b"poison", {"x-delivery-count": 3})
        ch.basic_reject(m.delivery_tag, requeue=True)       # the fourth return: over 3
        _, props, body = get(ch, dlq, auto_ack=True)
        assert body == b"poison"
        assert props.headers["x-death"][0]["reason"] == "delivery_limit"
        _, props, body = get(ch, "work", auto_ack=True)
        assert (body, props.delivery_mode) == (b"transient", 1)
        c.close()
    finally:
        b.stop()
