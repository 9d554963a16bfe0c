"""The committed offset of one consumer group on one partition, driven by deliveries and acks.

Theory of operation
-------------------
The committed offset has Kafka's meaning: the **next offset to read**. A group whose partition
is reassigned, or a broker that restarts, resumes there; so it must never pass a message that
was delivered and not yet acked (that would lose it), and it should follow the acks as closely
as that allows (everything behind it is not redelivered).

One `CommitTracker` per (group, partition), in the worker that owns the partition. It knows:

    position     the next offset to read from the log for this group
    in flight    offsets delivered and not yet settled
    redeliver    offsets handed back (nack/reject with requeue) to be delivered again first

and the committed offset is the lowest offset still owed a delivery or a settlement:

    committed = min(in flight | redeliver | {position})

Acks may arrive in any order; an ack removes its offset from the in-flight set, and the commit
moves up to the next offset still in flight — "past the highest contiguous acked offset", where
offsets the group never had to deliver (skipped by a stream filter: `skip_to`) count as done.
It never passes an unacked delivery, so it is never ahead of what was acked. It only ever grows.

A reject without requeue settles the offset like an ack (dead-lettering is the caller's).
`revoke()` is what a partition's revocation does once its grace ran out, or after a crash of
the member: in-flight and requeued offsets are forgotten (their late acks are ignored) and
reading restarts at the committed offset, so the next owner gets every unacked message again
(at-least-once; duplicates only of unacked ones). With `no_ack` (at-most-once) nothing is in
flight: an offset is committed as it is delivered.

Retention can delete the segment holding the committed offset of a slow or absent group. Then
`clamp(log_start)` moves the commit (and any position behind it) up to the log start and
returns the offset it fell from, for the caller to count and log; the constructor does the same
for a commit loaded from the offset store (`fell_back_from`).

In memory: the in-flight and requeued offsets as sets, and a min-heap over both with lazy
deletion (an offset leaves the heap when it reaches the top and is in neither set), so a
delivery and an ack each cost O(log n) in C-implemented heapq, acks in any order.

`take_commit()` hands out the committed offset when it changed since the last call: the worker
appends that to the partition's OffsetStore (offset_store.py) once per commit round, so a burst
of acks costs one record per group.
"""
from __future__ import annotations

import heapq
from typing import Iterable


class CommitTracker:
    __slots__ = ("no_ack", "position", "committed", "fell_back_from", "_in_flight",
                 "_redeliver", "_owed", "_requeued", "_taken")

    def __init__(self, committed: int, log_start: int = 0, *, no_ack: bool = False):
        """Resume at `committed` (from the offset store, or the group's start offset when it
        has no commit); a commit below `log_start` falls back to it (see `fell_back_from`)."""
        self.no_ack = no_ack
        self.position = committed
        self.committed = committed
        self._in_flight: set[int] = set()
        self._redeliver: set[int] = set()
        self._owed: list[int] = []        # heap: in flight or requeued (plus stale entries)
        self._requeued: list[int] = []    # heap: requeued (plus stale entries)
        self._taken = committed
        self.fell_back_from = self.clamp(log_start)

    # -- delivering ------------------------------------------------------------------------------
    def next_offset(self) -> int:
        """The offset to deliver next: a requeued one first, else the next in the log."""
        requeued, redeliver = self._requeued, self._redeliver
        while requeued and requeued[0] not in redeliver:
            heapq.heappop(requeued)
        return requeued[0] if requeued else self.position

    def deliver(self, offset: int) -> None:
        """`offset` was delivered: a requeued one, or one at or after `position` (offsets in
        between are skipped: not for this group)."""
        if offset in self._redeliver:
            self._redeliver.remove(offset)
            if not self.no_ack:
                self._in_flight.add(offset)       # still in the owed heap
        elif offset >= self.position:
            self.position = offset + 1
            if not self.no_ack:
                self._in_flight.add(offset)
                heapq.heappush(self._owed, offset)
        else:
            raise ValueError(f"offset {offset} was already delivered (position {self.position})")
        self._advance()

    def skip_to(self, offset: int) -> None:
        """Offsets below `offset` need no delivery (a filtered read scanned past them)."""
        if offset > self.position:
            self.position = offset
            self._advance()

    # -- settling --------------------------------------------------------------------------------
    def ack(self, offsets: Iterable[int]) -> int:
        """Settle delivered offsets (ack, or reject without requeue); returns how many were in
        flight (acks of offsets not in flight, e.g. from before a revoke, are ignored)."""
        in_flight = self._in_flight
        n = len(in_flight)
        in_flight.difference_update(offsets)
        n -= len(in_flight)
        if n:
            self._advance()
        return n

    def requeue(self, offsets: Iterable[int]) -> int:
        """Hand delivered offsets back for redelivery (nack/reject with requeue); returns how
        many were in flight."""
        n = 0
        for o in offsets:
            if o in self._in_flight:
                self._in_flight.remove(o)
                self._redeliver.add(o)
                heapq.heappush(self._requeued, o)
                n += 1
        return n

    def revoke(self) -> int:
        """Forget every unsettled delivery; reading restarts at the committed offset. Returns
        how many were forgotten (they will be delivered again)."""
        n = len(self._in_flight) + len(self._redeliver)
        self._in_flight.clear()
        self._redeliver.clear()
        self._owed.clear()
        self._requeued.clear()
        self.position = self.committed
        return n

    def clamp(self, log_start: int) -> int | None:
        """The log now starts at `log_start` (retention). If the commit was below it, move it
        there, forget what cannot be read any more, and return the old commit."""
        if self.committed >= log_start:
            return None
        old = self.committed
        owed = self._owed
        while owed and owed[0] < log_start:
            o = heapq.heappop(owed)
            self._in_flight.discard(o)
            self._redeliver.discard(o)
        self.position = max(self.position, log_start)
        self._advance()
        return old

    # -- state -----------------------------------------------------------------------------------
    def _advance(self) -> None:
        owed, in_flight, redeliver = self._owed, self._in_flight, self._redeliver
        while owed and owed[0] not in in_flight and owed[0] not in redeliver:
            heapq.heappop(owed)
        self.committed = owed[0] if owed else self.position

    def is_requeued(self, offset: int) -> bool:
        """`offset` was handed back and waits to be delivered again."""
        return offset in self._redeliver

    def in_flight(self) -> int:
        """Deliveries not yet settled."""
        return len(self._in_flight)

    def unsettled(self) -> list[int]:
        """In-flight and requeued offsets, sorted (for tests and diagnostics)."""
        return sorted(self._in_flight | self._redeliver)

    def take_commit(self) -> int | None:
        """The committed offset if it changed since the last call (to be stored), else None."""
        if self.committed == self._taken:
            return None
        self._taken = self.committed
        return self.committed
