"""The leader-epoch cache of one partition log (Kafka's ``LeaderEpochFileCache``).

Theory of operation
-------------------
Every batch carries the leader epoch it was written in (record.py). Epochs only grow along
a log, so the log is a run of epochs, each starting at some offset; the cache keeps those
starts, ``[(epoch, start offset)]`` in order. It answers Kafka's ``OffsetsForLeaderEpoch``:
for an epoch E, the largest epoch it holds that is <= E and that epoch's end offset (where
the next epoch starts, or the log's end for the newest). Replication compares two logs with
it (cluster/replication.py): batches of one epoch were all written by one leader, so two
replicas that hold the same epoch up to the same offset hold the same batches there.

There is no checkpoint file: the log is the truth, and the cache is rebuilt from it when
first asked (``PartitionLog.epochs``: the first and last batch of each segment, and every
batch of a segment whose two differ), then kept by ``assign`` at each append. A truncated
log is reopened (replication's ``truncate_files``), and its cache rebuilt; ``truncate``
does the same on a live cache, and ``drop_before`` follows the log start.
"""
from __future__ import annotations

from bisect import bisect_right


class EpochCache:
    def __init__(self, entries=()):
        self.entries: list[tuple[int, int]] = []    # (epoch, start offset), both growing
        for epoch, start in entries:
            self.assign(epoch, start)

    @property
    def latest(self) -> int | None:
        """The newest epoch in the log (None: no batch)."""
        return self.entries[-1][0] if self.entries else None

    def assign(self, epoch: int, start: int) -> None:
        """A batch of ``epoch`` was appended at ``start``: a newer epoch starts there. An
        older one than the newest is not recorded (Kafka ignores it too: a log's epochs
        only grow, so such a stamp would be a bug upstream, and the newer start stands)."""
        if not self.entries or epoch > self.entries[-1][0]:
            self.entries.append((epoch, start))

    def end_offset_for(self, epoch: int, log_end: int) -> tuple[int | None, int]:
        """(the largest epoch <= ``epoch`` held, the offset where it ends): ``log_end`` for
        the newest. (None, the first start, or ``log_end`` when empty) if every epoch held
        is newer."""
        epochs = [e for e, _ in self.entries]
        i = bisect_right(epochs, epoch) - 1
        if i < 0:
            return None, self.entries[0][1] if self.entries else log_end
        end = self.entries[i + 1][1] if i + 1 < len(self.entries) else log_end
        return self.entries[i][0], end

    def truncate(self, end: int) -> None:
        """The log was cut to end at ``end``: epochs starting there or later go."""
        while self.entries and self.entries[-1][1] >= end:
            self.entries.pop()

    def drop_before(self, start: int) -> None:
        """The log now starts at ``start``: an epoch starting before it starts there."""
        while len(self.entries) > 1 and self.entries[1][1] <= start:
            self.entries.pop(0)
        if self.entries and self.entries[0][1] < start:
            self.entries[0] = (self.entries[0][0], start)

    def __repr__(self) -> str:
        return f"EpochCache({self.entries})"


def diverging(log, fetched_epoch: int, offset: int) -> tuple[int, int] | None:
    """The leader's side of a fetch (KIP-595): a follower whose log ends at ``offset`` with a
    batch of ``fetched_epoch`` agrees with ``log`` unless ``log``'s largest epoch <=
    ``fetched_epoch`` is another one, or ends before ``offset``. Then (that epoch, where it
    ends here): ``OffsetsForLeaderEpoch``'s answer, the follower truncates by it. None when
    they agree; at or below the log start they are taken to (what is below is settled and
    deleted here)."""
    if offset <= log.start_offset:
        return None
    epoch, end = log.epoch_end(fetched_epoch)
    if epoch == fetched_epoch and end >= offset:
        return None
    return (fetched_epoch if epoch is None else epoch), end


def truncation_offset(log, epoch: int, leader_end: int) -> int:
    """The follower's side (KIP-279): where to cut ``log`` when the leader's ``epoch`` (its
    largest <= ours) ends at ``leader_end``: the lower of that and where our own largest
    epoch <= ``epoch`` ends; never below our log start. The follower fetches again from
    there, naming the epoch its log then ends with, until the leader finds no divergence."""
    mine, end = log.epoch_end(epoch)
    if mine is None:
        end = log.start_offset
    return max(log.start_offset, min(leader_end, end))
