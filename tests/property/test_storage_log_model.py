"""PartitionLog against an in-memory list of records, including crashes and torn writes.

The model is the list of every record appended (offset = index) plus the start offset. A
"crash" drops the object without close(): whatever write() handed the kernel survives, as it
does after kill -9. A torn write is simulated by cutting the active segment's .log at a random
byte; the model then keeps exactly the records whose batches ended at or before the cut (it
remembers the .log size after every append). Recovery may never invent or reorder anything.
"""
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from amqpbroker.storage import OffsetOutOfRange, PartitionLog, Record
from amqpbroker.storage.fileformat import HEADER_SIZE

records_st = st.builds(
    Record,
    timestamp=st.integers(1_000, 1_050),
    exchange=st.sampled_from(["", "amq.direct", "logs"]),
    routing_key=st.text(max_size=5),
    properties=st.binary(max_size=8),
    body=st.binary(max_size=60),
    flags=st.integers(0, 1),
)


class PartitionLogModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="pytest-of-model-")
        self.dir = os.path.join(self.root, "p")
        self.log = None

    @initialize(policy=st.sampled_from(["never", "always"]),
                segment_bytes=st.integers(150, 600), index_interval=st.integers(1, 200))
    def open_log(self, policy, segment_bytes, index_interval):
        self.kw = dict(fsync=policy, segment_bytes=segment_bytes, index_interval_bytes=index_interval)
        self.records: list[Record] = []
        self.start = 0
        self.durable = 0
        self.written: list[tuple[int, str, int]] = []  # (end offset, active .log, its size) per append
        self.reopen()

    def reopen(self):
        self.log = PartitionLog(self.dir, **self.kw)
        self.durable = len(self.records)

    def active_log_path(self):
        """The newest segment's .log; None before the first append made one (files are made
        lazily, storage/log.py)."""
        names = [n for n in os.listdir(self.dir) if n.endswith(".log")] \
            if os.path.isdir(self.dir) else []
        return os.path.join(self.dir, max(names)) if names else None

    @rule(batch=st.lists(records_st, min_size=1, max_size=4))
    def append(self, batch):
        assert self.log.append(batch) == len(self.records)
        self.records.extend(batch)
        path = self.active_log_path()
        self.written.append((len(self.records), path, os.path.getsize(path)))
        if self.kw["fsync"] == "never":
            self.durable = len(self.records)

    @rule()
    def sync(self):
        self.durable = len(self.records)
        assert self.log.sync() == self.durable

    @rule(where=st.integers(0, 10**6), max_records=st.integers(1, 20), max_bytes=st.integers(1, 400))
    def read(self, where, max_records, max_bytes):
        offset = self.start + where % (len(self.records) - self.start + 2)
        got = self.log.read(offset, max_records=max_records, max_bytes=max_bytes)
        want = self.records[offset:self.durable][:max_records]
        assert [r for _, r in got] == want[:len(got)]
        assert [o for o, _ in got] == list(range(offset, offset + len(got)))
        assert got or not want  # at least one record whenever one is readable

    @precondition(lambda self: self.start > 0)
    @rule()
    def read_below_start_raises(self):
        try:
            self.log.read(self.start - 1)
        except OffsetOutOfRange:
            return
        raise AssertionError("read below the start offset did not raise")

    @rule(ts=st.integers(995, 1_055))
    def offset_for_timestamp(self, ts):
        want = next((o for o in range(self.start, len(self.records))
                     if self.records[o].timestamp >= ts), len(self.records))
        assert self.log.offset_for_timestamp(ts) == want

    @rule(max_bytes=st.integers(0, 2000))
    def retention_by_bytes(self, max_bytes):
        removed = self.log.enforce_retention(max_bytes=max_bytes)
        self.start += removed
        assert (self.log.size_bytes() <= max_bytes or self.active_log_path() is None
                or self.log.start_offset == self.written_base())   # None: nothing written yet

    @rule(where=st.integers(0, 10**6))
    def delete_before(self, where):
        offset = where % (len(self.records) + 1)
        self.start += self.log.delete_before(offset)

    def written_base(self):
        return int(os.path.basename(self.active_log_path())[:20])

    @rule()
    def close_and_reopen(self):
        self.log.close()
        self.reopen()
        assert not self.log.recovery.data_cut

    @rule(cut=st.one_of(st.none(), st.integers(0, 10**6)))
    def crash(self, cut):
        self.log._simulate_crash()
        keep, garbage = len(self.records), 0
        path = self.active_log_path()
        if cut is not None and path is not None:    # no file yet: nothing to cut
            size = os.path.getsize(path)
            cut %= size + 1
            with open(path, "r+b") as f:
                f.truncate(cut)
            whole = [(end, sz) for end, p, sz in self.written if p == path and sz <= cut]
            keep = max(whole)[0] if whole else int(os.path.basename(path)[:20])
            boundary = max(whole)[1] if whole else HEADER_SIZE
            garbage = cut - boundary if cut >= HEADER_SIZE else 0  # a torn header is recreated
        self.records = self.records[:keep]
        self.written = [w for w in self.written if w[0] <= keep]
        self.reopen()
        report = self.log.recovery
        assert (report.bytes_truncated, report.segments_deleted) == (garbage, 0)

    @invariant()
    def offsets_agree(self):
        if self.log is not None:
            assert (self.log.start_offset, self.log.end_offset) == (self.start, len(self.records))
            assert self.log.durable_offset == self.durable

    def teardown(self):
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.root)


PartitionLogModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow])
TestPartitionLogModel = PartitionLogModel.TestCase
