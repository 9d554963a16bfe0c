"""Publisher confirms and transactions (tx.select / commit / rollback)."""
from __future__ import annotations

import pytest
from pamqp import body as pbody
from pamqp import commands as spec
from pamqp import frame as pframe
from pamqp import header as pheader
from pika.exceptions import ChannelClosedByBroker, NackError

from .conftest import drain, wait_until


def raw_channel(raw):
    p = raw()
    p.handshake()
    p.send_method(1, spec.Channel.Open())
    assert p.recv_method()[1].name == "Channel.OpenOk"
    return p


def raw_publish(routing_key: str, body: bytes, exchange: str = "") -> bytes:
    return (pframe.marshal(spec.Basic.Publish(exchange=exchange, routing_key=routing_key), 1)
            + pframe.marshal(pheader.ContentHeader(0, len(body), spec.Basic.Properties()), 1)
            + pframe.marshal(pbody.ContentBody(body), 1))


def read_confirms(p, n: int) -> dict[int, str]:
    """Read basic.ack/basic.nack frames until tags 1..n are all settled; expand 'multiple'."""
    settled: dict[int, str] = {}
    while len(settled) < n:
        _, m = p.recv_method()
        assert m.name in ("Basic.Ack", "Basic.Nack"), m
        kind = "ack" if m.name == "Basic.Ack" else "nack"
        tags = range(1, m.delivery_tag + 1) if m.multiple else [m.delivery_tag]
        for t in tags:
            settled.setdefault(t, kind)
    return settled


def test_confirm_select_and_acks_cover_every_publish(raw):
    p = raw_channel(raw)
    p.send_method(1, spec.Confirm.Select())
    assert p.recv_method()[1].name == "Confirm.SelectOk"
    p.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
    q = p.recv_method()[1].queue
    n = 200
    p.send(b"".join(raw_publish(q, b"m%d" % i) for i in range(n)))
    settled = read_confirms(p, n)
    # Delivery tags count publishes from 1; RabbitMQ may coalesce them with multiple=True.
    assert settled == {i: "ack" for i in range(1, n + 1)}


def test_confirms_for_unroutable_are_acks(raw):
    p = raw_channel(raw)
    p.send_method(1, spec.Confirm.Select())
    p.recv_method()
    p.send(raw_publish("no-such-queue-anywhere", b"x"))
    _, m = p.recv_method()
    assert (m.name, m.delivery_tag) == ("Basic.Ack", 1)


def test_nack_on_reject_publish_overflow(raw):
    p = raw_channel(raw)
    p.send_method(1, spec.Queue.Declare(queue="", exclusive=True,
                                        arguments={"x-max-length": 2, "x-overflow": "reject-publish"}))
    q = p.recv_method()[1].queue
    p.send_method(1, spec.Confirm.Select())
    p.recv_method()
    p.send(b"".join(raw_publish(q, b"m%d" % i) for i in range(4)))
    settled = read_confirms(p, 4)
    assert settled == {1: "ack", 2: "ack", 3: "nack", 4: "nack"}


def test_pika_confirm_nack_raises(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True,
                         arguments={"x-max-length": 0, "x-overflow": "reject-publish"}).method.queue
    ch.confirm_delivery()
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"refused")


async def test_aiormq_confirms(achannel):
    q = (await achannel.queue_declare("", exclusive=True)).queue
    confirmations = [await achannel.basic_publish(b"x", routing_key=q) for _ in range(3)]
    assert all(isinstance(c, spec.Basic.Ack) for c in confirmations)
    assert [c.delivery_tag for c in confirmations] == [1, 2, 3]


def test_confirm_select_on_tx_channel_is_406(conn):
    ch = conn.channel()
    ch.tx_select()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.confirm_delivery()
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - cannot switch from tx to confirm mode"


