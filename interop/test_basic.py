"""basic.*: publish (mandatory), consume (exclusive, no-ack, tags, priorities, cancel), get,
ack/nack/reject, recover, qos, redelivery, large messages."""
from __future__ import annotations

import os

import aiormq
import pika
import pytest
from pamqp import commands as spec
from pika.exceptions import ChannelClosedByBroker, UnroutableError

from .conftest import await_until, drain, wait_until


def pump(conn, cond, timeout=5.0):
    wait_until(lambda: conn.process_data_events(time_limit=0.02) or cond(), timeout)


def new_queue(ch, *bodies, **kw):
    q = ch.queue_declare("", exclusive=True, **kw).method.queue
    if bodies:
        ch.confirm_delivery()
        for b in bodies:
            ch.basic_publish("", q, b)
    return q


# ---------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------

def test_mandatory_unroutable_returned_312_no_route(conn, uniq):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, p, b)))
    key = uniq("nowhere")
    ch.basic_publish("amq.direct", key, b"lost", pika.BasicProperties(message_id="m1"),
                     mandatory=True)
    pump(conn, lambda: returned)
    ((m, props, body),) = returned
    assert (m.reply_code, m.reply_text, m.exchange, m.routing_key) == (312, "NO_ROUTE", "amq.direct", key)
    assert (props.message_id, body) == ("m1", b"lost")


def test_mandatory_unroutable_with_confirms_is_returned_then_acked(conn, uniq):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(UnroutableError) as e:
        ch.basic_publish("amq.direct", uniq("nowhere"), b"x", mandatory=True)
    (msg,) = e.value.messages
    assert (msg.method.reply_code, msg.method.reply_text) == (312, "NO_ROUTE")


def test_non_mandatory_unroutable_is_silently_dropped(conn, uniq):
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.direct", uniq("nowhere"), b"x")  # confirmed, no return
    assert ch.is_open


def open_raw_channel(raw):
    p = raw()
    p.handshake()
    p.send_method(1, spec.Channel.Open())
    assert p.recv_method()[1].name == "Channel.OpenOk"
    return p


def test_immediate_flag_is_not_implemented_540(raw):
    p = open_raw_channel(raw)
    from pamqp import frame as pframe, header as pheader
    p.send_method(1, spec.Basic.Publish(exchange="", routing_key="x", immediate=True))
    p.send(pframe.marshal(pheader.ContentHeader(0, 0, spec.Basic.Properties()), 1))
    _, close = p.recv_method()
    # RabbitMQ removed 'immediate' in 3.0: a connection error.
    assert close.name == "Connection.Close"
    assert (close.reply_code, close.reply_text) == (540, "NOT_IMPLEMENTED - immediate=true")


# ---------------------------------------------------------------------------------------------
# Consuming
# ---------------------------------------------------------------------------------------------

def test_exclusive_consumer_blocks_others_403(conn):
    ch = conn.channel()
    q = new_queue(ch)
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    other = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        other.basic_consume(q, lambda *a: None)
    assert e.value.reply_code == 403
    assert e.value.reply_text == f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"


def test_exclusive_consume_when_consumers_exist_403(conn):
    ch = conn.channel()
    q = new_queue(ch)
    ch.basic_consume(q, lambda *a: None)
    other = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        other.basic_consume(q, lambda *a: None, exclusive=True)
    assert e.value.reply_code == 403
    assert e.value.reply_text == f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"


def test_consume_missing_queue_404(conn, uniq):
    ch = conn.channel()
    name = uniq("missing")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_consume(name, lambda *a: None)
    assert e.value.reply_code == 404
    assert e.value.reply_text == f"NOT_FOUND - no queue '{name}' in vhost '/'"


def test_no_ack_consume_removes_messages(conn):
    ch = conn.channel()
    q = new_queue(ch, b"1", b"2")
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    pump(conn, lambda: len(got) == 2)
    ch.close()
    ch2 = conn.channel()
    assert ch2.queue_declare(q, passive=True).method.message_count == 0


