"""MQTT 3.1 / 3.1.1 packets: parsed from bytes and built into bytes, with no I/O.

A packet is a fixed header (type in the high nibble of its first byte, flags in the low
one; then the remaining length, 1-4 bytes of 7 bits each, least significant first) and
that many bytes. What the broker reads (CONNECT, PUBLISH, PUBACK, SUBSCRIBE, UNSUBSCRIBE,
PINGREQ, DISCONNECT) is decoded into the small classes below; what it writes is built by
the ``*_packet`` functions. A malformed packet raises ``FrameError``: the connection is
closed (MQTT has no error reply after CONNECT), as RabbitMQ's ``rabbit_mqtt_frame`` does.

Hand-written: the format is a page of the spec, and the Python MQTT libraries at hand are
clients (paho-mqtt) or whole brokers whose codecs are not meant to be used alone.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = range(8, 15)

PROTOCOL_NAMES = {3: "MQIsdp", 4: "MQTT"}       # protocol level -> name (3.1, 3.1.1)
MAX_LENGTH = 268_435_455                        # the largest remaining length (4 bytes)

# CONNACK return codes
ACCEPTED, BAD_PROTOCOL, BAD_CLIENT_ID, UNAVAILABLE, BAD_CREDENTIALS, NOT_AUTHORIZED = range(6)
SUBACK_FAILURE = 0x80


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


@dataclass
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None


@dataclass
class Subscribe:
    packet_id: int
    topics: list = field(default_factory=list)      # [(filter, qos)]


@dataclass
class Unsubscribe:
    packet_id: int
    topics: list = field(default_factory=list)      # [filter]


@dataclass
class PubAck:
    packet_id: int


@dataclass
class Simple:
    """PINGREQ, DISCONNECT, or a packet type the broker does not take (PUBREC, ...)."""
    kind: int


class Parser:
    """Bytes in, packets out: ``feed`` returns the packets complete so far and keeps the
    rest. ``max_length`` bounds one packet (a client cannot make the broker buffer more)."""

    def __init__(self, max_length: int = MAX_LENGTH):
        self.buf = bytearray()
        self.max_length = max_length

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
                out.append(decode(kind, flags, bytes(self.buf[start:start + length])))
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


class _Reader:
    def __init__(self, body: bytes):
        self.body, self.at = body, 0

    def u8(self) -> int:
        if self.at >= len(self.body):
            raise FrameError("packet too short")
        self.at += 1
        return self.body[self.at - 1]

    def u16(self) -> int:
        if self.at + 2 > len(self.body):
            raise FrameError("packet too short")
        (value,) = struct.unpack_from(">H", self.body, self.at)
        self.at += 2
        return value

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

    def rest(self) -> bytes:
        return self.body[self.at:]

    def done(self) -> bool:
        return self.at >= len(self.body)


def decode(kind: int, flags: int, body: bytes):
    r = _Reader(body)
    if kind == CONNECT:
        name = r.string()
        level = r.u8()
        bits = r.u8()
        keepalive = r.u16()
        c = Connect(name, level, bool(bits & 0x02), keepalive, r.string())
        if bits & 0x04:
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
        return Publish(topic, r.rest(), qos, bool(flags & 0x01), bool(flags & 0x08), packet_id)
    if kind == PUBACK:
        return PubAck(r.u16())
    if kind in (SUBSCRIBE, UNSUBSCRIBE):
        if flags != 0x02:
            raise FrameError(f"{'UN' if kind == UNSUBSCRIBE else ''}SUBSCRIBE with flags "
                             f"{flags:#x}")
        packet = (Subscribe if kind == SUBSCRIBE else Unsubscribe)(r.u16())
        while not r.done():
            topic = r.string()
            packet.topics.append((topic, r.u8() & 0x03) if kind == SUBSCRIBE else topic)
        if not packet.topics:
            raise FrameError("a subscription packet without a topic")
        return packet
    return Simple(kind)


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    n, length = len(body), bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([kind << 4 | flags]) + bytes(length) + body


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">H", len(raw)) + raw


def connack_packet(code: int, session_present: bool = False) -> bytes:
    return _packet(CONNACK, 0, bytes([1 if session_present else 0, code]))


def publish_packet(topic: str, payload: bytes, qos: int = 0, packet_id: int | None = None,
                   retain: bool = False, dup: bool = False) -> bytes:
    flags = (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    head = _string(topic) + (struct.pack(">H", packet_id) if qos else b"")
    return _packet(PUBLISH, flags, head + payload)


def puback_packet(packet_id: int) -> bytes:
    return _packet(PUBACK, 0, struct.pack(">H", packet_id))


def suback_packet(packet_id: int, codes: list) -> bytes:
    return _packet(SUBACK, 0, struct.pack(">H", packet_id) + bytes(codes))


def unsuback_packet(packet_id: int) -> bytes:
    return _packet(UNSUBACK, 0, struct.pack(">H", packet_id))


def pingresp_packet() -> bytes:
    return _packet(PINGRESP, 0, b"")


# what a client sends (the tests' own client builds these)
def connect_packet(client_id: str, *, clean_session: bool = True, keepalive: int = 60,
                   username: str | None = None, password: str | None = None,
                   level: int = 4, will: tuple | None = None) -> bytes:
    bits = (0x02 if clean_session else 0) | (0x80 if username is not None else 0) \
        | (0x40 if password is not None else 0)
    payload = _string(client_id)
    if will is not None:                    # (topic, message, qos, retain)
        topic, message, qos, retain = will
        bits |= 0x04 | qos << 3 | (0x20 if retain else 0)
        payload += _string(topic) + struct.pack(">H", len(message)) + message
    if username is not None:
        payload += _string(username)
    if password is not None:
        payload += _string(password)
    head = _string(PROTOCOL_NAMES.get(level, "MQTT")) + bytes([level, bits]) \
        + struct.pack(">H", keepalive)
    return _packet(CONNECT, 0, head + payload)
