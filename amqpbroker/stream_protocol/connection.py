"""A client of RabbitMQ's stream protocol (the rabbitmq_stream plugin; rstream, the Java and
Go stream clients), carried over AMQP as the MQTT and STOMP clients are (``adapter.py``).

The handshake is the plugin's: PeerProperties, SaslHandshake (PLAIN, AMQPLAIN),
SaslAuthenticate (checked against the broker's users here, so a refusal is answered with the
protocol's codes: 0x08, 0x0b for ``guest`` away from loopback), then the server's Tune, the
client's Tune, and Open, which picks the vhost and logs in over AMQP as the client's user:
permissions, limits, alarms, every process layout and the cluster are the broker's own.

What each command becomes:

* **Create / Delete**: ``queue.declare`` of a durable ``x-queue-type: stream`` queue (the
  plugin's arguments ``max-length-bytes``, ``max-age``, ``stream-max-segment-size-bytes``,
  ``initial-cluster-size``, ``queue-leader-locator`` as ``x-`` arguments) / ``queue.delete``,
  each on a channel of its own, so a refusal closes only that channel.
* **DeclarePublisher / Publish**: one channel in confirm mode publishes every publisher's
  messages to the default exchange, ``mandatory`` (a stream that went away is returned, and
  its publishing ids are answered with PublishError 0x06); a basic.ack becomes PublishConfirm
  of the publishing ids it covers. A publisher with a reference publishes with headers
  ``x-producer-id`` (the reference) and ``x-sequence`` (the publishing id), so the stream
  de-duplicates as RabbitMQ does (``worker/dedup.py``, ``PUB_LATEST``: an id not above the
  reference's highest is confirmed and not stored again); QueryPublisherSequence asks the
  stream for that highest id. A sub-entry (``sub_entry.py``) is published as its messages,
  under its one publishing id.
* **Subscribe / Credit / Unsubscribe**: a channel per subscription consumes the stream with
  ``x-stream-offset`` (first, last, next, an offset, a timestamp) and a prefetch; the
  deliveries it gets are sent as osiris chunks of consecutive offsets, one chunk per credit
  the client gave, and acked once sent (a stream keeps them: the ack only moves the
  prefetch window). Where the session of that AMQP connection is in this process (one
  process, the default below 4 CPUs), it hands the stream's records over as they are
  (``deliver_stream_run``; ``frontend/adapters.py``, "Direct deliveries") instead of
  writing ``basic.deliver`` frames for this adapter to read back off the socket: a
  consumer here reads 2-2.5x as many messages a second. Subscription properties
  ``filter.*`` and ``match-unfiltered`` are the consumer's ``x-stream-filter`` and
  ``x-stream-match-unfiltered`` (RabbitMQ 3.13's filtering, with Publish version 2's
  filter values as ``x-stream-filter-value``).
* **Single active consumer** (RabbitMQ 3.11): subscriptions named alike with
  ``single-active-consumer`` form a group (``listener.SingleActiveConsumers``); only the
  active one has an AMQP consumer, started where the client answers ConsumerUpdate.
* **StoreOffset / QueryOffset**: the offset is kept by the stream itself, in its
  group-offsets log, as the commit of a consumer group named by the reference
  (``contract.TrackOffset``): ``amqpbroker ctl groups show REFERENCE`` shows it.
* **Metadata**: this node is the leader of every stream (any node serves any stream: the
  cluster forwards to the leader), with the advertised host and port of ``Open``'s answer.
* **CreateSuperStream / DeleteSuperStream** (3.13): RabbitMQ's layout, a direct exchange
  bound to the partition streams with ``x-stream-partition-order``.
* **Route / Partitions**: a super stream is a topic (an ``x-partitioned`` exchange, whose
  partition queues are ``NAME-0`` ...) or, as RabbitMQ makes one, an exchange whose bindings
  to streams carry ``x-stream-partition-order``.

Messages: the stream protocol carries AMQP 1.0 messages; ``amqp10.py`` converts them to AMQP
0-9-1 properties and body on the way in and back on the way out, as RabbitMQ 3.10 does. Bytes
that are not an AMQP 1.0 message (rstream's ``send(b"...")``) are stored as the body with
header ``x-stream-raw`` and given back to a stream consumer exactly as they were sent.
"""
from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import time
from itertools import count
from operator import attrgetter

import pika
from pamqp.commands import Basic

from .. import contract as c
from .. import errors
from ..adapter import AdapterConnection, ChannelGone, Ended, refusal, tapped
from ..frontend.session import NODE, is_loopback, server_properties
from ..frontend.tls import certificate_login
from ..protocol import properties as props_mod
from ..protocol.fastpath import build_confirm, build_publish, build_publishes
from . import amqp10
from . import frames as f
from . import sub_entry
from .sub_entry import SubEntry

try:                     # built by setup.py; stored_amqp10 and stream_message_py below are
    from ._amqp10 import stream_message, to_stored      # the reference
except ImportError:      # not built
    stream_message = to_stored = None

log = logging.getLogger("amqpbroker.stream")

HANDSHAKE_TIMEOUT = 10.0            # RabbitMQ's stream.handshake_timeout
REFUSED_LINGER = 0.1                # seconds a refused connection stays open after the answer
CONSUMER_UPDATE_TIMEOUT = 60.0      # a client's answer to ConsumerUpdate (RabbitMQ's 60 s)
FRAME_MAX = 1048576                 # what the server proposes (RabbitMQ's default, 1 MiB)
HEARTBEAT = 60                      # seconds (RabbitMQ's default)
PREFETCH = 2000                     # unacked deliveries per subscription's channel
CHUNK_MESSAGES = 1000               # messages per chunk at most
MECHANISMS = ("PLAIN", "AMQPLAIN")
RAW = "x-stream-raw"                # header of a message sent as bytes that are not AMQP 1.0
# an AMQP 1.0 message's bytes before and after its body (the 0-9-1 body), so a stream
# consumer gets it back byte for byte, as RabbitMQ (which stores it as sent) gives it;
# other clients' deliveries go without them (``properties.with_stream_offset``)
PREFIX, SUFFIX = props_mod.STREAM_AROUND
CONTINUES = "x-sequence-continues"   # a sub-entry's message before its last (dedup.py)
HIDDEN = (RAW, "x-stream-offset", "x-stream-timestamp", "x-producer-id", "x-sequence",
          CONTINUES, "x-stream-filter-value", PREFIX, SUFFIX)
STREAM_ARGUMENTS = {"max-length-bytes": int, "max-age": str,
                    "stream-max-segment-size-bytes": int, "initial-cluster-size": int,
                    "queue-leader-locator": str}
# the commands this server takes, and their versions (ExchangeCommandVersions)
VERSIONS = [(k, 1, 2 if k == f.PUBLISH else 1)
            for k in (*range(f.DECLARE_PUBLISHER, f.PARTITIONS + 1), f.CONSUMER_UPDATE,
                      f.EXCHANGE_COMMAND_VERSIONS, f.CREATE_SUPER_STREAM,
                      f.DELETE_SUPER_STREAM)]
