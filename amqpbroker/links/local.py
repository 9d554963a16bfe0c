"""Links join a ``PartitionClient`` (front-end) to a ``PartitionHost`` (worker).

``LocalLink``: both in one process (``--workers 0``); a command is a call into the host and an
event a call into the client, so nothing is copied or encoded. The ring link for worker
processes is in ``ringlink.py``.
"""
from __future__ import annotations


class LocalLink:
    def __init__(self, host, client):
        self.host = host
        self.client = client
        self.state = host.attach(self)
        client.connect(self)

    def send(self, cmd) -> None:
        self.host.handle(self.state, (cmd,))

    def emit(self, event) -> None:
        self.client.on_event(event)
