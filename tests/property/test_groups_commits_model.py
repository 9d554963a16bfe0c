"""CommitTracker against a model that keeps the fate of every offset.

The model says, for each offset from the first commit on, what happened to it last: delivered
(in flight), acked, requeued, skipped, or nothing yet. The committed offset must be exactly the
first offset, from where the group resumed, that is not acked or skipped: never past an unacked
delivery (nothing lost), never behind a contiguous run of acks (nothing redelivered that need
not be). Revokes restart reading at the commit; retention clamps it.
"""
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from amqpbroker.groups.commits import CommitTracker

DONE = ("acked", "skipped")


class CommitModel(RuleBasedStateMachine):
    @initialize(start=st.integers(0, 20), log_start=st.integers(0, 25))
    def begin(self, start, log_start):
        self.tracker = CommitTracker(start, log_start)
        expected = max(start, log_start)
        assert self.tracker.fell_back_from == (start if start < log_start else None)
        self.base = expected            # offsets below are outside the model
        self.fate: dict[int, str] = {}
        self.position = expected
        self.last_commit = expected

    def model_commit(self):
        o = self.base
        while self.fate.get(o) in DONE:
            o += 1
        return min(o, self.position)

    @rule()
    def deliver_next(self):
        o = self.tracker.next_offset()
        requeued = [x for x, f in self.fate.items() if f == "requeued"]
        assert o == (min(requeued) if requeued else self.position)
        self.tracker.deliver(o)
        self.fate[o] = "inflight"
        self.position = max(self.position, o + 1)

    @rule(gap=st.integers(1, 4))
    def deliver_after_skipping(self, gap):
        o = self.position + gap
        self.tracker.deliver(o)
        for x in range(self.position, o):
            self.fate[x] = "skipped"
        self.fate[o] = "inflight"
        self.position = o + 1

    @rule(gap=st.integers(0, 3))
    def skip_to(self, gap):
        self.tracker.skip_to(self.position + gap)
        for x in range(self.position, self.position + gap):
            self.fate[x] = "skipped"
        self.position += gap

    @precondition(lambda self: any(f == "inflight" for f in self.fate.values()))
    @rule(data=st.data())
    def ack(self, data):
        inflight = sorted(o for o, f in self.fate.items() if f == "inflight")
        chosen = data.draw(st.lists(st.sampled_from(inflight), min_size=1, unique=True))
        stale = data.draw(st.lists(st.integers(0, self.position + 3), max_size=2))
        stale = [o for o in stale if self.fate.get(o) != "inflight"]
        assert self.tracker.ack(chosen + stale) == len(chosen)
        for o in chosen:
            self.fate[o] = "acked"

    @precondition(lambda self: any(f == "inflight" for f in self.fate.values()))
    @rule(data=st.data())
    def requeue(self, data):
        inflight = sorted(o for o, f in self.fate.items() if f == "inflight")
        chosen = data.draw(st.lists(st.sampled_from(inflight), min_size=1, unique=True))
        assert self.tracker.requeue(chosen) == len(chosen)
        for o in chosen:
            self.fate[o] = "requeued"

    @rule()
    def revoke(self):
        commit = self.model_commit()
        owed = sum(1 for f in self.fate.values() if f in ("inflight", "requeued"))
        assert self.tracker.revoke() == owed
        for o in list(self.fate):
            if o >= commit:
                del self.fate[o]        # read again from the commit: fates start over
        self.position = commit
        assert self.tracker.next_offset() == commit

    @rule(ahead=st.integers(0, 6))
    def retention(self, ahead):
        log_start = self.base + ahead
        commit = self.model_commit()
        fell = self.tracker.clamp(log_start)
        if commit < log_start:
            assert fell == commit
            self.fate = {o: f for o, f in self.fate.items() if o >= log_start}
            self.base = log_start
            self.position = max(self.position, log_start)
        else:
            assert fell is None

    @invariant()
    def commit_matches_model(self):
        if not hasattr(self, "tracker"):
            return
        commit = self.model_commit()
        assert self.tracker.committed == commit
        assert all(self.fate.get(o) in DONE for o in range(self.base, commit))
        assert commit >= self.last_commit           # it never goes back
        self.last_commit = commit
        taken = self.tracker.take_commit()
        assert taken in (None, commit)
        assert self.tracker.take_commit() is None
        assert self.tracker.unsettled() == sorted(
            o for o, f in self.fate.items() if f in ("inflight", "requeued"))


TestCommits = CommitModel.TestCase
TestCommits.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