PRE_OPEN = ("peer_properties", "sasl_handshake", "sasl_authenticate", "tune", "open",
            "heartbeat", "close", "close_ok")
_AMQP_CODES = {403: f.ACCESS_REFUSED, 404: f.STREAM_DOES_NOT_EXIST, 405: f.PRECONDITION_FAILED,
               406: f.PRECONDITION_FAILED}


class Publisher:
    __slots__ = ("pid", "stream", "key", "reference", "raw_properties", "published",
                 "confirmed", "errored")

    def __init__(self, pid: int, stream: str, reference: str | None):
        self.pid = pid
        self.stream = stream
        self.key = stream.encode()
        self.reference = reference or None
        self.published = self.confirmed = self.errored = 0     # /api/stream/publishers
        # the properties of its raw messages, but for a reference's x-sequence (appended)
        headers = {RAW: True}
        if self.reference is not None:
            headers["x-producer-id"] = self.reference
        self.raw_properties = props_mod.encode(Basic.Properties(headers=headers))


class Subscription:
    __slots__ = ("sid", "stream", "credit", "arguments", "channel", "pending", "open",
                 "since", "group", "partition", "active", "properties", "consumed", "offset")

    def __init__(self, sid: int, stream: str, credit: int, arguments: dict,
                 since: int | None = None, properties: dict | None = None):
        self.sid = sid
        self.stream = stream
        self.credit = credit
        self.properties = properties or {}  # as the client gave them (/api/stream/consumers)
        self.consumed = 0                   # messages sent
        self.offset = 0                     # the last one's offset
        self.arguments = arguments      # the consumer's, but x-stream-offset (filters)
        # a single active consumer's group (vhost, stream, name), its partition's index in
        # a super stream, and whether it is the group's active one now
        self.group: tuple | None = None
        self.partition: int | None = None
        self.active = False
        # a timestamp subscription's time (ms): AMQP's x-stream-offset timestamp has whole
        # seconds, so what was stored earlier in that second is skipped here
        self.since = since
        self.channel = None
        self.pending: collections.deque = collections.deque()   # deliveries not yet sent
        self.open = False               # answered: its chunks may go


