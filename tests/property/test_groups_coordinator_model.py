"""ConsumerGroup (KIP-848 reconciliation) driven by random join / leave / revoked / tick
sequences, with a model of the workers that carry out its actions.

The model holds what the workers would be doing: `live` (partition -> the member it is being
delivered to) and `pending` (revocations not yet answered). Checked on every action:
- an Assign comes only for a partition nobody is delivering, and, if its last owner's
  revocation was never answered, only once that owner's grace period has passed (never two
  live owners);
- a Revoke names the member and epoch actually delivering the partition;
- Assigns go to connected members only.
When the test stops disturbing the group and answers every revocation, the group settles
balanced; a static member that bounces within its session timeout gets back exactly its
partitions and nobody else notices.
"""
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from amqpbroker.groups.coordinator import Assign, ConsumerGroup, InstanceIdInUse, Revoke, \
    member_key

GRACE = 5.0
SESSION = 20.0


class GroupModel(RuleBasedStateMachine):
    @initialize(n=st.integers(0, 9))
    def start(self, n):
        self.group = ConsumerGroup("billing", range(n), revoke_grace=GRACE,
                                   session_timeout=SESSION)
        self.now = 0.0
        self.ids = 0
        self.live: dict[int, tuple[str, int]] = {}
        self.pending: dict[int, tuple[str, int, float]] = {}   # p -> (member, epoch, revoked at)
        self.connected: dict[str, str | None] = {}             # member id -> instance id

    # -- carrying out actions, checking each -----------------------------------------------------
    def apply(self, actions):
        for a in actions:
            if isinstance(a, Revoke):
                assert self.live.pop(a.partition) == (a.member, a.epoch)
                self.pending[a.partition] = (a.member, a.epoch, self.now)
            else:
                assert isinstance(a, Assign)
                assert a.partition not in self.live, "two live owners"
                if a.partition in self.pending:
                    _, _, at = self.pending.pop(a.partition)
                    assert self.now >= at + GRACE, "assigned before the revocation completed"
                assert a.member in self.connected
                self.live[a.partition] = (a.member, a.epoch)
        return actions

    def new_id(self):
        self.ids += 1
        return f"c{self.ids}"

    # -- disturbances ----------------------------------------------------------------------------
    @rule()
    def join(self):
        m = self.new_id()
        self.connected[m] = None
        self.apply(self.group.join(m, None, self.now))

    @rule(instance=st.sampled_from(["s1", "s2", "s3"]))
    def join_static(self, instance):
        m = self.new_id()
        if instance in self.connected.values():
            try:
                self.group.join(m, instance, self.now)
            except InstanceIdInUse:
                return
            raise AssertionError("a second connected member got the same instance id")
        self.connected[m] = instance
        self.apply(self.group.join(m, instance, self.now))

    @precondition(lambda self: self.connected)
    @rule(data=st.data(), permanent=st.booleans())
    def leave(self, data, permanent):
        m = data.draw(st.sampled_from(sorted(self.connected)))
        del self.connected[m]
        self.apply(self.group.leave(m, self.now, permanent=permanent))

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def revoked(self, data):
        p = data.draw(st.sampled_from(sorted(self.pending)))
        member, epoch, _ = self.pending.pop(p)
        self.apply(self.group.revoked(member, p, epoch))

    @rule(p=st.integers(0, 9), epoch=st.integers(0, 6), data=st.data())
    def stale_revoked(self, p, epoch, data):
        member = data.draw(st.sampled_from(sorted(self.connected) + ["nobody"]))
        if self.pending.get(p, (None, None))[:2] == (member, epoch):
            return
        before = (self.group.delivering(), self.group.revoking())
        assert self.group.revoked(member, p, epoch) == []
        assert (self.group.delivering(), self.group.revoking()) == before

    @rule(dt=st.sampled_from([0.5, 3.0, GRACE, 12.0, SESSION + 1]))
    def tick(self, dt):
        self.now += dt
        self.apply(self.group.tick(self.now))

    @rule(extra=st.integers(1, 3))
    def add_partitions(self, extra):
        n = len(self.group.partitions)
        self.apply(self.group.set_partitions(range(n + extra), self.now))

    @precondition(lambda self: any(i is not None for i in self.connected.values()))
    @rule(data=st.data())
    def bounce_static(self, data):
        """Connection loss and reconnect within the session timeout: the member gets back
        exactly its partitions and no other member sees an action."""
        old = data.draw(st.sampled_from(sorted(m for m, i in self.connected.items() if i)))
        instance = self.connected.pop(old)
        target = dict(self.group.target)
        had = {p for p, (m, _) in self.live.items() if m == old}
        actions = self.apply(self.group.leave(old, self.now))
        assert {(a.partition, a.member) for a in actions} == {(p, old) for p in had}
        assert all(isinstance(a, Revoke) for a in actions)
        for p in sorted(had):
            member, epoch, _ = self.pending.pop(p)
            self.apply(self.group.revoked(member, p, epoch))
        new = self.new_id()
        self.connected[new] = instance
        self.now += SESSION / 2                  # back within the session timeout
        actions = self.apply(self.group.join(new, instance, self.now))
        assert all(isinstance(a, Assign) and a.member == new for a in actions)
        assert {a.partition for a in actions} == had
        assert self.group.target == target

    # -- invariants ------------------------------------------------------------------------------
    @invariant()
    def agrees_with_the_workers(self):
        if not hasattr(self, "group"):
            return
        assert self.group.delivering() == self.live
        assert set(self.group.members()) == set(self.connected)
        revoking = self.group.revoking()
        assert set(revoking) <= set(self.pending)    # the model still waits on grace-expired ones
        assert not set(revoking) & set(self.live)

    def teardown(self):
        if not hasattr(self, "group"):
            return
        # quiet: answer every revocation until nothing more happens
        self.settle()
        self.check_balanced(include_reserved=True)
        # past every session timeout and grace: the reservations end, the group rebalances
        self.now += SESSION + GRACE + 1
        self.apply(self.group.tick(self.now))
        self.settle()
        assert self.group.deadline() is None
        self.check_balanced(include_reserved=False)

    def settle(self):
        for _ in range(100):
            if not self.pending:
                return
            for p in sorted(self.pending):
                if p in self.pending:
                    member, epoch, _ = self.pending.pop(p)
                    self.apply(self.group.revoked(member, p, epoch))
        raise AssertionError("never settled")

    def check_balanced(self, include_reserved):
        keys = {member_key(m, i) for m, i in self.connected.items()}
        if include_reserved:
            keys |= {member_key("", i) for i in self.group.reserved()}
        else:
            assert not self.group.reserved()
        target = self.group.target
        if not keys:
            assert target == {} and self.live == {}
            return
        assert set(target) == set(self.group.partitions)
        counts = [sum(1 for k in target.values() if k == key) for key in keys]
        assert max(counts) - min(counts) <= 1
        key_of = {m: member_key(m, i) for m, i in self.connected.items()}
        for p in self.group.partitions:
            if target[p] in key_of.values():       # a connected owner: it is delivering p
                assert p in self.live and key_of[self.live[p][0]] == target[p]
            else:                                  # reserved for an absent static member
                assert p not in self.live


TestGroup = GroupModel.TestCase
TestGroup.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
