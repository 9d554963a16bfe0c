"""Basic properties kept as the raw bytes the publisher sent.

A message's properties travel from publish to deliver untouched (no decode, no re-encode).
The broker needs only a few of them on the hot path — delivery mode, priority, expiration and
whether headers are present — and ``scan`` reads exactly those by walking the flag word.
Anything more (headers exchange, CC/BCC, dead-lettering) decodes in full through pamqp.
"""
from __future__ import annotations

import struct

from pamqp import commands
from pamqp.header import ContentHeader

# property flag bits, in wire order
F_CONTENT_TYPE = 0x8000
F_CONTENT_ENCODING = 0x4000
F_HEADERS = 0x2000
F_DELIVERY_MODE = 0x1000
F_PRIORITY = 0x0800
F_CORRELATION_ID = 0x0400
F_REPLY_TO = 0x0200
F_EXPIRATION = 0x0100
F_MESSAGE_ID = 0x0080
F_TIMESTAMP = 0x0040
F_TYPE = 0x0020
F_USER_ID = 0x0010
F_APP_ID = 0x0008
F_CLUSTER_ID = 0x0004

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class Scan:
    """The few properties the broker acts on for every message."""
    __slots__ = ("flags", "delivery_mode", "priority", "expiration", "reply_to", "user_id")

    def __init__(self, flags, delivery_mode, priority, expiration, reply_to, user_id):
        self.flags = flags
        self.delivery_mode = delivery_mode
        self.priority = priority
        self.expiration = expiration
        self.reply_to = reply_to
        self.user_id = user_id

    @property
    def persistent(self) -> bool:
        return self.delivery_mode == 2

    @property
    def has_headers(self) -> bool:
        return bool(self.flags & F_HEADERS)


def str_list(v) -> list[str]:
    """A header that holds routing keys (CC, BCC): a string or an array of them, as str."""
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [x.decode() if isinstance(x, bytes) else str(x) for x in v]
    return [v.decode() if isinstance(v, bytes) else str(v)]


def scan(raw: bytes) -> Scan:
    """Read delivery_mode, priority, expiration, reply_to, user_id from raw property bytes.

    Raises ValueError on a malformed property list.
    """
    if len(raw) < 2:
        raise ValueError("property flags truncated")
    flags = _U16.unpack_from(raw, 0)[0]
    pos = 2
    delivery_mode = priority = 0
    expiration = reply_to = user_id = None
    n = len(raw)
    try:
        if flags & 1:                           # continuation flag words: skip them
            while True:
                more = _U16.unpack_from(raw, pos)[0]
                pos += 2
                if not more & 1:
                    break
        if flags & F_CONTENT_TYPE:
            pos += 1 + raw[pos]
        if flags & F_CONTENT_ENCODING:
            pos += 1 + raw[pos]
        if flags & F_HEADERS:
            pos += 4 + _U32.unpack_from(raw, pos)[0]
        if flags & F_DELIVERY_MODE:
            delivery_mode = raw[pos]
            pos += 1
        if flags & F_PRIORITY:
            priority = raw[pos]
            pos += 1
        if flags & F_CORRELATION_ID:
            pos += 1 + raw[pos]
        if flags & F_REPLY_TO:
            end = pos + 1 + raw[pos]
            reply_to = raw[pos + 1:end].decode()
            pos = end
        if flags & F_EXPIRATION:
            end = pos + 1 + raw[pos]
            expiration = raw[pos + 1:end].decode()
            pos = end
        if flags & F_MESSAGE_ID:
            pos += 1 + raw[pos]
        if flags & F_TIMESTAMP:
            pos += 8
        if flags & F_TYPE:
            pos += 1 + raw[pos]
        if flags & F_USER_ID:
            end = pos + 1 + raw[pos]
            user_id = raw[pos + 1:end].decode()
            pos = end
        if flags & F_APP_ID:
            pos += 1 + raw[pos]
        if flags & F_CLUSTER_ID:
            pos += 1 + raw[pos]
    except (IndexError, struct.error, UnicodeDecodeError):
        raise ValueError("property list truncated") from None
    if pos > n:
        raise ValueError("property list truncated")
    return Scan(flags, delivery_mode, priority, expiration, reply_to, user_id)


def decode(raw: bytes) -> commands.Basic.Properties:
    """Full decode (cold path). Raises ValueError on a malformed property list, e.g. a
    headers table with an unknown field type (``scan`` skips the table unread)."""
    header = ContentHeader()
    try:
        header.unmarshal(b"\x00\x3c\x00\x00" + bytes(8) + raw)
    except (ValueError, IndexError, struct.error, UnicodeDecodeError, TypeError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    return header.properties


def encode(props: commands.Basic.Properties) -> bytes:
    return props.marshal()

