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


def test_first_writes_make_the_files_and_their_first_sync_makes_the_names_durable(tmp_path):
    """The directory and files a first append makes owe an fsync of the directory and of its
    parent (the names), paid by the first sync that makes records or entries durable."""
    from amqpbroker.storage import dirsync
    d = tmp_path / "q"
    acks, log = open_store(d)
    try:
        assert not d.exists()
        log.sync()
        acks.sync()
        assert not d.exists() and str(d) not in dirsync._made   # nothing made, nothing owed
        log.append([rec(0)])
        acks.record([0])
        assert sorted(os.listdir(d)) == ["00000000000000000000.log", "acks.log"]
        assert dirsync._made.get(str(d)) and dirsync._made.get(str(tmp_path))
        log.sync()
        acks.sync()
        assert str(d) not in dirsync._made and str(tmp_path) not in dirsync._made
    finally:
        log.close()
        acks.close()


def test_a_sealed_segment_has_both_index_files_and_is_trusted_at_reopen(tmp_path):
    """Index files are made by their first entry; rolling seals the segment and makes both,
    so the next open trusts them instead of rebuilding them from a scan."""
    d = tmp_path / "q"
    log = PartitionLog(d, segment_bytes=200)
    try:
        log.append([rec(i) for i in range(5)])
        assert log.size_bytes() > 200
        assert sorted(os.listdir(d)) == ["00000000000000000000.log"]
        log.append([rec(5)])                # past segment_bytes: rolls
        log.sync()
        assert sorted(os.listdir(d)) == ["00000000000000000000.index",
                                         "00000000000000000000.log",
                                         "00000000000000000000.timeindex",
                                         "00000000000000000005.log"]
    finally:
        log.close()
    log = PartitionLog(d, segment_bytes=200)
    try:
        assert log.recovery.indexes_rebuilt == 0 and not log.recovery.messages
        assert log.read(0) == [(i, rec(i)) for i in range(6)]
    finally:
        log.close()
