"""MessageStore: append, read back, settle, per-segment deletion and what opening recovers.

Pure storage, no sockets. `segment_bytes=1` makes every flush that appends one segment (a
batch is never split and the log rolls before each batch once the active segment holds one),
so `fill` lays out segments of known offsets. Crashes are `_simulate_crash()`: descriptors
dropped as kill -9 drops them, written bytes kept, nothing buffered written.
"""
import os

import pytest

from amqpbroker.storage.acklog import AckLog
from amqpbroker.storage.record import Record
from amqpbroker.worker.store import MessageStore


class Budget:
    """What the partition host is to its stores here: the count of cached body bytes."""

    def __init__(self):
        self.cache_used = 0


def rec(i: int, persistent: bool = True) -> Record:
    return Record(1_000 + i, "", "q", b"", b"m%05d" % i, 1 if persistent else 0)


def open_store(path, fsync="never", cache_limit=1 << 20, budget=None, **kw) -> MessageStore:
    return MessageStore(str(path), fsync=fsync, fsync_interval_ms=kw.get("interval", 3_600_000),
                        segment_bytes=kw.get("segment_bytes", 1), budget=budget or Budget(),
                        cache_limit=cache_limit)


def commit_round(store: MessageStore) -> None:
    """What the Committer does for one queue: write, fsync per policy, then back on the loop."""
    store.flush()
    store.sync()
    store.after_sync()


def fill(store: MessageStore, segments: int, per_segment: int = 4) -> None:
    for _ in range(segments):
        for _ in range(per_segment):
            o = store.next_offset
            assert store.append(rec(o)) == o
        commit_round(store)


def settle(store: MessageStore, offsets) -> None:
    for o in offsets:
        store.settle(o)


def bases(store: MessageStore) -> list[int]:
    return [b for b, _, _ in store.segments()]


def log_files(path) -> list[int]:
    return sorted(int(n[:-4]) for n in os.listdir(path) if n.endswith(".log") and n[0].isdigit())


def unsettled(store: MessageStore) -> list[int]:
    return [o for o, r in store.unsettled() if r.body == b"m%05d" % o]


@pytest.fixture
def stores():
    opened = []

    def track(store):
        opened.append(store)
        return store

    yield track
    for s in opened:
        s.close()


# ------------------------------------------------------------------------ reading and writing
def test_read_from_cache_then_disk_and_budget_accounting(tmp_path, stores):
    budget = Budget()
    store = stores(open_store(tmp_path / "q", cache_limit=0, budget=budget))
    offsets = [store.append(rec(i)) for i in range(3)]
    assert offsets == [0, 1, 2] and store.next_offset == 3 and store.end_offset == 0
    assert budget.cache_used == 3 * 6 and store.read(1) == rec(1)   # cached, not yet written
    commit_round(store)                      # over the budget (0): bodies dropped once durable
    assert budget.cache_used == 0 and store.end_offset == 3
    assert store.read(1) == rec(1)           # from disk
    assert store.take(0) == rec(0)
    store.recache(0, rec(0))                 # given back (a requeue): in memory again
    assert budget.cache_used == 6
    store.settle(0)                          # settling drops the cached body
    assert budget.cache_used == 0
    store.append(rec(3))
    store.close()
    assert budget.cache_used == 0


def test_a_segment_goes_when_all_its_messages_are_settled_whatever_is_older(tmp_path, stores):
    store = stores(open_store(tmp_path / "q"))
    fill(store, 5)                           # segments 0, 4, 8, 12, 16 (active)
    assert bases(store) == [0, 4, 8, 12, 16]
    settle(store, range(1, 12))              # offset 0 stays unsettled: the stuck message
    commit_round(store)
    assert bases(store) == [0, 12, 16] and log_files(tmp_path / "q") == [0, 12, 16]
    assert store.segments()[0] == (0, 4, 3)
    settle(store, [12, 14])
    commit_round(store)
    assert store.segments()[1] == (12, 16, 2)
    assert unsettled(store) == [0, 13, 15, 16, 17, 18, 19]


def test_the_active_segment_goes_only_after_it_rolls(tmp_path, stores):
    store = stores(open_store(tmp_path / "q"))
    fill(store, 2)
    settle(store, range(4, 8))               # all of the active segment
    commit_round(store)
    assert bases(store) == [0, 4]
    fill(store, 1)                           # rolls: segment 4 is closed, and settled
    assert bases(store) == [0, 8]


