"""Many concurrent connections: 1,000 aiormq connections, all open at once, each doing real work.

The RabbitMQ this suite is checked against runs with 1024 file descriptors, which it turns into a
limit of 832 sockets (``sockets_total`` in /api/nodes); past that it stops accepting. So the
target is 1,000 connections, capped by the broker's advertised socket limit (minus what is in use
and a margin) when the management API reports one. Our broker reports no lower limit, so it gets
the full 1,000.
"""
from __future__ import annotations

import asyncio
import resource

import aiormq
from pamqp import commands as spec

TARGET = 1000


def connection_budget(mgmt) -> int:
    nodes = mgmt.get("/api/nodes") or []
    limits = [n["sockets_total"] - n.get("sockets_used", 0) - 64
              for n in nodes if isinstance(n.get("sockets_total"), int)]
    return min([TARGET, *limits])


def raise_nofile(need: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


async def test_many_concurrent_connections(broker_url, mgmt):
    n = connection_budget(mgmt)
    assert n >= 500, f"broker allows too few sockets for this test: {n}"
    raise_nofile(2 * n + 256)
    gate = asyncio.Semaphore(64)  # bound the connect burst (the listen backlog), not concurrency
    all_open = asyncio.Barrier(n)
    connections: list[aiormq.Connection] = []

    async def client(i: int):
        async with gate:
            conn = await aiormq.connect(broker_url + f"?name=many-{i}")
        connections.append(conn)
        ch = await conn.channel()
        q = (await ch.queue_declare("", exclusive=True)).queue
        confirm = await ch.basic_publish(b"hello %d" % i, routing_key=q)
        assert isinstance(confirm, spec.Basic.Ack)
        await asyncio.wait_for(all_open.wait(), 60)  # every connection is open at this point
        msg = await ch.basic_get(q, no_ack=True)
        return q, msg.body

    try:
        results = await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(n))), 120)
    finally:
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
    assert len(results) == n
    assert len({q for q, _ in results}) == n  # each got its own server-named queue
    assert [body for _, body in results] == [b"hello %d" % i for i in range(n)]
    assert all(c.is_closed for c in connections)
