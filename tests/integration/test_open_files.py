"""Open files are bounded: far more durable queues than the open-files limit has descriptors for.

Each queue has four files in use (its active segment's log and two indexes, its ack log); the
broker keeps them in a per-process cache of at most half of RLIMIT_NOFILE and reopens a file
closed for room on its next use (amqpbroker/storage/filecache.py). Here the broker runs under a
real RLIMIT_NOFILE of 256 (``prlimit``, inherited by its workers and front-ends) with 1,000
durable queues: every queue takes publishes and gives up messages, no process holds more than
128 queue files, and after a restart under the same limit every message is there.
"""
from __future__ import annotations

import asyncio
import os
import time

import aio_pika
import pytest

from amqpbroker import child
from amqpbroker.testing import LAYOUTS, BrokerProcess

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

QUEUES = 1000
NOFILE = 256
CACHE_LIMIT = NOFILE // 2      # the default: half of RLIMIT_NOFILE


def limited(data, layout) -> BrokerProcess:
    return BrokerProcess(data, *layout, management=True,
                         command=["prlimit", f"--nofile={NOFILE}:{NOFILE}",
                                  *child.command("amqpbroker")])


def names() -> list[str]:
    return [f"q{i:04d}" for i in range(QUEUES)]


def queue_files_held(b: BrokerProcess) -> dict[int, int]:
    """pid -> descriptors it holds on files under the data directory, per broker process;
    not the directory's lock (``supervisor/dirlock.py``: one descriptor, outside the file
    cache, held by the supervisor and each worker: checked here too)."""
    held = {}
    lock = os.path.join(b.data_dir, ".lock")
    for pid in [b.proc.pid, *b.worker_pids, *b.frontend_pids]:
        n = locks = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:     # closed while we looked
                continue
            locks += target == lock
            n += target.startswith(b.data_dir) and target != lock
        assert locks == (pid not in b.frontend_pids), (pid, locks)
        held[pid] = n
    return held


async def connect(b: BrokerProcess):
    return await aio_pika.connect(b.url, timeout=30)


async def publish_all(b: BrokerProcess, body_of) -> None:
    """One persistent message to every queue, all in flight at once, each confirmed."""
    conn = await connect(b)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await asyncio.gather(*(
            ch.default_exchange.publish(
                aio_pika.Message(body_of(name).encode(),
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=name, mandatory=True)
            for name in names()))


async def get_one_from_each(b: BrokerProcess) -> dict[str, list[str]]:
    """basic.get + ack once per queue; each queue's body, and how many were left behind it."""
    got = {}
    conn = await connect(b)
    async with conn:
        ch = await conn.channel()
        for name in names():
            q = await ch.get_queue(name, ensure=False)
            msg = await q.get(no_ack=False, fail=False, timeout=30)
            got[name] = [] if msg is None else [msg.body.decode(), msg.message_count]
            if msg is not None:
                await msg.ack()
    return got


async def declare_all(b: BrokerProcess) -> None:
    conn = await connect(b)
    async with conn:
        ch = await conn.channel()
        for name in names():
            await ch.declare_queue(name, durable=True)


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
async def test_a_thousand_durable_queues_under_256_open_files(tmp_path, layout):
    data = tmp_path / "data"
    b = limited(data, layout).start()
    started = time.monotonic()
    try:
        await declare_all(b)
        await publish_all(b, lambda name: f"first {name}")
        await publish_all(b, lambda name: f"second {name}")
        held = queue_files_held(b)
        assert max(held.values()) <= CACHE_LIMIT, held
        got = await get_one_from_each(b)
        assert got == {name: [f"first {name}", 1] for name in names()}
        queues = await asyncio.to_thread(b.api, "queues/%2F")
        assert len(queues) == QUEUES
        assert {q["state"] for q in queues} == {"running"}
    finally:
        assert b.stop() == 0
    output = "".join(b.output)
    assert "Too many open files" not in output and "Traceback" not in output, output[-3000:]
    assert len(os.listdir(data / "queues")) == QUEUES

    b.start()       # the same limit: recovery opens every queue through the cache too
    try:
        assert {q["state"] for q in await asyncio.to_thread(b.api, "queues/%2F")} == {"running"}
        got = await get_one_from_each(b)
        assert got == {name: [f"second {name}", 0] for name in names()}
        assert max(queue_files_held(b).values()) <= CACHE_LIMIT
    finally:
        assert b.stop() == 0
    output = "".join(b.output)
    assert "Too many open files" not in output and "Traceback" not in output, output[-3000:]
    print(f"{QUEUES} queues under RLIMIT_NOFILE {NOFILE}: {time.monotonic() - started:.1f} s")
