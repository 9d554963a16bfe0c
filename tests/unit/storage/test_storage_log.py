import os
import threading

import pytest

from amqpbroker.storage import LogClosedError, OffsetOutOfRange, PartitionLog, Record
from amqpbroker.storage.filecache import FileCache


def rec(i: int, ts: int | None = None, size: int = 10) -> Record:
    return Record(1_000 + i if ts is None else ts, "ex", f"rk.{i}", b"\x00\x00", bytes([i % 256]) * size, i & 1)


def log_files(path, ext=".log"):
    return sorted(n for n in os.listdir(path) if n.endswith(ext))


@pytest.fixture
def make_log(tmp_path):
    opened = []

    def make(**kw):
        kw.setdefault("fsync", "never")
        log = PartitionLog(tmp_path / "p0", **kw)
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


def test_append_assigns_contiguous_offsets_and_reads_back(make_log):
    log = make_log()
    assert (log.start_offset, log.end_offset) == (0, 0)
    assert log.append([rec(0), rec(1), rec(2)]) == 0
    assert log.append([rec(3)]) == 3
    assert log.append([]) == 4
    assert log.read(0) == [(i, rec(i)) for i in range(4)]
    assert log.read(2, max_records=1) == [(2, rec(2))]
    assert log.read(4) == [] and log.read(100) == []
    assert log.read_one(3) == rec(3)


def test_files_start_with_magic_and_version(make_log, tmp_path):
    log = make_log()
    assert not (tmp_path / "p0").exists()      # the files come with the first append ...
    log.append([rec(0)])
    assert os.listdir(tmp_path / "p0") == [f"{0:020d}.log"]  # ... the indexes' with entries
    for i in range(1, 12):
        log.append([rec(i, size=1000)])
    # a segment log is version 2 (batches carry their leader epoch), the indexes version 1
    for ext, head in ((".log", b"AQLG\x00\x02"), (".index", b"AQIX\x00\x01"),
                      (".timeindex", b"AQTI\x00\x01")):
        with open(tmp_path / "p0" / f"{0:020d}{ext}", "rb") as f:
            assert f.read(8) == head + b"\x00\x00"


def test_max_bytes_limits_but_always_returns_one_record(make_log):
    log = make_log()
    log.append([rec(i, size=1000) for i in range(10)])
    assert len(log.read(0, max_bytes=1)) == 1
    assert len(log.read(0, max_bytes=3500)) == 3
    assert [o for o, _ in log.read(7, max_bytes=10**9)] == [7, 8, 9]


def test_always_policy_hides_records_until_sync(make_log):
    log = make_log(fsync="always")
    log.append([rec(0), rec(1)])
    assert log.durable_offset == 0 and log.read(0) == []
    with pytest.raises(OffsetOutOfRange):
        log.read_one(0)
    assert log.sync() == 2 and log.durable_offset == 2
    assert [o for o, _ in log.read(0)] == [0, 1]


def test_interval_policy_syncs_only_when_due_or_forced(make_log):
    log = make_log(fsync="interval", fsync_interval_ms=3_600_000)
    log.append([rec(0)])
    assert log.sync() == 0
    assert log.sync(force=True) == 1
    eager = make_log(fsync="interval", fsync_interval_ms=0)
    assert eager is not None


def test_rolls_by_size_and_reads_across_segments(make_log, tmp_path):
    log = make_log(segment_bytes=400, index_interval_bytes=64)
    for i in range(60):
        log.append([rec(i)])
    assert len(log_files(tmp_path / "p0")) > 5
    assert log.read(0, max_records=100) == [(i, rec(i)) for i in range(60)]
    for i in range(60):  # every offset through the sparse index
        assert log.read(i, max_records=1) == [(i, rec(i))]


def test_rolls_by_age_of_record_timestamps(make_log, tmp_path):
    log = make_log(segment_ms=1000)
    log.append([rec(0, ts=10_000)])
    log.append([rec(1, ts=10_999)])
    log.append([rec(2, ts=11_000)])
    assert log_files(tmp_path / "p0") == [f"{0:020d}.log", f"{2:020d}.log"]


