"""The membership state machine of one consumer group: KIP-848's reconciliation, pure.

Theory of operation
-------------------
Kafka's new group protocol (KIP-848) moves rebalancing to the server and makes it incremental:
the coordinator computes a *target assignment* (assignor.py) whenever membership changes, and
then *reconciles* each partition toward it, one partition at a time, never stopping the group.
A partition that must change owner is first **revoked** from its current owner (no new
deliveries); only when the revocation is **complete** (the old owner's in-flight deliveries on it
are settled, or its grace period ran out) is it **assigned** to its new owner, which starts
after the committed offset. Partitions that do not move are never touched. So at every instant
a partition is in exactly one of three states:

    free        nobody delivers it (no member yet, or reserved for an absent static member)
    delivering  Assign(p, m) was emitted; m receives its messages
    revoking    Revoke(p, m) was emitted; m gets no new deliveries, its in-flight ones may be
                acked until revoked(m, p, epoch) arrives or the grace deadline passes

and Assign is emitted only for a free partition: no partition is ever delivered to two members
at once. Every Assign carries a new per-partition *epoch*; Revoke repeats the epoch it ends and
revoked() must echo it, so a late revoked() from an earlier round (the member got the partition
back meanwhile) is ignored, as KIP-848 fences stale member epochs.

When the grace runs out the coordinator stops waiting: the next Assign goes out, and the worker
must then drop the old owner's in-flight deliveries on that partition (their acks no longer
commit; commits.CommitTracker.revoke) before delivering to the new owner from the committed
offset. Those messages are redelivered: at-least-once, never two live owners.

Static membership (KIP-345). A member that joins with an instance id (`x-group-instance-id`) is
known to the assignor by that id, not by its member id (`member_key`: "static:<instance id>",
else "member:<member id>", so a client-chosen id never collides with a member id). When it leaves without meaning it
(connection or channel loss: `leave(..., permanent=False)`), its partitions are revoked from the
dead member id but stay in the target under its instance id: reserved, delivered to nobody,
until `session_timeout` passes. If a member joins with that instance id before then, it gets
exactly those partitions back (under its new member id) and no other member sees any change.
After the timeout the reservation ends and the group rebalances without it. A second member
joining with an instance id in use by a connected member is refused (`InstanceIdInUse`, as
KIP-848's UNRELEASED_INSTANCE_ID).

A new coordinator (a cluster: partition 0's leader moved, supervisor/groups.py). It starts
with no state while the workers go on delivering each partition to the member the former
coordinator gave it. `take_over(until)` holds every partition (nothing assigned) until
`adopt(owners, members)` says, from the workers, who reads what and which members have a
live share; then each partition stays held for its reader until that member joins again
(it is then kept there: its target before the rebalance, and the Assign of the new term
continues its reading on the worker), until the member leaves, or until `until` (it is
gone: its partitions go to the others). A partition nobody reads (its leader moved with
the coordinator's, or its reader's node died) waits until every such member joined
again, so the assignor places it knowing them all. So members rejoining one by one move
nothing, as Kafka's members rejoin with what they own.

Purity: time comes in as `now` (seconds, any monotonic clock); every input returns the actions
to carry out, in order; `deadline()` says when `tick` next has work. No clocks, no I/O, no
asyncio: the supervisor owns the object and the timers (see groups/__init__.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .assignor import assign


@dataclass(frozen=True)
class Revoke:
    """Stop new deliveries of `partition` to `member`; answer revoked(member, partition, epoch)
    once its in-flight deliveries there are settled."""
    partition: int
    member: str
    epoch: int


@dataclass(frozen=True)
class Assign:
    """Start delivering `partition` to `member` after the committed offset, dropping any
    in-flight deliveries of it to other members first."""
    partition: int
    member: str
    epoch: int


Action = Revoke | Assign


class InstanceIdInUse(ValueError):
    """A member joined with the instance id of a member that is still connected."""


class UnknownMember(KeyError):
    pass


def member_key(member: str, instance_id: str | None) -> str:
    """The name the assignor knows a member by: its instance id if static, else its member
    id, in two namespaces (a client-chosen instance id can never equal a member id)."""
    return "static:" + instance_id if instance_id is not None else "member:" + member


@dataclass
class _Member:
    member_id: str
    instance_id: str | None
    connected: bool = True
    expires: float | None = None     # static and disconnected: reservation ends at this time

    @property
    def key(self) -> str:
        return member_key(self.member_id, self.instance_id)


class ConsumerGroup:
    """One group's membership and partition ownership. Not thread-safe; one owner calls it."""

    def __init__(self, name: str, partitions: Iterable[int], *,
                 revoke_grace: float = 30.0, session_timeout: float = 45.0,
                 first_epoch: int = 0):
        self.name = name
        # epochs count from here: a coordinator that took the group over from another starts
        # above every epoch the other gave out (supervisor/groups.py: its term << 32)
        self.first_epoch = first_epoch
        self.partitions = sorted(set(partitions))
        self.revoke_grace = revoke_grace
        self.session_timeout = session_timeout
        self._members: dict[str, _Member] = {}            # by member_key()
        self._key_of: dict[str, str] = {}                 # connected member id -> key
        self.target: dict[int, str] = {}                  # partition -> member key
        self._delivering: dict[int, tuple[str, int]] = {}  # partition -> (member id, epoch)
        self._revoking: dict[int, tuple[str, int, float]] = {}  # -> (member id, epoch, deadline)
        self._epochs: dict[int, int] = {}
        # a coordinator that took the group over: partitions held for their readers
        self._hold_until: float | None = None
        self._previous: dict[int, str] | None = None      # partition -> member id reading it
        self._expected: set[str] = set()        # member ids with a live share: to join again

    # -- inputs ----------------------------------------------------------------------------------
    def join(self, member: str, instance_id: str | None, now: float) -> list[Action]:
        """`member` (a consumer: unique while it lives) joins, static if `instance_id`."""
        if member in self._key_of:
            raise ValueError(f"member {member!r} already in group {self.name!r}")
        key = member_key(member, instance_id)
        if instance_id is not None and key in self._members:
            old = self._members[key]
            if old.connected:
                raise InstanceIdInUse(
                    f"instance id {instance_id!r} is in use by another member of consumer "
                    f"group {self.name!r}")
            old.member_id, old.connected, old.expires = member, True, None  # back in time
        else:
            self._members[key] = _Member(member, instance_id)
        self._key_of[member] = key
        return self._reconcile(now)

    def take_over(self, until: float) -> None:
        """This coordinator took the group over from another: assign nothing until `adopt`
        (or `until`); see the module doc."""
        self._hold_until, self._previous, self._expected = until, None, set()

    def adopt(self, owners: dict[int, str], members: Iterable[str],
              now: float) -> list[Action]:
        """{partition: member id} the workers deliver to (under the former coordinator), and
        the members with a live share: each partition is held for its reader until it joins
        again, the others until every such member did, or the hold ends."""
        if self._hold_until is None:
            return []
        self._previous = {p: m for p, m in owners.items() if p in self.partitions}
        self._expected = set(members) | set(self._previous.values())
        return self._reconcile(now)

    def _held(self) -> set[int]:
        """The partitions not to assign yet: all while the readers are unknown; then each
        whose reader has not joined again, and the others while a member has not."""
        if self._hold_until is None:
            return set()
        if self._previous is None:
            return set(self.partitions)
        waiting = any(m not in self._key_of for m in self._expected)
        return {p for p in self.partitions
                if (self._previous[p] not in self._key_of if p in self._previous
                    else waiting)}

    def leave(self, member: str, now: float, *, permanent: bool = False) -> list[Action]:
        """`member` is gone. A static member that did not leave `permanent`ly (connection or
        channel loss, not basic.cancel) keeps its partitions reserved for `session_timeout`."""
        key = self._key_of.pop(member, None)
        if self._previous is not None and (key is not None or member in self._expected):
            # (taken over) it will not come back for what it read
            self._previous = {p: m for p, m in self._previous.items() if m != member}
            self._expected.discard(member)
            if key is None:
                return self._reconcile(now)
        if key is None:
            raise UnknownMember(member)
        m = self._members[key]
        if m.instance_id is not None and not permanent:
            m.connected, m.expires = False, now + self.session_timeout
        else:
            del self._members[key]
        return self._reconcile(now)

    def revoked(self, member: str, partition: int, epoch: int) -> list[Action]:
        """The revocation of `partition` from `member` (at `epoch`) is complete. A stale or
        duplicate notice changes nothing."""
        r = self._revoking.get(partition)
        if r is None or r[0] != member or r[1] != epoch:
            return []
        del self._revoking[partition]
        return self._reconcile(None, rebalance=False)

    def tick(self, now: float) -> list[Action]:
        """Run the timers due at `now`: revocation grace, static members' session timeout."""
        for p, (_, _, deadline) in list(self._revoking.items()):
            if deadline <= now:
                del self._revoking[p]          # stop waiting: the Assign fences the old owner
        for key, m in list(self._members.items()):
            if m.expires is not None and m.expires <= now:
                del self._members[key]
        if self._hold_until is not None and self._hold_until <= now:
            self._hold_until = self._previous = None    # who did not join again is gone
            self._expected = set()
        return self._reconcile(now)

    def set_partitions(self, partitions: Iterable[int], now: float) -> list[Action]:
        """The topic's partitions changed (partitions added)."""
        self.partitions = sorted(set(partitions))
        return self._reconcile(now)

    # -- reconciliation --------------------------------------------------------------------------
    def _reconcile(self, now: float | None, rebalance: bool = True) -> list[Action]:
        """Recompute the target (unless membership is unchanged) and take every step toward it
        that is allowed now: revoke what is delivered to the wrong member, assign what is free
        to its connected target owner."""
        held, previous, holding = self._held(), self._previous or {}, self._hold_until
        if self._hold_until is not None and self._previous is not None and not held:
            self._hold_until = self._previous = None    # every member joined again
            self._expected = set()
        if rebalance:
            current = dict(self.target)
            if holding is not None:     # taken over: what the workers deliver, not a target
                current = {p: k for p, k in current.items()   # made before adopt() said it
                           if p in self._delivering or p in self._revoking}
            for p, member in previous.items():
                key = self._key_of.get(member)
                if key is not None and p not in self._delivering and p not in self._revoking:
                    current[p] = key    # it joined again: it keeps what it reads
            self.target = assign(self.partitions, self._members, current)
        actions: list[Action] = []
        for p, (member, epoch) in list(self._delivering.items()):
            key = self._key_of.get(member)
            if key is None or self.target.get(p) != key:
                del self._delivering[p]
                # (without a rebalance every delivering partition is on its target: `now` set)
                self._revoking[p] = (member, epoch, now + self.revoke_grace)
                actions.append(Revoke(p, member, epoch))
        for p in self.partitions:
            if p in self._delivering or p in self._revoking or p in held:
                continue
            owner = self._members.get(self.target.get(p))
            if owner is not None and owner.connected:
                epoch = self._epochs.get(p, self.first_epoch) + 1
                self._epochs[p] = epoch
                self._delivering[p] = (owner.member_id, epoch)
                actions.append(Assign(p, owner.member_id, epoch))
        return actions

    # -- queries ---------------------------------------------------------------------------------
    def deadline(self) -> float | None:
        """When tick() next has something to do (None: no timer running)."""
        times = [d for _, _, d in self._revoking.values()]
        times += [m.expires for m in self._members.values() if m.expires is not None]
        if self._hold_until is not None:
            times.append(self._hold_until)
        return min(times, default=None)

    def delivering(self) -> dict[int, tuple[str, int]]:
        """{partition: (member id, epoch)} of the partitions being delivered (a copy)."""
        return dict(self._delivering)

    def revoking(self) -> dict[int, tuple[str, int, float]]:
        """{partition: (member id, epoch, grace deadline)} of revocations in progress."""
        return dict(self._revoking)

    def members(self) -> dict[str, str | None]:
        """{member id: instance id} of the connected members."""
        return {mid: self._members[k].instance_id for mid, k in self._key_of.items()}

    def reserved(self) -> dict[str, float]:
        """{instance id: session expiry} of absent static members holding a reservation."""
        return {m.instance_id: m.expires for m in self._members.values() if not m.connected}

    def is_empty(self) -> bool:
        """No member, connected or reserved (offset resets are allowed only then, as Kafka)."""
        return not self._members
