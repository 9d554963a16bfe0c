"""Delivery acknowledgement timeouts: RabbitMQ's ``consumer_timeout``.

A channel that keeps a delivery (to a consumer, or a ``basic.get`` in manual-ack mode)
unacknowledged longer than its queue's timeout is closed with 406 PRECONDITION_FAILED, and
its unacked deliveries go back to their queues, flagged redelivered, as RabbitMQ does. The
timeout is RabbitMQ 3.12's: the lower of the queue's ``x-consumer-timeout`` argument and its
policy's ``consumer-timeout`` where either is set (``policies.RESOLVE`` puts it in the queue's
effective arguments), else the broker's ``--consumer-timeout`` (30 minutes, as RabbitMQ's
default; 0 = never). Measured against RabbitMQ 3.10.8 (which has the broker-wide setting
only): the close's text, and ``basic.get`` deliveries counted as consumers' are.

RabbitMQ looks at each channel's oldest unacked delivery once per channel tick (60 s). This
looks once a second, without a clock reading per delivery (the hot path stays as it is): each
tick notes, per channel holding deliveries, the channel's next delivery tag and the time —
every tag below it was delivered before then. The oldest unacked tag was delivered before
the time of the first note above it, so a channel is closed at most about a tick late, never
early. The notes of a channel are halved when there are more than ``MAX_NOTES`` (a delivery
that stays unacked while others flow), so the lateness grows to a few percent of the timeout
at most, and the memory stays bounded.
"""
from __future__ import annotations

import logging
from collections import deque

from .. import errors

log = logging.getLogger("amqpbroker.channel")

TICK = 1.0          # seconds between looks
MAX_NOTES = 64      # (next tag, time) notes kept per channel


def timeout_of(q, default_ms: int) -> int | None:
    """The queue's delivery acknowledgement timeout in ms, or None: none."""
    value = q.effective.get("x-consumer-timeout")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return default_ms or None


class AckTimeouts:
    """Once a tick, closes the channels of ``server``'s sessions whose oldest unacked
    delivery is older than its queue's timeout."""

    def __init__(self, server):
        self.server = server
        self.notes: dict = {}           # Channel -> deque of (next tag, loop time)
        self._timer = None

    def start(self) -> None:
        if self._timer is None:
            self._timer = self.server.broker.loop.call_later(TICK, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        broker = self.server.broker
        now = broker.loop.time()
        default = broker.config.consumer_timeout
        notes, self.notes = self.notes, {}
        for session in list(self.server.sessions):
            for ch in list(session.channels.values()):
                if ch.unacked and not ch.closed:
                    kept = self._look(ch, notes.get(ch), now, default)
                    if kept is not None:
                        self.notes[ch] = kept
        self._timer = broker.loop.call_later(TICK, self._tick)

    def _look(self, ch, kept: deque | None, now: float, default: int) -> deque | None:
        """The channel's notes after this tick, or None when it was closed."""
        if kept is None:
            kept = deque()
        if not kept or kept[-1][0] != ch.next_tag:
            kept.append((ch.next_tag, now))
            if len(kept) > MAX_NOTES:       # every other one, the first and the last kept
                kept = deque([*list(kept)[:-1:2], kept[-1]])
        oldest = next(iter(ch.unacked))
        while kept[0][0] <= oldest:         # notes of tags all settled
            kept.popleft()
        q, _, consumer, _ = ch.unacked[oldest]
        timeout = timeout_of(q, default)
        if timeout is None or (now - kept[0][1]) * 1000 < timeout:
            return kept
        self._time_out(ch, oldest, q, consumer, timeout)
        return None

    @staticmethod
    def _time_out(ch, tag: int, q, consumer, timeout: int) -> None:
        session = ch.session
        ctag = consumer.tag if consumer is not None else "basic.get"
        log.warning("Consumer '%s' on channel %d and queue '%s' in vhost '%s' has timed out "
                    "waiting for a consumer acknowledgement of a delivery with delivery tag "
                    "= %d. Timeout used: %d ms. This timeout value can be configured, see "
                    "consumers doc guide to learn more", ctag, ch.number, q.name, q.vhost.name,
                    tag, timeout, extra=session.log_context())
        session.close_channel(ch.number, errors.PreconditionFailed(
            f"delivery acknowledgement on channel {ch.number} timed out. Timeout value used: "
            f"{timeout} ms. This timeout value can be configured, see consumers doc guide to "
            f"learn more", 0, 0))
