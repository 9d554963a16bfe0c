"""The etcd client (amqpbroker/cluster/etcd.py) against a real etcd the test starts."""
import asyncio

import pytest

from amqpbroker.cluster.etcd import EtcdClient, EtcdError, compare, put_op
from amqpbroker.testing.etcd import free_port


@pytest.fixture
async def client(etcd):
    c = EtcdClient(etcd.url)
    yield c
    await c.close()


async def test_put_get_range_delete(client):
    rev = await client.put("/t/a", "1")
    await client.put("/t/b", "2")
    await client.put("/u/c", "3")
    kv = await client.get("/t/a")
    assert (kv.key, kv.value, kv.create_revision) == ("/t/a", "1", rev)
    kvs, revision = await client.range("/t/")
    assert [(k.key, k.value) for k in kvs] == [("/t/a", "1"), ("/t/b", "2")]
    assert revision == rev + 2
    assert await client.delete("/t/a") == 1
    assert await client.get("/t/a") is None
    assert await client.delete("/t/a") == 0


async def test_create_is_a_compare_and_swap(client):
    made, kv = await client.create("/t/x", "first")
    assert made and kv.value == "first"
    made, kv = await client.create("/t/x", "second")
    assert not made and kv.value == "first"         # the key as it is, not overwritten
    # a compare on the value: swap only from what we read
    held, _ = await client.txn([compare("/t/x", "VALUE", "EQUAL", "stale")],
                               [put_op("/t/x", "third")])
    assert not held and (await client.get("/t/x")).value == "first"
    held, _ = await client.txn([compare("/t/x", "MOD", "EQUAL", kv.mod_revision)],
                               [put_op("/t/x", "third")])
    assert held and (await client.get("/t/x")).value == "third"


async def test_lease_keeps_keys_until_it_expires_or_is_revoked(client):
    lease, ttl = await client.grant(2)
    assert ttl == 2
    await client.put("/t/on-lease", "v", lease)
    assert (await client.get("/t/on-lease")).lease == lease
    assert await client.keep_alive(lease) == 2
    # unrenewed, the lease expires and takes its key with it
    deadline = asyncio.get_running_loop().time() + 10
    while await client.get("/t/on-lease") is not None:
        assert asyncio.get_running_loop().time() < deadline, "lease never expired"
        await asyncio.sleep(0.1)
    assert await client.keep_alive(lease) == 0
    lease, _ = await client.grant(30)
    await client.put("/t/revoked", "v", lease)
    await client.revoke(lease)
    assert await client.get("/t/revoked") is None
    await client.revoke(lease)                      # twice: already gone is not an error


async def test_watch_sees_puts_and_deletes_in_order(client):
    _, revision = await client.range("/w/")
    seen = []

    async def watch():
        async for rev, events in client.watch("/w/", revision + 1):
            seen.extend((e.type, e.kv.key, e.kv.value) for e in events)
            if len(seen) >= 3:
                return

    task = asyncio.create_task(watch())
    lease, _ = await client.grant(30)
    await client.put("/w/a", "1", lease)
    await client.put("/other", "x")                 # outside the prefix: not seen
    await client.put("/w/a", "2", lease)
    await client.revoke(lease)
    await asyncio.wait_for(task, 10)
    assert seen == [("PUT", "/w/a", "1"), ("PUT", "/w/a", "2"), ("DELETE", "/w/a", "")]


async def test_watch_from_an_old_revision_replays_history(client):
    first = await client.put("/h/a", "1")
    await client.put("/h/b", "2")

    async def two():
        out = []
        async for _, events in client.watch("/h/", first):
            out += [e.kv.key for e in events]
            if len(out) == 2:
                return out
    assert await asyncio.wait_for(two(), 10) == ["/h/a", "/h/b"]


async def test_an_unreachable_endpoint_is_skipped(etcd):
    dead = f"http://127.0.0.1:{free_port()}"
    c = EtcdClient(f"{dead},{etcd.url}")
    try:
        await c.put("/t/k", "v")
        assert c.endpoints[0] == etcd.url           # the one that answered goes first
        assert (await c.get("/t/k")).value == "v"
    finally:
        await c.close()
    c = EtcdClient(dead, timeout=1)
    try:
        with pytest.raises(EtcdError, match="no etcd endpoint answered"):
            await c.get("/t/k")
    finally:
        await c.close()


async def test_a_paused_etcd_is_a_timeout_not_a_hang(etcd, client):
    await client.put("/t/k", "v")
    etcd.pause()
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(EtcdError):
            await client.keep_alive(1, timeout=0.5)
        assert asyncio.get_running_loop().time() - started < 2
    finally:
        etcd.resume()
    assert (await client.get("/t/k")).value == "v"
