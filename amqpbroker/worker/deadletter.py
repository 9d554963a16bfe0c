"""Dead-lettering, the host's half: the republished message with RabbitMQ's x-death headers.

The host builds the new record; a front-end routes it (routing tables live there) through the
queue's dead-letter exchange, as if it had been published there, and drops it at every queue
where it would close a dead-letter cycle (``frontend/broker.py``, by the x-death history
written here: the most recent death first, as RabbitMQ orders it).
"""
from __future__ import annotations

import datetime

from ..protocol import properties as props_mod
from ..storage.record import Record, now_ms


def dead_letter_record(queue, rec: Record, reason: str):
    """Return (new record, routing keys) for a message leaving ``queue`` for ``reason``."""
    props = props_mod.decode(rec.properties)
    headers = dict(props.headers or {})
    cc = props_mod.str_list(headers.get("CC"))
    routing_keys = [rec.routing_key] + cc
    deaths = [dict(d) for d in (headers.get("x-death") or []) if isinstance(d, dict)]
    death = None
    for d in deaths:
        if d.get("queue") == queue.name and d.get("reason") == reason:
            death = d
            deaths.remove(d)
            break
    if death is None:
        death = {"count": 0, "reason": reason, "queue": queue.name,
                 "exchange": rec.exchange, "routing-keys": routing_keys}
    death["count"] = props_mod.Long(int(death.get("count", 0)) + 1)    # a long, as RabbitMQ's
    death["time"] = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    if props.expiration is not None:
        death["original-expiration"] = props.expiration
    deaths.insert(0, death)
    # only x-death and the x-first-death-* headers change: the others keep their bytes
    changed = {"x-death": deaths}
    for key, value in (("x-first-death-reason", reason), ("x-first-death-queue", queue.name),
                       ("x-first-death-exchange", rec.exchange)):
        if key not in headers:
            changed[key] = value
    raw = props_mod.rewrite(rec.properties, expiration=None, set_headers=changed)
    keys = [queue.args.dlrk] if queue.args.dlrk is not None else routing_keys
    new = Record(now_ms(), queue.args.dlx, keys[0], raw, rec.body, rec.flags)
    return new, keys

