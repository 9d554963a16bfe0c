"""``/api/vhosts``: list (what the user may see), get, create, delete (administrators)."""
from __future__ import annotations

from ..frontend.events import acting, emit_as
from ..frontend.session import NODE
from . import access
from .api import Route, bad_request, created, no_content, not_found
from .overview import node_name
from .validation import VHOST


async def _vhost_json(broker, vh) -> dict:
    stats = (await broker.queue_stats(list(vh.queues.values()))).values()
    ready, unacked = sum(s[0] for s in stats), sum(s[2] for s in stats)
    return {"name": vh.name, "description": vh.description, "tags": vh.tags,
            # RabbitMQ 3.10's "undefined" when the vhost has none
            "default_queue_type": vh.default_queue_type or "undefined",
            "metadata": vh.metadata(), "tracing": vh.tracing,
            "cluster_state": {NODE: "running"}, "messages": ready + unacked,
            "messages_ready": ready, "messages_unacknowledged": unacked}


async def list_vhosts(call):
    b = call.broker
    return [await _vhost_json(b, b.vhosts[n]) for n in access.visible_vhosts(b, call.user)]


async def get_vhost(call):
    vh = call.broker.vhosts.get(call.params["vhost"])
    if vh is None:
        raise not_found()
    return await _vhost_json(call.broker, vh)


async def put_vhost(call):
    """Make the vhost, or set its description and tags (as RabbitMQ: what the body leaves out
    is emptied) and, when the body has one, its default queue type (kept otherwise)."""
    b, name, body = call.broker, call.params["vhost"], call.body
    vh = b.vhosts.get(name)
    dqt = body["default_queue_type"]
    if dqt is None and vh is not None:
        dqt = vh.default_queue_type
    with acting(b, call.user.name):
        existed = not b.update_vhost(name, body["description"], body["tags"], dqt)
    if not existed:
        # RabbitMQ grants the creating user full permissions on a new vhost
        b.users.set_permissions(name, call.user.name)
        b.definitions.save()
        emit_as(b, call.user.name, "permission.created", {
            "user": call.user.name, "vhost": name, "configure": ".*", "write": ".*",
            "read": ".*"})
    if "tracing" in body:       # left as it is when the body does not say (RabbitMQ)
        b.set_tracing(b.vhosts[name], body["tracing"])
    await b.definitions.durable()
    await b.sync_frontends()    # traced from the next publish on, on every front-end
    return created(existed)


async def delete_vhost(call):
    with acting(call.broker, call.user.name):
        deleted = call.broker.delete_vhost(call.params["vhost"])
    if not deleted:
        raise not_found()
    await call.broker.definitions.durable()
    return no_content()


async def start_vhost(call):
    """RabbitMQ 3.13's restart of a vhost on a node (its vhost supervisor, after a failure):
    here a vhost never stops on its own, so it is running already, the answer RabbitMQ gives
    for one already started; a node this broker does not know is 400."""
    b = call.broker
    if call.params["vhost"] not in b.vhosts:
        raise not_found()
    node = call.params["node"]
    known = {n["name"] for n in b.cluster.nodes()} if b.cluster is not None \
        else {node_name(b)}
    if node not in known:
        raise bad_request(f"Request to node {node} failed with {{badrpc,nodedown}}")
    return no_content()


ROUTES = [
    Route("GET", "/api/vhosts", list_vhosts, access.MANAGEMENT),
    # RabbitMQ 3.10's rabbit_mgmt_wm_vhost: administrators only, GET included
    Route("GET", "/api/vhosts/{vhost}", get_vhost, access.ADMINISTRATOR),
    Route("PUT", "/api/vhosts/{vhost}", put_vhost, access.ADMINISTRATOR, body=VHOST),
    Route("DELETE", "/api/vhosts/{vhost}", delete_vhost, access.ADMINISTRATOR),
    Route("POST", "/api/vhosts/{vhost}/start/{node}", start_vhost, access.ADMINISTRATOR),
]
