"""``/api/exchanges``: the exchanges of the vhosts the user may see (administrators: all)."""
from __future__ import annotations

from ..stats.collector import add_message_stats
from . import access
from .api import Route, not_found


def _json(vh, ex) -> dict:
    return {"name": ex.name, "vhost": vh.name, "type": ex.type, "durable": ex.durable,
            "auto_delete": ex.auto_delete, "internal": ex.internal, "arguments": ex.arguments}


async def list_exchanges(call):
    b = call.broker
    names = access.listed_vhosts(call)
    return [add_message_stats(_json(b.vhosts[n], ex), b, "exchange", n, ex.name)
            for n in names for ex in b.vhosts[n].exchanges.values()]


async def get_exchange(call):
    vh = call.broker.vhosts.get(call.params["vhost"])
    ex = vh.exchanges.get(call.params["name"]) if vh else None
    if ex is None:
        raise not_found()
    return add_message_stats(_json(vh, ex), call.broker, "exchange", vh.name, ex.name)


ROUTES = [
    Route("GET", "/api/exchanges", list_exchanges, access.MANAGEMENT),
    Route("GET", "/api/exchanges/{vhost}", list_exchanges, access.VHOST),
    Route("GET", "/api/exchanges/{vhost}/{name}", get_exchange, access.VHOST),
]
