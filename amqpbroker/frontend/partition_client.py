"""The front-end side of the partition interface: one ``PartitionClient`` per host (worker).

It numbers publishes, keeps the host's confirm watermark, knows which consumer id is which
consumer, batches credit grants once per loop turn and turns requests into futures. That is
all it changes: what an event of the host means for a channel, a session, a queue of the
vhost or the broker it returns as actions (``actions.py``), which ``apply`` — given at
construction, the front-end's — carries out. ``handle(event)`` and ``lose_host()`` are the
pure half (tests feed them and read the actions); ``on_event`` and ``host_lost`` are what the
links and the supervisor call, and apply what those return.

A future of the in-process link is already resolved when ``request`` returns, so awaiting it
does not suspend (see ``Session._drive``): with ``--workers 0`` every method completes in the
turn it arrived, exactly as a single-process broker would.
"""
from __future__ import annotations

import functools

from .. import contract as c
from .. import errors
from . import actions
from .actions import (AlarmChanged, CancelConsumer, DeadLetter, DeliverMany, GroupRevocationDone,
                      PublishersResumed, QueueFlow, QueueGone, ReopenQueue, Resubscribe,
                      ShareLost, WatermarkMoved)

# credit of a consumer without prefetch: deliveries in flight between host and socket
WINDOW = 500
# publishes sent to a host that it has not handled yet, before publishers are throttled
LINK_WINDOW = 1000
# the host reports what it handled at least this often, well inside the window
assert c.CONFIRM_SEEN_EVERY < LINK_WINDOW // 2
# publishes of one read to one queue sent as one ``Pubs`` at most (a session handles 256
# events per turn: one read's worth)
BATCH_MAX = 256
# and bodies of at most this many bytes in all: a ``Pubs`` is one ring record, and a record
# over the ring's largest (``links/ring.py``) would travel in fragments, copied twice more
BATCH_BYTES = 256 << 10


class Gathering:
    """Held publishes gathering into one ``Pubs`` (or one per queue of a routed run): all
    numbered ``seq``, to ``qid`` (a queue, or a tuple of queues), with the same priority,
    confirm tracking and flags; ``size`` is their bodies' bytes."""
    __slots__ = ("qid", "seq", "priority", "track", "flags", "records", "size")

    def __init__(self, qid, seq: int, priority: int, track: bool, flags: int,
                 records: list, size: int):
        self.qid, self.seq, self.priority, self.track, self.flags = \
            qid, seq, priority, track, flags
        self.records, self.size = records, size


class HostGone(errors.NotFound):
    """The worker owning the queue stopped (it is being restarted)."""


def _ignore(client, action) -> None:
    """``apply`` of a client whose actions nobody carries out (tests call ``handle``)."""


