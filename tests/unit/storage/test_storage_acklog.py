import os

from amqpbroker.storage import AckLog


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
