"""One client connection: the asyncio shell around the sans-I/O ``protocol.Connection``.

A ``BufferedProtocol``: the loop reads straight into the protocol's input buffer
(``get_buffer`` / ``buffer_updated``; ``data_received`` stays for in-process tests), so a
body is not copied into a ``bytes`` first and then into the buffer. Each read pulls events
and hands each to the channel or the handshake; output is queued and written once that read is
handled, with what the read made for other connections (the deliveries of its publishes:
``_process``), and what is made outside a read once per loop turn (``schedule_flush``).
``_handle_read`` is the single error boundary: an ``AMQPError`` from the protocol or from any
handler becomes ``channel.close`` (soft) or ``connection.close`` (hard), with a log line; any
other exception is a bug and becomes 541 INTERNAL_ERROR for this connection only.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
import uuid

from pamqp import commands as C

from .. import __version__, errors
from ..amqp10.frames import is_amqp10
from ..logs import context
from ..protocol import events as ev
from ..protocol import states as st
from ..protocol.connection import Connection
from . import adapters, events, tls
from .channel import HANDLERS, Channel
from .metadata_copy import run_now
from .oauth2 import UnknownKey

log = logging.getLogger("amqpbroker.connection")

CAPABILITIES = {
    "publisher_confirms": True, "exchange_exchange_bindings": True, "basic.nack": True,
    "consumer_cancel_notify": True, "connection.blocked": True, "consumer_priorities": True,
    "authentication_failure_close": True, "per_consumer_qos": True, "direct_reply_to": True,
}

HANDSHAKE_TIMEOUT = 10.0
EVENTS_PER_TURN = 256        # events one connection may handle per event-loop turn
HANDSHAKE_STATES = (st.AWAIT_START_OK, st.AWAIT_TUNE, st.AWAIT_TUNE_OK, st.AWAIT_OPEN)
CLOSE_OK_TIMEOUT = 1.0
CLOSING_TIMEOUT = 30.0       # rabbit_reader's: a client that asked to close, closes the socket
TCP_ESTABLISHED = 1          # tcp_info's first byte (linux/tcp_states.h)


def closing_timeout(heartbeat: int) -> float:
    """How long the socket of a connection the client closed waits for the client's end:
    the heartbeat timeout, if shorter than ``CLOSING_TIMEOUT`` (RabbitMQ's rule)."""
    return heartbeat if 0 < heartbeat < CLOSING_TIMEOUT else CLOSING_TIMEOUT


def server_properties(cluster_name: str) -> dict:
    import platform
    return {"product": "amqpbroker", "version": __version__,
            "platform": f"Python {platform.python_version()}",
            "copyright": "amqpbroker contributors", "information": "Licensed under the MIT License",
            "cluster_name": cluster_name, "capabilities": dict(CAPABILITIES)}


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host in ("localhost",)


class Session(asyncio.BufferedProtocol):
    # slots: a connection's ~40 attributes are past the 30 that CPython 3.11 keeps in a
    # shared-keys dict with specialised loads; as slots every ``self.x`` on the hot path is a
    # descriptor read (bench/RESULTS.md, "Two ways to make the split cheaper"). An attribute
    # a session gets must be named here.
    __slots__ = ("server", "broker", "clock_ms", "loop", "conn", "get_buffer", "transport",
                 "peer", "local", "connected_at", "user", "vhost", "capabilities",
                 "client_properties", "certificate", "mechanism", "channels",
                 "exclusive_queues", "write_ok", "reply_token", "owner", "writable",
                 "is_publisher", "reading_paused", "_backlog", "_throttled_by", "_held",
                 "_waiting", "settled_on", "closed", "_flush_scheduled", "_timer",
                 "_handshake_timer", "_close_timer", "_released", "_peer_watch", "last_recv",
                 "last_sent", "stats", "protocol", "adapted_ssl", "direct")

    def __init__(self, server):
        self.server = server
        self.broker = server.broker
        # while _process runs: the time of its read (ms), read at its first publish (-1
        # until then: a read of acks alone reads no clock); 0 outside a read
        self.clock_ms = 0
        self.loop = server.broker.loop
        cfg = self.broker.config
        self.conn = Connection(server.server_properties, frame_max=cfg.frame_max,
                               channel_max=cfg.channel_max, heartbeat=cfg.heartbeat,
                               max_message_size=cfg.max_message_size)
        # uvloop asks for a read's buffer straight from the connection: one call a read less
        # (a slot: ``asyncio.BufferedProtocol.get_buffer`` is what it overrides)
        self.get_buffer = self.conn.get_buffer
        self.transport = None
        self.peer = ("?", 0)
        self.local = ("?", 0)                # our address of the connection
        self.connected_at = int(time.time() * 1000)
        self.user = None
        self.vhost = None
        self.capabilities: dict = {}
        self.client_properties: dict = {}
        self.protocol = "AMQP 0-9-1"         # or the adapted client's (adapters.py)
        self.adapted_ssl = False
        # an adapter of this process that takes a stream's deliveries as records
        # (adapters.py, "Direct deliveries"); None: deliveries are frames on the socket
        self.direct = None
        self.certificate = None              # TLS: whom EXTERNAL logs in as (tls.py)
        self.mechanism = None
        self.channels: dict[int, Channel] = {}
        self.exclusive_queues: set = set()
        self.write_ok: set = set()
        self.reply_token = server.token_prefix + uuid.uuid4().hex
        self.owner = self.reply_token        # who owns our exclusive queues, in any process
        self.writable = True
        self.is_publisher = False
        self.reading_paused = False          # alarm: publishers are not read from
        self._backlog = False                # more buffered input than one turn's budget
        self._throttled_by: set = set()      # backlogged queues this publisher waits for
        self._held: list = []                # a publish that arrived during an alarm
        self._waiting = False                # a handler waits for a partition host's reply
        self.settled_on: dict = {}           # PartitionClient -> number of our last ack there
        self.closed = False
        self._flush_scheduled = False
        self._timer = None              # heartbeats, from tune-ok on
        self._handshake_timer = None    # until connection.open, as RabbitMQ's
        self._close_timer = None
        self._released = False              # _release ran
        self._peer_watch = None              # _watch_peer, while blocked
        self.last_recv = self.last_sent = self.loop.time()
        self.stats = self.broker.stats.connection()     # bytes in and out (amqpbroker/stats)

    @property
    def name(self) -> str:
        return f"{self.peer[0]}:{self.peer[1]}"

    # ----------------------------------------------------------------- asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = peer[:2]
        local = transport.get_extra_info("sockname")
        if local:
            self.local = local[:2]
        transport.set_write_buffer_limits(high=4 << 20, low=1 << 20)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:          # AMQPS, the TLS handshake done: offer EXTERNAL
            self.certificate = tls.certificate_login(ssl_object,
                                                     self.broker.config.tls_login_from)
            self.conn.mechanisms += " EXTERNAL"
        self._handshake_timer = self.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout)
        self.server.sessions.add(self)
        log.info("accepting AMQP connection %s", connection_name(self),
                 extra=self.log_context())

    def buffer_updated(self, nbytes: int) -> None:
        self.last_recv = self.loop.time()
        self.stats.on_receive(nbytes)
        self.conn.buffer_updated(nbytes)
        if not self._backlog:
            self._process()

    def data_received(self, data: bytes) -> None:
        self.last_recv = self.loop.time()
        self.stats.on_receive(len(data))
        self.conn.receive_data(data)
        if not self._backlog:
            self._process()

    def _continue(self) -> None:
        """Work through the rest of a backlog, one budget per loop turn."""
        self._backlog = False
        self._process()
        if not self._backlog and not self.closed:
            self._maybe_resume()

    # ----------------------------------------------------------------- flow control
    def throttle(self, queue) -> None:
        """A queue we publish to is backlogged while it has consumers: stop reading from this
        publisher until it drains (RabbitMQ's credit flow, by queue length)."""
        if queue not in self._throttled_by:
            self._throttled_by.add(queue)
            queue.flow_waiters.add(self)
            self.transport.pause_reading()

    def unthrottle(self, queue) -> None:
        self._throttled_by.discard(queue)
        if not self._throttled_by:
            self._schedule_continue()

    def _schedule_continue(self) -> None:
        """Handle what is held and buffered (next loop turn) before reading on."""
        if not self._backlog and not self.closed:
            self._backlog = True
            self.loop.call_soon(self._continue)

    def _maybe_resume(self) -> None:
        if not (self._backlog or self.reading_paused or self._throttled_by or self._waiting
                or not self.writable or self.closed):
            self.last_recv = self.loop.time()
            self.transport.resume_reading()

    def eof_received(self):
        return False

    def connection_lost(self, exc) -> None:
        self._cleanup()

    def pause_writing(self) -> None:
        """The output buffer is full (the client does not read): read nothing more from it
        until it drains, since what it sends makes more output (returns, confirms, replies);
        deliveries wait for credit (``pay_owed_credit``)."""
        self.writable = False
        self.transport.pause_reading()
        self._watch_peer()

    def resume_writing(self) -> None:
        self.writable = True
        for ch in self.channels.values():
            ch.pay_owed_credit()
        self._schedule_continue()

    # ----------------------------------------------------------------- the error boundary
    def _process(self) -> None:
        """Handle what was read; then write what it made, ours and the other sessions' (the
        deliveries of its publishes): a lone message's delivery is written in its publish's
        read callback, not at the end of the loop turn after every other ready read (the
        consumer's ack of the previous message, say). A burst still makes one write per
        session per read."""
        broker = self.broker
        if broker.written_to is not None:       # within another session's read
            self._handle_read()
            return
        broker.written_to = written_to = []
        try:
            self._handle_read()
        finally:
            broker.written_to = None
            for session in written_to:
                if session._flush_scheduled:    # nothing else flushes it (schedule_flush)
                    session.flush()

    def _handle_read(self) -> None:
        conn = self.conn
        budget = EVENTS_PER_TURN
        partitions = self.broker.partitions
        for p in partitions:            # publishes go to the host as one batch (LocalLink)
            p.hold()
        # the timestamp of the messages of this read: one clock read per read, not per
        # message, at its first publish (``Channel._publish``); a publish made outside this
        # loop reads the clock itself
        self.clock_ms = -1
        while not self.closed:
            if self._throttled_by or self.reading_paused or self._waiting or not self.writable:
                break                   # unthrottle() / the alarm's end / a reply / drained
            if not budget:
                # fairness: other connections (and deliveries) get the loop before we go on;
                # stop reading meanwhile so the backlog cannot grow (TCP pushes back)
                self._backlog = True
                self.transport.pause_reading()
                self.loop.call_soon(self._continue)
                break
            budget -= 1
            try:
                event = self._held.pop() if self._held else conn.next_event()
                if event is ev.NEED_DATA:
                    break
                if event is ev.PAUSED:      # content during an alarm: a publisher, blocked
                    self.is_publisher = True
                    self._pause_for_alarm()
                    break
                self._handle(event)
            except errors.AMQPError as err:
                self._on_error(err)
            except OSError as exc:
                # the data directory refused a write (disk full, read-only): not a bug
                log.error("connection %s: %s", self.name, exc, extra=self.log_context())
                self._on_error(errors.ResourceError(f"cannot complete the method: {exc}"))
            except Exception:
                log.exception("connection %s: internal error", self.name,
                              extra=self.log_context())
                self._on_error(errors.InternalError("internal error"))
        self.clock_ms = 0
        for p in partitions:
            p.release()
        # publishes are folded into the statistics by a snapshot, not per read
        # (amqpbroker/stats); a read that made no output (an ack, a lone publish whose
        # delivery is another session's) writes nothing
        if self._flush_scheduled or conn.output:
            self.flush()

    def _on_error(self, err: errors.AMQPError, channel: int | None = None) -> None:
        if channel is None:
            channel = getattr(err, "channel", 0)
        if not err.hard and channel:
            log.warning("channel error on connection %s, channel %d: %s", self.name, channel,
                        err.reply_text, extra={**self.log_context(), "channel": channel})
            self._drop_channel(channel)
            self.conn.close_channel(channel, err)
            return
        if self.conn.state in HANDSHAKE_STATES:
            # RabbitMQ drops the socket for errors before connection.open; only a failed login
            # is answered (authentication_failure_close), if the client asked for it
            login_failed = getattr(err, "login_failed", None)
            if login_failed:            # an authentication failure: its reason, once
                log.warning("Error on AMQP connection %s (state: starting): %s",
                            connection_name(self), login_failed,
                            extra={**self.log_context(),
                                   **context(user=getattr(err, "login_user", None))})
            else:
                log.warning("handshake failed on connection %s: %s", connection_name(self),
                            err.reply_text, extra=self.log_context())
            if not (login_failed
                    and self.capabilities.get("authentication_failure_close")):
                self.flush()
                self._abort()
                return
        else:
            log.warning("closing connection %s: %s", connection_name(self), err.reply_text,
                        extra=self.log_context())
        self.conn.close_connection(err)
        self._close_channels()
        self.flush()
        if self._close_timer is None:
            self._close_timer = self.loop.call_later(CLOSE_OK_TIMEOUT, self._abort)

    def _handle(self, event) -> None:
        t = type(event)
        if t is ev.Publish:
            ch = self.channels[event.channel]
            self.is_publisher = True
            if self.broker.alarms.active:   # ``Alarms.blocked``, without the call
                # a publish during an alarm waits, unread, until the alarm clears (RabbitMQ)
                self._held.append(event)
                self._pause_for_alarm()
                return
            try:
                pending = ch.on_publish(event)
                if pending is not None:     # routed by the metadata owner (dedup exchange)
                    self._drive(pending, event.channel)
            except errors.ChannelError as err:
                err.channel = event.channel
                raise
            return
        if t is ev.Ack or t is ev.Nack or t is ev.Modify:
            ch = self.channels[event.channel]
            try:
                ch.on_ack(event) if t is ev.Ack else ch.on_nack(event) if t is ev.Nack \
                    else ch.on_modify(event)
            except errors.ChannelError as err:
                err.channel = event.channel
                raise
            return
        if t is ev.Method:
            handler = HANDLERS.get(event.method.name)
            if handler is None:       # e.g. a method only a server sends (RabbitMQ's words)
                raise errors.CommandInvalid("unimplemented method",
                                            *divmod(event.method.index, 0x10000))
            try:
                result = handler(self.channels[event.channel], event.method)
                if result is not None:
                    self._drive(result, event.channel)
            except errors.ChannelError as err:
                err.channel = event.channel
                raise
            return
        if t is ev.ChannelOpened:
            self._drive(self._open_channel(event.channel), event.channel)
        elif t is ev.ChannelClosedByPeer:
            self._drop_channel(event.channel)
        elif t is ev.ChannelCloseOk:
            pass
        elif t is ev.StartOk:
            self._drive(self._start_ok(event), 0)
        elif t is ev.TuneOk:
            self._tune_ok(event)
        elif t is ev.OpenVhost:
            self._drive(self._open(event), 0)
        elif t is ev.UpdateSecret:
            self._drive(self._update_secret(event), 0)
        elif t is ev.ConnectionClosedByPeer:
            # as RabbitMQ's reader: the connection is let go (channels, exclusive queues)
            # before close-ok, then the socket is left for the client to close, as the peer
            # that asked (its TIME_WAIT stays on its side), for at most the heartbeat
            # timeout or CLOSING_TIMEOUT; what it sends meanwhile is dropped unread
            self._release()
            self.flush()
            self._close_timer = self.loop.call_later(closing_timeout(self.conn.heartbeat),
                                                     self._abort)
        elif t is ev.ConnectionCloseOk:
            self.transport.close()
            self.closed = True
        elif t is ev.BadProtocolHeader:
            if is_amqp10(event.received):   # AMQP 1.0: its own connection from here on
                self._hand_over(event.received + event.rest)
                return
            log.warning("connection %s: bad protocol header %r", self.name, event.received,
                        extra=self.log_context())
            self.flush()
            self.transport.close()
            self.closed = True

    # ----------------------------------------------------------------- waiting for a host
    def _drive(self, coro, channel: int) -> None:
        """Run a handler that asks a partition host something. If the answer is already there
        (in-process host), it completes now; otherwise this connection handles no further
        event until it has (``_resume``), which keeps the order of its methods."""
        try:
            fut = coro.send(None)
        except StopIteration:
            return
        self._waiting = True
        self.transport.pause_reading()
        fut.add_done_callback(lambda _: self._resume(coro, channel))

    def _resume(self, coro, channel: int) -> None:
        if self.closed:
            coro.close()
            return
        try:
            fut = coro.send(None)
        except StopIteration:
            pass
        except errors.AMQPError as err:
            if not err.hard:
                err.channel = channel
            self._on_error(err)
        except Exception:
            log.exception("connection %s: internal error", self.name, extra=self.log_context())
            self._on_error(errors.InternalError("internal error"))
        else:
            fut.add_done_callback(lambda _: self._resume(coro, channel))
            return
        self._waiting = False
        self.flush()
        self._schedule_continue()

    # ----------------------------------------------------------------- handshake
    async def _authenticated(self, login):
        """``login()``'s answer; when an OAuth 2 token names a key the JWKS did not have,
        the JWKS is read again (in a thread: the loop goes on) and the login tried once
        more."""
        try:
            return login()
        except UnknownKey:
            await asyncio.get_running_loop().run_in_executor(
                None, self.broker.users.oauth2.refresh)
            return login()

    async def _start_ok(self, e: ev.StartOk) -> None:
        self.client_properties = e.client_properties
        if adapters.PROPERTY in e.client_properties:
            self._adapted(adapters.verified(self.broker.users.internal_secret,
                                            e.client_properties))
        caps = e.client_properties.get("capabilities") or {}
        self.capabilities = caps if isinstance(caps, dict) else {}
        try:
            user = await self._authenticated(lambda: self.broker.users.authenticate(
                e.mechanism, e.response, self.certificate))
        except errors.AMQPError as err:
            self.broker.stats.auth_attempt("amqp091", False)
            if events.on(self.broker):
                events.emit(self.broker, "user.authentication.failure", {
                    **events.login_details(self, e.mechanism, getattr(err, "login_user", None)),
                    "error": (getattr(err, "login_failed", None) or err.text).split(
                        "login refused: ", 1)[-1]})
            raise
        self.broker.stats.auth_attempt("amqp091", True)
        if events.on(self.broker):
            events.emit(self.broker, "user.authentication.success",
                        events.login_details(self, e.mechanism, user.name))
        if user.name in self.broker.config.loopback_users and not is_loopback(self.peer[0]):
            # the reason goes to the log; the client is told only that the login was refused,
            # as RabbitMQ's auth_fail does
            err = errors.ConnectionAccessRefused(
                f"Login was refused using authentication mechanism {e.mechanism}. For details "
                f"see the broker logfile.", 10, 11)
            err.login_failed = f"user '{user.name}' can only connect via localhost"
            err.login_user = user.name
            raise err
        self.user = user
        self.mechanism = e.mechanism
        self.conn.send_tune()

    def _adapted(self, fields: dict | None) -> None:
        """An MQTT or STOMP client's connection (adapters.py): shown with its address and
        protocol."""
        self.client_properties = {k: v for k, v in self.client_properties.items()
                                  if k != adapters.PROPERTY}
        if fields is None:
            return
        self.peer = (fields["peer_host"], fields["peer_port"])
        self.local = (fields["host"], fields["port"])
        self.protocol = fields["protocol"]
        self.adapted_ssl = bool(fields["ssl"])
        self.client_properties = fields["shown"]
        # an AMQP 1.0 client's modified outcome (protocol/constants.py MODIFY)
        self.conn.modify_allowed = self.protocol == adapters.AMQP10
        self.direct = adapters.direct_target(fields.get("direct"))

    async def _update_secret(self, e: ev.UpdateSecret) -> None:
        """RabbitMQ's ``update_state``: an OAuth 2 token's connection takes the new token
        (its grants and tags; the same user), or is closed with 530 as RabbitMQ words it;
        a user of the internal backend keeps its state (it cannot expire)."""
        user = self.user
        if user is not None and user.grants is not None:
            secret = e.new_secret.decode(errors="replace")
            new, why = await self._authenticated(
                lambda: self.broker.users.login(user.name, secret, ("oauth2",)))
            if new is None or new.name != user.name:
                log.error("Secret update was refused for user '%s': %s", user.name,
                          why or "the token names another user", extra=self.log_context())
                raise errors.NotAllowed("New secret was refused by one of the backends",
                                        10, 70)
            user.grants, user.tags = new.grants, new.tags
        self.conn.send_update_secret_ok()

    def _tune_ok(self, e: ev.TuneOk) -> None:
        if e.heartbeat:
            self._timer = self.loop.call_later(e.heartbeat / 2, self._heartbeat_tick)

    async def _open(self, e: ev.OpenVhost) -> None:
        # RabbitMQ's order: the connection limits (530), then the vhost and its permissions
        await self.broker.admission.open_connection(self, e.vhost)
        vhost = self.broker.vhosts.get(e.vhost)
        if vhost is None:
            raise errors.NotAllowed(f"vhost {e.vhost} not found", 10, 40)
        if not self.broker.users.can_access_vhost(self.user, e.vhost):
            raise errors.NotAllowed(f"access to vhost '{e.vhost}' refused for user "
                                    f"'{self.user.name}'", 10, 40)
        self.vhost = vhost
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.conn.send_open_ok()
        self.broker.stats.connection_opened()
        self.broker.sessions.add(self)
        log.info("connection %s: user '%s' authenticated and granted access to vhost '%s'",
                 connection_name(self), self.user.name, vhost.name, extra=self.log_context())
        if events.on(self.broker):
            events.session_emit(self, "connection.created", events.connection_details(self))
        if self.broker.alarms.blocked:
            self.on_alarm(True)

    # ----------------------------------------------------------------- channels
    async def _open_channel(self, number: int) -> None:
        await self.broker.admission.open_channel(self)      # 530 over the user's max-channels
        ch = self.channels[number] = Channel(self, number)
        self.conn.send_channel_open_ok(number)
        if events.on(self.broker):
            name = events.channel_name(ch)
            events.session_emit(self, "channel.created", {
                "name": name, "number": number, "connection": connection_name(self),
                "user": self.user.name, "vhost": self.vhost.name, "pid": name})

    def _drop_channel(self, number: int) -> None:
        ch = self.channels.pop(number, None)
        if ch is not None:
            ch.close()
            self.broker.admission.channel_closed(self)

    def close_channel(self, number: int, err: errors.AMQPError) -> None:
        """A channel error found outside the client's methods (a delivery acknowledgement
        timeout): the channel closes as one of its methods' errors closes it."""
        if not self.closed and number in self.channels:
            self._on_error(err, number)
            self.flush()

    def _handshake_timeout(self) -> None:
        self._handshake_timer = None
        if self.vhost is None and not self.closed:
            log.warning("connection %s: handshake timeout", self.name, extra=self.log_context())
            self._abort()

    def _heartbeat_tick(self) -> None:
        hb = self.conn.heartbeat
        now = self.loop.time()
        reading = not (self.reading_paused or self._throttled_by or self._backlog
                       or self._waiting or not self.writable)
        if reading and now - self.last_recv > 2 * hb:
            log.warning("missed heartbeats from client %s, timeout: %ds", self.name, hb,
                        extra=self.log_context())
            self._abort()
            return
        if now - self.last_sent >= hb / 2:
            self.conn.send_heartbeat()
            self.flush()
        self._timer = self.loop.call_later(hb / 2, self._heartbeat_tick)

    # ----------------------------------------------------------------- output
    def write(self, frames) -> None:
        self.conn.write(frames)
        self.schedule_flush()

    def send_method(self, channel: int, method) -> None:
        self.conn.send_method(channel, method)
        self.schedule_flush()

    def schedule_flush(self) -> None:
        """Write the queued output once the read or ring batch being handled is (``_process``,
        ``Broker.handle_events``: a lone delivery leaves in the wake-up that made it, with no
        loop callback of its own), else at the end of the loop turn."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            written_to = self.broker.written_to
            if written_to is not None:      # during a read or a ring batch: see _process
                written_to.append(self)
            else:
                self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        # writelines, not write(b"".join(...)): uvloop hands the parts to writev, so bodies
        # are not copied into a joined buffer first (bench/flush_bench.py: 64 KiB deliveries
        # half the CPU, 1 KiB no worse; bench/RESULTS.md, "Large messages")
        out = self.conn.take_output()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)
            self.stats.on_send(out)
            self.last_sent = self.loop.time()

    # ----------------------------------------------------------------- alarms, shutdown
    def on_alarm(self, blocked: bool) -> None:
        if self.vhost is None or self.closed:
            return
        # any connection stops at its next publish or content frame (ev.PAUSED), even
        # half-way through a body: a body being assembled is memory too
        self.conn.hold_content = blocked
        if self.capabilities.get("connection.blocked"):
            if blocked:
                self.send_method(0, C.Connection.Blocked(reason=self.broker.alarms.reason()))
            else:
                self.send_method(0, C.Connection.Unblocked())
        if blocked and self.is_publisher and not self.reading_paused:
            self._pause_for_alarm()
        elif not blocked and self.reading_paused:
            self.reading_paused = False
            self._schedule_continue()

    def _pause_for_alarm(self) -> None:
        """RabbitMQ's 'blocked' state: nothing more is read from a publishing connection
        while an alarm is on."""
        self.reading_paused = True
        self.transport.pause_reading()
        self._watch_peer()

    def _watch_peer(self) -> None:
        """While a connection is not read from (blocked, or its output full), its end goes
        unseen (no EOF, no reset is read; a client without heartbeats sends nothing else):
        look at the TCP state each second, and let go of a connection the client has closed,
        with what it held (a partial body is memory the alarm waits for)."""
        if self._peer_watch is not None:
            self._peer_watch.cancel()
            self._peer_watch = None
        if self.closed or (self.writable and not self.reading_paused):
            return
        sock = self.transport.get_extra_info("socket")
        try:
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        except (OSError, AttributeError, IndexError):
            state = TCP_ESTABLISHED
        if state != TCP_ESTABLISHED:
            log.warning("connection %s closed by the client while not read from, %d bytes "
                        "of content unfinished", self.name, self.conn.partial_content_bytes,
                        extra=self.log_context())
            self._abort()
            return
        self._peer_watch = self.loop.call_later(1.0, self._watch_peer)

    def _hand_over(self, data: bytes) -> None:
        """An AMQP 1.0 client (``amqp10/listener.py``): the connection is its from here on;
        this session lets go of it without a word (our 0-9-1 header is not sent)."""
        self.conn.output.clear()
        self.closed = self._released = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self.server.sessions.discard(self)
        self.broker.stats.connection_closed(self)
        self.server.amqp10.take_over(self.transport, data)

    def force_close(self, text: str) -> None:
        """Broker-initiated close (shutdown, vhost deleted): 320 CONNECTION_FORCED."""
        if self.closed:
            return
        self._on_error(errors.ConnectionForced(text))

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _close_channels(self) -> None:
        for ch in list(self.channels.values()):
            ch.close()
        self.channels.clear()

    def log_context(self) -> dict:
        """What a log line about this connection carries (``logs.py``)."""
        return context(connection=connection_name(self),
                       user=self.user.name if self.user is not None else None,
                       vhost=self.vhost.name if self.vhost is not None else None)

    def _cleanup(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._release()

    def _release(self) -> None:
        """Let go of what the connection holds (once: at the client's connection.close, or
        when the socket ends)."""
        if self._released:
            return
        self._released = True
        if self.vhost is not None:
            log.info("closing AMQP connection %s (vhost: '%s', user: '%s')",
                     connection_name(self), self.vhost.name, self.user.name,
                     extra=self.log_context())
        else:
            log.info("closing AMQP connection %s (before connection.open)",
                     connection_name(self), extra=self.log_context())
        self.closed = True
        for t in (self._timer, self._handshake_timer, self._close_timer, self._peer_watch):
            if t is not None:
                t.cancel()
        self._close_channels()
        for q in self._throttled_by:
            q.flow_waiters.discard(self)
        self._throttled_by.clear()
        for q in list(self.exclusive_queues):
            if not q.deleted:
                run_now(self.broker.metadata.delete_queue_now(
                    vhost=q.vhost.name, name=q.name, qid=q.qid, reason="exclusive owner closed"))
        self.exclusive_queues.clear()
        self.server.sessions.discard(self)
        self.broker.sessions.discard(self)
        self.broker.admission.connection_closed(self)
        self.broker.stats.connection_closed(self)
        if self.vhost is not None and events.on(self.broker):
            name = connection_name(self)
            events.session_emit(self, "connection.closed", {
                "name": name, "node": NODE, "pid": name,
                "client_properties": self.client_properties})


NODE = "amqpbroker@localhost"         # the node's name in the management API


def connection_name(s) -> str:
    """RabbitMQ's name of a connection: ``peer -> local`` address."""
    return f"{s.peer[0]}:{s.peer[1]} -> {s.local[0]}:{s.local[1]}"