class PartitionClient:
    remote = False              # a client of this node's hosts (cluster/forward.py's: another's)

    def __init__(self, index: int, loop, apply=_ignore):
        """``apply(client, action)`` carries out the client's actions (the front-end's
        ``functools.partial(actions.apply, broker)``)."""
        self.loop = loop
        self.apply = apply
        self.index = index
        self.link = None
        self.epoch = 0                      # bumped when the host restarts
        self.refs: dict = {}                # qid -> QueueRef
        self.consumers: dict = {}           # cid -> Consumer
        self._next_qid = 0
        self._next_cid = 0
        self._next_req = 0
        self.pending: dict = {}             # req -> Future
        self.seq = 0                        # last publish number sent
        self.done_seq = 0                   # host's confirm watermark
        self.seen = 0                       # last publish the host has handled
        self.backlogged = False             # too many publishes in flight: throttle
        self.flow_waiters: set = set()      # sessions throttled by that (Session.throttle)
        self.nacked: set[int] = set()       # refused publishes of confirm-mode channels
        self.lost_lo = self.lost_hi = 0     # (lo, hi]: in flight when the host was last lost
        self.listeners: set = set()         # channels waiting for the watermark (Channel)
        self._grants: dict = {}             # cid -> credit to send
        self.lost_shares: list = []         # group members' shares waiting for a restart
        self._grant_scheduled = False
        self._wanted = 0                    # last number asked for with ConfirmWanted
        self._batching = False              # held: publishes gather into ``_batch``
        # [qid, first seq, priority, track, flags, records, body bytes]: consecutive
        # publishes of a held read to one queue, sent as one Pubs before any other command
        # (``hold``)
        self._batch: Gathering | None = None
        self._send_many = None
        self._send_quiet = None
        self.table = c.handlers(self, c.PARTITION_EVENTS)

    @classmethod
    def of(cls, broker, index: int) -> "PartitionClient":
        """The client of host ``index`` whose actions ``broker`` (this front-end) applies."""
        return cls(index, broker.loop, functools.partial(actions.apply, broker))

    def connect(self, link) -> None:
        self.link = link
        # a link that hands several commands to the host as one batch (the in-process one):
        # a fanout's queues then share a publish number (``publish_routed``)
        self._send_many = getattr(link, "send_many", None)
        self._send_quiet = getattr(link, "send_quiet", None)    # a ring link's

    # ------------------------------------------------------------ commands
    def new_qid(self) -> int:
        self._next_qid += 1
        return self._next_qid

    def new_cid(self) -> int:
        self._next_cid += 1
        return self._next_cid

    def send(self, cmd) -> None:
        if self.link is not None:
            if self._batch is not None:
                self._send_batch()
            self.link.send(cmd)          # else the host is restarting: it recovers from disk

    def hold(self) -> None:
        """Hold publishes until ``release``: a link that takes lots (the in-process link)
        gets the consecutive publishes of a read to one queue as one ``Pubs``, which the host
        appends as one; the others batch per loop turn anyway."""
        hold = getattr(self.link, "hold", None)
        if hold is not None:
            hold()
            self._batching = True

    def release(self) -> None:
        self._batching = False
        if self._batch is not None and self.link is not None:
            self._send_batch()
        release = getattr(self.link, "release", None)
        if release is not None:
            release()

    def publish(self, qid: int, record, priority: int, track: bool, flags: int = 0) -> int:
        self.seq = seq = self.seq + 1
        if self.link is not None:
            if self._batching:
                self._gather(qid, seq, priority, track, flags, record)
            else:
                self.link.send(c.Pub(qid=qid, seq=seq, priority=priority, track=track,
                                     flags=flags, record=record))
            if seq - self.seen > LINK_WINDOW:
                self.backlogged = True
        else:                            # the host is restarting: refuse, never lose silently
            if track:
                self.nacked.add(seq)
            self.done_seq = seq
        return seq

    def publish_routed(self, qids: tuple, record, priority: int, track: bool,
                       flags: int = 0) -> int | None:
        """``publish`` of one message to several queues of this host (a fanout); returns
        the number to wait for. Held (``hold``), the queues share one number, confirmed
        once all of them stored the message (one that refuses it nacks the number), and
        consecutive publishes to the same queues gather as they do for one queue: they go
        as one ``Pubs`` per queue, all numbered alike, in one batch of the host
        (``link.send_many``: it reports its watermark after a batch, never between the
        queues of a number). Otherwise (a ring, which may split what it carries across the
        host's batches; a host restarting) nothing is sent and the answer is None: the
        caller publishes to each queue (``publish``), each with its own number."""
        if not self._batching or self.link is None or self._send_many is None:
            return None
        self.seq = seq = self.seq + 1
        self._gather(qids, seq, priority, track, flags, record)
        if seq - self.seen > LINK_WINDOW:
            self.backlogged = True
        return seq

    def ack(self, qid: int, offsets: list[int]) -> int:
        """Acks are numbered like publishes, so that a later confirm can wait for the commit
        that wrote them (see ``Session.settled_on``)."""
        self.seq = seq = self.seq + 1
        self._settle(c.Ack(qid, seq, offsets), True)      # positional: see ``_send_batch``
        return seq

    def reject(self, qid: int, offsets: list[int], requeue: bool) -> int:
        self.seq = seq = self.seq + 1
        self._settle(c.Reject(qid=qid, seq=seq, requeue=requeue, offsets=offsets))
        return seq

    def modify(self, qid: int, offset: int, requeue: bool, properties: bytes) -> int:
        """A reject of one delivery whose message carries ``properties`` from now on (an
        AMQP 1.0 consumer's ``modified`` outcome with message annotations)."""
        self.seq = seq = self.seq + 1
        self._settle(c.Modify(qid=qid, seq=seq, requeue=requeue, offset=offset,
                              properties=properties))
        return seq

    def settle_group(self, cid: int, kind: int, offsets: list[int]) -> int:
        """Settle deliveries of a consumer-group member's share (``kind``: 0 ack, 1 reject
        with requeue, 2 reject without): named by consumer, since the host's commit of its
        group follows them."""
        self.seq = seq = self.seq + 1
        self._settle(c.GroupSettle(cid=cid, seq=seq, kind=kind, offsets=offsets))
        return seq

    def _gather(self, qid, seq: int, priority: int, track: bool, flags: int, record) -> None:
        """Add a held publish to the gathering batch (``qid``: a queue, or a tuple of them
        for ``publish_routed``), or send that batch and start another; a batch goes once it
        holds ``BATCH_MAX`` records or ``BATCH_BYTES`` of bodies (a big body goes alone)."""
        batch = self._batch
        if batch is not None and batch.qid == qid and batch.priority == priority \
                and batch.track == track and batch.flags == flags:
            batch.records.append(record)
            batch.size += len(record.body)
        else:
            if batch is not None:
                self._send_batch()
            self._batch = batch = Gathering(qid, seq, priority, track, flags, [record],
                                            len(record.body))
        if len(batch.records) >= BATCH_MAX or batch.size >= BATCH_BYTES:
            self._send_batch()

    def _send_batch(self) -> None:
        """The gathered publishes to the link (one ``Pub`` if alone); what the host sends
        meanwhile may gather a new batch."""
        batch = self._batch
        qid, seq, priority, track, flags, records = (
            batch.qid, batch.seq, batch.priority, batch.track, batch.flags, batch.records)
        self._batch = None
        if type(qid) is tuple:              # a routed run (``publish_routed``): each
            if len(records) == 1:           # queue's, numbered alike, in one host batch
                record = records[0]
                self._send_many([c.Pub(qid=q, seq=seq, priority=priority, track=track,
                                       flags=flags, record=record) for q in qid])
            else:
                self._send_many([c.Pubs(qid=q, seq=seq, priority=priority, track=track,
                                        flags=flags, records=records) for q in qid])
            return
        # positional: a NamedTuple built by keyword costs twice as much (once per read)
        if len(records) == 1:
            self.link.send(c.Pub(qid, seq, priority, track, flags, records[0]))
        else:
            self.link.send(c.Pubs(qid, seq, priority, track, flags, records))

    def _settle(self, msg, quiet: bool = False) -> None:
        """``quiet``: nothing waits for the host to handle ``msg`` (an ack: the credit it
        returns to a consumer with a prefetch goes as its own ``Credit``, a confirm that
        waits for it asks with ``ConfirmWanted``): a ring link does not wake a sleeping
        worker for it (links/ring.py, "Quiet messages")."""
        if self.link is not None:
            if self._batch is not None:
                self._send_batch()
            if quiet and self._send_quiet is not None:
                self._send_quiet(msg)
            else:
                self.link.send(msg)
        else:
            self.done_seq = msg.seq

    def request(self, cls, **fields):
        """Send request ``cls(**fields)``; a future of the host's reply value."""
        fut = self.loop.create_future()
        if self.link is None:
            fut.set_exception(self._gone_error())
            return fut
        self._next_req = req = self._next_req + 1
        self.pending[req] = fut
        self.send(cls(req=req, **fields))
        return fut

    def _gone_error(self) -> HostGone:
        return HostGone(f"worker {self.index} owning the queue stopped; it is being restarted")

    def grant(self, consumer, n: int = 1) -> None:
        """Return credit to the host for ``consumer`` (sent once per loop turn)."""
        self._grants[consumer.cid] = self._grants.get(consumer.cid, 0) + n
        if not self._grant_scheduled:
            self._grant_scheduled = True
            self.loop.call_soon(self._send_grants)

    def _send_grants(self) -> None:
        self._grant_scheduled = False
        grants, self._grants = self._grants, {}
        live = [(cid, n) for cid, n in grants.items() if cid in self.consumers]
        if live:
            self.send(c.Credit(grants=live))

    # ------------------------------------------------------------ confirms (``confirms.py``)
    def reached(self, number: int) -> bool:
        """The host's watermark has passed publish or ack ``number``."""
        return self.done_seq >= number

    def want(self, number: int) -> None:
        """A confirm waits for ``number`` (an ack, not a publish in confirm mode): the host
        reports its watermark past it only when asked."""
        if number > self.done_seq and number > self._wanted and self.link is not None:
            self._wanted = number
            self.send(c.ConfirmWanted(seq=number))

    def take_nack(self, number: int) -> bool:
        """Whether the host refused ``number`` (a refusal the host named is forgotten once
        asked)."""
        if self.nacked and number in self.nacked:
            self.nacked.discard(number)
            return True
        return number <= self.lost_hi and number > self.lost_lo

    # ------------------------------------------------------------ events
    def on_event(self, event) -> None:
        """An event of the host: handle it and apply what it asks of the front-end."""
        action = self.table[type(event)](event)
        if action is not None:
            self.apply(self, action)

    def on_events(self, events) -> None:
        """``on_event`` for each of a batch that a link read, except that the deliveries to
        live consumers among them go to each consumer's channel as one lot
        (``DeliverMany``), in order per consumer, before the next other event. A channel
        holds the lot of one consumer at a time: a delivery to another consumer of the same
        channel sends the lots first, so a channel's deliveries keep the queue's order
        (three consumers of one queue on one channel get it round robin, as in RabbitMQ).
        A run the host sent as one (``Dlvs``) is already one: it goes to its channel as it
        is (``DeliverRun``), after the lots before it."""
        table, apply, consumers = self.table, self.apply, self.consumers
        Dlv = c.Dlv
        lots = None                         # cid -> [Dlv], in order
        for event in events:
            if type(event) is Dlv:
                consumer = consumers.get(event.cid)
                if consumer is not None:
                    if lots is None:
                        lots, holders = {event.cid: [event]}, {consumer.channel: event.cid}
                        continue
                    lot = lots.get(event.cid)
                    if lot is not None:
                        lot.append(event)
                        continue
                    channel = consumer.channel
                    if channel in holders:  # another consumer of this channel has a lot
                        self._deliver_lots(lots)
                        lots, holders = {event.cid: [event]}, {channel: event.cid}
                    else:
                        lots[event.cid] = [event]
                        holders[channel] = event.cid
                    continue
            if lots is not None:
                self._deliver_lots(lots)
                lots = None
            action = table[type(event)](event)
            if action is not None:
                apply(self, action)
        if lots is not None:
            self._deliver_lots(lots)

    def _deliver_lots(self, lots: dict) -> None:
        apply = self.apply
        for cid, lot in lots.items():
            apply(self, DeliverMany(cid, lot) if len(lot) > 1 else lot[0])

    def handle(self, event):
        """The actions ``event`` asks of the front-end (None, one, or a list)."""
        return self.table[type(event)](event)

    def on_confirm(self, m: c.Confirm):
        self.seen = seen = m.seen
        resumed = None
        if self.backlogged and self.seq - seen <= LINK_WINDOW // 2:
            resumed = self._resume_publishers()
        if m.nacked:
            # kept even when the watermark does not move: a refused publish behind an ack
            # that waits for its commit is named now and passed by the watermark later
            self.nacked.update(m.nacked)
        if m.upto > self.done_seq:
            self.done_seq = m.upto
            if self.listeners:
                moved = WatermarkMoved(list(self.listeners))
                return moved if resumed is None else [resumed, moved]
        return resumed

    def _resume_publishers(self) -> PublishersResumed | None:
        self.backlogged = False
        waiters, self.flow_waiters = self.flow_waiters, set()
        return PublishersResumed(list(waiters), self) if waiters else None

    def on_dlv(self, m: c.Dlv):
        if m.cid in self.consumers:
            return m                        # Deliver: the event itself (actions.py)
        # cancelled while this was on its way: back to the queue (a stream keeps it
        # anyway; a group member's share hands it back to its group)
        ref = self.refs.get(m.qid)
        if ref is not None and ref.is_stream:
            self.settle_group(m.cid, 1, [m.offset])
        else:
            self.reject(m.qid, [m.offset], True)
        return None

    def on_dlvs(self, m: c.Dlvs):
        if m.cid in self.consumers:
            return m                        # DeliverRun: the event itself (actions.py)
        offsets = list(range(m.offset, m.offset + len(m.records)))
        ref = self.refs.get(m.qid)          # cancelled meanwhile: as ``on_dlv``
        if ref is not None and ref.is_stream:
            self.settle_group(m.cid, 1, offsets)
        else:
            self.reject(m.qid, offsets, True)
        return None

    def on_reply(self, m: c.Reply) -> None:
        fut = self.pending.pop(m.req, None)
        if fut is None or fut.done():
            return
        if m.ok:
            fut.set_result(m.value)
        else:
            fut.set_exception(errors.from_reply(*m.value))

    def on_flow(self, m: c.Flow):
        ref = self.refs.get(m.qid)
        return QueueFlow(ref, m.on) if ref is not None else None

    def on_cancel(self, m: c.Cancel):
        return self.forget_consumer(m.cid)

    def forget_consumer(self, cid: int) -> CancelConsumer | None:
        """The consumer ``cid`` is no more (its queue or its host went away): forget it, and
        have its channel tell the client."""
        consumer = self.consumers.pop(cid, None)
        return CancelConsumer(consumer) if consumer is not None else None

    def on_gone(self, m: c.Gone):
        ref = self.refs.get(m.qid)
        return QueueGone(ref, m.reason) if ref is not None else None

    def on_dlx(self, m: c.Dlx) -> DeadLetter:
        return DeadLetter(m.vhost, m.exchange, m.keys, m.record, m.reason,
                          (m.qid, m.offset) if m.settle else None)

    def on_group_revoked(self, m: c.GroupRevoked) -> GroupRevocationDone:
        return GroupRevocationDone(self, m)

    def on_alarm(self, m: c.Alarm) -> AlarmChanged:
        return AlarmChanged(f"{m.name}@worker{self.index}", m.detail)

    # ------------------------------------------------------------ host restart
    def host_lost(self) -> None:
        """The host died: fail what waited for it, so no publisher waits in silence."""
        self.apply(self, self.lose_host())

    def lose_host(self) -> list:
        """``host_lost``'s pure half: the client's own state, and the actions for the rest."""
        self.epoch += 1
        self.link = None
        self._batch = None                  # numbered, never sent: refused below
        self._batching = False
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(self._gone_error())
        self.pending.clear()
        if self.seq > self.done_seq:
            # everything in flight is refused: numbers in (lo, hi] (a range, not a set of
            # numbers nobody may ask for: acks and untracked publishes are numbered too)
            if self.lost_hi > self.lost_lo:     # a loss before: its numbers one by one
                self.nacked.update(range(self.lost_lo + 1, self.lost_hi + 1))
            self.lost_lo, self.lost_hi = self.done_seq, self.seq
            self.done_seq = self.seq
        actions: list = [WatermarkMoved(list(self.listeners))]
        for cid, consumer in list(self.consumers.items()):
            if consumer.member is not None:
                # a consumer group member's share: subscribed again once the worker is back
                # (``resubscribe``); its deliveries from before are void (epoch)
                self.lost_shares.append(consumer)
                actions.append(ShareLost(consumer))
                continue
            actions.append(self.forget_consumer(cid))
        actions += [QueueFlow(ref, False) for ref in self.refs.values()]
        self.seen = self.seq
        resumed = self._resume_publishers()
        if resumed is not None:
            actions.append(resumed)
        self._grants.clear()
        return actions

    def reopen(self) -> None:
        """After a restart: the new host recovers every queue of ours from disk."""
        self.apply(self, [ReopenQueue(ref) for ref in list(self.refs.values())])
        self.resubscribe()

    def resubscribe(self) -> None:
        """The restarted host has our queues open: subscribe the consumer group shares it
        lost again (inactive until the supervisor re-sends their assignment). One that
        cannot be cancels its member."""
        self.apply(self, self.shares_to_resubscribe())

    def shares_to_resubscribe(self) -> list:
        shares, self.lost_shares = self.lost_shares, []
        return [Resubscribe(self, share, share.initial_credit(WINDOW)) for share in shares
                if self.consumers.get(share.cid) is share and not share.queue.deleted]
