"""The partition client alone: fed the host's events, it answers with actions
(``frontend/actions.py``) and changes nothing but its own state; then the same actions
applied in a whole in-process broker (``conftest.py``'s ``client``: a session, a
``LocalLink``, a partition host on disk).

The client under test is a real ``PartitionClient`` with real queue references and consumers
of a real metadata owner; its link only records the commands it sends (there is no host: the
test plays it).
"""
from __future__ import annotations

import asyncio

import pytest
from pamqp import commands as C
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from amqpbroker import contract as c
from amqpbroker import errors
from amqpbroker.config import Config
from amqpbroker.frontend.actions import (AlarmChanged, CancelConsumer, DeadLetter, Deliver,
                                         DeliverMany, DeliverRun, GroupRevocationDone, PublishersResumed, QueueFlow,
                                         QueueGone, Resubscribe, ShareLost, WatermarkMoved)
from amqpbroker.frontend.consumer import Consumer
from amqpbroker.frontend.partition_client import (LINK_WINDOW, WINDOW, HostGone,
                                                  PartitionClient)
from amqpbroker.frontend.queue_ref import QueueRef
from amqpbroker.storage.record import Record
from amqpbroker.supervisor.owner import MetadataOwner


class RecordingLink:
    """The host's end of the link, played by the test: what the client sent."""

    def __init__(self):
        self.sent: list = []

    def send(self, msg) -> None:
        self.sent.append(msg)


class Side:
    """A client on a recording link, a queue of the default vhost on it, a consumer of it."""

    def __init__(self, tmp_path, loop):
        self.owner = MetadataOwner(Config(data_dir=str(tmp_path)), loop)
        self.client = PartitionClient(0, loop)
        self.link = RecordingLink()
        self.client.connect(self.link)
        self.owner.start([self.client])
        self.vhost = self.owner.vhosts["/"]
        self.queue = self.ref("jobs")
        self.consumer = self.consume(self.queue, "c1")

    def ref(self, name: str, arguments=None) -> QueueRef:
        return QueueRef(self.vhost, name, durable=True, exclusive_owner=None,
                        auto_delete=False, arguments=arguments or {},
                        directory=f"/nonexistent/{name}", client=self.client,
                        qid=self.client.new_qid())

    def consume(self, queue: QueueRef, tag: str, channel=None) -> Consumer:
        consumer = Consumer(tag, channel, queue, no_ack=False, exclusive=False, priority=0,
                            prefetch=0, arguments={})
        queue.subscribe(consumer, WINDOW)
        return consumer


@pytest.fixture
async def side(tmp_path):
    s = Side(tmp_path, asyncio.get_running_loop())
    yield s
    s.owner.close()


def record(body: bytes = b"body") -> Record:
    return Record(1700000000000, "", "jobs", b"", body, 0)


def test_a_delivery_to_a_consumer_it_knows_is_the_event_itself(side):
    dlv = c.Dlv(cid=side.consumer.cid, qid=side.queue.qid, offset=7, redelivered=True,
                record=record())
    sent = len(side.link.sent)
    action = side.client.handle(dlv)
    assert action is dlv and type(action) is Deliver
    assert len(side.link.sent) == sent                  # the host is told nothing


def test_a_delivery_after_its_consumer_went_goes_back_to_the_queue(side):
    stream = side.ref("events", {"x-queue-type": "stream"})
    for qid, back in ((side.queue.qid, c.Reject), (stream.qid, c.GroupSettle)):
        dlv = c.Dlv(cid=999, qid=qid, offset=7, redelivered=False, record=record())
        assert side.client.handle(dlv) is None
        sent = side.link.sent[-1]
        assert type(sent) is back and sent.offsets == [7] and sent.seq == side.client.seq
    assert side.link.sent[-2].requeue is True           # a queue's: requeued
    assert side.link.sent[-1].kind == 1                 # a stream's: handed back


