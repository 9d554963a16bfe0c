"""``/api/connections``: every connection to monitors, one's own to other users."""
from __future__ import annotations

from ..stats.collector import add_message_stats
from . import access
from .api import Route


async def list_connections(call):
    conns = [add_message_stats(conn, call.broker, "connection", conn["name"])
             for conn in await call.broker.connection_list(call.amqp.sessions)]
    if access.is_monitor(call.user):
        return conns
    return [c for c in conns if c.get("user") == call.user.name]


ROUTES = [
    Route("GET", "/api/connections", list_connections, access.MANAGEMENT),
]
