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


_READ = ("CC", "x-first-death-reason", "x-first-death-queue", "x-first-death-exchange")


def dead_letter_record(queue, rec: Record, reason: str):
    """Return (new record, routing keys) for a message leaving ``queue`` for ``reason``.
    The x-death entries it does not change keep their bytes (``properties.x_death``): only
    the entry of this queue and reason is decoded, counted and put first."""
    raw = rec.properties
    scan = props_mod.scan(raw)
    headers = props_mod.pick(raw, _READ)[0] if scan.has_headers else {}
    elements = props_mod.x_death(raw) if scan.has_headers else []
    routing_keys = [rec.routing_key] + props_mod.str_list(headers.get("CC"))
    death, kept = None, []
    for q, r, wire in elements:
        if wire[:1] != b"F":
            continue                    # not a table: dropped
        if death is None and q == queue.name and r == reason:
            death = dict(props_mod.decode_value(wire))
        else:
            kept.append(wire)
    if death is None:
        death = {"count": 0, "reason": reason, "queue": queue.name,
                 "exchange": rec.exchange, "routing-keys": routing_keys}
    count = death.get("count", 0)
    if not isinstance(count, int) or isinstance(count, bool):
        count = 0                       # a client wrote something else there: counting restarts
    death["count"] = props_mod.Long(count + 1)      # a long, as RabbitMQ's
    death["time"] = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    if scan.expiration is not None:
        death["original-expiration"] = scan.expiration
    body = props_mod.encode_value(death) + b"".join(kept)
    # only x-death and the x-first-death-* headers change: the others keep their bytes
    changed = {"x-death": props_mod.Encoded(b"A" + len(body).to_bytes(4, "big") + body)}
    for key, value in (("x-first-death-reason", reason), ("x-first-death-queue", queue.name),
                       ("x-first-death-exchange", rec.exchange)):
        if key not in headers:
            changed[key] = value
    raw = props_mod.rewrite(raw, expiration=None, set_headers=changed)
    keys = [queue.args.dlrk] if queue.args.dlrk is not None else routing_keys
    new = Record(now_ms(), queue.args.dlx, keys[0], raw, rec.body, rec.flags)
    return new, keys
