"""``PartitionLog.read`` a few records at a time from one big batch (a stream consumer with
little credit): each batch is decoded once, not once per read, and what the reads return is
what one read of everything returns, also across new appends and a reopen."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amqpbroker.storage import PartitionLog, Record
from amqpbroker.storage import log as log_module


def rec(i: int) -> Record:
    return Record(1000 + i, "", "s", b"\x00\x00", b"m%d" % i, 1)


def piecewise(log: PartitionLog, start: int, end: int, n: int) -> list:
    out, offset = [], start
    while offset < end:
        got = log.read(offset, max_records=n)
        assert got, f"nothing at {offset}"
        out += got
        offset = got[-1][0] + 1
    return out


def test_small_reads_of_a_big_batch_decode_it_once(tmp_path, monkeypatch):
    decoded = []
    real = log_module.decode_records

    def counting(batch, head_size):
        decoded.append(1)
        return real(batch, head_size)
    monkeypatch.setattr(log_module, "decode_records", counting)
    log = PartitionLog(tmp_path / "p", fsync="never")
    try:
        log.append([rec(i) for i in range(1000)])          # one batch
        log.append([rec(i) for i in range(1000, 1500)])    # and another
        whole = log.read(0, max_records=2000)
        assert [o for o, _ in whole] == list(range(1500))
        decoded.clear()
        assert piecewise(log, 0, 1500, 7) == whole
        assert len(decoded) == 2                           # 215 reads, each batch once
        log.append([rec(i) for i in range(1500, 1600)])    # read on after an append
        assert piecewise(log, 1490, 1600, 30) == log.read(1490, max_records=200)
    finally:
        log.close()
    reopened = PartitionLog(tmp_path / "p", fsync="never")
    try:
        assert piecewise(reopened, 0, 1600, 333) == reopened.read(0, max_records=5000)
    finally:
        reopened.close()


def test_small_reads_of_a_big_batch_read_its_bytes_once(tmp_path, monkeypatch):
    """The batch a read stopped inside is not read from the file again either: a consumer
    reading 1 KiB messages a few at a time from 1 MiB batches copied the whole batch per
    read."""
    from amqpbroker.storage import segment as segment_module
    read_bytes = []
    real = segment_module.os.pread

    def counting(fd, n, pos):
        got = real(fd, n, pos)
        read_bytes.append(len(got))
        return got
    log = PartitionLog(tmp_path / "p", fsync="never")
    try:
        log.append([Record(1, "", "s", b"", b"x" * 1024, 1) for _ in range(1000)])
        log.append([Record(1, "", "s", b"", b"y" * 1024, 1) for _ in range(1000)])
        on_disk = log.size_bytes()
        monkeypatch.setattr(segment_module.os, "pread", counting)
        got = piecewise(log, 0, 2000, 10)                   # 200 reads
        monkeypatch.undo()
        assert [o for o, _ in got] == list(range(2000))
        assert [r.body[:1] for _, r in got] == [b"x"] * 1000 + [b"y"] * 1000
        assert sum(read_bytes) <= 2 * on_disk, (sum(read_bytes), on_disk)
    finally:
        log.close()


@given(sizes=st.lists(st.lists(st.integers(0, 300), min_size=1, max_size=30), min_size=1,
                      max_size=5),
       start=st.integers(0, 200), max_records=st.integers(1, 200),
       max_bytes=st.integers(1, 6000))
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_read_takes_the_longest_prefix_within_its_limits(tmp_path_factory, sizes, start,
                                                         max_records, max_bytes):
    """Whole batches are taken without sizing each record; what a read returns is still
    exactly as many records as fit ``max_records`` and ``max_bytes`` (one at least)."""
    log = PartitionLog(tmp_path_factory.mktemp("p") / "p", fsync="never")
    try:
        records = []
        for batch in sizes:
            got = [Record(1, "", "s", b"", b"z" * n, 1) for n in batch]
            log.append(got)
            records += got
        start %= len(records)
        want, size = [], 0
        for o in range(start, len(records)):
            sz = log_module.record_size(records[o])
            if len(want) >= max_records or (want and size + sz > max_bytes):
                break
            want.append(o)
            size += sz
        assert [o for o, _ in log.read(start, max_records=max_records,
                                       max_bytes=max_bytes)] == want
    finally:
        log.close()
