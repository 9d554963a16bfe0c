"""The partition host: the worker side of the partition interface (see ``__init__``).

It owns the queues of one worker — log, ack log, ready lists, subscriptions with credit,
unacked offsets — and the group commit of their writes. Commands come from links (one per
front-end) and are handled in order; events go back to the link that asked, or to every link
(flow, alarms). Nothing here knows whether the link is a function call or a ring.

A queue whose files cannot be opened (a full disk, too many open files, a bad stored
argument) is *down*: the host remembers its ``open`` and refuses every command on it with
RabbitMQ's "has crashed" 404, nacks publishes routed to it, and leaves its files alone — only
``delete`` removes them, as RabbitMQ deletes a crashed queue's data. A later ``open`` (the
worker restarted) tries again.
"""
from __future__ import annotations

import logging
import os
from collections import deque

from .. import contract as c
from .. import errors
from .. import heartbeat
from ..storage import filecache
from ..stats import host_snapshot
from ..storage.fileformat import remove_directory
from .committer import Committer
from .queue import Queue
from .quorum import queue_class
from .stream import Stream, StreamSubscription
from .deadletter import dead_letter_record
from .groups import GROUP_ARG, MEMBER_ARG, GroupPartition, GroupSub
from .subscription import Subscription

log = logging.getLogger("amqpbroker.partition")


