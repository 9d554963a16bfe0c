"""``/api/exchanges``: list, get, declare (PUT), delete (``if-unused``), publish, and an
exchange's bindings as source or destination. Declares and deletes follow exchange.declare
and exchange.delete on a channel of the caller (its configure permission, the reserved
``amq.`` prefix, equivalence). A publish is routed in the supervisor's copy of the vhost and
sent to each queue's worker; ``routed`` says whether any queue took it. The default exchange
is ``amq.default`` in paths, as in RabbitMQ's."""
from __future__ import annotations

import base64
import binascii

from pamqp import commands

from .. import errors
from ..frontend.exchange import delay_of, with_hash_property
from ..stats.collector import add_message_stats
from ..protocol import properties as props_mod
from ..storage.record import Record, now_ms
from . import access
from .api import (ApiError, Route, bad_request, created, flag_param, from_amqp, no_content,
                  not_found, vhost_of)
from .bindings import SORT, vhost_bindings
from .validation import EXCHANGE, PUBLISH

DEFAULT = "amq.default"


def _json(vh, ex) -> dict:
    policy = ex.policy
    out = {"name": ex.name, "vhost": vh.name, "type": ex.type, "durable": ex.durable,
           "auto_delete": ex.auto_delete, "internal": ex.internal, "arguments": ex.arguments,
           "policy": policy.name if policy is not None else None}
    if ex.delays:       # the plugin's count of the messages it holds (supervisor/delayed.py)
        out["messages_delayed"] = vh.broker.delayed.count(vh.name, ex.name)
    return out


def _name(call) -> str:
    name = call.params["name"]
    return "" if name == DEFAULT else name


async def list_exchanges(call):
    b = call.broker
    names = access.listed_vhosts(call)
    return [add_message_stats(_json(b.vhosts[n], ex), b, "exchange", n, ex.name)
            for n in names for ex in b.vhosts[n].exchanges.values()]


def _exchange(call):
    vh = call.broker.vhosts.get(call.params["vhost"])
    ex = vh.exchanges.get(_name(call)) if vh else None
    if ex is None:
        raise not_found()
    return vh, ex


async def get_exchange(call):
    vh, ex = _exchange(call)
    return add_message_stats(_json(vh, ex), call.broker, "exchange", vh.name, ex.name)


async def put_exchange(call):
    b, name, body = call.broker, _name(call), call.body
    vh = vhost_of(call)
    try:
        vh.check_exchange_declare(name, body["type"], False)
        b.users.check(call.user, vh.name, "configure", "exchange", name)
        existed = name in vh.exchanges
        await b.metadata.declare_exchange(vhost=vh.name, name=name, type=body["type"],
                                          passive=False, durable=body["durable"],
                                          auto_delete=body["auto_delete"],
                                          internal=body["internal"],
                                          arguments=body["arguments"], actor=call.user.name)
    except errors.AMQPError as err:
        raise from_amqp(err) from None
    return created(existed)


async def delete_exchange(call):
    b = call.broker
    vh, ex = _exchange(call)
    try:
        vh.check_exchange_delete(ex.name)
        b.users.check(call.user, vh.name, "configure", "exchange", ex.name)
        await b.metadata.delete_exchange(vhost=vh.name, name=ex.name,
                                         if_unused=flag_param(call, "if-unused"),
                                         actor=call.user.name)
    except errors.AMQPError as err:
        raise from_amqp(err) from None
    return no_content()


async def publish(call):
    """RabbitMQ's body: ``properties``, ``routing_key``, ``payload`` and its
    ``payload_encoding`` (``string`` or ``base64``); answers ``{"routed": bool}``. An AMQP
    refusal is 400 with its code and text, as RabbitMQ's."""
    b, body = call.broker, call.body
    vh = b.vhosts.get(call.params["vhost"])
    if vh is None:
        raise not_found()
    name = _name(call)
    if body["payload_encoding"] == "base64":
        try:
            payload = base64.b64decode(body["payload"], validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("not_base64") from None
    else:
        payload = body["payload"].encode()
    try:
        b.users.check(call.user, vh.name, "write", "exchange", name)
        ex = vh.get_exchange(name)
        if ex.internal:
            raise errors.AccessRefused(f"cannot publish to internal exchange '{name}' in "
                                       f"vhost '{vh.name}'")
        b.users.check_topic(call.user, vh.name, "write", ex, body["routing_key"])
        props = body["properties"]
        user_id = props.get("user_id")
        if user_id is not None and user_id != call.user.name \
                and "impersonator" not in call.user.tags:
            raise errors.PreconditionFailed(f"user_id property set to '{user_id}' but "
                                            f"authenticated user was '{call.user.name}'")
        raw = props_mod.encode(commands.Basic.Properties(**props))
    except errors.AMQPError as err:
        raise ApiError(400, f"{err.reply_code} {err.reply_text}") from None
    except (TypeError, ValueError) as exc:       # a header pamqp cannot encode
        raise bad_request(f"properties: {exc}") from None
    key = body["routing_key"]
    record = Record(now_ms(), name, key, raw, payload,
                    1 if props.get("delivery_mode") == 2 else 0)
    delay = delay_of(props.get("headers")) if ex.delays else None
    if delay is not None:               # held by the owner until due (supervisor/delayed.py)
        await b.metadata.delay_message(vhost=vh.name, exchange=ex.name, keys=[key],
                                       record=record, priority=props.get("priority") or 0,
                                       delay=delay)
        return {"routed": True}
    queues = vh.route(ex, (key,), with_hash_property(ex, props.get("headers"), props))
    for q in queues:
        q.publish(record, props.get("priority") or 0, False)
    return {"routed": bool(queues)}


async def source_bindings(call):
    vh, ex = _exchange(call)
    return [bd for bd in vhost_bindings(vh) if bd["source"] == ex.name]


async def destination_bindings(call):
    vh, ex = _exchange(call)
    return [bd for bd in vhost_bindings(vh)
            if bd["destination_type"] == "exchange" and bd["destination"] == ex.name]


ROUTES = [
    Route("GET", "/api/exchanges", list_exchanges, access.MANAGEMENT),
    Route("GET", "/api/exchanges/{vhost}", list_exchanges, access.VHOST),
    Route("GET", "/api/exchanges/{vhost}/{name}", get_exchange, access.VHOST),
    Route("PUT", "/api/exchanges/{vhost}/{name}", put_exchange, access.VHOST, body=EXCHANGE),
    Route("DELETE", "/api/exchanges/{vhost}/{name}", delete_exchange, access.VHOST),
    Route("POST", "/api/exchanges/{vhost}/{name}/publish", publish, access.VHOST,
          body=PUBLISH),
    Route("GET", "/api/exchanges/{vhost}/{name}/bindings/source", source_bindings,
          access.VHOST, sort=SORT),
    Route("GET", "/api/exchanges/{vhost}/{name}/bindings/destination", destination_bindings,
          access.VHOST, sort=SORT),
]