def test_server_generated_consumer_tag(raw):
    p = raw()
    p.handshake()
    p.send_method(1, spec.Channel.Open())
    p.recv_method()
    p.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
    _, ok = p.recv_method()
    p.send_method(1, spec.Basic.Consume(queue=ok.queue, consumer_tag=""))
    _, cok = p.recv_method()
    assert cok.name == "Basic.ConsumeOk"
    assert cok.consumer_tag.startswith("amq.ctag-")
    p.send_method(1, spec.Basic.Consume(queue=ok.queue, consumer_tag=""))
    _, cok2 = p.recv_method()
    assert cok2.consumer_tag.startswith("amq.ctag-") and cok2.consumer_tag != cok.consumer_tag


async def test_duplicate_consumer_tag_is_530(aconn):
    ch = await aconn.channel()
    q = (await ch.queue_declare("", exclusive=True)).queue
    await ch.basic_consume(q, lambda m: None, consumer_tag="dup")
    ch.consumers.pop("dup")  # get past aiormq's own client-side check
    with pytest.raises(aiormq.exceptions.ConnectionNotAllowed) as e:
        await ch.basic_consume(q, lambda m: None, consumer_tag="dup")
    # A connection error (530) in RabbitMQ, not a channel error; aiormq maps the code to the class.
    assert e.value.args[0] == "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"


def test_round_robin_between_consumers(conn):
    ch = conn.channel()
    q = new_queue(ch)
    got = []
    for name in ("a", "b", "c"):
        ch.basic_consume(q, lambda c, m, p, b, name=name: got.append(name), auto_ack=True)
    for i in range(9):
        ch.basic_publish("", q, str(i).encode())
    pump(conn, lambda: len(got) == 9)
    assert got == ["a", "b", "c"] * 3


def test_consumer_priorities(conn):
    ch = conn.channel()
    q = new_queue(ch)
    got = []
    lo = conn.channel()
    hi = conn.channel()
    lo.basic_qos(prefetch_count=10)
    hi.basic_qos(prefetch_count=2)
    lo.basic_consume(q, lambda c, m, p, b: got.append(("lo", b)))
    hi.basic_consume(q, lambda c, m, p, b: got.append(("hi", b)), arguments={"x-priority": 10})
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    pump(conn, lambda: len(got) == 5)
    # The high-priority consumer takes all it can (prefetch 2); only then does 'lo' get any.
    assert sorted(b for w, b in got if w == "hi") == [b"0", b"1"]
    assert sorted(b for w, b in got if w == "lo") == [b"2", b"3", b"4"]


def test_cancel_stops_deliveries(conn):
    ch = conn.channel()
    q = new_queue(ch)
    ch.confirm_delivery()  # so that the message count below includes the publish
    got = []
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.basic_publish("", q, b"1")
    pump(conn, lambda: got)
    ch.basic_cancel(tag)
    ch.basic_publish("", q, b"2")
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    assert got == [b"1"]


async def test_cancel_unknown_tag_is_ok(achannel):
    ok = await achannel.basic_cancel("never-existed")
    assert ok.consumer_tag == "never-existed"


def test_broker_cancel_when_queue_deleted(conn, uniq):
    ch = conn.channel()
    q = ch.queue_declare(uniq("q")).method.queue
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(q, lambda *a: None)
    conn.channel().queue_delete(q)
    pump(conn, lambda: cancelled)
    assert cancelled == [tag]  # consumer_cancel_notify: basic.cancel from the broker
    assert ch.is_open


async def test_broker_cancel_when_queue_deleted_aiormq(aconn, uniq):
    ch = await aconn.channel()
    q = (await ch.queue_declare(uniq("q"))).queue
    ok = await ch.basic_consume(q, lambda m: None)
    assert ok.consumer_tag in ch.consumers
    other = await aconn.channel()
    await other.queue_delete(q)
    # aiormq drops the consumer when it receives the broker's basic.cancel.
    await await_until(lambda: ok.consumer_tag not in ch.consumers)
    assert not ch.is_closed


