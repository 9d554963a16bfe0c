"""Events the sans-I/O connection hands to the server: what the client said, assembled."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class NeedData:
    """``next_event()`` found no complete event in the buffer (not an error)."""
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


class Paused:
    """``next_event()`` stopped before content (basic.publish, a content header or body)
    because the shell holds content (``Connection.hold_content``, during a resource alarm);
    nothing more is parsed until it lets go (h11's ``PAUSED``)."""
    def __repr__(self) -> str:
        return "PAUSED"


PAUSED = Paused()


@dataclass(slots=True)
class StartOk:
    client_properties: dict
    mechanism: str
    response: bytes
    locale: str


@dataclass(slots=True)
class TuneOk:
    channel_max: int
    frame_max: int
    heartbeat: int


@dataclass(slots=True)
class OpenVhost:
    vhost: str


@dataclass(slots=True)
class UpdateSecret:
    """connection.update-secret: answer with ``send_update_secret_ok`` or a 530."""
    new_secret: bytes
    reason: str


@dataclass(slots=True)
class ChannelOpened:
    channel: int


@dataclass(slots=True)
class ChannelClosedByPeer:
    """The client closed a channel; close-ok is already queued for sending."""
    channel: int
    reply_code: int
    reply_text: str


@dataclass(slots=True)
class ChannelCloseOk:
    """The client confirmed a close we sent; the channel number is free again."""
    channel: int


@dataclass(slots=True)
class Method:
    """Any other (cold path) method, decoded by pamqp."""
    channel: int
    method: Any


@dataclass(slots=True)
class Publish:
    channel: int
    exchange: str
    routing_key: str
    mandatory: bool
    immediate: bool
    properties: bytes
    body: bytes
    scan: Any = None          # properties.Scan: delivery mode, priority, expiration, ...


@dataclass(slots=True)
class Ack:
    channel: int
    delivery_tag: int
    multiple: bool


@dataclass(slots=True)
class Nack:
    channel: int
    delivery_tag: int
    multiple: bool
    requeue: bool


@dataclass(slots=True)
class Modify:
    """basic.modify (ours, constants.MODIFY): one delivery rejected, its message going on
    with ``properties``."""
    channel: int
    delivery_tag: int
    requeue: bool
    properties: bytes


@dataclass(slots=True)
class Heartbeat:
    pass


@dataclass(slots=True)
class ConnectionClosedByPeer:
    """The client sent connection.close; close-ok is queued, then the socket should close."""
    reply_code: int
    reply_text: str


@dataclass(slots=True)
class ConnectionCloseOk:
    """The client confirmed our connection.close: close the socket."""


@dataclass(slots=True)
class BadProtocolHeader:
    """The first 8 bytes were not AMQP 0-9-1; our header is queued, then close the socket
    (or, for AMQP 1.0's, the connection is handed over: ``amqp10/listener.py``). ``rest``:
    what was read after them."""
    received: bytes
    rest: bytes = b""
