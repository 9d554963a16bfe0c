"""``/api/stream/...``: the stream protocol's connections, publishers and consumers, as
RabbitMQ's ``rabbitmq_stream_management`` plugin lists them (fields compared against
RabbitMQ 3.10.8 with the plugin): ``connections`` (and one, its ``publishers`` and
``consumers``, and closing it with ``DELETE``), ``publishers`` and ``consumers`` (of a
vhost, publishers also of one stream). The listener runs in this process
(``stream_protocol/listener.py``); these are this node's.

Who may: as ``/api/connections`` (``connections.visible`` and ``check_owner``): monitors
see every one, other users their own.
"""
from __future__ import annotations

from . import access
from .api import Route, no_content, not_found
from .connections import check_owner, visible


def _connections(call) -> list:
    server = call.broker.stream
    if server is None:
        return []
    vhost = call.params.get("vhost")
    if vhost is not None and vhost not in call.broker.vhosts:
        raise not_found()
    return sorted((c for c in server.connections if c.step == "opened"
                   and vhost in (None, c.vhost)), key=lambda c: c.name)


def _one(call):
    for conn in _connections(call):
        if conn.name == call.params["name"]:
            check_owner(call, getattr(conn.user, "name", None))
            return conn
    raise not_found()


async def list_connections(call):
    return visible(call, [c.describe() for c in _connections(call)])


async def get_connection(call):
    return _one(call).describe()


async def close_connection(call):
    conn = _one(call)
    conn.close_with(0x0F, call.headers.get("X-Reason", "Closed via management plugin"))
    return no_content()


async def connection_publishers(call):
    return _one(call).publishers_json()


async def connection_consumers(call):
    return await _one(call).consumers_json()


async def list_publishers(call):
    stream = call.params.get("stream")
    return visible(call, [p for c in _connections(call) for p in c.publishers_json()
                          if stream in (None, p["queue"]["name"])])


async def list_consumers(call):
    out = []
    for c in _connections(call):
        out += await c.consumers_json()
    return visible(call, out)


ROUTES = [
    Route("GET", "/api/stream/connections", list_connections, access.MANAGEMENT),
    Route("GET", "/api/stream/connections/{vhost}", list_connections, access.MANAGEMENT),
    Route("GET", "/api/stream/connections/{vhost}/{name}", get_connection, access.MANAGEMENT),
    Route("DELETE", "/api/stream/connections/{vhost}/{name}", close_connection,
          access.MANAGEMENT),
    Route("GET", "/api/stream/connections/{vhost}/{name}/publishers", connection_publishers,
          access.MANAGEMENT),
    Route("GET", "/api/stream/connections/{vhost}/{name}/consumers", connection_consumers,
          access.MANAGEMENT),
    Route("GET", "/api/stream/publishers", list_publishers, access.MANAGEMENT),
    Route("GET", "/api/stream/publishers/{vhost}", list_publishers, access.MANAGEMENT),
    Route("GET", "/api/stream/publishers/{vhost}/{stream}", list_publishers,
          access.MANAGEMENT),
    Route("GET", "/api/stream/consumers", list_consumers, access.MANAGEMENT),
    Route("GET", "/api/stream/consumers/{vhost}", list_consumers, access.MANAGEMENT),
]
