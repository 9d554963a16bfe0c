"""One STOMP client connection, carried by an AMQP connection and one channel to this
broker, as RabbitMQ's STOMP plugin carries each (``rabbit_stomp_processor.erl``).

CONNECT (or STOMP) negotiates the version (1.0, 1.1, 1.2) and logs in over AMQP with
``login`` / ``passcode`` (the default user when the frame has no ``login``) to the vhost of
the ``host`` header (``--stomp-vhost`` without one), so users, permissions, topic
permissions, limits and alarms are the broker's own. Then, frame by frame, in order:

* SEND publishes to its destination (``destinations.py``); its headers become the AMQP
  properties and headers. A ``receipt`` on a SEND turns the channel to confirm mode and
  the RECEIPT comes when the broker confirms the message; on other frames it comes once the
  frame is done. ``reply-to: /temp-queue/t`` is replaced by an exclusive reply queue of
  the connection, which it consumes (subscription ``/temp-queue/t``).
* SUBSCRIBE declares (or finds) the destination's queue, binds it and consumes it:
  ``ack: auto`` (no acks), ``client`` (an ACK acks every message up to it) or
  ``client-individual``; ``prefetch-count`` is the channel's prefetch. A delivery is a
  MESSAGE whose ``message-id`` (and ``ack`` in 1.2) is ``<tag>@@<session>@@<delivery
  tag>``, which ACK and NACK (``requeue``, default true) name.
* BEGIN / COMMIT / ABORT: a transaction holds its SENDs, ACKs and NACKs until COMMIT.
* A consumer cancelled by the broker (its queue deleted) is an ERROR "Server cancelled
  subscription"; the connection goes on.

Errors are RabbitMQ's: a frame that cannot be done gets an ERROR frame (``message`` header,
a text body) and the connection goes on; what closes the AMQP channel (a missing exchange,
a refused permission) is an ERROR named as RabbitMQ names the AMQP error (``not_found``,
``access_refused``) with the AMQP reply text, and the connection ends. Bytes that do not
parse end it with a log line, as RabbitMQ's reader does.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import logging
import os
from dataclasses import dataclass

import pika

from .. import __version__
from ..adapter import AdapterConnection, Ended, refusal, tapped
from ..delivery_tap import Delivery
from ..frontend.auth import check_password
from ..frontend.session import is_loopback
from ..pika_calls import answer
from ..protocol.fastpath import build_confirm, build_publish
from . import destinations as d
from .frames import Frame, FrameError, Parser, serialize

log = logging.getLogger("amqpbroker.stomp")

SUPPORTED = ("1.0", "1.1", "1.2")
LOGIN_TIMEOUT = 10.0                # s from TCP accept to CONNECT (stomp.login_timeout)
MAX_UNAUTHENTICATED = 65_536        # the largest frame before the login
DISCONNECT_TIMEOUT = 5.0            # s a DISCONNECT waits for the AMQP side to close
SERVER = f"amqpbroker/{__version__}"
# AMQP reply codes as RabbitMQ's STOMP plugin names them in an ERROR's message header
ERROR_NAMES = {311: "content_too_large", 312: "no_route", 313: "no_consumers",
               320: "connection_forced", 402: "invalid_path", 403: "access_refused",
               404: "not_found", 405: "resource_locked", 406: "precondition_failed",
               501: "frame_error", 502: "syntax_error", 503: "command_invalid",
               504: "channel_error", 505: "unexpected_frame", 506: "resource_error",
               530: "not_allowed", 540: "not_implemented", 541: "internal_error"}


class StompError(Exception):
    """A frame that cannot be done: an ERROR frame, and the connection goes on."""

    def __init__(self, message: str, detail: str):
        super().__init__(detail)
        self.message, self.detail = message, detail


@dataclass
class Subscription:
    destination: str                # the SUBSCRIBE's destination header
    ack: str                        # "auto" or "client"
    multiple: bool                  # an ACK acks all before it too ("client")
    description: str                # "id='1'" or "destination='/queue/q'"


def _seconds(ms: int) -> int:
    return 0 if ms <= 0 else 1 if ms < 1000 else ms // 1000


def _required(frame: Frame, header: str, command: str, message: str) -> str:
    value = frame.get(header)
    if value is None:
        raise StompError(message, f"{_quoted(command)} must include a '{header}' header\n")
    return value


def _quoted(text: str) -> str:
    """A string as RabbitMQ's ``~p`` shows it in an error text."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class StompConnection(AdapterConnection):
    protocol = "STOMP"
    log = log

    def __init__(self, server):
        super().__init__(server)
        self.parser = Parser(MAX_UNAUTHENTICATED)
        self.channel = None             # the one channel, as RabbitMQ's plugin
        self.version = None             # negotiated at CONNECT
        self.session = ""
        self.login = self.vhost = ""
        self.subscriptions: dict[str, Subscription] = {}    # consumer tag -> subscription
        self.declared: set[str] = set()                     # /queue/ queues declared here
        self.reply_queues: dict[str, str] = {}              # /temp-queue/ name -> queue
        self.transactions: dict[str, list] = {}
        self.confirming = False         # confirm mode, from the first SEND with a receipt
        self.publish_seq = 0
        self.receipts: collections.OrderedDict = collections.OrderedDict()  # seq -> id
        self.batching = True
        self.sent = False               # written since the last heart-beat tick
        self.disconnecting = False      # DISCONNECT: the AMQP side closes, no ERROR for it
        self.holding = False            # deliveries wait while a SUBSCRIBE is being done
        self.held: list = []
        self.death = None               # why the broker closed the channel, while a frame
                                        # that was being done cleans up

    # ------------------------------------------------------------ transport
    def connection_made(self, transport) -> None:
        self._accepted(transport)
        self.batching = getattr(transport, "protocol_name", None) is None    # not a WebSocket
        self.timers.append(self.loop.call_later(LOGIN_TIMEOUT, self._login_timeout))
        log.info("accepting STOMP connection %s", self.name)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.heard = self.loop.time()
        try:
            frames = self.parser.feed(data)
        except FrameError as exc:
            log.error("STOMP detected network error on %s: %s", self.name, exc)
            self.close()
            return
        self._received(frames)

    def send(self, command: str, headers, body: bytes = b"") -> None:
        """A frame to the client: written with the others of this loop turn, in one write
        (a WebSocket's are written one message each, as RabbitMQ's Web STOMP sends them)."""
        if self.closed or self.lost:
            return
        self.sent = True
        if not self.batching:
            self.transport.write(serialize(command, headers, body))
            return
        self._queue_out(serialize(command, headers, body))

    def send_error(self, message: str, detail: str, extra=()) -> None:
        self.send("ERROR", [("message", message), ("content-type", "text/plain"),
                            ("version", ",".join(SUPPORTED)), *extra], detail.encode())

    def _login_timeout(self) -> None:
        if self.channel is None and not self.closed:
            log.error("closing STOMP connection %s (login timeout)", self.name)
            self.close()

    # ------------------------------------------------------------ frames, in order
    def _batched(self, frame: Frame) -> bool:
        return frame.command in ("SEND", "ACK")         # written raw: flushed together

    def _publishes(self, frame: Frame) -> bool:
        return frame.command == "SEND"                  # RabbitMQ's reader blocks on it

    def _ended(self, exc: Ended) -> None:
        if self.death is not None:          # the frame's clean-up is done: now the ERROR
            self._amqp_death(self.death)
        self.close()

    def _work_done(self) -> None:
        if self.death is not None and not self.closed:
            self._amqp_death(self.death)

    def _client_gone(self) -> None:
        self.close()

    async def _handle(self, frame: Frame) -> None:
        command = frame.command
        if self.channel is None:
            if command in ("CONNECT", "STOMP"):
                await self._connect(frame)
                return
            if not self.cfg.stomp_implicit_connect:
                self._error(StompError("Illegal command", "You must log in using CONNECT first"))
                return
            # RabbitMQ's implicit_connect: a CONNECT without headers, no CONNECTED
            await self._connect(Frame("CONNECT"), implicit=True)
            if self.channel is None:
                self.close()
                return
        if command in ("CONNECT", "STOMP"):
            log.error("STOMP connection %s: a second %s", self.name, command)
            self.close()
            return
        if not self.channel.is_open:
            raise Ended("the channel closed")
        if self.version == "1.0":               # RabbitMQ trims 1.0's header values
            frame.headers = {k: v.lstrip() for k, v in frame.headers.items()}
        handler = HANDLERS.get(command)
        # a SUBSCRIBE's RECEIPT comes before the messages its queue holds (RabbitMQ's
        # deliveries reach its reader after the frame is done): held until then
        self.holding = command == "SUBSCRIBE"
        try:
            await self._do(handler, frame)
        finally:
            self.holding = False
            held, self.held = self.held, []
            for delivery in held:
                self._deliver(delivery)

    async def _do(self, handler, frame: Frame) -> None:
        command = frame.command
        try:
            if handler is None:
                raise StompError("Bad command",
                                 f"Could not interpret command {_quoted(command)}\n")
            if command in ("SUBSCRIBE", "UNSUBSCRIBE") and "id" not in frame.headers and \
                    (frame.get("durable") == "true" or frame.get("persistent") == "true"):
                raise StompError("Missing Header",
                                 "Header 'id' is required for durable subscriptions")
            await handler(self, frame)
        except StompError as exc:
            self._error(exc)
            return
        except d.BadDestination as exc:
            self._error(StompError(exc.kind, exc.text))
            return
        except ValueError as exc:               # a header that should be a number
            log.error("STOMP error on %s: %s", self.name, exc)
            self._error(StompError("Processing error", "Processing error"))
            return
        receipt = frame.get("receipt")
        if receipt is not None and command != "SEND":   # a SEND's: when confirmed
            self.send("RECEIPT", [("receipt-id", receipt)])
        if command == "DISCONNECT":
            self.close()

    def _error(self, exc: StompError) -> None:
        log.error("STOMP error frame sent on %s: message %r, detail %r", self.name,
                  exc.message, exc.detail)
        self.send_error(exc.message, exc.detail)

    # ------------------------------------------------------------ CONNECT
    async def _connect(self, frame: Frame, implicit: bool = False) -> None:
        offered = frame.get("accept-version", "1.0").split(",")
        common = [v for v in offered if v in SUPPORTED]
        if not common:
            self._error(StompError("Version mismatch",
                                   f"Supported versions are {','.join(SUPPORTED)}\n"))
            return
        version = max(common, key=lambda v: tuple(int(p) for p in v.split(".")))
        headers = frame.headers
        if version == "1.0":
            headers = {k: v.lstrip() for k, v in headers.items()}
        certificate = self.certificate_user() if self.cfg.stomp_ssl_cert_login else None
        by_certificate = "login" not in headers and certificate is not None
        if by_certificate:                      # RabbitMQ's ssl_cert_login: no password
            login, passcode = certificate, self.certificate_password()
        else:
            login = headers.get("login", self.cfg.default_user)
            passcode = headers.get("passcode", self.cfg.default_pass)
        vhost = headers.get("host", self.cfg.stomp_vhost)
        try:
            beats = [int(x) for x in headers.get("heart-beat", "0,0").split(",")]
            send_every, expect_every = _seconds(beats[1]), _seconds(beats[0])
        except (ValueError, IndexError):
            self._error(StompError("Bad CONNECT", "Invalid heart-beat header"))
            return
        if login in self.cfg.loopback_users and not is_loopback(self.peer):
            known = self.server.broker.users.users.get(login)
            if known is not None and (by_certificate
                                      or check_password(passcode, known.password_hash)):
                log.warning("STOMP login failed for user '%s': this user's access is "
                            "restricted to localhost", login)
                self._error(StompError("Bad CONNECT", "non-loopback access denied"))
                return
        refused = await self._open(login, passcode, vhost, version)
        if refused is not None:
            self._error(refused)
            return
        self.version, self.login, self.vhost = version, login, vhost
        self.session = "session-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        self.parser.max_length = self.cfg.max_message_size + MAX_UNAUTHENTICATED
        if not implicit:
            connected = [("session", self.session),
                         ("heart-beat", f"{send_every * 1000},{expect_every * 1000}"),
                         ("version", version)]
            if not self.cfg.stomp_hide_server_info:
                connected.insert(0, ("server", SERVER))
            self.send("CONNECTED", connected)
        if send_every:
            self.timers.append(self.loop.call_later(send_every, self._beat, send_every))
        if expect_every:
            self.timers.append(self.loop.call_later(expect_every, self._check_heard,
                                                    expect_every))

    async def _open(self, login: str, passcode: str, vhost: str, version: str):
        """Log in over AMQP and open the channel: None, or the StompError to answer."""
        result = await self._open_amqp(
            vhost, login, passcode,
            f"{getattr(self.transport, 'protocol_name', 'STOMP')} {version}",
            {"product": "STOMP client"})
        if self.amqp is None:
            why = refusal(result)
            if why == "vhost":
                log.warning("STOMP login failed for user '%s': virtual host access not "
                            "allowed", login)
                return StompError("Bad CONNECT", f"Virtual host '{vhost}' access denied")
            if why == "credentials":
                log.warning("STOMP login failed for user '%s': authentication failed", login)
                return StompError("Bad CONNECT", f"Access refused for user '{login}'\n")
            log.error("STOMP login failed for user '%s': %s", login, result)
            return StompError("Bad CONNECT", str(result))
        channel = await self._open_channel(self._channel_closed)
        channel.add_on_cancel_callback(self._cancelled)
        self.amqp.tap(channel.channel_number, self._deliver)    # deliveries read raw
        self.channel = channel
        return None

    def _amqp_closed(self, reason) -> None:
        if not self.closed and self.channel is not None and not self.disconnecting:
            self._amqp_death(reason)

    def _beat(self, every: int) -> None:
        if self.closed:
            return
        if not self.sent:
            self._flush()
            self.transport.write(b"\n")
        self.sent = False
        self.timers.append(self.loop.call_later(every, self._beat, every))

    def _check_heard(self, every: int) -> None:
        if self.closed:
            return
        if self.loop.time() - self.heard > 2 * every:
            log.warning("STOMP detected missed client heartbeat(s) on connection %s, "
                        "closing it", self.name)
            self.close()
            return
        self.timers.append(self.loop.call_later(every, self._check_heard, every))

    # ------------------------------------------------------------ destinations
    async def _endpoint(self, direction: str, command: str, dest: str, kind: str, name,
                        frame: Frame):
        """The queue of a destination, declared as RabbitMQ's plugin declares it (None
        where a SEND needs none). ``kind``, ``name``: ``dest`` parsed."""
        if kind == d.TEMP_QUEUE:
            raise StompError("Invalid destination",
                             f"'{dest}' is not a valid destination for '{command}'\n")
        if kind in (d.AMQQUEUE, d.REPLY_QUEUE):
            return name
        headers = frame.headers
        if kind == d.QUEUE:
            if name not in self.declared:
                await self._declare(name, d.queue_flags(kind, headers),
                                    d.queue_arguments(headers))
                self.declared.add(name)
            return name
        if direction == "dest":                     # topic, exchange: nothing to declare
            return None
        queue = headers.get("x-queue-name")
        if queue is None:
            key = d.routing(kind, name)[1]
            sub_id = headers["id"] if d.is_durable(headers) else os.urandom(16).hex()
            queue = d.subscription_queue_name(key, sub_id)
        await self._declare(queue, d.queue_flags(kind, headers), d.queue_arguments(headers))
        return queue

    async def _declare(self, queue: str, flags: dict, arguments: dict) -> None:
        await self._call(lambda cb: self.channel.queue_declare(
            queue, arguments=arguments or None, callback=cb, **flags))

    # ------------------------------------------------------------ SEND
    async def on_send(self, frame: Frame) -> None:
        if "message-id" in frame.headers:
            raise StompError("Invalid header", "'message-id' is not allowed on 'SEND'.\n")
        dest = self._destination(frame, "SEND")
        kind, name = d.parse(dest)
        await self._endpoint("dest", "SEND", dest, kind, name, frame)
        headers = frame.headers
        reply_to = headers.get("reply-to")
        if reply_to is not None:
            try:
                reply_kind, temp = d.parse(reply_to)
            except d.BadDestination:
                reply_kind = None
            if reply_kind == d.TEMP_QUEUE:
                headers = {**headers, "reply-to": await self._reply_queue(temp)}
        properties = b"".join(pika.BasicProperties(**d.message_properties(headers)).encode())
        exchange, key = d.routing(kind, name, self.cfg.stomp_topic_exchange)
        publish = (exchange, key, properties, frame.body, frame.get("receipt"))
        tx = frame.get("transaction")
        if tx is not None:
            self._transaction(tx).append(publish)
        else:
            await self._publish(*publish)

    async def _publish(self, exchange, key, properties, body, receipt) -> None:
        if receipt is not None and not self.confirming:
            self.confirming = True
            await self._call(lambda cb: self.channel.confirm_delivery(self._confirmed,
                                                                      callback=cb))
        # written raw, with the others of this read (_flush_amqp): pika would encode each
        # through its generic codec and write each with a system call of its own
        self.amqp_out += build_publish(self.channel.channel_number, exchange.encode(),
                                       key.encode(), properties, body,
                                       self.amqp.params.frame_max)
        if self.confirming:
            self.publish_seq += 1
            if receipt is not None:
                self.receipts[self.publish_seq] = receipt

    def _confirmed(self, frame) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            log.warning("STOMP connection %s: a message was refused by the broker "
                        "(negative confirm %d): no receipt", self.name, method.delivery_tag)
        while self.receipts:
            seq, receipt = next(iter(self.receipts.items()))
            if seq > method.delivery_tag or (not method.multiple and seq != method.delivery_tag):
                break
            del self.receipts[seq]
            if not isinstance(method, pika.spec.Basic.Nack):
                self.send("RECEIPT", [("receipt-id", receipt)])

    async def _reply_queue(self, temp: str) -> str:
        """The connection's reply queue for ``/temp-queue/<temp>``, consumed (no acks) as
        the subscription ``/temp-queue/<temp>``."""
        queue = self.reply_queues.get(temp)
        if queue is None:
            ok = await self._call(lambda cb: self.channel.queue_declare(
                "", exclusive=True, auto_delete=True, callback=cb))
            queue = ok.method.queue
            tag = "T_/temp-queue/" + temp
            self.subscriptions[tag] = Subscription(queue, "auto", False, f"id='{tag[2:]}'")
            await self._call(lambda cb: self.channel.basic_consume(
                queue, tapped, auto_ack=True, consumer_tag=tag, callback=cb))
            self.reply_queues[temp] = queue
        return queue

    # ------------------------------------------------------------ SUBSCRIBE
    async def on_subscribe(self, frame: Frame) -> None:
        dest = self._destination(frame, "SUBSCRIBE")
        kind, name = d.parse(dest)
        prefetch = frame.get("prefetch-count")
        prefetch = int(prefetch.strip()) if prefetch is not None else None
        ack = frame.get("ack", "auto")
        if ack not in ("auto", "client", "client-individual"):
            raise StompError("Invalid header", f"'{ack}' is not a valid ack mode\n")
        queue = await self._endpoint("source", "SUBSCRIBE", dest, kind, name, frame)
        tag, description = self._consumer_tag(frame)
        if prefetch is not None:
            await self._call(lambda cb: self.channel.basic_qos(prefetch_count=prefetch,
                                                               callback=cb))
        if tag in self.subscriptions:
            detail = f"A subscription identified by '{tag}' already exists."
            log.error("STOMP error frame sent on %s: Duplicated subscription identifier: %s",
                      self.name, detail)
            self.send_error("Duplicated subscription identifier", detail)
            self.close()
            return
        exchange, key = d.routing(kind, name, self.cfg.stomp_topic_exchange)
        offset = d.stream_offset(frame.get("x-stream-offset"))
        self.subscriptions[tag] = Subscription(dest, "auto" if ack == "auto" else "client",
                                               ack == "client", description)
        try:
            await self._call(lambda cb: self.channel.basic_consume(
                queue, tapped, auto_ack=ack == "auto", consumer_tag=tag,
                arguments={"x-stream-offset": offset} if offset is not None else None,
                callback=cb))
            if exchange != "":
                await self._call(lambda cb: self.channel.queue_bind(queue, exchange, key,
                                                                    callback=cb))
        except Ended:
            self.subscriptions.pop(tag, None)
            if kind in (d.EXCHANGE, d.TOPIC):     # declared by us: not left behind
                await self._delete_quietly(queue)
            raise

    async def _delete_quietly(self, queue: str) -> None:
        """A queue this connection declared, deleted over a channel of its own (the
        connection's channel has just closed)."""
        if self.amqp is None or not self.amqp.is_open:
            return
        try:
            channel = await asyncio.wait_for(answer(
                lambda cb: self.amqp.channel(on_open_callback=cb), self.loop.create_future()),
                5.0)
            await asyncio.wait_for(answer(lambda cb: channel.queue_delete(queue, callback=cb),
                                          self.loop.create_future()), 5.0)
            channel.close()
        except Exception:                                   # noqa: BLE001 - best effort
            log.debug("STOMP connection %s: could not delete %s", self.name, queue)

    def _consumer_tag(self, frame: Frame) -> tuple[str, str]:
        sub_id = frame.get("id")
        if sub_id is not None:
            return "T_" + sub_id, f"id='{sub_id}'"
        dest = frame.get("destination")
        return "Q_" + dest, f"destination='{dest}'"

    def _destination(self, frame: Frame, command: str) -> str:
        return _required(frame, "destination", command, "Missing destination")

    # ------------------------------------------------------------ UNSUBSCRIBE
    async def on_unsubscribe(self, frame: Frame) -> None:
        sub_id = frame.get("id")
        if sub_id is not None and sub_id.startswith("/temp-queue/"):
            raise StompError("Invalid id", "UNSUBSCRIBE 'id' may not start with /temp-queue/\n")
        if sub_id is None and frame.get("destination") is None:
            raise StompError("Missing destination or id",
                             "UNSUBSCRIBE must include a 'destination' or 'id' header")
        tag, description = self._consumer_tag(frame)
        sub = self.subscriptions.get(tag)
        if sub is None:
            raise StompError("No subscription found",
                             "UNSUBSCRIBE must refer to an existing subscription.\n"
                             f"Subscription to {_quoted(description)} not found.\n")
        await self._call(lambda cb: self.channel.basic_cancel(tag, callback=cb))
        del self.subscriptions[tag]
        kind, name = d.parse(sub.destination)
        if kind == d.TOPIC and d.is_durable(frame.headers):     # the durable subscription ends
            queue = frame.get("x-queue-name") or d.subscription_queue_name(name, sub_id)
            await self._call(lambda cb: self.channel.queue_delete(queue, callback=cb))

    def _cancelled(self, method_frame) -> None:
        """The broker cancelled a consumer (its queue was deleted)."""
        tag = method_frame.method.consumer_tag
        sub = self.subscriptions.pop(tag, None)
        if sub is None:
            return
        shown = tag[2:] if tag.startswith(("T_", "Q_")) else f"Unknown[{tag}]"
        self.send_error("Server cancelled subscription",
                        "The server has canceled a subscription.\n"
                        f"No more messages will be delivered for {_quoted(sub.description)}.\n",
                        [("subscription", shown)])

    # ------------------------------------------------------------ MESSAGE
    def _deliver(self, m: Delivery) -> None:
        """A delivery of the channel, read raw (``delivery_tap.py``): a MESSAGE."""
        if self.closed:
            return
        if self.holding:
            self.held.append(m)
            return
        tag = m.consumer_tag
        sub = self.subscriptions.get(tag)
        if sub is None:
            self.send_error("Subscription not found",
                            f"There is no current subscription with tag '{tag}'.")
            return
        message_id = f"{tag}@@{self.session}@@{m.delivery_tag}"
        headers = [("subscription", tag[2:])] if tag.startswith("T_") else []
        headers += [("destination", d.format_destination(m.exchange, m.routing_key)),
                    ("message-id", message_id),
                    ("redelivered", "true" if m.redelivered else "false")]
        if sub.ack == "client" and self.version == "1.2":
            headers.append(("ack", message_id))
        try:
            headers += d.message_headers(m.properties)
        except ValueError:
            log.error("STOMP connection %s: a delivery's properties do not decode; sent "
                      "without them", self.name)
        self.send("MESSAGE", headers, m.body)

    # ------------------------------------------------------------ ACK, NACK
    async def on_ack(self, frame: Frame) -> None:
        self._settle(frame, "ACK")

    async def on_nack(self, frame: Frame) -> None:
        self._settle(frame, "NACK")

    def _settle(self, frame: Frame, command: str) -> None:
        header = "id" if self.version == "1.2" else "message-id"
        value = frame.get(header)
        if value is None:
            raise StompError("Missing header",
                             f"{_quoted(command)} must include the {_quoted(header)} header\n")
        parsed = d.parse_message_id(value)
        if parsed is None:
            raise StompError("Invalid header", f"{_quoted(command)} must include a valid "
                                               f"{_quoted(header)} header\n")
        tag, delivery_tag = parsed
        sub = self.subscriptions.get(tag)
        if sub is None:
            raise StompError("Subscription not found",
                             f"Message with id {_quoted(value)} has no subscription")
        requeue = d.boolean(frame.get("requeue"))
        action = (command, delivery_tag, sub.multiple, True if requeue is None else requeue)
        tx = frame.get("transaction")
        if tx is not None:
            self._transaction(tx).append(action)
        else:
            self._do_settle(*action)

    def _do_settle(self, command: str, delivery_tag: int, multiple: bool, requeue: bool):
        if command == "ACK":            # raw, with this read's publishes (as _publish)
            self.amqp_out.append(build_confirm(self.channel.channel_number, delivery_tag,
                                               multiple))
        else:
            self._flush_amqp()
            self.channel.basic_nack(delivery_tag, multiple, requeue)

    # ------------------------------------------------------------ transactions
    def _transaction(self, tx: str) -> list:
        actions = self.transactions.get(tx)
        if actions is None:
            raise StompError("Bad transaction",
                             f"Invalid transaction identifier: {_quoted(tx)}\n")
        return actions

    def _tx_name(self, frame: Frame, command: str) -> str:
        return _required(frame, "transaction", command, "Missing transaction")

    async def on_begin(self, frame: Frame) -> None:
        self.transactions[self._tx_name(frame, "BEGIN")] = []

    async def on_commit(self, frame: Frame) -> None:
        tx = self._tx_name(frame, "COMMIT")
        actions = self._transaction(tx)
        del self.transactions[tx]
        for action in actions:
            if action[0] in ("ACK", "NACK"):
                self._do_settle(*action)
            else:
                await self._publish(*action)

    async def on_abort(self, frame: Frame) -> None:
        tx = self._tx_name(frame, "ABORT")
        self._transaction(tx)
        del self.transactions[tx]

    async def on_disconnect(self, frame: Frame) -> None:
        """The AMQP connection closes first and the RECEIPT follows (_do), as RabbitMQ's
        plugin does: once the client has the receipt its consumers are gone, so a message
        published after it waits in the queue instead of going to this connection."""
        self.disconnecting = True
        if self.amqp is None or not self.amqp.is_open:
            return
        self._flush_amqp()
        closed = self.loop.create_future()
        self.amqp.add_on_close_callback(lambda *_: closed.done() or closed.set_result(None))
        self.amqp.close()
        try:                            # a broker that blocks this connection (an alarm)
            await asyncio.wait_for(closed, DISCONNECT_TIMEOUT)  # may not read its close
        except asyncio.TimeoutError:
            log.warning("STOMP connection %s: its AMQP connection did not close within %s s",
                        self.name, DISCONNECT_TIMEOUT)

    # ------------------------------------------------------------ AMQP errors
    def _channel_closed(self, _channel, reason) -> None:
        self._end(Ended(f"channel closed: {reason}"))
        if self.closed or self.disconnecting:
            return
        if self.worker is None:
            self._amqp_death(reason)
        else:                           # the frame being done cleans up first (_work)
            self.death = reason

    def _amqp_death(self, reason) -> None:
        """The broker closed the channel or the connection: an ERROR named as RabbitMQ's
        plugin names the AMQP error, then the connection ends."""
        code = getattr(reason, "reply_code", None)
        text = getattr(reason, "reply_text", None) or str(reason)
        name = ERROR_NAMES.get(code, "internal_error")
        log.error("STOMP error frame sent on %s: message %r, detail %r", self.name, name, text)
        self.send_error(name, text)
        self.close()


HANDLERS = {"SEND": StompConnection.on_send, "SUBSCRIBE": StompConnection.on_subscribe,
            "UNSUBSCRIBE": StompConnection.on_unsubscribe, "ACK": StompConnection.on_ack,
            "NACK": StompConnection.on_nack, "BEGIN": StompConnection.on_begin,
            "COMMIT": StompConnection.on_commit, "ABORT": StompConnection.on_abort,
            "DISCONNECT": StompConnection.on_disconnect}
