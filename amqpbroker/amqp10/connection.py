"""A client of AMQP 1.0 (qpid-proton, the Azure and .NET AMQP 1.0 clients, RabbitMQ's own
AMQP 1.0 clients), carried over AMQP 0-9-1 as the MQTT, STOMP and stream clients are
(``adapter.py``), as RabbitMQ 3.10's ``rabbitmq_amqp1_0`` plugin carries them over its
direct client.

The connection: the SASL layer (PLAIN, AMQPLAIN, ANONYMOUS as ``--amqp1-default-user``, and a
client that skips SASL is that user too, as the plugin's ``default_user``; ``guest`` only
from loopback), then ``open`` (the vhost is the ``hostname``'s ``vhost:NAME``, else the
default vhost ``/``), which logs in over AMQP as the client's user: permissions, limits,
alarms, every process layout and the cluster are the broker's own.

What each link becomes (its address, RabbitMQ 3.10's forms and 4.0's; ``address.py``):

* A **sender** link (the client publishes) gets an AMQP channel of its own. Each message
  (``transfer`` frames, ``more`` ones joined) is converted to AMQP 0-9-1 properties and body
  (``stream_protocol/amqp10.py``, RabbitMQ's mapping) and published to the address's
  exchange and routing key. An unsettled transfer is published in confirm mode and settled
  with ``accepted`` when the broker confirms it (``rejected`` on a nack), a settled one
  without confirm. The client is given link credit (``CREDIT``), topped up as it is used;
  during a memory or disk alarm the client's frames wait (``adapter.py``), so credit runs
  out and the client stops.
* A **receiver** link (the client consumes) is a consumer on a channel of its own with a
  prefetch of ``WINDOW``, raised when the client's credit and what it holds unsettled ask
  for more (``_widen``); deliveries are sent as transfers while the client has credit (the
  rest wait here, unacked in the broker), ``drain`` ends with the credit used up. With
  ``snd-settle-mode`` settled the delivery is acked once sent (at most once); otherwise it
  waits for the client's disposition: ``accepted`` acks, ``rejected`` and ``modified`` with
  ``undeliverable-here`` reject, ``released`` and other ``modified`` requeue; a
  ``modified`` outcome's message annotations go with the message (``basic.modify``,
  ``message.modified``: a quorum queue keeps them, as RabbitMQ 4's).
* Detaching a link (or ending its session, or closing the connection) closes its channel:
  what was delivered and not settled goes back to the queue, redelivered.
* A **link pair to** ``/management`` (RabbitMQ 4's management node, ``management.py``):
  each request on the client's sender is carried out over AMQP 0-9-1 methods
  (``management_node.py``) and answered on its receiver.

RabbitMQ 4's own AMQP 1.0 client libraries check the open's ``product`` and ``version``
(``_open_frame``); a receiver of a stream may filter (4.1's filters: the values as the
consumer's ``x-stream-filter``, the property filters here, ``address.MessageFilter``; 4.2's
SQL filters, ``sql_filter.py``); a receiver with a dynamic source asking for a volatile
queue is the connection's direct reply-to consumer (4.2, ``_attach_reply_to``); an
OAuth 2 connection is closed when its token expires (``expire_at``).

Errors are answered as AMQP 1.0 errors on the level they belong to: a link the broker
refuses (a missing queue or exchange, a permission) is detached with the condition for its
AMQP 0-9-1 code (``amqp:not-found``, ``amqp:unauthorized-access``...) and RabbitMQ's text;
frames that make no sense close the connection with ``amqp:decode-error`` or
``amqp:connection:framing-error``.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import platform
import struct
import time

import pika

from .. import __version__, errors
from ..adapter import AdapterConnection, ChannelGone, Ended, refusal, tapped
from ..delivery_tap import Delivery
from ..frontend import adapters
from ..frontend.session import is_loopback
from ..protocol.fastpath import build_confirm, build_modify, build_publish
from ..stream_protocol import amqp10 as convert
from ..stream_protocol.amqp10 import NULL
from . import address
from . import frames as f
from . import management
from . import message
from .management_node import ManagementNode

log = logging.getLogger("amqpbroker.amqp10")

MAX_FRAME_SIZE = 131072             # what this side accepts (RabbitMQ's frame_max)
CHANNEL_MAX = 255
HANDSHAKE_TIMEOUT = 10.0
DETACH_TIMEOUT = 10.0               # a receiver's detach waits at most this for its channel
CREDIT = 256                        # link credit a sender link is given, topped up at half
WINDOW = 256                        # deliveries a receiver link's consumer may hold unacked
MAX_WINDOW = 65535                  # ... at most, as the client's credit asks (the plugin's)
INCOMING_WINDOW = 65535             # transfers a session takes before it says so again
MECHANISMS = ("PLAIN", "AMQPLAIN", "ANONYMOUS")
PRODUCT = "amqpbroker"
RABBITMQ_LEVEL = "4.2.0"            # the RabbitMQ whose AMQP 1.0 this serves (see _open_frame)
# AMQP 0-9-1 reply codes -> AMQP 1.0 error conditions
_CONDITIONS = {403: "amqp:unauthorized-access", 404: "amqp:not-found",
               405: "amqp:resource-locked", 406: "amqp:precondition-failed",
               530: "amqp:not-allowed", 540: "amqp:not-implemented"}
_U64 = struct.Struct(">Q")
REPLY_TO = "amq.rabbitmq.reply-to"     # AMQP 0-9-1's direct reply-to pseudo-queue


class Link:
    """One attached link: ``role`` is the client's (``sender``: it publishes to us)."""

    __slots__ = ("name", "handle", "role", "session", "channel", "settled", "exchange",
                 "routing_key", "queue", "consumer_tag", "credit", "delivery_count",
                 "partial", "pending", "drain", "confirm_seq", "confirms", "closing",
                 "attached", "unsettled", "window", "draining", "management", "responses",
                 "message_filter", "held", "v2", "routes", "returned", "no_ack")

    def __init__(self, session, name: str, handle: int, role: str):
        self.name = name
        self.handle = handle
        self.role = role
        self.session = session
        self.channel = None
        self.settled = False            # sender: settled transfers; receiver: send settled
        self.exchange = self.routing_key = None     # sender: where messages go (None: `to`)
        self.queue = None               # receiver: what is consumed
        self.consumer_tag = ""
        self.credit = 0
        self.delivery_count = 0
        self.partial: list | None = None    # a transfer's frames so far (more=true)
        self.pending: collections.deque = collections.deque()   # receiver: not yet sent
        self.drain = False
        self.confirm_seq = 0            # sender: publishes on its channel (confirm numbers)
        self.confirms: collections.OrderedDict = collections.OrderedDict()  # seq -> id
        self.closing = False
        self.attached = False           # answered: a channel lost before is a refusal
        self.unsettled = 0              # receiver: sent, not yet settled by the client
        self.window = WINDOW            # receiver: its consumer's prefetch
        self.draining = False           # receiver: _end_drain is asking the queue's host
        self.management = False         # a half of a link pair to the management node
        self.responses: collections.deque = collections.deque()  # its answers, for credit
        self.message_filter = None      # receiver: address.MessageFilter (a stream's)
        self.held = False               # receiver: its attach is not out yet (_release)
        self.v2 = False                 # sender: a RabbitMQ 4 target (released if unroutable)
        self.routes: dict = {}          # sender, v2: confirm seq -> (exchange, routing key)
        self.returned: set = set()      # ... the seqs the broker returned as unroutable
        self.no_ack = False             # receiver: its consumer acks nothing (direct reply-to)