def test_deletion_waits_until_the_acks_that_settled_the_segment_are_durable(tmp_path, stores):
    store = stores(open_store(tmp_path / "q", fsync="interval"))
    fill(store, 3)
    settle(store, range(4, 8))
    commit_round(store)                      # the interval is not up: acks written, not fsynced
    assert bases(store) == [0, 4, 8] and store.sync_owed
    store.commit()                           # a forced fsync
    assert bases(store) == [0, 8] and not store.sync_owed


# ------------------------------------------------------------------------ opening
def test_reopen_recovers_unsettled_messages_and_per_segment_counts(tmp_path, stores):
    store = open_store(tmp_path / "q")
    fill(store, 4)
    settle(store, [1, 2, 5, 6, 7, 9, 13])
    commit_round(store)
    store.close()
    store = stores(open_store(tmp_path / "q"))
    assert store.segments() == [(0, 4, 2), (4, 8, 3), (8, 12, 1), (12, 16, 1)]
    assert unsettled(store) == [0, 3, 4, 8, 10, 11, 12, 14, 15]
    settle(store, [4])                       # the last one of segment 4: counted from 3
    commit_round(store)
    assert bases(store) == [0, 8, 12]


def test_unsettled_reads_across_deleted_segments(tmp_path, stores):
    store = stores(open_store(tmp_path / "q"))
    fill(store, 6)
    settle(store, [*range(4, 12), *range(16, 20)])
    commit_round(store)
    assert bases(store) == [0, 12, 20]
    assert unsettled(store) == [0, 1, 2, 3, 12, 13, 14, 15, 20, 21, 22, 23]
    assert store.read(13) == rec(13) and store.read(20) == rec(20)


def test_crash_after_the_segment_was_deleted_before_the_ack_log_was_compacted(tmp_path,
                                                                              stores):
    path = tmp_path / "q"
    store = open_store(path, fsync="always")
    fill(store, 4)
    assert not os.path.exists(path / "acks.log")    # made by its first entry
    settle(store, range(4, 8))
    commit_round(store)
    ack_inode = os.stat(path / "acks.log").st_ino
    assert store.acks.compactions == 0
    assert log_files(path) == [0, 8, 12]
    store._simulate_crash()
    assert os.stat(path / "acks.log").st_ino == ack_inode      # DONE entries, no snapshot
    store = stores(open_store(path, fsync="always"))
    assert not store.log.recovery.data_cut                      # the gap was accepted
    assert bases(store) == [0, 8, 12]
    assert unsettled(store) == [0, 1, 2, 3, *range(8, 16)]


@pytest.mark.parametrize("renamed", [(".log", ".index", ".timeindex"), (".index", ".timeindex"),
                                     (".timeindex",)])
def test_crash_inside_the_deletion_of_a_segment(tmp_path, stores, renamed):
    """Segment.delete_files renames the timeindex, index, then log to `.deleted`, then
    unlinks: a kill between the renames or before the unlinks leaves these states."""
    path = tmp_path / "q"
    store = open_store(path, fsync="always")
    fill(store, 4)
    settle(store, range(4, 8))
    store.flush()
    store.sync()                             # the acks are durable; after_sync never ran
    store._simulate_crash()
    for ext in renamed:
        os.replace(path / f"{4:020d}{ext}", path / f"{4:020d}{ext}.deleted")
    store = stores(open_store(path, fsync="always"))
    assert not store.log.recovery.data_cut
    assert bases(store) == [0, 8, 12] and log_files(path) == [0, 8, 12]
    assert not [n for n in os.listdir(path) if n.endswith(".deleted")]
    assert unsettled(store) == [0, 1, 2, 3, *range(8, 16)]


def test_crash_after_the_ack_log_was_compacted_before_the_segment_was_deleted(tmp_path,
                                                                              stores):
    path = tmp_path / "q"
    store = open_store(path, fsync="always")
    fill(store, 4)
    settle(store, [*range(4, 8), 9])
    store.flush()
    store.acks.compact()                     # one snapshot: floor 0, runs [4, 8) and [9, 10)
    store._simulate_crash()                  # before after_sync deleted segment 4
    assert log_files(path) == [0, 4, 8, 12]
    store = stores(open_store(path, fsync="always"))
    assert bases(store) == [0, 8, 12] and log_files(path) == [0, 8, 12]
    assert store.segments()[1] == (8, 12, 1)
    assert unsettled(store) == [0, 1, 2, 3, 8, 10, 11, 12, 13, 14, 15]


