"""A queue deleted on the event loop while its commit round's fsync runs in the thread.

The round took the queue while it was alive; the delete closed its files and moved its
directory to the trash; the thread's ``sync`` of it then finds its files gone. That is not a
disk failure: no disk alarm (publishers everywhere blocked for a second) and no retry. A live
queue whose files fail still raises the alarm."""
from __future__ import annotations

import asyncio

import pytest

from amqpbroker import contract as c
from amqpbroker.config import Config
from amqpbroker.storage.record import Record
from amqpbroker.worker.committer import _sync_queue
from amqpbroker.worker.host import PartitionHost


class FrontEnd:
    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)


async def quorum_queue_owing_its_counts(tmp_path):
    """A host with a durable quorum queue whose delivery counts were written in this round
    (flush) and not yet fsynced (sync): what the fsync thread holds when the delete comes."""
    host = PartitionHost(Config(data_dir=str(tmp_path)), asyncio.get_running_loop())
    front = FrontEnd()
    state = host.attach(front)
    host.handle(state, [c.Open(req=0, qid=1, vhost="/", name="q", durable=True,
                               auto_delete=False, arguments={"x-queue-type": "quorum"},
                               directory=str(tmp_path / "q"))])
    host.handle(state, [c.Pub(qid=1, seq=1, priority=0, track=True, flags=0,
                              record=Record(1_700_000_000_000, "", "q", b"", b"m", 1))])
    q = host.queues[1]
    q.counts.set(0, 1)                     # a requeue counted (worker/quorum.py)
    q.flush()
    return host, state, front, q


async def test_the_sync_of_a_queue_deleted_meanwhile_is_not_a_disk_failure(tmp_path):
    host, state, front, q = await quorum_queue_owing_its_counts(tmp_path)
    try:
        host.handle(state, [c.Delete(req=7, qid=1, if_unused=False, if_empty=False)])
        assert [e.ok for e in front.events if type(e) is c.Reply and e.req == 7] == [True]
        assert not (tmp_path / "q").exists()
        _sync_queue(q)                     # as the fsync thread runs it after the delete
        assert host.alarms.active == {}
    finally:
        host.close()


async def test_the_sync_of_a_live_queue_whose_files_are_gone_still_fails(tmp_path):
    host, state, front, q = await quorum_queue_owing_its_counts(tmp_path)
    try:
        (tmp_path / "q" / "counts.log").unlink()   # not a delete: the disk lost it
        with pytest.raises(FileNotFoundError):
            _sync_queue(q)
    finally:
        host.close()
