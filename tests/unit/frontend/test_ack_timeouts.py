"""The delivery acknowledgement timeout's looks (``frontend/ack_timeouts.py``), tick by tick
on a clock of our own: a channel is never closed before its oldest unacked delivery is as
old as the timeout, at most a little after, and its notes stay bounded however long a
delivery stays unacked while others flow."""
from __future__ import annotations

from types import SimpleNamespace

from amqpbroker.frontend.ack_timeouts import MAX_NOTES, AckTimeouts


class Looks(AckTimeouts):
    """``_look`` as the tick calls it; a timeout is recorded instead of closing a channel."""

    def __init__(self):
        super().__init__(server=None)
        self.closed: list = []

    def _time_out(self, ch, tag, q, consumer, timeout) -> None:
        self.closed.append(tag)


QUEUE = SimpleNamespace(effective={}, name="q", vhost=SimpleNamespace(name="/"))


class Deliveries:
    """A channel's delivery tags and unacked deliveries, with the time each went out."""

    def __init__(self):
        self.next_tag = 1
        self.unacked: dict = {}
        self.sent_at: dict = {}

    def deliver(self, now: float) -> int:
        tag = self.next_tag
        self.next_tag += 1
        self.unacked[tag] = (QUEUE, tag, None, 0)
        self.sent_at[tag] = now
        return tag

    def ack(self, tag: int) -> None:
        del self.unacked[tag]


def run(ch: Deliveries, looks: Looks, timeout_ms: int, seconds: int, each_tick=None):
    """Tick once a second from 0.5 s for ``seconds``; (time closed or None, most notes)."""
    kept, most = None, 0
    for i in range(seconds):
        now = i + 0.5
        if each_tick is not None:
            each_tick(now)
        if ch.unacked:
            kept = looks._look(ch, kept, now, timeout_ms)
            if kept is None:
                return now, most
            most = max(most, len(kept))
    return None, most


def test_a_stuck_delivery_while_others_flow_is_closed_on_time_with_bounded_notes():
    ch, looks = Deliveries(), Looks()
    stuck = ch.deliver(0.2)
    flowing = []

    def each_tick(now):            # every second one more delivery, acked the next second
        for tag in flowing:
            ch.ack(tag)
        flowing[:] = [ch.deliver(now - 0.1)]
    closed, most = run(ch, looks, 600_000, 2000, each_tick)
    assert looks.closed == [stuck]
    age = closed - ch.sent_at[stuck]
    assert 600 <= age <= 600 * (1 + 4 / MAX_NOTES), age      # never early, a little late
    assert most <= MAX_NOTES


def test_the_next_oldest_counts_from_its_own_delivery_not_from_the_first_ones_ack():
    ch, looks = Deliveries(), Looks()
    first, second = ch.deliver(0.1), ch.deliver(0.2)

    def each_tick(now):
        if now == 100.5:
            ch.ack(first)          # acked in time; the second was delivered with it
    closed, _ = run(ch, looks, 120_000, 400, each_tick)
    assert looks.closed == [second]
    assert 120 <= closed - ch.sent_at[second] <= 122


def test_deliveries_acked_in_time_are_never_closed():
    ch, looks = Deliveries(), Looks()
    last = []

    def each_tick(now):
        for tag in last:
            ch.ack(tag)
        last[:] = [ch.deliver(now)]
    closed, most = run(ch, looks, 5_000, 600, each_tick)
    assert closed is None and looks.closed == [] and most <= 2