class StreamConnection(AdapterConnection):
    protocol = "stream"
    log = log
    direct_deliveries = True            # deliver_stream_run, from a session of this process

    def __init__(self, server):
        super().__init__(server)
        self.splitter = f.Splitter()
        self.step = "handshake"         # then "opened", or "refused" (closing)
        self.user = None
        self.password = ""
        self.client_properties: dict = {}
        self.vhost = ""
        self.frame_max = FRAME_MAX
        self.heartbeat = 0
        self.publishers: dict[int, Publisher] = {}
        self.subscriptions: dict[int, Subscription] = {}
        self.by_channel: dict[int, Subscription] = {}   # AMQP channel number -> consuming
        self.pub_channel = None
        self.publish_seq = 0
        self.unconfirmed: collections.OrderedDict = collections.OrderedDict()
        self.returned: set[int] = set()
        # (publisher, publishing id) -> the code a sub-entry's earlier message failed with
        self.failed_parts: dict[tuple, int] = {}
        self.next_corr = 0
        self.updates: dict = {}         # ConsumerUpdate correlation id -> its answer
        self.mechanism = ""
        self.connected_at = int(time.time() * 1000)

    # ------------------------------------------------------------ transport
    def connection_made(self, transport) -> None:
        self._accepted(transport)
        self.timers.append(self.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout))
        log.info("accepting stream connection %s", self.name)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.step == "refused":
            return
        self.heard = self.loop.time()
        try:
            items = [f.parse(*frame) for frame in self.splitter.feed(data)]
        except f.FrameError as exc:
            log.error("stream connection %s: %s; closing it", self.name, exc)
            self.close_with(exc.code, str(exc))
            return
        if any(item[0] == "consumer_update_ok" for item in items):
            # an answer a ConsumerUpdate task waits for: not behind the commands
            for _, corr, _code, spec in [i for i in items if i[0] == "consumer_update_ok"]:
                waiting = self.updates.get(corr)
                if waiting is not None and not waiting.done():
                    waiting.set_result(spec)
            items = [i for i in items if i[0] != "consumer_update_ok"]
        self._received(items)

    def close(self) -> None:
        if not self.closed:             # its single active consumers leave their groups
            for sub in list(self.subscriptions.values()):
                if sub.group is not None:
                    self.server.single_active.leave(self, sub)
                    sub.group = None
        super().close()

    def send(self, data: bytes) -> None:
        """A frame to the client, written with the others of this loop turn."""
        if not (self.closed or self.lost):
            self._queue_out(data)

    def close_with(self, code: int, reason: str) -> None:
        """Tell the client why (a Close request), then close."""
        self.next_corr += 1
        self._refuse(f.close(self.next_corr, code, reason))

    def _handshake_timeout(self) -> None:
        if self.step != "opened" and not self.closed:
            log.error("closing stream connection %s (handshake timeout)", self.name)
            self.close()

    def _beat(self) -> None:
        """Every heartbeat interval: one heartbeat out; a client silent for two is gone."""
        if self.closed:
            return
        if self.loop.time() - self.heard > 2 * self.heartbeat:
            log.error("stream connection %s: missed heartbeats from client, timeout: %ds",
                      self.name, self.heartbeat)
            self.close()
            return
        self.send(f.heartbeat())
        self.timers.append(self.loop.call_later(self.heartbeat, self._beat))

    # ------------------------------------------------------------ commands, in order
    def _batched(self, item) -> bool:
        return item[0] in ("publish", "credit")

    def _publishes(self, item) -> bool:
        return item[0] == "publish"

    def _ended(self, exc: Ended) -> None:
        self.close()

    def _client_gone(self) -> None:
        self.close()

    def _amqp_closed(self, reason) -> None:
        if not self.closed and self.step == "opened":
            if getattr(reason, "reply_code", None) == 320:      # CONNECTION_FORCED
                # closed on request (the management API, ctl close_connection, its vhost
                # or user deleted): RabbitMQ's stream reader stops and closes the socket
                # without a Close frame, and clients (rstream) tell their close handler
                # once, with every stream of the connection
                log.info("forcing stream connection %s closing: %s", self.name,
                         getattr(reason, "reply_text", reason))
                self.close()
                return
            log.error("stream connection %s: the broker closed its AMQP connection: %s",
                      self.name, reason)
            self.close_with(f.INTERNAL_ERROR, str(reason))

    async def _handle(self, item) -> None:
        name = item[0]
        if self.step != "opened" and name not in PRE_OPEN:
            log.warning("stream connection %s: %s before the connection is open; closing",
                        self.name, name)
            self.close()
            return
        # (name, correlation id, fields...): a command without one is given its fields only
        await getattr(self, "on_" + name)(*(item[2:] if item[1] is None else item[1:]))

    def respond(self, key: int, corr: int, code: int = f.OK) -> None:
        self.send(f.response(key, corr, code))

    # ------------------------------------------------------------ handshake
    async def on_peer_properties(self, corr, props) -> None:
        self.client_properties = props
        shown = server_properties(self.server.broker.cluster_name)
        shown.pop("capabilities", None)
        self.send(f.peer_properties_ok(corr, {k: str(v) for k, v in shown.items()}))

    def _mechanisms(self) -> tuple:
        """PLAIN and AMQPLAIN; on TLS with a client certificate, EXTERNAL too (RabbitMQ's
        rabbitmq_auth_mechanism_ssl, which the stream plugin offers when enabled)."""
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.getpeercert():
            return (*MECHANISMS, "EXTERNAL")
        return MECHANISMS

    def _refuse(self, answer: bytes) -> None:
        """An answer that ends the connection (a refused login or vhost, a Close for bad
        input): sent, then the connection closes.
        On TLS a close right after the write can lose the answer (asyncio's SSL transport,
        seen in tests/integration/test_tls.py), so it waits ``REFUSED_LINGER``, reading and
        dropping what comes (closing with unread bytes would reset the connection)."""
        self.send(answer)
        self._flush()
        self.step = "refused"           # what the client sends meanwhile is dropped
        self.timers.append(self.loop.call_later(REFUSED_LINGER, self.close))

    async def on_sasl_handshake(self, corr) -> None:
        self.send(f.sasl_handshake_ok(corr, self._mechanisms()))

    async def on_sasl_authenticate(self, corr, mechanism, data) -> None:
        if mechanism not in self._mechanisms():
            self.respond(f.SASL_AUTHENTICATE, corr, f.SASL_MECHANISM_NOT_SUPPORTED)
            return
        users = self.server.broker.users
        certificate = None
        if mechanism == "EXTERNAL":
            certificate = certificate_login(self.transport.get_extra_info("ssl_object"),
                                            self.cfg.tls_login_from)
        try:
            user = users.authenticate(mechanism, data, certificate)
        except errors.AMQPError as exc:
            log.warning("stream connection %s: %s", self.name,
                        getattr(exc, "login_failed", str(exc)))
            self._refuse(f.response(f.SASL_AUTHENTICATE, corr, f.AUTHENTICATION_FAILURE))
            return
        except Exception as exc:                            # noqa: BLE001 - a backend's
            log.warning("stream connection %s: login failed: %s", self.name, exc)
            self._refuse(f.response(f.SASL_AUTHENTICATE, corr, f.AUTHENTICATION_FAILURE))
            return
        if user.name in self.cfg.loopback_users and not is_loopback(self.peer):
            log.warning("stream connection %s: user '%s' can only connect via localhost",
                        self.name, user.name)
            self._refuse(f.response(f.SASL_AUTHENTICATE, corr,
                                    f.SASL_AUTHENTICATION_FAILURE_LOOPBACK))
            return
        self.user = user
        self.mechanism = mechanism
        if mechanism == "PLAIN":
            self.password = data.split(b"\x00")[2].decode(errors="replace")
        else:
            self.password = self.server.broker.users.internal_secret
        self.respond(f.SASL_AUTHENTICATE, corr)
        self.send(f.tune(FRAME_MAX, HEARTBEAT))

    async def on_tune(self, frame_max, heartbeat) -> None:
        self.frame_max = frame_max or FRAME_MAX
        # what this server sends stays within the tuned frame_max; what it takes does not
        # have to: RabbitMQ never refuses a larger frame, and rstream's Producer.send
        # batches all it was given in a few ms into one Publish, whatever its size
        self.splitter.frame_max = max(frame_max, f.INBOUND_FRAME_MAX)
        self.heartbeat = heartbeat
        if heartbeat:
            self.timers.append(self.loop.call_later(heartbeat, self._beat))

    async def on_open(self, corr, vhost) -> None:
        users = self.server.broker.users
        if self.user is None or vhost is None or not users.can_access_vhost(self.user, vhost) \
                or vhost not in self.server.broker.vhosts:
            log.warning("stream connection %s: access to vhost '%s' refused for user '%s'",
                        self.name, vhost, getattr(self.user, "name", "?"))
            self._refuse(f.open_failed(corr, f.VHOST_ACCESS_FAILURE))
            return
        shown = {"product": self.client_properties.get("product", "stream client"),
                 "connection_name": self.client_properties.get("connection_name", "")}
        result = await self._open_amqp(vhost, self.user.name, self.password, "stream", shown)
        if self.amqp is None:
            code = f.VHOST_ACCESS_FAILURE if refusal(result) == "vhost" \
                else f.AUTHENTICATION_FAILURE
            log.warning("stream connection %s: login over AMQP refused: %s", self.name, result)
            self._refuse(f.open_failed(corr, code))
            return
        self.vhost = vhost
        host, port = self.advertised()
        self.send(f.open_ok(corr, {"advertised_host": host, "advertised_port": str(port)}))
        self.step = "opened"
        log.info("stream connection %s: user '%s' authenticated and granted access to vhost "
                 "'%s'", self.name, self.user.name, vhost)

    def advertised(self) -> tuple[str, int]:
        """The host and port clients are told to connect to (``--stream-advertised-host``,
        ``--stream-advertised-port``; by default the address this client reached)."""
        local = self.addresses[1]
        return (self.cfg.stream_advertised_host or local[0],
                self.cfg.stream_advertised_port or local[1])

    def describe(self) -> dict:
        """This connection as RabbitMQ's rabbitmq_stream_management shows it."""
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport else None
        (peer_host, peer_port), (host, port) = self.addresses
        return {"name": self.name, "node": NODE, "vhost": self.vhost,
                "user": getattr(self.user, "name", None), "host": host, "port": port,
                "peer_host": peer_host, "peer_port": peer_port, "protocol": "stream",
                "channel_max": 0, "frame_max": self.frame_max, "timeout": self.heartbeat,
                "client_properties": self.client_properties,
                "user_provided_name": self.client_properties.get("connection_name"),
                "auth_mechanism": self.mechanism, "connected_at": self.connected_at,
                "ssl": ssl_object is not None,
                "user_who_performed_action": getattr(self.user, "name", None)}

    def publishers_json(self) -> list[dict]:
        """Its publishers as ``/api/stream/publishers`` shows them."""
        return [{"connection_details": self.brief(), "publisher_id": p.pid,
                 "queue": {"name": p.stream, "vhost": self.vhost},
                 "reference": p.reference or "", "published": p.published,
                 "confirmed": p.confirmed, "errored": p.errored}
                for p in sorted(self.publishers.values(), key=lambda p: p.pid)]

    async def consumers_json(self) -> list[dict]:
        """Its subscriptions as ``/api/stream/consumers`` shows them (the lag asks each
        stream's end)."""
        out = []
        for sub in sorted(self.subscriptions.values(), key=lambda s: s.sid):
            ref = self._stream(sub.stream)
            end = await self._end_offset(ref) if ref is not None else 0
            out.append({"connection_details": self.brief(), "subscription_id": sub.sid,
                        "queue": {"name": sub.stream, "vhost": self.vhost},
                        "credits": sub.credit, "consumed": sub.consumed,
                        "offset": sub.offset,
                        "offset_lag": max(end - 1 - sub.offset, 0) if sub.consumed else end,
                        "properties": sub.properties})
        return out

    def brief(self) -> dict:
        """``connection_details`` of its publishers and consumers."""
        (peer_host, peer_port), _ = self.addresses
        return {"name": self.name, "node": NODE, "peer_host": peer_host,
                "peer_port": peer_port, "user": getattr(self.user, "name", None)}

    async def on_heartbeat(self) -> None:
        pass

    async def on_close(self, corr, code, reason) -> None:
        log.info("stream connection %s: closed by the client (%s, %s)", self.name, code,
                 reason)
        self.respond(f.CLOSE, corr)
        self.close()

    async def on_close_ok(self, corr, code) -> None:
        self.close()

    # ------------------------------------------------------------ lookups
    def _queue(self, name: str | None):
        vh = self.server.broker.vhosts.get(self.vhost)
        return vh.queues.get(name) if vh is not None and name is not None else None

    def _stream(self, name: str | None):
        """The stream named, or None (no queue, or one of another type)."""
        q = self._queue(name)
        return q if q is not None and q.args.queue_type == "stream" else None

    def _allowed(self, permission: str, name: str | None, resource: str = "queue") -> bool:
        try:
            self.server.broker.users.check(self.user, self.vhost, permission, resource,
                                           name or "")
        except errors.AccessRefused:
            return False
        return True

    # ------------------------------------------------------------ AMQP channels
    async def _once(self, start) -> int:
        """One method on a channel of its own, closed after: OK, or the code that answers
        the broker's refusal."""
        try:
            channel = await self._channel()
        except Ended:
            return f.INTERNAL_ERROR
        try:
            await self._ask(channel, lambda cb: start(channel, cb))
        except ChannelGone as exc:
            log.warning("stream connection %s: %s", self.name, exc)
            return _AMQP_CODES.get(exc.code, f.INTERNAL_ERROR)
        if channel.is_open:
            channel.close()
        return f.OK

    def _channel_lost(self, channel, code: int, text: str) -> None:
        if channel is self.pub_channel:
            self.pub_channel = None
            failed = _AMQP_CODES.get(code, f.INTERNAL_ERROR)
            if not self.closed:
                log.warning("stream connection %s: publishing channel closed: %d %s",
                            self.name, code, text)
            self._settle(list(self.unconfirmed), failed)
            return
        # the whole AMQP connection going (a forced close): the connection closes next,
        # with no word per stream, as RabbitMQ's
        connection_gone = self.amqp is None or not self.amqp.is_open
        for sub in list(self.subscriptions.values()):
            if sub.channel is channel and sub.open:
                self._forget_subscription(sub)
                if not connection_gone:
                    log.warning("stream connection %s: subscription %d closed: %d %s",
                                self.name, sub.sid, code, text)
                    self.send(f.metadata_update(f.STREAM_NOT_AVAILABLE, sub.stream))

    # ------------------------------------------------------------ streams
    async def on_create(self, corr, stream, arguments) -> None:
        code = await self._create(stream, arguments)
        self.respond(f.CREATE, corr, code)

    async def _create(self, stream, arguments) -> int:
        if not stream or len(stream.encode()) > 255 or stream.startswith("amq."):
            return f.PRECONDITION_FAILED
        if not self._allowed("configure", stream):
            return f.ACCESS_REFUSED
        args = {"x-queue-type": "stream"}
        for key, value in arguments.items():
            kind = STREAM_ARGUMENTS.get(key)
            if kind is None:
                continue                            # RabbitMQ ignores what it does not know
            try:
                args["x-" + key] = kind(value)
            except (TypeError, ValueError):
                log.warning("stream connection %s: invalid stream argument %s=%r",
                            self.name, key, value)
                return f.PRECONDITION_FAILED
        existing = self._queue(stream)
        if existing is not None:        # RabbitMQ's: the same stream again is 0x05; a queue
            return f.STREAM_ALREADY_EXISTS if existing.args.queue_type == "stream" and \
                existing.arguments == args else f.PRECONDITION_FAILED   # that differs, 0x11
        return await self._once(lambda ch, cb: ch.queue_declare(
            stream, durable=True, arguments=args, callback=cb))

    async def on_delete(self, corr, stream) -> None:
        if not self._allowed("configure", stream):
            code = f.ACCESS_REFUSED
        elif self._stream(stream) is None:
            code = f.STREAM_DOES_NOT_EXIST
        else:
            code = await self._once(lambda ch, cb: ch.queue_delete(stream, callback=cb))
        self.respond(f.DELETE, corr, code)
        if code == f.OK:
            self.server.stream_deleted(self.vhost, stream)

    def stream_gone(self, vhost: str, stream: str) -> None:
        """Stream ``stream`` was deleted: its publishers and subscriptions here end, and the
        client is told (MetadataUpdate 0x06), once."""
        if vhost != self.vhost or self.closed:
            return
        used = False
        for pid in [p for p, pub in self.publishers.items() if pub.stream == stream]:
            del self.publishers[pid]
            used = True
        for sub in [s for s in self.subscriptions.values() if s.stream == stream]:
            self._forget_subscription(sub)
            used = True
        if used:
            self.send(f.metadata_update(f.STREAM_NOT_AVAILABLE, stream))

    async def on_create_super_stream(self, corr, name, partitions, keys, arguments) -> None:
        """RabbitMQ 3.13's CreateSuperStream, as it makes one: a durable direct exchange,
        the partition streams, each bound with its key and ``x-stream-partition-order``;
        what was made is deleted again if a step is refused."""
        code = f.OK
        if not name or name.startswith("amq.") or len(partitions) != len(keys) \
                or not partitions or len(set(partitions)) != len(partitions):
            code = f.PRECONDITION_FAILED
        elif not self._allowed("configure", name, "exchange"):
            code = f.ACCESS_REFUSED
        elif self._exchange(name) is not None:
            code = f.STREAM_ALREADY_EXISTS
        made: list = []
        if code == f.OK:
            code = await self._once(lambda ch, cb: ch.exchange_declare(
                name, "direct", durable=True, callback=cb))
        if code == f.OK:
            made.append(("exchange", name))
            for i, (partition, key) in enumerate(zip(partitions, keys)):
                code = await self._create(partition, arguments)
                if code != f.OK:
                    break
                made.append(("stream", partition))
                code = await self._once(lambda ch, cb, p=partition, k=key, i=i: ch.queue_bind(
                    p, name, k, arguments={"x-stream-partition-order": i}, callback=cb))
                if code != f.OK:
                    break
        if code != f.OK:
            await self._undo(made)
        self.respond(f.CREATE_SUPER_STREAM, corr, code)

    async def on_delete_super_stream(self, corr, name) -> None:
        """RabbitMQ 3.13's DeleteSuperStream: its partition streams and its exchange (a topic:
        its partitions go with it)."""
        if not self._allowed("configure", name, "exchange"):
            code = f.ACCESS_REFUSED
        elif self._exchange(name) is None:
            code = f.STREAM_DOES_NOT_EXIST
        else:
            partitions = self._partitions(name) or []
            await self._undo([("exchange", name)] + [("stream", p) for p in partitions
                                                      if self._stream(p) is not None])
            for partition in partitions:
                self.server.stream_deleted(self.vhost, partition)
            code = f.OK
        self.respond(f.DELETE_SUPER_STREAM, corr, code)

    async def _undo(self, made: list) -> None:
        """Delete the exchanges and streams named, newest first (each on its own channel:
        one already gone refuses only its own)."""
        for kind, what in reversed(made):
            if kind == "exchange":
                await self._once(lambda ch, cb, x=what: ch.exchange_delete(x, callback=cb))
            else:
                await self._once(lambda ch, cb, q=what: ch.queue_delete(q, callback=cb))

    async def on_metadata(self, corr, streams) -> None:
        out = []
        for name in streams:
            if self._stream(name) is not None:
                out.append((name, f.OK, 0, []))
            else:
                out.append((name, f.STREAM_DOES_NOT_EXIST, 0xFFFF, []))
        # the brokers the answer names: none when no stream was found (RabbitMQ's)
        brokers = [(0, *self.advertised())] if any(e[1] == f.OK for e in out) else []
        self.send(f.metadata(corr, brokers, out))

    async def on_partitions(self, corr, super_stream) -> None:
        parts = self._partitions(super_stream)
        code = f.OK if parts is not None else f.STREAM_DOES_NOT_EXIST
        self.send(f.strings_response(f.PARTITIONS, corr, code, parts or []))

    async def on_route(self, corr, routing_key, super_stream) -> None:
        ex = self._exchange(super_stream)
        streams = []
        if ex is not None and getattr(ex, "type", "") == "x-partitioned":
            i = ex.partition(routing_key or "", None)
            parts = self._partitions(super_stream) or []
            if i is not None and i < len(parts):
                streams = [parts[i]]
        elif ex is not None:
            streams = sorted({_destination_name(dest) for (dest, key, _), _ in
                              ex.bindings.items() if key == routing_key
                              and _destination_name(dest) is not None})
        code = f.OK if streams else f.STREAM_DOES_NOT_EXIST
        self.send(f.strings_response(f.ROUTE, corr, code, streams))

    def _exchange(self, name: str | None):
        vh = self.server.broker.vhosts.get(self.vhost)
        return vh.exchanges.get(name) if vh is not None and name is not None else None

    def _partitions(self, super_stream: str | None) -> list | None:
        """The streams of a super stream in partition order; None if there is no such
        exchange."""
        ex = self._exchange(super_stream)
        if ex is None:
            return None
        if getattr(ex, "type", "") == "x-partitioned":
            from ..supervisor.topics import partition_name
            return [partition_name(super_stream, i) for i in range(ex.partitions)]
        ordered = {}
        for (dest, _key, _), args in ex.bindings.items():
            name = _destination_name(dest)
            if name is not None:
                order = args.get("x-stream-partition-order", 0)
                ordered.setdefault(name, order if isinstance(order, int) else 0)
        return sorted(ordered, key=lambda n: (ordered[n], n))

    async def on_exchange_command_versions(self, corr, _versions) -> None:
        self.send(f.command_versions(corr, VERSIONS))

    # ------------------------------------------------------------ publishers
    async def on_declare_publisher(self, corr, pid, reference, stream) -> None:
        if not self._allowed("write", stream):
            code = f.ACCESS_REFUSED
        elif self.blocked:
            code = f.PRECONDITION_FAILED        # RabbitMQ: blocked by a resource alarm
        elif pid in self.publishers or reference and any(
                p.reference == reference and p.stream == stream
                for p in self.publishers.values()):
            code = f.PRECONDITION_FAILED
        elif self._stream(stream) is None:
            code = f.STREAM_DOES_NOT_EXIST
        else:
            self.publishers[pid] = Publisher(pid, stream, reference)
            code = f.OK
        self.respond(f.DECLARE_PUBLISHER, corr, code)

    async def on_delete_publisher(self, corr, pid) -> None:
        code = f.OK if self.publishers.pop(pid, None) is not None \
            else f.PUBLISHER_DOES_NOT_EXIST
        self.respond(f.DELETE_PUBLISHER, corr, code)

    async def on_query_publisher_sequence(self, corr, reference, stream) -> None:
        code, value = await self._ask_stream("read", stream, c.ProducerSequence,
                                             producer=reference or "")
        self.send(f.u64_response(f.QUERY_PUBLISHER_SEQUENCE, corr, code, value or 0))

    async def on_publish(self, pid, messages) -> None:
        pub = self.publishers.get(pid)
        if pub is None:
            self.send(f.publish_error(pid, [(m[0], f.PUBLISHER_DOES_NOT_EXIST)
                                            for m in messages]))
            return
        if not self._allowed("write", pub.stream):
            self.send(f.publish_error(pid, [(m[0], f.ACCESS_REFUSED) for m in messages]))
            return
        if self.pub_channel is None:
            channel = await self._channel()
            await self._ask(channel, lambda cb: channel.confirm_delivery(
                self._confirmed, callback=cb))
            channel.add_on_return_callback(self._returned)
            self.pub_channel, self.publish_seq = channel, 0
        number = self.pub_channel.channel_number
        frame_max = self.amqp.params.frame_max
        if pub.reference is None and build_publishes is not None and all(
                filter_value is None and type(data) is bytes and not _maybe_amqp10(data)
                for _, data, filter_value in messages):
            # the usual: raw bytes, no reference, no filter -- the same properties for
            # each, every AMQP publish built in one call
            self.amqp_out.append(build_publishes(number, b"", pub.key, pub.raw_properties,
                                                 [m[1] for m in messages], frame_max, True))
            seq = self.publish_seq
            self.unconfirmed.update(zip(range(seq + 1, seq + 1 + len(messages)),
                                        ((pid, m[0], pub.stream, True) for m in messages)))
            self.publish_seq = seq + len(messages)
            pub.published += len(messages)
            return
        refused = []
        for publishing_id, data, filter_value in messages:
            if type(data) is SubEntry:
                try:
                    parts = data.messages()
                except sub_entry.Refused as exc:
                    log.warning("stream connection %s: publisher %d: publishing id %d "
                                "refused: %s", self.name, pid, publishing_id, exc)
                    refused.append((publishing_id, f.PRECONDITION_FAILED))
                    continue
            else:
                parts = (data,)
            last = len(parts) - 1
            for i, part in enumerate(parts):
                continues = i < last and pub.reference is not None
                properties, body = self._amqp_message(pub, publishing_id, part, filter_value,
                                                      continues)
                self.amqp_out += build_publish(number, b"", pub.key, properties, body,
                                               frame_max, mandatory=True)
                self.publish_seq += 1
                self.unconfirmed[self.publish_seq] = (pid, publishing_id, pub.stream, i == last)
        pub.published += len(messages)
        if refused:
            self.send(f.publish_error(pid, refused))
            pub.errored += len(refused)

    def _amqp_message(self, pub: Publisher, publishing_id: int, data: bytes,
                      filter_value: str | None, continues: bool = False) -> tuple[bytes, bytes]:
        """The AMQP 0-9-1 properties (their wire bytes) and body a stream message is stored
        as. ``continues``: a sub-entry's message before its last, which shares the
        publishing id (``x-sequence-continues``: the stream checks it for a duplicate and
        records the id with the last, ``worker/dedup.py``)."""
        if _maybe_amqp10(data):         # anything else is raw bytes, not parsed to know it
            if to_stored is not None and not continues:
                stored = to_stored(data, pub.reference, publishing_id, filter_value)
                if stored is not None:  # the usual message, converted in C
                    return stored
            stored = stored_amqp10(data, self.user.name, pub.reference, publishing_id,
                                   filter_value, continues)
            if stored is not None:
                return stored
        if filter_value is None and not continues:  # the usual raw publish
            if pub.reference is None:
                return pub.raw_properties, data
            return props_mod.with_long_header(pub.raw_properties, "x-sequence",
                                              publishing_id), data
        return _with_stream_headers({"headers": {RAW: True}}, pub.reference, publishing_id,
                                    filter_value, continues), data

    def _count(self, pid: int, what: str, n: int) -> None:
        pub = self.publishers.get(pid)
        if pub is not None:
            setattr(pub, what, getattr(pub, what) + n)

    def _returned(self, _channel, method, _properties, _body) -> None:
        """A publish the default exchange could not route (the stream is gone): its
        publishing id is answered with an error when its confirm comes."""
        for seq, (_pid, _id, stream, _last) in self.unconfirmed.items():
            if stream == method.routing_key and seq not in self.returned:
                self.returned.add(seq)
                return

    def _confirmed(self, frame) -> None:
        m = frame.method
        failed = f.INTERNAL_ERROR if isinstance(m, pika.spec.Basic.Nack) else None
        if m.multiple:
            seqs = []
            for seq in self.unconfirmed:
                if seq > m.delivery_tag:
                    break
                seqs.append(seq)
        else:
            seqs = [m.delivery_tag] if m.delivery_tag in self.unconfirmed else []
        self._settle(seqs, failed)

    def _settle(self, seqs, failed: int | None) -> None:
        confirms: dict[int, list] = {}
        refused: dict[int, list] = {}
        gone = set()
        for seq in seqs:
            pid, publishing_id, stream, last = self.unconfirmed.pop(seq)
            code = failed
            if seq in self.returned:
                self.returned.discard(seq)
                code = f.STREAM_NOT_AVAILABLE
                gone.add(stream)
            if not last:                # a sub-entry's message: the last one answers
                if code is not None:
                    self.failed_parts.setdefault((pid, publishing_id), code)
                continue
            if self.failed_parts:
                code = self.failed_parts.pop((pid, publishing_id), code)
            if code is not None:
                refused.setdefault(pid, []).append((publishing_id, code))
            else:
                confirms.setdefault(pid, []).append(publishing_id)
        for pid, ids in confirms.items():
            self.send(f.publish_confirm(pid, ids))
            self._count(pid, "confirmed", len(ids))
        for pid, errs in refused.items():
            self.send(f.publish_error(pid, errs))
            self._count(pid, "errored", len(errs))
        for stream in gone:
            self.stream_gone(self.vhost, stream)

    # ------------------------------------------------------------ offsets
    async def _ask_stream(self, permission: str, stream, cls, **fields) -> tuple:
        """(code, answer) of request ``cls`` to the stream's partition host."""
        if not self._allowed(permission, stream):
            return f.ACCESS_REFUSED, None
        ref = self._stream(stream)
        if ref is None or ref.qid is None:
            return f.STREAM_DOES_NOT_EXIST, None
        try:
            return f.OK, await ref.client.request(cls, qid=ref.qid, **fields)
        except errors.AMQPError as exc:
            log.warning("stream connection %s: %s on stream '%s': %s", self.name,
                        cls.__name__, stream, exc)
            return f.STREAM_NOT_AVAILABLE, None

    async def on_store_offset(self, reference, stream, offset) -> None:
        code, _ = await self._ask_stream("write", stream, c.TrackOffset,
                                         reference=reference or "", offset=offset)
        if code != f.OK:                # no answer in this protocol: logged (RabbitMQ's)
            log.warning("stream connection %s: offset of '%s' on stream '%s' not stored "
                        "(code %d)", self.name, reference, stream, code)

    async def on_query_offset(self, corr, reference, stream) -> None:
        code, value = await self._ask_stream("read", stream, c.TrackedOffset,
                                             reference=reference or "")
        if code == f.OK and value is None:
            code = f.NO_OFFSET
        self.send(f.u64_response(f.QUERY_OFFSET, corr, code, value or 0))

    # ------------------------------------------------------------ subscriptions
    async def on_subscribe(self, corr, sid, stream, spec, credit, properties) -> None:
        code = await self._subscribe(sid, stream, spec, credit, properties)
        self.respond(f.SUBSCRIBE, corr, code)
        sub = self.subscriptions.get(sid)
        if code == f.OK and sub is not None:
            sub.open = True
            if sub.group is not None:
                self.server.single_active.join(self, sub)
            self._send_chunks(sub)

    async def _subscribe(self, sid, stream, spec, credit, properties) -> int:
        if sid in self.subscriptions:
            return f.SUBSCRIPTION_ID_ALREADY_EXISTS
        if not self._allowed("read", stream):
            return f.ACCESS_REFUSED
        ref = self._stream(stream)
        if ref is None:
            return f.STREAM_DOES_NOT_EXIST
        single = properties.get("single-active-consumer") == "true"
        if single and not properties.get("name"):
            return f.PRECONDITION_FAILED    # RabbitMQ's: a single active consumer is named
        offset = await self._offset_argument(ref, spec)
        if offset is None:
            return f.PRECONDITION_FAILED
        filters = [v for k, v in sorted(properties.items()) if k.startswith("filter.")]
        arguments = {"x-stream-filter": filters} if filters else {}
        if "match-unfiltered" in properties:
            arguments["x-stream-match-unfiltered"] = properties["match-unfiltered"] == "true"
        sub = Subscription(sid, stream, credit, arguments,
                           spec[1] if spec[0] == "timestamp" else None, properties)
        self.subscriptions[sid] = sub
        if single:                      # consumes once the group makes it active
            sub.group = (self.vhost, stream, properties["name"])
            sub.partition = self._partition_index(properties.get("super-stream"), stream)
            return f.OK
        try:
            await self._consume(sub, offset)
        except ChannelGone as exc:
            self.subscriptions.pop(sid, None)
            log.warning("stream connection %s: subscribe to '%s' refused: %s", self.name,
                        stream, exc)
            return _AMQP_CODES.get(exc.code, f.INTERNAL_ERROR)
        return f.OK

    async def _offset_argument(self, ref, spec):
        """A Subscribe's (or a ConsumerUpdate answer's) offset specification as the AMQP
        consumer's ``x-stream-offset``; None if it is not one."""
        kind, value = spec
        if kind in ("first", "last", "next"):
            return kind
        if kind == "offset":
            # past the end, RabbitMQ's reader attaches at the end (an AMQP consumer waits
            # for that offset): "next"
            return "next" if value > await self._end_offset(ref) else value
        if kind == "timestamp":
            return datetime.datetime.fromtimestamp(max(value, 0) / 1000, datetime.timezone.utc)
        return None

    async def _consume(self, sub: Subscription, offset) -> None:
        """The subscription's AMQP consumer, on a channel of its own, from ``offset``."""
        channel = sub.channel = await self._channel()
        channel.add_on_cancel_callback(lambda _frame: self._cancelled(sub))
        self.by_channel[channel.channel_number] = sub
        self.amqp.tap(channel.channel_number, lambda d: self._deliver(sub, d))
        await self._ask(channel, lambda cb: channel.basic_qos(prefetch_count=PREFETCH,
                                                              callback=cb))
        await self._ask(channel, lambda cb: channel.basic_consume(
            sub.stream, tapped, consumer_tag=f"stream-{sub.sid}",
            arguments={"x-stream-offset": offset, **sub.arguments}, callback=cb))

    # ------------------------------------------------------------ single active consumer
    def _partition_index(self, super_stream: str | None, stream: str) -> int | None:
        """Where ``stream`` is in its super stream's partitions (RabbitMQ spreads a super
        stream's partitions over a group's consumers by it); None for a plain stream."""
        if not super_stream:
            return None
        parts = self._partitions(super_stream) or []
        return parts.index(stream) if stream in parts else 0

    def activate(self, sub: Subscription) -> None:
        """The group made ``sub`` its active consumer (``listener.SingleActiveConsumers``):
        ConsumerUpdate (active) asks the client where to start, then it consumes from there.
        Not awaited by the command loop: the client's answer arrives through it."""
        sub.active = True
        self.loop.create_task(self._activated(sub))

    async def _activated(self, sub: Subscription) -> None:
        answer = await self._consumer_update(sub, True)
        if not sub.active or self.subscriptions.get(sub.sid) is not sub or self.closed:
            return
        ref = self._stream(sub.stream)
        offset = await self._offset_argument(ref, answer) if ref is not None else None
        if offset is None:
            offset = "next"             # no answer, or not an offset: RabbitMQ's default
        try:
            await self._consume(sub, offset)
        except (ChannelGone, Ended) as exc:
            log.warning("stream connection %s: subscription %d not started: %s", self.name,
                        sub.sid, exc)
            return
        if not sub.active or self.subscriptions.get(sub.sid) is not sub:
            channel, sub.channel = sub.channel, None     # deactivated while it started
            if channel is not None and channel.is_open:
                channel.close()

    def deactivate(self, sub: Subscription) -> None:
        """Another consumer of the group takes over (a super stream's partitions spread
        again): the consumer stops, the client is told (ConsumerUpdate, not active)."""
        sub.active = False
        sub.pending.clear()
        channel, sub.channel = sub.channel, None
        if channel is not None and channel.is_open:
            channel.close()
        self.loop.create_task(self._consumer_update(sub, False))

    async def _consumer_update(self, sub: Subscription, active: bool):
        """Send ConsumerUpdate and wait for the client's answer: its offset specification,
        or None (no answer within CONSUMER_UPDATE_TIMEOUT, or the connection went)."""
        self.next_corr += 1
        corr = self.next_corr
        answer = self.loop.create_future()
        self.updates[corr] = answer
        self.send(f.consumer_update(corr, sub.sid, active))
        try:
            return await asyncio.wait_for(answer, CONSUMER_UPDATE_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("stream connection %s: no answer to ConsumerUpdate of subscription "
                        "%d", self.name, sub.sid)
            return None
        finally:
            self.updates.pop(corr, None)

    async def _end_offset(self, ref) -> int:
        try:
            detail = await ref.client.request(c.Partitions, qids=[ref.qid])
        except errors.AMQPError:
            return 1 << 64              # unknown: the offset as asked
        return detail.get(ref.qid, {}).get("log_end_offset", 1 << 64)

    async def on_credit(self, sid, credit) -> None:
        sub = self.subscriptions.get(sid)
        if sub is None:
            log.warning("stream connection %s: credit for unknown subscription %d",
                        self.name, sid)
            self.send(f.credit_failed(f.SUBSCRIPTION_ID_DOES_NOT_EXIST, sid))
            return
        sub.credit = min(sub.credit + credit, 0xFFFF)
        self._send_chunks(sub)

    async def on_unsubscribe(self, corr, sid) -> None:
        sub = self.subscriptions.get(sid)
        if sub is None:
            self.respond(f.UNSUBSCRIBE, corr, f.SUBSCRIPTION_ID_DOES_NOT_EXIST)
            return
        self._forget_subscription(sub)
        self.respond(f.UNSUBSCRIBE, corr)

    def _forget_subscription(self, sub: Subscription) -> None:
        self.subscriptions.pop(sub.sid, None)
        if sub.channel is not None and self.by_channel.get(sub.channel.channel_number) is sub:
            del self.by_channel[sub.channel.channel_number]
        if sub.group is not None:
            self.server.single_active.leave(self, sub)
        sub.open = False
        sub.pending.clear()
        if sub.channel is not None and sub.channel.is_open:
            sub.channel.close()         # its consumer goes with it

    def _cancelled(self, sub: Subscription) -> None:
        """The broker cancelled the consumer (the stream was deleted)."""
        if self.subscriptions.get(sub.sid) is sub:
            self._forget_subscription(sub)
            self.send(f.metadata_update(f.STREAM_NOT_AVAILABLE, sub.stream))

    def _taking(self, sub: Subscription | None, channel_number: int) -> bool:
        """Whether deliveries on AMQP channel ``channel_number`` are for ``sub`` now: not
        when it is gone, or they come from a consumer it stopped (deactivated)."""
        return sub is not None and self.subscriptions.get(sub.sid) is sub \
            and sub.channel is not None and channel_number == sub.channel.channel_number \
            and (sub.group is None or sub.active) and not self.closed

    def _deliver(self, sub: Subscription, d) -> None:
        """A delivery read off the AMQP connection (``delivery_tap``): pending as
        (delivery tag, offset, timestamp, the message: properties, body, exchange, routing
        key)."""
        if not self._taking(sub, d.channel):
            return
        sub.pending.append((d.delivery_tag, *_place_of(d), d))
        if len(sub.pending) == 1:
            self.loop.call_soon(self._send_chunks, sub)

    def deliver_stream_run(self, channel_number: int, tag: int, offset: int,
                           records) -> None:
        """Deliveries handed over by a session of this process (``frontend/channel.py``,
        frontend/adapters.py "Direct deliveries"): the stream's ``records`` at ``offset``,
        ``offset + 1``, ..., tagged ``tag``, ``tag + 1``, ... on AMQP channel
        ``channel_number``, as ``_deliver`` would have read them off the socket (the
        session counts them unacked: the acks go back as for those)."""
        sub = self.by_channel.get(channel_number)
        if not self._taking(sub, channel_number):
            return
        if type(records) is not list:
            records = list(records)     # (a run still in its bytes: decoded once)
        pending = sub.pending
        was_empty = not pending
        pending.extend(zip(count(tag), count(offset), map(_TIMESTAMP, records), records))
        if was_empty and pending:
            self.loop.call_soon(self._send_chunks, sub)

    def _send_chunks(self, sub: Subscription) -> None:
        """As many chunks as the subscription has credit for, each of consecutive offsets;
        the deliveries sent are acked (the prefetch window moves on)."""
        if not sub.open or self.closed:
            return
        pending = sub.pending
        last_tag = self._skip_before(sub) if sub.since is not None else None
        limit = max(self.frame_max - 128, 4096)
        popleft = pending.popleft
        while sub.credit > 0 and pending:
            # a chunk: consecutive offsets stored together (one round's: a stream stamps a
            # round's messages with its time, as osiris a chunk), as many as have come,
            # within CHUNK_MESSAGES and the client's frame_max
            _, first, stamp, _ = pending[0]
            messages, size, following = [], 0, first
            while pending and len(messages) < CHUNK_MESSAGES:
                tag, offset, timestamp, d = pending[0]
                if messages and (offset != following or timestamp != stamp
                                 or size + len(d.body) + 64 > limit):
                    break
                popleft()
                # the usual put back together (or raw) in C
                data = stream_message(d.properties, d.body) if stream_message else None
                if data is None:
                    data = self._stream_message(d)
                messages.append(data)
                size += len(data) + 4
                following += 1
                last_tag = tag
            self.send(f.deliver(sub.sid, f.chunk(first, stamp, messages)))
            sub.credit -= 1
            sub.consumed += len(messages)
            sub.offset = following - 1
        if last_tag is not None and sub.channel is not None and sub.channel.is_open:
            self.amqp_out.append(build_confirm(sub.channel.channel_number, last_tag, True))
            self._flush_amqp()

    def _skip_before(self, sub: Subscription):
        """A timestamp subscription's first deliveries stored earlier in the second it
        names (AMQP's ``x-stream-offset`` timestamp has whole seconds) are dropped, up to
        the first at or after its time (then ``since`` is done with): the last tag
        dropped, or None."""
        pending, last_tag = sub.pending, None
        while pending:
            tag, _offset, timestamp, _d = pending[0]
            if not sub.since - sub.since % 1000 <= timestamp < sub.since:
                sub.since = None
                break
            pending.popleft()
            last_tag = tag
        return last_tag

    def _stream_message(self, d) -> bytes:
        """A delivery as the stream protocol gives it (``d``: a ``Delivery`` or a stored
        ``Record``) where ``_amqp10.stream_message`` did not say: an AMQP 1.0 message
        published here as it was sent, raw bytes as they were sent, any other the AMQP 1.0
        message of its AMQP 0-9-1 properties and body."""
        data = stream_message_py(d.properties, d.body)
        if data is not None:
            return data
        try:
            properties = amqp10.pika_properties(props_mod.decode(d.properties))
        except ValueError:
            log.error("stream connection %s: a delivery's properties do not decode; sent "
                      "without them", self.name)
            return amqp10.from_amqp091(pika.BasicProperties(), d.body)
        headers = properties.headers
        if headers:
            properties.headers = {k: v for k, v in headers.items() if k not in HIDDEN} \
                or None
        return amqp10.from_amqp091(properties, d.body, exchange=d.exchange,
                                   routing_key=d.routing_key)


_PLACE = ("x-stream-offset", "x-stream-timestamp")
_TIMESTAMP = attrgetter("timestamp")


def stored_amqp10(data: bytes, user: str, reference: str | None, publishing_id: int,
                  filter_value: str | None, continues: bool = False) -> tuple[bytes, bytes] | None:
    """The AMQP 0-9-1 properties (wire bytes) and body the AMQP 1.0 message ``data`` is
    stored as, published by ``user`` (another user's user-id is dropped: AMQP 0-9-1 would
    refuse it), or None if ``data`` is no AMQP 1.0 message. The reference for
    ``_amqp10.to_stored``, which takes the usual messages in C."""
    try:
        kw, body = amqp10.to_amqp091(data)
    except amqp10.NotAmqp10:
        return None
    kw["headers"] = {**(kw.get("headers") or {}), **around_body(data, body)}
    if kw.get("user_id") not in (None, user):
        del kw["user_id"]
    return _with_stream_headers(kw, reference, publishing_id, filter_value, continues), body


def _with_stream_headers(kw: dict, reference: str | None, publishing_id: int,
                         filter_value: str | None, continues: bool) -> bytes:
    """``kw``'s properties as wire bytes, with the headers of a producer reference
    (deduplication) and a filter value added."""
    if reference is not None or filter_value is not None:
        headers = dict(kw.get("headers") or {})
        if reference is not None:
            headers["x-producer-id"] = reference
            headers["x-sequence"] = publishing_id
            if continues:
                headers[CONTINUES] = True
        if filter_value is not None:
            headers["x-stream-filter-value"] = filter_value
        kw["headers"] = headers
    return amqp10.encode_properties(kw)


def stream_message_py(properties: bytes, body: bytes) -> bytes | None:
    """The message a stored one gives back as it was sent: one that came as AMQP 1.0, the
    bytes that were around its body put around it again (``around_body``); raw bytes
    (``x-stream-raw``), the body; None for any other (converted by the caller). The
    reference for ``_amqp10.stream_message``."""
    try:
        around = props_mod.headers_of(properties)
    except ValueError:
        return None
    prefix, suffix = around.get(PREFIX), around.get(SUFFIX)
    kept = isinstance(prefix, (bytes, bytearray))   # (a byte array decodes to this)
    if kept and isinstance(suffix, (bytes, bytearray)):
        return b"".join((prefix, body, suffix))
    if around.get(RAW) is True:
        return body
    return bytes(prefix) if kept else None


def around_body(data: bytes, body: bytes) -> dict:
    """The headers that give an AMQP 1.0 message back from its 0-9-1 ``body``: the bytes
    before and after the body where it lies in ``data`` (the payload of its data section,
    or its amqp-value's), else -- a body made of several sections -- ``data`` whole as the
    prefix and no suffix."""
    at = data.find(body)
    if at < 0:
        return {PREFIX: data}
    return {PREFIX: data[:at], SUFFIX: data[at + len(body):]}




def _maybe_amqp10(data: bytes) -> bool:
    """An AMQP 1.0 message starts with a described section (0x00); bytes that do not are
    raw, stored as they are without being parsed to know it."""
    return data[:1] == b"\x00"


def _place_of(d) -> tuple[int, int]:
    """A stream delivery's offset and when it was stored (ms): read in place where the
    session put them (the table's last entries), else by decoding those headers."""
    place = props_mod.stream_place(d.properties)
    if place is not None:
        return place[:2]
    headers, _ = props_mod.pick(d.properties, _PLACE)
    return headers.get("x-stream-offset", 0), headers.get("x-stream-timestamp", 0)


def _destination_name(dest) -> str | None:
    """A binding's destination queue's name (None for an exchange)."""
    if getattr(dest, "args", None) is not None and hasattr(dest, "qid"):
        return dest.name
    return None