def test_a_gap_the_ack_log_does_not_cover_is_damage(tmp_path, stores):
    """A segment file lost without its messages being settled: as before, recovery keeps
    offsets contiguous by dropping every segment after the gap."""
    path = tmp_path / "q"
    store = open_store(path)
    fill(store, 4)
    settle(store, range(4, 7))               # not 7
    commit_round(store)
    store.close()
    for ext in (".log", ".index", ".timeindex"):
        os.unlink(path / f"{4:020d}{ext}")
    store = stores(open_store(path))
    assert store.log.recovery.segments_deleted == 2
    assert bases(store) == [0] and store.end_offset == 4
    assert unsettled(store) == [0, 1, 2, 3]


def test_acks_ahead_of_the_log_end_are_forgotten(tmp_path, stores):
    """The OS kept the ack log's unsynced entries but lost the log's tail: offsets the log
    reuses must not count as settled."""
    path = tmp_path / "q"
    store = open_store(path)
    fill(store, 1)
    store.close()
    acks = AckLog(path / "acks.log")
    acks.record([2, 5, 6])
    acks.close()
    store = stores(open_store(path))
    assert unsettled(store) == [0, 1, 3]
    fill(store, 1)                           # offsets 4..7 again
    assert unsettled(store) == [0, 1, 3, 4, 5, 6, 7]


def test_transient_settles_at_open_delete_their_segments(tmp_path, stores):
    path = tmp_path / "q"
    store = open_store(path)
    for persistent in (True, False, True):
        for _ in range(4):
            store.append(rec(store.next_offset, persistent))
        commit_round(store)
    store.close()
    store = stores(open_store(path))
    for o, r in list(store.unsettled()):     # what Queue._recover does with transient ones
        if not r.flags & 1:
            store.settle(o)
    store.commit()
    assert bases(store) == [0, 8] and unsettled(store) == [0, 1, 2, 3, 8, 9, 10, 11]


