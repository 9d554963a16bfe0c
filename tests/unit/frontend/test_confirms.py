"""The confirm tracker against a model: every publish is confirmed exactly once, in order,
only when every host it waits for has passed it, as a nack iff a host refused it."""
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpbroker.frontend.confirms import Confirms


class Host:
    """What the tracker asks of a partition client: its watermark and the numbers refused."""

    def __init__(self):
        self.issued = 0
        self.done = 0
        self.nacked: set[int] = set()

    def reached(self, n):
        return self.done >= n

    def take_nack(self, n):
        if n in self.nacked:
            self.nacked.discard(n)
            return True
        return False


def expand(settled, last):
    """(seq, multiple, ack) actions -> {seq: ack} for every seq they newly cover, after
    ``last`` (a multiple ack covers what is not confirmed yet, as a client reads it)."""
    out = {}
    for seq, multiple, ack in settled:
        assert seq > last, "confirms never go backwards"
        for s in (range(last + 1, seq + 1) if multiple else [seq]):
            out[s] = ack
        last = seq
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("publish"), st.sets(st.integers(0, 2), max_size=3),
              st.sets(st.integers(0, 2), max_size=3)),
    st.tuples(st.just("advance"), st.integers(0, 2), st.integers(0, 3))), max_size=40))
def test_confirms_follow_the_model(steps):
    hosts = [Host() for _ in range(3)]
    confirms = Confirms()
    waits = {}                    # seq -> [(host, n)]
    refused = set()               # seqs some host refused
    confirmed = {}
    for step in steps:
        if step[0] == "publish":
            _, to, refuse = step
            tickets = []
            for h in sorted(to):
                hosts[h].issued += 1
                n = hosts[h].issued
                tickets.append((hosts[h], n))
                if h in refuse:
                    hosts[h].nacked.add(n)
            seq = confirms.insert(tickets)
            waits[seq] = tickets
            if any(h in refuse for h in to):
                refused.add(seq)
        else:
            _, h, by = step
            host = hosts[step[1]]
            host.done = min(host.issued, host.done + by)
        got = expand(confirms.take_settled(), len(confirmed))
        for seq, ack in got.items():
            assert seq not in confirmed, "confirmed twice"
            assert all(host.reached(n) for host, n in waits[seq])
            assert ack == (seq not in refused)
        confirmed.update(got)
        # in order: everything confirmed is a prefix of the publishes
        assert sorted(confirmed) == list(range(1, len(confirmed) + 1))
        # nothing settled is left waiting at the head
        head = len(confirmed) + 1
        if head in waits:
            assert not all(host.reached(n) for host, n in waits[head])
    for host in hosts:
        host.done = host.issued
    confirmed.update(expand(confirms.take_settled(), len(confirmed)))
    assert sorted(confirmed) == sorted(waits)
    assert {s for s, ack in confirmed.items() if not ack} == refused
    assert not confirms


def test_consecutive_acks_collapse_and_a_nack_stands_alone():
    a = Host()
    confirms = Confirms()
    for i in range(1, 5):
        a.issued = i
        confirms.insert([(a, i)])
    a.nacked.add(3)
    a.done = 4
    assert confirms.take_settled() == [(2, True, True), (3, False, False), (4, False, True)]