def test_offset_for_timestamp_matches_brute_force_with_unordered_timestamps(make_log):
    log = make_log(segment_bytes=500, index_interval_bytes=50)
    stamps = [(i * 7919) % 97 + 1000 for i in range(80)]
    for i in range(0, 80, 3):
        log.append([rec(j, ts=stamps[j]) for j in range(i, min(i + 3, 80))])
    for ts in range(990, 1110):
        expected = next((o for o, s in enumerate(stamps) if s >= ts), 80)
        assert log.offset_for_timestamp(ts) == expected, ts


def test_retention_by_bytes_and_age_deletes_whole_closed_segments(make_log, tmp_path):
    log = make_log(segment_bytes=300)
    for i in range(40):
        log.append([rec(i, ts=i * 1000)])
    segments = len(log_files(tmp_path / "p0"))
    assert log.enforce_retention(max_age_ms=10**9, now_ms=40_000) == 0
    removed = log.enforce_retention(max_age_ms=15_500, now_ms=40_000)
    assert removed == log.start_offset > 0
    assert all(ts >= 40_000 - 15_500 - 5_000 for ts in (r.timestamp for _, r in log.read(log.start_offset)))
    with pytest.raises(OffsetOutOfRange):
        log.read(0)
    total_before = log.start_offset
    removed = log.enforce_retention(max_bytes=1)
    assert removed == log.start_offset - total_before
    assert len(log_files(tmp_path / "p0")) == 1 < segments  # the active segment always stays
    assert log.end_offset == 40 and log.read(log.start_offset)[-1] == (39, rec(39, ts=39_000))


def test_delete_before_removes_only_fully_done_segments(make_log, tmp_path):
    log = make_log(segment_bytes=300)
    for i in range(30):
        log.append([rec(i)])
    bases = [int(n[:20]) for n in log_files(tmp_path / "p0")]
    assert log.delete_before(bases[2] - 1) == bases[1]
    assert log.start_offset == bases[1]
    assert log.delete_before(bases[2]) == bases[2] - bases[1]
    assert log.delete_before(10**6) == bases[-1] - bases[2]  # never the active segment
    assert log.start_offset == bases[-1] and log.end_offset == 30


def test_delete_segment_leaves_a_gap_that_reads_step_over(make_log):
    log = make_log(segment_bytes=1)                     # one segment per append
    for i in range(0, 12, 3):
        log.append([rec(j) for j in range(i, i + 3)])
    assert log.segment_bounds() == [(0, 3), (3, 6), (6, 9), (9, 12)]
    assert log.delete_segment(3) == 3
    assert log.segment_bounds() == [(0, 3), (6, 9), (9, 12)]
    assert log.segment_of(4) is None and log.segment_of(7) == (6, 9)
    assert [o for o, _ in log.read(1)] == [1, 2, 6, 7, 8, 9, 10, 11]
    assert [o for o, _ in log.read(4)] == [6, 7, 8, 9, 10, 11]
    with pytest.raises(OffsetOutOfRange):
        log.read_one(4)
    with pytest.raises(ValueError, match="active"):
        log.delete_segment(9)
    with pytest.raises(ValueError, match="no segment"):
        log.delete_segment(4)


@pytest.mark.parametrize("settled", [True, False])
def test_recovery_keeps_segments_after_a_gap_only_if_the_gap_is_settled(tmp_path, settled):
    seen = []

    def gap_settled(first, end):
        seen.append((first, end))
        return settled

    log = PartitionLog(tmp_path / "p", segment_bytes=1, fsync="never")
    for i in range(0, 12, 3):
        log.append([rec(j) for j in range(i, i + 3)])
    log.delete_segment(3)
    log.close()
    log = PartitionLog(tmp_path / "p", segment_bytes=1, fsync="never", gap_settled=gap_settled)
    try:
        assert seen == [(3, 6)]
        if settled:
            assert not log.recovery.data_cut
            assert log.segment_bounds() == [(0, 3), (6, 9), (9, 12)]
        else:                                           # damage: offsets stay contiguous
            assert log.recovery.segments_deleted == 2 and log.recovery.records_truncated == 6
            assert log.segment_bounds() == [(0, 3)]
    finally:
        log.close()


