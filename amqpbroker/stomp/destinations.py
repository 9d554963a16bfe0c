"""STOMP destinations and headers as RabbitMQ's STOMP plugin maps them onto AMQP
(``rabbit_routing_util.erl``, ``rabbit_stomp_util.erl``), no I/O.

=====================  ===========================================  ==========================
destination            SEND publishes to                            SUBSCRIBE consumes
=====================  ===========================================  ==========================
``/queue/q`` (or q)    ``""`` / ``q`` (``q`` declared, durable)     ``q`` (declared, durable)
``/amq/queue/q``       ``""`` / ``q``                               ``q`` (must exist)
``/topic/k``           ``amq.topic`` / ``k``                        a queue bound with ``k``
``/exchange/x[/k]``    ``x`` / ``k`` (or ``""``)                    a queue bound to ``x``
``/reply-queue/q``     ``""`` / ``q``                               ``q``
``/temp-queue/t``      only in ``reply-to``: an exclusive reply queue of the connection
=====================  ===========================================  ==========================

A subscription's own queue (topic, exchange) is ``stomp-subscription-<md5 of name and id>``
(``x-queue-name`` names it instead): exclusive to nobody, auto-deleted, not durable unless
the SUBSCRIBE says ``durable:true`` or ``persistent:true`` with an ``id`` -- a durable topic
subscription, kept across connections and deleted by an UNSUBSCRIBE that says durable again.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import struct

from ..protocol import fieldtable
from ..protocol import properties as P

QUEUE, AMQQUEUE, TOPIC, EXCHANGE, TEMP_QUEUE, REPLY_QUEUE = (
    "queue", "amqqueue", "topic", "exchange", "temp_queue", "reply_queue")
DEST_PREFIXES = ("/exchange", "/topic", "/queue", "/amq/queue", "/reply-queue/")
ALL_DEST_PREFIXES = ("/temp-queue",) + DEST_PREFIXES

# headers that are AMQP properties (the rest of a SEND's headers become AMQP headers)
PROPERTY_HEADERS = ("content-type", "content-encoding", "persistent", "priority",
                    "correlation-id", "reply-to", "expiration", "amqp-message-id",
                    "timestamp", "type", "user-id", "app-id")
NOT_USER_HEADERS = frozenset(PROPERTY_HEADERS + ("destination",))
# queue arguments a SUBSCRIBE (or a SEND to /queue/) may give, and their types
ARGUMENT_HEADERS = {"x-dead-letter-exchange": str, "x-dead-letter-routing-key": str,
                    "x-expires": int, "x-max-length": int, "x-max-length-bytes": int,
                    "x-max-priority": int, "x-message-ttl": int, "x-queue-type": str}


class BadDestination(Exception):
    """``kind`` is RabbitMQ's ERROR message header, the text its body."""

    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.kind, self.text = kind, text


def unescape(name: str) -> str:
    return name.replace("%2F", "/")


