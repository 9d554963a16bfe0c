"""A store fed a ``Pubs``'s bytes (``MessageStore.append_run``, a ``StoredRun``: no ``Record``
per publish) is the store fed the same records (``append_many``): the same answers to every
read, take, settle and write, the same accounting, and byte for byte the same segment files.
Write-behind and not; small, ``ELIDE_BODY`` and bigger bodies; cached, taken and written."""
import os

import pytest

from amqpbroker.storage.record import Record, RecordRun, encode_record, scan_run
from amqpbroker.worker.store import ELIDE_BODY, MessageStore, StoredRun



class Budget:
    """What the partition host is to its stores here: the count of cached body bytes."""

    def __init__(self):
        self.cache_used = 0


def commit_round(store: MessageStore) -> None:
    store.flush()
    store.sync()
    store.after_sync()

HEADERS = b"\x20\x00\x00\x00\x00\x0a\x03abcS\x00\x00\x00\x01z"     # headers {"abc": "z"}


def message(i: int) -> Record:
    size = (16, ELIDE_BODY, 5000, 0)[i % 4]
    return Record(1_000 + (i * 7) % 5, "ex" if i % 3 else "", "k%d" % i,
                  HEADERS if i % 5 == 0 else b"", bytes([i % 256]) * size, i % 2)


def append_run(store: MessageStore, records: list) -> int:
    data = b"".join(encode_record(r) for r in records)
    starts, sizes, bodies, light = scan_run(data, len(records), ELIDE_BODY)[:4]
    return store.append_run(data, len(records), starts, sizes, bodies, light)


def open_pair(tmp_path, behind: bool, budget_limit: int = 1 << 30):
    def one(name):
        return MessageStore(str(tmp_path / name), fsync="never", fsync_interval_ms=3_600_000,
                            segment_bytes=1 << 20, budget=Budget(), cache_limit=budget_limit,
                            write_behind=(1 << 30) if behind else None)
    return one("records"), one("runs")


def segment_bytes(path) -> dict:
    return {n: (path / n).read_bytes() for n in sorted(os.listdir(path))
            if n.endswith(".log") and n[0].isdigit()}


FIELDS = ("cache_bytes", "_deferred_bytes", "_light", "_settled_early",
          "_pending_settles", "_settles_owed", "next_offset", "end_offset")


def same_state(records: MessageStore, runs: MessageStore) -> None:
    assert [getattr(runs, f) for f in FIELDS] == [getattr(records, f) for f in FIELDS]
    assert runs.budget.cache_used == records.budget.cache_used
    assert sorted(runs.cache) == sorted(records.cache)
    for offset in sorted(records.cache):
        assert runs.read(offset) == records.read(offset)


@pytest.mark.parametrize("behind", [False, True])
def test_a_store_of_runs_is_a_store_of_records(tmp_path, behind):
    records, runs = open_pair(tmp_path, behind)
    try:
        groups = [[message(i) for i in range(a, b)] for a, b in ((0, 6), (6, 7), (7, 20))]
        for group in groups:
            assert append_run(runs, group) == records.append_many(group)[0]
        assert type(runs.cache[0]) is StoredRun and type(runs._pending[19]) is StoredRun
        same_state(records, runs)

        # a dispatch run across two runs, and one inside a run
        got = runs.take_run([3, 4, 5, 6, 7, 8])
        want, size = records.take_many([3, 4, 5, 6, 7, 8])
        assert got[0] == want and type(got[0]) is RecordRun and got[2] == size
        assert [h.base for h in got[1]] == [0, 0, 0, 6, 7, 7]
        assert runs.take(1) == records.take(1)                    # one alone: decoded
        assert runs.take_many([2, 9]) == records.take_many([2, 9])
        same_state(records, runs)

        # what cannot go as one run leaves the store as it was
        assert runs.take_run([10, 12]) is None                    # not consecutive
        assert runs.take_run([8, 9, 10]) is None                  # 8, 9 taken already
        assert runs.take_run([0, 1]) is None
        same_state(records, runs)

        for store in (records, runs):
            store.settle_many([1, 3, 4, 10, 11])                 # taken, cached, buffered
            store.settle(15)
            store.settle(8)
        same_state(records, runs)
        assert [type(e) for e in runs._pending[10:12]] == ([bytes, StoredRun] if behind
                                                            else [StoredRun, StoredRun])
        for store in (records, runs):
            commit_round(store)
        same_state(records, runs)

        for i in range(20, 30):                                   # runs after records
            records.append_many([message(i)])
            if i % 2:
                append_run(runs, [message(i)])
            else:
                runs.append_many([message(i)])
        for store in (records, runs):
            store.settle_many([20, 21, 24])
            store.flush(force=True)
            commit_round(store)
        same_state(records, runs)
        assert segment_bytes(tmp_path / "runs") == segment_bytes(tmp_path / "records")
        assert runs.log.read(0, 100, 1 << 20) == records.log.read(0, 100, 1 << 20)
    finally:
        records.close()
        runs.close()
    assert segment_bytes(tmp_path / "runs") == segment_bytes(tmp_path / "records")
    reopened = [MessageStore(str(tmp_path / n), fsync="never", fsync_interval_ms=3_600_000,
                             segment_bytes=1 << 20, budget=Budget(), cache_limit=1 << 30)
                for n in ("records", "runs")]
    try:
        assert list(reopened[1].unsettled()) == list(reopened[0].unsettled())
    finally:
        for store in reopened:
            store.close()


def test_eviction_of_a_written_run_and_a_take_run_after_it(tmp_path):
    """Over the cache budget a commit round drops written bodies (newest first): a dispatch
    run that finds one of its offsets gone is ``take_many``'s, read back from disk."""
    records, runs = open_pair(tmp_path, behind=False, budget_limit=6000)
    try:
        group = [message(i) for i in range(8)]
        records.append_many(group)
        append_run(runs, group)
        for store in (records, runs):
            commit_round(store)
        same_state(records, runs)
        assert 7 not in runs.cache and 0 in runs.cache
        assert runs.take_run(list(range(8))) is None
        assert runs.take_many(list(range(8))) == records.take_many(list(range(8)))
        same_state(records, runs)
    finally:
        records.close()
        runs.close()


def test_a_dispatch_run_of_part_of_a_stored_run_is_a_view_of_its_bytes(tmp_path):
    """``take_run`` of some of a run's offsets hands on a view of the run's bytes, not a
    copy (the ring's write is then the one copy of the bodies at dispatch); the whole run
    goes as its bytes; either decodes to the records taken."""
    records, runs = open_pair(tmp_path, behind=True)
    try:
        group = [Record(1_000 + i, "", "k", b"", bytes([i]) * 2000, 0) for i in range(6)]
        append_run(runs, group)
        run, held, size = runs.take_run([1, 2, 3])
        assert type(run.data) is memoryview and run.data.readonly
        stored = runs._pending[0]
        assert type(stored) is StoredRun and run.data.obj is stored.data
        assert list(run) == group[1:4] and size == 3 * 2000
        rest, _, _ = runs.take_run([4, 5])
        assert list(rest) == group[4:]
        whole = append_run(runs, group)
        run, _, _ = runs.take_run(list(range(whole, whole + 6)))
        assert type(run.data) is bytes and list(run) == group
    finally:
        records.close()
        runs.close()
