"""Making and removing a partition: what a crash can leave of a new one (its files are made
without fsyncs), and the trash a destroyed one goes to (storage/trash.py)."""
import os

import pytest

from amqpbroker.storage import PartitionLog, Record
from amqpbroker.storage.acklog import AckLog
from amqpbroker.storage.trash import discard_directory, wait_removed


def open_store(d):
    """The ack log and the log of a classic queue's store, opened as worker/store.py does
    (the ack log first, while the directory may not exist yet)."""
    acks = AckLog(d / "acks.log")
    return acks, PartitionLog(d, gap_settled=acks.all_done)


def rec(i: int) -> Record:
    return Record(1_000 + i, "ex", f"rk.{i}", b"\x00\x00", bytes([i % 256]) * 10, 1)


@pytest.mark.parametrize("lost", ["directory", "files", "contents", "records"])
def test_a_new_partition_a_crash_took_back_reopens_empty_and_works(tmp_path, lost):
    d = tmp_path / "q"
    acks, log = open_store(d)
    assert log.recovery.created
    assert not d.exists()               # no directory and no file until the first append
    log.append([rec(0)])
    acks.record([0])
    log._simulate_crash()
    acks._simulate_crash()
    # what a power cut may leave of files nothing was fsynced into
    names = sorted(os.listdir(d))
    assert names == ["00000000000000000000.log", "acks.log"]
    for name in names:
        if lost in ("directory", "files"):
            os.unlink(d / name)
        elif lost == "contents":
            os.truncate(d / name, 0)
        elif lost == "records":         # the header written, the first batch or entry not
            os.truncate(d / name, 8)
    if lost == "directory":
        os.rmdir(d)
    acks, log = open_store(d)
    try:
        assert (log.start_offset, log.end_offset) == (0, 0)
        assert not log.recovery.data_cut
        assert log.append([rec(0), rec(1)]) == 0
        assert log.sync() == 2
        acks.record([0])
        acks.sync()
        assert acks.durable == acks.written == 1
    finally:
        log.close()
        acks.close()
    acks, log = open_store(d)
    try:
        assert not log.recovery.created
        assert log.read(0) == [(0, rec(0)), (1, rec(1))]
        assert acks.is_done(0) and not acks.is_done(1)
    finally:
        log.close()
        acks.close()


def test_destroy_frees_the_name_at_once_and_removes_the_files_behind(tmp_path):
    d = tmp_path / "q"
    log = PartitionLog(d)
    log.append([rec(0)])
    log.sync()
    log.destroy()
    assert not d.exists()
    again = PartitionLog(d)         # the name is free: a new, empty partition
    try:
        assert again.recovery.created and again.end_offset == 0
    finally:
        again.close()
    assert wait_removed(30)
    assert os.listdir(tmp_path) == []   # the new partition has no directory until written to


def test_discard_directory_of_a_missing_directory_is_nothing(tmp_path):
    assert discard_directory(str(tmp_path / "nothing")) == ""
    assert wait_removed(30)
    assert os.listdir(tmp_path) == []
