"""The MQTT port: accepts connections (``connection.py``), knows which client ids are
connected (a new connection with an id in use closes the old one, MQTT 3.1.1 section
3.1.4), and keeps the retained messages (``retained.py``). It runs in the metadata
owner's process and reaches the queues through the AMQP listener, in every layout."""
from __future__ import annotations

import asyncio
import logging
import os

from .connection import MqttConnection
from .retained import RetainedStore

log = logging.getLogger("amqpbroker.mqtt")


class MqttServer:
    def __init__(self, broker):
        self.broker = broker
        self.connections: set[MqttConnection] = set()
        self.clients: dict[str, MqttConnection] = {}        # client id -> its connection
        self.retained = RetainedStore(os.path.join(broker.config.data_dir, "mqtt"))
        self._servers: list[asyncio.base_events.Server] = []
        self.web = None                                     # MQTT over WebSockets, when on

    async def start(self, host: str, port: int, ssl=None) -> tuple[str, int]:
        """Listen on ``port`` (0: any free one), over TLS with an ``ssl`` context."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: MqttConnection(self), host or None, port,
                                          reuse_address=True, ssl=ssl)
        self._servers.append(server)
        return server.sockets[0].getsockname()[:2]

    async def start_web(self, host: str, port: int, path: str) -> tuple[str, int]:
        """MQTT over WebSockets on ``port`` at ``path`` (``amqpbroker/websocket.py``; RabbitMQ's
        ``rabbitmq_web_mqtt``: port 15675, path ``/ws``, MQTT in binary messages)."""
        from ..websocket import WebSocketServer
        self.web = WebSocketServer(path, ("mqtt", "mqttv3.1"), lambda: MqttConnection(self),
                                   "Web MQTT")
        return await self.web.start(host, port)

    def register(self, connection: MqttConnection) -> None:
        old = self.clients.get(connection.client_id)
        self.clients[connection.client_id] = connection
        if old is not None and old is not connection:
            old.take_over()

    def forget(self, connection: MqttConnection) -> None:
        self.connections.discard(connection)
        if self.clients.get(connection.client_id) is connection:
            del self.clients[connection.client_id]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self.web is not None:
            await self.web.stop()
        for connection in list(self.connections):
            connection.close()
        for server in self._servers:
            await server.wait_closed()
        self.retained.flush()