@pytest.mark.parametrize("fsync", ["always", "never"])
def test_roll_to_makes_a_gap_at_the_end_that_recovery_keeps_where_vouched(tmp_path, fsync):
    """A follower copies its leader's gap (cluster/replication.py): the next batch starts a
    new segment at its own base; reads step over; a reopen keeps it if the gap is settled."""
    log = PartitionLog(tmp_path / "p", fsync=fsync)
    log.append([rec(j) for j in range(3)])
    with pytest.raises(ValueError):
        log.roll_to(3)
    log.roll_to(10)
    assert (log.end_offset, log.active_base) == (10, 10)
    assert log.append([rec(10), rec(11)]) == 10
    log.sync()
    assert log.durable_offset == 12
    assert log.segment_bounds() == [(0, 3), (10, 12)]
    assert [o for o, _ in log.read(1)] == [1, 2, 10, 11]
    log.close()
    log = PartitionLog(tmp_path / "p", fsync=fsync, gap_settled=lambda a, b: (a, b) == (3, 10))
    try:
        assert not log.recovery.data_cut
        assert log.segment_bounds() == [(0, 3), (10, 12)]
    finally:
        log.close()


def test_roll_to_replaces_an_empty_active_segment(tmp_path):
    log = PartitionLog(tmp_path / "p", fsync="always")
    log.roll_to(5)                          # a new log: its lazy first segment is replaced
    assert (log.start_offset, log.end_offset) == (5, 5)
    log.append([rec(5)])
    log.sync()
    log.close()
    assert log_files(tmp_path / "p") == ["00000000000000000005.log"]
    log = PartitionLog(tmp_path / "p", fsync="always")
    try:
        assert log.segment_bounds() == [(5, 6)] and not log.recovery.data_cut
    finally:
        log.close()


def test_reopen_after_close_keeps_records_and_start_offset(tmp_path):
    log = PartitionLog(tmp_path / "p", segment_bytes=300, fsync="always")
    for i in range(30):
        log.append([rec(i), rec(i + 100)])
    log.delete_before(20)
    start, end = log.start_offset, log.end_offset
    log.close()
    log.close()  # idempotent
    with pytest.raises(LogClosedError):
        log.append([rec(0)])
    log = PartitionLog(tmp_path / "p", segment_bytes=300, fsync="always")
    try:
        assert not log.recovery.messages
        assert (log.start_offset, log.end_offset, log.durable_offset) == (start, end, end)
        assert log.append([rec(1)]) == end
        log.sync()
        assert log.read_one(end) == rec(1)
    finally:
        log.close()


def test_crash_without_close_keeps_everything_written(tmp_path):
    log = PartitionLog(tmp_path / "p", segment_bytes=300, fsync="always")
    for i in range(25):
        log.append([rec(i)])
    log._simulate_crash()
    log = PartitionLog(tmp_path / "p", segment_bytes=300, fsync="always")
    try:
        assert not log.recovery.data_cut
        assert log.read(0) == [(i, rec(i)) for i in range(25)]
    finally:
        log.close()


def test_sync_in_a_worker_thread_while_appending(make_log):
    log = make_log(fsync="always", segment_bytes=4096)
    stop = threading.Event()
    seen = []

    def syncer():
        while not stop.is_set():
            seen.append(log.sync())

    worker = threading.Thread(target=syncer)
    worker.start()
    try:
        for i in range(2000):
            log.append([rec(i)])
    finally:
        stop.set()
        worker.join()
    assert seen == sorted(seen)
    assert log.sync() == 2000
    assert [o for o, _ in log.read(0, max_records=5000)] == list(range(2000))


def test_read_descriptor_cache_is_bounded(make_log, tmp_path):
    log = make_log(segment_bytes=200, files=FileCache(limit=3))
    for i in range(30):
        log.append([rec(i)])
    for i in range(30):
        log.read(i, max_records=1)
    fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
           if os.path.exists(f"/proc/self/fd/{fd}")]
    assert sum(1 for p in fds if p.startswith(str(tmp_path)) and p.endswith(".log")) <= 3
    assert sum(1 for p in fds if p.startswith(str(tmp_path))) <= 3     # indexes included
    assert [o for o, _ in log.read(0, max_records=100)] == list(range(30))


def test_destroy_removes_the_directory(tmp_path):
    log = PartitionLog(tmp_path / "gone", fsync="never")
    log.append([rec(0)])
    log.destroy()
    assert not (tmp_path / "gone").exists()


