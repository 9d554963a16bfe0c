"""What a partition client asks its front-end to do, declared once, and ``apply``, which does it.

A ``PartitionClient`` (``partition_client.py``) keeps the state of one link to a partition
host — publish numbers, the confirm watermark, requests in flight, which consumer id is which
consumer — and nothing else. When an event of the host (``contract.PARTITION_EVENTS``) or
the host's loss changes something the front-end owns (a channel's confirms or consumers, a
session's flow, a queue of the vhost, the broker's alarms or dead letters), the client
returns one of the actions below instead of reaching into those objects; ``apply`` is the one
place that carries them out. It is RabbitMQ's ``rabbit_queue_type`` contract: the queue side
returns typed ``actions()`` and ``rabbit_channel:handle_queue_actions`` performs them.

A client's handler returns ``None``, one action, or a list of actions (``apply`` takes all
three). The actions are plain values: tests feed a client events and compare what it returned
(``tests/unit/frontend/test_partition_client.py``).

One departure, for the hot path: a delivery to a consumer the client knows is the host's
``Dlv`` event itself (``Deliver`` below is ``contract.Dlv``), so a delivery costs no object
beyond the one the codec already made; ``apply`` finds its consumer by ``cid``. A run of
deliveries the host sent as one (``Dlvs``) is likewise its own action (``DeliverRun``).
"""
from __future__ import annotations

import logging
from typing import NamedTuple

from .. import contract as c

log = logging.getLogger("amqpbroker.partition")

# a delivery for a live consumer: ``client.consumers[dlv.cid]`` gets it (Channel.deliver)
Deliver = c.Dlv
# a run of deliveries to a live consumer, offsets ``offset``, ``offset + 1``, ...:
# ``client.consumers[run.cid]`` gets it (Channel.deliver_run)
DeliverRun = c.Dlvs


class DeliverMany(NamedTuple):
    """Deliveries (``Dlv``) of one batch to one consumer, in order: its channel builds them
    into one write (``Channel.deliver_many``)."""
    cid: int
    dlvs: list


class WatermarkMoved(NamedTuple):
    """The host's confirm watermark moved: these channels' confirms may settle now."""
    channels: list


class PublishersResumed(NamedTuple):
    """The link is no longer backlogged: these sessions, throttled by ``source`` (the
    client), read again."""
    sessions: list
    source: object


class QueueFlow(NamedTuple):
    """The host asks publishers to a queue to wait (``on``) or lets them go on."""
    queue: object
    on: bool


class CancelConsumer(NamedTuple):
    """The host cancelled a consumer (its queue went away, its host stopped): tell the
    client (consumer_cancel_notify). The partition client has already forgotten it."""
    consumer: object


class ShareLost(NamedTuple):
    """A consumer group member's share lost its host: it holds no credit until its host is
    back and it is subscribed again (``Resubscribe``)."""
    consumer: object


class Resubscribe(NamedTuple):
    """Subscribe a consumer group share again on the restarted host, with ``credit``."""
    client: object
    consumer: object
    credit: int


class ReopenQueue(NamedTuple):
    """The restarted host opens the queue again (it recovers it from disk)."""
    queue: object


class QueueGone(NamedTuple):
    """The host deleted the queue (auto-delete, expiry, ...): the vhost forgets it."""
    queue: object
    reason: str


class DeadLetter(NamedTuple):
    """The host dead-lettered ``record``: route it through ``exchange`` of ``vhost``;
    ``held``: (qid, offset) of a message its queue holds until the copies are confirmed
    (at-least-once: dead_letter_confirms.py), else None."""
    vhost: str
    exchange: str
    keys: object
    record: object
    reason: str
    held: tuple | None = None


class AlarmChanged(NamedTuple):
    """The host set (``detail``) or cleared (None) the alarm ``name``."""
    name: str
    detail: object