# ---------------------------------------------------------------------------------------------
# basic.get
# ---------------------------------------------------------------------------------------------

def test_get_and_get_empty(ch):
    q = new_queue(ch, b"a", b"b")
    m, props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"a" and m.message_count == 1 and m.redelivered is False
    assert (m.exchange, m.routing_key) == ("", q)
    m, props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"b" and m.message_count == 0
    assert ch.basic_get(q) == (None, None, None)


async def test_get_empty_aiormq(achannel):
    q = (await achannel.queue_declare("", exclusive=True)).queue
    msg = await achannel.basic_get(q)
    assert isinstance(msg.delivery, spec.Basic.GetEmpty)


def test_get_missing_queue_404(conn, uniq):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_get(uniq("missing"))
    assert e.value.reply_code == 404


# ---------------------------------------------------------------------------------------------
# ack / nack / reject
# ---------------------------------------------------------------------------------------------

def get_all(ch, q, n):
    return drain(ch, q, n, auto_ack=False)


def test_ack_multiple(ch):
    q = new_queue(ch, b"1", b"2", b"3", b"4")
    msgs = get_all(ch, q, 4)
    ch.basic_ack(msgs[2][0].delivery_tag, multiple=True)  # acks 1..3
    ch.close()
    ch2 = ch.connection.channel()
    ((m, _, body),) = drain(ch2, q, 1)
    assert body == b"4" and m.redelivered is True


def test_delivery_tags_are_per_channel_and_increase(conn):
    a = conn.channel()
    q = new_queue(a, b"1", b"2", b"3")
    tags = [m.delivery_tag for m, _, _ in get_all(a, q, 2)]
    b = conn.channel()
    (m3, _, _), = get_all(b, q, 1)
    assert tags == [1, 2] and m3.delivery_tag == 1


def test_reject_requeue_sets_redelivered(ch):
    q = new_queue(ch, b"x")
    ((m, _, _),) = get_all(ch, q, 1)
    assert m.redelivered is False
    ch.basic_reject(m.delivery_tag, requeue=True)
    ((m2, _, body),) = get_all(ch, q, 1)
    assert body == b"x" and m2.redelivered is True and m2.delivery_tag == 2


def test_reject_without_requeue_discards(ch):
    q = new_queue(ch, b"x")
    ((m, _, _),) = get_all(ch, q, 1)
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert ch.basic_get(q)[0] is None


def test_nack_multiple_requeue_preserves_order(ch):
    q = new_queue(ch, b"1", b"2", b"3")
    msgs = get_all(ch, q, 3)
    ch.basic_nack(msgs[-1][0].delivery_tag, multiple=True, requeue=True)
    again = get_all(ch, q, 3)
    assert [b for _, _, b in again] == [b"1", b"2", b"3"]
    assert all(m.redelivered for m, _, _ in again)


def test_nack_multiple_without_requeue(ch):
    q = new_queue(ch, b"1", b"2", b"3")
    msgs = get_all(ch, q, 3)
    ch.basic_nack(msgs[1][0].delivery_tag, multiple=True, requeue=False)  # drops 1 and 2
    ch.basic_nack(msgs[2][0].delivery_tag, requeue=True)
    ((m, _, body),) = get_all(ch, q, 1)
    assert body == b"3" and m.redelivered


def test_ack_multiple_zero_acks_all(ch):
    q = new_queue(ch, b"1", b"2")
    get_all(ch, q, 2)
    ch.basic_ack(0, multiple=True)
    ch.basic_recover(requeue=True)
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_unknown_delivery_tag_is_406(conn):
    ch = conn.channel()
    new_queue(ch)
    ch.basic_ack(99)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_qos(prefetch_count=1)  # any synchronous call surfaces the async close
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - unknown delivery tag 99"