class LinkState:
    """What the host keeps per front-end: confirm watermark and that link's subscriptions."""

    def __init__(self, link):
        self.link = link
        self.emit = link.emit
        # a link that takes events in lots (``emit_many``: the in-process link) gets a
        # batch's deliveries as one; see ``hold`` (None: this link takes them one by one)
        self._emit_many = getattr(link, "emit_many", None)
        self._held: list | None = None
        self.last_seq = 0               # last publish number received
        self.sent_upto = 0              # last watermark sent
        self.sent_seen = 0              # last publish number reported as handled
        self.tracked = 0                # last publish of a channel in confirm mode
        self.wanted = 0                 # a number the front-end waits for (confirm_wanted)
        self.waiting: deque = deque()   # (commit generation, seq) of publishes not yet durable
        # (replication hook, offset, seq) of publishes to a replicated partition, confirmed
        # once its high watermark passes the offset (cluster/replication.py)
        self.replicating: deque = deque()
        self.nacked: list[int] = []
        self.subs: dict[int, Subscription] = {}
        self.unacked: dict[int, set] = {}   # qid -> offsets delivered over this link, unacked
        self.group_subs: dict[int, GroupSub] = {}   # cid -> consumer-group share, until its
        #                                             deliveries can no longer be settled

    def hold(self) -> bool:
        """Until ``release``, deliveries (``Dlv``) wait and go to the link as one lot; any
        other event sends them first, so the link sees every event in the order emitted.
        False if this link takes events one by one, or is held already (by a caller up the
        stack, which releases it)."""
        if self._emit_many is None or self._held is not None:
            return False
        self._held = []
        self.emit = self._emit_held
        return True

    def _emit_held(self, event) -> None:
        if type(event) is c.Dlv:
            self._held.append(event)
            return
        if self._held:
            self._flush_held()
        self.link.emit(event)

    def _flush_held(self) -> None:
        held = self._held
        if held:
            self._held = []
            self._emit_many(held)

    def release(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self.emit = self.link.emit
            if held:
                self._emit_many(held)

    def watermark(self) -> int:
        upto = self.waiting[0][1] - 1 if self.waiting else self.last_seq
        if self.replicating:
            upto = min(upto, self.replicating[0][2] - 1)
        return upto

    def send_confirms(self) -> None:
        """Report the watermark when someone waits for it: a publish in confirm mode or a
        number asked for (``ConfirmWanted``) it passed, a nack; ``seen`` at least every
        CONFIRM_SEEN_EVERY commands (the front-end's backlog of publishes). A lone message
        of a channel without confirms is not answered: no wake-up of its front-end."""
        upto = self.watermark()
        sent = self.sent_upto
        if self.nacked or (upto > sent and (self.tracked > sent or self.wanted > sent)) \
                or self.last_seq - self.sent_seen >= c.CONFIRM_SEEN_EVERY:
            self.sent_upto = upto
            self.sent_seen = self.last_seq
            nacked, self.nacked = self.nacked, []
            self.emit(c.Confirm(upto=upto, seen=self.last_seq, nacked=nacked))


class HostAlarms:
    """The committer's disk alarm, reported to every front-end (which blocks publishers)."""

    def __init__(self, host):
        self.host = host
        self.active: dict[str, str] = {}

    def set(self, name: str, detail: str) -> None:
        if name not in self.active:
            self.active[name] = detail
            self.host.broadcast(c.Alarm(name=name, detail=detail))

    def clear(self, name: str) -> None:
        if self.active.pop(name, None) is not None:
            self.host.broadcast(c.Alarm(name=name, detail=None))


class PartitionHost:
    def __init__(self, config, loop):
        self.config = config
        self.loop = loop
        filecache.configure(config.open_files_limit)    # the queues' files of this process
        self.cache_used = 0
        self.queues: dict[int, Queue] = {}
        self.down: dict[int, tuple[c.Open, str]] = {}    # qid -> (its open, why it failed)
        self.links: list[LinkState] = []
        self.alarms = HostAlarms(self)
        self.committer = Committer(self)
        # commits of consumer groups moved up to the log start (retention removed what they
        # named): counted for amqpbroker_group_offset_fallbacks_total
        self.group_fallbacks = 0
        # "reason queue-type strategy" -> messages dead-lettered (Queue.count_dead)
        self.dead_lettered: dict[str, int] = {}
        self.committer.listeners.add(self)
        # how many queues here lead a replicated partition (cluster/replication.py): none on
        # a single node, and the publish path then skips even the per-queue test
        self.replicating = 0
        self._depth = 0
        # queues a publish of the batch being handled found a consumer waiting for: they
        # dispatch once, after the batch's publishes (``dispatch_due``), not once a message
        self._due: dict[Queue, None] = {}
        self.table = c.handlers(self, c.PARTITION_COMMANDS)    # handler(state, msg)

    # ------------------------------------------------------------ links
    def attach(self, link) -> LinkState:
        state = LinkState(link)
        self.links.append(state)
        return state

    def detach(self, state: LinkState) -> None:
        """A front-end went away: its consumers go, their unacked messages are requeued."""
        if state in self.links:
            self.links.remove(state)
        for sub in list(state.group_subs.values()):
            if not sub.queue.deleted:
                sub.part.detached(sub)      # its revocation completes at once
        state.group_subs.clear()
        for sub in list(state.subs.values()):
            self.on_unsub(state, c.Unsub(req=0, cid=sub.cid))
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
        a publish refused after its republish would be confirmed before its nack is known.

        A queue whose publishes of the batch found a consumer waiting dispatches once, after
        them (``dispatch_soon``), and the batch's deliveries go to a front-end whose link
        takes lots as one (``LinkState.hold``)."""
        self._depth += 1
        held = []
        if self._depth == 1:
            for s in self.links:
                if s.hold():
                    held.append(s)
        try:
            self._handle(state, commands)
        finally:
            self._depth -= 1
        if not self._depth:
            try:
                if self._due:
                    self.dispatch_due()
                state.send_confirms()
            finally:
                for s in held:      # the batch's deliveries went to each front-end as one lot
                    s.release()

    def _handle(self, state: LinkState, commands) -> None:
        table = self.table
        Pub, Pubs = c.Pub, c.Pubs
        for cmd in commands:
            if self._due and type(cmd) is not Pub and type(cmd) is not Pubs:
                self.dispatch_due()     # any other command finds the queues as before
            try:
                table[type(cmd)](state, cmd)
            except Exception as exc:
                self._failed(state, cmd, exc)

    def dispatch_soon(self, q: Queue) -> bool:
        """A publish found ``q``'s consumers waiting: inside a batch, dispatch ``q`` once
        after the batch's publishes (True); outside one, the caller dispatches now (False)."""
        if not self._depth:
            return False
        self._due[q] = None
        return True

    def dispatch_held(self, q: Queue) -> None:
        """``q.dispatch()`` from the loop (``Queue.schedule_dispatch``: credit came, a
        commit round ended): its deliveries go to each front-end as one lot, as a batch's."""
        held = [s for s in self.links if s.hold()]
        try:
            q.dispatch()
        finally:
            for s in held:
                s.release()

    def dispatch_due(self) -> None:
        """Dispatch the queues ``dispatch_soon`` deferred, then tell their publishers to wait
        if they are still backlogged (``on_pub`` left that check to here)."""
        due, self._due = self._due, {}
        for q in due:
            try:
                q.dispatch()
                if not q.deleted:
                    q.check_backlog()
            except Exception:       # as a dispatch from the loop would be: logged; the
                #                     publishes were stored, the others' queues go on
                log.exception("queue '%s' in vhost '%s': dispatch failed", q.name,
                              q.vhost_name)

    def _failed(self, state: LinkState, cmd, exc: Exception) -> None:
        """The one place a command's error becomes an answer: a request gets a reply with
        the error; a publish that was not stored is nacked (never confirmed); anything else
        is logged."""
        if isinstance(exc, errors.AMQPError):
            err = exc
            if not cmd.REQUEST:
                log.warning("partition command %s refused: %s", cmd.NAME, err.reply_text)
        else:
            log.error("partition command %s failed", cmd.NAME, exc_info=exc)
            err = errors.InternalError(f"partition command {cmd.NAME} failed: {exc}")
        if cmd.REQUEST:
            if cmd.req:
                state.emit(c.Reply(req=cmd.req, ok=False, value=errors.to_reply(err)))
        elif type(cmd) is c.Pub:
            state.last_seq = max(state.last_seq, cmd.seq)
            state.nacked.append(cmd.seq)
            self._drop_waiting(state, cmd.seq)
        elif type(cmd) is c.Pubs:      # the plain queue's batch failed: none is confirmed
            last = cmd.seq + len(cmd.records) - 1
            state.last_seq = max(state.last_seq, last)
            state.nacked.extend(range(cmd.seq, last + 1))
            while state.waiting and state.waiting[-1][1] >= cmd.seq:
                state.waiting.pop()
        elif type(cmd) in (c.Ack, c.Reject, c.Modify):
            state.last_seq = max(state.last_seq, cmd.seq)

    def refuse(self, state: LinkState, cmd, reason: str) -> None:
        """A command this host cannot take (a forwarded publish for a queue not open here):
        answered as a failed one — a publish is nacked, never confirmed unstored."""
        self._failed(state, cmd, errors.NotFound(reason))
        if not self._depth:
            state.send_confirms()

    @staticmethod
    def _drop_waiting(state: LinkState, seq: int) -> None:
        """A refused publish must not wait for a commit round on its behalf."""
        if state.waiting and state.waiting[-1][1] == seq:
            state.waiting.pop()

    def _queue(self, qid: int) -> Queue:
        q = self.queues.get(qid)
        if q is None or q.deleted:
            if qid in self.down:
                m, reason = self.down[qid]
                raise errors.queue_down(m.vhost, m.name, reason)
            raise errors.NotFound(f"no queue with id {qid} on this worker")
        return q

    # ------------------------------------------------------------ commands
    def _reply(self, state, req: int, value=None) -> None:
        if req:
            state.emit(c.Reply(req=req, ok=True, value=value))

    def on_open(self, state, m: c.Open):
        heartbeat.beat()                # a restarted worker's opens may hold the loop long
        if m.qid not in self.queues:
            existed = os.path.isdir(m.directory)
            try:
                q = queue_class(m.arguments)(
                    self, m.vhost, m.name, durable=m.durable, auto_delete=m.auto_delete,
                    arguments=m.arguments, directory=m.directory, qid=m.qid)
            except Exception as exc:    # the data directory refused, or a stored argument
                raise self._open_failed(m, exc, existed) from None
            self.down.pop(m.qid, None)
            self.queues[m.qid] = q
        self._reply(state, m.req)

    def _open_failed(self, m: c.Open, exc: Exception, existed: bool) -> errors.AMQPError:
        """The queue is down: its files stay (a directory this open created holds nothing
        and goes); the requester gets a 506 and decides whether the queue stays defined."""
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
        elif isinstance(exc, errors.AMQPError):
            reason = exc.text
        else:
            # the requester logs the failure, once, with this reason; the traceback of
            # what is a bug here is for --log-level debug
            log.debug("opening queue '%s' in vhost '%s' failed", m.name, m.vhost, exc_info=exc)
            reason = f"{type(exc).__name__}: {exc}"
        self.down[m.qid] = (m, reason)
        if existed:     # the requester reports it, as down or as a failed declare
            log.debug("queue '%s' in vhost '%s' could not be opened: %s", m.name, m.vhost, exc)
        elif os.path.isdir(m.directory):
            try:
                remove_directory(m.directory)
            except OSError as cleanup:      # the first error is the one to report
                log.debug("removing %s failed: %s", m.directory, cleanup)
        return errors.ResourceError(f"cannot complete the method: {reason}")

    def on_pub(self, state, m: c.Pub):
        seq = m.seq
        state.last_seq = seq
        if m.track:
            state.tracked = seq
        q = self.queues.get(m.qid)
        if q is None or q.deleted:
            if m.track and (m.qid in self.down or not m.qid):
                # never confirm what a down queue did not store; qid 0 names no queue: a
                # cluster link's publish for a queue its Open did not map (forward.py)
                state.nacked.append(seq)
            return                       # deleted meanwhile: routed nowhere, confirmed
        record = m.record
        if self.replicating and q.replication is not None:
            self._pub_replicated(state, q, m)
            return
        if not q.publish(record, m.priority, m.flags):
            if m.track:                  # only a channel in confirm mode wants the nack
                state.nacked.append(seq)
        elif (record.flags & 1 or q.persists_all) and q.durable:
            self._wait_for_commit(state, q, seq)
        if q not in self._due:          # else checked after its dispatch (dispatch_due)
            q.check_backlog()

    def on_pubs(self, state, m: c.Pubs):
        """``on_pub`` for each of a read's publishes to one queue, numbered ``m.seq`` on: a
        plain queue (``Queue.publish_many``) appends them as one; any other, or a publish
        with flags, goes one by one, each answered as its ``Pub`` would be."""
        records = m.records
        first = m.seq
        q = self.queues.get(m.qid)
        publish_many = getattr(q, "publish_many", None)
        if publish_many is None or m.flags or q.deleted or not q._plain \
                or m.priority > q.plain_priority_max \
                or (self.replicating and q.replication is not None):
            Pub = c.Pub
            for i, record in enumerate(records):
                pub = Pub(qid=m.qid, seq=first + i, priority=m.priority, track=m.track,
                          flags=m.flags, record=record)
                try:
                    self.on_pub(state, pub)
                except Exception as exc:
                    self._failed(state, pub, exc)
            return
        last = first + len(records) - 1
        state.last_seq = last
        if m.track:
            state.tracked = last
        persistent = q.publish_many(records)        # the index of the first persistent one
        if q.durable and persistent is not None:
            self._wait_for_commit(state, q, first + persistent)
        if q not in self._due:          # else checked after its dispatch (dispatch_due)
            q.check_backlog()

    def _pub_replicated(self, state, q: Queue, m: c.Pub) -> None:
        """A publish to a replicated partition this node leads: nacked at once with too few
        in-sync replicas (Kafka's NotEnoughReplicas), else confirmed when the high watermark
        passes its offset (``replicated``), not after the leader's own commit round."""
        repl = q.replication
        if not repl.accepting():
            state.nacked.append(m.seq)
            return
        offset = q.store.next_offset
        if not q.publish(m.record, m.priority, m.flags):
            state.nacked.append(m.seq)
        elif q.store.next_offset > offset:
            state.replicating.append((repl, offset, m.seq))
        q.check_backlog()

    def replicated(self) -> None:
        """A replicated partition's high watermark moved, or its leadership ended: confirm
        (or nack) what waited for it, in each link's order."""
        for state in self.links:
            waiting = state.replicating
            moved = False
            while waiting:
                repl, offset, seq = waiting[0]
                verdict = repl.passed(offset)       # True, False (nack), None (not yet)
                if verdict is None:
                    break
                waiting.popleft()
                moved = True
                if not verdict:
                    state.nacked.append(seq)
            if moved:
                state.send_confirms()

    def reopen(self, q: Queue, closed=None) -> Queue:
        """Open queue ``q`` again from its files (a replica that becomes the leader: what it
        fetched is recovered into its ready list; ``closed()`` runs between close and open:
        a follower truncating its log); ``q`` must have no consumers."""
        q.close_storage(destroy=False)
        try:
            if closed is not None:
                closed()
        finally:
            new = self._reopened(q)
        return new

    def _reopened(self, q: Queue) -> Queue:
        new = type(q)(self, q.vhost_name, q.name, durable=q.durable, auto_delete=q.auto_delete,
                      arguments=q.arguments, directory=q.directory, qid=q.qid)
        self.queues[q.qid] = new
        return new

    def _wait_for_commit(self, state, q: Queue, seq: int) -> None:
        """Publish or ack number ``seq`` is confirmed after the next commit round, if it left
        something for that round to write (a requeue, or a message expired at once, did not:
        waiting for a round that nobody scheduled would stall every later confirm)."""
        if q in self.committer.dirty:
            state.waiting.append((self.committer.open_gen, seq))

    def on_sub(self, state, m: c.Sub):
        q = self._queue(m.qid)
        if any(s.exclusive for s in q.consumers) or (m.exclusive and q.consumers):
            raise errors.AccessRefused(f"queue '{q.name}' in vhost '{q.vhost_name}' in "
                                       f"exclusive use", 60, 20)
        args = m.arguments or {}
        if type(q) is Stream and args.get(GROUP_ARG):
            self._group_sub(state, q, m, args)
            return
        if type(q) is Stream:
            sub = StreamSubscription(state, q, m.cid, m.tag, no_ack=m.no_ack,
                                     exclusive=m.exclusive, arguments=args, credit=m.credit)
        else:
            sub = Subscription(state, q, m.cid, m.tag, no_ack=m.no_ack, exclusive=m.exclusive,
                               priority=args.get("x-priority", 0), credit=m.credit)
        state.subs[m.cid] = sub
        self._reply(state, m.req)
        q.add_consumer(sub)

    def on_unsub(self, state, m: c.Unsub):
        sub = state.subs.pop(m.cid, None)
        if type(sub) is GroupSub:
            if not sub.queue.deleted:
                sub.part.unsubscribe(sub)       # forgets it once nothing is left to settle
            else:
                state.group_subs.pop(sub.cid, None)
        elif sub is not None and not sub.queue.deleted:
            sub.queue.remove_consumer(sub)      # may delete an auto-delete queue ("gone")
        self._reply(state, m.req)

    def on_credit(self, state, m: c.Credit):
        for cid, n in m.grants:
            sub = state.subs.get(cid)
            if sub is not None:
                sub.credit += n
                sub.queue.schedule_dispatch()

    def on_ack(self, state, m: c.Ack):
        self._settle(state, m.qid, m.seq, m.offsets, None)

    def on_reject(self, state, m: c.Reject):
        self._settle(state, m.qid, m.seq, m.offsets, m.requeue)

    def on_modify(self, state, m: c.Modify):
        self._settle(state, m.qid, m.seq, [m.offset], m.requeue, m.properties)

    def _settle(self, state, qid, seq, offsets, requeue, properties=None) -> None:
        """ack (``requeue`` None) or reject (``properties``: modify's); numbered like a
        publish (see ``LinkState``)."""
        state.last_seq = seq
        q = self.queues.get(qid)
        if q is None or q.deleted:
            return
        held = state.unacked.get(qid)
        if held:
            held.difference_update(offsets)
        if requeue is None:
            q.ack(offsets)
        elif properties is None:
            q.reject(offsets, requeue)
            q.schedule_dispatch()
        else:
            q.modify(offsets[0], requeue, properties)
            q.schedule_dispatch()
        if q.durable:
            self._wait_for_commit(state, q, seq)      # after: the ack is what dirtied it

    def on_confirm_wanted(self, state, m: c.ConfirmWanted):
        state.wanted = max(state.wanted, m.seq)     # answered by send_confirms

    # ------------------------------------------------------------ consumer groups
    def _group_sub(self, state, q: Stream, m: c.Sub, args: dict) -> None:
        """A member's share of partition ``q``: inactive until the supervisor assigns it."""
        group = args[GROUP_ARG]
        part = q.groups.get(group)
        if part is None:
            part = q.groups[group] = GroupPartition(q, group)
        sub = GroupSub(state, q, part, m.cid, m.tag, member=args[MEMBER_ARG], no_ack=m.no_ack,
                       arguments=args, credit=m.credit)
        state.subs[m.cid] = sub
        state.group_subs[m.cid] = sub
        self._reply(state, m.req)
        part.subscribe(sub)

    def _group_part(self, qid: int, group: str) -> GroupPartition | None:
        q = self.queues.get(qid)
        if type(q) is not Stream or q.deleted:
            return None
        part = q.groups.get(group)
        if part is None:
            part = q.groups[group] = GroupPartition(q, group)
        return part

    def on_group_assign(self, state, m: c.GroupAssign):
        part = self._group_part(m.qid, m.group)
        if part is not None:
            part.assign(m.member, m.epoch, state)

    def on_group_revoke(self, state, m: c.GroupRevoke):
        part = self._group_part(m.qid, m.group)
        if part is None:        # the partition is gone: nothing is delivered, nothing owed
            state.emit(c.GroupRevoked(qid=m.qid, group=m.group, member=m.member,
                                      epoch=m.epoch))
            return
        part.revoke(m.member, m.epoch, state)

    def on_group_settle(self, state, m: c.GroupSettle):
        state.last_seq = m.seq
        sub = state.group_subs.get(m.cid)
        if sub is None or sub.queue.deleted:
            return
        part = sub.part
        if not part.may_settle(sub):
            return                      # fenced: the partition moved on without it
        q = sub.queue
        if part.settle(sub, m.kind, m.offsets):
            self.committer.mark(q)
            self._wait_for_commit(state, q, m.seq)

    def on_group_offsets(self, state, m: c.GroupOffsets):
        out = {}
        for qid in m.qids:
            q = self.queues.get(qid)
            if type(q) is not Stream or q.deleted:
                continue
            groups = q.offsets.in_file()    # an ack's commit shows once written (next round)
            out[qid] = {g: (off, q.log.start_offset, q.end_offset) for g, off in groups.items()}
        self._reply(state, m.req, out)

    def on_group_owners(self, state, m: c.GroupOwners):
        out = {}
        for qid in m.qids:
            q = self.queues.get(qid)
            part = q.groups.get(m.group) if type(q) is Stream and not q.deleted else None
            if part is not None:
                out[qid] = {"owner": part.live_owner(), "members": part.live_members()}
        self._reply(state, m.req, out)

    def on_group_reset(self, state, m: c.GroupReset):
        q = self._stream(m.qid)
        part = q.groups.get(m.group)
        if part is not None and (part.owner is not None or part.revoking is not None):
            raise errors.PreconditionFailed(
                f"consumer group '{m.group}' has members on '{q.name}'", 50, 10)
        to = m.to
        start, end = q.log.start_offset, q.end_offset
        if to == "earliest":
            offset = start
        elif to == "latest":
            offset = end
        elif isinstance(to, dict) and "offset" in to:
            offset = min(max(int(to["offset"]), start), end)
        elif isinstance(to, dict) and "timestamp" in to:
            offset = min(q.resolve(("timestamp", int(to["timestamp"]))), end)
        else:
            raise errors.PreconditionFailed(f"invalid offset reset {to!r}", 50, 10)
        if part is not None:
            part.tracker = None         # the next assignment starts at the new commit
        q.offsets.reset(m.group, offset)
        self._reply(state, m.req, offset)

    def _stream(self, qid: int) -> Stream:
        q = self._queue(qid)
        if type(q) is not Stream:
            raise errors.PreconditionFailed(f"queue '{q.name}' in vhost '{q.vhost_name}' is "
                                            f"not a stream", 50, 10)
        return q

    def on_track_offset(self, state, m: c.TrackOffset):
        """A stream-protocol StoreOffset: the commit of group ``reference`` (the offset after
        the one stored), buffered and written with the next commit round, as an ack's. A
        reference that is the name of a consumer group with members here is left alone."""
        q = self._stream(m.qid)
        part = q.groups.get(m.reference)
        if part is not None and (part.owner is not None or part.revoking is not None):
            raise errors.PreconditionFailed(
                f"consumer group '{m.reference}' has members on '{q.name}'", 50, 10)
        q.offsets.commit(m.reference, m.offset + 1)
        self.committer.mark(q)
        self._reply(state, m.req, None)

    def on_tracked_offset(self, state, m: c.TrackedOffset):
        committed = self._stream(m.qid).offsets.get(m.reference)
        self._reply(state, m.req, committed - 1 if committed else None)

    def on_producer_sequence(self, state, m: c.ProducerSequence):
        self._reply(state, m.req, self._stream(m.qid).producers.highest(m.producer) or 0)

    def on_get(self, state, m: c.Get):
        got = self._queue(m.qid).get(m.no_ack)
        if got is not None and not m.no_ack:
            state.unacked.setdefault(m.qid, set()).add(got[0])
        self._reply(state, m.req, got)

    def on_purge(self, state, m: c.Purge):
        self._reply(state, m.req, self._queue(m.qid).purge())

    def on_stats(self, state, m: c.Stats):
        out = {}
        for qid in m.qids:
            q = self.queues.get(qid)
            if q is not None and not q.deleted:
                held = getattr(q, "discards", None)     # at-least-once dead letters
                out[qid] = (q.ready_count, len(q.consumers), q.unacked, q.ready_bytes,
                            q.memory(), (len(held), held.bytes) if held is not None else None)
        self._reply(state, m.req, out)

    def on_partitions(self, state, m: c.Partitions):
        """Each queue's log as /api/partitions shows it: start and end offsets, bytes, and
        its segments (a classic queue's with how many of their messages are settled)."""
        out = {}
        for qid in m.qids:
            q = self.queues.get(qid)
            if q is None or q.deleted:
                continue
            stream = type(q) is Stream
            log = q.log if stream else q.store.log
            settled = {} if stream else {b: n for b, _, n in q.store.segments()}
            segments = [{"base_offset": b, "next_offset": n, "bytes": size,
                         **({} if stream else {"settled": settled.get(b, 0)})}
                        for b, n, size in log.segment_sizes()]
            end = q.end_offset if stream else q.store.next_offset    # buffered ones too
            out[qid] = {"log_start_offset": log.start_offset, "log_end_offset": end,
                        "durable_offset": log.durable_offset,
                        "bytes": sum(s["bytes"] for s in segments), "segments": segments}
        self._reply(state, m.req, out)

    def on_host_counters(self, state, m: c.HostCounters):
        self._reply(state, m.req, host_snapshot(self))

    def on_delete(self, state, m: c.Delete):
        q = self.queues.get(m.qid)
        if q is None or q.deleted:
            down = self.down.pop(m.qid, None)
            if down is not None and os.path.isdir(down[0].directory):
                remove_directory(down[0].directory)     # as RabbitMQ deletes a crashed queue
            self._reply(state, m.req, 0)
            return
        name = f"queue '{q.name}' in vhost '{q.vhost_name}'"
        if m.if_unused and q.consumers:
            raise errors.PreconditionFailed(f"{name} in use", 50, 40)
        if m.if_empty and q.ready_count:
            raise errors.PreconditionFailed(f"{name} not empty", 50, 40)
        count = 0 if type(q) is Stream else q.ready_count     # RabbitMQ: 0 for a stream
        self._destroy(q)
        self._reply(state, m.req, count)

    def on_set_arguments(self, state, m: c.SetArguments):
        q = self.queues.get(m.qid)
        if q is not None:
            q.apply_arguments(m.arguments)

    def on_touch(self, state, m: c.Touch):
        q = self.queues.get(m.qid)
        if q is not None:
            q.touch()

    def on_close(self, state, m: c.Close):
        """Shutdown: write and fsync what is pending, close every log."""
        self.close()

    # ------------------------------------------------------------ called by queues
    def queue_gone(self, q: Queue, reason: str) -> None:
        """auto-delete / x-expires: the queue deletes itself and tells the front-ends."""
        self._destroy(q)
        self.broadcast(c.Gone(qid=q.qid, reason=reason))

    def _destroy(self, q: Queue) -> None:
        for sub in list(q.consumers):
            sub.state.subs.pop(sub.cid, None)
            sub.state.emit(c.Cancel(cid=sub.cid))
        q.consumers.clear()
        for part in getattr(q, "groups", {}).values():      # inactive group shares too
            for sub in part.subs.values():
                sub.state.group_subs.pop(sub.cid, None)
                if sub.state.subs.pop(sub.cid, None) is not None:
                    sub.state.emit(c.Cancel(cid=sub.cid))
        self.queues.pop(q.qid, None)
        q.close_storage(destroy=True)

    def flow(self, q: Queue, on: bool) -> None:
        self.broadcast(c.Flow(qid=q.qid, on=on))

    def dead_letter(self, q: Queue, records, reason: str) -> None:
        if q.args.dlx is None or (q.deleted and reason != "rejected"):
            return
        for rec in records:
            self._send_dead_letter(q, rec, reason, False, 0)

    def dead_letter_held(self, q: Queue, offset: int, rec, reason: str) -> None:
        """A dead letter the queue holds until every target confirms it (at-least-once,
        worker/discards.py): the supervisor answers ``DlxSettle`` on this link."""
        self._send_dead_letter(q, rec, reason, True, offset)

    def _send_dead_letter(self, q: Queue, rec, reason: str, settle: bool, offset: int) -> None:
        new, keys = dead_letter_record(q, rec, reason)
        self.to_supervisor(c.Dlx(qid=q.qid, vhost=q.vhost_name, exchange=q.args.dlx,
                                keys=keys, reason=reason, record=new, settle=settle,
                                offset=offset))

    def on_dlx_settle(self, state, m: c.DlxSettle):
        q = self.queues.get(m.qid)
        settle = getattr(q, "settle_discards", None)
        if settle is not None and not q.deleted:
            settle(m.offsets)

    def to_supervisor(self, event) -> None:
        """An event one process must act on, with every routing table: the first link is the
        supervisor's (attached before any front-end's), or the only process's."""
        if self.links:
            self.links[0].emit(event)

    def to_coordinator(self, state, event) -> None:
        """A consumer group's event for the supervisor coordinating it: on the link its
        commands came on (another node's, in a cluster: worker/groups.py), while attached;
        none known: this node's supervisor."""
        if state is None:
            self.to_supervisor(event)
        elif state in self.links:
            state.emit(event)

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