def test_a_batch_of_deliveries_reaches_each_consumer_as_one_lot_before_the_next_event(side):
    client, queue, c1 = side.client, side.queue, side.consumer
    c2 = side.consume(queue, "c2", channel=object())        # on another channel than c1
    applied: list = []
    client.apply = lambda _client, action: applied.append(action)

    def dlv(cid: int, offset: int):
        return c.Dlv(cid=cid, qid=queue.qid, offset=offset, redelivered=False, record=record())

    flow = c.Flow(qid=queue.qid, on=True)
    events = [dlv(c1.cid, 1), dlv(c2.cid, 2), dlv(c1.cid, 3), dlv(999, 4), dlv(c1.cid, 5), flow,
              dlv(c2.cid, 6)]
    client.on_events(events)
    # per consumer in order; a lone one is the event itself; the unknown consumer's is
    # handed back, and the flow event comes after the deliveries before it
    assert applied == [DeliverMany(c1.cid, [events[0], events[2]]), events[1], events[4],
                       QueueFlow(queue, True), events[6]]
    back = side.link.sent[-1]
    assert type(back) is c.Reject and back.offsets == [4] and back.requeue is True


def test_consumers_of_one_channel_get_their_deliveries_in_the_queues_order(side):
    """Lots never reorder a channel: three consumers of one queue on one channel, fed round
    robin, see the deliveries one by one in the queue's order (a lot per consumer would
    send c1's before c2's: interop test_round_robin_between_consumers caught it)."""
    client, queue, c1 = side.client, side.queue, side.consumer
    c2, c3 = side.consume(queue, "c2"), side.consume(queue, "c3")   # all on channel None
    applied: list = []
    client.apply = lambda _client, action: applied.append(action)
    events = [c.Dlv(cid=cons.cid, qid=queue.qid, offset=i, redelivered=False, record=record())
              for i, cons in enumerate([c1, c2, c3] * 2 + [c1, c1])]
    client.on_events(events)
    assert applied == events[:6] + [DeliverMany(c1.cid, events[6:])]


def test_a_confirm_moves_the_watermark_for_the_channels_listening(side):
    client = side.client
    channel = object()                  # any listener: the client only names it
    numbers = [client.publish(side.queue.qid, record(), 0, True) for _ in range(3)]
    assert numbers == [1, 2, 3]
    client.listeners.add(channel)
    action = client.handle(c.Confirm(upto=2, seen=3, nacked=[2]))
    assert action == WatermarkMoved([channel])
    assert client.reached(2) and not client.reached(3)
    assert client.take_nack(2) and not client.take_nack(2)     # named once, then forgotten
    assert not client.take_nack(1)
    # no move: nothing to do, but a refusal ahead of the watermark is kept for later
    assert client.handle(c.Confirm(upto=2, seen=3, nacked=[3])) is None
    assert client.handle(c.Confirm(upto=3, seen=3, nacked=[])) == WatermarkMoved([channel])
    assert client.take_nack(3)


def test_a_backlogged_link_resumes_its_publishers_when_the_host_catches_up(side):
    client = side.client
    for _ in range(LINK_WINDOW + 1):
        client.publish(side.queue.qid, record(), 0, False)
    assert client.backlogged
    publisher = object()
    client.flow_waiters.add(publisher)          # Session.throttle(client)
    still = client.seq - LINK_WINDOW // 2 - 1
    assert client.handle(c.Confirm(upto=0, seen=still, nacked=[])) is None
    assert client.backlogged
    channel = object()
    client.listeners.add(channel)
    actions = client.handle(c.Confirm(upto=still + 1, seen=still + 1, nacked=[]))
    assert actions == [PublishersResumed([publisher], client), WatermarkMoved([channel])]
    assert not client.backlogged and not client.flow_waiters


