"""Hypothesis: the ring behaves like a deque of records, with an exact model of its byte layout
(8-byte aligned records with a 4-byte header, wrap markers) so that "full" is predicted too."""
from __future__ import annotations

import os
import uuid
from collections import deque

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shm.ring import Ring


def rec_size(n: int) -> int:
    return (4 + n + 7) & ~7


class RingModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.ring = None
        self.q: deque[tuple[bytes, int]] = deque()  # (record, head after pushing it)
        self.head = self.tail = 0
        self.seq = 0

    @initialize(cap_log2=st.integers(6, 10))
    def create(self, cap_log2):
        self.cap = 1 << cap_log2
        self.ring = Ring.create("amqptest-" + uuid.uuid4().hex[:12], self.cap)
        assert self.ring.max_record == self.cap // 2 - 4

    def teardown(self):
        if self.ring is not None:
            self.ring.close()
            self.ring.unlink()
            assert not os.path.exists("/dev/shm" + self.ring.name)

    # -------------------------------------------------------------- model of the layout
    def _fits(self, n: int, head: int) -> int | None:
        """New head after pushing a record of n bytes at head, or None if it does not fit."""
        sz, room = rec_size(n), self.cap - head % self.cap
        need = sz if sz <= room else room + sz
        return head + need if self.cap - (head - self.tail) >= need else None

    def _record(self, size: int) -> bytes:
        self.seq += 1
        stamp = self.seq.to_bytes(8, "little")
        return (stamp * (size // 8 + 1))[:size]

    # -------------------------------------------------------------- rules
    @rule(data=st.data())
    def push(self, data):
        size = data.draw(st.one_of(st.integers(0, self.ring.max_record),
                                   st.sampled_from([self.ring.max_record, self.ring.max_record - 1,
                                                    self.ring.max_record + 1, 0, 4, 5])))
        rec = self._record(size)
        if size > self.ring.max_record:
            try:
                self.ring.push(rec)
            except ValueError:
                return
            raise AssertionError("too-big record accepted")
        new_head = self._fits(size, self.head)
        assert self.ring.push(rec) is (new_head is not None)
        if new_head is not None:
            self.head = new_head
            self.q.append((rec, new_head))

    @rule(sizes=st.lists(st.integers(0, 200), max_size=12))
    def push_many(self, sizes):
        sizes = [min(s, self.ring.max_record) for s in sizes]
        recs = [self._record(s) for s in sizes]
        expected = 0
        for rec in recs:
            new_head = self._fits(len(rec), self.head)
            if new_head is None:
                break
            self.head = new_head
            self.q.append((rec, new_head))
            expected += 1
        assert self.ring.push_many(recs) == expected

    @rule()
    def pop(self):
        got = self.ring.pop()
        if not self.q:
            assert got is None
            return
        rec, end = self.q.popleft()
        assert got == rec
        self.tail = end

    @rule(max_records=st.integers(1, 20), max_bytes=st.integers(0, 1500))
    def pop_many(self, max_records, max_bytes):
        got = self.ring.pop_many(max_records=max_records, max_bytes=max_bytes)
        expected, total = [], 0
        while self.q and len(expected) < max_records:
            rec, end = self.q[0]
            if expected and total + len(rec) > max_bytes:
                break
            self.q.popleft()
            expected.append(rec)
            total += len(rec)
            self.tail = end
        assert got == expected

    @rule(max_records=st.integers(1, 20))
    def pop_many_into(self, max_records):
        """The C-side batch pop into a caller buffer agrees with the model too."""
        buf = bytearray(self.ring.max_record * 2)
        ends = self.ring.pop_many_into(buf, max_records=max_records)
        expected, total = [], 0
        while self.q and len(expected) < max_records:
            rec, end = self.q[0]
            if total + len(rec) > len(buf):
                break
            self.q.popleft()
            expected.append(rec)
            total += len(rec)
            self.tail = end
        starts = [0] + ends[:-1]
        assert [bytes(buf[a:b]) for a, b in zip(starts, ends)] == expected

    @precondition(lambda self: self.ring is not None)
    @invariant()
    def consistent(self):
        assert self.ring.valid()
        assert self.ring.used_bytes() == self.head - self.tail


RingModel.TestCase.settings = settings(
    max_examples=100, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRingModel = RingModel.TestCase
