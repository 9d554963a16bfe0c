"""A commit round over more queues than the file cache holds goes in steps.

The host and its queues on disk are the real code; the front-end is a recorder of the events
the host emits. With `--open-files-limit 64` a step is 8 queues: a round that wrote all 100
queues before its fsync would leave ~200 handles owing an fsync in a cache of 64, and the
cache would have to fsync them on the event loop to make room.
"""
from __future__ import annotations

import asyncio
import os

from amqpbroker import contract as c
from amqpbroker.config import Config
from amqpbroker.storage.filecache import configure, process_cache
from amqpbroker.storage.record import Record
from amqpbroker.worker.host import PartitionHost

QUEUES = 100
LIMIT = 64


class FrontEnd:
    """Stands where a front-end's link stands: records confirms, and what was durable then."""

    def __init__(self, host):
        self.host = host
        self.confirms: list[tuple[int, list[int]]] = []
        self.changed = asyncio.Event()

    def emit(self, event):
        if type(event) is c.Confirm and event.upto:      # (upto 0: "seen", nothing confirmed)
            durable = [q.store.log.durable_offset for q in self.host.queues.values()]
            self.confirms.append((event.upto, durable))
            self.changed.set()


def held(under) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith(str(under))
        except FileNotFoundError:
            pass
    return n


async def test_a_round_over_more_queues_than_the_cache_holds_confirms_once_all_are_fsynced(
        tmp_path):
    host = PartitionHost(Config(data_dir=str(tmp_path), open_files_limit=LIMIT),
                         asyncio.get_running_loop())
    try:
        files = process_cache()
        assert files.limit == LIMIT
        front = FrontEnd(host)
        state = host.attach(front)
        host.handle(state, [c.Open(req=0, qid=i, vhost="/", name=f"q{i}", durable=True,
                                   auto_delete=False, arguments={},
                                   directory=str(tmp_path / f"q{i}"))
                            for i in range(1, QUEUES + 1)])
        assert len(host.queues) == QUEUES and held(tmp_path) <= LIMIT
        before = files.stats()
        host.handle(state, [c.Pub(qid=i, seq=i, priority=0, track=True, flags=0,
                                  record=Record(1_700_000_000_000, "", f"q{i}", b"\x00\x00",
                                                f"message {i}".encode(), 1))
                            for i in range(1, QUEUES + 1)])
        assert front.confirms == []

        async def confirmed():
            while not front.confirms or front.confirms[-1][0] < QUEUES:
                front.changed.clear()
                await front.changed.wait()
        await asyncio.wait_for(confirmed(), 30)

        # one round, one confirm, sent once every queue's message was fsynced
        assert front.confirms == [(QUEUES, [1] * QUEUES)]
        after = files.stats()
        assert after["evictions"] > before["evictions"]                 # the cache was full
        assert after["evictions_synced"] == before["evictions_synced"]  # no fsync on the loop
        assert held(tmp_path) <= LIMIT
    finally:
        host.close()
        configure()
    assert held(tmp_path) == 0