def test_queue_and_consumer_events_name_what_they_are_about(side):
    client, queue, consumer = side.client, side.queue, side.consumer
    assert client.handle(c.Flow(qid=queue.qid, on=True)) == QueueFlow(queue, True)
    assert client.handle(c.Flow(qid=999, on=True)) is None
    assert client.handle(c.Gone(qid=queue.qid, reason="expired")) == QueueGone(queue, "expired")
    assert client.handle(c.Gone(qid=999, reason="expired")) is None
    assert client.handle(c.Cancel(cid=consumer.cid)) == CancelConsumer(consumer)
    assert consumer.cid not in client.consumers
    assert client.handle(c.Cancel(cid=consumer.cid)) is None    # already gone
    assert not queue.backlogged and not queue.deleted           # nothing applied


def test_node_events_become_actions_for_the_broker(side):
    client = side.client
    r = record()
    dlx = c.Dlx(qid=side.queue.qid, vhost="/", exchange="dlx", keys=["k"], reason="expired",
                record=r, settle=False, offset=0)
    assert client.handle(dlx) == DeadLetter("/", "dlx", ["k"], r, "expired")
    held = dlx._replace(settle=True, offset=7)      # at-least-once: the source comes along
    assert client.handle(held) == DeadLetter("/", "dlx", ["k"], r, "expired",
                                             (side.queue.qid, 7))
    assert client.handle(c.Alarm(name="disk", detail="low")) == AlarmChanged("disk@worker0",
                                                                             "low")
    assert client.handle(c.Alarm(name="disk", detail=None)) == AlarmChanged("disk@worker0",
                                                                            None)
    revoked = c.GroupRevoked(qid=side.queue.qid, group="g", member="m", epoch=3)
    assert client.handle(revoked) == GroupRevocationDone(client, revoked)


async def test_a_reply_settles_its_request_and_asks_nothing_else(side):
    client = side.client
    ok = client.request(c.Purge, qid=side.queue.qid)
    bad = client.request(c.Purge, qid=side.queue.qid)
    assert client.handle(c.Reply(req=side.link.sent[-2].req, ok=True, value=5)) is None
    assert client.handle(c.Reply(req=side.link.sent[-1].req, ok=False,
                                 value=errors.to_reply(errors.NotFound("no queue", 50, 30))))\
        is None
    assert await ok == 5
    with pytest.raises(errors.ChannelError) as caught:
        await bad
    assert (caught.value.reply_code, caught.value.text) == (404, "no queue")


async def test_losing_the_host_refuses_what_was_in_flight_and_cancels_consumers(side):
    client, queue, consumer = side.client, side.queue, side.consumer
    share = side.consume(queue, "member-share")
    share.member = object()                     # a consumer group member's share
    channel, publisher = object(), object()
    for _ in range(LINK_WINDOW + 1):            # backlogged: a publisher waits
        client.publish(queue.qid, record(), 0, True)
    client.flow_waiters.add(publisher)
    client.listeners.add(channel)
    client.handle(c.Confirm(upto=2, seen=2, nacked=[]))
    waiting = client.request(c.Purge, qid=queue.qid)
    epoch = client.epoch

    actions = client.lose_host()

    assert actions == [WatermarkMoved([channel]), CancelConsumer(consumer), ShareLost(share),
                       QueueFlow(queue, False), PublishersResumed([publisher], client)]
    assert client.link is None and client.epoch == epoch + 1
    with pytest.raises(HostGone):
        await waiting
    assert client.reached(client.seq)
    assert not client.take_nack(2)                           # confirmed before
    assert all(client.take_nack(n) for n in range(3, client.seq + 1))
    assert list(client.consumers) == [share.cid]             # kept for resubscribe
    # without a host, a publish is refused at once
    n = client.publish(queue.qid, record(), 0, True)
    assert client.reached(n) and client.take_nack(n)

    # the host is back: the share is subscribed again, once
    client.connect(side.link)
    assert client.shares_to_resubscribe() == [Resubscribe(client, share, WINDOW)]
    assert client.shares_to_resubscribe() == []

    # a second loss: what the first one refused is still refused
    later = client.publish(queue.qid, record(), 0, True)
    client.lose_host()
    assert client.take_nack(later) and client.take_nack(5)


