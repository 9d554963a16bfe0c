"""Consumer groups on a partition's worker: who may read the partition now, from where, and
the group's committed offset (the worker half of groups/__init__.py's wiring plan).

Theory of operation
-------------------
The supervisor decides which member of a group owns each partition (groups/coordinator.py);
the worker owning the partition does everything else, because everything else is about the
partition's log: reading it, knowing what was delivered and acked, storing the commits.

Per (stream, group) a ``GroupPartition``:

    subs       the members' shares of this partition, by member id: a ``GroupSub`` each,
               made by the member's basic.consume (a ``Sub`` whose arguments hold
               ``x-consumer-group`` and ``x-group-member``), inactive until assigned
    owner      (member, epoch) the supervisor's ``GroupAssign`` named: its ``GroupSub`` is a
               reader of the stream (``Stream.add_consumer``) while it is the owner
    revoking   (member, epoch) of a ``GroupRevoke`` not yet complete
    coordinator  the link the supervisor's ``GroupAssign`` and ``GroupRevoke`` came on, which
               its ``GroupRevoked`` goes back on: the supervisor's own (``links[0]``), or, for
               a partition this node leads in a cluster, the link of the node whose
               supervisor coordinates the group (the leader of the topic's partition 0:
               supervisor/groups.py, cluster/forward.py)
    term       the highest coordinator term seen (an epoch's high 32 bits): an Assign or
               Revoke of a lower term comes from a former coordinator and is ignored; an
               Assign of a new term to the member that owns the partition continues its
               reading (a new coordinator took the group over, nothing moved)
    tracker    the group's ``CommitTracker`` (groups/commits.py): deliveries, acks, the
               committed offset

A ``GroupSub`` is a stream reader like ``StreamSubscription`` (a ``Cursor`` with the
consumer's credit and filter); its ``deliver`` records each delivery in the tracker and skips
what the tracker says was already delivered (after a requeue the cursor steps back to the
requeued offset and reads forward again: only the requeued offsets go out a second time).

Assign: the tracker is made at the first assignment — at the stored commit
(``OffsetStore``, one per stream, in the stream's directory), or, for a group with no commit,
at the member's ``x-stream-offset`` (default ``next``) — and reused afterwards; ``revoke()``
restarts it at the committed offset, dropping whatever an earlier owner left unsettled when
its grace ran out (its late acks are fenced: a settle counts only from the owner or the member
being revoked). Revoke: the sub stops reading at once; the revocation is complete (the
supervisor hears ``GroupRevoked``) when the member's in-flight deliveries are settled, or at
once when the member is gone (its link detached: nothing it holds can be acked any more).

Commits follow the stream's commit round (worker/committer.py): a settle that moves the
committed offset marks the stream dirty; the round's ``Stream.flush`` hands every tracker's
new commit to the OffsetStore and flushes it, ``Stream.sync`` fsyncs it beside the log. So a
commit is on disk one round after its ack, and never ahead of it. In a cluster the
OffsetStore replicates with the partition (cluster/replication.py, ``FetchReply.offsets``):
a follower's holds the leader's commits, so after a failover the first ``_activate`` on the
new leader resumes the group from them.
"""
from __future__ import annotations

import logging

from .. import contract as c
from ..groups.commits import CommitTracker
from ..queue_args import StreamFilter, parse_stream_offset
from ..storage.record import now_ms
from .stream import Cursor

log = logging.getLogger("amqpbroker.groups")

GROUP_ARG = "x-consumer-group"
MEMBER_ARG = "x-group-member"     # set by the front-end: the member id the supervisor knows


class GroupSub:
    """One member's share of one partition: a reader of the stream while assigned."""
    __slots__ = ("state", "queue", "cid", "tag", "no_ack", "exclusive", "priority", "cursor",
                 "part", "member", "arguments", "gone", "lost")
    is_group = True

    def __init__(self, state, stream, part: "GroupPartition", cid: int, tag: str, *,
                 member: str, no_ack: bool, arguments: dict, credit: int):
        self.state = state
        self.queue = stream
        self.part = part
        self.cid = cid
        self.tag = tag
        self.member = member
        self.no_ack = no_ack
        self.exclusive = False
        self.priority = 0
        self.arguments = arguments
        self.gone = False               # unsubscribed (basic.cancel, channel closed)
        self.lost = False               # its link detached: it will settle nothing more
        self.cursor = Cursor(0, credit, StreamFilter.from_arguments(arguments))

    @property
    def credit(self) -> int:
        return self.cursor.credit

    @credit.setter
    def credit(self, n: int) -> None:
        self.cursor.credit = n

    def start_offset(self) -> int:
        """Where a group with no commit starts: this member's x-stream-offset (default next)."""
        spec = parse_stream_offset(self.arguments.get("x-stream-offset"), now_ms())
        return self.queue.resolve(spec)

    def deliver(self, stream, offset: int, record) -> None:
        tracker = self.part.tracker
        redelivered = False
        if offset < tracker.position:
            if not tracker.is_requeued(offset):
                return                  # delivered before a requeue stepped the cursor back
            redelivered = True
        self.cursor.credit -= 1
        tracker.deliver(offset)
        if self.no_ack:                 # at-most-once: committed as delivered
            stream.host.committer.mark(stream)
        self.state.emit(c.Dlv(cid=self.cid, qid=stream.qid, offset=offset,
                              redelivered=redelivered, record=record))

    def __repr__(self) -> str:
        return f"<GroupSub {self.member} of {self.part.group!r} on {self.queue.name}>"