def test_sync_leaves_the_active_segments_indexes_to_recovery_and_fsyncs_rolled_ones(
        make_log, monkeypatch):
    """A round fdatasyncs the active segment's log only: its indexes owe nothing (recovery
    rebuilds the last segment's from its log); the first sync after the roll fsyncs the
    rolled segment's indexes. The files each sync fsynced are read back from the real
    descriptors (``_fsync`` still fsyncs)."""
    from amqpbroker.storage import log as log_module
    synced = []
    real = log_module._fsync

    def recording(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(log_module, "_fsync", recording)
    log = make_log(fsync="always", segment_bytes=2_000, index_interval_bytes=100)
    for i in range(5):
        log.append([rec(i, size=100)])
    first = log._active
    assert len(first.offset_index) >= 2                             # index entries written
    assert log.sync() == 5
    assert synced == ["00000000000000000000.log"]
    assert not first.offset_index.file.dirty                        # and none owed
    synced.clear()
    for i in range(5, 40):                                          # roll past 2,000 bytes
        log.append([rec(i, size=100)])
    rolled = log._segments[:-1]
    assert rolled[0] is first and log._active is not first
    assert log.sync() == 40
    expected = [f"{seg.base_offset:020d}{ext}" for seg in rolled
                for ext in (".log", ".index", ".timeindex")]
    assert sorted(synced) == sorted(expected + [f"{log._active.base_offset:020d}.log"])
    assert first.offset_index.file is None and first.time_index.file is None   # closed


def test_active_segment_indexes_lost_in_a_crash_are_rebuilt(tmp_path):
    """What a power cut can leave of indexes never fsynced: the active segment's index files
    empty while its log is durable. Reopening rebuilds them and every record reads back."""
    path = tmp_path / "p0"
    log = PartitionLog(path, fsync="always", segment_bytes=1_000_000, index_interval_bytes=100)
    log.append([rec(i, size=200) for i in range(30)])
    log.append([rec(i, size=200) for i in range(30, 60)])
    assert log.sync() == 60
    log._simulate_crash()
    for ext in (".index", ".timeindex"):
        (name,) = log_files(path, ext)
        with open(path / name, "r+b") as f:
            f.truncate(0)
    reopened = PartitionLog(path, fsync="always", segment_bytes=1_000_000,
                            index_interval_bytes=100)
    try:
        assert reopened.recovery.indexes_rebuilt == 2 and not reopened.recovery.data_cut
        assert reopened.end_offset == 60
        assert reopened.read(45, max_records=3) == [(i, rec(i, size=200)) for i in (45, 46, 47)]
        assert [o for o, _ in reopened.read(0, max_records=100)] == list(range(60))
    finally:
        reopened.close()


def _resident_pages(path) -> list[bool]:
    """Which pages of ``path`` are in the page cache: mincore of a read-only shared mapping
    (mapping faults nothing in)."""
    import ctypes
    import mmap
    size = os.path.getsize(path)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    vec = ctypes.create_string_buffer((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE)
    with open(path, "rb") as f:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        try:
            assert libc.mincore(addr, size, vec) == 0, ctypes.get_errno()
        finally:
            libc.munmap(addr, size)
    return [bool(b & 1) for b in vec.raw]


def test_fsynced_log_pages_past_the_newest_leave_the_page_cache(make_log, monkeypatch):
    """After a sync, a log keeps its newest PAGE_CACHE_KEEP bytes in the page cache and drops
    the older ones (so the kernel reuses those pages for the next writes); the dropped
    records still read back, from the disk."""
    from amqpbroker.storage import log as log_module
    monkeypatch.setattr(log_module, "PAGE_CACHE_KEEP", 1 << 20)
    log = make_log(fsync="always", segment_bytes=64 << 20)
    for i in range(64):                                     # 4 MiB in 64 KiB records
        log.append([rec(i, size=65536)])
    assert log.sync() == 64
    (name,) = log_files(log.directory)
    pages = _resident_pages(os.path.join(log.directory, name))
    keep = (1 << 20) // 4096
    assert not any(pages[:len(pages) - keep - 1])            # older than the newest 1 MiB
    assert all(pages[-keep + 1:])                            # the newest 1 MiB: cached
    assert log.read(3, max_records=1) == [(3, rec(3, size=65536))]
