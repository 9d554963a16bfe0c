"""One MQTT client connection, carried by an AMQP connection to this broker, as RabbitMQ
3.10's MQTT plugin carries each over a direct AMQP connection (``rabbit_mqtt_processor``).

CONNECT logs in over AMQP with the client's user name and password (or the default user
when the client sends none and anonymous connections are allowed), so users, vhost access,
permissions, topic permissions, limits and alarms are the broker's own. Then:

* PUBLISH goes to the MQTT exchange (``amq.topic``) with the topic as routing key
  (``topics.py``), headers ``x-mqtt-publish-qos`` and ``x-mqtt-dup``, persistent for QoS 1;
  QoS 1 is published on a confirm channel and PUBACKed, in order, once the broker confirms
  it. QoS 2 is taken as QoS 1 (RabbitMQ's downgrade).
* SUBSCRIBE binds the client's QoS 0 or QoS 1 subscription queue (declared and consumed on
  first use, prefetch 10) to the filter and answers SUBACK with the QoS granted (at most 1;
  0x80 for a filter that is not valid); then the retained messages matching the filter
  follow. UNSUBSCRIBE unbinds it from both queues.
* A delivery becomes a PUBLISH; on the QoS 1 queue its QoS is the lower of 1 and the
  publisher's (``x-mqtt-publish-qos``, 1 for AMQP publishers) and the client's PUBACK acks
  it; a QoS 0 delivery of the QoS 1 queue is acked at once. The QoS 0 queue is consumed on
  a channel of its own, a window of ``QOS0_WINDOW`` acked (multiple) once written to the
  client's socket and not while that socket's buffer is full (``pause_writing``): a client
  that reads slowly leaves the messages in its queue, not in the broker's buffers.
* clean session: the QoS 1 queue of an earlier session is deleted at CONNECT; otherwise it
  is kept (durable, ``x-expires`` 24 h) and consumed again: CONNACK says session present.
* The will is published when the connection ends without DISCONNECT (closed, keepalive
  missed for 1.5 times its period, a packet that does not parse), not on a take-over: a
  second connection with the same client id closes the first.

Errors are logged and end the connection: MQTT 3.1.1 has no error reply after CONNACK.

MQTT 5 (protocol level 5), as RabbitMQ 3.13's plugin has it:

* CONNECT: the Session Expiry Interval replaces clean session (at most
  ``MAX_SESSION_EXPIRY``; the kept queue's ``x-expires``, updated when a later CONNECT or
  the DISCONNECT changes it); Receive Maximum bounds the QoS 1 prefetch; the client's
  Maximum Packet Size drops a bigger delivery (acked, as RabbitMQ discards it); its Topic
  Alias Maximum lets the broker send aliases (``TOPIC_ALIAS_MAXIMUM`` at most, given in
  order, never reused). CONNACK carries reason codes and Maximum QoS 1, the broker's topic
  alias maximum and maximum packet size, the session expiry granted and an assigned client
  id for an empty one. Enhanced authentication (an
  Authentication Method) is refused with 0x8C.
* PUBLISH: properties are carried as AMQP properties (``mqtt5.py``); topic aliases from the
  client are resolved; QoS 2 is refused with DISCONNECT 0x9B (Maximum QoS is 1); PUBACK
  says 0x10 when no queue took the message.
* SUBSCRIBE: subscription identifiers, No Local, Retain As Published and Retain Handling,
  kept in the binding's arguments (``x-mqtt-subscription-id`` ...) so a kept session
  keeps them; a delivery carries the identifiers of the client's subscriptions its topic
  matches. UNSUBACK says 0x11 for a filter with no subscription. Shared subscriptions,
  which RabbitMQ 3.13 lacks: ``$share/<name>/<filter>`` is a queue of the share consumed
  by every member (``topics.shared_queue``).
* The will's properties and Will Delay Interval: a delayed will waits in a queue
  ``mqtt-will-<client id>`` with a TTL, dead-lettered to the MQTT exchange when it runs
  out (RabbitMQ's way: it survives a restart); any later CONNECT with that client id
  deletes the queue, and the will with it. DISCONNECT with a reason code other than 0
  sends the will.
* The server's DISCONNECT: 0x8E session taken over, 0x8D keep alive timeout, 0x95 packet
  too large, 0x94 topic alias invalid, 0x82 protocol error, 0x9B QoS not supported, 0x8B
  server shutting down.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import struct
import time
import uuid

import pika
from pamqp.commands import Queue
from pamqp.frame import marshal as frame_marshal

from ..adapter import AdapterConnection, Ended, refusal, tapped
from ..delivery_tap import Delivery
from ..frontend.auth import check_password
from ..frontend.session import is_loopback
from ..protocol import properties as P
from ..frontend.queue_ref import QueueRef
from ..protocol.fastpath import build_confirm, build_publish
from . import frames as f
from . import mqtt5
from .retained import matches
from .topics import (CERT_MAPPING, PORT_MAPPING, SHARE, pick_vhost, shared, shared_queue,
                     subscription_queues, to_amqp, to_mqtt, valid_filter, valid_topic)

log = logging.getLogger("amqpbroker.mqtt")

PREFETCH = 10                       # RabbitMQ's mqtt.prefetch
# QoS 0 deliveries are acked (many at a time, on a channel of their own) once written to the
# client's socket, and not while its socket buffer is full: at most this many wait there, the
# rest stay in the queue (RabbitMQ consumes QoS 0 with auto-ack behind its credit flow)
QOS0_WINDOW = 1000
SUBSCRIPTION_TTL = 86_400_000       # ms: a QoS 1 queue of a kept session (mqtt.subscription_ttl)
LOGIN_TIMEOUT = 10.0                # s from TCP accept to CONNECT
# the largest packet before the login (RabbitMQ 3.12's mqtt.max_packet_size_unauthenticated);
# after it, the largest message body plus a topic
MAX_UNAUTHENTICATED = 65_536
MAX_SESSION_EXPIRY = 86_400         # s: RabbitMQ's mqtt.max_session_expiry_interval_seconds
TOPIC_ALIAS_MAXIMUM = 16            # RabbitMQ's mqtt.topic_alias_maximum, both ways
# CONNACK codes of MQTT 3.1.1 -> MQTT 5's reason codes
REASONS_5 = {f.ACCEPTED: f.SUCCESS, f.BAD_PROTOCOL: f.UNSUPPORTED_PROTOCOL_VERSION,
             f.BAD_CLIENT_ID: f.CLIENT_IDENTIFIER_NOT_VALID, f.UNAVAILABLE: f.SERVER_UNAVAILABLE,
             f.BAD_CREDENTIALS: f.BAD_USER_NAME_OR_PASSWORD, f.NOT_AUTHORIZED: f.NOT_AUTHORIZED_5}
# a subscription's MQTT 5 options, as binding arguments (only those not at their default)
SUBSCRIPTION_ID, NO_LOCAL, RETAIN_AS_PUBLISHED, RETAIN_HANDLING = (
    "x-mqtt-subscription-id", "x-mqtt-no-local", "x-mqtt-retain-as-published",
    "x-mqtt-retain-handling")


class MqttConnection(AdapterConnection):
    protocol = "MQTT"
    log = log

    def __init__(self, server):
        super().__init__(server)
        self.parser = f.Parser(MAX_UNAUTHENTICATED)
        self.connected = False          # CONNACK 0 sent
        self.will: f.Connect | None = None
        self.client_id = ""
        self.vhost = self.user = ""
        self.clean = True
        self.channel = None             # QoS 0 publishes, declares, both consumers
        self.confirms = None            # QoS 1 publishes (confirm mode), opened on first use
        self.confirm_backlog: list | None = None    # QoS 1 publishes while it opens
        self.exchange = server.broker.config.mqtt_exchange.encode()
        self.consumers: dict[str, int] = {}         # consumer tag -> subscription QoS
        self.qos0_channel = None        # the QoS 0 queue's consumer (acked with multiple)
        self.qos0_delivered = self.qos0_acked = 0   # its highest delivery tag, and acked
        self.writing_paused = False     # the client's socket buffer is full
        self.flush_soon = False
        self.awaiting_ack: dict[int, int] = {}      # MQTT packet id -> delivery tag
        self.unconfirmed: collections.OrderedDict = collections.OrderedDict()  # seq -> id
        self.publish_seq = 0
        self.next_packet_id = 1
        self.prefetch = PREFETCH        # of the QoS 1 queue (MQTT 5: the Receive Maximum)
        self.keepalive = 0
        self.timer: asyncio.TimerHandle | None = None
        self.level = 4                  # the protocol level: 3, 4 (3.1.1) or 5
        self.session_expiry = 0         # s (MQTT 5; 3.1.1: 0 clean, else kept a day)
        self.assigned_id = False        # the broker chose the client id (MQTT 5 says it)
        self.aliases_in: dict[int, str] = {}        # the client's topic aliases
        self.aliases_out: dict[str, int] = {}       # ours, to the client
        self.alias_max_out = 0
        self.max_packet_out: int | None = None      # the client's Maximum Packet Size
        self.subscriptions: dict[str, tuple] = {}   # filter -> (Subscription, arguments)
        self.returned: set = set()      # QoS 1 publishes no queue took (PUBACK 0x10)
        self.subscribing = False        # MQTT 5: a refusal is answered in the SUBACK
        self.handed_over = False        # taken over: its session is not ended here
        self.shared: dict[str, tuple] = {}  # "$share/..." -> (consumer tag, Subscription,
        self.next_share = 0                 #                  its filter)

    # ------------------------------------------------------------ transport
    def connection_made(self, transport) -> None:
        self._accepted(transport)
        self.timer = self.loop.call_later(LOGIN_TIMEOUT, self._login_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.heard = self.loop.time()
        if self.amqp is None and not self.parser.buf and not self.inbox and data \
                and data[0] >> 4 != f.CONNECT:      # the first packet must be CONNECT
            log.error("MQTT protocol error on connection %s: connect_expected", self.name)
            self.close()
            return
        try:
            packets = self.parser.feed(data)
        except f.FrameError as exc:
            log.error("MQTT detected a framing error on connection %s: %s", self.name, exc)
            if self.connected and "over the limit" in str(exc):
                self.disconnect(f.PACKET_TOO_LARGE)
            self.close(send_will=True)
            return
        self._received(packets)

    def connection_lost(self, exc) -> None:
        self.lost = True
        if self.closed:
            return
        if self.connected:
            log.info("MQTT connection %s will terminate because peer closed TCP connection",
                     self.name)
        if self.worker is None:
            self.close(send_will=True)
        # else the worker takes what arrived before, then closes (_work)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._ack_qos0()
        self._flush_amqp()

    def send(self, packet: bytes) -> None:
        if not self.closed and not self.lost:
            self.transport.write(packet)

    def disconnect(self, reason: int) -> None:
        """MQTT 5: tell the client why the server ends the connection (3.1.1 has no way)."""
        if self.level == 5 and self.connected:
            self.send(f.disconnect_packet(reason))

    def close(self, send_will: bool = False) -> None:
        """End the connection: the will first when asked, then AMQP, then the socket."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.worker is not None and self.worker is not asyncio.current_task():
            self.worker.cancel()
        if send_will and self.will is not None:
            self._publish_will()
        if self.connected:
            self._end_session()
        self.server.forget(self)
        self._close_amqp()
        self.transport.close()
        if self.connected:
            log.info("closing MQTT connection %s", self.name)

    def take_over(self, successor=None) -> None:
        """Another connection logged in with this client id (``successor``, when on this
        node). MQTT 3.1.1: the will is not sent (RabbitMQ 3.10). MQTT 5: it is, as the
        connection ended without DISCONNECT -- unless it has a Will Delay and the successor
        goes on with the session (no Clean Start), as RabbitMQ 3.13 decides."""
        log.warning("MQTT disconnecting client %s with duplicate id '%s'", self.name,
                    self.client_id)
        self.disconnect(f.SESSION_TAKEN_OVER)
        self.handed_over = True         # the session is the successor's now
        send_will = self.level == 5 and self.will is not None and not (
            self.will.will_properties.get("will_delay_interval")
            and successor is not None and not successor.clean)
        self.close(send_will=send_will)

    def _login_timeout(self) -> None:
        if not self.connected and not self.closed:
            log.error("closing MQTT connection %s (login timeout)", self.name)
            self.close()

    def _check_keepalive(self) -> None:
        if self.loop.time() - self.heard > 1.5 * self.keepalive:
            log.error("closing MQTT connection %s (keepalive timeout)", self.name)
            self.disconnect(f.KEEP_ALIVE_TIMEOUT)
            self.close(send_will=True)
            return
        self.timer = self.loop.call_later(self.keepalive / 2, self._check_keepalive)

    # ------------------------------------------------------------ packets, in order
    def _batched(self, packet) -> bool:
        return isinstance(packet, (f.Publish, f.PubAck))     # written raw: flushed together

    def _publishes(self, packet) -> bool:
        return isinstance(packet, f.Publish)

    def _ended(self, exc: Ended) -> None:
        if not self.closed:
            log.error("MQTT connection %s is closing: %s", self.name, exc)
            self.close()

    def _client_gone(self) -> None:
        self.close(send_will=True)

    async def _handle(self, packet) -> None:
        if not self.connected:
            if isinstance(packet, f.Connect) and self.amqp is None:
                await self._connect(packet)
            else:
                log.error("MQTT protocol error on connection %s: connect_expected", self.name)
                self.close()
            return
        if isinstance(packet, f.Publish):
            self._publish(packet)
        elif isinstance(packet, f.PubAck):
            tag = self.awaiting_ack.pop(packet.packet_id, None)
            if tag is not None:         # missing: a bogus client, or a QoS downgrade
                # basic.ack, written with the others of this read (as publishes: _out);
                # an MQTT 5 PUBACK with a failure code discards the message, as RabbitMQ
                number = self.channel.channel_number
                self.amqp_out.append(build_confirm(number, tag, False,
                                                   nack=packet.reason >= 0x80))
        elif isinstance(packet, f.Subscribe):
            await self._subscribe(packet)
        elif isinstance(packet, f.Unsubscribe):
            await self._unsubscribe(packet)
        elif isinstance(packet, f.Connect):
            log.error("MQTT protocol error on connection %s: a second CONNECT", self.name)
            self.close(send_will=True)
        elif isinstance(packet, f.Disconnect):
            await self._disconnected(packet)
        elif packet.kind == f.PINGREQ:
            self.send(f.pingresp_packet())
        else:                           # PUBREC, PUBREL, PUBCOMP (QoS 2 is taken as 1), ...
            log.error("MQTT protocol error on connection %s: packet type %d not accepted",
                      self.name, packet.kind)
            self.close(send_will=True)

    # ------------------------------------------------------------ CONNECT
    async def _connect(self, c: f.Connect) -> None:
        self.level = c.level if c.level in f.PROTOCOL_NAMES else 4
        code, present = await self._login(c)
        if self.level == 5:
            code = REASONS_5.get(code, code)    # 3.1.1's codes are below 0x80
            self.send(f.connack_packet(code, present, 5, self._connack_properties()
                                       if code == f.SUCCESS else None))
        else:
            self.send(f.connack_packet(code, present))
        if code != f.ACCEPTED:
            self.close()
            return
        self.connected = True
        self.parser.max_length = self._max_packet_in()
        if present:                     # the kept session's messages: after the CONNACK
            await self._resume_session()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if c.keepalive:
            self.keepalive = c.keepalive
            self.timer = self.loop.call_later(c.keepalive / 2, self._check_keepalive)
        log.info("accepting MQTT connection %s (%s, client id: %s)", self.name, self.peer,
                 self.client_id)

    def _max_packet_in(self) -> int:
        """The largest packet taken after CONNECT: the largest message and a topic."""
        return self.cfg.max_message_size + 2 + 0xFFFF + 2 + (0xFFFF if self.level == 5 else 0)

    def _connack_properties(self) -> dict:
        """RabbitMQ 3.13's CONNACK properties, but Shared Subscription Available (RabbitMQ
        says 0; here its default, 1, holds)."""
        props = {"maximum_qos": 1, "topic_alias_maximum": TOPIC_ALIAS_MAXIMUM,
                 "maximum_packet_size": self._max_packet_in() + 5,
                 "session_expiry_interval": self.session_expiry}
        if self.assigned_id:
            props["assigned_client_identifier"] = self.client_id
        return props

    async def _login(self, c: f.Connect) -> tuple[int, bool]:
        if f.PROTOCOL_NAMES.get(c.level) != c.protocol_name:
            log.error("MQTT cannot accept connection %s: incompatible protocol version",
                      self.name)
            return f.BAD_PROTOCOL, False
        if c.level == 5:
            problem = self._mqtt5_connect(c)
            if problem is not None:
                return problem, False
        elif not c.client_id and not c.clean_session:
            log.error("MQTT cannot accept connection %s: client uses an invalid ID", self.name)
            return f.BAD_CLIENT_ID, False
        else:
            self.session_expiry = 0 if c.clean_session else MAX_SESSION_EXPIRY
        self.assigned_id = not c.client_id
        self.client_id = c.client_id or uuid.uuid4().hex
        self.clean = c.clean_session
        username, password = c.username, c.password
        certificate = self.certificate_user()
        by_certificate = username is None and password is None \
            and self.cfg.mqtt_ssl_cert_login and certificate is not None
        if by_certificate:                      # RabbitMQ's ssl_cert_login: no password
            username, password = certificate, self.certificate_password()
        elif username is None and password is None:
            if not self.cfg.mqtt_allow_anonymous:
                log.error("MQTT login failed: no credentials provided")
                return f.BAD_CREDENTIALS, False
            username, password = self.cfg.default_user, self.cfg.default_pass
        elif username is None:
            log.error("MQTT login failed: no username is provided")
            return f.BAD_CREDENTIALS, False
        elif password is None:
            log.error("MQTT login failed for user '%s': no password provided", username)
            return f.BAD_CREDENTIALS, False
        params = self.server.broker.global_parameters
        self.vhost, self.user = pick_vhost(
            username, certificate, self.transport.get_extra_info("sockname")[1],
            self.cfg.mqtt_vhost, params.get(PORT_MAPPING), params.get(CERT_MAPPING))
        if self.vhost not in self.server.broker.vhosts:
            log.error("MQTT login failed for user '%s': virtual host '%s' does not exist",
                      username, self.vhost)
            return f.BAD_CREDENTIALS, False
        if self.user in self.cfg.loopback_users and not is_loopback(self.peer):
            # RabbitMQ checks this after the password: a wrong one is still code 4
            known = self.server.broker.users.users.get(self.user)
            if known is not None and (by_certificate
                                      or check_password(password, known.password_hash)):
                log.warning("MQTT login failed for user %s: this user's access is restricted "
                            "to localhost", self.user)
                return f.NOT_AUTHORIZED, False
            log.error("MQTT login failed for user '%s', authentication failed", self.user)
            return f.BAD_CREDENTIALS, False
        code = await self._open(password, c.level)
        if code != f.ACCEPTED:
            return code, False
        if c.will_topic is not None:
            if not valid_topic(c.will_topic):
                log.error("MQTT protocol error on connection %s: will topic '%s' is not a "
                          "topic name", self.name, c.will_topic)
                return f.NOT_AUTHORIZED, False
            self.will = c
        self.server.register(self)
        self.channel = await self._open_channel(self._channel_closed)
        await self._call(lambda cb: self.channel.basic_qos(prefetch_count=self.prefetch,
                                                           callback=cb))
        await self._forget_will_queue()
        vhost = self.server.broker.vhosts.get(self.vhost)
        queues = subscription_queues(self.client_id)
        if self.level != 5:
            queues = queues[1:]         # 3.1.1: only the QoS 1 queue is a session
        kept = [q for q in queues if vhost is not None and q in vhost.queues]  # the metadata's
        if kept and self.clean:
            for q in kept:
                await self._call(lambda cb, q=q: self.channel.queue_delete(q, callback=cb))
            kept = []
        return f.ACCEPTED, bool(kept)

    def _mqtt5_connect(self, c: f.Connect) -> int | None:
        """MQTT 5's CONNECT properties taken (RabbitMQ's ``process_connect``), or the
        reason code that refuses the connection."""
        props = c.properties
        if "authentication_method" in props:
            log.error("MQTT cannot accept connection %s: enhanced authentication "
                      "(method '%s') is not supported", self.name,
                      props["authentication_method"])
            return f.BAD_AUTHENTICATION_METHOD
        if c.will_topic is not None and c.will_qos == 2:
            log.error("MQTT cannot accept connection %s: will QoS 2 is not supported",
                      self.name)
            return f.QOS_NOT_SUPPORTED
        if props.get("maximum_packet_size") == 0 or props.get("receive_maximum") == 0:
            log.error("MQTT protocol error on connection %s: a maximum of 0 in CONNECT",
                      self.name)
            return f.PROTOCOL_ERROR
        expiry = props.get("session_expiry_interval", 0)
        self.session_expiry = min(expiry, MAX_SESSION_EXPIRY)
        self.prefetch = min(PREFETCH, props.get("receive_maximum", 0xFFFF))
        self.max_packet_out = props.get("maximum_packet_size")
        self.alias_max_out = min(props.get("topic_alias_maximum", 0), TOPIC_ALIAS_MAXIMUM)
        return None

    async def _open(self, password: str, level: int) -> int:
        """Log in over AMQP: a CONNACK code. The management API shows the AMQP connection
        as this MQTT client's (``frontend/adapters.py``)."""
        result = await self._open_amqp(
            self.vhost, self.user, password,
            f"{getattr(self.transport, 'protocol_name', 'MQTT')} "
            f"{ {5: '5.0', 4: '3.1.1'}.get(level, '3.1.0') }",
            {"client_id": self.client_id, "product": "MQTT client"})
        if self.amqp is not None:
            return f.ACCEPTED
        why = refusal(result)
        if why == "vhost":
            log.warning("MQTT login failed for user '%s': virtual host access not allowed",
                        self.user)
            return f.NOT_AUTHORIZED
        if why == "credentials":
            log.error("MQTT login failed for user '%s', authentication failed: %s",
                      self.user, result)
            return f.BAD_CREDENTIALS
        log.error("MQTT cannot accept connection %s: %s", self.name, result)
        return f.UNAVAILABLE

    def _amqp_closed(self, reason) -> None:
        if not self.closed and self.connected:
            log.error("MQTT connection %s is closing: its AMQP connection closed (%s)",
                      self.name, reason)
            self.close()

    # ------------------------------------------------------------ PUBLISH
    def _publish(self, p: f.Publish) -> None:
        if self.level == 5 and not self._mqtt5_publish(p):
            return
        if not valid_topic(p.topic):
            log.error("MQTT protocol error on connection %s: cannot publish to topic '%s'",
                      self.name, p.topic)
            self.disconnect(f.TOPIC_NAME_INVALID)
            self.close(send_will=True)
            return
        qos = min(p.qos, 1)
        publisher = self.client_id if self.level == 5 and self._no_local(p.topic) else None
        if self.level == 5 and (p.properties or p.retain or publisher):
            properties = mqtt5.to_amqp_properties(qos, p.dup, p.retain, p.properties,
                                                  time.time(), publisher)
        else:                           # what mqtt5.to_amqp_properties makes of none
            properties = PROPERTIES[qos][p.dup]
        message = (to_amqp(p.topic).encode(), properties, p.payload)
        if not qos:
            self._out(self.channel, *message)
        else:
            self.publish_seq += 1
            self.unconfirmed[self.publish_seq] = (p.packet_id, message[0].decode())
            if self.confirms is not None:
                self._out(self.confirms, *message)
            else:
                if self.confirm_backlog is None:
                    self.confirm_backlog = []
                    self.amqp.channel(on_open_callback=self._confirms_opened)
                self.confirm_backlog.append(message)
        if p.retain:
            self.server.retained.retain(self.vhost, p.topic, p.payload, qos, p.properties)

    def _mqtt5_publish(self, p: f.Publish) -> bool:
        """MQTT 5's checks of a PUBLISH, and its topic alias resolved: False when the
        connection ends for it (with RabbitMQ 3.13's DISCONNECT reason)."""
        problem = None
        if p.qos == 2:
            problem = f.QOS_NOT_SUPPORTED, "QoS 2 is not supported (Maximum QoS is 1)"
        alias = p.properties.pop("topic_alias", None)
        if problem is None and alias is not None:
            if not 0 < alias <= TOPIC_ALIAS_MAXIMUM:
                problem = (f.TOPIC_ALIAS_INVALID,
                           f"topic alias {alias} is not in 1-{TOPIC_ALIAS_MAXIMUM}")
            elif p.topic:
                self.aliases_in[alias] = p.topic
            elif alias in self.aliases_in:
                p.topic = self.aliases_in[alias]
            else:
                problem = f.PROTOCOL_ERROR, f"topic alias {alias} was never set"
        if problem is None:
            return True
        log.error("MQTT protocol error on connection %s: %s", self.name, problem[1])
        self.disconnect(problem[0])
        self.close(send_will=True)
        return False

    def _no_local(self, topic: str) -> bool:
        """This client has a No Local subscription its own message to ``topic`` matches."""
        return any(sub.no_local and matches(sub.filter, topic)
                   for sub, _ in self.subscriptions.values())

    def _out(self, channel, routing_key: bytes, properties: bytes, body: bytes) -> None:
        """A publish's frames, written with the others of this read (``_flush_amqp``): pika
        would encode each through its generic codec and send each with a syscall of its own;
        pika's channel is not involved (it counts nothing for publishes). An MQTT 5 QoS 1
        publish is mandatory: one no queue takes is returned (PUBACK 0x10)."""
        self.amqp_out += build_publish(channel.channel_number, self.exchange, routing_key,
                                       properties, body, self.amqp.params.frame_max,
                                       mandatory=self.level == 5 and channel is self.confirms)

    def _confirms_opened(self, channel) -> None:
        """The confirm channel (opened on the first QoS 1 publish, as RabbitMQ's): what
        waited for it is published now, in order, behind confirm.select."""
        channel.add_on_close_callback(self._channel_closed)
        channel.confirm_delivery(self._confirmed)
        channel.add_on_return_callback(self._returned)
        self.confirms = channel
        backlog, self.confirm_backlog = self.confirm_backlog, None
        for message in backlog:
            self._out(channel, *message)
        self._flush_amqp()

    def _returned(self, _channel, method, _properties, _body) -> None:
        """A QoS 1 publish of an MQTT 5 client that no queue took: the earliest unconfirmed
        one to that routing key (returns come in publish order, before their confirm)."""
        for seq, (_packet_id, key) in self.unconfirmed.items():
            if key == method.routing_key and seq not in self.returned:
                self.returned.add(seq)
                return

    def _confirmed(self, frame) -> None:
        method = frame.method
        tag, multiple = method.delivery_tag, method.multiple
        nack = isinstance(method, pika.spec.Basic.Nack)
        while self.unconfirmed:
            seq, (packet_id, _key) = next(iter(self.unconfirmed.items()))
            if seq > tag or (not multiple and seq != tag):
                break
            del self.unconfirmed[seq]
            if nack:        # not PUBACKed: the client sends it again when it reconnects
                log.warning("MQTT connection %s: message %d was refused by the broker "
                            "(negative confirm)", self.name, packet_id)
            elif seq in self.returned:
                self.returned.discard(seq)
                self.send(f.puback_packet(packet_id, f.NO_MATCHING_SUBSCRIBERS, self.level))
            else:
                self.send(f.puback_packet(packet_id))

    def _publish_will(self) -> None:
        c = self.will
        self.will = None
        if self.channel is None or not self.channel.is_open:
            return
        qos = min(c.will_qos, 1)
        key = to_amqp(c.will_topic).encode()
        if c.level != 5:
            self._out(self.channel, key, PROPERTIES[qos][False], c.will_message)
            self._flush_amqp()
            if c.will_retain:
                self.server.retained.retain(self.vhost, c.will_topic, c.will_message, qos)
            return
        props = dict(c.will_properties)
        delay = props.pop("will_delay_interval", 0)
        if delay and self.session_expiry:
            self._delay_will(key, qos, props, c.will_message,
                             min(delay, self.session_expiry))
            return
        self._out(self.channel, key, mqtt5.to_amqp_properties(
            qos, False, c.will_retain, props, time.time()), c.will_message)
        self._flush_amqp()
        if c.will_retain:
            self.server.retained.retain(self.vhost, c.will_topic, c.will_message, qos, props)

    def _delay_will(self, key: bytes, qos: int, props: dict, payload: bytes,
                    delay: int) -> None:
        """MQTT 5's Will Delay Interval, as RabbitMQ 3.13 keeps it: the will waits in queue
        ``mqtt-will-<client id>`` (expiring with the session) for ``delay`` seconds, then is
        dead-lettered to the MQTT exchange with its topic. A CONNECT with this client id
        deletes the queue, and the will with it (``_forget_will_queue``). Written as frames
        that need no answer, ahead of the connection's close."""
        queue = will_queue(self.client_id)
        arguments = {"x-dead-letter-exchange": self.cfg.mqtt_exchange,
                     "x-dead-letter-routing-key": key.decode()}
        arguments["x-expires"] = self.session_expiry * 1000 + 5000
        number = self.channel.channel_number
        self.amqp_out.append(frame_marshal(Queue.Declare(
            queue=queue, durable=True, arguments=arguments, nowait=True), number))
        props.pop("message_expiry_interval", None)      # the delay is its TTL
        properties = P.rewrite(mqtt5.to_amqp_properties(qos, False, False, props, time.time()),
                               expiration=str(delay * 1000))
        self.amqp_out += build_publish(number, b"", queue.encode(), properties, payload,
                                       self.amqp.params.frame_max)
        self._flush_amqp()

    async def _forget_will_queue(self) -> None:
        """A delayed will of this client id waiting: deleted, as the client is back."""
        vhost = self.server.broker.vhosts.get(self.vhost)
        queue = will_queue(self.client_id)
        if vhost is not None and queue in vhost.queues:
            await self._call(lambda cb: self.channel.queue_delete(queue, callback=cb))

    # ------------------------------------------------------------ SUBSCRIBE
    async def _subscribe(self, s: f.Subscribe) -> None:
        granted, fresh = [], []
        queues = subscription_queues(self.client_id)
        identifier = (s.properties.get("subscription_identifier") or [None])[0]
        failed = None               # MQTT 5: the code of a refused filter, and those after
        for sub in s.topics:
            if failed is not None:
                granted.append(failed)
                continue
            if not valid_filter(sub.filter):
                log.warning("MQTT connection %s: not a topic filter: '%s'", self.name,
                            sub.filter)
                granted.append(f.TOPIC_FILTER_INVALID if self.level == 5 else f.SUBACK_FAILURE)
                continue
            sub.qos = min(sub.qos, 1)
            sub.identifier = identifier
            if self.level == 5 and sub.filter.startswith(SHARE):    # 3.1.1: a plain filter
                code = await self._subscribe_shared(sub, shared(sub.filter))
                if code is None:
                    return                  # a protocol error: the connection is closed
                if code >= 0x80 and code != f.TOPIC_FILTER_INVALID:
                    failed = code
                granted.append(code)
                continue                    # no retained messages for a share (MQTT 5 3.8.4)
            arguments = _binding_arguments(sub) if self.level == 5 else None
            old = self.subscriptions.get(sub.filter)
            new = old is None or old[0] != sub
            if new:
                try:
                    self.subscribing = True
                    await self._bind(sub, arguments, old, queues)
                except Ended as exc:
                    if self.level != 5:
                        raise
                    failed = f.NOT_AUTHORIZED_5 if "403" in str(exc) else f.UNSPECIFIED_ERROR
                    log.error("MQTT connection %s: subscription to '%s' refused: %s",
                              self.name, sub.filter, exc)
                    granted.append(failed)
                    continue
                finally:
                    self.subscribing = False
            self.subscriptions[sub.filter] = (sub, arguments)
            granted.append(sub.qos)
            fresh.append((sub, new))
        self.send(f.suback_packet(s.packet_id, granted, self.level))
        if failed is not None:      # RabbitMQ 3.13: the SUBACK says why, then it closes
            self.close()
            return
        for sub, new in fresh:
            if sub.retain_handling == 2 or (sub.retain_handling == 1 and not new):
                continue
            for topic, payload, retained_qos, props in self.server.retained.matching(
                    self.vhost, sub.filter):
                out = min(sub.qos, retained_qos)
                if sub.identifier:
                    props = dict(props, subscription_identifier=[sub.identifier])
                self._send_publish(topic, payload, out, self._packet_id() if out else None,
                                   True, False, props)

    async def _subscribe_shared(self, sub: f.Subscription, share) -> int | None:
        """An MQTT 5 shared subscription (``topics.shared``): the share's queue, declared
        alike by every member (durable, kept a day after its last member left), bound to
        the filter and consumed on this connection's channel -- each message goes to one
        member; one a member left unacknowledged goes to another. The SUBACK's code, or
        None when the connection ended for it (No Local on a share: a protocol error)."""
        if share is None:
            log.warning("MQTT connection %s: not a shared subscription: '%s'", self.name,
                        sub.filter)
            return f.TOPIC_FILTER_INVALID
        if sub.no_local:
            log.error("MQTT protocol error on connection %s: No Local on shared subscription "
                      "'%s'", self.name, sub.filter)
            self.disconnect(f.PROTOCOL_ERROR)
            self.close(send_will=True)
            return None
        known = self.shared.get(sub.filter)
        if known is not None:               # again: its QoS and identifier are the new ones
            self.consumers[known[0]] = sub.qos
            self.shared[sub.filter] = (known[0], sub, share[1])
            self.subscriptions[sub.filter] = (sub, None)
            return sub.qos
        queue = shared_queue(*share)
        self.next_share += 1
        tag = f"mqtt-share-{self.next_share}"
        try:
            self.subscribing = True
            await self._call(lambda cb: self.channel.queue_declare(
                queue, durable=True, arguments={"x-expires": MAX_SESSION_EXPIRY * 1000},
                callback=cb))
            await self._call(lambda cb: self.channel.queue_bind(
                queue, self.cfg.mqtt_exchange, to_amqp(share[1]), callback=cb))
            self.consumers[tag] = sub.qos
            self.shared[sub.filter] = (tag, sub, share[1])
            self.amqp.tap(self.channel.channel_number, self._deliver)
            await self._call(lambda cb: self.channel.basic_consume(
                queue, tapped, consumer_tag=tag, callback=cb))
        except Ended as exc:
            log.error("MQTT connection %s: shared subscription '%s' refused: %s", self.name,
                      sub.filter, exc)
            self.shared.pop(sub.filter, None)
            self.consumers.pop(tag, None)
            return f.NOT_AUTHORIZED_5 if "403" in str(exc) else f.UNSPECIFIED_ERROR
        finally:
            self.subscribing = False
        self.subscriptions[sub.filter] = (sub, None)
        return sub.qos

    async def _bind(self, sub: f.Subscription, arguments, old, queues) -> None:
        """Bind the filter to its QoS's queue, then take away what it replaces (the same
        filter again replaces the subscription: MQTT 3.1.1 3.8.4, MQTT 5 3.8.4)."""
        await self._ensure_queue(sub.qos)
        key = to_amqp(sub.filter)
        exchange = self.cfg.mqtt_exchange
        await self._call(lambda cb: self.channel.queue_bind(
            queues[sub.qos], exchange, key, arguments=arguments, callback=cb))
        if old is not None:
            if (old[0].qos, old[1]) != (sub.qos, arguments):
                await self._call(lambda cb: self.channel.queue_unbind(
                    queues[old[0].qos], exchange, key, arguments=old[1], callback=cb))
        else:
            await self._call(lambda cb: self.channel.queue_unbind(
                queues[1 - sub.qos], exchange, key, callback=cb))

    async def _unsubscribe(self, u: f.Unsubscribe) -> None:
        codes = []
        queues = subscription_queues(self.client_id)
        for topic_filter in u.topics:
            key = to_amqp(topic_filter)
            old = self.subscriptions.pop(topic_filter, None)
            share = self.shared.pop(topic_filter, None)
            if share is not None:           # this member leaves the share; the queue stays
                self.consumers.pop(share[0], None)
                await self._call(lambda cb, t=share[0]: self.channel.basic_cancel(
                    t, callback=cb))
                codes.append(f.SUCCESS)
                continue
            if self.level == 5:
                if old is None:
                    codes.append(f.NO_SUBSCRIPTION_EXISTED)
                    continue
                await self._call(lambda cb, q=queues[old[0].qos], a=old[1]:
                                 self.channel.queue_unbind(q, self.cfg.mqtt_exchange, key,
                                                           arguments=a, callback=cb))
                codes.append(f.SUCCESS)
                continue
            for queue in queues:
                await self._call(lambda cb, q=queue: self.channel.queue_unbind(
                    q, self.cfg.mqtt_exchange, key, callback=cb))
        self.send(f.unsuback_packet(u.packet_id, codes, self.level))

    # ------------------------------------------------------------ the session
    def _queue_wanted(self, qos: int) -> tuple[bool, bool, dict | None]:
        """(durable, auto_delete, arguments) of the session's queue of ``qos``: a session
        that ends with the connection auto-deletes; a kept one expires ``x-expires`` after
        its client left. MQTT 3.1.1's QoS 0 queue never outlives the connection."""
        if qos == 0 and self.level != 5:
            return False, True, None
        if not self.session_expiry:
            return qos == 1, True, None
        return qos == 1, False, {"x-expires": self.session_expiry * 1000}

    async def _ensure_queue(self, qos: int) -> None:
        tag = f"mqtt-qos{qos}"
        if tag in self.consumers:                       # consumed already
            return
        queue = subscription_queues(self.client_id)[qos]
        durable, auto_delete, arguments = self._queue_wanted(qos)
        vhost = self.server.broker.vhosts.get(self.vhost)
        kept = vhost.queues.get(queue) if vhost is not None else None
        if kept is not None and (kept.durable, kept.auto_delete, kept.arguments) != (
                durable, auto_delete, arguments or {}):
            # a session kept with another expiry: consumed as it is, its expiry now ours
            # (RabbitMQ's maybe_update_session_expiry_interval)
            self._set_expiry(kept, arguments)
            await self._call(lambda cb: self.channel.queue_declare(queue, passive=True,
                                                                   callback=cb))
        else:
            await self._call(lambda cb: self.channel.queue_declare(
                queue, durable=durable, auto_delete=auto_delete, arguments=arguments,
                callback=cb))
        self.consumers[tag] = qos           # known before the first delivery can come
        channel = self.channel
        if qos == 0:
            channel = self.qos0_channel = await self._open_channel(self._channel_closed)
            await self._call(lambda cb: channel.basic_qos(prefetch_count=QOS0_WINDOW,
                                                          callback=cb))
        self.amqp.tap(channel.channel_number, self._deliver)     # deliveries read raw
        await self._call(lambda cb: channel.basic_consume(
            queue, tapped, consumer_tag=tag, callback=cb))

    def _set_expiry(self, queue, arguments: dict | None) -> None:
        """A kept session queue's ``x-expires`` set to this session's (none: it is deleted
        when the connection ends, ``_end_session``)."""
        expires = (arguments or {}).get("x-expires")
        if expires is not None and queue.arguments.get("x-expires") != expires:
            self.server.broker.set_queue_expires(queue, expires)

    async def _resume_session(self) -> None:
        """A kept session: its subscriptions (with their MQTT 5 options) from the bindings,
        and its queues consumed again."""
        vhost = self.server.broker.vhosts.get(self.vhost)
        if vhost is None:
            return
        queues = subscription_queues(self.client_id)
        exchange = vhost.exchanges.get(self.cfg.mqtt_exchange)
        for (dest, key, _), arguments in (exchange.bindings.items() if exchange else ()):
            if isinstance(dest, QueueRef) and dest.vhost is vhost and dest.name in queues:
                sub = _subscription(to_mqtt(key), queues.index(dest.name), arguments)
                self.subscriptions[sub.filter] = (sub, dict(arguments) or None)
        for qos in ((0, 1) if self.level == 5 else (1,)):
            if queues[qos] in vhost.queues:
                await self._ensure_queue(qos)

    async def _disconnected(self, d: f.Disconnect) -> None:
        """The client's DISCONNECT: MQTT 5's may change the session's expiry and, with a
        reason code other than 0, asks for the will."""
        if self.level == 5:
            expiry = d.properties.get("session_expiry_interval")
            if expiry is not None and not self.session_expiry and expiry:
                log.warning("MQTT connection %s: DISCONNECT may not set a session expiry "
                            "when CONNECT's was 0; ignored", self.name)
            elif expiry is not None:
                await self._change_expiry(min(expiry, MAX_SESSION_EXPIRY))
        if self.level != 5 or d.reason == f.SUCCESS:
            self.will = None
        self.close(send_will=True)

    async def _change_expiry(self, expiry: int) -> None:
        if expiry == self.session_expiry:
            return
        self.session_expiry = expiry
        vhost = self.server.broker.vhosts.get(self.vhost)
        for qos, queue in enumerate(subscription_queues(self.client_id)):
            q = vhost.queues.get(queue) if vhost is not None else None
            if q is None:
                continue
            if not expiry:
                await self._call(lambda cb, n=queue: self.channel.queue_delete(n, callback=cb))
            elif not q.auto_delete:
                self._set_expiry(q, self._queue_wanted(qos)[2])

    def _end_session(self) -> None:
        """MQTT 5 with a session expiry of 0: a kept session it took up ends with the
        connection (a queue it declared itself auto-deletes); not when another connection
        with its client id took over, which decides what the session becomes."""
        vhost = self.server.broker.vhosts.get(self.vhost)
        if self.level != 5 or self.session_expiry or vhost is None or self.handed_over:
            return
        for queue in subscription_queues(self.client_id):
            q = vhost.queues.get(queue)
            if q is not None and not q.auto_delete:
                self.server.end_session(self.vhost, queue)

    def _deliver(self, m: Delivery) -> None:
        """A delivery of either consumer, read raw (``delivery_tap.py``): a PUBLISH."""
        if self.closed:
            return
        sub_qos = self.consumers.get(m.consumer_tag, 0)
        topic = to_mqtt(m.routing_key)
        props, retain, send = {}, False, True
        matched: list = []              # the client's subscriptions the topic matches
        share = self._share_of(m.consumer_tag) if self.shared else None
        if self.level == 5:
            try:
                got = mqtt5.from_amqp_properties_cached(m.properties, time.time())
            except ValueError:
                log.error("MQTT connection %s: a delivery's properties do not decode",
                          self.name)
                got = mqtt5.Received({})
            published, dup, props = got.qos, got.dup, got.properties
            if share is not None:       # a share's delivery: that subscription's alone
                matched = [share[1]] if matches(share[2], topic) else []
            else:
                matched = [sub for sub, _ in self.subscriptions.values()
                           if sub.qos == sub_qos and matches(sub.filter, topic)
                           and not sub.filter.startswith(SHARE)]
            if got.publisher == self.client_id and matched \
                    and all(sub.no_local for sub in matched):
                send = False            # its own message, on No Local subscriptions only
            ids = sorted({sub.identifier for sub in matched if sub.identifier})
            if ids:
                props = dict(props, subscription_identifier=ids)
            retain = got.retained and any(sub.retain_as_published for sub in matched)
        else:
            try:
                headers = P.headers_of(m.properties)
            except ValueError:
                log.error("MQTT connection %s: a delivery's properties do not decode",
                          self.name)
                headers = {}
            published, dup = headers.get("x-mqtt-publish-qos"), bool(headers.get("x-mqtt-dup"))
            if not isinstance(published, int):
                published = None
            if topic.startswith("$"):
                matched = [sub for sub, _ in self.subscriptions.values()
                           if sub.qos == sub_qos and matches(sub.filter, topic)]
        if topic.startswith("$") and not matched:
            # routed by a filter starting with a wildcard, which a topic starting with $
            # does not match (MQTT 3.1.1 4.7.2, MQTT 5 4.7.2): the topic exchange knows no $
            send = False
        dup = bool(m.redelivered or dup)
        qos = 0
        if sub_qos and send:
            qos = min(published, 1) if published is not None else 1
        if dup and qos == 0:            # RabbitMQ drops a redelivered QoS 0 message
            send = False
        packet_id = self._packet_id() if qos else None
        if send and not self._send_publish(topic, m.body, qos, packet_id, retain, dup, props):
            qos = 0                     # too big for the client: dropped, acked
        if qos:
            self.awaiting_ack[packet_id] = m.delivery_tag
            return
        if sub_qos or share is not None:    # a QoS 0 message of a queue with acks: now
            self.amqp_out.append(build_confirm(m.channel, m.delivery_tag, False))
        else:
            self.qos0_delivered = m.delivery_tag        # acked soon (_ack_qos0)
        if not self.flush_soon:
            self.flush_soon = True
            self.loop.call_soon(self._after_deliveries)

    def _share_of(self, tag: str):
        for share in self.shared.values():
            if share[0] == tag:
                return share
        return None

    def _send_publish(self, topic: str, payload: bytes, qos: int, packet_id: int | None,
                      retain: bool, dup: bool, props: dict) -> bool:
        """A PUBLISH to the client; MQTT 5: with a topic alias when the client takes them,
        and not at all (False) when it is over the client's Maximum Packet Size."""
        if self.level != 5:
            self.send(f.publish_packet(topic, payload, qos, packet_id, retain, dup))
            return True
        alias = self.aliases_out.get(topic)
        known = alias is not None       # the client has it: the topic goes as the alias
        if not known and len(self.aliases_out) < self.alias_max_out \
                and len(topic.encode()) > 1:
            alias = len(self.aliases_out) + 1
        if alias is not None:
            props = dict(props, topic_alias=alias)
        packet = f.publish_packet("" if known else topic, payload, qos, packet_id, retain,
                                  dup, 5, props)
        if self.max_packet_out is not None and len(packet) > self.max_packet_out:
            log.debug("MQTT connection %s: a message of %d bytes is over the client's "
                      "maximum packet size (%d): dropped", self.name, len(packet),
                      self.max_packet_out)
            return False
        if alias is not None:
            self.aliases_out[topic] = alias
        self.send(packet)
        return True

    def _after_deliveries(self) -> None:
        """Once per read of the AMQP connection: its QoS 0 deliveries are acked."""
        self.flush_soon = False
        if not self.closed and self.amqp is not None and self.amqp.is_open:
            self._ack_qos0()
            self._flush_amqp()

    def _ack_qos0(self) -> None:
        if self.qos0_delivered > self.qos0_acked and not self.writing_paused \
                and self.qos0_channel is not None and self.qos0_channel.is_open:
            self.amqp_out.append(build_confirm(self.qos0_channel.channel_number,
                                               self.qos0_delivered, True))
            self.qos0_acked = self.qos0_delivered

    def _packet_id(self) -> int:
        packet_id = self.next_packet_id
        self.next_packet_id = packet_id + 1 if packet_id < 0xFFFF else 1
        return packet_id

    # ------------------------------------------------------------ AMQP errors
    def _channel_closed(self, _channel, reason) -> None:
        self._end(Ended(f"channel closed: {reason}"))
        if self.subscribing and self.level == 5:
            return                      # _subscribe sends the SUBACK, then closes
        if not self.closed and self.connected:
            log.error("MQTT connection %s is closing: %s", self.name, reason)
            self.close()


