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
"""
from __future__ import annotations

import asyncio
import collections
import logging
import struct
import uuid

import pika

from ..adapter import AdapterConnection, Ended, refusal, tapped
from ..delivery_tap import Delivery
from ..frontend.auth import check_password
from ..frontend.session import is_loopback
from ..protocol import fieldtable
from ..protocol import properties as P
from ..protocol.fastpath import build_confirm, build_publish
from . import frames as f
from .topics import (CERT_MAPPING, PORT_MAPPING, pick_vhost, subscription_queues, to_amqp,
                     to_mqtt, valid_filter, valid_topic)

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
        self.keepalive = 0
        self.timer: asyncio.TimerHandle | None = None

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
        self.server.forget(self)
        self._close_amqp()
        self.transport.close()
        if self.connected:
            log.info("closing MQTT connection %s", self.name)

    def take_over(self) -> None:
        """Another connection logged in with this client id."""
        log.warning("MQTT disconnecting client %s with duplicate id '%s'", self.name,
                    self.client_id)
        self.close()

    def _login_timeout(self) -> None:
        if not self.connected and not self.closed:
            log.error("closing MQTT connection %s (login timeout)", self.name)
            self.close()

    def _check_keepalive(self) -> None:
        if self.loop.time() - self.heard > 1.5 * self.keepalive:
            log.error("closing MQTT connection %s (keepalive timeout)", self.name)
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
                # basic.ack, written with the others of this read (as publishes: _out)
                self.amqp_out.append(build_confirm(self.channel.channel_number, tag, False))
        elif isinstance(packet, f.Subscribe):
            await self._subscribe(packet)
        elif isinstance(packet, f.Unsubscribe):
            await self._unsubscribe(packet)
        elif isinstance(packet, f.Connect):
            log.error("MQTT protocol error on connection %s: a second CONNECT", self.name)
            self.close(send_will=True)
        elif packet.kind == f.PINGREQ:
            self.send(f.pingresp_packet())
        elif packet.kind == f.DISCONNECT:
            self.will = None
            self.close()
        else:                           # PUBREC, PUBREL, PUBCOMP (QoS 2 is taken as 1), ...
            log.error("MQTT protocol error on connection %s: packet type %d not accepted",
                      self.name, packet.kind)
            self.close(send_will=True)

    # ------------------------------------------------------------ CONNECT
    async def _connect(self, c: f.Connect) -> None:
        code, present = await self._login(c)
        self.send(f.connack_packet(code, present))
        if code != f.ACCEPTED:
            self.close()
            return
        self.connected = True
        self.parser.max_length = self.cfg.max_message_size + 2 + 0xFFFF + 2
        if present:                     # the kept session's messages: after the CONNACK
            await self._ensure_queue(1)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if c.keepalive:
            self.keepalive = c.keepalive
            self.timer = self.loop.call_later(c.keepalive / 2, self._check_keepalive)
        log.info("accepting MQTT connection %s (%s, client id: %s)", self.name, self.peer,
                 self.client_id)

    async def _login(self, c: f.Connect) -> tuple[int, bool]:
        if f.PROTOCOL_NAMES.get(c.level) != c.protocol_name:
            log.error("MQTT cannot accept connection %s: incompatible protocol version",
                      self.name)
            return f.BAD_PROTOCOL, False
        if not c.client_id and not c.clean_session:
            log.error("MQTT cannot accept connection %s: client uses an invalid ID", self.name)
            return f.BAD_CLIENT_ID, False
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
        await self._call(lambda cb: self.channel.basic_qos(prefetch_count=PREFETCH,
                                                           callback=cb))
        q1 = subscription_queues(self.client_id)[1]
        vhost = self.server.broker.vhosts.get(self.vhost)
        present = vhost is not None and q1 in vhost.queues    # the metadata's
        if present and self.clean:
            await self._call(lambda cb: self.channel.queue_delete(q1, callback=cb))
            present = False
        return f.ACCEPTED, present

    async def _open(self, password: str, level: int) -> int:
        """Log in over AMQP: a CONNACK code. The management API shows the AMQP connection
        as this MQTT client's (``frontend/adapters.py``)."""
        result = await self._open_amqp(
            self.vhost, self.user, password,
            f"{getattr(self.transport, 'protocol_name', 'MQTT')} "
            f"{'3.1.1' if level == 4 else '3.1.0'}",
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
        if not valid_topic(p.topic):
            log.error("MQTT protocol error on connection %s: cannot publish to topic '%s'",
                      self.name, p.topic)
            self.close(send_will=True)
            return
        qos = min(p.qos, 1)
        message = (to_amqp(p.topic).encode(), PROPERTIES[qos][p.dup], p.payload)
        if not qos:
            self._out(self.channel, *message)
        else:
            self.publish_seq += 1
            self.unconfirmed[self.publish_seq] = p.packet_id
            if self.confirms is not None:
                self._out(self.confirms, *message)
            else:
                if self.confirm_backlog is None:
                    self.confirm_backlog = []
                    self.amqp.channel(on_open_callback=self._confirms_opened)
                self.confirm_backlog.append(message)
        if p.retain:
            self.server.retained.retain(self.vhost, p.topic, p.payload, qos)

    def _out(self, channel, routing_key: bytes, properties: bytes, body: bytes) -> None:
        """A publish's frames, written with the others of this read (``_flush_amqp``): pika
        would encode each through its generic codec and send each with a syscall of its own;
        pika's channel is not involved (it counts nothing for publishes)."""
        self.amqp_out += build_publish(channel.channel_number, self.exchange, routing_key,
                                       properties, body, self.amqp.params.frame_max)

    def _confirms_opened(self, channel) -> None:
        """The confirm channel (opened on the first QoS 1 publish, as RabbitMQ's): what
        waited for it is published now, in order, behind confirm.select."""
        channel.add_on_close_callback(self._channel_closed)
        channel.confirm_delivery(self._confirmed)
        self.confirms = channel
        backlog, self.confirm_backlog = self.confirm_backlog, None
        for message in backlog:
            self._out(channel, *message)
        self._flush_amqp()

    def _confirmed(self, frame) -> None:
        method = frame.method
        tag, multiple = method.delivery_tag, method.multiple
        nack = isinstance(method, pika.spec.Basic.Nack)
        while self.unconfirmed:
            seq, packet_id = next(iter(self.unconfirmed.items()))
            if seq > tag or (not multiple and seq != tag):
                break
            del self.unconfirmed[seq]
            if nack:        # not PUBACKed: the client sends it again when it reconnects
                log.warning("MQTT connection %s: message %d was refused by the broker "
                            "(negative confirm)", self.name, packet_id)
            else:
                self.send(f.puback_packet(packet_id))

    def _publish_will(self) -> None:
        c = self.will
        self.will = None
        if self.channel is None or not self.channel.is_open:
            return
        qos = min(c.will_qos, 1)
        self._out(self.channel, to_amqp(c.will_topic).encode(), PROPERTIES[qos][False],
                  c.will_message)
        self._flush_amqp()
        if c.will_retain:
            self.server.retained.retain(self.vhost, c.will_topic, c.will_message, qos)

    # ------------------------------------------------------------ SUBSCRIBE
    async def _subscribe(self, s: f.Subscribe) -> None:
        granted = []
        queues = subscription_queues(self.client_id)
        for topic_filter, qos in s.topics:
            if not valid_filter(topic_filter):
                log.warning("MQTT connection %s: not a topic filter: '%s'", self.name,
                            topic_filter)
                granted.append(f.SUBACK_FAILURE)
                continue
            qos = min(qos, 1)
            await self._ensure_queue(qos)
            key = to_amqp(topic_filter)
            await self._call(lambda cb, q=queues[qos]: self.channel.queue_bind(
                q, self.cfg.mqtt_exchange, key, callback=cb))
            # the same filter again replaces the subscription (MQTT 3.1.1, 3.8.4)
            await self._call(lambda cb, q=queues[1 - qos]: self.channel.queue_unbind(
                q, self.cfg.mqtt_exchange, key, callback=cb))
            granted.append(qos)
        self.send(f.suback_packet(s.packet_id, granted))
        for (topic_filter, _), qos in zip(s.topics, granted):
            if qos == f.SUBACK_FAILURE:
                continue
            for topic, payload, retained_qos in self.server.retained.matching(self.vhost,
                                                                              topic_filter):
                out = min(qos, retained_qos)
                self.send(f.publish_packet(topic, payload, out,
                                           self._packet_id() if out else None, retain=True))

    async def _unsubscribe(self, u: f.Unsubscribe) -> None:
        for topic_filter in u.topics:
            for queue in subscription_queues(self.client_id):
                await self._call(lambda cb, q=queue: self.channel.queue_unbind(
                    q, self.cfg.mqtt_exchange, to_amqp(topic_filter), callback=cb))
        self.send(f.unsuback_packet(u.packet_id))

    async def _ensure_queue(self, qos: int) -> None:
        tag = f"mqtt-qos{qos}"
        if tag in self.consumers:                       # consumed already
            return
        queue = subscription_queues(self.client_id)[qos]
        if qos == 0:
            await self._call(lambda cb: self.channel.queue_declare(
                queue, durable=False, auto_delete=True, callback=cb))
        else:
            arguments = None if self.clean else {"x-expires": SUBSCRIPTION_TTL}
            await self._call(lambda cb: self.channel.queue_declare(
                queue, durable=True, auto_delete=self.clean, arguments=arguments,
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

    def _deliver(self, m: Delivery) -> None:
        """A delivery of either consumer, read raw (``delivery_tap.py``): a PUBLISH."""
        if self.closed:
            return
        sub_qos = self.consumers.get(m.consumer_tag, 0)
        try:
            headers = _headers(m.properties)
        except ValueError:
            log.error("MQTT connection %s: a delivery's properties do not decode", self.name)
            headers = {}
        dup = bool(m.redelivered or headers.get("x-mqtt-dup"))
        qos = 0
        if sub_qos:
            published = headers.get("x-mqtt-publish-qos")
            qos = min(published, 1) if isinstance(published, int) else 1
        packet_id = None
        if qos:
            packet_id = self._packet_id()
            self.awaiting_ack[packet_id] = m.delivery_tag
        else:
            if sub_qos:                     # a QoS 0 message of the QoS 1 queue: acked now
                self.amqp_out.append(build_confirm(m.channel, m.delivery_tag, False))
            else:
                self.qos0_delivered = m.delivery_tag        # acked soon (_ack_qos0)
            if not self.flush_soon:
                self.flush_soon = True
                self.loop.call_soon(self._after_deliveries)
        if dup and qos == 0:            # RabbitMQ drops a redelivered QoS 0 message
            return
        self.send(f.publish_packet(to_mqtt(m.routing_key), m.body, qos, packet_id, dup=dup))

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
        if not self.closed and self.connected:
            log.error("MQTT connection %s is closing: %s", self.name, reason)
            self.close()


def _headers(raw: bytes) -> dict:
    """The headers table of a delivery's raw properties ({} without one)."""
    if len(raw) < 2 or not raw[0] & (P.F_HEADERS >> 8):
        return {}
    table = P.split(raw).get(P.F_HEADERS)
    return fieldtable.field_table(table)[1] if table is not None else {}


def _properties(qos: int, dup: bool) -> bytes:
    """A publish's properties as RabbitMQ's plugin sets them: headers ``x-mqtt-publish-qos``
    (a byte) and ``x-mqtt-dup`` (a bool), delivery mode 2 for QoS 1."""
    table = b"".join((b"\x12x-mqtt-publish-qos", b"b", bytes((qos,)),
                      b"\x0ax-mqtt-dup", b"t", bytes((dup,))))
    return struct.pack(">HI", 0x2000 | 0x1000, len(table)) + table + bytes((2 if qos else 1,))


PROPERTIES = {qos: {dup: _properties(qos, dup) for dup in (False, True)} for qos in (0, 1)}
