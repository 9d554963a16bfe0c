"""Deliveries made before their commit round: the queue holds each whole (``outstanding``
keeps the record, ``_unacked_bodies`` its offset, ascending) until a round makes it durable,
then keeps only what a requeue needs (``Unacked``). A round visits only the offsets below
the durable one, however many were delivered after them.

The host and its queue on disk are the real code; the front-end records what the host
emits."""
from __future__ import annotations

import asyncio

from amqpbroker import contract as c
from amqpbroker.config import Config
from amqpbroker.storage.record import Record
from amqpbroker.worker.host import PartitionHost
from amqpbroker.worker.queue import Unacked


class FrontEnd:
    def __init__(self):
        self.events: list = []
        self.changed = asyncio.Event()

    def emit(self, event):
        self.events.append(event)
        self.changed.set()


async def test_held_offsets_stay_sorted_and_a_round_releases_those_below_durable(tmp_path):
    host = PartitionHost(Config(data_dir=str(tmp_path)), asyncio.get_running_loop())
    try:
        front = FrontEnd()
        state = host.attach(front)
        host.handle(state, [c.Open(req=0, qid=1, vhost="/", name="q", durable=True,
                                   auto_delete=False, arguments={},
                                   directory=str(tmp_path / "q"))])
        recs = [Record(1_700_000_000_000 + i, "", "q", b"", b"body %d" % i, 1)
                for i in range(8)]
        host.handle(state, [c.Pub(qid=1, seq=i + 1, priority=0, track=True, flags=0,
                                  record=r) for i, r in enumerate(recs)])
        while not any(type(e) is c.Confirm and e.upto == 8 for e in front.events):
            front.changed.clear()
            await asyncio.wait_for(front.changed.wait(), 30)
        q = host.queues[1]
        assert q.store.log.durable_offset == 8

        # held whole as deliveries before their round would hold them: in offset order,
        # then a redelivery of a lower offset, one offset twice, and two past the durable
        # offset (not written yet)
        for offsets in ([3, 4, 5], [1], [4, 6], [7], [20, 21]):
            for o in offsets:
                q.outstanding[o] = recs[o % 8]
            q._hold_bodies(offsets)
        assert q._unacked_bodies == [1, 3, 4, 5, 6, 7, 20, 21]

        q._released_below = 0
        q._release_unacked_bodies()
        assert q._unacked_bodies == [20, 21]
        assert {o: q.outstanding[o] for o in (1, 3, 4, 5, 6, 7)} == \
            {o: Unacked(0, len(recs[o].body)) for o in (1, 3, 4, 5, 6, 7)}
        assert q.outstanding[20] is recs[4] and q.outstanding[21] is recs[5]
    finally:
        host.close()
