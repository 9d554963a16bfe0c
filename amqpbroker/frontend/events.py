"""RabbitMQ's event exchange (the ``rabbitmq_event_exchange`` plugin), on with
``--event-exchange``: the broker publishes what happens to it — queues, exchanges, bindings,
consumers, connections, channels, logins, policies, vhosts, users, permissions, parameters,
limits, alarms — to the topic exchange ``amq.rabbitmq.event`` of one vhost (``/``, or
``--event-exchange-vhost``), as RabbitMQ 3.10 does (measured with the plugin enabled):

* routing key: the event's name (``queue.created``, ``connection.closed``,
  ``user.authentication.failure``, ...);
* an empty body, ``delivery_mode`` 2, ``timestamp`` in seconds, and the event's details as
  headers, ``timestamp_in_ms`` first, ``user_who_performed_action`` where a user acted
  (``rmq-internal`` for the broker's own: an auto-delete, an expiry, an alarm).

Details are RabbitMQ's keys with plain values where RabbitMQ prints Erlang terms
(``arguments`` is a table, not a list of Erlang tuples; hosts are addresses; a
connection's ``pid`` is its name).

Who publishes: the process where it happened. A front-end publishes its connections',
channels', consumers' and logins' events through its own routing tables; the metadata owner
(the supervisor) publishes the metadata's, once per change (``Broker.owns_metadata``; a
front-end's copy applying the change publishes nothing; in a cluster, the node that made
the change, not the ones applying it from etcd: ``Broker.events_quiet``). An event nobody
is bound to costs one routing lookup. Events are published as dead letters are: to the
queues bound, unconfirmed.
"""
from __future__ import annotations

import contextlib
import datetime
import logging

from pamqp import commands

from ..protocol import properties as props_mod
from ..storage.record import Record, now_ms

log = logging.getLogger("amqpbroker.events")

EXCHANGE = "amq.rabbitmq.event"
INTERNAL_USER = "rmq-internal"          # RabbitMQ's ?INTERNAL_USER


def on(broker) -> bool:
    """Whether events are published at all (callers skip building their details if not)."""
    return broker.config.event_exchange


def emit(broker, key: str, details: dict) -> None:
    """Publish event ``key`` with ``details`` (None values left out) if the event exchange is
    on and anything is bound to receive it."""
    config = broker.config
    if not config.event_exchange:
        return
    vh = broker.vhosts.get(config.event_exchange_vhost)
    ex = vh.exchanges.get(EXCHANGE) if vh is not None else None
    if ex is None:
        return
    targets = vh.route(ex, (key,), None)
    if not targets:
        return
    ts = now_ms()
    headers = {"timestamp_in_ms": ts}
    headers.update((k, v) for k, v in details.items() if v is not None)
    raw = props_mod.encode(commands.Basic.Properties(
        delivery_mode=2, headers=headers,
        timestamp=datetime.datetime.fromtimestamp(ts // 1000, datetime.timezone.utc)))
    record = Record(ts, EXCHANGE, key, raw, b"", 1)
    for q in targets:
        q.publish(record, 0, False)


def emit_metadata(broker, key: str, details: dict) -> None:
    """A metadata change's event: only where the change is made (the metadata owner), with
    the acting user (``acting``)."""
    if broker.owns_metadata and not broker.events_quiet:
        emit(broker, key, {**details, "user_who_performed_action": broker.actor})


def emit_as(broker, user: str, key: str, details: dict) -> None:
    """``emit_metadata`` of a change ``user`` made (the management API's)."""
    with acting(broker, user):
        emit_metadata(broker, key, details)


@contextlib.contextmanager
def acting(broker, user: str | None):
    """The metadata changes made inside (synchronously) are ``user``'s."""
    before = broker.actor
    broker.actor = user or INTERNAL_USER
    try:
        yield
    finally:
        broker.actor = before


@contextlib.contextmanager
def quiet(broker):
    """Changes applied inside were made elsewhere (a cluster's etcd): no events here."""
    before = broker.events_quiet
    broker.events_quiet = True
    try:
        yield
    finally:
        broker.events_quiet = before


def declare_exchange(broker) -> None:
    """At start, with the event exchange on: make it (topic, durable, internal) in its
    vhost if it is not there, as the plugin does at boot (a name under ``amq.`` that no
    client may declare)."""
    vhost = broker.config.event_exchange_vhost
    vh = broker.vhosts.get(vhost)
    if vh is None:
        log.warning("event exchange not declared: vhost '%s' does not exist", vhost)
        return
    vh.restore_exchange(EXCHANGE, "topic", durable=True, auto_delete=False, internal=True,
                        arguments={})
    broker.persist()


# ----------------------------------------------------------------- details, as RabbitMQ's
def queue_details(q) -> dict:
    owner = q.exclusive_owner
    return {"name": q.name, "vhost": q.vhost.name, "durable": q.durable,
            "auto_delete": q.auto_delete, "exclusive": owner is not None,
            "arguments": dict(q.arguments), "owner_pid": owner if isinstance(owner, str) else ""}


def exchange_details(vhost: str, ex) -> dict:
    return {"name": ex.name, "vhost": vhost, "type": ex.type, "durable": ex.durable,
            "auto_delete": ex.auto_delete, "internal": ex.internal,
            "arguments": dict(ex.arguments or {}),
            "policy": ex.policy.name if getattr(ex, "policy", None) is not None else ""}


def binding_details(vhost: str, source: str, kind: str, destination: str, key: str,
                    arguments) -> dict:
    return {"source_name": source, "source_kind": "exchange", "destination_name": destination,
            "destination_kind": kind, "routing_key": key, "arguments": dict(arguments or {}),
            "vhost": vhost}


def connection_details(s) -> dict:
    """A connection's (``session.session_json``'s fields that RabbitMQ's event carries)."""
    from .session import session_json
    j = session_json(s)
    keep = ("name", "node", "user", "vhost", "peer_host", "peer_port", "host", "port", "type",
            "protocol", "channel_max", "frame_max", "timeout", "connected_at",
            "client_properties", "ssl", "auth_mechanism", "user_who_performed_action")
    return {**{k: j[k] for k in keep}, "pid": j["name"]}


def channel_name(channel) -> str:
    from .session import connection_name
    return f"{connection_name(channel.session)} ({channel.number})"


def session_emit(session, key: str, details: dict) -> None:
    """An event of a front-end's connection, channel or consumer: the connection's user
    performed it."""
    user = session.user.name if session.user is not None else None
    emit(session.broker, key, {**details, "user_who_performed_action": user})


def login_details(session, mechanism: str, name) -> dict:
    from .session import connection_name
    return {"name": name, "auth_mechanism": mechanism,
            "connection_name": connection_name(session), "connection_type": "network",
            "host": session.local[0], "peer_host": session.peer[0],
            "peer_port": session.peer[1], "protocol": "AMQP 0-9-1",
            "ssl": session.certificate is not None}
