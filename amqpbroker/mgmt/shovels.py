"""``/api/shovels``: the status of the node's dynamic shovels (RabbitMQ's
``rabbitmq_shovel_management``), and deleting or restarting one. A shovel is defined, changed
and cleared as a runtime parameter of component ``shovel`` (``parameters.py``).

Who may (RabbitMQ 3.10's rules): monitors and administrators (``is_authorized_monitor``).
"""
from __future__ import annotations

from . import access
from .api import Route, no_content, not_found


async def list_shovels(call):
    b, vhost = call.broker, call.params.get("vhost")
    if vhost is not None and vhost not in b.vhosts:
        raise not_found()
    return sorted((s for s in b.shovels.status() if vhost in (None, s["vhost"])),
                  key=lambda s: (s["vhost"], s["name"]))


async def delete_shovel(call):
    b, p = call.broker, call.params
    if not b.shovels.clear(p["vhost"], p["name"]):
        raise not_found()
    await b.definitions.durable()
    return no_content()


async def restart_shovel(call):
    p = call.params
    if not call.broker.shovels.restart(p["vhost"], p["name"]):
        raise not_found()
    return no_content()


ROUTES = [
    Route("GET", "/api/shovels", list_shovels, access.MONITOR),
    Route("GET", "/api/shovels/{vhost}", list_shovels, access.MONITOR),
    Route("DELETE", "/api/shovels/vhost/{vhost}/{name}", delete_shovel, access.MONITOR),
    Route("DELETE", "/api/shovels/vhost/{vhost}/{name}/restart", restart_shovel,
          access.MONITOR),
]
