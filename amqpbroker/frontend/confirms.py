"""Publisher confirms of one channel: a small, pure tracker (RabbitMQ's ``rabbit_confirms``).

A publish on a channel in confirm mode gets the channel's next sequence number and waits for
*tickets*: ``(host, number)`` pairs — the publish number each partition host that got a copy
gave it, plus the numbers of this connection's earlier acks on other hosts (so that "ack, then
a confirmed publish" means the ack is durable too). A host settles numbers by *watermark*:
every number up to it is done, and the host names the ones it refused.

``take_settled`` answers what can be confirmed now, in order — confirms never overtake each
other on a channel — as ``(seq, multiple, ack)`` actions: consecutive acks collapse into one
``basic.ack multiple``, each refused publish is its own ``basic.nack``. The tracker does no
I/O and knows no channel: a host is anything with ``reached(number)`` (the watermark has
passed it) and ``take_nack(number)`` (it was refused; asking forgets it), which
``PartitionClient`` provides. The caller writes the frames and listens to the hosts of
``hosts()`` while anything is pending.
"""
from __future__ import annotations

from collections import deque


class Confirms:
    __slots__ = ("pending", "last_seq")

    def __init__(self):
        self.pending: deque = deque()       # (seq, tickets), in publish order
        self.last_seq = 0

    def __len__(self) -> int:
        return len(self.pending)

    def insert(self, tickets) -> int:
        """A publish waiting for ``tickets``; returns its sequence number."""
        self.last_seq += 1
        self.pending.append((self.last_seq, tickets))
        return self.last_seq

    def take_settled(self) -> list[tuple[int, bool, bool]]:
        """``(seq, multiple, ack)`` for every publish at the head that its hosts settled."""
        pending = self.pending
        out = []
        acked, run = 0, 0                 # highest acked seq not yet in ``out``, how many
        while pending:
            seq, tickets = pending[0]
            if len(tickets) == 1:           # the usual: one host (inlined, per message)
                host, n = tickets[0]
                if not host.reached(n):
                    break
                refused = host.take_nack(n)
            elif tickets_reached(tickets):
                refused = tickets_refused(tickets)
            else:
                break
            pending.popleft()
            if refused:
                if run:
                    out.append((acked, run > 1, True))
                    run = 0
                out.append((seq, False, False))
            else:
                acked, run = seq, run + 1
        if run:
            out.append((acked, run > 1, True))
        return out

    def hosts(self) -> set:
        return {host for _, tickets in self.pending for host, _ in tickets}

    def clear(self) -> None:
        """The channel closed: forget every pending publish (and what hosts refused of it)."""
        for _, tickets in self.pending:
            tickets_refused(tickets)
        self.pending.clear()


def tickets_reached(tickets) -> bool:
    """Every host of ``tickets`` has passed its number."""
    for host, n in tickets:
        if not host.reached(n):
            return False
    return True


def tickets_refused(tickets) -> bool:
    """Whether any host refused its number (each refusal is forgotten once asked: ask once,
    after ``tickets_reached``)."""
    refused = False
    for host, n in tickets:
        if host.take_nack(n):
            refused = True
    return refused
