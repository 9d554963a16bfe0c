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


class LocalLink:
    def __init__(self, host, client, *, codec: bool = False):
        self.host = host
        self.client = client
        self.codec = codec
        self.state = host.attach(self)
        client.connect(self)

    def send(self, cmd) -> None:
        if self.codec:
            cmd = _round_trip(cmd)
        self.host.handle(self.state, (cmd,))

    def emit(self, event) -> None:
        if self.codec:
            event = _round_trip(event)
        self.client.on_event(event)
