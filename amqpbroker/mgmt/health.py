"""Health checks, as RabbitMQ's (``rabbit_mgmt_wm_health_check_*``, ``aliveness_test``):
200 ``{"status": "ok"}`` when healthy, 503 ``{"status": "failed", "reason": ...}`` with the
details RabbitMQ gives when not. One node: the node's alarms are the cluster's.

* ``alarms`` / ``local-alarms``: the memory and disk alarms in effect (and ours, by name);
* ``port-listener/{port}``: whether this node listens on ``port`` (AMQP, AMQPS, HTTP);
* ``virtual-hosts``: every vhost is running (a vhost here has no process of its own that
  could be down, so this is ``ok`` while the API answers);
* ``aliveness-test/{vhost}``: declares the queue ``aliveness-test`` in the vhost (as
  RabbitMQ does, and leaves it), publishes a message to it and gets it back.
"""
from __future__ import annotations

from aiohttp import web
from pamqp import commands

from .. import errors
from ..protocol import properties as props_mod
from ..storage.record import Record, now_ms
from . import access
from .api import ApiError, Route, json_response, not_found
from .overview import NODE

ALIVENESS_QUEUE = "aliveness-test"
ALIVENESS_BODY = b"test_message"


def _failed(reason: str, **details) -> web.Response:
    return json_response({"status": "failed", "reason": reason, **details}, 503)


def _alarms(broker) -> list[dict]:
    out = []
    for name in sorted(broker.alarms.active):
        resource = "disk" if name.startswith("disk") else name
        out.append({"node": NODE, "resource": resource})
    return out


async def alarms(call):
    found = _alarms(call.broker)
    if found:
        return _failed("There are alarms in effect in the cluster", alarms=found)
    return {"status": "ok"}


async def local_alarms(call):
    found = _alarms(call.broker)
    if found:
        return _failed("There are alarms in effect on the node", alarms=found)
    return {"status": "ok"}


async def port_listener(call):
    try:
        port = int(call.params["port"])
    except ValueError:
        raise ApiError(400, "Invalid port") from None
    ports = [entry["port"] for entry in call.broker.listeners]
    if port in ports:
        return {"status": "ok", "port": port}
    return _failed("No active listener", missing=port, ports=ports)


async def virtual_hosts(call):
    return {"status": "ok"}


async def aliveness_test(call):
    b = call.broker
    vh = b.vhosts.get(call.params["vhost"])
    if vh is None:
        raise not_found()
    try:
        await b.metadata.declare_queue(vhost=vh.name, name=ALIVENESS_QUEUE, owner=None,
                                       passive=ALIVENESS_QUEUE in vh.queues, durable=False,
                                       exclusive=False, auto_delete=False, arguments={})
        q = vh.queues[ALIVENESS_QUEUE]
        await q.purge()
        raw = props_mod.encode(commands.Basic.Properties())
        q.publish(Record(now_ms(), "", ALIVENESS_QUEUE, raw, ALIVENESS_BODY, 0), 0, False)
        got = await q.get(True)
    except (errors.AMQPError, KeyError) as err:
        return _failed(getattr(err, "reply_text", str(err)))
    if got is None or bytes(got[1].body) != ALIVENESS_BODY:
        return _failed("aliveness-test queue returned no message or another one")
    return {"status": "ok"}


ROUTES = [
    Route("GET", "/api/health/checks/alarms", alarms, access.MANAGEMENT),
    Route("GET", "/api/health/checks/local-alarms", local_alarms, access.MANAGEMENT),
    Route("GET", "/api/health/checks/port-listener/{port}", port_listener, access.MANAGEMENT),
    Route("GET", "/api/health/checks/virtual-hosts", virtual_hosts, access.MANAGEMENT),
    Route("GET", "/api/aliveness-test/{vhost}", aliveness_test, access.VHOST),
]
