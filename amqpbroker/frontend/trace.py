"""RabbitMQ's firehose tracer: with tracing on in a vhost (``PUT /api/vhosts/{vhost}``
``{"tracing": true}``, rabbitmqctl's ``trace_on``; off at every start, as RabbitMQ's), every
message published there and every message delivered (to a consumer or a basic.get) is also
published to the vhost's ``amq.rabbitmq.trace`` topic exchange: routing key
``publish.<exchange>`` or ``deliver.<queue>``, the message's body, and only headers, as
RabbitMQ 3.10 writes them (measured): ``exchange_name``, ``routing_keys``, ``properties``
(the message's, as a table), ``node``, for a publish ``routed_queues``, for a delivery
``redelivered`` (0 or 1), and ``vhost``, ``connection``, ``channel``, ``user``.

The copies are published as dead letters are (unconfirmed) and are not traced themselves
(a delivery of a message of ``amq.rabbitmq.trace`` is not traced either, as RabbitMQ's).
A vhost without tracing pays one attribute test per publish and per delivery batch.
"""
from __future__ import annotations

import datetime

from pamqp import commands

from ..protocol import properties as props_mod
from ..storage.record import Record, now_ms

EXCHANGE = "amq.rabbitmq.trace"
# the basic properties, in the names RabbitMQ's trace table uses (pamqp's)
_PROPERTIES = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
               "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
               "message_type", "user_id", "app_id", "cluster_id")
_WIRE_NAME = {"message_type": "type"}


def properties_table(raw: bytes) -> dict:
    """The message's properties as the trace's ``properties`` table."""
    props = props_mod.decode(bytes(raw))
    out = {}
    for name in _PROPERTIES:
        value = getattr(props, name, None)
        if value is None or (name == "cluster_id" and not value):     # pamqp's default ''
            continue
        if isinstance(value, datetime.datetime):
            value = int(value.replace(tzinfo=value.tzinfo or datetime.timezone.utc)
                        .timestamp())
        out[_WIRE_NAME.get(name, name)] = value
    return out


def trace(session, channel: int, routing_key: str, record, routing_keys, **details) -> None:
    """Publish the trace copy of ``record`` to the session's vhost's trace exchange."""
    from .session import NODE, connection_name
    vh = session.vhost
    ex = vh.exchanges.get(EXCHANGE)
    if ex is None or record.exchange == EXCHANGE:       # a trace copy is not traced
        return
    headers = {"exchange_name": record.exchange, "routing_keys": list(routing_keys),
               "properties": properties_table(record.properties),
               "node": NODE, **details, "vhost": vh.name,
               "connection": connection_name(session), "channel": channel,
               "user": session.user.name}
    raw = props_mod.encode(commands.Basic.Properties(headers=headers))
    copy = Record(now_ms(), EXCHANGE, routing_key, raw, record.body, 0)
    for q in vh.route(ex, (routing_key,), None):
        q.publish(copy, 0, False)


def published(channel, record, keys, queues) -> None:
    trace(channel.session, channel.number, "publish." + record.exchange, record, keys,
          routed_queues=[q.name for q in queues])


def delivered(channel, queue: str, record, redelivered: bool) -> None:
    trace(channel.session, channel.number, "deliver." + queue, record, (record.routing_key,),
          redelivered=1 if redelivered else 0)
