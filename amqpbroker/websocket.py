"""Protocols over WebSockets, as RabbitMQ's ``rabbitmq_web_mqtt`` and ``rabbitmq_web_stomp``
plugins serve them: browsers' clients (MQTT.js, Paho JavaScript, stomp.js) and Python's
(paho-mqtt with ``transport="websockets"``, stomp.py's ``WSStompConnection``).

Each WebSocket carries one connection of the protocol, its bytes in WebSocket messages (a
message may hold part of a packet or frame, or several). The connection is the TCP
listener's own (``MqttConnection``, ``StompConnection``) on a transport that writes
WebSocket messages, so everything the protocol does is the same on both. aiohttp serves the
HTTP upgrade with the subprotocols RabbitMQ's plugins name.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

log = logging.getLogger("amqpbroker.websocket")


class WebSocketTransport(asyncio.Transport):
    """What the connection writes goes out as WebSocket messages (binary, or text for a
    text protocol), in order (one sender)."""

    HIGH, LOW = 256 * 1024, 64 * 1024   # bytes queued: the connection stops / resumes

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, protocol,
                 protocol_name: str, text: bool):
        super().__init__()
        self.ws, self.request, self.protocol = ws, request, protocol
        self.protocol_name = protocol_name  # as RabbitMQ's management API names it
        self.text = text
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
                if self.text:
                    await self.ws.send_str(data.decode("utf-8", "replace"))
                else:
                    await self.ws.send_bytes(data)
                self.queued -= len(data)
                if self.full and self.queued < self.LOW and not self.closing:
                    self.full = False
                    self.protocol.resume_writing()
        except (ConnectionError, RuntimeError):     # the client went: reading sees it
            pass
        finally:
            await self.ws.close()


class WebSocketServer:
    """Serves ``path`` on a port: each WebSocket gets a ``make_connection()`` protocol.
    ``text``: the protocol is text (STOMP): text messages are taken too, and sent."""

    def __init__(self, path: str, subprotocols: tuple, make_connection, protocol_name: str,
                 text: bool = False):
        self.path, self.subprotocols = path, subprotocols
        self.make_connection, self.protocol_name, self.text = \
            make_connection, protocol_name, text
        self.runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, ssl=None) -> tuple[str, int]:
        app = web.Application()
        app.router.add_get(self.path, self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host or None, port, reuse_address=True,
                           ssl_context=ssl)
        await site.start()
        return site._server.sockets[0].getsockname()[:2]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=self.subprotocols, max_msg_size=0)
        await ws.prepare(request)
        connection = self.make_connection()
        transport = WebSocketTransport(ws, request, connection, self.protocol_name, self.text)
        connection.connection_made(transport)
        try:
            async for message in ws:
                if message.type == WSMsgType.BINARY:
                    connection.data_received(message.data)
                elif message.type == WSMsgType.TEXT and self.text:
                    connection.data_received(message.data.encode())
                else:
                    log.error("%s connection %s: a %s message: closed", self.protocol_name,
                              connection.name, "text" if message.type == WSMsgType.TEXT
                              else message.type.name)
                    connection.close()
                    break
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
