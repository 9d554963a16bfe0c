"""The KIP-848 uniform assignor against its rules: balanced, complete, sticky to the movement
lower bound, deterministic, and stable (assigning its own output again moves nothing)."""
import random

from hypothesis import given
from hypothesis import strategies as st

from amqpbroker.groups.assignor import assign, moved

member_names = st.sampled_from([f"m{i}" for i in range(12)])


@st.composite
def groups(draw):
    partitions = draw(st.sets(st.integers(0, 40), max_size=30))
    members = draw(st.sets(member_names, max_size=8))
    # the current assignment may name departed members and partitions no longer in the group
    current = draw(st.dictionaries(st.integers(0, 45), member_names, max_size=35))
    return partitions, members, current


def lower_bound(partitions, members, current):
    """Fewest partitions that must leave a member still in the group, for any balanced
    assignment: each member above n//m gives up its excess, except n % m of them keep one."""
    if not members:
        return 0
    base, extra = divmod(len(partitions), len(members))
    held = {m: 0 for m in members}
    for p, o in current.items():
        if p in partitions and o in held:
            held[o] += 1
    over = sum(max(0, h - base) for h in held.values())
    return over - min(extra, sum(1 for h in held.values() if h > base))


@given(groups())
def test_balanced_and_complete(group):
    partitions, members, current = group
    target = assign(partitions, members, current)
    if not members:
        assert target == {}
        return
    assert set(target) == partitions                    # every partition, exactly one owner
    assert set(target.values()) <= members
    counts = [sum(1 for o in target.values() if o == m) for m in members]
    assert max(counts) - min(counts) <= 1


@given(groups())
def test_moves_only_from_departed_or_over_quota_owners(group):
    partitions, members, current = group
    target = assign(partitions, members, current)
    if not members:
        return
    base = len(partitions) // len(members)
    for p in moved(current, target):
        owner = current[p]
        kept = sum(1 for o in target.values() if o == owner)
        held = sum(1 for q, o in current.items() if o == owner and q in partitions)
        # it lost this one only because it held more than its quota, and it keeps its quota
        assert held > kept >= base
    # and nothing beyond the lower bound moved
    assert len(moved({p: o for p, o in current.items() if p in partitions}, target)) \
        == lower_bound(partitions, members, current)


@given(groups(), st.randoms(use_true_random=False))
def test_deterministic_whatever_the_input_order(group, rnd):
    partitions, members, current = group
    target = assign(partitions, members, current)
    shuffled_parts = list(partitions)
    shuffled_members = list(members)
    rnd.shuffle(shuffled_parts)
    rnd.shuffle(shuffled_members)
    items = list(current.items())
    rnd.shuffle(items)
    assert assign(shuffled_parts, shuffled_members, dict(items)) == target


@given(groups())
def test_stable_once_balanced(group):
    partitions, members, current = group
    target = assign(partitions, members, current)
    assert assign(partitions, members, target) == target


def test_join_and_leave_move_the_minimum():
    parts = range(6)
    a = assign(parts, ["a", "b"], {})
    assert sorted(a.values()).count("a") == 3
    b = assign(parts, ["a", "b", "c"], a)
    assert len(moved(a, b)) == 2                       # one from each of a and b to c
    assert sum(1 for o in b.values() if o == "c") == 2
    c = assign(parts, ["a", "c"], b)                   # b leaves: only b's two move
    assert {p for p in parts if c[p] != b[p]} == {p for p in parts if b[p] == "b"}
    assert assign(parts, [], c) == {}


def test_random_large_group_is_fast_and_balanced():
    rnd = random.Random(7)
    parts = range(5000)
    members = [f"m{i}" for i in range(97)]
    current = {p: rnd.choice(members + ["gone"]) for p in parts}
    target = assign(parts, members, current)
    counts = {m: 0 for m in members}
    for o in target.values():
        counts[o] += 1
    assert set(counts.values()) <= {51, 52} and len(target) == 5000
