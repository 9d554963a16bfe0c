"""The bookkeeping of at-least-once dead letters (worker/discards.py) on a clock of its own:
a window of PREFETCH out at a time, refilled by settles in the order they died, each out
for the confirm timeout sent again, none sent while the copy may not send, and the count log
marks that carry them across a restart."""
from __future__ import annotations

from types import SimpleNamespace

from amqpbroker.worker import discards as dlx


class Harness:
    def __init__(self, timeout: float = 10.0):
        self.clock = 0.0
        self.sent: list[tuple[int, str]] = []
        self.may_send = True
        self.unreadable: set[int] = set()
        self.d = dlx.Discards(self.send, self.read, lambda: self.clock, timeout)

    def send(self, offset, record, reason) -> bool:
        if not self.may_send:
            return False
        assert record == f"rec{offset}"
        self.sent.append((offset, reason))
        return True

    def read(self, offset):
        return None if offset in self.unreadable else f"rec{offset}"


def test_a_window_of_prefetch_goes_and_settles_refill_it_in_order():
    h = Harness()
    for offset in range(dlx.PREFETCH + 5):
        h.d.add(offset, "rejected", 10, f"rec{offset}")
    assert [o for o, _ in h.sent] == list(range(dlx.PREFETCH))
    assert len(h.d) == dlx.PREFETCH + 5 and h.d.bytes == 10 * (dlx.PREFETCH + 5)
    assert h.d.settle([0, 1, 999]) == [0, 1]           # 999 was never held
    assert [o for o, _ in h.sent[dlx.PREFETCH:]] == [dlx.PREFETCH, dlx.PREFETCH + 1]
    assert h.d.settle([0]) == []                       # an answer to a second send
    assert len(h.d) == dlx.PREFETCH + 3


def test_what_is_out_for_the_timeout_is_sent_again_and_nothing_sooner():
    h = Harness(timeout=10.0)
    h.d.add(5, "expired", 3, "rec5")
    h.clock = 4.0
    h.d.add(6, "expired", 3, "rec6")
    h.clock = 9.9
    assert abs(h.d.resend_due() - 0.1) < 1e-9 and len(h.sent) == 2 == len(set(h.sent))
    h.clock = 10.0
    assert h.d.resend_due() == 4.0                     # 6 is due at 14
    assert [o for o, _ in h.sent] == [5, 6, 5]
    h.d.settle([5, 6])
    assert h.d.resend_due() is None and not h.d.bytes


def test_a_copy_that_may_not_send_keeps_them_and_sends_when_it_may():
    h = Harness(timeout=10.0)
    h.may_send = False                  # a follower's copy: its leader sends
    h.d.add(1, "rejected", 1, "rec1")
    h.d.add(2, "delivery_limit", 1, "rec2")
    assert h.sent == [] and list(h.d.unsent) == [1, 2]
    assert h.d.resend_due() == 10.0                    # no busy retry
    h.may_send = True                   # it leads now
    h.d.pump()
    assert h.sent == [(1, "rejected"), (2, "delivery_limit")] and not h.d.unsent


def test_one_that_cannot_be_read_yet_is_looked_at_again_soon():
    h = Harness()
    h.unreadable.add(3)
    h.d.add(3, "rejected", 1)           # recovered: no record at hand
    h.d.pump()
    assert h.sent == [] and h.d.unreadable
    assert h.d.resend_due() == 0.05
    h.unreadable.clear()
    assert h.d.resend_due() == 10.0 and h.sent == [(3, "rejected")]


def test_switched_off_every_held_one_is_handed_back_to_settle():
    h = Harness()
    for offset in range(40):
        h.d.add(offset, "rejected", 2, f"rec{offset}")
    assert h.d.take_all() == list(range(40))
    assert not len(h.d) and not h.d.bytes and not h.d.sent and not h.d.unsent
    assert h.d.resend_due() is None


def test_the_count_log_marks_name_their_reason_and_are_not_counts():
    for reason in dlx.REASONS:
        assert dlx.reason_of(dlx.marker(reason)) == reason
    assert dlx.reason_of(0) is None and dlx.reason_of(20) is None     # delivery counts
    assert dlx.marker("rejected") > 2 ** 31 - 1 and dlx.marker("maxlen") < 2 ** 32


def args(strategy="at-least-once", dlx_name="dlx", overflow="reject-publish"):
    return SimpleNamespace(dl_strategy=strategy, dlx=dlx_name, overflow=overflow)


def test_it_applies_only_with_an_exchange_and_reject_publish_and_says_why_not():
    assert dlx.applies(args()) and dlx.strategy_warning(args()) is None
    assert not dlx.applies(args(strategy="at-most-once"))
    assert dlx.strategy_warning(args(strategy="at-most-once")) is None
    assert not dlx.applies(args(overflow="drop-head"))
    assert "incompatible with effective overflow strategy drop-head" in \
        dlx.strategy_warning(args(overflow="drop-head"))
    assert not dlx.applies(args(dlx_name=None))
    assert "because dead-letter-exchange is not configured" in \
        dlx.strategy_warning(args(dlx_name=None))


def test_the_confirm_timeout_is_never_below_a_tenth_of_a_second():
    assert dlx.timeout_s(SimpleNamespace(dead_letter_confirm_timeout=180000)) == 180.0
    assert dlx.timeout_s(SimpleNamespace(dead_letter_confirm_timeout=0)) == 0.1
