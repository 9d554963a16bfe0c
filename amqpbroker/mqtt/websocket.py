"""MQTT over WebSockets, as RabbitMQ's ``rabbitmq_web_mqtt`` plugin serves it
(``--web-mqtt-port``; RabbitMQ's port is 15675, its path ``/ws``): browsers' MQTT clients
(MQTT.js, Paho JavaScript) and paho-mqtt with ``transport="websockets"``.

Each WebSocket carries one MQTT connection, its packets in binary messages (a message may
hold part of a packet or several). The connection is the TCP listener's ``MqttConnection``
on a transport that writes binary messages, so everything MQTT does is the same on both.
aiohttp serves the HTTP upgrade (subprotocols ``mqtt`` and ``mqttv3.1``, as RabbitMQ).
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from .connection import MqttConnection

log = logging.getLogger("amqpbroker.mqtt")


class WebSocketTransport(asyncio.Transport):
    """What ``MqttConnection`` writes goes out as binary messages, in order (one sender)."""

    protocol_name = "Web MQTT"          # as RabbitMQ's management API names the protocol

    HIGH, LOW = 256 * 1024, 64 * 1024   # bytes queued: the connection stops / resumes

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, protocol):
        super().__init__()
        self.ws, self.request, self.protocol = ws, request, protocol
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.queued = 0                 # bytes in the outbox
        self.full = False
        self.reading = asyncio.Event()
        self.reading.set()
        self.closing = False
        self.sender = asyncio.get_running_loop().create_task(self._send())

    def get_extra_info(self, name, default=None):
        if name in ("peername", "sockname", "sslcontext"):
            return self.request.transport.get_extra_info(name, default)
        return default

    def write(self, data) -> None:
        if not self.closing:
            self.outbox.put_nowait(bytes(data))
            self.queued += len(data)
            if self.queued > self.HIGH and not self.full:
                self.full = True
                self.protocol.pause_writing()

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.outbox.put_nowait(None)
            self.reading.set()

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    async def _send(self) -> None:
        try:
            while True:
                data = await self.outbox.get()
                if data is None:
                    break
                await self.ws.send_bytes(data)
                self.queued -= len(data)
                if self.full and self.queued < self.LOW and not self.closing:
                    self.full = False
                    self.protocol.resume_writing()
        except (ConnectionError, RuntimeError):     # the client went: reading sees it
            pass
        finally:
            await self.ws.close()


class WebMqttServer:
    def __init__(self, mqtt, path: str):
        self.mqtt = mqtt                    # the MqttServer: client ids, retained messages
        self.path = path
        self.runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        app = web.Application()
        app.router.add_get(self.path, self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host or None, port, reuse_address=True)
        await site.start()
        return site._server.sockets[0].getsockname()[:2]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("mqtt", "mqttv3.1"), max_msg_size=0)
        await ws.prepare(request)
        connection = MqttConnection(self.mqtt)
        transport = WebSocketTransport(ws, request, connection)
        connection.connection_made(transport)
        try:
            async for message in ws:
                if message.type != WSMsgType.BINARY:
                    log.error("Web MQTT connection %s: a text message (MQTT is binary): "
                              "closed", connection.name)
                    connection.close()
                    break
                connection.data_received(message.data)
                await transport.reading.wait()
                if transport.closing:
                    break
        finally:
            connection.connection_lost(None)
            transport.close()
            await transport.sender
        return ws

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
