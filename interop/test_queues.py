"""Queues: declare (passive, durable, exclusive, auto-delete, server-named), counts, bind/unbind,
purge, delete with conditions, argument equivalence."""
from __future__ import annotations

import pytest
from pamqp import commands as spec
from pika.exceptions import ChannelClosedByBroker

from .conftest import drain, wait_until


def publish_confirmed(ch, queue, *bodies):
    ch.confirm_delivery()
    for b in bodies:
        ch.basic_publish("", queue, b)


def test_passive_declare_missing_is_404(conn, uniq):
    ch = conn.channel()
    name = uniq("q")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(name, passive=True)
    assert e.value.reply_code == 404
    assert e.value.reply_text == f"NOT_FOUND - no queue '{name}' in vhost '/'"
    assert conn.is_open


def test_passive_declare_existing_reports_counts(connect, uniq, cleanup):
    c = connect()
    ch = c.channel()
    name = cleanup.queue(uniq("q"))
    ok = ch.queue_declare(name)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (name, 0, 0)
    publish_confirmed(ch, name, b"1", b"2", b"3")
    consumer = connect().channel()
    consumer.basic_qos(prefetch_count=1)
    consumer.basic_consume(name, lambda *a: None)
    # message_count counts ready messages only: one is now unacked at the consumer.
    ok = wait_until(lambda: (lambda r: r if r.method.message_count == 2 else None)(
        ch.queue_declare(name, passive=True)))
    assert ok.method.consumer_count == 1
    # A non-passive redeclare reports the counts too.
    ok2 = ch.queue_declare(name)
    assert (ok2.method.message_count, ok2.method.consumer_count) == (2, 1)


def test_server_named_queue(ch):
    ok = ch.queue_declare("", exclusive=True)
    name = ok.method.queue
    assert name.startswith("amq.gen-")
    assert len(name) == len("amq.gen-") + 22  # 16 random bytes, url-safe base64
    assert ch.queue_declare(name, passive=True).method.queue == name


