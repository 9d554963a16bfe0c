"""AckLog against a set of done offsets, including compaction, crashes and torn tails.

The model remembers the file size and the state after every operation since the file was last
rewritten (compaction replaces the inode). A crash may cut the file anywhere after that
rewrite; recovery must then yield exactly the state of the last operation that was wholly
before the cut: nothing invented, nothing from a later entry.
"""
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from amqpbroker.storage import AckLog
from amqpbroker.storage.fileformat import HEADER_SIZE


def canonical(done: set[int], floor: int) -> tuple[int, frozenset[int]]:
    while floor in done:
        floor += 1
    return floor, frozenset(o for o in done if o > floor)


class AckLogModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="pytest-of-model-")
        self.path = os.path.join(self.root, "q.acks")
        self.acks = None

    @initialize(compact_bytes=st.integers(40, 400))
    def open_log(self, compact_bytes):
        self.compact_bytes = compact_bytes
        self.state = (0, frozenset())
        self.reopen()

    def reopen(self):
        self.acks = AckLog(self.path, fsync="never", compact_bytes=self.compact_bytes)
        self.history = []
        self.snapshot()

    def snapshot(self):
        if not os.path.exists(self.path):     # made by the first append: as if header only
            self.history.append((None, HEADER_SIZE, self.state))
            return
        st_ = os.stat(self.path)
        if self.history and self.history[-1][0] not in (None, st_.st_ino):
            self.history = []  # rewritten by compaction: older sizes mean nothing now
        self.history.append((st_.st_ino, st_.st_size, self.state))

    @rule(offsets=st.lists(st.integers(0, 40), max_size=6))
    def record(self, offsets):
        self.acks.record(offsets)
        floor, above = self.state
        self.state = canonical(set(above) | set(offsets), floor)
        self.snapshot()

    @rule(offset=st.integers(0, 45))
    def advance_floor(self, offset):
        self.acks.advance_floor(offset)
        floor, above = self.state
        self.state = canonical(set(above), max(floor, offset))
        self.snapshot()

    @rule()
    def compact(self):
        self.acks.compact()
        self.snapshot()

    @rule()
    def close_and_reopen(self):
        self.acks.close()
        self.reopen()

    @rule(cut=st.one_of(st.none(), st.integers(0, 10**6)))
    def crash(self, cut):
        self.acks._simulate_crash()
        if cut is not None and os.path.exists(self.path):   # no file yet: nothing to cut
            first = self.history[0][1]
            size = os.path.getsize(self.path)
            cut = first + cut % (size - first + 1)
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            self.state = max((h for h in self.history if h[1] <= cut), key=lambda h: h[1])[2]
        self.reopen()

    @invariant()
    def state_agrees(self):
        if self.acks is not None:
            floor, above = self.state
            assert self.acks.floor == floor
            assert set(self.acks.done_above_floor()) == above
            assert all(self.acks.is_done(o) == (o < floor or o in above) for o in range(50))

    def teardown(self):
        if self.acks is not None:
            self.acks.close()
        shutil.rmtree(self.root)


AckLogModel.TestCase.settings = settings(
    max_examples=80, stateful_step_count=30, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow])
TestAckLogModel = AckLogModel.TestCase
