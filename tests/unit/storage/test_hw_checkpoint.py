"""The high watermark checkpoint of a replicated queue's directory (cluster/checkpoint.py):
written atomically, at most once per interval besides a clean stop's, read back only
while the log still holds the checkpointed offset in its epoch and durably; otherwise a
replica starts at its log start, as without one."""
import asyncio
import os
import types

import pytest

from amqpbroker.cluster import checkpoint
from amqpbroker.cluster.checkpoint import Checkpoints, start_hw
from amqpbroker.cluster.replication import truncate_files
from amqpbroker.storage import Record


def rec(i: int) -> Record:
    return Record(1_000 + i, "ex", f"rk.{i}", b"", b"m%d" % i)


@pytest.fixture
def open_log(open_log):
    """Logs that fsync every append: the checkpoint is read back only up to the durable end."""
    return lambda name="p0", **kw: open_log(name, fsync="always", **kw)


def append(log, epoch, first, n):
    for i in range(first, first + n):
        log.append([rec(i)], epoch)
    log.sync()


class Role:
    """What Checkpoints reads of a Leader or Follower."""

    def __init__(self, log, hw):
        self.queue = types.SimpleNamespace(deleted=False, store=types.SimpleNamespace(log=log),
                                           directory=str(log.directory))
        self.hw, self.stopped, self.checkpointed = hw, False, None


role = Role


def test_no_checkpoint_starts_at_the_log_start(open_log):
    log = open_log()
    append(log, 1, 0, 5)
    assert start_hw(log) == (0, None)


def test_a_clean_stops_checkpoint_is_read_back_and_leaves_no_temporary_file(open_log):
    log = open_log()
    append(log, 1, 0, 5)
    append(log, 2, 5, 5)
    r = role(log, 7)
    Checkpoints(None).write_now([r])
    assert r.checkpointed == 7
    assert sorted(n for n in os.listdir(log.directory) if "high" in n) == [checkpoint.NAME]
    assert checkpoint.read(str(log.directory)) == (7, 2)
    assert start_hw(log) == (7, 7)


def test_a_checkpoint_above_the_durable_end_is_not_used(open_log, tmp_path):
    log = open_log()
    append(log, 1, 0, 10)
    Checkpoints(None).write_now([role(log, 10)])
    cuts = log.cut_points(6)
    log.close()
    truncate_files(cuts)
    again = open_log()
    assert again.end_offset == 6
    assert start_hw(again) == (0, None)


def test_a_checkpoint_whose_offset_was_rewritten_in_another_epoch_is_not_used(open_log):
    """A tail cut below the checkpointed HW (an unclean election) and written again by a
    newer leader: the same offsets, other messages."""
    log = open_log()
    append(log, 1, 0, 10)
    Checkpoints(None).write_now([role(log, 8)])
    cuts = log.cut_points(4)
    log.close()
    truncate_files(cuts)
    again = open_log()
    append(again, 3, 4, 6)
    assert again.end_offset == 10
    assert start_hw(again) == (0, None)


def test_a_checkpoint_below_the_log_start_starts_at_the_log_start(open_log):
    log = open_log(segment_bytes=300)
    append(log, 1, 0, 10)
    Checkpoints(None).write_now([role(log, 3)])
    start = log.segment_bounds()[-1][0]
    assert start > 3
    log.delete_before(start)
    assert log.start_offset == start
    assert start_hw(log) == (start, 3)


async def test_writes_come_at_most_once_per_interval_the_first_at_once(open_log):
    log = open_log()
    append(log, 1, 0, 10)
    cps = Checkpoints(asyncio.get_running_loop(), every=3600)
    r = role(log, 4)
    cps.mark(r)
    while r.checkpointed != 4:              # the first write: at once (in the executor)
        await asyncio.sleep(0.01)
    r.hw = 9
    cps.mark(r)
    await asyncio.sleep(0)
    assert cps.writing is None and cps.timer is not None    # the next: an interval later
    assert checkpoint.read(str(log.directory)) == (4, 1)
    cps.write_now([r])                      # a clean stop does not wait for it
    assert cps.timer is None and checkpoint.read(str(log.directory)) == (9, 1)


def test_a_deleted_or_stopped_role_is_not_written(open_log):
    log = open_log()
    append(log, 1, 0, 5)
    stopped, gone = role(log, 3), role(log, 4)
    stopped.stopped = True
    gone.queue.deleted = True
    Checkpoints(None).write_now([stopped, gone])
    assert checkpoint.read(str(log.directory)) is None
