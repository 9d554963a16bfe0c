"""ConsumerGroup scenarios: the first member takes all, a join moves only what it must and only
after the revocation completes, grace expiry, leave, static members and their session timeout,
stale notices, added partitions."""
import pytest

from amqpbroker.groups.coordinator import Assign, ConsumerGroup, InstanceIdInUse, Revoke, \
    UnknownMember


def group(n=6):
    return ConsumerGroup("billing", range(n), revoke_grace=10, session_timeout=30)


def owners(g):
    return {p: m for p, (m, _) in g.delivering().items()}


def test_first_member_gets_every_partition_at_once():
    g = group()
    acts = g.join("a", None, now=0)
    assert acts == [Assign(p, "a", 1) for p in range(6)]
    assert not g.is_empty() and g.deadline() is None


def test_join_revokes_only_what_moves_and_assigns_it_after_the_revocation():
    g = group()
    g.join("a", None, 0)
    acts = g.join("b", None, 1)
    assert acts == [Revoke(p, "a", 1) for p in (3, 4, 5)]   # a keeps its lowest three
    assert owners(g) == {0: "a", 1: "a", 2: "a"}
    assert g.deadline() == 11
    assert g.revoked("a", 3, 1) == [Assign(3, "b", 2)]
    assert g.revoked("a", 4, 1) == [Assign(4, "b", 2)]
    assert g.revoked("a", 4, 1) == []                       # a duplicate changes nothing
    assert owners(g) == {0: "a", 1: "a", 2: "a", 3: "b", 4: "b"}
    # partition 5's revocation never completes: after the grace it goes anyway
    assert g.tick(10.9) == []
    assert g.tick(11) == [Assign(5, "b", 2)]
    assert g.revoked("a", 5, 1) == []                       # too late: fenced by the epoch
    assert g.deadline() is None


def test_leave_hands_the_partitions_to_the_others():
    g = group(4)
    g.join("a", None, 0)
    g.join("b", None, 0)
    for p in (2, 3):
        g.revoked("a", p, 1)
    acts = g.leave("b", 5)
    assert acts == [Revoke(2, "b", 2), Revoke(3, "b", 2)]
    assert g.revoked("b", 2, 2) == [Assign(2, "a", 3)]
    assert g.revoked("b", 3, 2) == [Assign(3, "a", 3)]
    assert g.leave("a", 6) == [Revoke(p, "a", e) for p, e in ((0, 1), (1, 1), (2, 3), (3, 3))]
    assert g.is_empty()
    with pytest.raises(UnknownMember):
        g.leave("a", 7)


def test_static_member_gets_its_partitions_back_within_the_session_timeout():
    g = group(6)
    g.join("conn1", "host-1", 0)
    g.join("b", None, 0)
    for p in (3, 4, 5):
        g.revoked("conn1", p, 1)
    before = owners(g)
    assert before == {0: "conn1", 1: "conn1", 2: "conn1", 3: "b", 4: "b", 5: "b"}
    # connection lost: its partitions stop, nobody else gets them
    assert g.leave("conn1", 10) == [Revoke(p, "conn1", 1) for p in (0, 1, 2)]
    assert [g.revoked("conn1", p, 1) for p in (0, 1, 2)] == [[], [], []]
    assert g.reserved() == {"host-1": 40} and g.deadline() == 40 and not g.is_empty()
    # back within the timeout, under a new member id: the same partitions, no rebalance
    assert g.join("conn2", "host-1", 39) == [Assign(p, "conn2", 2) for p in (0, 1, 2)]
    assert g.members() == {"conn2": "host-1", "b": None} and g.reserved() == {}


def test_static_member_that_stays_away_loses_its_partitions_at_the_timeout():
    g = group(4)
    g.join("s", "host-1", 0)
    g.join("b", None, 0)
    g.revoked("s", 2, 1)
    g.revoked("s", 3, 1)
    g.leave("s", 5)
    g.revoked("s", 0, 1)
    g.revoked("s", 1, 1)
    assert g.tick(34.9) == []
    assert g.tick(35) == [Assign(0, "b", 2), Assign(1, "b", 2)]
    # a later join under that instance id is a new member: a normal rebalance
    assert g.join("s2", "host-1", 40) == [Revoke(2, "b", 2), Revoke(3, "b", 2)]


def test_static_member_leaving_permanently_rebalances_at_once():
    g = group(2)
    g.join("s", "host-1", 0)
    g.join("b", None, 0)
    g.revoked("s", 1, 1)
    assert g.leave("s", 3, permanent=True) == [Revoke(0, "s", 1)]
    assert g.revoked("s", 0, 1) == [Assign(0, "b", 2)]
    assert g.reserved() == {}


def test_instance_id_in_use_is_refused():
    g = group(2)
    g.join("a", "host-1", 0)
    with pytest.raises(InstanceIdInUse, match="'host-1' is in use"):
        g.join("b", "host-1", 1)
    with pytest.raises(ValueError, match="already in group"):
        g.join("a", None, 1)
    assert g.members() == {"a": "host-1"}


def test_added_partitions_are_assigned_without_moving_the_others():
    g = group(2)
    g.join("a", None, 0)
    g.join("b", None, 0)
    g.revoked("a", 1, 1)
    assert owners(g) == {0: "a", 1: "b"}
    acts = g.set_partitions(range(4), 5)
    assert sorted(acts, key=lambda a: a.partition) == [Assign(2, "a", 1), Assign(3, "b", 1)]