def test_declare_reserved_amq_prefix_is_403(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("amq.foo")
    assert e.value.reply_code == 403
    assert e.value.reply_text == "ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'"


def test_durable_queue_and_redeclare_non_durable_is_406(conn, uniq, cleanup, mgmt):
    ch = conn.channel()
    name = cleanup.queue(uniq("durable"))
    ch.queue_declare(name, durable=True)
    info = mgmt.get(f"/api/queues/%2F/{name}")
    assert info["durable"] is True and info["exclusive"] is False and info["auto_delete"] is False
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(name, durable=False)
    assert e.value.reply_code == 406
    assert e.value.reply_text == (f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' "
                                  "in vhost '/': received 'false' but current is 'true'")


def test_exclusive_queue_is_never_durable(ch, uniq, mgmt):
    name = uniq("excl")
    ch.queue_declare(name, exclusive=True, durable=True)
    # RabbitMQ 3.10 forces exclusive queues to be transient, so 'durable' is not checked for them.
    assert mgmt.get(f"/api/queues/%2F/{name}")["durable"] is False
    assert ch.queue_declare(name, exclusive=True, durable=False).method.queue == name


def test_exclusive_queue_locked_to_its_connection(connect, uniq):
    owner = connect()
    name = uniq("excl")
    owner.channel().queue_declare(name, exclusive=True)
    other = connect()
    for op in ("declare", "passive", "consume", "bind", "purge", "delete", "get"):
        ch = other.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            if op == "declare":
                ch.queue_declare(name, exclusive=True)
            elif op == "passive":
                ch.queue_declare(name, passive=True)
            elif op == "consume":
                ch.basic_consume(name, lambda *a: None)
            elif op == "bind":
                ch.queue_bind(name, "amq.fanout")
            elif op == "purge":
                ch.queue_purge(name)
            elif op == "delete":
                ch.queue_delete(name)
            else:
                ch.basic_get(name)
        assert e.value.reply_code == 405, op
        assert e.value.reply_text == (
            f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '/'. "
            "It could be originally declared on another connection or the exclusive property value "
            "does not match that of the original declaration."), op


def test_exclusive_queue_deleted_when_connection_closes(connect, uniq):
    owner = connect()
    name = uniq("excl")
    owner.channel().queue_declare(name, exclusive=True)
    owner.close()
    other = connect()

    def gone():  # each probe needs a fresh channel: a 404 closes it
        try:
            other.channel().queue_declare(name, passive=True)
            return False
        except ChannelClosedByBroker as exc:
            return exc.reply_code == 404

    wait_until(gone)


def test_exclusive_queue_survives_channel_close(connect, uniq):
    owner = connect()
    name = uniq("excl")
    ch = owner.channel()
    ch.queue_declare(name, exclusive=True)
    ch.close()
    assert owner.channel().queue_declare(name, passive=True).method.queue == name


def test_auto_delete_queue_deleted_after_last_consumer_cancels(connect, uniq):
    c = connect()
    ch = c.channel()
    name = uniq("ad")
    ch.queue_declare(name, auto_delete=True)
    # Never consumed from: it stays.
    assert ch.queue_declare(name, passive=True).method.queue == name
    t1 = ch.basic_consume(name, lambda *a: None)
    t2 = ch.basic_consume(name, lambda *a: None)
    ch.basic_cancel(t1)
    assert ch.queue_declare(name, passive=True).method.consumer_count == 1
    ch.basic_cancel(t2)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(name, passive=True)
    assert e.value.reply_code == 404


def test_bind_and_unbind(conn, uniq, cleanup):
    ch = conn.channel()
    ch.confirm_delivery()
    ex = cleanup.exchange(uniq("x"))
    ch.exchange_declare(ex, "direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, ex, "k")
    ch.queue_bind(q, ex, "k")  # idempotent
    ch.basic_publish(ex, "k", b"1")
    ch.queue_unbind(q, ex, "k")
    ch.queue_unbind(q, ex, "k")  # unbinding a missing binding is fine
    ch.basic_publish(ex, "k", b"2")
    assert [b for _, _, b in drain(ch, q, 1)] == [b"1"]
    assert ch.basic_get(q)[0] is None


def test_bind_to_missing_exchange_or_queue_is_404(conn, uniq):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    missing = uniq("missing")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_bind(q, missing, "k")
    assert e.value.reply_code == 404
    assert e.value.reply_text == f"NOT_FOUND - no exchange '{missing}' in vhost '/'"
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e2:
        ch.queue_bind(missing, "amq.direct", "k")
    assert e2.value.reply_code == 404
    assert e2.value.reply_text == f"NOT_FOUND - no queue '{missing}' in vhost '/'"


def test_bind_with_empty_queue_name_uses_last_declared(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind("", "amq.direct", q)  # "" = the channel's last declared queue
    ch.basic_publish("amq.direct", q, b"x")
    assert [b for _, _, b in drain(ch, q, 1)] == [b"x"]


def test_purge_returns_count(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(ch, q, *[b"m"] * 5)
    assert ch.queue_purge(q).method.message_count == 5
    assert ch.queue_purge(q).method.message_count == 0
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_purge_keeps_unacked(connect):
    c = connect()
    ch = c.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(ch, q, b"1", b"2", b"3")
    m, _, _ = ch.basic_get(q, auto_ack=False)
    assert ch.queue_purge(q).method.message_count == 2
    ch.basic_nack(m.delivery_tag, requeue=True)
    assert [b for _, _, b in drain(ch, q, 1)] == [b"1"]


def test_delete_returns_message_count(conn, uniq):
    ch = conn.channel()
    q = uniq("q")
    ch.queue_declare(q)
    publish_confirmed(ch, q, b"a", b"b")
    assert ch.queue_delete(q).method.message_count == 2


def test_delete_missing_queue_is_ok(ch, uniq):
    # RabbitMQ treats deleting a missing queue as success, with message_count 0.
    assert ch.queue_delete(uniq("missing")).method.message_count == 0


def test_delete_if_unused_is_406(conn, uniq, cleanup):
    ch = conn.channel()
    q = cleanup.queue(uniq("q"))
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None)
    other = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        other.queue_delete(q, if_unused=True)
    assert e.value.reply_code == 406
    assert e.value.reply_text == f"PRECONDITION_FAILED - queue '{q}' in vhost '/' in use"


def test_delete_if_empty_is_406(conn, uniq, cleanup):
    ch = conn.channel()
    q = cleanup.queue(uniq("q"))
    ch.queue_declare(q)
    publish_confirmed(ch, q, b"x")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_delete(q, if_empty=True)
    assert e.value.reply_code == 406
    assert e.value.reply_text == f"PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty"


def test_delete_if_empty_and_unused_when_both_hold(ch, uniq):
    q = uniq("q")
    ch.queue_declare(q)
    assert ch.queue_delete(q, if_unused=True, if_empty=True).method.message_count == 0


def test_inequivalent_argument_is_406(conn, uniq, cleanup):
    ch = conn.channel()
    q = cleanup.queue(uniq("q"))
    ch.queue_declare(q, arguments={"x-message-ttl": 1000})
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(q, arguments={"x-message-ttl": 2000})
    assert e.value.reply_code == 406
    assert e.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': "
        "received '2000' but current is '1000'")


def test_missing_argument_on_redeclare_is_406(conn, uniq, cleanup):
    ch = conn.channel()
    q = cleanup.queue(uniq("q"))
    ch.queue_declare(q, arguments={"x-max-length": 10})
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(q)
    assert e.value.reply_code == 406
    assert e.value.reply_text.startswith(
        f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': "
        "received none but current is the value '10' of type")


def test_invalid_argument_value_is_406(conn, uniq):
    ch = conn.channel()
    q = uniq("q")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(q, arguments={"x-message-ttl": -1})
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue " \
                                 f"'{q}' in vhost '/': {{value_negative,-1}}"


def test_unknown_x_argument_is_accepted(ch, uniq):
    q = uniq("q")
    ch.queue_declare(q, exclusive=True, arguments={"x-made-up": "anything", "plain": 1})
    assert ch.queue_declare(q, passive=True).method.queue == q


def test_queue_listed_by_management_api(ch, uniq, mgmt):
    q = ch.queue_declare(uniq("q"), exclusive=True, arguments={"x-max-length": 5}).method.queue
    info = mgmt.get(f"/api/queues/%2F/{q}")
    assert info["name"] == q and info["vhost"] == "/"
    assert info["exclusive"] is True and info["arguments"] == {"x-max-length": 5}


# ---------------------------------------------------------------------------------------------
# Where RabbitMQ 3.10's answers were found to differ from ours (the client libraries' suites)
# ---------------------------------------------------------------------------------------------

def test_unbind_after_the_queue_or_exchange_is_gone_is_ok(conn, uniq):
    """rabbit_binding:remove treats a missing source, destination or binding as removed:
    aio-pika's RPC close and many teardowns unbind after an auto-delete queue went away."""
    ch = conn.channel()
    ex = uniq("x")
    ch.exchange_declare(ex, "direct", auto_delete=True)
    q = ch.queue_declare(uniq("q"), auto_delete=True).method.queue
    ch.queue_bind(q, ex, "k")
    tag = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(tag)                 # the auto-delete queue goes, and the exchange with it
    with pytest.raises(ChannelClosedByBroker):
        conn.channel().queue_declare(q, passive=True)
    ch.queue_unbind(q, ex, "k")
    ch.queue_unbind(uniq("never"), uniq("never"), "k")
    ch.exchange_unbind(destination=uniq("never"), source=uniq("never"), routing_key="k")
    assert ch.is_open


def test_unbind_from_the_default_exchange_is_403(conn, uniq):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_unbind(q, "", "k")
    assert e.value.reply_code == 403
    assert e.value.reply_text == "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_unbind_of_another_connections_exclusive_queue(connect, uniq):
    """The exclusive owner is checked only when the binding exists (RabbitMQ's inner fun)."""
    owner = connect().channel()
    q = owner.queue_declare(uniq("excl"), exclusive=True).method.queue
    owner.queue_bind(q, "amq.direct", "bound")
    other = connect()
    ch = other.channel()
    ch.queue_unbind(q, "amq.direct", "not-bound")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_unbind(q, "amq.direct", "bound")
    assert e.value.reply_code == 405


@pytest.mark.parametrize("first, second", [(True, False), (False, True)])
def test_redeclare_with_other_exclusive_flag_is_405(conn, uniq, cleanup, first, second):
    """rabbit_amqqueue:assert_equivalence checks exclusive access strictly, before the other
    fields: a different 'exclusive' is 405 RESOURCE_LOCKED, not 406."""
    ch = conn.channel()
    name = uniq("q")
    if not first:
        cleanup.queue(name)       # an exclusive one goes with its connection
    ch.queue_declare(name, exclusive=first)
    with pytest.raises(ChannelClosedByBroker) as e:
        conn.channel().queue_declare(name, exclusive=second)
    assert e.value.reply_code == 405
    assert e.value.reply_text == (
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost "
        "'/'. It could be originally declared on another connection or the exclusive property "
        "value does not match that of the original declaration.")


def test_redeclaring_a_server_named_queue_is_403(conn):
    """The 'amq.' prefix is refused on any non-passive declare, even of a queue that exists."""
    ch = conn.channel()
    name = ch.queue_declare("", exclusive=True).method.queue
    with pytest.raises(ChannelClosedByBroker) as e:
        conn.channel().queue_declare(name, exclusive=True)
    assert e.value.reply_code == 403
    assert e.value.reply_text == \
        f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"
    assert conn.channel().queue_declare(name, passive=True).method.queue == name


def test_passive_declare_of_empty_name_is_404(conn):
    """queue.declare does not stand '' for the last declared queue (delete, bind ... do)."""
    ch = conn.channel()
    ch.queue_declare("", exclusive=True)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("", passive=True)
    assert e.value.reply_code == 404
    assert e.value.reply_text == "NOT_FOUND - no queue '' in vhost '/'"


def test_declare_direct_reply_to_is_not_passive_only(conn):
    ch = conn.channel()
    ok = ch.queue_declare("amq.rabbitmq.reply-to")
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == \
        ("amq.rabbitmq.reply-to", 0, 1)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("amq.rabbitmq.reply-to.nobody", passive=True)
    assert e.value.reply_code == 404
    assert e.value.reply_text == "NOT_FOUND - no queue 'amq.rabbitmq.reply-to.nobody' in vhost '/'"


def test_delete_ok_comes_before_the_cancel_of_the_channels_own_consumer(raw, uniq):
    """RabbitMQ answers queue.delete first, then cancels the consumers (consumer_cancel_notify);
    kombu raised ConsumerCancelled inside queue_delete when the cancel came first."""
    p = raw()
    p.handshake(client_properties={"capabilities": {"consumer_cancel_notify": True}})
    p.send_method(1, spec.Channel.Open())
    assert p.recv_method()[1].name == "Channel.OpenOk"
    name = uniq("q")
    p.send_method(1, spec.Queue.Declare(queue=name))
    assert p.recv_method()[1].name == "Queue.DeclareOk"
    p.send_method(1, spec.Basic.Consume(queue=name, consumer_tag="c1"))
    assert p.recv_method()[1].name == "Basic.ConsumeOk"
    p.send_method(1, spec.Queue.Delete(queue=name))
    first, second = p.recv_method(), p.recv_method()
    assert (first[1].name, second[1].name) == ("Queue.DeleteOk", "Basic.Cancel")
    assert second[1].consumer_tag == "c1"


def test_classic_queue_type_is_the_same_as_none(conn, uniq, cleanup):
    ch = conn.channel()
    name = cleanup.queue(uniq("q"))
    ch.queue_declare(name)
    ch.queue_declare(name, arguments={"x-queue-type": "classic"})


def test_queue_mode_must_be_repeated(conn, uniq, cleanup):
    ch = conn.channel()
    name = cleanup.queue(uniq("q"))
    ch.queue_declare(name, arguments={"x-queue-mode": "lazy"})
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(name)
    assert e.value.reply_code == 406
    assert e.value.reply_text == (f"PRECONDITION_FAILED - inequivalent arg 'x-queue-mode' for "
                                  f"queue '{name}' in vhost '/': received none but current is "
                                  "the value 'lazy' of type 'longstr'")
