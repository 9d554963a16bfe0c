"""The partition host: the worker side of the partition interface (see ``__init__``).

It owns the queues of one worker — log, ack log, ready lists, subscriptions with credit,
unacked offsets — and the group commit of their writes. Commands come from links (one per
front-end) and are handled in order; events go back to the link that asked, or to every link
(flow, alarms). Nothing here knows whether the link is a function call or a ring.
"""
from __future__ import annotations

import logging
from collections import deque

from .. import errors
from .committer import Committer
from .queue import Queue
from .deadletter import dead_letter_record
from .subscription import Subscription

log = logging.getLogger("amqpbroker.partition")


class LinkState:
    """What the host keeps per front-end: confirm watermark and that link's subscriptions."""

    def __init__(self, link):
        self.link = link
        self.emit = link.emit
        self.last_seq = 0               # last publish number received
        self.sent_upto = 0              # last watermark sent
        self.sent_seen = 0              # last publish number reported as handled
        self.waiting: deque = deque()   # (commit generation, seq) of publishes not yet durable
        self.nacked: list[int] = []
        self.subs: dict[int, Subscription] = {}
        self.unacked: dict[int, set] = {}   # qid -> offsets delivered over this link, unacked

    def watermark(self) -> int:
        return self.waiting[0][1] - 1 if self.waiting else self.last_seq

    def send_confirms(self) -> None:
        upto = self.watermark()
        if upto > self.sent_upto or self.last_seq > self.sent_seen:
            self.sent_upto = upto
            self.sent_seen = self.last_seq
            nacked, self.nacked = self.nacked, []
            self.emit(("confirm", upto, nacked, self.last_seq))


class HostAlarms:
    """The committer's disk alarm, reported to every front-end (which blocks publishers)."""

    def __init__(self, host):
        self.host = host
        self.active: dict[str, str] = {}

    def set(self, name: str, detail: str) -> None:
        if name not in self.active:
            self.active[name] = detail
            self.host.broadcast(("alarm", name, detail))

    def clear(self, name: str) -> None:
        if self.active.pop(name, None) is not None:
            self.host.broadcast(("alarm", name, None))


