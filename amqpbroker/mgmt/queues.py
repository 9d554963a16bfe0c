"""``/api/queues``: the queues of the vhosts the user may see (administrators: all)."""
from __future__ import annotations

from . import access
from .api import Route, not_found


def _json(q, stats) -> dict:
    ready, consumers, unacked, ready_bytes = stats
    return {"name": q.name, "vhost": q.vhost.name, "durable": q.durable,
            "auto_delete": q.auto_delete, "exclusive": q.exclusive_owner is not None,
            "arguments": q.arguments, "messages": ready + unacked,
            "messages_ready": ready, "messages_unacknowledged": unacked,
            "consumers": consumers, "type": q.args.queue_type,
            "state": "running" if q.down is None else "down",
            "message_bytes_ready": ready_bytes, "node": "amqpbroker@localhost",
            "worker": q.client.index}       # ours: the partition worker that owns it


async def list_queues(call):
    b = call.broker
    names = access.listed_vhosts(call)
    queues = [q for n in names for q in b.vhosts[n].queues.values()]
    stats = await b.queue_stats(queues)
    return [_json(q, stats[q]) for q in queues]


async def get_queue(call):
    vh = call.broker.vhosts.get(call.params["vhost"])
    q = vh.queues.get(call.params["name"]) if vh else None
    if q is None:
        raise not_found()
    stats = await call.broker.queue_stats([q])
    return _json(q, stats[q])


ROUTES = [
    Route("GET", "/api/queues", list_queues, access.MANAGEMENT),
    Route("GET", "/api/queues/{vhost}", list_queues, access.VHOST),
    Route("GET", "/api/queues/{vhost}/{name}", get_queue, access.VHOST),
]
