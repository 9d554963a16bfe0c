"""``PartitionLog.last_batch_offset``: a stream's ``x-stream-offset: last`` (the first offset
of the newest batch), after appends, across a roll to an empty segment, after reopening."""
from __future__ import annotations

from amqpbroker.storage import PartitionLog, Record


def rec(i: int) -> Record:
    return Record(1000 + i, "", "s", b"\x00\x00", b"%d" % i * 50, 1)


def test_last_batch(tmp_path):
    log = PartitionLog(tmp_path / "p", segment_bytes=600, fsync="never")
    try:
        assert log.last_batch_offset() is None
        assert log.append([rec(0), rec(1), rec(2)]) == 0
        assert log.last_batch_offset() == 0
        for i in range(3, 40, 4):
            base = log.append([rec(i + k) for k in range(4)])
            assert log.last_batch_offset() == base
        assert len(log.segment_bounds()) > 3          # batches spread over segments
        last = log.last_batch_offset()
    finally:
        log.close()
    reopened = PartitionLog(tmp_path / "p", segment_bytes=600, fsync="never")
    try:
        assert reopened.last_batch_offset() == last
    finally:
        reopened.close()


def test_last_batch_when_the_active_segment_is_empty(tmp_path):
    log = PartitionLog(tmp_path / "p", segment_bytes=600, fsync="never")
    try:
        log.append([rec(0)])
        log.append([rec(1), rec(2)])
        log._roll()                                   # a roll leaves an empty active segment
        assert log.segment_bounds()[-1] == (3, 3)
        assert log.last_batch_offset() == 1
    finally:
        log.close()
