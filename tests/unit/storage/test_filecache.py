"""The file handle cache: a bound on open storage files, fsync before close, pins, reopening.

Descriptors are counted in /proc/self/fd; whether a closed handle's fsync was done is read
from the cache's counters and from what `take_for_sync` still offers.
"""
from __future__ import annotations

import os
import random
import resource
import threading

import pytest

from amqpbroker.storage import AckLog, PartitionLog, Record
from amqpbroker.storage.filecache import MIN_LIMIT, FileCache, configure, default_limit

APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT


def held(under) -> list[str]:
    """Paths under `under` this process has a descriptor on."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue
        if path.startswith(str(under)):
            out.append(path)
    return out


def rec(i: int) -> Record:
    return Record(1_000 + i, "ex", f"rk.{i}", b"\x00\x00", f"body {i}".encode() * 3, 1)


@pytest.fixture
def files(tmp_path):
    """Ten small files and a cache of four (whatever a test leaves open is closed after)."""
    paths = []
    for i in range(10):
        p = tmp_path / f"f{i}"
        p.write_bytes(f"file {i}|".encode())
        paths.append(str(p))
    cache = FileCache(limit=4)
    yield cache, paths
    for h in list(cache._lru):
        h.close()


def test_at_most_limit_descriptors_and_the_least_recently_used_goes(files, tmp_path):
    cache, paths = files
    handles = [cache.handle(p, os.O_RDONLY) for p in paths]
    for h in handles[:4]:
        h.fd()
    handles[0].fd()                         # used again: now the most recent
    handles[4].fd()                         # full: closes the least recently used, 1
    assert [h.is_open for h in handles[:5]] == [True, False, True, True, True]
    for h in handles:
        h.fd()
        assert len(held(tmp_path)) <= 4
    assert cache.open_count == 4 and cache.stats()["evictions"] == 10
    for h in handles:
        h.close()
    assert held(tmp_path) == [] and cache.open_count == 0


def test_a_reopened_file_reads_by_position_and_appends_at_the_end(files, tmp_path):
    cache, paths = files
    writers = [cache.handle(p, os.O_RDWR | os.O_APPEND) for p in paths]
    for round_ in range(3):
        for i in random.Random(round_).sample(range(10), 10):
            w = writers[i]
            fd = w.fd()
            os.write(fd, f"r{round_}|".encode())
            assert os.pread(fd, 7, 0) == f"file {i}|".encode()[:7]
    assert cache.stats()["opens"] > 10              # files were closed and reopened
    for i, p in enumerate(paths):
        assert open(p, "rb").read() == f"file {i}|r0|r1|r2|".encode()
    for w in writers:
        w.close()


def test_a_handle_that_owes_an_fsync_is_fsynced_before_it_is_closed(files):
    cache, paths = files
    durable = [cache.handle(p, os.O_WRONLY | os.O_APPEND, durable=True) for p in paths[:4]]
    for h in durable:
        fd = h.fd()
        h.written()
        os.write(fd, b"owed")
    assert all(h.dirty for h in durable)
    cache.handle(paths[4], os.O_RDONLY).fd()        # room for it: the oldest goes, fsynced
    assert not durable[0].is_open and not durable[0].dirty
    assert cache.stats()["evictions_synced"] == 1
    assert durable[0].take_for_sync() is None       # nothing owed any more: no fsync
    fd = durable[1].take_for_sync()                 # still open and owing: offered
    assert fd is not None and not durable[1].dirty
    os.fsync(fd)
    durable[1].synced()
    assert durable[1].take_for_sync() is None
    for h in durable:
        h.close()


def test_a_handle_whose_policy_never_fsyncs_owes_nothing(files):
    cache, paths = files
    h = cache.handle(paths[0], os.O_WRONLY | os.O_APPEND, durable=False)
    h.written()
    os.write(h.fd(), b"x")
    assert not h.dirty and h.take_for_sync() is None
    for p in paths[1:5]:
        cache.handle(p, os.O_RDONLY).fd()
    assert not h.is_open and cache.stats()["evictions_synced"] == 0
    cache.set_limit(1)
    cache.set_limit(4)


def test_pinned_handles_stay_open_and_the_cache_goes_past_its_limit_rather_than_fail(files,
                                                                                     tmp_path):
    cache, paths = files
    pinned = [cache.handle(p, os.O_RDONLY) for p in paths[:4]]
    fds = [h.pin() for h in pinned]
    extra = cache.handle(paths[4], os.O_RDONLY)
    extra.fd()                                      # nothing to close: past the limit
    assert all(h.is_open for h in pinned) and cache.stats()["over_limit"] == 1
    assert [os.pread(fd, 6, 0) for fd in fds] == [f"file {i}".encode() for i in range(4)]
    for h in pinned:
        h.unpin()
    cache.handle(paths[5], os.O_RDONLY).fd()        # back under the limit
    assert cache.open_count == 4 and len(held(tmp_path)) == 4
    cache.set_limit(1)
    assert cache.open_count == 1


def test_a_descriptor_taken_for_an_fsync_is_not_closed_under_it(files):
    cache, paths = files
    h = cache.handle(paths[0], os.O_WRONLY | os.O_APPEND, durable=True)
    h.written()
    os.write(h.fd(), b"owed")
    fd = h.take_for_sync()
    for p in paths[1:]:
        cache.handle(p, os.O_RDONLY).fd()           # would have closed it, had it not been pinned
    assert h.is_open
    h.close()                                       # the owner closes it during the fsync:
    assert os.fstat(fd)                             # the number stays valid until synced()
    os.fsync(fd)
    h.synced()
    with pytest.raises(OSError):
        os.fstat(fd)
    cache.set_limit(1)


def test_a_failed_fsync_leaves_the_fsync_owed(files):
    cache, paths = files
    h = cache.handle(paths[0], os.O_WRONLY | os.O_APPEND, durable=True)
    fd = h.fd()
    h.written()
    os.write(fd, b"owed")
    assert h.take_for_sync() == fd
    h.synced(ok=False)
    assert h.dirty and h.take_for_sync() is not None
    h.synced()
    h.close()


def test_reset_opens_the_file_now_at_the_path(tmp_path):
    cache = FileCache(limit=4)
    path = tmp_path / "acks"
    path.write_bytes(b"old|")
    h = cache.handle(str(path), os.O_WRONLY | os.O_APPEND, durable=True)
    h.written()
    os.write(h.fd(), b"appended|")
    (tmp_path / "acks.tmp").write_bytes(b"snapshot|")
    os.replace(tmp_path / "acks.tmp", path)
    h.reset()                                       # the snapshot holds it all: nothing owed
    assert not h.is_open and h.take_for_sync() is None
    os.write(h.fd(), b"next|")
    assert path.read_bytes() == b"snapshot|next|"
    h.close()


def test_creation_truncates_writes_and_owes_an_fsync(tmp_path):
    cache = FileCache(limit=4)
    path = tmp_path / "new.index"
    path.write_bytes(b"stale stale stale")
    h = cache.create(str(path), os.O_WRONLY | os.O_APPEND, True, b"HEAD")
    assert path.read_bytes() == b"HEAD" and h.is_open and h.dirty
    h.close()
    assert not h.dirty


def test_running_out_of_descriptors_closes_cached_files_instead_of_failing(tmp_path):
    """The limit is set too high for the process (a real RLIMIT_NOFILE a few descriptors
    above what is open): EMFILE makes the cache close its own files and retry."""
    paths = []
    for i in range(40):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x")
        paths.append(str(p))
    cache = FileCache(limit=1000)
    handles = [cache.handle(p, os.O_RDONLY) for p in paths]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = {int(fd) for fd in os.listdir("/proc/self/fd")}
    free, limit = 0, 0
    while free < 10:            # the lowest limit that leaves 10 descriptor numbers free
        free += limit not in in_use
        limit += 1
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        for _ in range(3):
            for h in handles:
                assert os.pread(h.fd(), 1, 0) == b"x"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        opened = cache.open_count
        for h in handles:
            h.close()
    assert opened <= 11 and cache.stats()["evictions"] > 0   # (+1: listdir's own descriptor)


def test_the_default_limit_is_half_the_open_files_limit_and_at_least_64():
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_limit() == max(MIN_LIMIT, soft // 2)
    assert configure(100).limit == 100
    assert configure().limit == default_limit()
    with pytest.raises(ValueError):
        FileCache(limit=0)


# ----------------------------------------------------------------- logs under a small cache
def test_many_logs_and_ack_logs_under_a_cache_of_eight(tmp_path):
    """Thirty partitions and their ack logs, used in random order through eight descriptors:
    appends, reads, syncs, ack-log compactions and a crash of each all come out as if every
    file had stayed open."""
    cache = FileCache(limit=8)
    rng = random.Random(9)
    n = 30
    logs = [PartitionLog(tmp_path / f"p{i}", segment_bytes=600, index_interval_bytes=100,
                         files=cache) for i in range(n)]
    acks = [AckLog(tmp_path / f"p{i}.acks", compact_bytes=200, files=cache) for i in range(n)]
    written = [0] * n
    done: list[set] = [set() for _ in range(n)]
    for step in range(1500):
        i = rng.randrange(n)
        action = rng.random()
        if action < 0.5:
            k = rng.randint(1, 3)
            logs[i].append([rec(written[i] + j) for j in range(k)])
            written[i] += k
        elif action < 0.7:
            logs[i].sync()
            acks[i].sync()
        elif action < 0.85 and logs[i].durable_offset:
            o = rng.randrange(logs[i].durable_offset)
            assert logs[i].read(o, max_records=1) == [(o, rec(o))]
        elif written[i]:
            o = rng.randrange(written[i])
            acks[i].record([o])
            done[i].add(o)
        assert len(held(tmp_path)) <= 8 + 1      # + a short-lived one while compacting
    stats = cache.stats()
    assert stats["evictions"] > 100 and stats["over_limit"] == 0
    for i in range(n):
        assert logs[i].sync() == written[i]
        logs[i]._simulate_crash()
        acks[i]._simulate_crash()
    assert held(tmp_path) == []
    for i in range(n):
        with PartitionLog(tmp_path / f"p{i}", segment_bytes=600, files=cache) as log:
            assert log.read(0, max_records=10_000) == [(o, rec(o)) for o in range(written[i])]
        with AckLog(tmp_path / f"p{i}.acks", files=cache) as a:
            assert {o for o in range(written[i]) if a.is_done(o)} == done[i]
    assert cache.open_count == 0


def test_fsyncs_in_another_thread_while_the_loop_thread_opens_and_closes(tmp_path):
    """The committer's shape: one thread appends to many logs (closing others' descriptors to
    make room), another syncs them. A descriptor being fsynced is never closed under it (an
    fsync of a closed descriptor raises EBADF; of a reused number, fsyncs the wrong file)."""
    cache = FileCache(limit=4)
    logs = [PartitionLog(tmp_path / f"p{i}", segment_bytes=400, files=cache) for i in range(12)]
    stop = threading.Event()
    failures = []

    def syncer():
        try:
            while not stop.is_set():
                for log in logs:
                    log.sync()
        except BaseException as exc:     # reported by the main thread
            failures.append(exc)

    thread = threading.Thread(target=syncer)
    thread.start()
    try:
        for i in range(3000):
            logs[i % 12].append([rec(i // 12)])
            if failures:
                break
    finally:
        stop.set()
        thread.join()
    assert failures == []
    for log in logs:
        assert log.sync() == 250
        assert [o for o, _ in log.read(0, max_records=1000)] == list(range(250))
        log.close()
    assert held(tmp_path) == []
