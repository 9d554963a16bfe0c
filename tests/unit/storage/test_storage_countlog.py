"""DeliveryCountLog and ModifiedLog: a quorum queue's return counts and the properties
modified outcomes gave its messages, on disk."""
import os
import random

import pytest

from amqpbroker.storage.countlog import (COMPACT_MIN_ENTRIES, ENTRY_SIZE, DeliveryCountLog)
from amqpbroker.storage.fileformat import HEADER_SIZE


def reopen(path) -> dict:
    return dict(DeliveryCountLog(path).counts)


def test_counts_survive_reopen_and_later_entries_win(tmp_path):
    path = tmp_path / "counts.log"
    log = DeliveryCountLog(path)
    log.set(3, 1)
    log.set(9, 1)
    log.flush()
    log.set(3, 2)
    log.flush()
    log.sync()
    assert reopen(path) == {3: 2, 9: 1}


def test_set_without_flush_is_not_on_disk_and_close_writes_it(tmp_path):
    path = tmp_path / "counts.log"
    log = DeliveryCountLog(path)
    log.set(1, 1)
    assert reopen(path) == {}
    log.close()
    assert reopen(path) == {1: 1}


def test_forget_and_retain_drop_counts_from_the_file(tmp_path):
    path = tmp_path / "counts.log"
    log = DeliveryCountLog(path)
    for o in range(10):
        log.set(o, o + 1)
    log.flush()
    log.forget(0)
    log.set(1, 5)
    log.forget(1)            # settled before its flush: never written again
    log.flush()
    log.retain(lambda o: o % 2 == 0)
    assert log.counts == {2: 3, 4: 5, 6: 7, 8: 9}
    assert os.path.getsize(path) == HEADER_SIZE + 4 * ENTRY_SIZE
    assert reopen(path) == {2: 3, 4: 5, 6: 7, 8: 9}


@pytest.mark.parametrize("seed", range(5))
def test_torn_or_corrupt_tail_is_cut_and_the_good_prefix_kept(tmp_path, seed):
    rnd = random.Random(seed)
    path = tmp_path / "counts.log"
    log = DeliveryCountLog(path)
    for o in range(20):
        log.set(o, 1)
        log.flush()
    good = rnd.randrange(0, 20)                   # entries before the damage
    at = HEADER_SIZE + good * ENTRY_SIZE + rnd.randrange(0, ENTRY_SIZE)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40))))
        f.truncate(at + rnd.randrange(1, 40))
    counts = reopen(path)
    assert counts == {o: 1 for o in range(good)}
    assert os.path.getsize(path) == HEADER_SIZE + good * ENTRY_SIZE
    log = DeliveryCountLog(path)                  # appending after the cut works
    log.set(99, 3)
    log.flush()
    assert reopen(path) == {**{o: 1 for o in range(good)}, 99: 3}


def test_unreadable_header_starts_empty_and_stray_tmp_is_removed(tmp_path):
    path = tmp_path / "counts.log"
    path.write_bytes(b"garbage!" * 4)
    (tmp_path / "counts.log.tmp").write_bytes(b"half a rewrite")
    assert reopen(path) == {}
    assert not (tmp_path / "counts.log.tmp").exists()


def test_file_is_rewritten_when_mostly_replaced_entries(tmp_path):
    path = tmp_path / "counts.log"
    log = DeliveryCountLog(path)
    for n in range(1, COMPACT_MIN_ENTRIES + 10):
        log.set(7, n)
        log.flush()
    assert os.path.getsize(path) < HEADER_SIZE + 20 * ENTRY_SIZE
    assert reopen(path) == {7: COMPACT_MIN_ENTRIES + 9}


def test_a_new_count_log_makes_no_file_until_a_count_is_flushed(tmp_path):
    """A quorum queue that never requeues costs no file (the declare used to write one:
    tmp, fsync, rename, directory fsync)."""
    path = tmp_path / "counts.log"
    log = DeliveryCountLog(path)
    log.retain(lambda o: True)
    log.flush()
    log.sync(force=True)
    assert not path.exists()
    log.set(4, 1)
    log.flush()
    assert path.read_bytes()[:4] == b"AQDC" and path.stat().st_size == HEADER_SIZE + ENTRY_SIZE
    log.sync(force=True)
    log.close()
    assert reopen(path) == {4: 1}


# ------------------------------------------------------------------ ModifiedLog
@pytest.mark.parametrize("seed", range(5))
def test_modified_properties_survive_reopen_and_a_torn_tail_keeps_the_whole_ones(tmp_path,
                                                                                  seed):
    """The properties a modified outcome gave messages (entries of any size): the last
    written for an offset wins, a reopen reads them back, a tail cut anywhere loses only the
    entries it cut into, and settled ones leave the file at the next rewrite."""
    from amqpbroker.storage.countlog import ModifiedLog
    rnd = random.Random(seed)
    path = tmp_path / "modified.log"
    log = ModifiedLog(path)
    want = {}
    ends = []
    for o in range(12):
        value = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 300)))
        log.set(o % 8, value)
        want[o % 8] = value
        log.flush()
        ends.append((os.path.getsize(path), dict(want)))
    log.close()
    assert dict(ModifiedLog(path).counts) == want
    cut = rnd.randrange(HEADER_SIZE, os.path.getsize(path))
    with open(path, "r+b") as f:
        f.truncate(cut)
    whole = [state for end, state in ends if end <= cut]
    kept = whole[-1] if whole else {}
    assert dict(ModifiedLog(path).counts) == kept
    assert os.path.getsize(path) == max([HEADER_SIZE] + [e for e, _ in ends if e <= cut])
    log = ModifiedLog(path)
    log.retain(lambda o: o == 0)
    assert dict(ModifiedLog(path).counts) == {k: v for k, v in kept.items() if k == 0}