def session_json(s) -> dict:
    """A connection as the management API shows it (RabbitMQ's fields), with its channels
    and their consumers in ``channel_details``: the API takes them apart, so one answer of
    each front-end serves /api/connections, /api/channels and /api/consumers."""
    name = connection_name(s)
    user = s.user.name if s.user else None
    vhost = s.vhost.name if s.vhost else None
    peer = {"peer_host": s.peer[0], "peer_port": s.peer[1]}
    given = s.client_properties.get("connection_name")     # RabbitMQ's user_provided_name
    shown = {"user_provided_name": given} if isinstance(given, str) and given else {}
    return {"name": name, "node": NODE, "user": user, "vhost": vhost, **peer, **shown,
            "host": s.local[0], "port": s.local[1],
            "type": "network" if s.protocol == "AMQP 0-9-1" else "direct",   # adapters.py
            "protocol": s.protocol, "channels": len(s.channels),
            "channel_max": s.conn.channel_max, "frame_max": s.conn.frame_max,
            "timeout": s.conn.heartbeat, "connected_at": s.connected_at,
            "state": "blocked" if s.reading_paused else "running",
            "client_properties": s.client_properties,
            "ssl": s.certificate is not None or s.adapted_ssl, "auth_mechanism": s.mechanism,
            "user_who_performed_action": user,
            "frontend": s.server.index,      # ours: the front-end process serving it
            "channel_details": [_channel_json(ch, name, user, vhost, peer)
                                for ch in list(s.channels.values())]}


