"""MQTT 5 messages as AMQP 0-9-1 properties and back, as RabbitMQ 3.13's plugin maps them
(``mc_mqtt.erl``), with no I/O.

A message an MQTT 5 client publishes is stored as any AMQP message, so AMQP consumers read
what it carries:

====================================  ===============================================
MQTT 5 PUBLISH                        AMQP 0-9-1 properties
====================================  ===============================================
QoS 0 / 1                             delivery mode 1 / 2; header ``x-mqtt-publish-qos``
                                      (as the 3.1.1 clients' messages, RabbitMQ 3.10's)
Content Type                          ``content_type`` (under 256 bytes, ASCII; else dropped)
Correlation Data                      ``correlation_id`` when it is a short string (at most
                                      255 bytes of UTF-8, no NUL), else header
                                      ``x-correlation-id`` (bytes)
Response Topic                        header ``x-reply-to-topic``, in routing-key form
                                      (``a/b`` -> ``a.b``; ``reply_to`` is not set)
User Property                         headers, one per name (the first of a repeated one)
Message Expiry Interval               ``expiration`` (ms, a per-message TTL) and
                                      ``timestamp`` (the publish time, seconds)
====================================  ===============================================

Back to an MQTT 5 subscriber the same fields become the same properties; the message
expiry sent is what is left of it (RabbitMQ sends one only for a message an MQTT client
published: an AMQP ``expiration`` is not turned into one). The other headers of an AMQP
message become user properties: strings as they are, numbers and booleans written out,
tables, arrays and byte arrays dropped, as RabbitMQ's ``mc_mqtt:convert_from``.

What only MQTT subscribers read rides in headers of our own, left out of user properties:
``x-mqtt-payload-format`` (the Payload Format Indicator), ``x-mqtt-retain`` (published
retained: a subscription with Retain As Published sees the flag) and ``x-mqtt-publisher``
(the client id, set only when that client has a No Local subscription matching the topic,
so it does not get its own message back; RabbitMQ drops such a route at publish).
"""
from __future__ import annotations

import datetime
import math

from pamqp.commands import Basic

from ..protocol import properties as P
from .topics import to_amqp, to_mqtt

QOS = "x-mqtt-publish-qos"
DUP = "x-mqtt-dup"
RETAIN = "x-mqtt-retain"
PUBLISHER = "x-mqtt-publisher"
PAYLOAD_FORMAT = "x-mqtt-payload-format"
REPLY_TO_TOPIC = "x-reply-to-topic"
CORRELATION = "x-correlation-id"
# headers that are MQTT's own fields: never user properties
_OWN = {QOS, DUP, RETAIN, PUBLISHER, PAYLOAD_FORMAT, REPLY_TO_TOPIC, CORRELATION}
_DEATH = ("x-first-death-", "x-last-death-")   # a dead-lettered will's (x-death: a table)


def _short_string(data: bytes) -> str | None:
    """``data`` as an AMQP short string (at most 255 bytes of UTF-8, no NUL), else None."""
    if len(data) > 255 or b"\0" in data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def to_amqp_properties(qos: int, dup: bool, retain: bool, props: dict, now: float,
                       publisher: str | None = None) -> bytes:
    """The AMQP properties (wire bytes) of an MQTT 5 PUBLISH (or will) with ``props``."""
    kw: dict = {"delivery_mode": 2 if qos else 1}
    headers: dict = {}
    for name, value in props.get("user_property", ()):
        if len(name.encode()) < 256 and name not in headers:
            headers[name] = value
    content_type = props.get("content_type")
    if content_type is not None and len(content_type) < 256 and content_type.isascii():
        kw["content_type"] = content_type
    correlation = props.get("correlation_data")
    if correlation is not None:
        as_string = _short_string(correlation)
        if as_string is not None:
            kw["correlation_id"] = as_string
        else:
            headers[CORRELATION] = bytes(correlation)
    if "response_topic" in props:
        headers[REPLY_TO_TOPIC] = to_amqp(props["response_topic"])
    expiry = props.get("message_expiry_interval")
    if expiry is not None:
        kw["expiration"] = str(expiry * 1000)
        kw["timestamp"] = datetime.datetime.fromtimestamp(int(now), datetime.timezone.utc)
    if "payload_format_indicator" in props:
        headers[PAYLOAD_FORMAT] = props["payload_format_indicator"]
    if retain:
        headers[RETAIN] = True
    if publisher is not None:
        headers[PUBLISHER] = publisher
    headers[QOS] = qos
    headers[DUP] = dup
    return P.rewrite(P.encode(Basic.Properties(**kw)), set_headers=headers)