# ------------------------------------------------------------------------ write-behind
def open_behind(path, cache_limit=1 << 20, budget=None, **kw) -> MessageStore:
    """A non-durable queue's store (write-behind up to half ``cache_limit`` unless
    ``write_behind`` says), one batch per segment as above."""
    return MessageStore(str(path), fsync="never", fsync_interval_ms=3_600_000,
                        segment_bytes=kw.get("segment_bytes", 1), budget=budget or Budget(),
                        cache_limit=cache_limit,
                        write_behind=kw.get("write_behind", cache_limit // 2))


def big(i: int) -> Record:
    return Record(1_000 + i, "", "q", b"", bytes([i % 256]) * 65536, 0)


def log_bytes(path) -> int:
    """Bytes of the segment files (0 before the first write makes the directory)."""
    if not path.exists():
        return 0
    return sum(os.path.getsize(path / n) for n in os.listdir(path) if n.endswith(".log")
               and n[0].isdigit())


def test_write_behind_keeps_unsettled_bodies_in_memory_and_writes_settled_ones_bodiless(
        tmp_path, stores):
    path = tmp_path / "q"
    budget = Budget()
    store = stores(open_behind(path, cache_limit=64 << 20, budget=budget))
    for i in range(10):
        assert store.append(big(i)) == i
    commit_round(store)                      # nothing settled, far under the bounds
    assert store.end_offset == 0 and log_bytes(path) < 4096 and store.next_offset == 10
    assert store.read(3) == big(3) and store.take(0) == big(0)   # delivered from memory
    settle(store, [0, 1, 2, 5])              # held, their bodies dropped (no round owed)
    assert not store.write_owed
    commit_round(store)
    assert store.end_offset == 0 and log_bytes(path) < 4096
    assert store.read(6) == big(6) and budget.cache_used == 6 * 65536
    store.close()                            # a forced flush: all written, settled bodiless
    store = stores(open_store(path))
    assert [o for o, _ in store.unsettled()] == [3, 4, 6, 7, 8, 9]
    assert 6 * 65536 < log_bytes(path) < 6 * 65536 + 4096
    assert store.read(9) == big(9)


def test_write_behind_holds_settled_big_records_as_small_ones(tmp_path, stores):
    """A lone 64 KiB message published, delivered and acked writes nothing and owes no round
    (latency_1 at 64 KiB: RabbitMQ writes nothing for a transient message acked before it
    paged out); its body is dropped at the settle, and settled records of any size share one
    write, bodiless, once over the record bound (down to half of it): the log's end follows
    the queue's, its segments roll and are deleted."""
    from amqpbroker.worker import store as store_mod
    path = tmp_path / "q"
    budget = Budget()
    store = stores(open_behind(path, cache_limit=64 << 20, budget=budget))
    n = store_mod.WRITE_BEHIND_RECORDS
    body = bytes(65536)                      # one object for every record: memory stays small
    empty = log_bytes(path)                  # the files' headers

    def lone(i):
        assert store.append(Record(1_000 + i, "", "q", b"", body, 0)) == i
        assert store.take(i).body == body
        store.settle(i)

    for i in range(n):
        lone(i)
        assert not store.write_owed          # no round for the committer to start
        commit_round(store)
    assert store.end_offset == 0 and log_bytes(path) == empty
    assert budget.cache_used == 0 and store._deferred_bytes == 0
    assert all(len(r.body) == 0 for r in store._pending)     # bodies dropped at the settle
    lone(n)                                  # over the bound by one: down to half of it
    assert store.write_owed
    commit_round(store)
    assert store.end_offset == n + 1 - n // 2 and not store.write_owed
    assert log_bytes(path) < (n + 1) * 128   # bodiless
    for i in range(n + 1, n + 2 + n // 2):  # over it again: the next half, a new segment
        lone(i)
        commit_round(store)
    assert store.end_offset == n + 2 and store.next_offset == n + 2 + n // 2
    assert [b for b, _, _ in store.segments()] == [n + 1 - n // 2]   # the first one deleted
    assert list(store.unsettled()) == []


def test_write_behind_writes_the_oldest_bodies_past_half_the_cache_budget(tmp_path, stores):
    path = tmp_path / "q"
    budget = Budget()
    store = stores(open_behind(path, cache_limit=8 * 65536, budget=budget))
    for i in range(6):
        store.append(big(i))
    settle(store, [1])
    commit_round(store)                      # 5 unsettled bodies, 4 allowed: 0 written whole
    assert store.end_offset == 1             # (1, settled, stays held as a light record)
    assert store.log.read(0, 10, 1 << 20)[0] == (0, big(0))
    assert 65536 < log_bytes(path) < 65536 + 4096
    assert store.read(2) == big(2) and store.read(0) == big(0)
    for i in range(6, 20):                   # the whole cache over its limit: all written
        store.append(big(i))
    commit_round(store)
    assert store.end_offset == 20 and store.next_offset == 20
    assert budget.cache_used <= 8 * 65536    # and evicted to the budget as before
    assert [o for o, _ in store.unsettled()] == [0, *range(2, 20)]
    assert store.read(19) == big(19) and store.read(2) == big(2)


def test_write_behind_pages_out_once_the_cached_bodies_pass_its_limit(tmp_path, stores):
    """A limit above the cache budget (RabbitMQ's paging threshold): bodies stay unwritten
    past ``cache_limit``; once the process's cached bodies pass the limit, all are written."""
    path = tmp_path / "q"
    budget = Budget()
    store = stores(open_behind(path, cache_limit=2 * 65536, budget=budget,
                               write_behind=6 * 65536))
    for i in range(6):
        store.append(big(i))
    commit_round(store)
    assert store.end_offset == 0 and budget.cache_used == 6 * 65536
    budget.cache_used += 65536               # another queue's body: the process is over
    commit_round(store)
    assert store.end_offset == 6
    assert budget.cache_used == 2 * 65536    # written ones evicted down to the budget
    assert store.read(0) == big(0) and store.read(5) == big(5)


def test_write_behind_bounds_the_records_it_holds(tmp_path, stores):
    from amqpbroker.worker import store as store_mod
    path = tmp_path / "q"
    store = stores(open_behind(path, segment_bytes=1 << 30))
    n = store_mod.WRITE_BEHIND_RECORDS + 10
    for i in range(n):
        store.append(rec(i, persistent=False))
    commit_round(store)
    assert store.end_offset == 10 and store.next_offset == n
    assert [o for o, _ in store.unsettled()] == list(range(10))


def test_write_behind_holds_big_unsettled_bodies_past_the_record_bound(tmp_path, stores):
    """The record bound counts light records only: bodies of ``ELIDE_BODY`` or more are
    bounded by their bytes (a 64 KiB queue with no consumer is not written 4096 messages
    in); settled ones count again once their bodies are left out, and small ones as before."""
    from amqpbroker.worker import store as store_mod
    path = tmp_path / "q"
    budget = Budget()
    store = stores(open_behind(path, cache_limit=64 << 20, budget=budget,
                               segment_bytes=1 << 30, write_behind=64 << 20))
    n = store_mod.WRITE_BEHIND_RECORDS + 10
    heavy = [Record(1_000 + i, "", "q", b"", b"%05d" % i + b"x" * (store_mod.ELIDE_BODY - 5), 0)
             for i in range(n)]
    for r in heavy:
        store.append(r)
    commit_round(store)
    assert store.end_offset == 0 and store.next_offset == n
    for i in range(n - 1, 9, -1):            # all but the first 10 settled: light again
        store.settle(i)
    commit_round(store)
    assert store.end_offset == 0             # 10 unsettled lead, still under both bounds
    for i in range(10):                      # small ones put the light records over:
        store.append(rec(n + i, persistent=False))
    commit_round(store)                      # the 10 lead written whole, settled ones
    assert store.end_offset == 10 + n - store_mod.WRITE_BEHIND_RECORDS // 2   # to half the
    assert store.next_offset == n + 10                                        # bound, bodiless
    assert log_bytes(path) < 10 * store_mod.ELIDE_BODY + n * 64
    assert [r for _, r in store.unsettled()] == heavy[:10]
    assert store.read(n) == rec(n, persistent=False)


def test_write_behind_holds_small_settled_records_until_the_record_bound(tmp_path, stores):
    """A lone small message published, delivered and settled leaves nothing due (no write, no
    round: ``write_owed``); settled small records share one write once over the bound, down to
    half of it (not one write per message past it)."""
    from amqpbroker.worker import store as store_mod
    path = tmp_path / "q"
    store = stores(open_behind(path, segment_bytes=1 << 30))
    empty = log_bytes(path)                  # the files' headers
    for i in range(3):                       # three lone round trips
        assert store.append(rec(i, persistent=False)) == i
        assert not store.write_owed
        assert store.take(i) == rec(i, persistent=False)
        store.settle(i)
        assert not store.write_owed
        commit_round(store)
        assert store.end_offset == 0 and log_bytes(path) == empty
    n = store_mod.WRITE_BEHIND_RECORDS
    for i in range(3, n):                    # up to the bound: still nothing
        store.append(rec(i, persistent=False))
        store.settle(i)
        assert not store.write_owed
    store.append(rec(n, persistent=False))   # over it by one: down to half of it at once
    store.settle(n)
    assert store.write_owed
    commit_round(store)
    assert store.end_offset == n + 1 - n // 2 and not store.write_owed
    store.append(big(n + 1))                 # an unsettled big one: the rest stay held
    commit_round(store)
    assert store.end_offset == n + 1 - n // 2 and store.next_offset == n + 2
    store.close()                            # a forced flush writes them, settles after
    store = stores(open_store(path))
    assert [(o, r) for o, r in store.unsettled()] == [(n + 1, big(n + 1))]


def test_write_behind_close_writes_everything_and_settles_follow_their_records(tmp_path):
    path = tmp_path / "q"
    store = open_behind(path)
    for i in range(8):
        store.append(rec(i))
    settle(store, [2, 6])
    commit_round(store)
    assert store.end_offset == 0             # 0 and 1 unsettled lead: nothing due
    store.close()                            # a forced flush: all written, in order
    store = open_store(path)
    try:
        got = {o: r for o, r in store.unsettled()}
        assert sorted(got) == [0, 1, 3, 4, 5, 7]
        assert all(r == rec(o) for o, r in got.items())
    finally:
        store.close()


def test_a_durable_store_never_drops_the_body_of_a_settled_record(tmp_path, stores):
    """Without write_behind (durable queues) a record settled before its flush is written
    whole: its ack may not be durable when a crash comes."""
    path = tmp_path / "q"
    store = open_store(path, fsync="always")
    store.append(rec(0))
    store.append(rec(1))
    settle(store, [0])
    store.flush()                            # record written whole, then the ack entry
    store._simulate_crash()
    store = stores(open_store(path, fsync="always"))
    assert list(store.unsettled()) == [(1, rec(1))]
    assert store.log.read(0, 10, 1 << 20)[0] == (0, rec(0))


@pytest.mark.parametrize("behind", [False, True])
def test_settle_many_is_settle_for_each(tmp_path, stores, behind):
    """A multiple ack's ``settle_many`` leaves a store as ``settle`` one by one does: written
    and buffered records, small and big bodies, cached or taken, write-behind or not; and
    what a reopen finds unsettled is the same."""
    def build(path):
        store = stores(open_behind(path, write_behind=1 << 30) if behind
                       else open_store(path))
        for i in range(6):
            store.append(big(i) if i % 2 else rec(i, persistent=False))
        commit_round(store)                  # 0..5 written (write-behind keeps them unless due)
        for i in range(6, 14):
            store.append(big(i) if i % 3 == 0 else rec(i, persistent=False))
        for o in (1, 7, 8):
            store.take(o)                    # delivered: no longer cached
        return store

    one, many = build(tmp_path / "one"), build(tmp_path / "many")
    offsets = [0, 1, 3, 6, 7, 9, 12, 13]
    settle(one, offsets)
    many.settle_many(offsets)
    fields = ("_pending_settles", "_settles_owed", "_settled_early", "_deferred_bytes", "_light",
              "cache_bytes")
    assert [getattr(many, f) for f in fields] == [getattr(one, f) for f in fields]
    assert many.budget.cache_used == one.budget.cache_used
    assert [(r.body, r.flags) for r in many._pending] == [(r.body, r.flags) for r in one._pending]
    for store in (one, many):
        store.flush(force=True)
        commit_round(store)
    assert unsettled(many) == unsettled(one)


@pytest.mark.parametrize("behind", [False, True])
def test_take_many_is_take_for_each_up_to_the_first_unreadable(tmp_path, stores, behind):
    """A dispatch run's ``take_many`` leaves a store as ``take`` one by one does and returns
    the same records, up to the first message that cannot be read yet (not durable and no
    longer cached), with their body bytes: cached bodies, bodies read back from disk and a
    budget over its limit included."""
    def build(path):
        store = stores(open_behind(path, write_behind=1 << 30) if behind
                       else open_store(path, cache_limit=0))
        for i in range(6):
            store.append(big(i) if i % 2 else rec(i))
        commit_round(store)                  # 0..5 written (bodies dropped without behind)
        for i in range(6, 12):
            store.append(rec(i))
        store.take(9)                        # buffered and taken: 9 cannot be read now
        return store

    one, many = build(tmp_path / "one"), build(tmp_path / "many")
    offsets = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    taken = []
    for o in offsets:
        r = one.take(o)
        if r is None:
            break
        taken.append(r)
    assert len(taken) == 8
    assert many.take_many(offsets) == (taken, sum(len(r.body) for r in taken))
    fields = ("cache", "cache_bytes", "_readahead")
    assert [getattr(many, f) for f in fields] == [getattr(one, f) for f in fields]
    assert many.budget.cache_used == one.budget.cache_used
    assert many.take_many([]) == ([], 0) and many.take_many([9, 10]) == ([], 0)


def test_a_follower_deletes_a_segment_settled_while_it_was_active(tmp_path, stores):
    """A follower appends the leader's batches to its log as they are (``append_raw``, not
    ``flush``); acks of the active segment's messages that arrive before the next batch
    rolls it must still make it deletable (``rolled_from``). It stayed on disk for good
    (found by tests/cluster/test_cluster_idempotent_producers.py under load)."""
    leader = stores(open_store(tmp_path / "leader"))
    fill(leader, 2)                                  # segments 0..3, 4..7
    follower = stores(open_store(tmp_path / "follower"))
    batches = leader.log.read_batches(0, written=True)

    def append(batch) -> None:                       # as cluster/replication.py's _apply
        base, epoch, run, crc = batch
        active = follower.log.active_base
        follower.log.append_raw([(run.data, run.count)], epoch, crc)
        if follower.log.active_base != active:
            follower.rolled_from(active)
    append(batches[0])
    commit_round(follower)
    settle(follower, range(4))                       # acked while 0..3 is the active segment
    commit_round(follower)
    assert bases(follower) == [0]
    append(batches[1])                               # rolls: 0..3 is closed, all settled
    commit_round(follower)
    assert bases(follower) == [4]
    assert log_files(tmp_path / "follower") == [4]
