"""At-least-once dead-lettering of a quorum queue: RabbitMQ's ``rabbit_fifo_dlx``.

Theory of operation
-------------------
A quorum queue whose messages die (rejected without requeue, expired, over its delivery
limit) normally hands them to the supervisor to route through its dead-letter exchange and
forgets them: *at most once* — a dead letter with no route, or refused by a full target, is
gone. With ``x-dead-letter-strategy: at-least-once`` (queue argument or policy key
``dead-letter-strategy``) and ``x-overflow: reject-publish`` and a dead-letter exchange, the
queue keeps each dead message, its *discard*, until every queue it was routed to has
confirmed it, as RabbitMQ 3.10+ does. (With any other overflow RabbitMQ falls back to
at-most-once and logs why: so do we. Classic queues and streams have no such strategy.)

* A discard is neither ready nor unacknowledged: no consumer gets it. It stays in the
  queue's log, unsettled, and counts toward ``x-max-length`` / ``x-max-length-bytes`` (so
  a dead-letter target that never takes them ends up blocking the queue's publishers with
  nacks, rather than growing without bound), and in the management API's ``messages``,
  ``messages_dlx``, ``message_bytes_dlx``.
* Its state survives a restart and a leader change: the queue's delivery-count log
  (storage/countlog.py, fsynced in the queue's commit rounds and replicated to followers)
  holds ``DISCARDED | reason`` for its offset; recovery puts those offsets here instead of
  in the ready list.
* Sending: up to PREFETCH discards are out at a time (RabbitMQ's
  ``dead_letter_worker_consumer_prefetch``, 32), each as a ``Dlx`` event with ``settle`` to
  the supervisor, which routes it like any dead letter, publishes each copy tracked, and
  answers ``DlxSettle`` once every target confirmed (frontend/dead_letter_confirms.py). No
  route, a missing exchange, a refused copy: no answer. A discard out for longer than the
  confirm timeout (``--dead-letter-confirm-timeout``, RabbitMQ's
  ``dead_letter_worker_publisher_confirm_timeout``, 180 s) is sent again — so a target
  may get a message twice (at least once), never zero times.
* Settling removes it from the queue as an ack does.
* The strategy switched off (a policy, a redeclare is refused) while discards are held: they
  are deleted and the count logged, as RabbitMQ's ``rabbit_fifo_dlx:switch_from``.

This module is pure bookkeeping over the queue's callbacks; the timer is the host loop's.
"""
from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger("amqpbroker.queue")

PREFETCH = 32
DISCARDED = 1 << 31                     # a count log value with this bit: a discard
REASONS = ("rejected", "expired", "delivery_limit", "maxlen")
CODES = {reason: i + 1 for i, reason in enumerate(REASONS)}


MIN_TIMEOUT_MS = 100


def timeout_s(config) -> float:
    """The confirm timeout in seconds (``--dead-letter-confirm-timeout``), at least
    MIN_TIMEOUT_MS: 0 would send them again without end."""
    return max(config.dead_letter_confirm_timeout, MIN_TIMEOUT_MS) / 1000


def marker(reason: str) -> int:
    """The count log value that says "discarded for ``reason``"."""
    return DISCARDED | CODES[reason]


def reason_of(value: int) -> str | None:
    """The reason a count log value says its message was discarded for (None: not one)."""
    if not value & DISCARDED:
        return None
    code = value & 0xFF
    return REASONS[code - 1] if 0 < code <= len(REASONS) else "rejected"


def applies(args) -> bool:
    """Whether a quorum queue with these QueueArgs dead-letters at least once."""
    return (args.dl_strategy == "at-least-once" and args.dlx is not None
            and args.overflow == "reject-publish")


def strategy_warning(args) -> str | None:
    """RabbitMQ's warning when at-least-once was asked for and does not apply (None if it
    applies or was not asked for); the caller adds the queue's name."""
    if args.dl_strategy != "at-least-once" or applies(args):
        return None
    if args.dlx is None:
        return ("Disabling dead-lettering for %s despite configured dead-letter-strategy "
                "'at-least-once' because dead-letter-exchange is not configured.")
    return ("Falling back to dead-letter-strategy at-most-once for %s because configured "
            "dead-letter-strategy at-least-once is incompatible with effective overflow "
            f"strategy {args.overflow}. To enable dead-letter-strategy at-least-once, set "
            "overflow strategy to reject-publish.")


class Discards:
    """The discards of one queue, in the order they died. ``send(offset, record, reason)``
    hands one to the supervisor, False if it may not now (a replica that does not lead);
    ``read(offset)`` reads a record back from the queue's log (None while it cannot be
    read); ``now()`` is the loop's clock (seconds)."""

    def __init__(self, send, read, now, timeout_s: float):
        self.send, self.read, self.now = send, read, now
        self.timeout = timeout_s
        self.held: dict[int, tuple[str, int]] = {}      # offset -> (reason, body bytes)
        self.bytes = 0
        self.unsent: deque[int] = deque()
        self.sent: dict[int, float] = {}                 # offset -> when last sent
        self.unreadable = False

    def __len__(self) -> int:
        return len(self.held)

    def add(self, offset: int, reason: str, size: int, record=None) -> None:
        """A message died: hold it, and send it now if the window has room (``record``: the
        message if the caller has it, saving a read)."""
        self.held[offset] = (reason, size)
        self.bytes += size
        if record is not None and not self.unsent and len(self.sent) < PREFETCH \
                and self.send(offset, record, reason):
            self.sent[offset] = self.now()
        else:
            self.unsent.append(offset)

    def settle(self, offsets) -> list[int]:
        """The supervisor confirmed these: the offsets that were held (to settle), and the
        window refilled."""
        done = []
        for offset in offsets:
            entry = self.held.pop(offset, None)
            if entry is None:
                continue                # settled already (a second send's answer)
            self.bytes -= entry[1]
            self.sent.pop(offset, None)
            done.append(offset)
        if done:
            self.pump()
        return done

    def pump(self) -> None:
        """Send held discards while the window has room."""
        self.unreadable = False
        while self.unsent and len(self.sent) < PREFETCH:
            offset = self.unsent[0]
            entry = self.held.get(offset)
            if entry is None:
                self.unsent.popleft()
                continue
            record = self.read(offset)
            if record is None:
                self.unreadable = True
                return                  # not readable yet: soon again (``resend_due``)
            if not self.send(offset, record, entry[0]):
                return
            self.unsent.popleft()
            self.sent[offset] = self.now()

    def resend_due(self) -> float | None:
        """Send again what was out for the timeout, and what waits; the seconds until the
        next look is due (None: nothing is out or waiting)."""
        now = self.now()
        self.pump()
        for offset, at in list(self.sent.items()):
            if now - at >= self.timeout:
                record = self.read(offset)
                if record is None:
                    self.unreadable = True
                    continue
                self.send(offset, record, self.held[offset][0])   # refused: the next look
                self.sent[offset] = now
        if self.unreadable:
            return 0.05
        if self.sent:
            return max(min(self.sent.values()) + self.timeout - now, 0.0)
        return self.timeout if self.unsent else None

    def take_all(self) -> list[int]:
        """Forget every discard (the strategy was switched off): their offsets, to settle."""
        offsets = list(self.held)
        self.held.clear()
        self.unsent.clear()
        self.sent.clear()
        self.bytes = 0
        return offsets
