"""A whole broker in this process, without sockets: for tests that feed a session many
inputs fast (fuzzing) and read back what it wrote.

``InProcessBroker(data_dir)`` builds what a one-process broker runs (the metadata owner, a
partition host on disk joined through a ``LocalLink`` that passes every message through the
contract's codec, the AMQP server) on its own event loop. ``connect()`` gives a ``Peer``: a
``Session`` on a transport that only collects bytes. ``run(coro)`` drives the loop;
``settle()`` turns it until nothing more is written.
"""
from __future__ import annotations

import asyncio

from ..config import Config
from ..frontend.listener import AMQPServer
from ..frontend.partition_client import PartitionClient
from ..frontend.session import Session
from ..links.local import LocalLink
from ..supervisor.owner import MetadataOwner
from ..worker.host import PartitionHost
from .feeder import frames


class Transport(asyncio.Transport):
    """Collects what the session writes; the peer is on loopback."""

    def __init__(self):
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data):
        self.out += data

    def writelines(self, chunks):
        for c in chunks:
            self.out += c

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 50000) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_write_buffer_size(self):
        return 0

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True


class Peer:
    """One client connection into the session: bytes in, frames out."""

    def __init__(self, server: AMQPServer):
        self.transport = Transport()
        self.session = Session(server)
        self.session.connection_made(self.transport)
        self.lost = False

    def send(self, data: bytes) -> None:
        if not self.transport.closed:
            self.session.data_received(data)

    def take(self) -> list:
        """(channel, frame) for everything written since the last call."""
        out = frames(bytes(self.transport.out))
        self.transport.out.clear()
        return out

    def close(self) -> None:
        """The client's socket went away."""
        if not self.lost:
            self.lost = True
            self.session.connection_lost(None)


class InProcessBroker:
    def __init__(self, data_dir: str, **config):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.config = Config(data_dir=str(data_dir), **config)
        self.owner = MetadataOwner(self.config, self.loop)
        partition = PartitionClient.of(self.owner, 0)
        LocalLink(PartitionHost(self.config, self.loop), partition, codec=True)
        self.owner.start([partition])
        self.owner.delayed.start()
        self.server = AMQPServer(self.owner)
        self.peers: list[Peer] = []

    def connect(self) -> Peer:
        peer = Peer(self.server)
        self.peers.append(peer)
        return peer

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def settle(self, peers=(), quiet_turns: int = 30, max_turns: int = 5000) -> None:
        """Turn the loop until ``peers`` wrote nothing for ``quiet_turns`` turns."""
        self.run(turns(peers, quiet_turns, max_turns))

    def close(self) -> None:
        for p in self.peers:
            p.close()
        self.settle()
        self.owner.close()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()
        asyncio.set_event_loop(None)


async def turns(peers, quiet_turns: int = 30, max_turns: int = 5000) -> None:
    """Turn the running loop until ``peers`` wrote nothing for ``quiet_turns`` turns (at
    most ``max_turns``)."""
    quiet, seen = 0, [len(p.transport.out) for p in peers]
    for _ in range(max_turns):
        await asyncio.sleep(0)
        now = [len(p.transport.out) for p in peers]
        quiet = quiet + 1 if now == seen else 0
        seen = now
        if quiet >= quiet_turns:
            return
