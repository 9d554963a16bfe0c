"""The broker's own AMQP 0-9-1 client connections: a dynamic shovel's two ends
(``shovel/runner.py``) and a federation link's (``federation/links.py``), to this broker or
another (RabbitMQ among them).

``OutboundClient`` opens connections to URIs (``shovel/definition.parse_uri``: a URI
without a host is this broker, reached over loopback with the internal login of
``frontend/auth.py``, as RabbitMQ's direct connections), awaits pika's answers, and turns a
closed connection or channel into the end of the current run: ``self._ended`` fails with
``RunFailed`` and every awaited call raises it. The client is pika's asyncio adapter: it
forwards a message's properties as they are (aiormq gives a message without a
``message_id`` one).
"""
from __future__ import annotations

import asyncio
import logging
import random
import ssl
from datetime import datetime

import pika
from pika.adapters.asyncio_connection import AsyncioConnection

from .frontend.auth import INTERNAL_USER
from .pika_calls import answer, end

# pika logs each connection step at INFO: the shovels and links log what matters themselves
logging.getLogger("pika").setLevel(logging.WARNING)

CLOSE_TIMEOUT = 5.0         # seconds a stopping client waits for its connections to close


def status_time() -> str:
    """RabbitMQ's timestamp of a shovel's or a federation link's status: local time, the
    hour not padded."""
    now = datetime.now()
    return f"{now:%Y-%m-%d} {now.hour}:{now:%M:%S}"


class RunFailed(Exception):
    """A run ended: a connection, a channel or a declaration failed."""