def _channel_json(ch, conn_name: str, user, vhost, peer: dict) -> dict:
    name = f"{conn_name} ({ch.number})"
    consumers = [{"consumer_tag": c.tag, "exclusive": c.exclusive, "ack_required": not c.no_ack,
                  "prefetch_count": c.prefetch, "arguments": c.arguments, "active": True,
                  "activity_status": "up",
                  "queue": {"name": c.queue.name if c.queue is not None else "amq.rabbitmq.reply-to",
                            "vhost": vhost},
                  "channel_details": {"name": name, "number": ch.number, "node": NODE,
                                      "connection_name": conn_name, "user": user, **peer}}
                 for c in list(ch.consumers.values())]
    return {"name": name, "number": ch.number, "node": NODE, "user": user, "vhost": vhost,
            "connection_details": {"name": conn_name, **peer},
            "confirm": ch.confirm, "transactional": ch.tx is not None,
            "prefetch_count": ch.prefetch, "global_prefetch_count": ch.global_prefetch,
            "consumer_count": len(consumers), "messages_unacknowledged": len(ch.unacked),
            "messages_unconfirmed": len(ch.confirms),
            "messages_uncommitted": sum(1 for op in ch.tx or () if op[0] == "publish"),
            "acks_uncommitted": sum(1 for op in ch.tx or () if op[0] != "publish"),
            "state": "running", "user_who_performed_action": user,
            "consumer_details": consumers}