def escape(name: str) -> str:
    out = []
    for byte in name.encode():
        if byte == 0x2F:
            out.append("%2F")
        elif byte == 0x25:
            out.append("%25")
        elif byte < 32 or byte > 127:
            out.append(f"%{byte:X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def _to_url(parts: list[str]) -> str:
    return "/" + "/".join(parts) if parts else ""


def parse(destination: str) -> tuple[str, object]:
    """``(kind, name)``; an exchange's name is ``(exchange, routing key or None)``."""
    parts = destination.split("/")
    if len(parts) == 1:
        return QUEUE, unescape(destination)
    if parts[0] == "" and len(parts) >= 2 and parts[1] in ("exchange", "queue", "topic",
                                                            "temp-queue"):
        kind, rest = parts[1].replace("-", "_"), parts[2:]
    elif parts[:3] == ["", "amq", "queue"]:
        kind, rest = AMQQUEUE, parts[3:]
    elif parts[:2] == ["", "reply-queue"] and len(parts) > 2:
        return REPLY_QUEUE, destination[len("/reply-queue/"):]
    else:
        raise BadDestination(
            "Unknown destination",
            f"'{destination}' is not a valid destination.\n"
            f"Valid destination types are: {', '.join(ALL_DEST_PREFIXES)}.\n")
    shown = {"amqqueue": "amqqueue", "temp_queue": "temp_queue"}.get(kind, kind)
    if kind == EXCHANGE:
        if rest and rest[0] != "" and len(rest) in (1, 2):
            return EXCHANGE, (unescape(rest[0]), unescape(rest[1]) if len(rest) == 2 else None)
    elif len(rest) == 1 and rest[0]:
        return kind, unescape(rest[0])
    raise BadDestination("Invalid destination",
                         f"'{_to_url(rest)}' is not a valid {shown} destination\n")


def routing(kind: str, name, topic_exchange: str = "amq.topic") -> tuple[str, str]:
    """The exchange and routing key a destination publishes to (and binds with)."""
    if kind == EXCHANGE:
        return name[0], name[1] or ""
    if kind == TOPIC:
        return topic_exchange, name
    return "", name


def format_destination(exchange: str, routing_key: str) -> str:
    """A delivery's ``destination`` header, from where it was published."""
    if exchange == "":
        return "/queue/" + escape(routing_key)
    if exchange == "amq.topic":
        return "/topic/" + escape(routing_key)
    if routing_key == "":
        return "/exchange/" + escape(exchange)
    return f"/exchange/{escape(exchange)}/{escape(routing_key)}"


def subscription_queue_name(name: str, subscription_id: str) -> str:
    """RabbitMQ's ``stomp-subscription-`` + the base64url md5 of the destination and the
    subscription id (the id: a durable subscription's, else a random one)."""
    digest = hashlib.md5(f"{name}\x00{subscription_id}".encode()).digest()
    return "stomp-subscription-" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def boolean(value) -> bool | None:
    return {"true": True, "True": True, "false": False, "False": False}.get(value)


def is_durable(headers: dict) -> bool:
    return boolean(headers.get("durable")) is True or boolean(headers.get("persistent")) is True


def queue_arguments(headers: dict) -> dict:
    """The ``x-...`` headers that are queue arguments; a number that is not: ValueError."""
    out = {}
    for name, kind in ARGUMENT_HEADERS.items():
        if name in headers:
            out[name] = kind(headers[name].strip())
    return out


def queue_flags(kind: str, headers: dict) -> dict:
    """``durable`` / ``exclusive`` / ``auto_delete`` of the queue a destination declares
    (``rabbit_stomp_util:build_params`` then ``rabbit_routing_util:queue_declare_method``)."""
    params = {"durable": True} if kind == QUEUE else \
        {"exclusive": False, "auto_delete": True} if kind in (EXCHANGE, TOPIC) else \
        {"durable": False}
    for header, key in (("persistent", "durable"), ("durable", "durable"),
                        ("auto-delete", "auto_delete"), ("exclusive", "exclusive")):
        if header in headers:
            params[key] = boolean(headers[header])
    durable = params.get("durable") is True
    flags = {"durable": durable, "exclusive": not durable, "auto_delete": not durable}
    for key in ("exclusive", "auto_delete"):
        if params.get(key) is not None:
            flags[key] = params[key]
    return flags


def message_properties(headers: dict) -> dict:
    """pika ``BasicProperties`` keyword arguments for a SEND's headers."""
    def integer(name):
        return int(headers[name].strip()) if name in headers else None
    props = {
        "content_type": headers.get("content-type"),
        "content_encoding": headers.get("content-encoding"),
        "headers": {k: v for k, v in headers.items() if k not in NOT_USER_HEADERS} or None,
        "delivery_mode": 2 if boolean(headers.get("persistent")) is True else None,
        "priority": integer("priority"),
        "correlation_id": headers.get("correlation-id"),
        "reply_to": headers.get("reply-to"),
        "expiration": headers.get("expiration"),
        "message_id": headers.get("amqp-message-id"),
        "timestamp": integer("timestamp"),
        "type": headers.get("type"),
        "user_id": headers.get("user-id"),
        "app_id": headers.get("app-id"),
    }
    return {k: v for k, v in props.items() if v is not None}


_FIELDS = ((P.F_APP_ID, "app-id"), (P.F_USER_ID, "user-id"), (P.F_TYPE, "type"),
           (P.F_TIMESTAMP, "timestamp"), (P.F_MESSAGE_ID, "amqp-message-id"),
           (P.F_EXPIRATION, "expiration"), (P.F_REPLY_TO, "reply-to"),
           (P.F_CORRELATION_ID, "correlation-id"), (P.F_PRIORITY, "priority"),
           (P.F_DELIVERY_MODE, "persistent"), (P.F_CONTENT_ENCODING, "content-encoding"),
           (P.F_CONTENT_TYPE, "content-type"))
_U64 = struct.Struct(">Q")


def message_headers(raw: bytes) -> list[tuple[str, str]]:
    """A delivery's AMQP properties (their wire bytes) as MESSAGE headers, in RabbitMQ's
    order (``rabbit_stomp_util:message_headers``): the AMQP headers that are strings or
    integers, then the properties, app-id first; delivery mode 2 is ``persistent:true``,
    another one its number."""
    if not raw or raw[:2] == b"\x00\x00":
        return []
    parts = P.split(raw)
    out = []
    table = parts.get(P.F_HEADERS)
    if table is not None:
        for key, value in fieldtable.field_table(table)[1].items():
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str):
                out.append((key, value))
            elif isinstance(value, int) and not isinstance(value, bool):
                out.append((key, str(value)))
    for bit, name in _FIELDS:
        wire = parts.get(bit)
        if wire is None:
            continue
        if bit == P.F_TIMESTAMP:
            value = str(_U64.unpack(wire)[0])
        elif bit == P.F_PRIORITY:
            value = str(wire[0])
        elif bit == P.F_DELIVERY_MODE:
            value = "true" if wire[0] == 2 else str(wire[0])
        else:
            value = wire[1:].decode("utf-8", "replace")
            if bit == P.F_REPLY_TO and not value.startswith(DEST_PREFIXES):
                value = "/reply-queue/" + value
        out.append((name, value))
    return out


def stream_offset(value: str | None):
    """``x-stream-offset`` of a SUBSCRIBE as the consume argument, or None."""
    if value in ("first", "last", "next"):
        return value
    for prefix in ("offset=", "timestamp="):
        if value is not None and value.startswith(prefix):
            try:
                number = int(value[len(prefix):])
            except ValueError:
                return None
            if prefix == "timestamp=":
                return datetime.datetime.fromtimestamp(number, datetime.timezone.utc)
            return number
    return None


def parse_message_id(value: str) -> tuple[str, int] | None:
    """``consumer-tag@@session@@delivery-tag`` -> (consumer tag, delivery tag)."""
    parts = value.split("@@")
    if len(parts) != 3:
        return None
    try:
        return parts[0], int(parts[2])
    except ValueError:
        return None

