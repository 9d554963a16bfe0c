import os

from hypothesis import given, settings
from hypothesis import strategies as st

from amqpbroker.storage import AckLog
from amqpbroker.storage.acklog import MAX_RUN, OffsetRuns


def test_floor_advances_over_contiguous_done_offsets(tmp_path):
    acks = AckLog(tmp_path / "q.acks")
    try:
        acks.record([1, 3, 4])
        assert acks.floor == 0 and list(acks.done_above_floor()) == [1, 3, 4]
        acks.record([0, 2])
        assert acks.floor == 5 and not acks.done_above_floor()
        acks.record([9, 2])  # 2 is already done: ignored
        assert acks.is_done(0) and acks.is_done(4) and acks.is_done(9)
        assert not acks.is_done(5) and not acks.is_done(10)
    finally:
        acks.close()


def test_state_survives_reopen_and_crash(tmp_path):
    path = tmp_path / "q.acks"
    acks = AckLog(path)
    acks.record([0, 1, 7, 8])
    acks.sync()
    acks.close()
    acks = AckLog(path)
    acks.record([12])
    acks._simulate_crash()  # written, not synced: still in the page cache
    acks = AckLog(path)
    try:
        assert acks.floor == 2 and list(acks.done_above_floor()) == [7, 8, 12]
    finally:
        acks.close()


def test_torn_tail_is_dropped(tmp_path):
    path = tmp_path / "q.acks"
    acks = AckLog(path)
    acks.record([0])
    size = os.path.getsize(path)
    acks.record([5])
    acks.close()
    torn_size = os.path.getsize(path) - 3
    with open(path, "r+b") as f:
        f.truncate(torn_size)
    acks = AckLog(path)
    try:
        assert acks.truncated_bytes == torn_size - size
        assert os.path.getsize(path) == size
        assert acks.floor == 1 and not acks.done_above_floor()
        acks.record([1])  # appends cleanly after the cut
    finally:
        acks.close()
    acks = AckLog(path)
    try:
        assert acks.floor == 2
    finally:
        acks.close()