def test_double_ack_is_406(conn):
    ch = conn.channel()
    q = new_queue(ch, b"x")
    ((m, _, _),) = get_all(ch, q, 1)
    ch.basic_ack(m.delivery_tag)
    ch.basic_ack(m.delivery_tag)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_qos(prefetch_count=1)
    assert e.value.reply_code == 406
    assert e.value.reply_text == f"PRECONDITION_FAILED - unknown delivery tag {m.delivery_tag}"


def test_ack_of_no_ack_delivery_is_406(conn):
    ch = conn.channel()
    q = new_queue(ch, b"x")
    m, _, _ = ch.basic_get(q, auto_ack=True)
    ch.basic_ack(m.delivery_tag)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_qos(prefetch_count=1)
    assert e.value.reply_code == 406


def test_recover_requeues_unacked(ch):
    q = new_queue(ch, b"1", b"2")
    get_all(ch, q, 2)
    ch.basic_recover(requeue=True)
    again = get_all(ch, q, 2)
    assert [b for _, _, b in again] == [b"1", b"2"]
    assert all(m.redelivered for m, _, _ in again)


def test_recover_without_requeue_is_not_implemented(raw):
    p = open_raw_channel(raw)
    p.send_method(1, spec.Basic.Recover(requeue=False))
    _, close = p.recv_method()
    assert close.name == "Connection.Close"
    assert (close.reply_code, close.reply_text) == (540, "NOT_IMPLEMENTED - requeue=false")


# ---------------------------------------------------------------------------------------------
# qos
# ---------------------------------------------------------------------------------------------

def test_prefetch_per_consumer(conn):
    ch = conn.channel()
    q1, q2 = new_queue(ch, *[b"m"] * 5), new_queue(ch, *[b"m"] * 5)
    c = conn.channel()
    c.basic_qos(prefetch_count=2)  # global=False: each new consumer gets 2
    got = {q1: 0, q2: 0}

    def on(c_, m, p, b):
        got[m.routing_key] += 1

    c.basic_consume(q1, on)
    c.basic_consume(q2, on)
    pump(conn, lambda: sum(got.values()) == 4)
    conn.process_data_events(time_limit=0.2)  # would let extra deliveries arrive if any were sent
    assert got == {q1: 2, q2: 2}


def test_prefetch_global_per_channel(conn):
    ch = conn.channel()
    q1, q2 = new_queue(ch, *[b"m"] * 5), new_queue(ch, *[b"m"] * 5)
    c = conn.channel()
    c.basic_qos(prefetch_count=3, global_qos=True)  # RabbitMQ: shared across the channel's consumers
    tags = []
    c.basic_consume(q1, lambda c_, m, p, b: tags.append(m.delivery_tag))
    c.basic_consume(q2, lambda c_, m, p, b: tags.append(m.delivery_tag))
    pump(conn, lambda: len(tags) == 3)
    conn.process_data_events(time_limit=0.2)
    assert len(tags) == 3
    c.basic_ack(tags[0])
    pump(conn, lambda: len(tags) == 4)
    left = ch.queue_declare(q1, passive=True).method.message_count + \
        ch.queue_declare(q2, passive=True).method.message_count
    assert left == 6


def test_prefetch_size_nonzero_is_not_implemented(conn):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        ch.basic_qos(prefetch_size=1024)
    assert e.value.reply_code == 540
    assert e.value.reply_text == "NOT_IMPLEMENTED - prefetch_size!=0 (1024)"


# ---------------------------------------------------------------------------------------------
# Redelivery on channel / connection close
# ---------------------------------------------------------------------------------------------

def test_unacked_redelivered_when_channel_closes(conn):
    ch = conn.channel()
    q = new_queue(ch, b"1", b"2")
    c = conn.channel()
    got = []
    c.basic_consume(q, lambda c_, m, p, b: got.append((b, m.redelivered)))
    pump(conn, lambda: len(got) == 2)
    assert got == [(b"1", False), (b"2", False)]
    c.close()
    again = drain(ch, q, 2)
    assert [(b, m.redelivered) for m, _, b in again] == [(b"1", True), (b"2", True)]