def test_a_client_chosen_instance_id_never_collides_with_a_member_id():
    g = group(2)
    g.join("x", None, 0)
    assert g.join("y", "x", 0) == [Revoke(1, "x", 1)]      # instance id "x" is not member "x"
    assert g.revoked("x", 1, 1) == [Assign(1, "y", 2)]
    assert g.leave("y", 1) == [Revoke(1, "y", 2)]           # reserved under instance id "x"
    g.revoked("y", 1, 2)
    assert g.join("x2", None, 2) == []                      # a dynamic member joins normally
    assert g.members() == {"x": None, "x2": None} and g.reserved() == {"x": 31}


def test_a_coordinator_that_took_the_group_over_counts_epochs_above_its_predecessors():
    """A new coordinator (in a cluster: partition 0's new leader) starts its epochs at its
    term << 32, so every epoch it gives out is above the former coordinator's, whose late
    actions the workers then ignore (worker/groups.py)."""
    g = ConsumerGroup("billing", range(2), revoke_grace=10, session_timeout=30,
                      first_epoch=3 << 32)
    assert g.join("a", None, 0) == [Assign(0, "a", (3 << 32) + 1), Assign(1, "a", (3 << 32) + 1)]
    assert g.join("b", None, 1) == [Revoke(1, "a", (3 << 32) + 1)]
    assert g.revoked("a", 1, (3 << 32) + 1) == [Assign(1, "b", (3 << 32) + 2)]


# ------------------------------------------------------------ a coordinator taking over
# (a cluster: partition 0's leader moved; the workers still deliver what the former
# coordinator assigned. docs/CLUSTER.md "A new coordinator keeps the assignment")


def taken_over(n=4, until=20):
    g = ConsumerGroup("billing", range(n), revoke_grace=10, session_timeout=30,
                      first_epoch=7 << 32)
    g.take_over(until)
    return g


def test_a_new_coordinator_keeps_each_partition_with_the_member_rejoining_for_it():
    g = taken_over()
    assert g.join("b", None, 1) == []               # owners unknown yet: nothing moves
    assert g.deadline() == 20
    first = (7 << 32) + 1
    # the workers say a reads 0 and 2, b reads 1 and 3: b keeps its own at once
    assert g.adopt({0: "a", 1: "b", 2: "a", 3: "b"}, {"a", "b"}, 1) == [
        Assign(1, "b", first), Assign(3, "b", first)]
    # a joins again: it keeps 0 and 2 (the first joiner did not take them)
    assert g.join("a", None, 2) == [Assign(0, "a", first), Assign(2, "a", first)]
    assert owners(g) == {0: "a", 1: "b", 2: "a", 3: "b"}
    assert g.deadline() is None                     # every reader back: the hold is over
    acts = g.join("c", None, 3)                     # then it rebalances as before
    assert len(acts) == 1 and isinstance(acts[0], Revoke)


def test_a_new_coordinator_hands_over_the_partitions_of_a_reader_that_does_not_return():
    g = taken_over(until=20)
    g.adopt({0: "a", 1: "b", 2: "a", 3: "b"}, {"a", "b"}, 0)
    first = (7 << 32) + 1
    assert g.join("a", None, 1) == [Assign(0, "a", first), Assign(2, "a", first)]
    assert g.tick(19.9) == []
    assert g.tick(20) == [Assign(1, "a", first), Assign(3, "a", first)]   # b is gone


def test_a_reader_that_joined_again_and_leaves_is_not_waited_for():
    g = taken_over()
    g.join("a", None, 0)
    g.join("b", None, 0)
    g.adopt({0: "a", 1: "c", 2: "b"}, {"a", "b", "c"}, 0)   # 3 is read by nobody
    assert owners(g) == {0: "a", 2: "b"}        # 3 waits for c too (not read: no loss)
    acts = g.leave("b", 1)
    for a in acts:
        assert isinstance(a, Revoke) and a.member == "b"
        g.revoked("b", a.partition, a.epoch)
    assert owners(g) == {0: "a"} and g.deadline() == 20     # 1 held for c, 2, 3 till c's back
    acts = g.join("c", None, 2)
    assert Assign(1, "c", (7 << 32) + 1) in acts
    assert set(owners(g)) == {0, 1, 2, 3} and owners(g)[0] == "a" and g.deadline() is None


def test_a_new_group_is_assigned_once_the_workers_say_nobody_reads_it():
    g = taken_over(2)
    assert g.join("a", None, 0) == []
    assert g.adopt({}, {"a"}, 0) == [Assign(0, "a", (7 << 32) + 1),
                                     Assign(1, "a", (7 << 32) + 1)]
    assert g.deadline() is None


def test_a_partition_whose_reader_is_unknown_waits_for_every_member_with_a_share():
    # partition 0's leader moved with the coordinator: its new leader knows no reader
    g = taken_over(2)
    first = (7 << 32) + 1
    assert g.join("a", None, 0) == []
    assert g.adopt({1: "b"}, {"a", "b"}, 0) == []     # 0 not to a before b is back
    assert g.join("b", None, 1) == [Assign(0, "a", first), Assign(1, "b", first)]
    assert g.deadline() is None


def test_a_member_that_leaves_before_joining_again_is_not_waited_for():
    g = taken_over(2)
    first = (7 << 32) + 1
    g.join("a", None, 0)
    g.adopt({1: "b"}, {"a", "b"}, 0)
    assert g.leave("b", 1) == [Assign(0, "a", first), Assign(1, "a", first)]