class Session:
    """One session; ours is on the client's channel number (its begin's, answered there)."""

    __slots__ = ("channel", "links", "next_incoming_id", "next_outgoing_id",
                 "remote_incoming_window", "unsettled", "detached")

    def __init__(self, channel: int, next_incoming_id: int, remote_incoming_window: int):
        self.channel = channel
        self.links: dict[int, Link] = {}                # the client's handle -> link
        self.next_incoming_id = next_incoming_id
        self.next_outgoing_id = 0                       # our next delivery id
        self.remote_incoming_window = remote_incoming_window
        self.unsettled: dict[int, tuple] = {}   # delivery id -> (link, tag, properties)
        self.detached: set[int] = set()     # handles we detached first: the client answers

    def flow_fields(self) -> dict:
        """A flow's session fields (our windows are constant: ``INCOMING_WINDOW``)."""
        return dict(next_incoming_id=("uint", self.next_incoming_id),
                    incoming_window=("uint", INCOMING_WINDOW),
                    next_outgoing_id=("uint", self.next_outgoing_id),
                    outgoing_window=("uint", INCOMING_WINDOW))


class Amqp10Connection(AdapterConnection):
    protocol = "AMQP 1.0"
    log = log

    def __init__(self, server):
        super().__init__(server)
        self.phase = "header"           # sasl, amqp_header, open, opened, closing
        self.head = b""
        self.splitter = f.Splitter(MAX_FRAME_SIZE)
        self.user = None
        self.password = ""
        self.sasl_done = False
        self.after_sasl: bytes | None = None    # what came after sasl-init, until its outcome
        self.vhost = "/"
        self.remote_max_frame = 65536  # the client's max-frame-size (from its open)
        self.sessions: dict[int, Session] = {}          # the client's channel -> session
        self.by_channel: dict = {}                      # pika channel -> link
        self.management = ManagementNode(self)          # /management's requests
        self.expiry = None              # the timer that closes it when its token expires

    # ------------------------------------------------------------ transport
    def connection_made(self, transport) -> None:
        self._accepted(transport)
        self.timers.append(self.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout))
        log.info("accepting AMQP 1.0 connection %s", self.name)

    def taken_over(self, transport, data: bytes) -> None:
        """A connection the AMQP 0-9-1 listener accepted whose first bytes were an AMQP 1.0
        header (``frontend/session.py``): it is this protocol's from here on."""
        self.connection_made(transport)
        self.data_received(data)

    def _handshake_timeout(self) -> None:
        if self.phase != "opened" and not self.closed:
            log.warning("AMQP 1.0 connection %s: no open within %.0f s; closing", self.name,
                        HANDSHAKE_TIMEOUT)
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.closed or self.phase == "closing":
            return
        self.heard = self.loop.time()
        if self.after_sasl is not None:         # the AMQP header may come before the outcome
            self.after_sasl += data
            return
        if self.phase in ("header", "amqp_header"):
            data = self._header(data)
            if not data:
                return
        sasl = self.phase == "sasl"
        try:
            items = self.splitter.feed(data, until="sasl_init" if sasl else None)
        except f.FrameError as exc:
            self._fail(exc.condition, str(exc))
            return
        if sasl and items and items[-1].name == "sasl_init":
            self.after_sasl = bytes(self.splitter.buf)
            self.splitter.buf.clear()
        self._received(items)

    def _header(self, data: bytes) -> bytes:
        """The protocol header's bytes taken off ``data``; what follows it is returned."""
        need = 8 - len(self.head)
        self.head += data[:need]
        rest = data[need:]
        if len(self.head) < 8:
            return b""
        head, self.head = self.head, b""
        if head == f.SASL_HEADER and self.phase == "header":
            self._send(f.SASL_HEADER + f.frame(
                "sasl_mechanisms",
                sasl_server_mechanisms=("array", [("symbol", m) for m in self._mechanisms()])))
            self.phase = "sasl"
            return rest
        if head == f.AMQP_HEADER and (self.phase == "amqp_header" or self.phase == "header"):
            if not self.sasl_done:              # no SASL: the default user, as RabbitMQ's
                if not self._anonymous():
                    self._send(f.AMQP_HEADER)
                    self.close()
                    return b""
            self._send(f.AMQP_HEADER)
            self.phase = "open"
            return rest
        log.warning("AMQP 1.0 connection %s: bad protocol header %r; closing", self.name, head)
        self._send(f.SASL_HEADER if self.phase == "header" else f.AMQP_HEADER)
        self.close()
        return b""

    def _mechanisms(self) -> tuple:
        return MECHANISMS if self.cfg.amqp1_default_user else MECHANISMS[:2]

    def _send(self, data: bytes) -> None:
        if not self.closed:
            self._queue_out(data)

    def _fail(self, condition: str, text: str) -> None:
        """Close the connection with an error, as ``close`` with it."""
        log.error("AMQP 1.0 connection %s: %s; closing it", self.name, text)
        if self.phase in ("open", "opened"):
            self._send(f.frame("close", error=f.error(condition, text)))
        self.phase = "closing"
        self._flush()
        self.close()

    # ------------------------------------------------------------ in order
    def _batched(self, frame) -> bool:
        return frame.name in ("transfer", "disposition", "flow")

    def _publishes(self, frame) -> bool:
        if frame.name != "transfer" or frame.channel not in self.sessions:
            return False
        link = self.sessions[frame.channel].links.get(frame["handle"])
        return link is not None and link.role == "sender" and not link.management

    def _ended(self, exc: Ended) -> None:
        self.close()

    def _client_gone(self) -> None:
        self.close()

    async def _handle(self, frame) -> None:
        name = frame.name
        if name is None:                        # a heartbeat
            return
        if self.phase == "sasl":
            if name != "sasl_init":
                self._fail("amqp:connection:framing-error", f"{name} during SASL")
                return
            return self._sasl_init(frame)
        if frame.type == f.SASL:
            self._fail("amqp:connection:framing-error", f"{name} after SASL")
            return
        if self.phase == "open":
            if name != "open":
                self._fail("amqp:connection:framing-error", f"{name} before open")
                return
            return await self._open(frame)
        handler = getattr(self, "on_" + name, None)
        if handler is None:
            self._fail("amqp:not-implemented", f"unexpected {name}")
            return
        await handler(frame)

    # ------------------------------------------------------------ SASL, open
    def _anonymous(self) -> bool:
        """Log in as ``--amqp1-default-user`` (ANONYMOUS, or no SASL at all): False (and
        logged) when there is none or it may not come from here."""
        name = self.cfg.amqp1_default_user
        users = self.server.broker.users
        user = users.users.get(name) if name else None
        if user is None:
            log.warning("AMQP 1.0 connection %s: anonymous login refused: no default user",
                        self.name)
            return False
        if name in self.cfg.loopback_users and not is_loopback(self.peer):
            log.warning("AMQP 1.0 connection %s: user '%s' can only connect via localhost",
                        self.name, name)
            return False
        self.user, self.password, self.sasl_done = user, users.internal_secret, True
        return True

    def _sasl_init(self, frame) -> None:
        mechanism = frame["mechanism"] or ""
        response = frame["initial_response"] or b""
        ok = False
        if mechanism == "ANONYMOUS" and "ANONYMOUS" in self._mechanisms():
            ok = self._anonymous()
        elif mechanism in ("PLAIN", "AMQPLAIN"):
            users = self.server.broker.users
            try:
                user = users.authenticate(mechanism, response)
            except errors.AMQPError as exc:
                log.warning("AMQP 1.0 connection %s: %s", self.name,
                            getattr(exc, "login_failed", str(exc)))
                user = None
            except Exception as exc:                        # noqa: BLE001 - a backend's
                log.warning("AMQP 1.0 connection %s: login failed: %s", self.name, exc)
                user = None
            if user is not None and user.name in self.cfg.loopback_users \
                    and not is_loopback(self.peer):
                log.warning("AMQP 1.0 connection %s: user '%s' can only connect via "
                            "localhost", self.name, user.name)
                user = None
            if user is not None:
                self.user, ok = user, True
                self.password = response.split(b"\x00")[2].decode(errors="replace") \
                    if mechanism == "PLAIN" else users.internal_secret
        else:
            log.warning("AMQP 1.0 connection %s: SASL mechanism %r not offered", self.name,
                        mechanism)
        self._send(f.frame("sasl_outcome", code=("ubyte", f.SASL_OK if ok else f.SASL_AUTH)))
        if ok:
            self.sasl_done = True
            self.phase = "amqp_header"
            rest, self.after_sasl = self.after_sasl, None
            if rest:
                self.data_received(rest)
        else:
            self.phase = "closing"
            self._flush()
            self.close()

    async def _open(self, frame) -> None:
        hostname = frame["hostname"] or ""
        vhost = hostname[len("vhost:"):] if hostname.startswith("vhost:") else "/"
        max_frame = frame["max_frame_size"]
        self.remote_max_frame = max(f.MIN_MAX_FRAME_SIZE,
                                    min(max_frame if max_frame else 1 << 32, 1 << 32))
        shown = {"product": "AMQP 1.0 client",
                 "container_id": frame["container_id"] or ""}
        result = await self._open_amqp(vhost, self.user.name, self.password,
                                       adapters.AMQP10, shown)
        if self.amqp is None:
            why = refusal(result)
            text = (f"access to vhost '{vhost}' refused for user '{self.user.name}'"
                    if why == "vhost" else f"login refused: {result}")
            # RabbitMQ 4 closes the socket, nothing sent (its reader's handshake_error): a
            # close frame would have clients that recover (rabbitmq-amqp-python-client)
            # reconnect at once, again and again
            log.warning("AMQP 1.0 connection %s: %s; closing it", self.name, text)
            self.phase = "closing"
            self.close()
            return
        self.vhost = vhost
        self.phase = "opened"
        self._send(self._open_frame())
        idle = frame["idle_time_out"]
        if idle:                                # the client wants a frame at least this often
            every = max(idle / 2000.0, 0.05)
            self.timers.append(self.loop.call_later(every, self._beat, every))
        self.expire_at(getattr(self.user.grants, "expires", None))
        log.info("AMQP 1.0 connection %s: user '%s' authenticated and granted access to "
                 "vhost '%s'", self.name, self.user.name, vhost)

    def _open_frame(self) -> bytes:
        """Our open. Its properties say product ``RabbitMQ``, version ``RABBITMQ_LEVEL``:
        RabbitMQ's own AMQP 1.0 client libraries for RabbitMQ 4 refuse a server that says
        anything else (``rabbitmq-amqp-python-client``'s ``_validate_server_properties``)
        and ask 4.1's stream filters of a 4.1 only, 4.2's SQL filters and direct reply-to
        of a 4.2 only; what they use of 4.0 to 4.2 (the management node, v2 addresses,
        stream filters, SQL filters, direct reply-to) is served here; the broker's own name
        and version ride in ``amqpbroker-version`` and ``information``."""
        props = [("product", "RabbitMQ"), ("version", RABBITMQ_LEVEL),
                 ("platform", f"Python {platform.python_version()}"),
                 ("information", f"{PRODUCT} {__version__}, serving RabbitMQ "
                                 f"{RABBITMQ_LEVEL}'s AMQP 1.0"),
                 ("amqpbroker-version", __version__)]
        return f.frame("open", container_id=("utf8", PRODUCT),
                       max_frame_size=("uint", MAX_FRAME_SIZE),
                       channel_max=("ushort", CHANNEL_MAX),
                       properties=("map", [(("symbol", k), ("utf8", v)) for k, v in props]))

    def expire_at(self, expires: float | None) -> None:
        """An OAuth 2 token's connection is closed when its token expires, with
        ``amqp:unauthorized-access`` "credential expired", as RabbitMQ 4 closes it (a new
        token through the management node sets a new time)."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if expires is not None:
            self.expiry = self.loop.call_later(max(0.0, expires - time.time()), self._fail,
                                               "amqp:unauthorized-access", "credential expired")
            self.timers.append(self.expiry)

    def _beat(self, every: float) -> None:
        if self.closed:
            return
        self._send(f.HEARTBEAT)
        self.timers.append(self.loop.call_later(every, self._beat, every))

    async def on_close(self, frame) -> None:
        err = f.composite(frame.fields["error"])
        if err is not None:
            log.warning("AMQP 1.0 connection %s: the client closed it: %s %s", self.name,
                        err[1]["condition"][1], err[1]["description"][1] or "")
        self._send(f.frame("close"))
        self.phase = "closing"
        self._flush()
        self.close()

    # ------------------------------------------------------------ sessions
    async def on_begin(self, frame) -> None:
        if frame.channel in self.sessions:
            self._fail("amqp:connection:framing-error", f"channel {frame.channel} in use")
            return
        if frame.channel > CHANNEL_MAX:
            self._fail("amqp:connection:framing-error", f"channel {frame.channel} over "
                                                        f"channel-max {CHANNEL_MAX}")
            return
        session = Session(frame.channel, frame["next_outgoing_id"] or 0,
                          frame["incoming_window"] or 0)
        self.sessions[frame.channel] = session
        self._send(f.frame("begin", frame.channel, remote_channel=("ushort", frame.channel),
                           next_outgoing_id=("uint", 0),
                           incoming_window=("uint", INCOMING_WINDOW),
                           outgoing_window=("uint", INCOMING_WINDOW),
                           handle_max=("uint", 0xFFFFFFFF)))

    def _session(self, frame) -> Session | None:
        session = self.sessions.get(frame.channel)
        if session is None:
            self._fail("amqp:connection:framing-error",
                       f"{frame.name} on channel {frame.channel}, which has no session")
        return session

    async def on_end(self, frame) -> None:
        session = self._session(frame)
        if session is None:
            return
        for link in list(session.links.values()):
            self._drop_link(link)
        del self.sessions[frame.channel]
        self._send(f.frame("end", session.channel))

    # ------------------------------------------------------------ links
    async def on_attach(self, frame) -> None:
        session = self._session(frame)
        if session is None:
            return
        handle = frame["handle"]
        if handle in session.links:
            self._fail("amqp:session:handle-in-use", f"handle {handle} in use")
            return
        role = "receiver" if frame["role"] else "sender"    # the client's role
        link = Link(session, frame["name"] or "", handle, role)
        session.links[handle] = link
        source, target = f.composite(frame.fields["source"]), f.composite(frame.fields["target"])
        link.settled = frame["snd_settle_mode"] == 1
        terminus = target if role == "sender" else source
        addr = terminus[1]["address"][1] if terminus is not None else None
        # a queue the address declares is durable when the terminus is (RabbitMQ's rule)
        durable = bool(terminus[1]["durable"][1]) if terminus is not None else False
        if role == "sender":
            link.delivery_count = frame["initial_delivery_count"] or 0
        filters = source[1]["filter"] if source is not None and role == "receiver" else NULL
        if addr == management.ADDRESS:
            return self._attach_management(frame, link)
        reply_source = frame.fields["source"]
        dynamic = terminus is not None and terminus[1]["dynamic"][1]
        if dynamic:         # RabbitMQ 4.2's direct reply-to is the one dynamic node it has
            if not (role == "receiver" and address.volatile(source)):
                return self._refuse_link(frame, link, "amqp:not-implemented",
                                         "dynamic nodes are not supported")
            if not link.settled:
                return self._refuse_link(frame, link, "amqp:not-implemented",
                                         "a direct reply-to receiver's deliveries are "
                                         "settled (snd-settle-mode settled)")
        else:
            link.message_filter, refused = address.message_filter(filters)
            if refused is not None:
                log.warning("AMQP 1.0 connection %s: link '%s': %s; attached without it",
                            self.name, link.name, refused)
                reply_source = address.source_without(reply_source, address.SQL_FILTER)
        try:
            if dynamic:
                addr = "/queues/" + await self._attach_reply_to(link)
                reply_source = address.dynamic_source(reply_source, addr)
            else:
                await self._attach(link, addr, durable, address.consumer_arguments(filters))
        except address.BadAddress as exc:
            return self._refuse_link(frame, link, "amqp:invalid-field", str(exc))
        except ChannelGone as exc:
            return self._refuse_link(frame, link, _CONDITIONS.get(exc.code,
                                                                   "amqp:internal-error"),
                                     exc.text)
        reply = dict(name=("utf8", link.name), handle=("uint", handle),
                     role=("boolean", role == "sender"),
                     snd_settle_mode=("ubyte", 1 if link.settled else 0),
                     rcv_settle_mode=("ubyte", 0), source=reply_source,
                     target=frame.fields["target"])
        if role == "receiver":
            reply["initial_delivery_count"] = ("uint", 0)
        self._send(f.frame("attach", session.channel, **reply))
        link.attached = True
        if role == "sender":
            self._grant(link)
        log.info("AMQP 1.0 connection %s: link '%s' attached (%s %s)", self.name, link.name,
                 "publishing to" if role == "sender" else "consuming from", addr)
        if role == "receiver":
            await self._release(link)

    async def _attach_reply_to(self, link: Link) -> str:
        """RabbitMQ 4.2's direct reply-to over AMQP 1.0: a receiver with a dynamic source and
        capability ``rabbitmq:volatile-queue`` consumes the connection's direct reply-to
        (AMQP 0-9-1's ``amq.rabbitmq.reply-to``, no acks: deliveries are settled as sent)
        and is told its address (returned: ``amq.rabbitmq.reply-to.TOKEN``); what anyone
        publishes there, over AMQP 1.0 or 0-9-1, reaches it while it is attached."""
        link.channel = ch = await self._channel()
        self.by_channel[ch] = link
        link.no_ack = True
        await self._consume(link, REPLY_TO)
        return await self._ask(ch, lambda cb: self._probe_reply_address(ch, cb))

    @staticmethod
    def _probe_reply_address(ch, callback) -> None:
        """Learn the channel's direct reply-to address as any AMQP 0-9-1 client can: a
        message published with reply-to ``amq.rabbitmq.reply-to`` carries the address in its
        place, and one published mandatory to no queue comes back (``callback`` gets the
        address). The channel consumes the reply-to pseudo-queue already, as it must."""
        def returned(_ch, _method, properties, _body) -> None:
            if properties.reply_to and properties.reply_to.startswith(REPLY_TO + "."):
                callback(properties.reply_to)
        ch.add_on_return_callback(returned)
        ch.basic_publish("", REPLY_TO, b"", pika.BasicProperties(reply_to=REPLY_TO),
                         mandatory=True)

    async def _release(self, link: Link) -> None:
        """A receiver link's deliveries wait until its attach is out and the broker has
        answered once more: a client that attaches with a handler (proton's) runs it from
        inside the wait for our attach, so deliveries that came with the attach would
        reach it before its call returned (RabbitMQ's queues take long enough to answer
        that they never do)."""
        self._flush()
        try:
            await self._ask(link.channel, lambda cb: link.channel.basic_qos(
                prefetch_count=link.window, callback=cb))
        except (ChannelGone, Ended):
            return                  # _channel_lost detached it, or the connection goes
        link.held = False
        self._pump(link)
        self._flush_amqp()

    def _attach_management(self, frame, link: Link) -> None:
        """A half of a link pair to the management node (``management.py``): the client's
        sender carries requests, its receiver the responses; both have the same name and
        the link property ``paired: true``, as RabbitMQ 4 requires."""
        props = frame.fields["properties"]
        if props[0] != "map" or (("symbol", "paired"), ("boolean", True)) not in props[1]:
            return self._refuse_link(frame, link, "amqp:precondition-failed",
                                     "Link pair requires link properties paired: true")
        link.management = True
        link.settled = True
        reply = dict(name=("utf8", link.name), handle=("uint", link.handle),
                     role=("boolean", link.role == "sender"), snd_settle_mode=("ubyte", 1),
                     rcv_settle_mode=("ubyte", 0), source=frame.fields["source"],
                     target=frame.fields["target"], properties=props)
        if link.role == "receiver":
            reply["initial_delivery_count"] = ("uint", 0)
        self._send(f.frame("attach", link.session.channel, **reply))
        link.attached = True
        if link.role == "sender":
            self._grant(link)
        log.info("AMQP 1.0 connection %s: link '%s' attached (management node, %s)",
                 self.name, link.name, "requests" if link.role == "sender" else "responses")

    async def _manage(self, link: Link, data: bytes) -> None:
        """A request to the management node: carried out, and answered on the receiving
        half of its link pair."""
        replies = next((ln for ln in link.session.links.values() if ln.management
                        and ln.role == "receiver" and ln.name == link.name), None)
        if replies is None:
            self._detach(link, "amqp:precondition-failed",
                         "received transfer on half open management link pair")
            return
        message_id = NULL
        try:
            request = management.parse(data)
            message_id = request.message_id
            status, body = await self.management.execute(management.operation(request))
            answer = management.response(message_id, status, body)
        except management.HttpError as exc:
            log.warning("AMQP 1.0 connection %s: management request failed: %s", self.name,
                        exc)
            answer = management.error_response(message_id, exc)
        except Ended:
            return
        if replies.session.links.get(replies.handle) is replies:
            replies.responses.append(answer)
            self._send_responses(replies)

    def _send_responses(self, link: Link) -> None:
        """The management node's answers, settled, while the client gives credit."""
        session = link.session
        while link.responses and link.credit > 0 and session.remote_incoming_window > 0:
            self._send_transfer(link, b"", link.responses.popleft())

    async def _attach(self, link: Link, addr, durable: bool, arguments: dict) -> None:
        """The link's channel, and what its address means (``address.py``): declared,
        bound or consumed as RabbitMQ's plugin does."""
        link.channel = await self._channel()
        self.by_channel[link.channel] = link
        if link.role == "sender":
            exchange, key, declare = address.target(addr)
            if declare is not None:
                await self._ask(link.channel, lambda cb: link.channel.queue_declare(
                    declare, durable=durable, callback=cb))
            elif address.existing_queue(addr) is not None:
                await self._ask(link.channel, lambda cb: link.channel.queue_declare(
                    key, passive=True, callback=cb))
            elif exchange:
                await self._ask(link.channel, lambda cb: link.channel.exchange_declare(
                    exchange, passive=True, callback=cb))
            link.exchange, link.routing_key = exchange, key
            link.v2 = addr is None or addr.startswith(("/exchanges/", "/queues/"))
            if not link.settled:
                await self._ask(link.channel, lambda cb: link.channel.confirm_delivery(
                    lambda fr: self._confirmed(link, fr), callback=cb))
                if link.v2:
                    link.channel.add_on_return_callback(
                        lambda _ch, method, _props, _body: self._returned(link, method))
            return
        queue, declare, bind = address.source(addr)
        ch = link.channel
        if declare is not None:
            await self._ask(ch, lambda cb: ch.queue_declare(declare, durable=durable,
                                                            callback=cb))
        elif bind is None:              # it must exist: refused now, not after the attach
            await self._ask(ch, lambda cb: ch.queue_declare(queue, passive=True, callback=cb))
        if bind is not None:
            exchange, key = bind
            ok = await self._ask(ch, lambda cb: ch.queue_declare(
                "", exclusive=True, auto_delete=True, callback=cb))
            queue = ok.method.queue
            await self._ask(ch, lambda cb: ch.queue_bind(queue, exchange, key, callback=cb))
        await self._ask(ch, lambda cb: ch.basic_qos(prefetch_count=WINDOW, callback=cb))
        await self._consume(link, queue, arguments)

    async def _consume(self, link: Link, queue: str, arguments: dict | None = None) -> None:
        """A receiver link's consumer of ``queue`` on its channel, its deliveries read raw
        (``_deliver``), held until the attach is out (``_release``); acked by us unless the
        link's consumer is ``no_ack``."""
        ch = link.channel
        link.queue = queue
        link.consumer_tag = f"amqp10-{link.session.channel}-{link.handle}"
        link.held = True
        ch.add_on_cancel_callback(self._cancelled)
        self.amqp.tap(ch.channel_number, self._deliver)
        await self._ask(ch, lambda cb: ch.basic_consume(
            queue, tapped, auto_ack=link.no_ack, consumer_tag=link.consumer_tag,
            arguments=arguments or None, callback=cb))

    def _refuse_link(self, frame, link: Link, condition: str, text: str) -> None:
        """An attach the broker refused: attached and detached at once with the error, as
        part 2.6.3 has it (the source or target null)."""
        log.warning("AMQP 1.0 connection %s: link '%s' refused: %s %s", self.name, link.name,
                    condition, text)
        session = link.session
        self._send(f.frame("attach", session.channel, name=("utf8", link.name),
                           handle=("uint", link.handle),
                           role=("boolean", link.role == "sender"),
                           source=frame.fields["source"] if link.role == "sender" else NULL,
                           target=frame.fields["target"] if link.role == "receiver" else NULL))
        self._send(f.frame("detach", session.channel, handle=("uint", link.handle),
                           closed=("boolean", True), error=f.error(condition, text)))
        self._drop_link(link)
        session.detached.add(link.handle)

    def _grant(self, link: Link) -> None:
        """Top a sender link's credit up to ``CREDIT``."""
        link.credit = CREDIT
        self._flow(link)

    def _flow(self, link: Link, drain: bool = False) -> None:
        fields = dict(link.session.flow_fields(), handle=("uint", link.handle),
                      delivery_count=("uint", link.delivery_count & 0xFFFFFFFF),
                      link_credit=("uint", link.credit))
        if drain:
            fields["drain"] = ("boolean", True)
        self._send(f.frame("flow", link.session.channel, **fields))

    async def on_detach(self, frame) -> None:
        session = self._session(frame)
        if session is None:
            return
        link = session.links.get(frame["handle"])
        if link is None:
            if frame["handle"] in session.detached:     # its answer to our detach
                session.detached.discard(frame["handle"])
                return
            self._fail("amqp:session:unattached-handle", f"detach of handle {frame['handle']}")
            return
        gone = self.channel_gone.get(link.channel)
        self._drop_link(link)
        if gone is not None and link.role == "receiver":
            # answered once its channel is closed, so what it held unsettled is back in
            # the queue before the client hears (RabbitMQ 4 returns it before answering)
            await asyncio.wait({gone, self.ended}, timeout=DETACH_TIMEOUT,
                               return_when=asyncio.FIRST_COMPLETED)
        self._send(f.frame("detach", session.channel, handle=("uint", link.handle),
                           closed=("boolean", bool(frame["closed"]))))

    def _drop_link(self, link: Link) -> None:
        """Forget a link; its channel closes, so what it was delivered and not settled goes
        back to its queue."""
        link.closing = True
        link.session.links.pop(link.handle, None)
        for delivery_id in [i for i, (ln, *_) in link.session.unsettled.items()
                            if ln is link]:
            del link.session.unsettled[delivery_id]
        channel = link.channel
        if channel is not None:
            self.by_channel.pop(channel, None)
            if channel.is_open:
                self._flush_amqp()
                channel.close()

    # ------------------------------------------------------------ channels
    def _channel_lost(self, channel, code: int, text: str) -> None:
        owner = self.by_channel.pop(channel, None)
        if self.amqp is None or not self.amqp.is_open:
            return          # the AMQP connection is going: one close says so (_amqp_closed)
        if owner is not None and owner.attached and not owner.closing and not self.closed:
            self._link_lost(owner, code, text)

    def _link_lost(self, link: Link, code: int, text: str) -> None:
        """The broker closed a link's channel (its queue deleted, a refused publish): the
        link is detached with the error."""
        if link.session.links.get(link.handle) is not link:
            return
        log.warning("AMQP 1.0 connection %s: link '%s' detached: %d %s", self.name, link.name,
                    code, text)
        self._detach(link, _CONDITIONS.get(code, "amqp:internal-error"), text)

    def _detach(self, link: Link, condition: str, text: str) -> None:
        """Detach a link from this side, with an error; the client answers with its own
        detach (``on_detach``)."""
        self._fail_confirms(link)
        self._drop_link(link)
        link.session.detached.add(link.handle)
        self._send(f.frame("detach", link.session.channel, handle=("uint", link.handle),
                           closed=("boolean", True), error=f.error(condition, text)))

    def _cancelled(self, method_frame) -> None:
        """The broker cancelled a receiver link's consumer (its queue was deleted): the
        link is detached with ``amqp:resource-deleted``, as RabbitMQ 4.0 does."""
        tag = method_frame.method.consumer_tag
        for session in self.sessions.values():
            for link in list(session.links.values()):
                if link.role == "receiver" and link.consumer_tag == tag and link.attached:
                    log.warning("AMQP 1.0 connection %s: link '%s': its queue '%s' was "
                                "deleted", self.name, link.name, link.queue)
                    self._detach(link, "amqp:resource-deleted",
                                 f"queue '{link.queue}' in vhost '{self.vhost}' was deleted")

    # ------------------------------------------------------------ publishing
    async def on_transfer(self, frame) -> None:
        session = self._session(frame)
        if session is None:
            return
        link = session.links.get(frame["handle"])
        if link is None or link.role != "sender":
            self._fail("amqp:session:unattached-handle",
                       f"transfer on handle {frame['handle']}, not a sending link")
            return
        if link.partial is None:
            if not isinstance(frame["delivery_id"], int):
                self._fail("amqp:invalid-field", "a delivery's first transfer without a "
                                                 "delivery-id")
                return
            session.next_incoming_id = (session.next_incoming_id + 1) & 0xFFFFFFFF
            link.partial = [frame["delivery_id"], bool(frame["settled"]), []]
        elif frame["settled"]:
            link.partial[1] = True
        link.partial[2].append(frame.payload)
        if frame["aborted"]:
            link.partial = None
            return
        if frame["more"]:
            if sum(len(p) for p in link.partial[2]) > self.cfg.max_message_size:
                self._fail("amqp:link:message-size-exceeded", "message over the maximum size")
            return
        delivery_id, settled, parts = link.partial
        link.partial = None
        link.delivery_count += 1
        link.credit -= 1
        if link.management:
            await self._manage(link, b"".join(parts))
        else:
            self._publish(link, delivery_id, settled or link.settled, b"".join(parts))
        if link.credit <= CREDIT // 2:
            self._grant(link)

    def _publish(self, link: Link, delivery_id, settled: bool, data: bytes) -> None:
        try:
            properties, body, to, subject = message.stored(data, self.user.name)
        except convert.NotAmqp10 as exc:
            log.warning("AMQP 1.0 connection %s: link '%s': a message that is not AMQP 1.0 "
                        "(%s): rejected", self.name, link.name, exc)
            if not settled:
                self._dispose(link.session, [delivery_id], f.make(
                    "rejected", error=f.error("amqp:decode-error", str(exc))))
            return
        exchange, key = link.exchange, link.routing_key
        if exchange is None:            # the address is the message's `to`
            try:
                exchange, key = address.of_to(to)
                vh = self.server.broker.vhosts.get(self.vhost)
                if exchange and vh is not None and exchange not in vh.exchanges:
                    # that message is refused, not the link (RabbitMQ 4's anonymous
                    # terminus): publishing it would close the link's channel
                    return self._unroutable_to(link, delivery_id, settled, "amqp:not-found",
                                               f"no exchange '{exchange}' in vhost "
                                               f"'{self.vhost}'")
            except address.BadAddress as exc:
                return self._unroutable_to(link, delivery_id, settled,
                                           "amqp:precondition-failed", str(exc))
        if key is address.SUBJECT:      # /exchange/NAME: the message's subject
            key = subject or ""
        # RabbitMQ 4 answers an unsettled message that went to no queue `released`: such
        # a publish is mandatory, and its return marks it (_returned)
        mandatory = link.v2 and not link.settled and not settled
        self.amqp_out += build_publish(link.channel.channel_number, exchange.encode(),
                                       key.encode(), properties, body,
                                       self.amqp.params.frame_max, mandatory)
        if not link.settled:            # its channel is in confirm mode
            link.confirm_seq += 1
            if not settled:
                link.confirms[link.confirm_seq] = delivery_id
            if mandatory:
                link.routes[link.confirm_seq] = (exchange, key)

    def _unroutable_to(self, link: Link, delivery_id, settled: bool, condition: str,
                       text: str) -> None:
        """A message on a link without a target whose ``to`` names nothing to publish to:
        rejected with the error, or (sent settled, so nothing else can tell the client)
        the link detached with it, as RabbitMQ 4."""
        log.warning("AMQP 1.0 connection %s: link '%s': %s", self.name, link.name, text)
        if settled:
            self._detach(link, condition, text)
        else:
            self._dispose(link.session, [delivery_id], f.make(
                "rejected", error=f.error(condition, text)))

    def _returned(self, link: Link, method) -> None:
        """The broker returned a publish of a RabbitMQ 4 target as unroutable: the first
        unconfirmed one to that exchange and key (returns come in publish order, each
        before its confirm, and publishes alike route alike), released when confirmed."""
        route = (method.exchange, method.routing_key)
        for seq, sent_to in link.routes.items():
            if sent_to == route and seq not in link.returned:
                link.returned.add(seq)
                return

    def _confirmed(self, link: Link, frame) -> None:
        m = frame.method
        nack = isinstance(m, pika.spec.Basic.Nack)
        ids, released = [], []
        while link.confirms:
            seq = next(iter(link.confirms))
            if seq > m.delivery_tag or (not m.multiple and seq != m.delivery_tag):
                break
            link.routes.pop(seq, None)
            if seq in link.returned and not nack:
                link.returned.discard(seq)
                released.append(link.confirms.pop(seq))
            else:
                ids.append(link.confirms.pop(seq))
        if link.session.links.get(link.handle) is not link:
            return
        if ids:
            state = f.make("rejected", error=f.error("amqp:internal-error",
                                                     "the broker refused the message")) \
                if nack else f.make("accepted")
            self._dispose(link.session, ids, state)
        if released:
            self._dispose(link.session, released, f.make("released"))

    def _fail_confirms(self, link: Link) -> None:
        if link.confirms:
            ids, link.confirms = list(link.confirms.values()), collections.OrderedDict()
            self._dispose(link.session, ids, f.make("released"))

    def _dispose(self, session: Session, ids: list, state: tuple, role: bool = True) -> None:
        """Settle deliveries ``ids`` with ``state``: one disposition per run of consecutive
        ids. ``role`` True: as the receiver (of the client's transfers)."""
        ids = sorted(ids)
        start = prev = ids[0]
        for i in ids[1:] + [None]:
            if i is not None and i == prev + 1:
                prev = i
                continue
            fields = dict(role=("boolean", role), first=("uint", start),
                          settled=("boolean", True), state=state)
            if prev != start:
                fields["last"] = ("uint", prev)
            self._send(f.frame("disposition", session.channel, **fields))
            if i is not None:
                start = prev = i

    # ------------------------------------------------------------ consuming
    async def on_flow(self, frame) -> None:
        session = self._session(frame)
        if session is None:
            return
        if frame["next_incoming_id"] is not None:
            session.remote_incoming_window = (frame["next_incoming_id"]
                                              + (frame["incoming_window"] or 0)
                                              - session.next_outgoing_id)
        else:
            session.remote_incoming_window = frame["incoming_window"] or 0
        handle = frame["handle"]
        if handle is None:
            for link in session.links.values():
                if link.role == "receiver" and link.management:
                    self._send_responses(link)
                elif link.role == "receiver":
                    self._pump(link)
            if frame["echo"]:
                self._send(f.frame("flow", session.channel, **session.flow_fields()))
            return
        link = session.links.get(handle)
        if link is None:
            self._fail("amqp:session:unattached-handle", f"flow on handle {handle}")
            return
        if link.role == "sender":               # the client's view of what it may send
            if frame["echo"]:
                self._flow(link)
            return
        count = frame["delivery_count"]
        count = 0 if count is None else count
        link.credit = max(0, count + (frame["link_credit"] or 0) - link.delivery_count)
        link.drain = bool(frame["drain"])
        if link.management:
            self._send_responses(link)
            if link.drain and link.credit:
                self._drained(link)
            elif frame["echo"]:
                self._flow(link)
            return
        if link.unsettled + link.credit > link.window:
            await self._widen(link)
        self._pump(link)
        if frame["echo"] and not link.drain:
            self._flow(link)

    async def _widen(self, link: Link) -> None:
        """The client may hold more unsettled deliveries than the link's consumer may have
        unacked: its prefetch grows (doubling, to at most ``MAX_WINDOW``), so a client that
        settles in batches of its credit is never left waiting (the broker raises an AMQP
        1.0 link's prefetch for its consumer as it is: ``Channel._widen``)."""
        window = min(MAX_WINDOW, max(2 * link.window, link.unsettled + link.credit))
        if window <= link.window:
            return
        link.window = window
        try:
            await self._ask(link.channel, lambda cb: link.channel.basic_qos(
                prefetch_count=window, callback=cb))
        except ChannelGone:
            pass                        # _channel_lost detached it

    def _deliver(self, m: Delivery) -> None:
        """A delivery of a link's channel, read raw (``delivery_tap.py``)."""
        if self.closed:
            return
        channel = self.amqp._channels.get(m.channel) if self.amqp is not None else None
        link = self.by_channel.get(channel)
        if link is None or link.closing:
            return                              # its channel closes: requeued
        if link.message_filter is not None and not link.message_filter.accepts(
                *message.filter_fields(m.properties, m.routing_key)):
            # filtered out (RabbitMQ 4.1's property filters, 4.2's SQL): settled here, never
            # sent
            self.amqp_out.append(build_confirm(m.channel, m.delivery_tag, False))
            self._flush_amqp()
            return
        link.pending.append(m)
        self._pump(link)
        self._flush_amqp()

    def _pump(self, link: Link) -> None:
        """Send what waits while the link has credit and the session a window; a draining
        link with nothing left uses its credit up and says so."""
        self._send_pending(link)
        if link.drain and link.credit > 0 and not link.pending and not link.draining:
            link.draining = True
            self.loop.create_task(self._end_drain(link))

    def _send_pending(self, link: Link) -> None:
        if link.held:
            return
        session = link.session
        while link.pending and link.credit > 0 and session.remote_incoming_window > 0:
            self._transfer(link, link.pending.popleft())

    async def _end_drain(self, link: Link) -> None:
        """A draining link whose client has credit left and nothing waits here: what the
        queue's host already sent (a message published before the drain, still on its way
        from a worker process) arrives before the answer to a request the host answers, so
        ask one (a passive declare: the host counts the queue); then, if still nothing
        waits, the credit is used up and the client told."""
        try:
            await self._ask(link.channel, lambda cb: link.channel.queue_declare(
                link.queue, passive=True, callback=cb))
        except (ChannelGone, Ended):
            return                      # the link or the connection is going
        finally:
            link.draining = False
        self._send_pending(link)        # what arrived meanwhile
        if link.drain and link.credit > 0 and not link.pending and not link.closing:
            self._drained(link)
        self._flush_amqp()

    def _drained(self, link: Link) -> None:
        """A draining link has nothing to send: its credit is used up, and the client
        told."""
        link.delivery_count += link.credit
        link.credit = 0
        link.drain = False
        self._flow(link, drain=True)

    def _transfer(self, link: Link, m: Delivery) -> None:
        session = link.session
        data = message.outgoing(m.properties, m.body, m.routing_key, m.redelivered)
        delivery_id = self._send_transfer(link, _U64.pack(m.delivery_tag), data)
        if link.settled:
            if not link.no_ack:         # (a direct reply-to consumer acks nothing)
                self.amqp_out.append(build_confirm(link.channel.channel_number,
                                                   m.delivery_tag, False))
        else:       # the properties: what a ``modified`` outcome's annotations merge into
            session.unsettled[delivery_id] = (link, m.delivery_tag, m.properties)
            link.unsettled += 1

    def _send_transfer(self, link: Link, tag: bytes, data: bytes) -> int:
        """A message on a link (one transfer, or frames of at most the client's
        max-frame-size), with the session's next delivery id (returned), a unit of the
        link's credit and of the session's window."""
        session = link.session
        delivery_id = session.next_outgoing_id
        session.next_outgoing_id = (delivery_id + 1) & 0xFFFFFFFF
        session.remote_incoming_window -= 1
        link.credit -= 1
        link.delivery_count += 1
        room = self.remote_max_frame - 8
        head = f.transfer_head(session.channel, link.handle, delivery_id, tag, link.settled,
                               False)
        if len(head) + len(data) <= room:
            self._send(f.with_head(session.channel, head + data))
            return delivery_id
        pos = 0
        while pos < len(data):
            more_head = f.transfer_head(session.channel, link.handle, delivery_id, tag,
                                        link.settled, True)
            chunk = room - len(more_head)
            more = pos + chunk < len(data)
            if not more:
                more_head = head
            self._send(f.with_head(session.channel, more_head + data[pos:pos + chunk]))
            pos += chunk
        return delivery_id

    async def on_disposition(self, frame) -> None:
        session = self._session(frame)
        if session is None:
            return
        if not frame["role"]:
            return          # the client settles what it sent: we settled it already
        first = frame["first"]
        last = frame["last"] if frame["last"] is not None else first
        state = f.composite(frame.fields["state"])
        kind = state[0] if state is not None else "accepted"
        annotations = None
        if kind == "modified":
            annotations = _modified_annotations(state[1]["message_annotations"])
            if isinstance(annotations, str):
                self._fail("amqp:invalid-field", annotations)
                return
        settled = []
        for delivery_id in range(first, last + 1):
            entry = session.unsettled.pop(delivery_id, None)
            if entry is None:
                continue
            link, tag, properties = entry
            link.unsettled -= 1
            settled.append(delivery_id)
            ch = link.channel.channel_number
            if kind == "accepted":
                self.amqp_out.append(build_confirm(ch, tag, False))
                continue
            # RabbitMQ 4: rejected dead-letters; modified too with undeliverable-here, else
            # it requeues, as released does; modified's annotations go with the message
            requeue = kind == "released" or (
                kind == "modified" and not state[1]["undeliverable_here"][1])
            modified = message.modified(properties, annotations) if annotations else None
            if modified is not None and len(modified) + 32 > self.amqp.params.frame_max:
                log.warning("AMQP 1.0 connection %s: a modified outcome's annotations make "
                            "properties of %d bytes, more than a frame holds; the message "
                            "goes on without them", self.name, len(modified))
                modified = None
            if modified is not None:
                self.amqp_out.append(build_modify(ch, tag, requeue, modified))
            else:
                self._flush_amqp()
                link.channel.basic_reject(tag, requeue=requeue)
        if settled and not frame["settled"]:
            self._dispose(session, settled, frame.fields["state"] if state else
                          f.make("accepted"), role=False)
        for link in session.links.values():
            if link.role == "receiver" and link.pending:
                self._pump(link)

    # ------------------------------------------------------------ the end
    def _amqp_closed(self, reason) -> None:
        if not self.closed and self.phase == "opened":
            log.warning("AMQP 1.0 connection %s: the broker closed its AMQP connection: %s",
                        self.name, reason)
            code = getattr(reason, "reply_code", 0)
            text = getattr(reason, "reply_text", str(reason))
            if code == 320:             # closed by an operator: RabbitMQ 4's words
                text = f'Connection forced: "{text.removeprefix("CONNECTION_FORCED - ")}"'
            self._send(f.frame("close", error=f.error(
                _CONDITIONS.get(code, "amqp:internal-error"), text)))
            self.phase = "closing"
            self.loop.call_soon(self.close)


def _modified_annotations(value: tuple) -> list | str | None:
    """A ``modified`` outcome's message annotations: None when there are none, the
    (key, value) pairs, or why they cannot be taken. Keys must be symbols beginning with
    ``x-`` (AMQP 1.0 §3.2.10 reserves the others), as RabbitMQ 4 requires."""
    if value is None or value[0] == "null":
        return None
    if value[0] != "map":
        return f"a modified outcome's message-annotations must be a map, not {value[0]}"
    for key, _ in value[1]:
        if key[0] != "symbol" or not key[1].startswith("x-"):
            return (f"message annotation key {key[1]!r} of a modified outcome: only "
                    f"symbols beginning with 'x-' may be set")
    return value[1] or None