# ---------------------------------------------------------------- applied, in one process
async def test_a_cancel_of_the_host_reaches_the_client_as_basic_cancel(client):
    client.send(1, C.Channel.Open())
    await client.expect(C.Channel.OpenOk)
    client.send(1, C.Queue.Declare(queue="jobs"), C.Basic.Consume(queue="jobs",
                                                                   consumer_tag="c1"))
    await client.expect(C.Basic.ConsumeOk)
    partition = client.session.broker.partitions[0]
    [cid] = partition.consumers
    partition.on_event(c.Cancel(cid=cid))
    [cancel] = await client.expect(C.Basic.Cancel)
    assert cancel.consumer_tag == "c1"


async def test_a_queue_gone_on_its_host_is_gone_for_the_channel(client):
    client.send(1, C.Channel.Open())
    await client.expect(C.Channel.OpenOk)
    client.send(1, C.Queue.Declare(queue="jobs"))
    await client.expect(C.Queue.DeclareOk)
    partition = client.session.broker.partitions[0]
    [qid] = partition.refs
    partition.on_event(c.Gone(qid=qid, reason="expired"))
    client.send(1, C.Queue.Declare(queue="jobs", passive=True))
    [close] = await client.expect(C.Channel.Close)
    assert close.reply_code == 404


async def test_a_lost_host_nacks_the_confirms_it_owed_and_cancels_consumers(client):
    client.send(1, C.Channel.Open())
    await client.expect(C.Channel.OpenOk)
    client.send(1, C.Confirm.Select(), C.Queue.Declare(queue="jobs", durable=True),
                C.Basic.Consume(queue="jobs", consumer_tag="c1"))
    await client.expect(C.Basic.ConsumeOk)
    partition = client.session.broker.partitions[0]
    link = partition.link
    # the host has the persistent publish, but not fsynced, when it is lost (same loop turn)
    client.send(1, C.Basic.Publish(exchange="", routing_key="jobs"),
                ContentHeader(0, 1, C.Basic.Properties(delivery_mode=2)), ContentBody(b"x"))
    assert not partition.reached(partition.seq)
    partition.host_lost()
    [nack] = await client.expect(C.Basic.Nack)
    assert nack.delivery_tag == 1
    [cancel] = await client.expect(C.Basic.Cancel)
    assert cancel.consumer_tag == "c1"
    partition.connect(link)     # the host in this process did not die: the fixture closes it


class HoldingLink(RecordingLink):
    """A link that takes lots, as the in-process one does (``hold`` / ``release``)."""

    def hold(self) -> None:
        self.sent.append("hold")

    def release(self) -> None:
        self.sent.append("release")


async def test_held_publishes_to_one_queue_go_as_one_pubs_before_any_other_command(tmp_path):
    client = PartitionClient(0, asyncio.get_running_loop())
    link = HoldingLink()
    client.connect(link)
    r = [record(b"%d" % i) for i in range(6)]
    client.hold()
    assert [client.publish(1, x, 0, True) for x in r[:3]] == [1, 2, 3]
    client.publish(2, r[3], 0, True)                 # another queue: the run ends
    client.publish(2, r[4], 0, False)                # not tracked: a run of its own
    assert client.ack(2, [7]) == 6                   # any other command: the run goes first
    client.publish(1, r[5], 0, True)
    client.release()
    client.publish(1, r[0], 0, True)                 # not held: one Pub
    assert link.sent == [
        "hold",
        c.Pubs(qid=1, seq=1, priority=0, track=True, flags=0, records=r[:3]),
        c.Pub(qid=2, seq=4, priority=0, track=True, flags=0, record=r[3]),
        c.Pub(qid=2, seq=5, priority=0, track=False, flags=0, record=r[4]),
        c.Ack(qid=2, seq=6, offsets=[7]),
        c.Pub(qid=1, seq=7, priority=0, track=True, flags=0, record=r[5]),
        "release",
        c.Pub(qid=1, seq=8, priority=0, track=True, flags=0, record=r[0])]


