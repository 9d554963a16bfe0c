"""CommitTracker cases: out-of-order acks, requeue, revoke and redelivery from the commit,
no_ack, filtered skips, a commit below the log start."""
import pytest

from amqpbroker.groups.commits import CommitTracker


def deliver(t, n):
    out = []
    for _ in range(n):
        o = t.next_offset()
        t.deliver(o)
        out.append(o)
    return out


def test_out_of_order_acks_commit_past_the_contiguous_run_only():
    t = CommitTracker(100)
    assert deliver(t, 5) == [100, 101, 102, 103, 104]
    assert t.committed == 100
    assert t.ack([102, 104]) == 2 and t.committed == 100      # 100 still unacked
    t.ack([100])
    assert t.committed == 101 and t.take_commit() == 101 and t.take_commit() is None
    t.ack([101])
    assert t.committed == 103                                  # past 100..102
    t.ack([103])
    assert t.committed == 105 == t.position                    # next offset to read
    assert t.ack([103, 7]) == 0                                # stale acks are ignored


def test_revoke_restarts_at_the_commit_and_ignores_late_acks():
    t = CommitTracker(0)
    deliver(t, 6)
    t.ack([0, 1, 3])
    assert t.revoke() == 3                                     # 2, 4, 5 unsettled
    assert t.committed == 2 and t.next_offset() == 2
    assert t.ack([4]) == 0 and t.committed == 2                # a late ack of the old owner
    assert deliver(t, 4) == [2, 3, 4, 5]                       # 3 again: acked, not committed
    t.ack([2, 3, 4, 5])
    assert t.committed == 6


def test_requeued_offsets_are_delivered_first_and_hold_the_commit():
    t = CommitTracker(0)
    deliver(t, 4)
    t.ack([0])
    assert t.requeue([1, 3]) == 2 and t.requeue([9]) == 0
    assert t.committed == 1 and t.unsettled() == [1, 2, 3]
    assert deliver(t, 3) == [1, 3, 4]
    t.ack([1, 2, 3, 4])
    assert t.committed == 5
    with pytest.raises(ValueError, match="already delivered"):
        t.deliver(2)


def test_no_ack_commits_at_delivery():
    t = CommitTracker(10, no_ack=True)
    deliver(t, 3)
    assert t.committed == 13 and t.in_flight() == 0 and t.take_commit() == 13


def test_filtered_offsets_count_as_done():
    t = CommitTracker(0)
    t.deliver(3)                          # 0..2 did not match the group's filter
    assert t.committed == 3
    t.ack([3])
    t.skip_to(10)                         # the reader scanned to 10 without a match
    assert t.committed == 10 and t.next_offset() == 10


def test_commit_below_the_log_start_falls_back_to_it():
    t = CommitTracker(5, log_start=40)
    assert t.fell_back_from == 5 and t.committed == 40 and t.next_offset() == 40
    assert CommitTracker(50, log_start=40).fell_back_from is None
    deliver(t, 10)                        # 40..49 in flight
    t.ack([40, 41])
    assert t.clamp(45) == 42              # retention deleted the segment holding 42..44
    assert t.committed == 45 and t.unsettled() == list(range(45, 50))
    assert t.clamp(45) is None
