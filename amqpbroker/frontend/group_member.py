"""A consumer group member as a channel sees it: one consumer tag, one share per partition.

``basic.consume(T, arguments={'x-consumer-group': G})`` where ``T`` is a topic (an
``x-partitioned`` exchange: no queue has that name) or a stream (a one-partition topic) makes
the consumer a member of group ``G`` on ``T``. The channel subscribes one *share* per
partition — a ``Consumer`` on that partition's worker, with the member's prefetch, its
``x-stream-offset`` and filter, and ``x-group-member`` (the member id) in its arguments — and
then joins the group at the supervisor (``contract.JoinGroup``), which assigns partitions to
members and tells the partitions' workers (``supervisor/groups.py``). An unassigned share
delivers nothing: the client sees one consumer whose deliveries come from the partitions it
owns, each with headers ``x-partition`` and ``x-stream-offset``.

Acks of a share's deliveries go to its worker named by consumer (``GroupSettle``): the worker
moves the group's committed offset (``worker/groups.py``). basic.cancel leaves the group
(for good: a static member's partitions are released); a channel or connection that closes
leaves it without meaning to (a static member keeps its partitions for the session
timeout). A share whose worker restarts is subscribed again when the worker is back
(``PartitionClient.reopen``); the supervisor then re-sends its assignment.

Checks, as RabbitMQ words them where it has the case (streams): read permission on every
partition (403), ``basic.qos`` prefetch unless ``no_ack`` (no_ack is at-most-once: committed at
delivery), no global qos; ``x-consumer-group`` and ``x-group-instance-id`` short strings
(406); a topic with classic or quorum partitions is refused (406): their messages are
removed on ack, so there is no offset for a group to commit (use a stream-partitioned topic,
or plain competing consumers on a classic queue).
"""
from __future__ import annotations

import asyncio
import logging

from .. import errors
from ..queue_args import amqp_type, check_stream_consume
from ..storage.record import now_ms
from .consumer import Consumer
from .exchange import PartitionedExchange
from .partition_client import HostGone

log = logging.getLogger("amqpbroker.groups")

GROUP_ARG = "x-consumer-group"
INSTANCE_ARG = "x-group-instance-id"
MEMBER_ARG = "x-group-member"
MAX_NAME_BYTES = 255


class GroupMember:
    __slots__ = ("tag", "channel", "vhost", "topic", "group", "member_id", "instance_id",
                 "parts", "no_ack", "joined", "arguments", "prefetch")

    def __init__(self, channel, tag: str, topic: str, group: str, instance_id, no_ack: bool):
        self.channel = channel
        self.tag = tag
        self.vhost = channel.session.vhost.name
        self.topic = topic
        self.group = group
        self.instance_id = instance_id
        self.member_id = f"{channel.session.reply_token}/{channel.number}/{tag}"
        self.no_ack = no_ack
        self.parts: list[Consumer] = []
        self.joined = False

    def leave(self, permanent: bool) -> None:
        """Leave the group (once): at the supervisor, asynchronously."""
        if not self.joined:
            return
        self.joined = False
        metadata = self.channel.broker.metadata
        fut = asyncio.ensure_future(metadata.leave_group(
            vhost=self.vhost, topic=self.topic, group=self.group, member=self.member_id,
            permanent=permanent))
        fut.add_done_callback(_log_failure)


def _share(member: GroupMember, i: int, ref, window: int) -> Consumer:
    part = Consumer(member.tag, member.channel, ref, no_ack=member.no_ack, exclusive=False,
                    priority=0, prefetch=member.prefetch, arguments=member.arguments)
    part.key = (member.tag, i)
    part.member = member
    part.partition = i
    part.credit_out = part.initial_credit(window)
    return part


def topic_grew(broker, vh, ex, window: int) -> None:
    """Partitions were added to topic ``ex``: every member of a group on it (on this
    process's connections) subscribes a share of each new partition, before or after the
    supervisor assigns them (the worker waits for both)."""
    for session in list(broker.sessions):
        if session.vhost is not vh:
            continue
        for channel in list(session.channels.values()):
            for member in list(channel.groups.values()):
                if member.topic != ex.name or channel.groups.get(member.tag) is not member:
                    continue
                for i in range(len(member.parts), ex.partitions):
                    ref = vh.queues.get(f"{ex.name}-{i}")
                    if ref is None or not ref.is_stream:
                        break
                    part = _share(member, i, ref, window)
                    member.parts.append(part)
                    channel.consumers[part.key] = part
                    fut = ref.subscribe(part, part.credit_out)
                    fut.add_done_callback(_log_failure)


def _log_failure(fut) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("leaving a consumer group failed: %s", fut.exception())


