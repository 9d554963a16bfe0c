"""``/api/channels`` and ``/api/consumers``: taken from the same answer as the connection
list (each front-end reports its connections with their channels and consumers), so they
cost one round trip to each front-end, like ``/api/connections``. Monitors see all; other
users their own (RabbitMQ's ``filter_user``)."""
from __future__ import annotations

from . import access
from .api import Route, not_found
from .connections import check_owner, node_connections, visible


def channels_of(conns: list[dict]) -> list[dict]:
    return [ch for conn in conns for ch in conn["channel_details"]]


def consumers_of(conns: list[dict]) -> list[dict]:
    return [c for ch in channels_of(conns) for c in ch["consumer_details"]]


def _public(ch: dict) -> dict:
    return {k: v for k, v in ch.items() if k != "consumer_details"}


async def list_channels(call):
    return visible(call, [_public(ch) for ch in channels_of(await node_connections(call))])


async def list_vhost_channels(call):
    if call.params["vhost"] not in call.broker.vhosts:
        raise not_found()
    return visible(call, [_public(ch) for ch in channels_of(await node_connections(call))
                          if ch["vhost"] == call.params["vhost"]])


async def get_channel(call):
    for ch in channels_of(await node_connections(call)):
        if ch["name"] == call.params["name"]:
            check_owner(call, ch["user"])
            # RabbitMQ shows a channel's consumers in the one-channel view
            return ch
    raise not_found()


async def list_consumers(call):
    vhost = call.params.get("vhost")
    if vhost is not None and vhost not in call.broker.vhosts:
        raise not_found()
    consumers = [c for c in consumers_of(await node_connections(call))
                 if vhost is None or c["queue"]["vhost"] == vhost]
    if access.is_monitor(call.user):
        return consumers
    return [c for c in consumers if c["channel_details"]["user"] == call.user.name]


CONSUMER_SORT = ("queue.vhost", "queue.name", "consumer_tag")

ROUTES = [
    Route("GET", "/api/channels", list_channels, access.MANAGEMENT),
    Route("GET", "/api/vhosts/{vhost}/channels", list_vhost_channels, access.VHOST),
    Route("GET", "/api/channels/{name}", get_channel, access.MANAGEMENT),
    Route("GET", "/api/consumers", list_consumers, access.MANAGEMENT, sort=CONSUMER_SORT),
    Route("GET", "/api/consumers/{vhost}", list_consumers, access.VHOST, sort=CONSUMER_SORT),
]