def will_queue(client_id: str) -> str:
    return f"mqtt-will-{client_id}"


def _properties(qos: int, dup: bool) -> bytes:
    """A publish's properties as RabbitMQ's plugin sets them: headers ``x-mqtt-publish-qos``
    (a byte) and ``x-mqtt-dup`` (a bool), delivery mode 2 for QoS 1."""
    table = b"".join((b"\x12x-mqtt-publish-qos", b"b", bytes((qos,)),
                      b"\x0ax-mqtt-dup", b"t", bytes((dup,))))
    return struct.pack(">HI", 0x2000 | 0x1000, len(table)) + table + bytes((2 if qos else 1,))


PROPERTIES = {qos: {dup: _properties(qos, dup) for dup in (False, True)} for qos in (0, 1)}


def _binding_arguments(sub: f.Subscription) -> dict | None:
    """An MQTT 5 subscription's options as its binding's arguments (those not at their
    default: a plain subscription's binding is a 3.1.1 one)."""
    arguments = {}
    if sub.identifier:
        arguments[SUBSCRIPTION_ID] = sub.identifier
    if sub.no_local:
        arguments[NO_LOCAL] = True
    if sub.retain_as_published:
        arguments[RETAIN_AS_PUBLISHED] = True
    if sub.retain_handling:
        arguments[RETAIN_HANDLING] = sub.retain_handling
    return arguments or None


def _subscription(topic_filter: str, qos: int, arguments: dict) -> f.Subscription:
    """A kept session's subscription, from its binding."""
    sub = f.Subscription(topic_filter, qos, bool(arguments.get(NO_LOCAL)),
                         bool(arguments.get(RETAIN_AS_PUBLISHED)),
                         int(arguments.get(RETAIN_HANDLING) or 0))
    identifier = arguments.get(SUBSCRIPTION_ID)
    sub.identifier = identifier if isinstance(identifier, int) else None
    return sub
