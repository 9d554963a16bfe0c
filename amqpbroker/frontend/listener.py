"""The AMQP listeners: accept TCP (and TLS) connections and run a ``Session`` for each."""
from __future__ import annotations

import asyncio
import logging
import socket

from ..amqp10.listener import Amqp10Server
from .ack_timeouts import AckTimeouts
from .session import HANDSHAKE_TIMEOUT, Session, server_properties

log = logging.getLogger("amqpbroker.server")


class AMQPServer:
    def __init__(self, broker, index: int = 0):
        self.broker = broker
        self.index = index                # front-end number (0 when there is one process)
        self.token_prefix = f"{index}."   # reply-to tokens and exclusive owners say where
        self.sessions: set[Session] = set()
        self.reply_to: dict = {}          # direct reply-to token -> (channel, consumer)
        self._properties = server_properties(broker.cluster_name)
        self._servers: list[asyncio.base_events.Server] = []
        self.ack_timeouts = AckTimeouts(self)     # consumer_timeout (ack_timeouts.py)
        self.plain_address: tuple[str, int] | None = None     # the non-TLS listener's
        self.amqp10 = Amqp10Server(broker, self.local_address)   # AMQP 1.0 clients

    def local_address(self) -> tuple[str, int]:
        """Where an AMQP 1.0 client's AMQP connection goes: this process's listener."""
        host, port = self.plain_address
        return ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host), port

    @property
    def server_properties(self) -> dict:
        """connection.start's server properties: the cluster name as it is now (one dict
        shared by the connections until the name changes)."""
        name = self.broker.cluster_name
        if self._properties["cluster_name"] != name:
            self._properties = server_properties(name)
        return self._properties

    async def start(self, host: str, port: int, sock=None, ssl=None) -> list[tuple[str, int]]:
        """Listen on host:port, or accept on ``sock`` (a listening socket shared by every
        front-end process, inherited from the supervisor); with ``ssl`` (a server
        ``SSLContext``) connections speak TLS (AMQPS). Called once per listener."""
        tls = {"ssl": ssl, "ssl_handshake_timeout": HANDSHAKE_TIMEOUT} if ssl else {}
        if sock is not None:
            server = await self.broker.loop.create_server(lambda: Session(self), sock=sock,
                                                          **tls)
        else:
            server = await self.broker.loop.create_server(
                lambda: Session(self), host=host or None, port=port, reuse_address=True,
                backlog=1024, **tls)
        self._servers.append(server)
        self.ack_timeouts.start()
        addrs = []
        for sock in server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            addrs.append(sock.getsockname()[:2])
        if ssl is None and self.plain_address is None:
            self.plain_address = addrs[0]
        return addrs

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, close every connection with 320 CONNECTION_FORCED, wait briefly."""
        for server in self._servers:
            server.close()
        self.ack_timeouts.stop()
        for connection in list(self.amqp10.connections):
            connection.close()
        for s in list(self.sessions):
            s.force_close("broker forced connection closure with reason 'shutdown'")
        deadline = self.broker.loop.time() + timeout
        while self.sessions and self.broker.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for s in list(self.sessions):
            s._abort()