class GroupRevocationDone(NamedTuple):
    """The host finished revoking a consumer group's partition (supervisor link only)."""
    client: object
    revoked: object          # contract.GroupRevoked


def apply(broker, client, action) -> None:
    """Carry out ``action`` (None, one action or a list of them) of ``client`` in this
    front-end."""
    kind = type(action)
    if kind is Deliver:                     # the hot path first
        consumer = client.consumers[action.cid]
        consumer.channel.deliver(consumer, action.offset, action.record, action.redelivered)
    elif kind is DeliverRun:
        consumer = client.consumers.get(action.cid)
        if consumer is not None:
            consumer.channel.deliver_run(consumer, action.offset, action.records)
        else:                               # cancelled meanwhile: as ``on_dlvs`` does
            apply(broker, client, client.on_dlvs(action))
    elif kind is DeliverMany:
        consumer = client.consumers.get(action.cid)
        if consumer is not None:
            consumer.channel.deliver_many(consumer, action.dlvs)
        else:                               # cancelled meanwhile: as ``on_dlv`` does
            for dlv in action.dlvs:
                apply(broker, client, client.on_dlv(dlv))
    elif kind is list:
        for a in action:
            apply(broker, client, a)
    elif action is not None:
        _APPLY[kind](broker, client, action)


def _watermark_moved(broker, client, a: WatermarkMoved) -> None:
    for ch in a.channels:
        ch.on_commit()


def _publishers_resumed(broker, client, a: PublishersResumed) -> None:
    for session in a.sessions:
        session.unthrottle(a.source)


def _queue_flow(broker, client, a: QueueFlow) -> None:
    a.queue.set_backlogged(a.on)


def _cancel_consumer(broker, client, a: CancelConsumer) -> None:
    a.consumer.channel.consumer_cancelled(a.consumer)


def _share_lost(broker, client, a: ShareLost) -> None:
    a.consumer.credit_out = 0


def _resubscribe(broker, client, a: Resubscribe) -> None:
    share = a.consumer
    share.credit_out = a.credit
    share.owed = 0
    fut = share.queue.subscribe(share, a.credit)

    def done(fut) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if exc is not None and (share in a.client.lost_shares
                                or share.queue.client is not a.client):
            return          # its host was lost again meanwhile (subscribed when it is back),
            #                 or its partition moved on (cluster/forward.py: it followed)
        if exc is not None:
            log.warning("%r could not be subscribed again: %s", share, exc)
            apply(broker, client, client.forget_consumer(share.cid))
    fut.add_done_callback(done)


def _reopen_queue(broker, client, a: ReopenQueue) -> None:
    a.queue.opened = a.queue.open()


def _queue_gone(broker, client, a: QueueGone) -> None:
    a.queue.vhost.forget_queue(a.queue, a.reason)


def _dead_letter(broker, client, a: DeadLetter) -> None:
    source = (client, *a.held) if a.held is not None else None
    broker.route_dead_letter(a.vhost, a.exchange, a.keys, a.record, a.reason, source)


def _alarm_changed(broker, client, a: AlarmChanged) -> None:
    if a.detail is None:
        broker.alarms.clear(a.name)
    else:
        broker.alarms.set(a.name, a.detail)


def _group_revocation_done(broker, client, a: GroupRevocationDone) -> None:
    broker.group_revoked(a.client, a.revoked)   # the supervisor's groups (a no-op elsewhere)


_APPLY = {WatermarkMoved: _watermark_moved, PublishersResumed: _publishers_resumed,
          QueueFlow: _queue_flow, CancelConsumer: _cancel_consumer, ShareLost: _share_lost,
          Resubscribe: _resubscribe, ReopenQueue: _reopen_queue, QueueGone: _queue_gone,
          DeadLetter: _dead_letter, AlarmChanged: _alarm_changed,
          GroupRevocationDone: _group_revocation_done}
ACTIONS = (Deliver, DeliverMany, *_APPLY)
