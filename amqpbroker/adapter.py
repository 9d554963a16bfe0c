"""What the protocol adapters' client connections share (MQTT: ``mqtt/connection.py``,
STOMP: ``stomp/connection.py``), as RabbitMQ's plugins share its direct AMQP client.

Each client connection is an asyncio protocol on the client's socket and an AMQP connection
of its own to the broker's listener (``delivery_tap.TappedConnection``, pika's with the
deliveries read raw), logged in as the client's user, so users, permissions, limits, alarms,
every process layout and the cluster are the broker's own. The client's packets or frames
are taken in order by one task (``_work``), which awaits the broker's answers where the
protocol must (a declare, a bind); what needs no answer (publishes, acks) is written raw
(``protocol/fastpath``) into ``amqp_out`` and flushed once per read of the client, before any
call that waits for an answer.

Back-pressure, both ways: reading the client pauses while its inbox is full, while pika's
buffer toward the broker is high, and -- once the client publishes -- while the broker blocks
publishers (a memory or disk alarm, ``connection.blocked``): as RabbitMQ's STOMP and MQTT
readers, a client that only consumes, subscribes or acks goes on during an alarm, and one
that publishes is held at its publish. A client whose socket is full stops the adapter
reading what the broker sends, so the broker's own flow control holds the messages back.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import socket

import pika

from .delivery_tap import TappedConnection
from .frontend import adapters
from .frontend.tls import certificate_login
from .pika_calls import answer, end, reading

INBOX_HIGH = 256                    # packets or frames waiting: reading pauses above this
AMQP_BUFFER_HIGH = 4 << 20          # bytes pika has not written yet: reading waits
AMQP_BUFFER_LOW = 1 << 20           # ... until it is down to this


class Ended(Exception):
    """The AMQP side went away (a channel or the connection closed)."""


class ChannelGone(Exception):
    """The AMQP channel a command used was closed by the broker: ``code`` and ``text``."""

    def __init__(self, code: int, text: str):
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


def refusal(result) -> str:
    """Why the AMQP login was refused: "vhost" (no access to it, or it does not exist: 530),
    "credentials" (403), or "other"."""
    text = str(result)
    if isinstance(result, pika.exceptions.ProbableAccessDeniedError) or "530" in text:
        return "vhost"
    if isinstance(result, (pika.exceptions.ProbableAuthenticationError,
                           pika.exceptions.AuthenticationError)) or "403" in text:
        return "credentials"
    return "other"


def tapped(_channel, _method, _properties, _body) -> None:
    """pika's consumer callback for a tapped channel's consumers: never called, the
    deliveries are read raw (``delivery_tap.py``)."""
    logging.getLogger("amqpbroker.adapter").error(
        "a delivery of a tapped channel reached pika's consumer callback; dropped")


class AdapterConnection(asyncio.Protocol):
    """A client of another protocol, carried over AMQP. A subclass names its ``log`` and
    ``protocol`` and implements ``_handle`` (one packet or frame), ``close``, ``_batched``
    (a packet whose AMQP frames may wait for the next), ``_publishes`` (a packet that
    publishes: held during an alarm), ``_ended`` (the AMQP side went while one was being
    handled) and ``_client_gone``."""

    protocol = "?"
    log = logging.getLogger("amqpbroker.adapter")
    # takes a stream's deliveries as records from a session of this process
    # (``deliver_stream_run``; frontend/adapters.py, "Direct deliveries")
    direct_deliveries = False

    def __init__(self, server):
        self.server = server
        self.cfg = server.broker.config
        self.transport = None
        self.loop = None
        self.name = "?"
        self.peer = "?"
        self.addresses = (("?", 0), ("?", 0))
        self.inbox: collections.deque = collections.deque()
        self.worker: asyncio.Task | None = None
        self.inbox_full = False         # reading the client pauses while either holds:
        self.alarm_held = False         # a publish waits for the broker's alarm to clear
        self.blocked = False            # the broker blocks publishers (an alarm)
        self.unblocked = asyncio.Event()
        self.unblocked.set()
        self.reading = True
        self.closed = False
        self.lost = False               # the client's socket closed
        self.amqp: TappedConnection | None = None
        self.ended: asyncio.Future | None = None    # fails when the AMQP side goes
        self.amqp_out: list = []        # AMQP frames written raw, not yet flushed
        self.heard = 0.0                # when the client last sent anything
        self.timers: list[asyncio.TimerHandle] = []     # cancelled by close()
        self.out: list[bytes] = []      # frames for the client, written once per loop turn
        self.channel_gone: dict = {}    # pika channel -> future failing when it closes
        self.direct_token: str | None = None    # adapters.register_direct's

    # ------------------------------------------------------------ the client's socket
    def _accepted(self, transport) -> None:
        """``connection_made``'s common part."""
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = peer[0]
        local = transport.get_extra_info("sockname") or ("?", 0)
        self.addresses = (tuple(peer[:2]), tuple(local[:2]))
        self.name = f"{peer[0]}:{peer[1]} -> {local[0]}:{local[1]}"
        self.server.connections.add(self)
        self.loop = asyncio.get_running_loop()
        self.heard = self.loop.time()

    def connection_lost(self, exc) -> None:
        self.lost = True
        if self.worker is None:
            self.close()
        # else the worker takes what arrived before, then closes (_work)

    def pause_writing(self) -> None:
        """The client reads slower than deliveries come: stop reading the AMQP socket, so
        the broker's own flow control holds the messages back."""
        self._amqp_reading(False)

    def resume_writing(self) -> None:
        self._amqp_reading(True)

    def close(self) -> None:
        """End the connection: what the client sent before goes to the broker, then what is
        owed to the client (``_flush``), then the socket."""
        if self.closed:
            return
        self.closed = True
        for timer in self.timers:
            timer.cancel()
        if self.worker is not None and self.worker is not asyncio.current_task():
            self.worker.cancel()
        self.server.connections.discard(self)
        adapters.unregister_direct(self.direct_token)
        self._close_amqp()
        self._flush()
        self.transport.close()
        self.log.info("closing %s connection %s", self.protocol, self.name)

    def _queue_out(self, data: bytes) -> None:
        """A frame for the client, written with the others of this loop turn in one write."""
        self.out.append(data)
        if len(self.out) == 1:
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self.out:
            data, self.out = b"".join(self.out), []
            if not self.lost:
                self.transport.write(data)

    def _received(self, items: list) -> None:
        """Parsed packets or frames: to the inbox, taken in order by ``_work``."""
        self.inbox.extend(items)
        if len(self.inbox) > INBOX_HIGH and not self.inbox_full:
            self.inbox_full = True
            self._read()
        if self.inbox and self.worker is None:
            self.worker = self.loop.create_task(self._work())

    def _read(self) -> None:
        """Read the client or not, as the inbox and the broker's alarms say."""
        reading_ = not (self.inbox_full or self.alarm_held)
        if reading_ != self.reading and not self.closed:
            self.reading = reading_
            if reading_:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _blocked(self, blocked: bool) -> None:
        """The broker blocked publishers (a memory or disk alarm), or unblocked them: the
        client's next publish waits (``_work``), or goes on."""
        self.blocked = blocked
        if blocked:
            self.unblocked.clear()
        else:
            self.unblocked.set()

    async def _hold_for_alarm(self) -> None:
        """A publish while the broker blocks publishers: reading the client pauses until
        the alarm clears (or the AMQP side goes: ``Ended``)."""
        self.alarm_held = True
        self._read()
        waiter = asyncio.ensure_future(self.unblocked.wait())
        try:
            await asyncio.wait({waiter, self.ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        self.alarm_held = False
        self._read()
        if self.ended.done():
            raise self.ended.exception()

    def _amqp_reading(self, on: bool) -> None:
        """The client's socket is full (off) or drained (on): read the broker or not."""
        if self.amqp is not None:
            reading(self.amqp, on)

    # ------------------------------------------------------------ in order
    async def _work(self) -> None:
        try:
            while self.inbox and not self.closed:
                item = self.inbox.popleft()
                if self.blocked and self._publishes(item):
                    self._flush_amqp()
                    await self._hold_for_alarm()
                await self._handle(item)
                if not self.inbox or not self._batched(self.inbox[0]):
                    self._flush_amqp()          # one write for this read's publishes, acks
                    if self.amqp is not None and self.amqp._transport is not None and \
                            self.amqp._transport.get_write_buffer_size() > AMQP_BUFFER_HIGH:
                        await self._drain()
                if self.inbox_full and len(self.inbox) < INBOX_HIGH // 2:
                    self.inbox_full = False
                    self._read()
        except Ended as exc:
            self._ended(exc)
        except Exception:                                   # noqa: BLE001 - one boundary
            self.log.exception("%s connection %s failed", self.protocol, self.name)
            self.close()
        finally:
            self.worker = None
            self._work_done()
            if self.inbox and not self.closed:              # arrived while finishing
                self.worker = self.loop.create_task(self._work())
            elif self.lost and not self.closed:             # the client went: now close
                self._client_gone()

    def _publishes(self, item) -> bool:
        return False

    def _work_done(self) -> None:
        """After the inbox was worked through (or the work ended)."""

    def certificate_user(self) -> str | None:
        """The user a TLS client's verified certificate names (``--tls-login-from``), as
        RabbitMQ's ``ssl_cert_login``; None without TLS, a certificate or a name."""
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        return certificate_login(ssl_object, self.server.broker.config.tls_login_from).name

    def certificate_password(self) -> str:
        """What the AMQP login of a certificate's user sends as its password: the internal
        login's secret, which logs in as the user named if it exists (frontend/auth.py),
        as RabbitMQ checks a certificate login: the user must exist, no password."""
        return self.server.broker.users.internal_secret

    # ------------------------------------------------------------ the AMQP side
    async def _open_amqp(self, vhost: str, user: str, password: str, protocol: str,
                         shown: dict):
        """Log in over AMQP as the client's user: the open ``TappedConnection``, or what
        refused it (pika's exception or close reason). The management API shows the
        connection as this client's (``frontend/adapters.py``)."""
        loop = self.loop
        opened = loop.create_future()
        self.ended = loop.create_future()
        host, port = self.server.local_address()
        if self.direct_deliveries and self.direct_token is None:
            self.direct_token = adapters.register_direct(self)
        params = pika.ConnectionParameters(
            host, port, vhost, pika.PlainCredentials(user, password),
            heartbeat=0, client_properties={adapters.PROPERTY: adapters.claim(
                self.server.broker.users.internal_secret, protocol, *self.addresses,
                self.transport.get_extra_info("sslcontext") is not None, shown,
                self.direct_token)})

        def on_error(_conn, exc) -> None:
            if not opened.done():
                opened.set_result(exc)

        def on_closed(_conn, reason) -> None:
            if not opened.done():
                opened.set_result(reason)
            self._end(Ended(f"AMQP connection closed: {reason}"))
            self._amqp_closed(reason)

        self.amqp = TappedConnection(params, on_open_callback=opened.set_result,
                                     on_open_error_callback=on_error,
                                     on_close_callback=on_closed, custom_ioloop=loop)
        self.amqp.add_on_connection_blocked_callback(lambda *_: self._blocked(True))
        self.amqp.add_on_connection_unblocked_callback(lambda *_: self._blocked(False))
        result = await opened
        if result is not self.amqp:
            self.amqp = None
        return result

    def _amqp_closed(self, reason) -> None:
        """The AMQP connection closed (after it opened, or while opening)."""

    def _close_amqp(self) -> None:
        """``close``'s AMQP part: what the client sent last is flushed, then closed."""
        if self.amqp is not None and not (self.amqp.is_closing or self.amqp.is_closed):
            if self.amqp.is_open:
                self._flush_amqp()
            self.amqp.close()               # an opening one is aborted
        self._end(Ended(f"the {self.protocol} connection closed"))

    async def _open_channel(self, on_closed):
        channel = await self._call(lambda cb: self.amqp.channel(on_open_callback=cb))
        channel.add_on_close_callback(on_closed)
        return channel

    async def _channel(self):
        """A new channel; its ``channel_gone`` future fails with ``ChannelGone`` when the
        broker closes it, and ``_channel_lost`` is told."""
        gone = self.loop.create_future()
        channel = await self._call(lambda cb: self.amqp.channel(on_open_callback=cb))
        self.channel_gone[channel] = gone

        def closed(ch, reason) -> None:
            code = getattr(reason, "reply_code", 0)
            text = getattr(reason, "reply_text", str(reason))
            if not gone.done():
                gone.set_exception(ChannelGone(code, text))
                gone.exception()
            self.channel_gone.pop(ch, None)
            self._channel_lost(ch, code, text)
        channel.add_on_close_callback(closed)
        return channel

    def _channel_lost(self, channel, code: int, text: str) -> None:
        """A channel from ``_channel`` closed (the broker's ``code`` and ``text``)."""

    async def _ask(self, channel, start):
        """A pika method's answer on ``channel`` (from ``_channel``): ``ChannelGone`` if the
        broker closes the channel first, ``Ended`` if the connection goes."""
        self._flush_amqp()
        gone = self.channel_gone.get(channel)
        return await answer(start, self.ended, *(() if gone is None else (gone,)))

    async def _call(self, start):
        """A pika method's answer (what was written raw goes first), or ``Ended`` when the
        AMQP side went first."""
        self._flush_amqp()
        return await answer(start, self.ended)

    def _flush_amqp(self) -> None:
        if self.amqp_out:
            data, self.amqp_out = b"".join(self.amqp_out), []
            if self.amqp is not None and self.amqp.is_open and self.amqp._transport is not None:
                # as a view: pika keeps what a send left as ``chunk[sent:]``, a copy of the
                # rest of a bytes object at every partial send (megabytes, over and over,
                # while the broker reads slower than a client publishes); a view's is not
                self.amqp._transport.write(memoryview(data))    # else: closing

    async def _drain(self) -> None:
        """The broker reads our AMQP connection slower than the client sends (flow control,
        an alarm): wait for pika's buffer to go down, so the inbox fills and reading the
        client pauses. pika tells nobody when its buffer drains: looked at."""
        while not self.closed and self.amqp._transport is not None \
                and self.amqp._transport.get_write_buffer_size() > AMQP_BUFFER_LOW:
            await asyncio.sleep(0.005)

    def _end(self, exc: Exception) -> None:
        end(self.ended, exc)


class AdapterServer:
    """A protocol adapter's ports: the TCP ones (``start``, TLS with an ``ssl`` context) and
    the WebSocket one (``start_web``); each accepted client is a ``connection_class``. A
    subclass names the class and its WebSocket subprotocols, as RabbitMQ's plugin does."""

    connection_class = AdapterConnection
    web_name = "?"                      # as RabbitMQ's management API names the protocol
    web_subprotocols: tuple = ()
    web_text = False                    # a text protocol: text WebSocket messages

    def __init__(self, broker):
        self.broker = broker
        self.connections: set = set()
        self._servers: list[asyncio.base_events.Server] = []
        self.web = None                                     # the WebSocket port, when on

    def local_address(self) -> tuple[str, int]:
        """Where the clients' AMQP connections go: this node's AMQP listener."""
        return self.broker.shovels.local_address()

    async def start(self, host: str, port: int, ssl=None) -> tuple[str, int]:
        """Listen on ``port`` (0: any free one), over TLS with an ``ssl`` context."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: self.connection_class(self), host or None,
                                          port, reuse_address=True, ssl=ssl)
        self._servers.append(server)
        return server.sockets[0].getsockname()[:2]

    async def start_web(self, host: str, port: int, path: str) -> tuple[str, int]:
        """The protocol over WebSockets on ``port`` at ``path`` (``websocket.py``)."""
        from .websocket import WebSocketServer
        self.web = WebSocketServer(path, self.web_subprotocols,
                                   lambda: self.connection_class(self), self.web_name,
                                   text=self.web_text)
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