def test_unacked_redelivered_when_connection_closes(connect, uniq, cleanup):
    owner = connect()
    ch = owner.channel()
    q = cleanup.queue(uniq("q"))
    ch.queue_declare(q)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"1")
    consumer = connect()
    got = []
    consumer.channel().basic_consume(q, lambda c_, m, p, b: got.append(b))
    pump(consumer, lambda: got)
    consumer.close()
    ((m, _, body),) = drain(ch, q, 1)
    assert body == b"1" and m.redelivered is True


# ---------------------------------------------------------------------------------------------
# Large messages
# ---------------------------------------------------------------------------------------------

def test_64_mib_message_round_trip(conn):
    # RabbitMQ 3.10's default max_message_size is 128 MiB (134217728), so 64 MiB is allowed.
    ch = conn.channel()
    q = new_queue(ch)
    body = os.urandom(1024) * (64 * 1024)
    ch.basic_publish("", q, body, pika.BasicProperties(content_type="application/octet-stream"))
    ((m, props, got),) = drain(ch, q, 1, timeout=60)
    assert len(got) == 64 * 1024 * 1024 and got == body
    assert props.content_type == "application/octet-stream"


def test_properties_round_trip(ch):
    q = new_queue(ch)
    props = pika.BasicProperties(
        content_type="text/plain", content_encoding="utf-8", headers={"a": 1, "b": "s", "c": [1, "x"],
                                                                      "d": {"e": True}},
        delivery_mode=2, priority=3, correlation_id="corr", reply_to="rt", expiration="60000",
        message_id="mid", timestamp=1700000000, type="t", user_id="guest", app_id="app")
    ch.basic_publish("", q, b"p", props)
    ((_, got, _),) = drain(ch, q, 1)
    for field in ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
                  "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
                  "user_id", "app_id"):
        assert getattr(got, field) == getattr(props, field), field


def test_user_id_must_match_login_406(conn):
    ch = conn.channel()
    q = new_queue(ch)
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="someone-else"))
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - user_id property set to 'someone-else' but authenticated user was 'guest'"


def test_impersonator_may_set_another_user_id(connect, mgmt, broker_url, uniq):
    """A user tagged 'impersonator' may publish with any user_id (rabbit_channel)."""
    from .conftest import q as quote, url_with
    user = uniq("imp")
    assert mgmt.put(f"/api/users/{quote(user)}", {"password": "pw", "tags": "impersonator"}) \
        in (201, 204)
    try:
        assert mgmt.put(f"/api/permissions/%2F/{quote(user)}",
                        {"configure": ".*", "write": ".*", "read": ".*"}) in (201, 204)
        c = connect(url_with(broker_url, user=user, password="pw"))
        ch = c.channel()
        q = new_queue(ch)
        ch.confirm_delivery()
        ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="someone-else"))
        _, props, _ = drain(ch, q, 1)[0]
        assert props.user_id == "someone-else"
        c.close()               # before its user goes (RabbitMQ then closes it: 320)
    finally:
        mgmt.delete(f"/api/users/{quote(user)}")


def test_direct_reply_to_without_its_consumer_is_refused_at_publish_in_a_tx(conn):
    ch = conn.channel()
    ch.tx_select()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("", "anywhere", b"x", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
        ch.queue_declare("", exclusive=True)      # the publish's error arrives by now
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"


@pytest.mark.parametrize("key, value, reason", [
    ("x-priority", "high", '"expected integer, got longstr"'),
    ("x-cancel-on-ha-failover", 1, "{unacceptable_type,signedint}"),
])
def test_invalid_consumer_argument_reply_texts(conn, key, value, reason):
    ch = conn.channel()
    q = new_queue(ch)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_consume(q, lambda *a: None, arguments={key: value})
    assert e.value.reply_code == 406
    assert e.value.reply_text == \
        f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/': {reason}"