class Received:
    """What an MQTT 5 subscriber is sent of a stored message's AMQP properties: the PUBLISH
    properties (but the subscription identifiers and topic alias, which are the
    subscriber's), whether it was published retained, and by which client when it asked not
    to get it back."""

    __slots__ = ("properties", "retained", "publisher", "qos", "dup")

    def __init__(self, properties: dict, retained: bool = False, publisher: str | None = None,
                 qos: int | None = None, dup: bool = False):
        self.properties, self.retained, self.publisher = properties, retained, publisher
        self.qos, self.dup = qos, dup     # ``x-mqtt-publish-qos`` (None: not MQTT's), -dup


_RECEIVED: dict[bytes, Received] = {}
_RECEIVED_MAX = 1024


def from_amqp_properties_cached(raw: bytes, now: float) -> Received:
    """``from_amqp_properties``, remembered for property bytes seen before (a publisher's
    messages mostly carry the same ones) unless the result counts down (a message
    expiry). The result is shared: not to be changed."""
    got = _RECEIVED.get(raw)
    if got is None:
        got = from_amqp_properties(raw, now)
        if "message_expiry_interval" not in got.properties:
            if len(_RECEIVED) >= _RECEIVED_MAX:
                _RECEIVED.clear()
            _RECEIVED[raw] = got
    return got


def from_amqp_properties(raw: bytes, now: float) -> Received:
    """Raises ValueError when ``raw`` does not decode."""
    p = P.decode(raw)
    headers = dict(p.headers or {})
    props: dict = {}
    if p.content_type is not None:
        props["content_type"] = p.content_type
    if p.correlation_id is not None:
        props["correlation_data"] = p.correlation_id.encode()
    elif isinstance(headers.get(CORRELATION), (bytes, str)):
        value = headers[CORRELATION]
        props["correlation_data"] = value.encode() if isinstance(value, str) else value
    reply_to = headers.get(REPLY_TO_TOPIC)
    if isinstance(reply_to, bytes):
        reply_to = reply_to.decode(errors="replace")
    if isinstance(reply_to, str):
        props["response_topic"] = to_mqtt(reply_to)
    if headers.get(PAYLOAD_FORMAT) in (0, 1):
        props["payload_format_indicator"] = headers[PAYLOAD_FORMAT]
    mqtt_source = QOS in headers
    if mqtt_source and p.expiration is not None and p.timestamp is not None:
        try:
            ttl = int(p.expiration) / 1000
        except ValueError:
            ttl = None
        if ttl is not None:
            waited = max(0, int(now) - int(p.timestamp.timestamp()))
            props["message_expiry_interval"] = max(0, math.ceil(ttl) - waited)
    pairs = []
    for name, value in headers.items():
        if name in _OWN or name.startswith(_DEATH):
            continue
        text = user_property_value(value)
        if text is not None:
            pairs.append((name, text))
    if pairs:
        props["user_property"] = pairs
    publisher = headers.get(PUBLISHER)
    qos = headers.get(QOS)
    return Received(props, headers.get(RETAIN) is True,
                    publisher if isinstance(publisher, str) else None,
                    qos if isinstance(qos, int) and not isinstance(qos, bool) else None,
                    bool(headers.get(DUP)))


def user_property_value(value) -> str | None:
    """An AMQP header's value as an MQTT user property's (RabbitMQ's ``mc_mqtt``): None
    for what has no string form there (tables, arrays, byte arrays that are not UTF-8)."""
    if isinstance(value, str):
        return value if "\0" not in value else None
    if isinstance(value, bytes):
        try:
            text = value.decode()
        except UnicodeDecodeError:
            return None
        return text if "\0" not in text else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return str(int(value.timestamp()))
    return None
