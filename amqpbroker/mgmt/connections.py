"""``/api/connections``: every connection to monitors, one's own to other users; one
connection, its channels, and closing it (``DELETE``, with the ``X-Reason`` header as the
close's text, as RabbitMQ's); a user's connections, and closing them all.

Every front-end answers one ``Connections`` request with its connections, their channels
and consumers (``frontend/session.session_json``); ``channels.py`` takes the same answer
apart. RabbitMQ's rule for one connection (``is_authorized_user``): its own user may see
and close it; otherwise monitors may see it and administrators close it.
"""
from __future__ import annotations

from ..stats.collector import add_message_stats
from . import access
from .api import Route, no_content, not_found

DEFAULT_REASON = "Closed via management plugin"


async def node_connections(call) -> list[dict]:
    """Every connection of the node, each with its ``channel_details``."""
    return await call.broker.connection_list(call.amqp.sessions)


def public(conn: dict, broker) -> dict:
    out = {k: v for k, v in conn.items() if k != "channel_details"}
    return add_message_stats(out, broker, "connection", out["name"])


def visible(call, items: list[dict]) -> list[dict]:
    """What a list shows the caller: everything to monitors, their own to others."""
    if access.is_monitor(call.user):
        return items
    return [i for i in items if i.get("user") == call.user.name]


def check_owner(call, owner: str | None) -> None:
    """RabbitMQ's ``is_authorized_user``: the object's user, or a monitor (an administrator
    to DELETE)."""
    allowed = access.is_admin(call.user) if call.method == "DELETE" \
        else access.is_monitor(call.user)
    if not allowed and owner != call.user.name:
        raise access.refused(call.user.name, "User not authorised to access object")


async def _connection(call) -> dict:
    for conn in await node_connections(call):
        if conn["name"] == call.params["name"]:
            return conn
    raise not_found()


async def list_connections(call):
    return visible(call, [public(c, call.broker) for c in await node_connections(call)])


async def list_vhost_connections(call):
    if call.params["vhost"] not in call.broker.vhosts:
        raise not_found()
    return visible(call, [public(c, call.broker) for c in await node_connections(call)
                          if c["vhost"] == call.params["vhost"]])


async def get_connection(call):
    conn = await _connection(call)
    check_owner(call, conn["user"])
    return public(conn, call.broker)


async def connection_channels(call):
    conn = await _connection(call)
    check_owner(call, conn["user"])
    return [{k: v for k, v in ch.items() if k != "consumer_details"}
            for ch in conn["channel_details"]]


async def close_connection(call):
    conn = await _connection(call)
    check_owner(call, conn["user"])
    reason = call.headers.get("X-Reason") or DEFAULT_REASON
    if not await call.broker.close_connection(conn["name"], reason, call.amqp.sessions):
        raise not_found()                               # it closed meanwhile
    return no_content()


async def user_connections(call):
    """``/api/connections/username/{user}``: that user's connections, to that user and to
    monitors (RabbitMQ's ``is_authorized_user``)."""
    user = call.params["user"]
    check_owner(call, user)
    return [public(c, call.broker) for c in await node_connections(call) if c["user"] == user]


async def close_user_connections(call):
    """Close every connection of the user (that user, or an administrator), as RabbitMQ's
    ``DELETE /api/connections/username/{user}``: 204 also when there is none."""
    user = call.params["user"]
    check_owner(call, user)
    reason = call.headers.get("X-Reason") or DEFAULT_REASON
    for conn in await node_connections(call):
        if conn["user"] == user:
            await call.broker.close_connection(conn["name"], reason, call.amqp.sessions)
    return no_content()


ROUTES = [
    # before /api/connections/{name}/channels, which would take a user named "channels"
    Route("GET", "/api/connections/username/{user}", user_connections, access.MANAGEMENT),
    Route("DELETE", "/api/connections/username/{user}", close_user_connections,
          access.MANAGEMENT),
    Route("GET", "/api/connections", list_connections, access.MANAGEMENT),
    Route("GET", "/api/vhosts/{vhost}/connections", list_vhost_connections, access.VHOST),
    Route("GET", "/api/connections/{name}", get_connection, access.MANAGEMENT),
    Route("DELETE", "/api/connections/{name}", close_connection, access.MANAGEMENT),
    Route("GET", "/api/connections/{name}/channels", connection_channels, access.MANAGEMENT),
]