class OutboundClient:
    """What a shovel or a link needs to talk AMQP: ``registry`` answers ``local_address()``
    and ``internal_secret()``; ``connection_name`` names its connections; ``describe`` (for
    log lines) says what it is."""
    connection_name = "amqpbroker"
    describe = "client"
    log = logging.getLogger("amqpbroker")

    def __init__(self, registry):
        self.registry = registry
        self.task: asyncio.Task | None = None   # its runs
        self._connections: list = []
        self._closing: list = []        # futures of connections closing, done when closed
        self._ended: asyncio.Future | None = None
        self._pending: dict[int, int] = {}      # destination publish seq -> source tag
        self._stopping = False                  # nothing more is forwarded
        self._drained: asyncio.Future | None = None     # done once _pending is empty

    # ------------------------------------------------------------ forwarding with confirms
    def _confirmed(self, frame, source) -> int:
        """The destination confirmed (or nacked) what it was given: each message's delivery
        is acked (nacked: requeued) at ``source``. How many were settled."""
        m = frame.method
        seqs = [s for s in self._pending if s <= m.delivery_tag] if m.multiple \
            else [m.delivery_tag] if m.delivery_tag in self._pending else []
        for s in sorted(seqs):
            tag = self._pending.pop(s)
            if isinstance(m, pika.spec.Basic.Ack):
                source.basic_ack(tag)
            else:
                source.basic_nack(tag, requeue=True)
        if not self._pending and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)      # stopping: every ack is sent
        return len(seqs)

    async def _drain(self) -> None:
        """Stopping: forward nothing more, and wait (a few seconds at most) until what was
        already published is confirmed and acknowledged at the source (a durable queue
        confirms after its fsync), so a clean stop or restart moves nothing twice."""
        self._stopping = True
        if self._pending and self.task is not None and not self.task.done():
            self._drained = asyncio.get_running_loop().create_future()
            await asyncio.wait({self._drained, self.task}, timeout=CLOSE_TIMEOUT)

    async def _cancel(self) -> None:
        """End the current run (its task)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def _connect(self, uris: tuple, end: str):
        """(the URI used, an open channel) to one of ``uris``, tried in random order."""
        last = None
        for uri in random.sample(list(uris), len(uris)):
            try:
                conn = await self._open(uri)
            except RunFailed as exc:
                self.log.error("%s failed to connect (URI: %s): %s", self.describe,
                               uri.shown, exc)
                last = exc
                continue
            return uri, await self._channel(conn)
        raise RunFailed(f"no {end} URI could be connected to: {last}")

    async def _channel(self, conn):
        """A new channel on ``conn``; its closing ends the run."""
        channel = await self._call(lambda cb: conn.channel(on_open_callback=cb))
        channel.add_on_close_callback(self._channel_closed)
        return channel

    async def _open(self, uri):
        loop = asyncio.get_running_loop()
        opened = loop.create_future()

        def on_open_error(_conn, exc) -> None:
            if not opened.done():
                opened.set_exception(RunFailed(str(exc) or type(exc).__name__))

        conn = AsyncioConnection(self._parameters(uri), on_open_callback=opened.set_result,
                                 on_open_error_callback=on_open_error,
                                 on_close_callback=self._connection_closed,
                                 custom_ioloop=loop)
        conn.closed_future = loop.create_future()       # done in _connection_closed
        self._connections.append(conn)
        return await opened

    def _parameters(self, uri) -> pika.ConnectionParameters:
        q = uri.query
        kw = {"client_properties": {"connection_name": self.connection_name}}
        if "heartbeat" in q:
            kw["heartbeat"] = int(q["heartbeat"])
        if "connection_timeout" in q:
            kw["socket_timeout"] = kw["blocked_connection_timeout"] = \
                int(q["connection_timeout"]) / 1000
        if uri.host is None:            # this broker: the internal login (frontend/auth.py)
            host, port = self.registry.local_address()
            return pika.ConnectionParameters(
                host, port, uri.vhost, pika.PlainCredentials(
                    uri.user or INTERNAL_USER, self.registry.internal_secret()), **kw)
        if uri.tls:
            ctx = ssl.create_default_context(cafile=q.get("cacertfile"))
            if q.get("certfile"):
                ctx.load_cert_chain(q["certfile"], q.get("keyfile"))
            if q.get("verify") == "verify_none":
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            kw["ssl_options"] = pika.SSLOptions(
                ctx, q.get("server_name_indication", uri.host))
        if q.get("auth_mechanism", "").lower() == "external":
            kw["credentials"] = pika.credentials.ExternalCredentials()
        else:
            kw["credentials"] = pika.PlainCredentials(
                uri.user if uri.user is not None else "guest",
                uri.password if uri.password is not None else "guest")
        return pika.ConnectionParameters(uri.host, uri.port, uri.vhost, **kw)

    async def _call(self, start):
        """A pika method's answer, or RunFailed when the run ends first (a channel or
        connection closed)."""
        return await answer(start, self._ended)

    async def _probe(self, conn, start) -> object:
        """Run ``start(channel, callback)`` on a channel of its own (a passive declare, a
        delete): its answer, or the reason the broker closed that channel with (its
        ``reply_code`` says why). The run goes on either way."""
        probe = await self._call(lambda cb: conn.channel(on_open_callback=cb))
        loop = asyncio.get_running_loop()
        closed, got = loop.create_future(), loop.create_future()
        probe.add_on_close_callback(lambda _ch, reason: closed.done()
                                    or closed.set_result(reason))
        start(probe, lambda f: got.done() or got.set_result(f))
        await asyncio.wait({got, closed, self._ended}, return_when=asyncio.FIRST_COMPLETED)
        if got.done():
            probe.close()
            return got.result()
        if self._ended.done():
            raise self._ended.exception()
        return closed.result()

    async def _ensure_queue(self, channel, queue: str, arguments: dict) -> None:
        """RabbitMQ's ``ensure_queue``: a passive declare; when the queue is missing (404
        closes that channel), a durable declare on another."""
        reason = await self._probe(channel.connection, lambda ch, cb: ch.queue_declare(
            queue, passive=True, callback=cb))
        if not hasattr(reason, "reply_code"):
            return
        if reason.reply_code != 404:
            raise RunFailed(f"declaring queue '{queue}' failed: {reason}")
        await self._call(lambda cb: channel.queue_declare(queue, durable=True,
                                                          arguments=arguments or None,
                                                          callback=cb))

    def _channel_closed(self, _channel, reason) -> None:
        self._end(RunFailed(f"channel closed: {reason}"))

    def _connection_closed(self, conn, reason) -> None:
        closed = getattr(conn, "closed_future", None)
        if closed is not None and not closed.done():
            closed.set_result(None)
        self._end(RunFailed(f"connection closed: {reason}"))

    def _end(self, exc: Exception) -> None:
        end(self._ended, exc)

    def _close(self) -> None:
        for conn in self._connections:
            if conn.is_open:
                conn.close()
                self._closing.append(conn.closed_future)
        self._connections = []
        self._closing = [f for f in self._closing if not f.done()]

    async def _closed(self) -> None:
        """Close its connections, and wait (a few seconds at most) until they are."""
        self._close()
        if self._closing:
            await asyncio.wait(self._closing, timeout=CLOSE_TIMEOUT)
