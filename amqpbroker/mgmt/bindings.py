"""``/api/bindings``: list (all, per vhost, between two objects), create (POST, 201 with a
``Location``), get and delete one by its *properties key*.

A binding is named within its source and destination by RabbitMQ's properties key: ``~`` for
an empty routing key without arguments, the URL-quoted routing key without arguments, and
``key~hash`` with them. The hash is ours (RabbitMQ hashes the Erlang term of the
arguments): clients take the key from a listing, as rabbitmqadmin does, and never build it.
Every queue's binding to the default exchange is listed, as RabbitMQ lists it, and cannot be
made or removed (401, as RabbitMQ refuses it).
"""
from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse

from aiohttp import web

from .. import errors
from . import access
from .api import Route, from_amqp, no_content, not_found
from .validation import BINDING

SORT = ("vhost", "source", "destination_type", "destination", "routing_key",
        "properties_key")


def properties_key(key: str, arguments: dict | None) -> str:
    quoted = urllib.parse.quote(key, safe="").replace("~", "%7E")
    if not arguments:
        return quoted or "~"
    digest = hashlib.sha256(json.dumps(arguments, sort_keys=True, default=repr).encode())
    return quoted + "~" + base64.urlsafe_b64encode(digest.digest()[:4]).decode().rstrip("=")


def binding_json(vhost: str, source: str, destination, kind: str, key: str,
                 arguments) -> dict:
    return {"source": source, "vhost": vhost, "destination": destination.name,
            "destination_type": kind, "routing_key": key, "arguments": arguments or {},
            "properties_key": properties_key(key, arguments)}


def vhost_bindings(vh) -> list[dict]:
    """Every binding of a vhost, each queue's to the default exchange first."""
    out = [binding_json(vh.name, "", q, "queue", q.name, {}) for q in vh.queues.values()]
    out.extend(binding_json(vh.name, ex.name, dest, kind, key, args)
               for ex, dest, kind, key, args in vh.bindings())
    return out


async def list_bindings(call):
    b = call.broker
    return [bd for n in access.listed_vhosts(call) for bd in vhost_bindings(b.vhosts[n])]


def _ends(call):
    """(vhost, source exchange, destination kind, destination) of the path; 404 if either
    end does not exist."""
    vh = call.broker.vhosts.get(call.params["vhost"])
    if vh is None:
        raise not_found()
    kind = "queue" if call.params["kind"] == "q" else "exchange"
    source = vh.exchanges.get(call.params["source"])
    if source is None:
        raise from_amqp(errors.NotFound(f"no exchange '{call.params['source']}' in vhost "
                                        f"'{vh.name}'"))
    table = vh.queues if kind == "queue" else vh.exchanges
    dest = table.get(call.params["destination"])
    if dest is None:
        raise from_amqp(errors.NotFound(f"no {kind} '{call.params['destination']}' in vhost "
                                        f"'{vh.name}'"))
    return vh, source, kind, dest


def _between(vh, source, kind, dest) -> list[dict]:
    return [bd for bd in vhost_bindings(vh) if bd["source"] == source.name
            and bd["destination_type"] == kind and bd["destination"] == dest.name]


async def list_between(call):
    return _between(*_ends(call))


async def create_binding(call):
    b, body = call.broker, call.body
    vh, source, kind, dest = _ends(call)
    try:
        b.users.check(call.user, vh.name, "write", kind, dest.name)
        b.users.check(call.user, vh.name, "read", "exchange", source.name)
        b.users.check_topic(call.user, vh.name, "read", source, body["routing_key"])
        await b.metadata.bind(vhost=vh.name, kind=kind, destination=dest.name,
                              source=source.name, key=body["routing_key"],
                              arguments=body["arguments"], owner=None, cid=0, mid=0,
                              actor=call.user.name)
    except errors.AMQPError as err:
        raise from_amqp(err) from None
    key = properties_key(body["routing_key"], body["arguments"])
    location = urllib.parse.quote(dest.name, safe="") + "/" + urllib.parse.quote(key, safe="")
    return web.Response(status=201, headers={"Location": location})


def _one(call) -> dict:
    vh, source, kind, dest = _ends(call)
    for bd in _between(vh, source, kind, dest):
        if bd["properties_key"] == call.params["props"]:
            return bd
    raise not_found()


async def get_binding(call):
    return _one(call)


async def delete_binding(call):
    b = call.broker
    bd = _one(call)
    source = b.vhosts[bd["vhost"]].exchanges[bd["source"]]     # _one found it
    try:
        b.users.check(call.user, bd["vhost"], "write", bd["destination_type"],
                      bd["destination"])
        b.users.check(call.user, bd["vhost"], "read", "exchange", bd["source"])
        b.users.check_topic(call.user, bd["vhost"], "read", source, bd["routing_key"])
        await b.metadata.unbind(vhost=bd["vhost"], kind=bd["destination_type"],
                                destination=bd["destination"], source=bd["source"],
                                key=bd["routing_key"], arguments=bd["arguments"], owner=None,
                                cid=0, mid=0, actor=call.user.name)
    except errors.AMQPError as err:
        raise from_amqp(err) from None
    return no_content()


_BETWEEN = "/api/bindings/{vhost}/e/{source}/{kind:[qe]}/{destination}"

ROUTES = [
    Route("GET", "/api/bindings", list_bindings, access.MANAGEMENT, sort=SORT),
    Route("GET", "/api/bindings/{vhost}", list_bindings, access.VHOST, sort=SORT),
    Route("GET", _BETWEEN, list_between, access.VHOST, sort=SORT),
    Route("POST", _BETWEEN, create_binding, access.VHOST, body=BINDING),
    Route("GET", _BETWEEN + "/{props}", get_binding, access.VHOST),
    Route("DELETE", _BETWEEN + "/{props}", delete_binding, access.VHOST),
]
