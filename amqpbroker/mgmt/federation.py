"""``/api/federation-links``: the status of the federation links (RabbitMQ's
``rabbitmq_federation_management``), those that are down, and restarting one. Upstreams are
runtime parameters of components ``federation-upstream`` and ``federation-upstream-set``
(``parameters.py``); a policy says what is federated (``amqpbroker/federation``).

In a cluster the controller runs every link: another node answers with the controller's
list (its management API, asked with the caller's credentials), as RabbitMQ gathers link
status from every node; 503 when the controller does not answer.

Who may (RabbitMQ 3.10's rules): monitors and administrators (``is_authorized_monitor``),
each seeing the links of the vhosts listed to them.
"""
from __future__ import annotations

from urllib.parse import quote

from . import access
from .api import Route, no_content, not_found
from .peers import ask_node, controller_node


async def _links(call) -> list[dict]:
    b, vhost = call.broker, call.params.get("vhost")
    if vhost is not None and vhost not in b.vhosts:
        raise not_found()
    controller = controller_node(call, "federation links")
    links = b.federation.status() if controller is None else \
        await ask_node(call, controller, "GET", "/api/federation-links")
    visible = set(access.visible_vhosts(b, call.user))
    return sorted((link for link in links if link["vhost"] in visible
                   and vhost in (None, link["vhost"])),
                  key=lambda link: (link["vhost"], link.get("exchange", link.get("queue")),
                                    link["upstream"]))


async def list_links(call):
    return await _links(call)


async def list_down(call):
    """Links neither running nor starting (RabbitMQ's ``state/down``)."""
    return [link for link in await _links(call)
            if link["status"] not in ("running", "starting")]


async def restart_link(call):
    b, p = call.broker, call.params
    if p["vhost"] not in b.vhosts:
        raise not_found()
    controller = controller_node(call, "federation links")
    if controller is None:
        if p["node"] != b.federation.node_name() or not b.federation.restart(p["vhost"],
                                                                             p["id"]):
            raise not_found()
    else:
        await ask_node(call, controller, "DELETE", f"/api/federation-links/vhost/"
                       f"{quote(p['vhost'], safe='')}/{quote(p['id'], safe='')}/"
                       f"{quote(p['node'], safe='')}/restart")
    return no_content()


ROUTES = [
    Route("GET", "/api/federation-links", list_links, access.MONITOR),
    Route("GET", "/api/federation-links/state/down", list_down, access.MONITOR),
    Route("GET", "/api/federation-links/{vhost}", list_links, access.MONITOR),
    Route("GET", "/api/federation-links/{vhost}/state/down", list_down, access.MONITOR),
    Route("DELETE", "/api/federation-links/vhost/{vhost}/{id}/{node}/restart", restart_link,
          access.MONITOR),
]