class GroupPartition:
    """One group on one partition (see the module comment)."""

    def __init__(self, stream, group: str):
        self.stream = stream
        self.group = group
        self.subs: dict[str, GroupSub] = {}
        self.owner: tuple[str, int] | None = None
        self.revoking: tuple[str, int] | None = None
        self.tracker: CommitTracker | None = None
        self.coordinator = None         # LinkState of the last GroupAssign / GroupRevoke
        self.term = 0                   # the highest coordinator term seen (epoch >> 32)

    # ---------------------------------------------------------------- members
    def subscribe(self, sub: GroupSub) -> None:
        old = self.subs.get(sub.member)
        if old is not None:
            self._deactivate(old)
        self.subs[sub.member] = sub
        if self.owner is not None and self.owner[0] == sub.member:
            self._activate(sub)         # the assignment came first (a worker restart)

    def unsubscribe(self, sub: GroupSub) -> None:
        """basic.cancel, or the member's link went away: it reads no more. Its in-flight
        deliveries may still be settled (basic.cancel) until its revocation completes."""
        sub.gone = True
        self._deactivate(sub)
        member = sub.member
        if not (self.owner is not None and self.owner[0] == member
                or self.revoking is not None and self.revoking[0] == member):
            self._forget(sub)
        self.check_revoked()

    def detached(self, sub: GroupSub) -> None:
        """The member's front-end is gone: nothing it holds will be settled."""
        sub.lost = True
        if self.owner is not None and self.owner[0] == sub.member or \
                self.revoking is not None and self.revoking[0] == sub.member:
            if self.tracker is not None:
                n = self.tracker.revoke()
                if n:
                    log.info("group '%s' on '%s': %d deliveries of a lost member go to the "
                             "next owner", self.group, self.stream.name, n)
        self.unsubscribe(sub)

    # ---------------------------------------------------------------- supervisor's actions
    def _stale(self, epoch: int) -> bool:
        """An action of a former coordinator (a lower term): ignored. A new term is noted."""
        term = epoch >> 32
        if term < self.term:
            log.info("group '%s' on '%s': an action of a former coordinator (term %d < %d) "
                     "ignored", self.group, self.stream.name, term, self.term)
            return True
        self.term = term
        return False

    def assign(self, member: str, epoch: int, coordinator=None) -> None:
        if self._stale(epoch):
            return
        if coordinator is not None:
            self.coordinator = coordinator
        if self.revoking is not None and self.revoking[0] != member:
            # the grace ran out: the old owner's deliveries are dropped (their acks fenced)
            old = self.subs.get(self.revoking[0])
            self.revoking = None
            if old is not None:
                self._deactivate(old)
                if old.gone:
                    self._forget(old)
        if self.owner is not None and self.owner != (member, epoch):
            old = self.subs.get(self.owner[0])
            if old is not None and old.member != member:
                self._deactivate(old)
        if self.revoking is not None and self.revoking[0] == member:
            self.revoking = None        # it gets the partition back
        # the owner again: the same assignment re-sent (a worker restart), or a new
        # coordinator's for the member already reading (one coordinator gives a partition
        # to a member only after revoking it, so this is never a new assignment)
        same = self.owner is not None and self.owner[0] == member
        self.owner = (member, epoch)
        if self.tracker is not None and not same:
            n = self.tracker.revoke()
            if n:
                log.info("group '%s' on '%s': %d unsettled deliveries of the previous owner "
                         "will be delivered again", self.group, self.stream.name, n)
        sub = self.subs.get(member)
        if sub is not None and not sub.gone:
            self._activate(sub)

    def revoke(self, member: str, epoch: int, coordinator=None) -> None:
        if self._stale(epoch):
            return
        if coordinator is not None:
            self.coordinator = coordinator
        if self.owner is not None and self.owner[0] == member:
            self.owner = None
            sub = self.subs.get(member)
            if sub is not None:
                self._deactivate(sub)
        self.revoking = (member, epoch)
        self.check_revoked()

    def check_revoked(self) -> None:
        """Complete the revocation in progress if the member's deliveries are settled."""
        if self.revoking is None:
            return
        member, epoch = self.revoking
        sub = self.subs.get(member)
        tracker = self.tracker
        if tracker is not None and tracker.in_flight() and sub is not None and not sub.lost:
            return                      # (a cancelled member may still ack: grace)
        self.revoking = None
        if tracker is not None:
            tracker.revoke()            # requeued offsets stay behind the commit
        if sub is not None and sub.gone:
            self._forget(sub)
        stream = self.stream
        stream.host.to_coordinator(self.coordinator, c.GroupRevoked(
            qid=stream.qid, group=self.group, member=member, epoch=epoch))

    def live_members(self) -> list[str]:
        """The members whose share of this partition still reads here (subscribed, their
        link attached): a new coordinator waits for them to join before it assigns."""
        return sorted(m for m, sub in self.subs.items() if not sub.gone and not sub.lost)

    def live_owner(self) -> tuple[str, int] | None:
        """(member, epoch) of the owner if its share still reads here (a new coordinator
        keeps the partition with it when it joins again); None if it left or its link
        detached (its node died: nothing to keep)."""
        if self.owner is None:
            return None
        sub = self.subs.get(self.owner[0])
        return self.owner if sub is not None and not sub.gone and not sub.lost else None

    # ---------------------------------------------------------------- settling
    def may_settle(self, sub: GroupSub) -> bool:
        """Only the owner's and the revoked member's settles count (a fenced one's not)."""
        return self.tracker is not None and (
            self.owner is not None and self.owner[0] == sub.member
            or self.revoking is not None and self.revoking[0] == sub.member)

    def settle(self, sub: GroupSub, kind: int, offsets) -> bool:
        """kind 0 ack, 1 reject with requeue, 2 reject without. True if the commit moved."""
        tracker = self.tracker
        before = tracker.committed
        if kind == 1:
            if tracker.requeue(offsets) and self.owner is not None \
                    and self.owner[0] == sub.member and not sub.gone:
                sub.cursor.next_offset = min(sub.cursor.next_offset, tracker.next_offset())
                self.stream.schedule_dispatch()
        else:
            tracker.ack(offsets)
        self.check_revoked()
        return tracker.committed != before

    # ---------------------------------------------------------------- reading
    def _activate(self, sub: GroupSub) -> None:
        stream = self.stream
        if self.tracker is None:
            stored = stream.offsets.get(self.group)
            start = stored if stored is not None else sub.start_offset()
            self.tracker = CommitTracker(start, stream.log.start_offset, no_ack=sub.no_ack)
            if self.tracker.fell_back_from is not None:
                stream.host.group_fallbacks += 1        # counted (Prometheus) and logged
                log.warning("group '%s' on '%s': committed offset %d was removed by retention; "
                            "resuming at the log start %d", self.group, stream.name,
                            self.tracker.fell_back_from, self.tracker.committed)
        self.tracker.no_ack = sub.no_ack
        if sub not in stream.consumers:
            sub.cursor.next_offset = self.tracker.next_offset()
            stream.add_consumer(sub)

    def _deactivate(self, sub: GroupSub) -> None:
        self.stream.remove_consumer(sub)

    def _forget(self, sub: GroupSub) -> None:
        """A cancelled member's share has nothing left to settle here."""
        if self.subs.get(sub.member) is sub:
            del self.subs[sub.member]
        if sub.state.group_subs.get(sub.cid) is sub:
            del sub.state.group_subs[sub.cid]

    # ---------------------------------------------------------------- commit round
    def take_commit(self) -> int | None:
        return self.tracker.take_commit() if self.tracker is not None else None

    def clamp(self, log_start: int) -> None:
        if self.tracker is not None:
            old = self.tracker.clamp(log_start)
            if old is not None:
                self.stream.host.group_fallbacks += 1   # counted (Prometheus) and logged
                log.warning("group '%s' on '%s': retention removed offsets %d..%d before they "
                            "were committed; the group resumes at %d", self.group,
                            self.stream.name, old, log_start - 1, self.tracker.committed)
                self.stream.host.committer.mark(self.stream)


def is_group_consume(arguments) -> bool:
    return bool((arguments or {}).get(GROUP_ARG))