def test_tx_select_on_confirm_channel_is_406(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.tx_select()
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - cannot switch from confirm to tx mode"


def test_tx_commit_without_select_is_406(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.tx_commit()
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - channel is not transactional"


def test_tx_rollback_without_select_is_406(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.tx_rollback()
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - channel is not transactional"


def test_tx_publish_visible_only_after_commit(conn):
    observer = conn.channel()
    q = observer.queue_declare("", exclusive=True).method.queue
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", q, b"1")
    tx.basic_publish("", q, b"2")
    assert observer.queue_declare(q, passive=True).method.message_count == 0
    tx.tx_commit()
    # After commit-ok the messages are enqueued.
    assert observer.queue_declare(q, passive=True).method.message_count == 2
    assert [b for _, _, b in drain(observer, q, 2)] == [b"1", b"2"]


def test_tx_rollback_discards_publishes(conn):
    observer = conn.channel()
    q = observer.queue_declare("", exclusive=True).method.queue
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", q, b"discarded")
    tx.tx_rollback()
    tx.basic_publish("", q, b"kept")
    tx.tx_commit()
    assert [b for _, _, b in drain(observer, q, 1)] == [b"kept"]
    assert observer.basic_get(q)[0] is None


def test_tx_acks_apply_on_commit_and_rollback_keeps_them_unacked(conn):
    setup = conn.channel()
    q = setup.queue_declare("", exclusive=True).method.queue
    setup.confirm_delivery()
    setup.basic_publish("", q, b"a")
    setup.basic_publish("", q, b"b")
    tx = conn.channel()
    tx.tx_select()
    (ma, _, _), (mb, _, _) = drain(tx, q, 2, auto_ack=False)
    tx.basic_ack(ma.delivery_tag)
    tx.tx_rollback()
    # The rolled-back ack is forgotten: the message is still unacked on this channel ...
    tx.basic_ack(mb.delivery_tag)
    tx.tx_commit()
    tx.close()
    # ... so closing the channel requeues 'a' but not the committed 'b'.
    ((m, _, body),) = drain(setup, q, 1)
    assert body == b"a" and m.redelivered is True
    assert setup.basic_get(q)[0] is None


def test_tx_mandatory_unroutable_returned_at_commit(conn, uniq):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append(m.reply_code))
    ch.tx_select()
    ch.basic_publish("amq.direct", uniq("nowhere"), b"x", mandatory=True)
    ch.tx_commit()
    wait_until(lambda: conn.process_data_events(time_limit=0.02) or returned)
    assert returned == [312]


def test_a_publish_refused_right_after_an_ack_is_nacked(raw, uniq):
    """The ack of a durable queue waits for its commit; a publish refused behind it (the
    queue is full) must still be nacked, not confirmed once the commit is done. (Found by
    the queue model test: the refusal was dropped when the confirm watermark did not move.)"""
    q = uniq("refused-behind-ack")
    p = raw_channel(raw)
    p.send_method(1, spec.Queue.Declare(queue=q, durable=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish"}))
    assert p.recv_method()[1].name == "Queue.DeclareOk"
    try:
        p.send_method(1, spec.Confirm.Select())
        p.recv_method()
        p.send(raw_publish(q, b"a"))
        assert read_confirms(p, 1) == {1: "ack"}
        p.send_method(1, spec.Basic.Get(queue=q))
        get_ok = p.recv_method()[1]
        assert get_ok.name == "Basic.GetOk"
        p.recv_frame()                      # header
        p.recv_frame()                      # body
        p.send(raw_publish(q, b"b"))        # the queue is full again
        _, m = p.recv_method()
        assert (m.name, m.delivery_tag) == ("Basic.Ack", 2)
        # one write: the ack of 'a' (a commit round on a durable queue), then 'c'
        p.send(pframe.marshal(spec.Basic.Ack(delivery_tag=get_ok.delivery_tag), 1)
               + raw_publish(q, b"c"))
        _, m = p.recv_method()
        assert (m.name, m.delivery_tag) == ("Basic.Nack", 3)
    finally:
        p.send_method(1, spec.Queue.Delete(queue=q))
        p.recv_method()
