"""``/api/shovels``: the status of the dynamic shovels (RabbitMQ's
``rabbitmq_shovel_management``), and deleting or restarting one. A shovel is defined, changed
and cleared as a runtime parameter of component ``shovel`` (``parameters.py``).

In a cluster the controller runs every shovel (``shovel/shovels.py``): another node answers a
status or a restart with the controller's answer (its management API, asked with the
caller's credentials), as RabbitMQ's API gathers shovel status from the node running each;
503 when the controller does not answer.

Who may (RabbitMQ 3.10's rules): monitors and administrators (``is_authorized_monitor``).
"""
from __future__ import annotations

from urllib.parse import quote

from ..frontend.events import acting
from . import access
from .api import Route, no_content, not_found
from .peers import ask_node, controller_node


async def list_shovels(call):
    b, vhost = call.broker, call.params.get("vhost")
    if vhost is not None and vhost not in b.vhosts:
        raise not_found()
    controller = controller_node(call, "shovels")
    statuses = b.shovels.status() if controller is None else \
        await ask_node(call, controller, "GET", "/api/shovels")
    return sorted((s for s in statuses if vhost in (None, s["vhost"])),
                  key=lambda s: (s["vhost"], s["name"]))


async def delete_shovel(call):
    b, p = call.broker, call.params
    with acting(b, call.user.name):
        cleared = b.shovels.clear(p["vhost"], p["name"])
    if not cleared:
        raise not_found()
    await b.definitions.durable()
    return no_content()


async def restart_shovel(call):
    b, p = call.broker, call.params
    if (p["vhost"], p["name"]) not in b.shovels.values:
        raise not_found()
    controller = controller_node(call, "shovels")
    if controller is None:
        b.shovels.restart(p["vhost"], p["name"])
    else:
        await ask_node(call, controller, "DELETE", f"/api/shovels/vhost/"
                       f"{quote(p['vhost'], safe='')}/{quote(p['name'], safe='')}/restart")
    return no_content()


ROUTES = [
    Route("GET", "/api/shovels", list_shovels, access.MONITOR),
    Route("GET", "/api/shovels/{vhost}", list_shovels, access.MONITOR),
    Route("DELETE", "/api/shovels/vhost/{vhost}/{name}", delete_shovel, access.MONITOR),
    Route("DELETE", "/api/shovels/vhost/{vhost}/{name}/restart", restart_shovel,
          access.MONITOR),
]
