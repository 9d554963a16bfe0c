"""``/api/auth/attempts/{node}``: logins by protocol since the start or the last reset
(RabbitMQ's ``auth_attempt_metrics``): every AMQP login (counted by the front-end that
served it) and every management API request that carried credentials, failed when the
user or password was wrong. Per source (``.../source``) only where RabbitMQ's
``track_auth_attempt_source`` is on, which it is not by default, nor here: an empty list.

Who may (RabbitMQ 3.10's rules, measured): monitors and administrators; ``DELETE`` resets
the counts.
"""
from __future__ import annotations

from . import access
from .api import Route, no_content, not_found
from .overview import node_name


def _this_node(call) -> None:
    if call.params["node"] != node_name(call.broker):
        raise not_found()


async def _totals(call) -> dict:
    snap = await call.broker.collector.collect()
    base = call.broker.collector.auth_reset
    return {protocol: [n - m for n, m in zip(counts, base.get(protocol, (0, 0, 0)))]
            for protocol, counts in snap.auth.items()}


async def auth_attempts(call):
    _this_node(call)
    return [{"protocol": protocol, "auth_attempts": a, "auth_attempts_failed": f,
             "auth_attempts_succeeded": s}
            for protocol, (a, f, s) in sorted((await _totals(call)).items(),
                                              key=lambda kv: kv[0] != "http")
            if a]


async def auth_attempts_by_source(call):
    _this_node(call)
    return []


async def reset_auth_attempts(call):
    _this_node(call)
    snap = await call.broker.collector.collect()
    call.broker.collector.auth_reset = {p: list(v) for p, v in snap.auth.items()}
    return no_content()


ROUTES = [
    Route("GET", "/api/auth/attempts/{node}", auth_attempts, access.MONITOR, sort=()),
    Route("DELETE", "/api/auth/attempts/{node}", reset_auth_attempts, access.MONITOR),
    Route("GET", "/api/auth/attempts/{node}/source", auth_attempts_by_source, access.MONITOR,
          sort=()),
]
