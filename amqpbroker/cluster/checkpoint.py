"""The high watermark checkpoint of a replicated queue (issue 12; Kafka's
``replication-offset-checkpoint``, docs/CLUSTER.md section 4).

Theory of operation
-------------------
A replica's high watermark (HW) lives in the memory of the process hosting its queue
(replication.py's ``Leader`` and ``Follower``). A leader whose process started again (its
worker died alone in ``--workers N``, or the whole node restarted and still leads) was told
no HW: without a checkpoint it starts at its log start (its tail may be one the followers
never got) and consumers see nothing until the followers fetch again, or never when none
can (the followers are down, or out of the ISR with fewer than ``min_isr`` left).

So each replica, leader or follower, writes the HW it holds to ``high-watermark`` in its
queue's directory: one JSON line ``{"high_watermark": hw, "epoch": e}``, ``e`` being the
leader epoch of the batch holding offset ``hw - 1`` (0 when ``hw`` is 0). A replica that
starts reads it back (``start_hw``), and counts it only if its log still holds offset
``hw - 1`` in that epoch: batches of one epoch were all written by its one leader, so the
log up to ``hw`` is then the one the HW passed (storage/epochs.py). A log cut below it (a
divergent tail truncated after an unclean election) or a directory whose file is not its
own fails that test and starts at its log start, as without a checkpoint. Written values
are HWs the replica held, and a HW only grows: a restarted replica never starts above a HW
it once reached, nor above its own log end.

Writing (``Checkpoints``, one per host of replicas): a role whose HW moved is marked; the
files of the marked roles are written together in the executor at most every
``CHECKPOINT_EVERY`` seconds (Kafka's ``replica.high.watermark.checkpoint.interval.ms``,
5 s), the first one at once, and every role's at a clean stop. A write that took longer
than that (two fsyncs per queue: a thousand queues whose HW moved took 16 s on the loaded
test machine) is followed by a pause as long as it took: the checkpoints never keep the
disk busy more than half the time. Each file is written to
``high-watermark.tmp``, fsynced, renamed over ``high-watermark`` and the directory fsynced,
all relative to a descriptor of the directory opened on the event loop while the queue
existed: a queue deleted meanwhile (its directory renamed to the trash) cannot have a stale
file land in a new queue's directory of the same name.

Crash states: the old file (the rename is atomic), or the new one; a leftover
``high-watermark.tmp`` is overwritten by the next write. A HW lost with the last interval
only delays consumers until the followers' fetches raise it, as before.
"""
from __future__ import annotations

import json
import logging
import os
from bisect import bisect_right

log = logging.getLogger("amqpbroker.cluster")

CHECKPOINT_EVERY = 5.0      # seconds between the writes of one host's checkpoints
NAME = "high-watermark"
TMP = NAME + ".tmp"


def epoch_at(log_, offset: int) -> int | None:
    """The leader epoch of the batch holding ``offset`` (None: the log does not hold it)."""
    if not log_.start_offset <= offset < log_.end_offset:
        return None
    entries = log_.epochs.entries
    i = bisect_right([start for _, start in entries], offset) - 1
    return entries[i][0] if i >= 0 else None


def read(directory: str) -> tuple[int, int] | None:
    """(hw, epoch) from the queue's checkpoint file; None when there is none or it is not
    one (a torn file cannot be: it is renamed into place whole)."""
    try:
        with open(os.path.join(directory, NAME), "rb") as f:
            d = json.loads(f.read())
        return int(d["high_watermark"]), int(d["epoch"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: high watermark checkpoint unreadable (%s): not used", directory, exc)
        return None


def start_hw(log_) -> tuple[int, int | None]:
    """(the HW a replica starts with, the checkpointed HW it came from or None): the
    checkpoint's when the log still holds its last offset in its epoch and has it durable,
    else the log start."""
    start = log_.start_offset
    got = read(log_.directory)
    if got is None:
        return start, None
    hw, epoch = got
    if hw <= start:
        return start, hw
    if hw > log_.durable_offset or epoch_at(log_, hw - 1) != epoch:
        log.warning("%s: high watermark checkpoint %d (epoch %d) is not this log's (durable "
                    "end %d): starting at the log start %d", log_.directory, hw, epoch,
                    log_.durable_offset, start)
        return start, None
    return hw, hw


def write(dir_fd: int, hw: int, epoch: int) -> None:
    """Write one checkpoint atomically into the directory ``dir_fd`` (closed after)."""
    try:
        fd = os.open(TMP, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
        try:
            os.write(fd, json.dumps({"high_watermark": hw, "epoch": epoch}).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(TMP, NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_all(jobs) -> list:
    """In the executor: each (dir_fd, hw, epoch, role); returns (role, hw) of those written."""
    done = []
    for dir_fd, hw, epoch, role in jobs:
        try:
            write(dir_fd, hw, epoch)
            done.append((role, hw))
        except OSError as exc:
            log.warning("high watermark checkpoint %d not written: %s", hw, exc)
    return done


class Checkpoints:
    """The checkpoint writes of one host's replicas. A role (``Leader``/``Follower``) has
    ``queue``, ``hw``, ``stopped`` and ``checkpointed`` (the HW its file holds)."""

    def __init__(self, loop, every: float = CHECKPOINT_EVERY):
        self.loop = loop
        self.every = every
        self.marked: set = set()
        self.timer = None
        self.writing = None                 # the executor's job, while it runs
        self.began = 0.0                    # when it began (loop time)
        self.next_at = float("-inf")        # the next write begins no earlier

    def mark(self, role) -> None:
        """``role``'s HW moved: its file is written with the next write."""
        self.marked.add(role)
        if self.timer is None and self.writing is None:
            self._schedule()

    def _schedule(self) -> None:
        self.timer = self.loop.call_later(max(0.0, self.next_at - self.loop.time()),
                                          self._write)

    def _jobs(self, roles) -> list:
        """(dir_fd, hw, epoch, role) of each role whose HW is not in its file yet."""
        jobs = []
        for role in roles:
            q = role.queue
            hw = role.hw
            if role.stopped or q.deleted or hw <= (role.checkpointed or 0):
                continue
            try:
                log_ = q.store.log
                epoch = epoch_at(log_, hw - 1)
                if epoch is None:
                    continue
                dir_fd = os.open(log_.directory, os.O_RDONLY | os.O_DIRECTORY)
            except Exception as exc:        # closed, or its directory gone
                log.debug("high watermark checkpoint %d skipped: %s", hw, exc)
                continue
            jobs.append((dir_fd, hw, epoch, role))
        return jobs

    def _write(self) -> None:
        self.timer = None
        roles, self.marked = self.marked, set()
        jobs = self._jobs(roles)
        if not jobs:
            return
        self.began = self.loop.time()
        self.writing = self.loop.run_in_executor(None, _write_all, jobs)
        self.writing.add_done_callback(self._written)

    def _written(self, fut) -> None:
        self.writing = None
        now = self.loop.time()
        self.next_at = max(self.began + self.every, now + (now - self.began))
        if not fut.cancelled() and fut.exception() is None:
            for role, hw in fut.result():
                role.checkpointed = max(role.checkpointed or 0, hw)
        if self.marked and self.timer is None:
            self._schedule()

    def write_now(self, roles) -> None:
        """A clean stop: every role's HW written now, on this thread."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for role, hw in _write_all(self._jobs(roles)):
            role.checkpointed = max(role.checkpointed or 0, hw)
