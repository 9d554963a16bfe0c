"""A subscription: a consumer as the partition host sees it — a tag, a link and credit.

The queue asks ``can_take()`` and calls ``deliver``; each delivery spends one credit, and the
front-end grants more (see the credit rule in ``links/__init__``). Delivery tags, prefetch
accounting per channel and the socket belong to the front-end's ``Consumer``.
"""
from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from operator import attrgetter

from ..contract import DLVS_BYTES, Dlv, Dlvs
from ..storage.record import RecordRun, scan_run


class Subscription:
    __slots__ = ("state", "queue", "cid", "tag", "no_ack", "exclusive", "priority", "credit",
                 "unacked")

    def __init__(self, state, queue, cid: int, tag: str, *, no_ack: bool, exclusive: bool,
                 priority: int, credit: int):
        self.state = state
        self.queue = queue
        self.cid = cid
        self.tag = tag
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = priority
        self.credit = credit
        self.unacked = state.unacked.setdefault(queue.qid, set())

    def can_take(self) -> bool:
        return self.credit > 0

    def deliver(self, queue, offset: int, record, redelivered: bool) -> None:
        self.credit -= 1
        if not self.no_ack:
            self.unacked.add(offset)
        self.state.emit(Dlv(cid=self.cid, qid=queue.qid, offset=offset,
                            redelivered=redelivered, record=record))

    def deliver_many(self, queue, offsets: list[int], records: list, size: int) -> None:
        """``deliver`` for each, none a redelivery (``Queue._dispatch_run``: ``offsets``
        ascending, ``size`` the bytes of their bodies), as one ``Dlvs`` per stretch of
        consecutive offsets of at most about DLVS_BYTES of bodies (one, usually)."""
        n = len(offsets)
        self.credit -= n
        if not self.no_ack:
            self.unacked.update(offsets)
        cid, qid, emit = self.cid, queue.qid, self.state.emit
        first = offsets[0]
        if offsets[-1] - first == n - 1 and size <= DLVS_BYTES:
            emit(Dlvs(cid, qid, first, records))    # positional: half the cost of keywords
            return
        if type(records) is RecordRun:      # consecutive (MessageStore.take_run): cut by bytes
            self._deliver_run_cut(qid, first, records)
            return
        emit_runs(emit, cid, qid, offsets, records)

    def _deliver_run_cut(self, qid: int, first: int, run: RecordRun) -> None:
        """A run of more than DLVS_BYTES of bodies as several ``Dlvs``, cut where its bytes
        lie, as ``deliver_many`` cuts a list: a record joins a ``Dlvs`` whose bodies so far
        are at most DLVS_BYTES."""
        starts, sizes = scan_run(run.data, run.count, 0)[:2]
        starts = memoryview(starts).cast("I")
        ends = list(accumulate(memoryview(sizes).cast("I")))     # body bytes up to each
        data, n, emit = run.data, run.count, self.state.emit
        i = 0
        while i < n:
            below = ends[i - 1] if i else 0
            j = min(n, bisect_right(ends, below + DLVS_BYTES, i) + 1)
            emit(Dlvs(cid=self.cid, qid=qid, offset=first + i,
                      records=RecordRun(data[starts[i]:starts[j]], j - i)))
            i = j

    def __repr__(self) -> str:
        return f"<Subscription {self.tag} on {self.queue.name}>"


_BODY = attrgetter("body")


def emit_runs(emit, cid: int, qid: int, offsets, records: list) -> None:
    """``records`` (at ``offsets``, ascending) to consumer ``cid`` as one ``Dlvs`` per
    stretch of consecutive offsets of at most about DLVS_BYTES of bodies: a record joins a
    ``Dlvs`` whose bodies so far are at most DLVS_BYTES (a queue's dispatch run, a stream's
    read: ``StreamSubscription.deliver_run``)."""
    first = offsets[0]
    n = len(records)
    if offsets[n - 1] - first == n - 1 and \
            sum(map(len, map(_BODY, records))) - len(records[n - 1].body) <= DLVS_BYTES:
        emit(Dlvs(cid=cid, qid=qid, offset=first, records=records))    # the usual: one
        return
    start = size = 0
    for i, rec in enumerate(records):
        if offsets[i] != first + i - start or size > DLVS_BYTES:
            emit(Dlvs(cid=cid, qid=qid, offset=first, records=records[start:i]))
            start, first, size = i, offsets[i], 0
        size += len(rec.body)
    emit(Dlvs(cid=cid, qid=qid, offset=first, records=records[start:] if start else records))