async def test_a_held_run_lost_with_its_host_is_refused_not_sent(tmp_path):
    client = PartitionClient(0, asyncio.get_running_loop())
    link = HoldingLink()
    client.connect(link)
    client.hold()
    client.publish(1, record(), 0, True)
    client.publish(1, record(), 0, True)
    client.lose_host()
    client.release()
    assert link.sent == ["hold"]
    assert client.reached(2) and client.take_nack(1) and client.take_nack(2)


def test_a_run_goes_to_its_consumer_as_it_is_after_the_lots_before_it(side):
    """A ``Dlvs`` (one dispatch run of the host) is applied as it came (``DeliverRun``),
    after the lots of the deliveries before it; one for a consumer cancelled meanwhile goes
    back to the queue, every offset of it, requeued."""
    client, queue, c1 = side.client, side.queue, side.consumer
    applied: list = []
    client.apply = lambda _client, action: applied.append(action)
    single = c.Dlv(cid=c1.cid, qid=queue.qid, offset=1, redelivered=True, record=record())
    run = c.Dlvs(cid=c1.cid, qid=queue.qid, offset=2, records=[record(), record()])
    gone = c.Dlvs(cid=999, qid=queue.qid, offset=4, records=[record(), record(), record()])
    client.on_events([single, run, gone])
    assert applied == [single, run]
    assert type(run) is DeliverRun
    back = side.link.sent[-1]
    assert type(back) is c.Reject and back.offsets == [4, 5, 6] and back.requeue is True


class BatchingLink(HoldingLink):
    """The in-process link's ``send_many``: commands the host takes in one batch."""

    def send_many(self, cmds: list) -> None:
        self.sent.append(list(cmds))


async def test_held_publishes_to_several_queues_share_a_number_and_go_as_one_pubs_each(tmp_path):
    client = PartitionClient(0, asyncio.get_running_loop())
    link = BatchingLink()
    client.connect(link)
    r = [record(b"%d" % i) for i in range(5)]
    client.hold()
    assert [client.publish_routed((1, 2), x, 0, True) for x in r[:3]] == [1, 2, 3]
    assert client.publish_routed((1, 3), r[3], 0, True) == 4    # other queues: a new run
    assert client.ack(2, [7]) == 5                               # the run goes first
    client.release()
    assert link.sent == [
        "hold",
        [c.Pubs(qid=1, seq=1, priority=0, track=True, flags=0, records=r[:3]),
         c.Pubs(qid=2, seq=1, priority=0, track=True, flags=0, records=r[:3])],
        [c.Pub(qid=1, seq=4, priority=0, track=True, flags=0, record=r[3]),
         c.Pub(qid=3, seq=4, priority=0, track=True, flags=0, record=r[3])],
        c.Ack(qid=2, seq=5, offsets=[7]),
        "release"]


async def test_publishes_to_several_queues_over_a_link_without_batches_are_not_routed(
        tmp_path):
    """A ring may split what it carries across the host's batches (the host would confirm a
    shared number after the first queue's): nothing is sent, the caller publishes to each
    queue with a number of its own; so too while the host is gone."""
    client = PartitionClient(0, asyncio.get_running_loop())
    link = HoldingLink()
    client.connect(link)
    client.hold()
    assert client.publish_routed((1, 2), record(b"x"), 0, True) is None
    client.release()
    assert link.sent == ["hold", "release"] and client.seq == 0
    batching = BatchingLink()
    client.connect(batching)
    client.lose_host()
    client.hold()
    assert client.publish_routed((1, 2), record(b"x"), 0, True) is None
    assert batching.sent == [] and client.seq == 0
