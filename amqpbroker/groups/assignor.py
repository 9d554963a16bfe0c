"""The uniform, sticky assignor of Kafka's new consumer-group protocol (KIP-848), server side.

Theory of operation
-------------------
A group has partitions P and members M; an assignment maps every partition to one member.
The assignor is a pure function (partitions, members, current assignment) -> target
assignment, which the coordinator (coordinator.py) then reaches step by step (revoke before
assign). Four rules, checked by tests/property/test_groups_assignor.py:

1. Balanced: with n partitions and m members, every member gets n // m or n // m + 1, and
   exactly n % m members get the larger quota.
2. Complete: while there is a member, every partition has exactly one owner.
3. Sticky (minimal movement): a partition changes owner only if its owner left the group or
   holds more than its quota. Which members get the n % m larger quotas is itself chosen to
   move least: members that already hold more than n // m get them first, so the number of
   moved partitions (partitions whose owner stays in the group but changes) is exactly the
   lower bound  sum(max(0, held - n//m)) - min(n % m, #members holding more than n//m).
4. Deterministic: the same inputs give the same output, whatever the order of the inputs
   (everything is sorted), so a restarted coordinator computes the same target.

The algorithm is Kafka's `UniformAssignor` (optimized, "sticky" branch) reduced to one topic:
keep each member's partitions up to its quota (the lowest-numbered ones, for determinism),
put the rest and the orphans (owner gone) into a pool, and hand the pool out in partition
order to members below quota in member order. O((n + m) log(n + m)).

Members are named by their *key*: the static instance id (`x-group-instance-id`, KIP-345) when
the member has one, else its member id. A static member that reconnects under a new member id
thus still owns what its key owned, and stickiness keeps it there. The coordinator does the
translation; here a member is just a sortable string.
"""
from __future__ import annotations

from typing import Iterable, Mapping


def quotas(n_partitions: int, members: Iterable[str], current: Mapping[int, str]) -> dict[str, int]:
    """Each member's quota: n // m, plus one for n % m of them, chosen among those holding the
    most of their current partitions (ties by key), so the fewest partitions move."""
    keys = sorted(set(members))
    if not keys:
        return {}
    base, extra = divmod(n_partitions, len(keys))
    held = {k: 0 for k in keys}
    for owner in current.values():
        if owner in held:
            held[owner] += 1
    by_holding = sorted(keys, key=lambda k: (-held[k], k))
    return {k: base + (1 if i < extra else 0) for i, k in enumerate(by_holding)}


def assign(partitions: Iterable[int], members: Iterable[str],
           current: Mapping[int, str]) -> dict[int, str]:
    """The target assignment {partition: member key}; empty when there are no members.

    `current` may name partitions no longer in the group and members that left; both are
    ignored (their partitions are orphans, handed out like any other).
    """
    parts = sorted(set(partitions))
    wanted = set(parts)
    quota = quotas(len(parts), members, {p: o for p, o in current.items() if p in wanted})
    if not quota:
        return {}
    kept: dict[str, list[int]] = {k: [] for k in quota}
    pool: list[int] = []
    for p in parts:
        owner = current.get(p)
        if owner in kept and len(kept[owner]) < quota[owner]:
            kept[owner].append(p)   # parts are in order: each member keeps its lowest ones
        else:
            pool.append(p)
    target = {p: k for k, ps in kept.items() for p in ps}
    it = iter(pool)
    for k in sorted(quota):
        for _ in range(quota[k] - len(kept[k])):
            target[next(it)] = k
    return target


def moved(current: Mapping[int, str], target: Mapping[int, str]) -> list[int]:
    """Partitions whose owner is still a member but changes (the cost stickiness minimizes)."""
    members = set(target.values())
    return sorted(p for p, o in current.items()
                  if o in members and p in target and target[p] != o)
