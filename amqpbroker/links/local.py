"""``LocalLink``: a ``PartitionClient`` (front-end) and a ``PartitionHost`` (worker) in one
process (``--workers 0``).

A command is a call into the host and an event a call into the client: the contract's
message objects cross as they are, nothing is copied or encoded. With ``codec=True`` every
message is encoded and decoded on the way (``contract.encode`` / ``decode``), exactly the
bytes a ring or TCP link would carry: tests use it to run the in-process broker over the
wire format.
"""
from __future__ import annotations

from .. import contract


def _round_trip(msg):
    return contract.decode(contract.encode_bytes(msg))


HOLD_MAX = 256            # publishes held at most before the host gets them (< LINK_WINDOW)


class LocalLink:
    """While a session handles what it read (``hold`` ... ``release``), publishes are held and
    handed to the host as one batch, as a ring link does once per loop turn: the host then
    answers one ``Confirm`` per batch, not per message. Any other command hands the held
    publishes over first, so the host sees every command in the order it was sent, and
    requests are still answered at once. The other way, the host hands a batch's deliveries
    over as one lot (``emit_many``, see ``LinkState.hold``), which the client gives each
    consumer's channel at once, as it does with what a ring link read."""

    def __init__(self, host, client, *, codec: bool = False):
        self.host = host
        self.client = client
        self.codec = codec
        self.state = host.attach(self)
        self.held: list | None = None
        client.connect(self)

    def send(self, cmd) -> None:
        if self.codec:
            cmd = _round_trip(cmd)
        held = self.held
        if held is not None:
            if type(cmd) is contract.Pub:
                held.append(cmd)
                if len(held) >= HOLD_MAX:
                    self._hand_over()
                return
            if held:
                self._hand_over()
        self.host.handle(self.state, (cmd,))

    def send_many(self, cmds: list) -> None:
        """Commands the host handles in one batch, none before the others (a fanout's
        publishes to its queues, numbered alike: ``PartitionClient.publish_routed``). Held,
        they join the held publishes; else they go at once."""
        if self.codec:
            cmds = [_round_trip(cmd) for cmd in cmds]
        held = self.held
        if held is None:
            self.host.handle(self.state, cmds)
            return
        held += cmds
        if len(held) >= HOLD_MAX:
            self._hand_over()

    def hold(self) -> None:
        if self.held is None:
            self.held = []

    def release(self) -> None:
        held, self.held = self.held, None
        if held:
            self.host.handle(self.state, held)

    def _hand_over(self) -> None:
        """The held publishes to the host now; hold on after them."""
        held, self.held = self.held, None        # what the host sends meanwhile goes through
        try:
            self.host.handle(self.state, held)
        finally:
            if self.held is None:
                self.held = []

    def emit(self, event) -> None:
        if self.codec:
            event = _round_trip(event)
        self.client.on_event(event)

    def emit_many(self, events: list) -> None:
        """A batch's deliveries at once (``LinkState.hold``), as a ring link's reader hands
        the client what it read."""
        if self.codec:
            events = [_round_trip(e) for e in events]
        self.client.on_events(events)