def test_automatic_compaction_keeps_state_and_shrinks_the_file(tmp_path):
    path = tmp_path / "q.acks"
    acks = AckLog(path, fsync="never", compact_bytes=2000)
    try:
        for i in range(0, 2000, 2):  # every even offset: sparse, never contiguous from the floor
            acks.record([i])
            assert os.path.getsize(path) <= max(2000, 2 * 12 * (i // 2 + 1) + 100) + 40
        acks.record(range(1, 1001, 2))
        assert acks.floor == 1001
        state = (acks.floor, list(acks.done_above_floor()))
    finally:
        acks.close()
    assert not os.path.exists(str(path) + ".tmp")
    acks = AckLog(path, fsync="never")
    try:
        assert (acks.floor, list(acks.done_above_floor())) == state
    finally:
        acks.close()


def test_advance_floor_and_leftover_tmp(tmp_path):
    path = tmp_path / "q.acks"
    acks = AckLog(path)
    acks.record([3, 100])
    acks.advance_floor(50)
    assert acks.floor == 50 and list(acks.done_above_floor()) == [100]
    acks.close()
    with open(str(path) + ".tmp", "wb") as f:
        f.write(b"half a compaction")
    acks = AckLog(path)
    try:
        assert not os.path.exists(str(path) + ".tmp")
        assert acks.floor == 50 and list(acks.done_above_floor()) == [100]
    finally:
        acks.close()


def test_forget_from_undoes_offsets_the_log_no_longer_has(tmp_path):
    path = tmp_path / "q.acks"
    acks = AckLog(path)
    acks.record([0, 1, 2, 3, 6, 8])
    acks.forget_from(2)  # the partition's tail from offset 2 was cut by recovery
    assert acks.floor == 2 and not acks.done_above_floor()
    acks.close()
    acks = AckLog(path)
    try:
        assert acks.floor == 2 and not acks.is_done(6)
    finally:
        acks.close()


_ops = st.lists(st.tuples(st.sampled_from(["add", "drop_below", "drop_from"]),
                          st.integers(0, 60), st.integers(1, 12)), max_size=25)


@settings(max_examples=300, deadline=None)
@given(_ops, st.integers(0, 70), st.integers(0, 70))
def test_offset_runs_agree_with_a_set(ops, lo, hi):
    runs, model = OffsetRuns(), set()
    for op, a, n in ops:
        if op == "add":
            runs.add(a, a + n)
            model |= set(range(a, a + n))
        elif op == "drop_below":
            runs.drop_below(a)
            model = {o for o in model if o >= a}
        else:
            runs.drop_from(a)
            model = {o for o in model if o < a}
        pairs = runs.runs()
        assert all(s < e for s, e in pairs)
        assert all(e1 < s2 for (_, e1), (s2, _) in zip(pairs, pairs[1:]))  # disjoint, apart
    assert list(runs) == sorted(model)
    assert all((o in runs) == (o in model) for o in range(80))
    assert runs.count(lo, hi) == len([o for o in model if lo <= o < hi])
    assert [o for a, b in runs.gaps(lo, hi) for o in range(a, b)] == \
        [o for o in range(lo, hi) if o not in model]


def test_a_stuck_offset_and_millions_done_after_it_cost_one_run(tmp_path):
    path = tmp_path / "q.acks"
    acks = AckLog(path, fsync="never")
    try:
        for first in range(1, 5_000_001, 50_000):
            acks.record(range(first, first + 50_000))
        assert acks.floor == 0 and acks.done_runs() == [(1, 5_000_001)]
        assert acks.count_done(0, 10) == 9 and acks.all_done(1, 5_000_001)
        assert not acks.all_done(0, 2) and list(acks.not_done(0, 5_000_010)) == \
            [(0, 1), (5_000_001, 5_000_010)]
        acks.compact()
        assert os.path.getsize(path) == 8 + 8 + 1 + 8 + 4 + 12   # header, entry, one run
    finally:
        acks.close()
    acks = AckLog(path, fsync="never")
    try:
        acks.record([0])
        assert acks.floor == 5_000_001 and not acks.done_runs()
    finally:
        acks.close()


def test_a_run_longer_than_the_u32_length_is_written_in_pieces(tmp_path):
    path = tmp_path / "q.acks"
    acks = AckLog(path, fsync="never")
    try:
        acks.advance_floor(1)
        acks.record([MAX_RUN + 10])
        acks._mark(2, MAX_RUN + 10)              # a run as long as DONE entries never make
        acks.compact()
    finally:
        acks.close()
    acks = AckLog(path, fsync="never")
    try:
        assert acks.floor == 1 and acks.done_runs() == [(2, MAX_RUN + 11)]
    finally:
        acks.close()


def test_durable_counts_entries_known_to_be_on_disk(tmp_path):
    acks = AckLog(tmp_path / "q.acks", fsync="interval", fsync_interval_ms=3_600_000)
    try:
        acks.record([1])
        acks.record([2])
        assert (acks.written, acks.durable) == (2, 0)
        acks.sync()                              # the interval is not up: no fsync
        assert acks.durable == 0
        acks.sync(force=True)
        assert acks.durable == 2
        acks.record([3])
        acks.compact()                           # the snapshot is fsynced: all of it durable
        assert (acks.written, acks.durable) == (3, 3)
    finally:
        acks.close()


def test_a_failed_compaction_keeps_the_entry_and_is_retried(tmp_path):
    """record() returns the offsets it made done even when the compaction after the append
    fails (the store counts them per segment), and compacts on a later record."""
    path = tmp_path / "q.acks"
    acks = AckLog(path, fsync="never", compact_bytes=100)
    try:
        os.mkdir(str(path) + ".tmp")             # the compaction cannot create its file
        assert acks.record([0]) == [0]           # makes the file
        inode = os.stat(path).st_ino
        assert [acks.record([i * 2]) for i in range(1, 10)] == [[i * 2] for i in range(1, 10)]
        assert os.stat(path).st_ino == inode and os.path.getsize(path) > 100
        os.rmdir(str(path) + ".tmp")
        assert acks.record([1]) == [1]
        assert os.stat(path).st_ino != inode     # compacted now
        acks.record([3])                         # appended to the new file
    finally:
        acks.close()
    acks = AckLog(path, fsync="never")
    try:
        assert acks.floor == 5 and acks.done_above_floor() == [6, 8, 10, 12, 14, 16, 18]
    finally:
        acks.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 60), max_size=12), max_size=12), st.integers(0, 20))
def test_record_returns_the_offsets_not_done_before_whatever_their_order(tmp_path_factory,
                                                                         batches, floor):
    """``record`` skips the per-offset lookup when every offset is past what is done:
    in order or not, repeated, below the floor, what it returns and what the file keeps
    are a set's."""
    acks = AckLog(tmp_path_factory.mktemp("acks") / "q.acks")
    try:
        acks.advance_floor(floor)
        done = set(range(floor))
        for batch in batches:
            expected = sorted(set(batch) - done)
            assert acks.record(batch) == expected
            done |= set(batch)
            assert all(acks.is_done(o) == (o in done) for o in range(70))
    finally:
        acks.close()
    reopened = AckLog(acks.path)
    try:
        assert all(reopened.is_done(o) == (o in done) for o in range(70))
    finally:
        reopened.close()
