"""At-least-once dead letters, the routing side: settle a held dead letter once every queue
it was routed to has confirmed its copy (RabbitMQ's ``rabbit_fifo_dlx_worker``, whose
publisher confirms are these).

A quorum queue that holds its dead letters until confirmed (worker/discards.py) sends each
as a ``Dlx`` with ``settle``; the broker routes it as any dead letter, publishes every copy
tracked, and waits here for the copies' *tickets* — ``(host, number)``, as a channel's
confirms do (confirms.py). Once every host passed its number: all stored, the source host
gets ``DlxSettle`` for that offset; one refused (a full target with reject-publish, a host
that went away): nothing, and the source sends it again after its confirm timeout. Nothing
here survives a restart and nothing needs to: the source holds the message until settled.
"""
from __future__ import annotations

from .. import contract as c
from .confirms import tickets_reached, tickets_refused


class DeadLetterConfirms:
    def __init__(self):
        self.pending: list = []         # (tickets, source client, source qid, offset)
        self.hosts: set = set()         # the clients this listens to

    def __len__(self) -> int:
        return len(self.pending)

    def wait(self, tickets: list, source) -> None:
        """``source``: (client, qid, offset) of the held message these copies are of."""
        self.pending.append((tickets, *source))
        for client, _ in tickets:
            client.listeners.add(self)
            self.hosts.add(client)
        self.on_commit()

    def on_commit(self) -> None:
        """A host's confirm watermark moved (the listener call a channel gets too)."""
        waiting, settled = [], {}
        for entry in self.pending:
            tickets = entry[0]
            if not tickets_reached(tickets):
                waiting.append(entry)
            elif not tickets_refused(tickets):
                settled.setdefault((entry[1], entry[2]), []).append(entry[3])
        self.pending = waiting
        for (client, qid), offsets in settled.items():
            client.send(c.DlxSettle(qid=qid, offsets=offsets))
        if not waiting:
            for client in self.hosts:
                client.listeners.discard(self)
            self.hosts.clear()
