"""The STOMP ports (``--stomp-port``, ``--stomp-tls-port``, ``--web-stomp-port``): each
accepted connection is a ``StompConnection``. They run in the metadata owner's process and
reach the queues through the AMQP listener, in every layout, as the MQTT ports do."""
from __future__ import annotations

import asyncio

from .connection import StompConnection


class StompServer:
    def __init__(self, broker):
        self.broker = broker
        self.connections: set[StompConnection] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self.web = None                                     # STOMP over WebSockets, when on

    async def start(self, host: str, port: int, ssl=None) -> tuple[str, int]:
        """Listen on ``port`` (0: any free one), over TLS with an ``ssl`` context."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: StompConnection(self), host or None, port,
                                          reuse_address=True, ssl=ssl)
        self._servers.append(server)
        return server.sockets[0].getsockname()[:2]

    async def start_web(self, host: str, port: int, path: str) -> tuple[str, int]:
        """STOMP over WebSockets (RabbitMQ's ``rabbitmq_web_stomp``: port 15674, path
        ``/ws``, frames in text messages; binary ones are taken too)."""
        from ..websocket import WebSocketServer
        self.web = WebSocketServer(path, ("v10.stomp", "v11.stomp", "v12.stomp"),
                                   lambda: StompConnection(self), "Web STOMP", text=True)
        return await self.web.start(host, port)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self.web is not None:
            await self.web.stop()
        for connection in list(self.connections):
            connection.close()
        for server in self._servers:
            await server.wait_closed()