class PartitionHost:
    def __init__(self, config, loop):
        self.config = config
        self.loop = loop
        self.cache_used = 0
        self.queues: dict[int, Queue] = {}
        self.links: list[LinkState] = []
        self.alarms = HostAlarms(self)
        self.committer = Committer(self)
        self.committer.listeners.add(self)
        self._depth = 0

    # ------------------------------------------------------------ links
    def attach(self, link) -> LinkState:
        state = LinkState(link)
        self.links.append(state)
        return state

    def detach(self, state: LinkState) -> None:
        """A front-end went away: its consumers go, their unacked messages are requeued."""
        if state in self.links:
            self.links.remove(state)
        for sub in list(state.subs.values()):
            self.op_unsub(state, 0, sub.cid)
        for qid, offsets in state.unacked.items():
            q = self.queues.get(qid)
            if q is not None and not q.deleted and offsets:
                q.reject(list(offsets), requeue=True)
        state.unacked.clear()

    def broadcast(self, event) -> None:
        for state in self.links:
            state.emit(event)

    def handle(self, state: LinkState, commands) -> None:
        """Handle a batch of commands from one link, then send what became confirmable.

        In-process, a command can arrive while another is handled (a dead-lettered message
        republished from inside ``Queue.publish``): confirms wait for the outermost batch, or
        a publish refused after its republish would be confirmed before its nack is known."""
        self._depth += 1
        try:
            self._handle(state, commands)
        finally:
            self._depth -= 1
        if not self._depth:
            state.send_confirms()

    def _handle(self, state: LinkState, commands) -> None:
        for cmd in commands:
            try:
                OPS[cmd[0]](self, state, *cmd[1:])
            except errors.AMQPError as err:       # a request the host refused
                if cmd[0] in REQUESTS and cmd[1]:
                    state.emit(("reply", cmd[1], False, errors.to_reply(err)))
                else:
                    log.warning("partition command %s refused: %s", cmd[0], err.reply_text)
            except Exception as exc:
                log.exception("partition command %s failed", cmd[0])
                if cmd[0] in REQUESTS and cmd[1]:
                    err = errors.InternalError(f"partition command failed: {exc}")
                    state.emit(("reply", cmd[1], False, errors.to_reply(err)))

    def _queue(self, qid: int) -> Queue:
        q = self.queues.get(qid)
        if q is None or q.deleted:
            raise errors.NotFound(f"no queue with id {qid} on this worker")
        return q

    # ------------------------------------------------------------ commands
    def op_open(self, state, req, qid, vhost, name, durable, auto_delete, arguments,
                directory):
        if qid not in self.queues:
            try:
                self.queues[qid] = Queue(self, vhost, name, durable=durable,
                                         auto_delete=auto_delete, arguments=arguments,
                                         directory=directory, qid=qid)
            except OSError as exc:     # the data directory refused: not a bug
                raise errors.ResourceError(f"cannot complete the method: {exc}") from None
        state.emit(("reply", req, True, None))

    def op_pub(self, state, qid, seq, priority, record, track):
        state.last_seq = seq
        q = self.queues.get(qid)
        if q is None or q.deleted:
            return                       # deleted meanwhile: routed nowhere, confirmed
        if not q.publish(record, priority):
            if track:                    # only a channel in confirm mode wants the nack
                state.nacked.append(seq)
        elif record.flags & 1 and q.durable:
            self._wait_for_commit(state, q, seq)
        q.check_backlog()

    def _wait_for_commit(self, state, q: Queue, seq: int) -> None:
        """Publish or ack number ``seq`` is confirmed after the next commit round, if it left
        something for that round to write (a requeue, or a message expired at once, did not:
        waiting for a round that nobody scheduled would stall every later confirm)."""
        if q in self.committer.dirty:
            state.waiting.append((self.committer.open_gen, seq))

    def op_sub(self, state, req, qid, cid, tag, no_ack, exclusive, priority, credit):
        q = self._queue(qid)
        if any(s.exclusive for s in q.consumers) or (exclusive and q.consumers):
            raise errors.AccessRefused(f"queue '{q.name}' in vhost '{q.vhost_name}' in "
                                       f"exclusive use", 60, 20)
        sub = Subscription(state, q, cid, tag, no_ack=no_ack, exclusive=exclusive,
                           priority=priority, credit=credit)
        state.subs[cid] = sub
        state.emit(("reply", req, True, None))
        q.add_consumer(sub)

    def op_unsub(self, state, req, cid):
        sub = state.subs.pop(cid, None)
        if sub is not None and not sub.queue.deleted:
            sub.queue.remove_consumer(sub)      # may delete an auto-delete queue ("gone")
        if req:
            state.emit(("reply", req, True, None))

    def op_credit(self, state, grants):
        for cid, n in grants:
            sub = state.subs.get(cid)
            if sub is not None:
                sub.credit += n
                sub.queue.schedule_dispatch()

    def op_ack(self, state, qid, seq, offsets):
        self._settle(state, qid, seq, offsets, None)

    def op_reject(self, state, qid, seq, offsets, requeue):
        self._settle(state, qid, seq, offsets, requeue)

    def _settle(self, state, qid, seq, offsets, requeue) -> None:
        """ack (``requeue`` None) or reject; numbered like a publish (see ``LinkState``)."""
        state.last_seq = seq
        q = self.queues.get(qid)
        if q is None or q.deleted:
            return
        held = state.unacked.get(qid)
        if held:
            held.difference_update(offsets)
        if requeue is None:
            q.ack(offsets)
        else:
            q.reject(offsets, requeue)
            q.schedule_dispatch()
        if q.durable:
            self._wait_for_commit(state, q, seq)      # after: the ack is what dirtied it

    def op_get(self, state, req, qid, no_ack):
        got = self._queue(qid).get(no_ack)
        if got is not None and not no_ack:
            state.unacked.setdefault(qid, set()).add(got[0])
        state.emit(("reply", req, True, got))

    def op_purge(self, state, req, qid):
        state.emit(("reply", req, True, self._queue(qid).purge()))

    def op_stats(self, state, req, qids):
        out = {}
        for qid in qids:
            q = self.queues.get(qid)
            if q is not None and not q.deleted:
                out[qid] = (q.ready_count, len(q.consumers), q.unacked, q.ready_bytes)
        state.emit(("reply", req, True, out))

    def op_delete(self, state, req, qid, if_unused, if_empty):
        q = self.queues.get(qid)
        if q is None or q.deleted:
            if req:
                state.emit(("reply", req, True, 0))
            return
        name = f"queue '{q.name}' in vhost '{q.vhost_name}'"
        if if_unused and q.consumers:
            raise errors.PreconditionFailed(f"{name} in use", 50, 40)
        if if_empty and q.ready_count:
            raise errors.PreconditionFailed(f"{name} not empty", 50, 40)
        count = q.ready_count
        self._destroy(q)
        if req:
            state.emit(("reply", req, True, count))

    def op_touch(self, state, qid):
        q = self.queues.get(qid)
        if q is not None:
            q.touch()

    def op_close(self, state):
        """Shutdown: write and fsync what is pending, close every log."""
        self.close()

    # ------------------------------------------------------------ called by queues
    def queue_gone(self, q: Queue, reason: str) -> None:
        """auto-delete / x-expires: the queue deletes itself and tells the front-ends."""
        self._destroy(q)
        self.broadcast(("gone", q.qid, reason))

    def _destroy(self, q: Queue) -> None:
        for sub in list(q.consumers):
            sub.state.subs.pop(sub.cid, None)
            sub.state.emit(("cancel", sub.cid))
        q.consumers.clear()
        self.queues.pop(q.qid, None)
        q.close_storage(destroy=True)

    def flow(self, q: Queue, on: bool) -> None:
        self.broadcast(("flow", q.qid, on))

    def dead_letter(self, q: Queue, records, reason: str) -> None:
        if q.args.dlx is None or (q.deleted and reason != "rejected"):
            return
        for rec in records:
            new, keys, skip_self = dead_letter_record(q, rec, reason)
            self.to_supervisor(("dlx", q.qid, q.vhost_name, q.args.dlx, keys, new, skip_self))

    def to_supervisor(self, event) -> None:
        """An event one process must act on, with every routing table: the first link is the
        supervisor's (attached before any front-end's), or the only process's."""
        if self.links:
            self.links[0].emit(event)

    def on_commit(self, gen: int) -> None:
        for state in self.links:
            waiting = state.waiting
            if waiting and waiting[0][0] <= gen:
                while waiting and waiting[0][0] <= gen:
                    waiting.popleft()
                state.send_confirms()

    def close(self) -> None:
        self.committer.drain()
        for q in list(self.queues.values()):
            q.close_storage(destroy=not q.durable)
        self.queues.clear()


OPS = {name[3:]: fn for name, fn in vars(PartitionHost).items() if name.startswith("op_")}
REQUESTS = {"open", "sub", "unsub", "get", "purge", "stats", "delete"}
