"""MQTT 3.1, 3.1.1 and 5 packets: parsed from bytes and built into bytes, with no I/O.

A packet is a fixed header (type in the high nibble of its first byte, flags in the low
one; then the remaining length, 1-4 bytes of 7 bits each, least significant first) and
that many bytes. What the broker reads (CONNECT, PUBLISH, PUBACK, SUBSCRIBE, UNSUBSCRIBE,
PINGREQ, DISCONNECT) is decoded into the small classes below; what it writes is built by
the ``*_packet`` functions. A malformed packet raises ``FrameError``: the connection is
closed (MQTT 3.1.1 has no error reply after CONNECT), as RabbitMQ's ``rabbit_mqtt_frame`` does.

MQTT 5 (protocol level 5) adds a property list to most packets (a variable-length integer
of its size, then identifier-value pairs: ``PROPERTIES`` below names each identifier and its
type) and a reason code to the acknowledgements. The parser learns the level from CONNECT
(``Parser.level``) and decodes each later packet by it; the builders take ``level``.
Properties are a dict by name; ``user_property`` is a list of (name, value) pairs and
``subscription_identifier`` a list of integers, as they may repeat.

Hand-written: the format is a page of the spec, and the Python MQTT libraries at hand are
clients (paho-mqtt) or whole brokers whose codecs are not meant to be used alone.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = range(8, 15)

PROTOCOL_NAMES = {3: "MQIsdp", 4: "MQTT", 5: "MQTT"}   # protocol level -> name (3.1, 3.1.1, 5)
MAX_LENGTH = 268_435_455                        # the largest remaining length (4 bytes)

# CONNACK return codes
ACCEPTED, BAD_PROTOCOL, BAD_CLIENT_ID, UNAVAILABLE, BAD_CREDENTIALS, NOT_AUTHORIZED = range(6)
SUBACK_FAILURE = 0x80
AUTH = 15

# MQTT 5 reason codes (section 2.4) the broker sends
SUCCESS = 0x00
DISCONNECT_WITH_WILL = 0x04
NO_MATCHING_SUBSCRIBERS = 0x10
NO_SUBSCRIPTION_EXISTED = 0x11
UNSPECIFIED_ERROR = 0x80
MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82
IMPLEMENTATION_SPECIFIC_ERROR = 0x83
UNSUPPORTED_PROTOCOL_VERSION = 0x84
CLIENT_IDENTIFIER_NOT_VALID = 0x85
BAD_USER_NAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED_5 = 0x87
SERVER_UNAVAILABLE = 0x88
SERVER_SHUTTING_DOWN = 0x8B
BAD_AUTHENTICATION_METHOD = 0x8C
KEEP_ALIVE_TIMEOUT = 0x8D
SESSION_TAKEN_OVER = 0x8E
TOPIC_FILTER_INVALID = 0x8F
TOPIC_NAME_INVALID = 0x90
RECEIVE_MAXIMUM_EXCEEDED = 0x93
TOPIC_ALIAS_INVALID = 0x94
PACKET_TOO_LARGE = 0x95
QUOTA_EXCEEDED = 0x97
PAYLOAD_FORMAT_INVALID = 0x99
QOS_NOT_SUPPORTED = 0x9B
SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2

# MQTT 5 properties (section 2.2.2.2): identifier -> (name, type)
BYTE, U16, U32, VARINT, UTF8, BINARY, PAIR = "byte", "u16", "u32", "varint", "utf8", \
    "binary", "pair"
PROPERTIES = {
    0x01: ("payload_format_indicator", BYTE),
    0x02: ("message_expiry_interval", U32),
    0x03: ("content_type", UTF8),
    0x08: ("response_topic", UTF8),
    0x09: ("correlation_data", BINARY),
    0x0B: ("subscription_identifier", VARINT),
    0x11: ("session_expiry_interval", U32),
    0x12: ("assigned_client_identifier", UTF8),
    0x13: ("server_keep_alive", U16),
    0x15: ("authentication_method", UTF8),
    0x16: ("authentication_data", BINARY),
    0x17: ("request_problem_information", BYTE),
    0x18: ("will_delay_interval", U32),
    0x19: ("request_response_information", BYTE),
    0x1A: ("response_information", UTF8),
    0x1C: ("server_reference", UTF8),
    0x1F: ("reason_string", UTF8),
    0x21: ("receive_maximum", U16),
    0x22: ("topic_alias_maximum", U16),
    0x23: ("topic_alias", U16),
    0x24: ("maximum_qos", BYTE),
    0x25: ("retain_available", BYTE),
    0x26: ("user_property", PAIR),
    0x27: ("maximum_packet_size", U32),
    0x28: ("wildcard_subscription_available", BYTE),
    0x29: ("subscription_identifier_available", BYTE),
    0x2A: ("shared_subscription_available", BYTE),
}
PROPERTY_IDS = {name: (ident, kind) for ident, (name, kind) in PROPERTIES.items()}
REPEATABLE = {"user_property", "subscription_identifier"}


class FrameError(Exception):
    """A packet that does not parse: the connection is closed."""


@dataclass
class Connect:
    protocol_name: str
    level: int
    clean_session: bool
    keepalive: int
    client_id: str
    will_topic: str | None = None
    will_message: bytes | None = None
    will_qos: int = 0
    will_retain: bool = False
    username: str | None = None
    password: str | None = None
    properties: dict = field(default_factory=dict)
    will_properties: dict = field(default_factory=dict)


@dataclass
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: dict = field(default_factory=dict)


@dataclass
class Subscription:
    """One filter of a SUBSCRIBE, with its options (MQTT 5's; 3.1.1 has only the QoS)."""
    filter: str
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    identifier: int | None = None           # the SUBSCRIBE's Subscription Identifier


@dataclass
class Subscribe:
    packet_id: int
    topics: list = field(default_factory=list)      # [Subscription]
    properties: dict = field(default_factory=dict)


@dataclass
class Unsubscribe:
    packet_id: int
    topics: list = field(default_factory=list)      # [filter]
    properties: dict = field(default_factory=dict)


@dataclass
class PubAck:
    packet_id: int
    reason: int = SUCCESS


@dataclass
class Disconnect:
    reason: int = SUCCESS
    properties: dict = field(default_factory=dict)


@dataclass
class Simple:
    """PINGREQ, or a packet type the broker does not take (PUBREC, AUTH, ...)."""
    kind: int


class Parser:
    """Bytes in, packets out: ``feed`` returns the packets complete so far and keeps the
    rest. ``max_length`` bounds one packet (a client cannot make the broker buffer more)."""

    def __init__(self, max_length: int = MAX_LENGTH):
        self.buf = bytearray()
        self.max_length = max_length
        self.level = 4                  # the protocol level, from CONNECT

    def feed(self, data: bytes) -> list:
        self.buf += data
        out, pos = [], 0
        try:
            while True:
                head = self._header(pos)
                if head is None:
                    return out
                kind, flags, start, length = head
                if len(self.buf) < start + length:
                    return out
                packet = decode(kind, flags, bytes(self.buf[start:start + length]),
                                self.level)
                if kind == CONNECT:
                    self.level = packet.level
                out.append(packet)
                pos = start + length
        finally:
            if pos:
                del self.buf[:pos]          # once per read: a read holds many packets

    def _header(self, pos: int):
        buf = self.buf
        if len(buf) < pos + 2:
            return None
        length, shift, i = 0, 0, pos + 1
        while True:
            if i >= len(buf):
                return None
            byte = buf[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise FrameError("invalid remaining length")
        if length > self.max_length:
            raise FrameError(f"packet of {length} bytes is over the limit of "
                             f"{self.max_length}")
        return buf[pos] >> 4, buf[pos] & 0x0F, i, length


_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")


class _Reader:
    def __init__(self, body: bytes):
        self.body, self.at = body, 0

    def u8(self) -> int:
        if self.at >= len(self.body):
            raise FrameError("packet too short")
        self.at += 1
        return self.body[self.at - 1]

    def _unpack(self, fixed: struct.Struct) -> int:
        if self.at + fixed.size > len(self.body):
            raise FrameError("packet too short")
        (value,) = fixed.unpack_from(self.body, self.at)
        self.at += fixed.size
        return value

    def u16(self) -> int:
        return self._unpack(_U16)

    def u32(self) -> int:
        return self._unpack(_U32)

    def binary(self) -> bytes:
        n = self.u16()
        if self.at + n > len(self.body):
            raise FrameError("packet too short")
        self.at += n
        return self.body[self.at - n:self.at]

    def string(self) -> str:
        try:
            return self.binary().decode()
        except UnicodeDecodeError:
            raise FrameError("a string is not UTF-8") from None

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 21:
                raise FrameError("invalid variable byte integer")

    def properties(self) -> dict:
        """An MQTT 5 property list: a dict by name (``PROPERTIES``)."""
        end = self.varint() + self.at
        if end > len(self.body):
            raise FrameError("properties longer than the packet")
        props: dict = {}
        while self.at < end:
            ident = self.varint()
            if ident not in PROPERTIES:
                raise FrameError(f"unknown property identifier {ident:#x}")
            name, kind = PROPERTIES[ident]
            value = _READ[kind](self)
            if name in REPEATABLE:
                props.setdefault(name, []).append(value)
            elif name in props:
                raise FrameError(f"property {name} given twice")
            else:
                props[name] = value
        if self.at != end:
            raise FrameError("a property runs past the property list")
        return props

    def pair(self) -> tuple[str, str]:
        return self.string(), self.string()

    def rest(self) -> bytes:
        return self.body[self.at:]

    def done(self) -> bool:
        return self.at >= len(self.body)


# a property's type -> how it is read
_READ = {BYTE: _Reader.u8, U16: _Reader.u16, U32: _Reader.u32, VARINT: _Reader.varint,
         UTF8: _Reader.string, BINARY: _Reader.binary, PAIR: _Reader.pair}


def decode(kind: int, flags: int, body: bytes, level: int = 4):
    r = _Reader(body)
    v5 = level == 5
    if kind == CONNECT:
        name = r.string()
        level = r.u8()
        bits = r.u8()
        if bits & 0x01:
            raise FrameError("CONNECT with the reserved flag set")
        keepalive = r.u16()
        properties = r.properties() if level == 5 else {}
        c = Connect(name, level, bool(bits & 0x02), keepalive, r.string(),
                    properties=properties)
        if bits & 0x04:
            if level == 5:
                c.will_properties = r.properties()
            c.will_topic, c.will_message = r.string(), r.binary()
            c.will_qos, c.will_retain = (bits >> 3) & 0x03, bool(bits & 0x20)
        if bits & 0x80:
            c.username = r.string()
        if bits & 0x40:
            c.password = r.binary().decode(errors="replace")
        return c
    if kind == PUBLISH:
        qos = (flags >> 1) & 0x03
        if qos == 3:
            raise FrameError("PUBLISH with QoS 3")
        topic = r.string()
        packet_id = r.u16() if qos else None
        properties = r.properties() if v5 else {}
        return Publish(topic, r.rest(), qos, bool(flags & 0x01), bool(flags & 0x08), packet_id,
                       properties)
    if kind == PUBACK:
        ack = PubAck(r.u16())
        if v5 and not r.done():
            ack.reason = r.u8()
        return ack
    if kind in (SUBSCRIBE, UNSUBSCRIBE):
        if flags != 0x02:
            raise FrameError(f"{'UN' if kind == UNSUBSCRIBE else ''}SUBSCRIBE with flags "
                             f"{flags:#x}")
        packet = (Subscribe if kind == SUBSCRIBE else Unsubscribe)(r.u16())
        if v5:
            packet.properties = r.properties()
        while not r.done():
            topic = r.string()
            if kind == UNSUBSCRIBE:
                packet.topics.append(topic)
                continue
            options = r.u8()
            if v5:
                if options & 0xC0 or (options >> 4) & 0x03 == 3 or options & 0x03 == 3:
                    raise FrameError(f"subscription options {options:#x}")
                packet.topics.append(Subscription(topic, options & 0x03, bool(options & 0x04),
                                                  bool(options & 0x08), (options >> 4) & 0x03))
            else:
                packet.topics.append(Subscription(topic, options & 0x03))
        if not packet.topics:
            raise FrameError("a subscription packet without a topic")
        return packet
    if kind == DISCONNECT:
        d = Disconnect()
        if v5 and not r.done():
            d.reason = r.u8()
            if not r.done():
                d.properties = r.properties()
        return d
    return Simple(kind)


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _varint(len(body)) + body


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">H", len(raw)) + raw


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _binary(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def encode_properties(props: dict | None) -> bytes:
    """An MQTT 5 property list (its length first) from a dict by name."""
    out = bytearray()
    for name, value in (props or {}).items():
        ident, kind = PROPERTY_IDS[name]
        for v in (value if name in REPEATABLE else (value,)):
            out += _varint(ident)
            if kind == BYTE:
                out.append(v)
            elif kind == U16:
                out += struct.pack(">H", v)
            elif kind == U32:
                out += struct.pack(">I", v)
            elif kind == VARINT:
                out += _varint(v)
            elif kind == UTF8:
                out += _string(v)
            elif kind == BINARY:
                out += _binary(v)
            else:
                out += _string(v[0]) + _string(v[1])
    return _varint(len(out)) + bytes(out)


def connack_packet(code: int, session_present: bool = False, level: int = 4,
                   properties: dict | None = None) -> bytes:
    body = bytes([1 if session_present else 0, code])
    if level == 5:
        body += encode_properties(properties)
    return _packet(CONNACK, 0, body)


def publish_packet(topic: str, payload: bytes, qos: int = 0, packet_id: int | None = None,
                   retain: bool = False, dup: bool = False, level: int = 4,
                   properties: dict | None = None) -> bytes:
    flags = (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    head = _string(topic) + (struct.pack(">H", packet_id) if qos else b"")
    if level == 5:
        head += encode_properties(properties)
    return _packet(PUBLISH, flags, head + payload)


def puback_packet(packet_id: int, reason: int = SUCCESS, level: int = 4) -> bytes:
    if level == 5 and reason != SUCCESS:
        return _packet(PUBACK, 0, struct.pack(">HB", packet_id, reason))
    return _packet(PUBACK, 0, struct.pack(">H", packet_id))


def suback_packet(packet_id: int, codes: list, level: int = 4) -> bytes:
    props = encode_properties(None) if level == 5 else b""
    return _packet(SUBACK, 0, struct.pack(">H", packet_id) + props + bytes(codes))


def unsuback_packet(packet_id: int, codes: list | None = None, level: int = 4) -> bytes:
    if level == 5:
        return _packet(UNSUBACK, 0, struct.pack(">H", packet_id) + encode_properties(None)
                       + bytes(codes or ()))
    return _packet(UNSUBACK, 0, struct.pack(">H", packet_id))


def disconnect_packet(reason: int = SUCCESS, properties: dict | None = None) -> bytes:
    """MQTT 5's DISCONNECT, which a server sends too (3.1.1 has the client's only)."""
    return _packet(DISCONNECT, 0, bytes([reason]) + encode_properties(properties))


def pingresp_packet() -> bytes:
    return _packet(PINGRESP, 0, b"")


# what a client sends (the tests' own client builds these)
def connect_packet(client_id: str, *, clean_session: bool = True, keepalive: int = 60,
                   username: str | None = None, password: str | None = None,
                   level: int = 4, will: tuple | None = None,
                   properties: dict | None = None,
                   will_properties: dict | None = None) -> bytes:
    bits = (0x02 if clean_session else 0) | (0x80 if username is not None else 0) \
        | (0x40 if password is not None else 0)
    payload = _string(client_id)
    if will is not None:                    # (topic, message, qos, retain)
        topic, message, qos, retain = will
        bits |= 0x04 | qos << 3 | (0x20 if retain else 0)
        if level == 5:
            payload += encode_properties(will_properties)
        payload += _string(topic) + struct.pack(">H", len(message)) + message
    if username is not None:
        payload += _string(username)
    if password is not None:
        payload += _string(password)
    head = _string(PROTOCOL_NAMES.get(level, "MQTT")) + bytes([level, bits]) \
        + struct.pack(">H", keepalive)
    if level == 5:
        head += encode_properties(properties)
    return _packet(CONNECT, 0, head + payload)
