"""The front-end side of the partition interface: one ``PartitionClient`` per host (worker).

It numbers publishes, keeps the host's confirm watermark, routes deliveries to consumers,
batches credit grants once per loop turn and turns requests into futures. A future of the
in-process link is already resolved when ``request`` returns, so awaiting it does not suspend
(see ``Session._drive``): with ``--workers 0`` every method completes in the turn it arrived,
exactly as a single-process broker would.
"""
from __future__ import annotations

import logging

from .. import contract as c
from .. import errors

log = logging.getLogger("amqpbroker.partition")

# credit of a consumer without prefetch: deliveries in flight between host and socket
WINDOW = 500
# publishes sent to a host that it has not handled yet, before publishers are throttled
LINK_WINDOW = 1000
# the host reports what it handled at least this often, well inside the window
assert c.CONFIRM_SEEN_EVERY < LINK_WINDOW // 2


class HostGone(errors.NotFound):
    """The worker owning the queue stopped (it is being restarted)."""


class PartitionClient:
    def __init__(self, broker, index: int):
        self.broker = broker
        self.loop = broker.loop
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
        self.flow_waiters: set = set()      # sessions throttled by that
        self.nacked: set[int] = set()       # refused publishes of confirm-mode channels
        self.listeners: set = set()         # channels waiting for the watermark
        self._grants: dict = {}             # cid -> credit to send
        self.lost_shares: list = []         # group members' shares waiting for a restart
        self._grant_scheduled = False
        self._wanted = 0                    # last number asked for with ConfirmWanted
        self.table = c.handlers(self, c.PARTITION_EVENTS)

    def connect(self, link) -> None:
        self.link = link

    # ------------------------------------------------------------ commands
    def new_qid(self) -> int:
        self._next_qid += 1
        return self._next_qid

    def new_cid(self) -> int:
        self._next_cid += 1
        return self._next_cid

    def send(self, cmd) -> None:
        if self.link is not None:
            self.link.send(cmd)          # else the host is restarting: it recovers from disk

    def hold(self) -> None:
        """Hold publishes until ``release`` (an in-process link hands them over as a batch;
        the others batch per loop turn anyway)."""
        hold = getattr(self.link, "hold", None)
        if hold is not None:
            hold()

    def release(self) -> None:
        release = getattr(self.link, "release", None)
        if release is not None:
            release()

    def publish(self, qid: int, record, priority: int, track: bool, flags: int = 0) -> int:
        self.seq = seq = self.seq + 1
        if self.link is not None:
            self.link.send(c.Pub(qid=qid, seq=seq, priority=priority, track=track, flags=flags,
                                 record=record))
            if seq - self.seen > LINK_WINDOW:
                self.backlogged = True
        else:                            # the host is restarting: refuse, never lose silently
            if track:
                self.nacked.add(seq)
            self.done_seq = seq
        return seq

    def ack(self, qid: int, offsets: list[int]) -> int:
        """Acks are numbered like publishes, so that a later confirm can wait for the commit
        that wrote them (see ``Session.settled_on``)."""
        self.seq = seq = self.seq + 1
        self._settle(c.Ack(qid=qid, seq=seq, offsets=offsets))
        return seq

    def reject(self, qid: int, offsets: list[int], requeue: bool) -> int:
        self.seq = seq = self.seq + 1
        self._settle(c.Reject(qid=qid, seq=seq, requeue=requeue, offsets=offsets))
        return seq

    def settle_group(self, cid: int, kind: int, offsets: list[int]) -> int:
        """Settle deliveries of a consumer-group member's share (``kind``: 0 ack, 1 reject
        with requeue, 2 reject without): named by consumer, since the host's commit of its
        group follows them."""
        self.seq = seq = self.seq + 1
        self._settle(c.GroupSettle(cid=cid, seq=seq, kind=kind, offsets=offsets))
        return seq

    def _settle(self, msg) -> None:
        if self.link is not None:
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
        self.link.send(cls(req=req, **fields))
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
        if live and self.link is not None:
            self.link.send(c.Credit(grants=live))

    # ------------------------------------------------------------ confirms (``confirms.py``)
    def reached(self, number: int) -> bool:
        """The host's watermark has passed publish or ack ``number``."""
        return self.done_seq >= number

    def want(self, number: int) -> None:
        """A confirm waits for ``number`` (an ack, not a publish in confirm mode): the host
        reports its watermark past it only when asked."""
        if number > self.done_seq and number > self._wanted and self.link is not None:
            self._wanted = number
            self.link.send(c.ConfirmWanted(seq=number))

    def take_nack(self, number: int) -> bool:
        """Whether the host refused ``number`` (asked once: the answer is forgotten)."""
        if self.nacked and number in self.nacked:
            self.nacked.discard(number)
            return True
        return False

    # ------------------------------------------------------------ events
    def on_event(self, event) -> None:
        self.table[type(event)](event)

    def on_confirm(self, m: c.Confirm) -> None:
        self.seen = seen = m.seen
        if self.backlogged and self.seq - seen <= LINK_WINDOW // 2:
            self._release_publishers()
        if m.nacked:
            # kept even when the watermark does not move: a refused publish behind an ack
            # that waits for its commit is named now and passed by the watermark later
            self.nacked.update(m.nacked)
        if m.upto > self.done_seq:
            self.done_seq = m.upto
            for ch in list(self.listeners):
                ch.on_commit()

    def _release_publishers(self) -> None:
        self.backlogged = False
        waiters, self.flow_waiters = self.flow_waiters, set()
        for session in waiters:
            session.unthrottle(self)

    def on_dlv(self, m: c.Dlv) -> None:
        consumer = self.consumers.get(m.cid)
        if consumer is None:
            # cancelled while this was on its way: back to the queue (a stream keeps it
            # anyway; a group member's share hands it back to its group)
            ref = self.refs.get(m.qid)
            if ref is not None and ref.is_stream:
                self.settle_group(m.cid, 1, [m.offset])
            else:
                self.reject(m.qid, [m.offset], True)
            return
        consumer.channel.deliver(consumer, m.offset, m.record, m.redelivered)

    def on_reply(self, m: c.Reply) -> None:
        fut = self.pending.pop(m.req, None)
        if fut is None or fut.done():
            return
        if m.ok:
            fut.set_result(m.value)
        else:
            fut.set_exception(errors.from_reply(*m.value))

    def on_flow(self, m: c.Flow) -> None:
        ref = self.refs.get(m.qid)
        if ref is not None:
            ref.set_backlogged(m.on)

    def on_cancel(self, m: c.Cancel) -> None:
        consumer = self.consumers.pop(m.cid, None)
        if consumer is not None:
            consumer.channel.consumer_cancelled(consumer)

    def on_gone(self, m: c.Gone) -> None:
        ref = self.refs.get(m.qid)
        if ref is not None:
            ref.vhost.forget_queue(ref, m.reason)

    def on_dlx(self, m: c.Dlx) -> None:
        self.broker.route_dead_letter(m.vhost, m.exchange, m.keys, m.record, m.reason)

    def on_group_revoked(self, m: c.GroupRevoked) -> None:
        self.broker.group_revoked(self, m)      # the supervisor's groups (a no-op elsewhere)

    def on_alarm(self, m: c.Alarm) -> None:
        name = f"{m.name}@worker{self.index}"
        if m.detail is None:
            self.broker.alarms.clear(name)
        else:
            self.broker.alarms.set(name, m.detail)

    # ------------------------------------------------------------ host restart
    def host_lost(self) -> None:
        """The host died: fail what waited for it, so no publisher waits in silence."""
        self.epoch += 1
        self.link = None
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(self._gone_error())
        self.pending.clear()
        if self.seq > self.done_seq:
            self.nacked.update(range(self.done_seq + 1, self.seq + 1))
            self.done_seq = self.seq
        for ch in list(self.listeners):
            ch.on_commit()
        self.nacked.clear()
        for cid, consumer in list(self.consumers.items()):
            if consumer.member is not None:
                # a consumer group member's share: subscribed again once the worker is back
                # (``resubscribe``); its deliveries from before are void (epoch)
                consumer.credit_out = 0
                self.lost_shares.append(consumer)
                continue
            self.on_cancel(c.Cancel(cid=cid))
        for ref in self.refs.values():
            ref.set_backlogged(False)
        self.seen = self.seq
        self._release_publishers()
        self._grants.clear()

    def reopen(self) -> None:
        """After a restart: the new host recovers every queue of ours from disk."""
        for ref in list(self.refs.values()):
            ref.opened = ref.open()
        self.resubscribe()

    def resubscribe(self) -> None:
        """The restarted host has our queues open: subscribe the consumer group shares it
        lost again (inactive until the supervisor re-sends their assignment). One that
        cannot be cancels its member."""
        shares, self.lost_shares = self.lost_shares, []
        for share in shares:
            if self.consumers.get(share.cid) is not share or share.queue.deleted:
                continue
            share.credit_out = share.initial_credit(WINDOW)
            share.owed = 0
            fut = share.queue.subscribe(share, share.credit_out)
            fut.add_done_callback(lambda f, share=share: self._resubscribed(f, share))

    def _resubscribed(self, fut, share) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if exc is not None:
            log.warning("%r could not be subscribed again: %s", share, exc)
            self.on_cancel(c.Cancel(cid=share.cid))

