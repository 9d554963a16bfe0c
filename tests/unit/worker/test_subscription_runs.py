"""``Subscription.deliver_many``: a dispatch run goes to the link as one ``Dlvs`` per stretch of
consecutive offsets, each with at most about ``DLVS_BYTES`` of bodies (one ring record)."""
from __future__ import annotations

from types import SimpleNamespace

from amqpbroker import contract as c
from amqpbroker.storage.record import Record, RecordRun
from amqpbroker.worker.host import LinkState
from amqpbroker.worker.subscription import Subscription


class Link:
    """The host's side of a link, recording what it is sent."""

    def __init__(self):
        self.sent: list = []

    def emit(self, event) -> None:
        self.sent.append(event)


def record(i: int, size: int = 10) -> Record:
    return Record(1_700_000_000_000 + i, "", "q", b"", bytes([i % 256]) * size, 1)


def subscribe(credit: int = 100) -> tuple[Link, Subscription, SimpleNamespace]:
    link = Link()
    queue = SimpleNamespace(qid=7, name="q")
    sub = Subscription(LinkState(link), queue, 3, "ctag", no_ack=False, exclusive=False,
                       priority=0, credit=credit)
    return link, sub, queue


def test_a_run_of_consecutive_offsets_is_one_dlvs():
    link, sub, queue = subscribe()
    records = [record(i) for i in range(5)]
    sub.deliver_many(queue, [10, 11, 12, 13, 14], records, 50)
    assert link.sent == [c.Dlvs(cid=3, qid=7, offset=10, records=records)]
    assert sub.credit == 95 and sub.unacked == {10, 11, 12, 13, 14}


def test_a_gap_in_the_offsets_starts_another_dlvs():
    link, sub, queue = subscribe()
    records = [record(i) for i in range(5)]
    sub.deliver_many(queue, [3, 4, 5, 7, 8], records, 50)
    assert link.sent == [c.Dlvs(cid=3, qid=7, offset=3, records=records[:3]),
                         c.Dlvs(cid=3, qid=7, offset=7, records=records[3:])]


def test_bodies_past_dlvs_bytes_start_another_dlvs():
    link, sub, queue = subscribe()
    records = [record(i, c.DLVS_BYTES // 2 + 1) for i in range(5)]
    sub.deliver_many(queue, list(range(5)), records,
                     sum(len(r.body) for r in records))
    assert [(m.offset, len(m.records)) for m in link.sent] == [(0, 2), (2, 2), (4, 1)]
    assert [r for m in link.sent for r in m.records] == records


def test_a_run_of_bytes_is_cut_where_a_list_would_be():
    """A dispatch run a store kept as the bytes it came in (``MessageStore.take_run``: a
    ``RecordRun``) over DLVS_BYTES goes as the same ``Dlvs`` as the list of its records."""
    sizes = [c.DLVS_BYTES // 2 + 1, 10, c.DLVS_BYTES - 20, 5, 0, c.DLVS_BYTES + 7, 3, 4]
    records = [record(i, size) for i, size in enumerate(sizes)]
    as_list, sub, queue = subscribe()
    sub.deliver_many(queue, list(range(20, 28)), records, sum(sizes))
    as_run, sub, queue = subscribe()
    sub.deliver_many(queue, list(range(20, 28)), RecordRun.of(records), sum(sizes))
    assert len(as_list.sent) == 3
    assert [(m.offset, m.records) for m in as_run.sent] == \
        [(m.offset, m.records) for m in as_list.sent]
    assert all(type(m.records) is RecordRun for m in as_run.sent)
    assert sub.credit == 92 and sub.unacked == set(range(20, 28))


def test_a_stream_consumer_gets_its_deliveries_as_runs_cut_as_a_queue_s():
    """``StreamSubscription.deliver_run``: one ``Dlvs`` per about DLVS_BYTES of bodies, as
    ``Subscription.deliver_many`` cuts them; credit and the stream's counters move by all."""
    from amqpbroker.stats.counters import QueueCounters
    from amqpbroker.worker.stream import StreamSubscription
    link = Link()
    stream = SimpleNamespace(qid=9, name="s", resolve=lambda spec: 0, stats=QueueCounters())
    sub = StreamSubscription(LinkState(link), stream, 4, "ctag", no_ack=False,
                             exclusive=False, arguments={}, credit=20)
    small = [record(i) for i in range(3)]
    sub.deliver_run(stream, 100, small)
    assert link.sent == [c.Dlvs(cid=4, qid=9, offset=100, records=small)]
    big = [record(i, c.DLVS_BYTES // 2 + 1) for i in range(5)]
    sub.deliver_run(stream, 200, big)
    assert [(m.offset, len(m.records)) for m in link.sent[1:]] == [(200, 2), (202, 2), (204, 1)]
    assert [r for m in link.sent[1:] for r in m.records] == big
    assert sub.credit == 12 and stream.stats.deliver == 8