def _short_string(value, key: str, where: str):
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, str) or not value:
        raise errors.PreconditionFailed(
            f"invalid arg '{key}' for {where}: expected a non-empty string, got "
            f"{amqp_type(value)}", 60, 20)
    if len(value.encode()) > MAX_NAME_BYTES:
        raise errors.PreconditionFailed(
            f"invalid arg '{key}' for {where}: longer than {MAX_NAME_BYTES} bytes", 60, 20)
    return value


def partitions_of(channel, name: str) -> list:
    """The partition queues a group consume of ``name`` reads: a stream's own queue, or a
    stream-partitioned topic's partitions in order."""
    vh = channel.session.vhost
    q = vh.queues.get(name)
    if q is not None:
        if not q.is_stream:
            raise errors.PreconditionFailed(
                f"consumer groups need a stream or a topic: {vh._q(name)} is not a stream "
                f"(x-consumer-group)", 60, 20)
        vh.check_exclusive(q, channel.session.owner, 60, 20)
        return [q]
    ex = vh.exchanges.get(name)
    if not isinstance(ex, PartitionedExchange):
        vh.get_queue(name, channel.session.owner, 60, 20)      # RabbitMQ's 404 text
        raise errors.NotFound(f"no queue or topic '{name}' in vhost '{vh.name}'", 60, 20)
    refs = []
    for i in range(ex.partitions):
        ref = vh.queues.get(f"{name}-{i}")
        if ref is None:
            raise errors.NotFound(f"topic '{name}' in vhost '{vh.name}' has no partition "
                                  f"'{name}-{i}'", 60, 20)
        if not ref.is_stream:
            raise errors.PreconditionFailed(
                f"consumer groups need stream partitions: topic '{name}' in vhost "
                f"'{vh.name}' has {ref.arguments.get('x-queue-type', 'classic')} partitions, "
                f"whose messages are removed on ack (x-consumer-group)", 60, 20)
        refs.append(ref)
    if not refs:
        raise errors.NotFound(f"topic '{name}' in vhost '{vh.name}' has no partitions", 60, 20)
    return refs


async def consume(channel, m, tag: str, args: dict, window: int) -> GroupMember | None:
    """basic.consume with x-consumer-group (see the module comment); the member, or None if
    the channel closed meanwhile."""
    session = channel.session
    vh = session.vhost
    name = m.queue
    where = f"queue '{name}' in vhost '{vh.name}'"
    group = _short_string(args[GROUP_ARG], GROUP_ARG, where)
    instance_id = args.get(INSTANCE_ARG)
    if instance_id is not None:
        instance_id = _short_string(instance_id, INSTANCE_ARG, where)
    refs = partitions_of(channel, name)
    for ref in refs:
        channel._check("read", "queue", ref.name, 60, 20)
    shared = {k: v for k, v in args.items() if k not in (GROUP_ARG, INSTANCE_ARG)}
    check_stream_consume(name, vh.name, shared,
                         prefetch=1 if m.no_ack else channel.prefetch, no_ack=False,
                         global_qos=bool(channel.global_prefetch) and not m.no_ack,
                         now_ms=now_ms())
    member = GroupMember(channel, tag, name, group, instance_id, m.no_ack)
    member.arguments = {**shared, GROUP_ARG: group, MEMBER_ARG: member.member_id}
    member.prefetch = channel.prefetch
    for i, ref in enumerate(refs):
        member.parts.append(_share(member, i, ref, window))
    results = await asyncio.gather(*(p.queue.subscribe(p, p.credit_out) for p in member.parts),
                                   return_exceptions=True)
    for i, (p, r) in enumerate(zip(member.parts, results)):
        if isinstance(r, HostGone) and p.queue.client.consumers.get(p.cid) is p:
            # its partition's host is unreachable now (a leader being elected, a worker
            # restarting): the share waits for it, as after a loss (``lost_shares``:
            # subscribed when the host is back, or follows the partition to its new leader)
            if p not in p.queue.client.lost_shares:
                p.queue.client.lost_shares.append(p)
            results[i] = None
    failed = next((r for r in results if isinstance(r, BaseException)), None)
    if failed is not None:
        for p, r in zip(member.parts, results):
            if isinstance(r, BaseException):
                p.queue.client.consumers.pop(p.cid, None)
            else:
                p.queue.unsubscribe(p)
        raise failed
    try:
        await channel.broker.metadata.join_group(vhost=vh.name, topic=name, group=group,
                                                 member=member.member_id,
                                                 instance_id=instance_id,
                                                 connection=session.name)
    except BaseException:
        for p in member.parts:
            p.queue.unsubscribe(p)
        raise
    member.joined = True
    if channel.closed:
        for p in member.parts:
            p.queue.unsubscribe(p)
        member.leave(permanent=False)
        return None
    return member
