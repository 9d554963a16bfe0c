"""A ``Pubs`` as a ring carries it (decoded from its bytes: its records a ``RecordRun``) to a
plain queue is kept as those bytes: no ``Record`` per publish in the store, the log appends
them as they came, and a dispatch run to a consumer goes on as a ``RecordRun``. A run with an
expiration, or a queue with TTL, limits or priorities, takes the ``Record`` path as before.

The host and its queues on disk are the real code; the front-end is a recorder of the events
the host emits."""
from __future__ import annotations

import asyncio

from amqpbroker import contract as c
from amqpbroker.config import Config
from amqpbroker.storage.record import Record, RecordRun
from amqpbroker.worker.host import PartitionHost
from amqpbroker.worker.queue import Unacked
from amqpbroker.worker.store import StoredRun

EXPIRING = b"\x01\x00\x0560000"          # expiration "60000"


class FrontEnd:
    def __init__(self):
        self.events: list = []
        self.changed = asyncio.Event()

    def emit(self, event):
        self.events.append(event)
        self.changed.set()

    def of(self, cls) -> list:
        return [e for e in self.events if type(e) is cls]


def records(first: int, n: int, flags: int = 0, props: bytes = b"") -> list[Record]:
    return [Record(1_700_000_000_000 + i, "", "q", props, b"body %d" % i * (i % 3), flags)
            for i in range(first, first + n)]


def from_ring(msg):
    """The message as the worker reads it from a ring."""
    return c.decode(c.encode_bytes(msg))


def pubs(qid: int, seq: int, recs: list, track: bool = False):
    m = from_ring(c.Pubs(qid=qid, seq=seq, priority=0, track=track, flags=0, records=recs))
    assert type(m.records) is RecordRun
    return m


async def until(front: FrontEnd, done) -> None:
    while not done():
        front.changed.clear()
        await asyncio.wait_for(front.changed.wait(), 30)


def open_queue(qid: int, tmp_path, durable: bool, arguments=None):
    return c.Open(req=0, qid=qid, vhost="/", name=f"q{qid}", durable=durable,
                  auto_delete=False, arguments=arguments or {},
                  directory=str(tmp_path / f"q{qid}"))


async def test_a_ring_pubs_is_stored_and_delivered_as_its_bytes(tmp_path):
    host = PartitionHost(Config(data_dir=str(tmp_path)), asyncio.get_running_loop())
    try:
        front = FrontEnd()
        state = host.attach(front)
        host.handle(state, [open_queue(1, tmp_path, durable=True),
                            open_queue(2, tmp_path, durable=False),
                            c.Sub(req=0, qid=2, cid=5, tag="ctag", no_ack=False,
                                  exclusive=False, arguments={}, credit=1000)])
        first, second = records(0, 40, flags=1), records(40, 10, flags=1)
        host.handle(state, [pubs(1, 1, first, track=True), pubs(1, 41, second, track=True)])
        q = host.queues[1]
        assert {type(e) for e in q.store._pending} == {StoredRun}
        assert len({id(e) for e in q.store._pending}) == 2       # one object per Pubs
        await until(front, lambda: front.of(c.Confirm) and front.of(c.Confirm)[-1].upto == 50)
        assert [r for _, r in q.store.log.read(0, 100, 1 << 20)] == first + second
        assert q.store.read(45) == second[5]

        # to a consumer: the queue's dispatch run goes on as the bytes
        mixed = records(50, 30)
        host.handle(state, [pubs(2, 51, mixed)])
        dlvs = front.of(c.Dlvs)
        assert [(d.cid, d.qid, d.offset) for d in dlvs] == [(5, 2, 0)]
        assert type(dlvs[0].records) is RecordRun and dlvs[0].records == mixed
        assert {type(e) for e in host.queues[2].outstanding.values()} == {StoredRun}
        host.handle(state, [c.Reject(qid=2, seq=52, requeue=True, offsets=[3, 4])])
        assert host.queues[2].store.read(3) == mixed[3]            # requeued: cached again
        await until(front, lambda: len(front.of(c.Dlv)) == 2)      # redelivered one by one
        assert [(d.offset, d.redelivered, d.record) for d in front.of(c.Dlv)] == \
            [(3, True, mixed[3]), (4, True, mixed[4])]
        host.handle(state, [c.Ack(qid=2, seq=53, offsets=list(range(30)))])
        assert host.queues[2].outstanding == {} and host.queues[2].ready_count == 0
    finally:
        host.close()


async def test_an_expiring_message_or_a_queue_with_limits_takes_the_record_path(tmp_path):
    host = PartitionHost(Config(data_dir=str(tmp_path)), asyncio.get_running_loop())
    try:
        front = FrontEnd()
        state = host.attach(front)
        host.handle(state, [open_queue(1, tmp_path, durable=False),
                            open_queue(2, tmp_path, durable=False,
                                       arguments={"x-max-length": 5})])
        plain = records(0, 3) + records(3, 1, props=EXPIRING) + records(4, 2)
        host.handle(state, [pubs(1, 1, plain), pubs(2, 7, records(0, 8))])
        assert [type(e) for e in host.queues[1].store._pending] == [Record] * 6
        assert [host.queues[1].store.read(o) for o in range(6)] == plain
        assert host.queues[2].ready_count == 5                      # drop-head kept the last 5
        assert [host.queues[2].store.read(o) for o in range(3, 8)] == records(0, 8)[3:]
    finally:
        host.close()


async def test_held_offsets_stay_sorted_and_a_round_releases_those_below_durable(tmp_path):
    """Deliveries made before their commit round are held whole (``outstanding`` keeps the
    record, ``_unacked_bodies`` its offset, ascending) until a round makes them durable, then
    only what a requeue needs (``Unacked``); a round visits only the offsets below the
    durable one, however many were delivered after them."""
    host = PartitionHost(Config(data_dir=str(tmp_path)), asyncio.get_running_loop())
    try:
        front = FrontEnd()
        state = host.attach(front)
        host.handle(state, [open_queue(1, tmp_path, durable=True)])
        recs = records(0, 8, flags=1)
        host.handle(state, [pubs(1, 1, recs, track=True)])
        await until(front, lambda: front.of(c.Confirm) and front.of(c.Confirm)[-1].upto == 8)
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
