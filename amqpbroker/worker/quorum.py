"""A quorum queue on one node: a classic queue (queue.py) with RabbitMQ 4.0's delivery limit.

Theory of operation
-------------------
RabbitMQ 4.0's quorum queue (rabbit_fifo) counts, per message, how many times it went back to
the queue (``acquired_count``): every return counts, whether a reject or nack with requeue,
a basic.recover, or the unacked messages of a channel, connection or consumer that went away.
A redelivery carries that count as header ``x-delivery-count`` (the first delivery has none).
A return that takes the count past the queue's delivery limit (``x-delivery-limit``, default
20, negative for none) dead-letters the message instead, with reason ``delivery_limit``, or
drops it when the queue has no dead-letter exchange. With limit N a message is delivered at
most N + 1 times. A basic.cancel returns nothing (the unacked messages stay with the channel).

The counts are kept by offset in a ``DeliveryCountLog`` (storage/countlog.py) in the queue's
directory, written and fsynced in the same commit rounds as the queue's log and ack log, so a
count survives a restart as RabbitMQ's does. A message settled (acked, dead-lettered, expired,
dropped, purged) forgets its count; recovery drops the counts of settled messages.

As in RabbitMQ, every message is kept across a restart, transient ones (delivery mode 1)
too, and confirmed once durable (``persists_all``).

RabbitMQ 4's ``modified`` outcome (an AMQP 1.0 consumer's): the message goes back, or to the
dead-letter exchange, with the message annotations the consumer set merged into its own
(``modify``); the properties that carry them are kept by offset in a ``ModifiedLog``
(``modified.log``) beside the counts, in the same rounds, until the message is settled,
and replicate as the counts do.

What differs from RabbitMQ 4.0: a message delivered and not acked when the broker stops comes
back with the count it had (RabbitMQ counts that return: the consumer went down). In a
cluster the counts replicate with the acks (cluster/replication.py, ``FetchReply.counts``):
each follower keeps the leader's in its own ``counts.log``, so a new leader goes on counting.
"""
from __future__ import annotations

import logging
import os

from ..protocol import properties as props_mod
from ..storage.countlog import DeliveryCountLog, ModifiedLog
from ..storage.record import Record
from . import discards as dlx
from .queue import Queue, name_of
from .store import StoredRun

log = logging.getLogger("amqpbroker.queue")

HIGH_PRIORITY_ABOVE = 4         # RabbitMQ 4.0's quorum queues: priority 5..255 is "high"
PRIORITY_FLAG = 0x08            # the priority property's bit in the flags' first byte


def queue_class(arguments: dict | None) -> type:
    """The queue class for a queue declared with ``arguments``."""
    qtype = (arguments or {}).get("x-queue-type")
    if isinstance(qtype, bytes):
        qtype = qtype.decode(errors="replace")
    if qtype == "stream":
        from .stream import Stream          # a stream is no Queue: its own module
        return Stream
    return QuorumQueue if qtype == "quorum" else Queue


class QuorumQueue(Queue):
    persists_all = True      # RabbitMQ's quorum queues keep transient messages too
    plain_priority_max = HIGH_PRIORITY_ABOVE

    # ---------------------------------------------------------------- priorities
    # RabbitMQ 4.0's two priorities (rabbit_fifo_q): a message whose priority property is
    # above 4 is "high", any other "normal"; ready[1] and ready[0]. Of every three taken,
    # the first two are the head of the high ones if there are any; the third is the older
    # of the two heads (by offset, RabbitMQ's Raft index), so normal messages are not
    # starved. A requeued message goes back to its own list, in its place.
    def _priority_levels(self) -> int:
        return 2

    def _publish_level(self, priority: int) -> int:
        return 1 if priority > HIGH_PRIORITY_ABOVE else 0

    def _level(self, raw_props: bytes) -> int:
        if not raw_props or not raw_props[0] & PRIORITY_FLAG:
            return 0
        try:
            p = props_mod.scan(raw_props).priority
        except ValueError:
            return 0
        return 1 if p is not None and p > HIGH_PRIORITY_ABOVE else 0

    def _head(self):
        normal, high = self.ready
        if high and (not normal or self._taken < 2 or high[0] < normal[0]):
            return 1, high[0]
        if normal:
            return 0, normal[0]
        return None, None

    def _pop_head(self):
        offset, rec = super()._pop_head()
        if offset is not None:
            self._taken = 0 if self._taken == 2 else self._taken + 1
        return offset, rec

    def _recover(self) -> None:
        # Queue.__init__ calls this once the store is open: the counts open beside it
        self._taken = 0             # messages taken, modulo 3 (``_head``)
        self.counts = DeliveryCountLog(os.path.join(self.directory, "counts.log"),
                                       fsync=self.fsync,
                                       fsync_interval_ms=self.host.config.fsync_interval_ms)
        # offset -> properties (``modify``), kept beside the counts
        self.modified = ModifiedLog(os.path.join(self.directory, "modified.log"),
                                    fsync=self.fsync,
                                    fsync_interval_ms=self.host.config.fsync_interval_ms)
        loop = self.host.loop
        self.discards = dlx.Discards(self._send_discard, self._read_discard, loop.time,
                                     dlx.timeout_s(self.host.config))
        self._dlx_timer = None
        self._at_least_once = dlx.applies(self.args)
        self._dlx_warned = None
        super()._recover()
        acks, log_ = self.store.acks, self.store.log
        start, end = log_.start_offset, log_.end_offset
        self.counts.retain(lambda o: start <= o < end and not acks.is_done(o))
        self.modified.retain(lambda o: start <= o < end and not acks.is_done(o))
        self._check_strategy()
        if self.discards.unsent:
            loop.call_soon(self.pump_discards)

    # ---------------------------------------------------------------- at-least-once
    def _discarded_at_start(self) -> dict:
        out = {}
        for offset, value in self.counts.counts.items():
            reason = dlx.reason_of(value)
            if reason is not None:
                out[offset] = reason
        return out

    def _recover_discard(self, offset: int, rec: Record, reason: str) -> None:
        self.discards.add(offset, reason, len(rec.body))

    def _check_strategy(self) -> None:
        """At a start and after the arguments changed: whether dead letters are held until
        confirmed (worker/discards.py), RabbitMQ's warning when asked for and not possible,
        and the held ones deleted when it was switched off."""
        warning = dlx.strategy_warning(self.args)
        if warning is not None and warning != self._dlx_warned:
            log.warning(warning, f"queue '{name_of(self)}'")
        self._dlx_warned = warning
        self._at_least_once = dlx.applies(self.args)
        if self._at_least_once or not self.discards.held:
            return
        n, size = len(self.discards), self.discards.bytes
        for offset in self.discards.take_all():
            self._done(offset)
        log.info("Deleted %d dead-lettered messages (with total messages size of %d bytes) "
                 "in queue '%s'", n, size, name_of(self))

    def apply_arguments(self, arguments: dict) -> None:
        super().apply_arguments(arguments)
        self._check_strategy()
        self.pump_discards()

    def _died(self, taken: list, reason: str) -> None:
        if not self._at_least_once:
            super()._died(taken, reason)
            return
        for offset, entry in taken:
            rec = self._unacked_record(offset, entry)
            if isinstance(entry, Record):
                size = len(entry.body)
            elif type(entry) is StoredRun:
                size = entry.body_size(offset)
            else:
                size = entry.size if rec is None else len(rec.body)
            self._discard(offset, reason, size, rec)

    def _expired_at_publish(self, record: Record) -> None:
        if not self._at_least_once:
            super()._expired_at_publish(record)
            return
        offset = self.store.append(record)      # held, so stored first
        self.stats.publish_bytes += len(record.body)
        self._discard(offset, "expired", len(record.body), record)

    def _discard(self, offset: int, reason: str, size: int, rec: Record | None) -> None:
        self.redelivered.discard(offset)
        if self.dedup_keys is not None:
            self.dedup_keys.discard(offset)
        self.count_dead(reason, 1, "at_least_once")
        self.counts.set(offset, dlx.marker(reason))
        self.host.committer.mark(self)
        self.discards.add(offset, reason, size, rec)
        self._arm_discards()

    def _send_discard(self, offset: int, rec: Record, reason: str) -> bool:
        if self.deleted or (self.replication is not None and not self.replication.serving()):
            return False                # a follower's copy: its leader sends them
        self.host.dead_letter_held(self, offset, rec, reason)
        return True

    def _read_discard(self, offset: int) -> Record | None:
        return None if self.store.closed else self._as_modified(offset,
                                                                self.store.read(offset))

    def settle_discards(self, offsets) -> None:
        """Every queue these dead letters were routed to confirmed them (``DlxSettle``)."""
        done = self.discards.settle(offsets)
        for offset in done:
            self._done(offset)
        if done:
            self.count_dead("confirmed", len(done), "at_least_once")
        self._arm_discards()

    def pump_discards(self) -> None:
        """Send what is held and waits (at a start; this copy leads now)."""
        if self.deleted:
            return
        self.discards.pump()
        self._arm_discards()

    def _arm_discards(self) -> None:
        d = self.discards
        if self._dlx_timer is None and (d.sent or d.unsent) and not self.deleted:
            delay = 0.05 if d.unreadable else d.timeout
            self._dlx_timer = self.host.loop.call_later(delay, self._discards_due)

    def _discards_due(self) -> None:
        self._dlx_timer = None
        if self.deleted:
            return
        delay = self.discards.resend_due()
        if delay is not None:
            self._dlx_timer = self.host.loop.call_later(delay, self._discards_due)

    def _full(self, extra_bytes: int) -> bool:
        d = self.discards
        if not d.held:
            return super()._full(extra_bytes)
        a = self.args               # held dead letters count toward the limits (RabbitMQ)
        if a.max_length is not None and self.ready_count + len(d) + 1 > a.max_length:
            return True
        return a.max_length_bytes is not None \
            and self.ready_bytes + d.bytes + extra_bytes > a.max_length_bytes

    # ---------------------------------------------------------------- modified outcome
    def modify(self, offset: int, requeue: bool, properties: bytes) -> None:
        """RabbitMQ 4's ``modified`` outcome with message annotations: the message goes back
        (or to the dead-letter exchange) with ``properties``, its own with the annotations
        merged in (amqp10/message.py ``modified``). They are kept until the message is
        settled, in the queue's ``modified.log`` (written and fsynced with its commit rounds,
        as the counts: RabbitMQ keeps them in its Raft log), so every later delivery and
        dead letter carries them, after a restart too; in a cluster followers copy them
        (cluster/replication.py ``FetchReply.modified``), so a new leader does too."""
        if offset in self.outstanding:
            self.modified.set(offset, properties)
            self.host.committer.mark(self)      # written in the next round
        self.reject([offset], requeue)

    def _as_modified(self, offset: int, rec: Record | None) -> Record | None:
        properties = self.modified.counts.get(offset)
        if properties is None or rec is None:
            return rec
        return rec._replace(properties=properties)

    def _unacked_record(self, offset: int, entry) -> Record | None:
        rec = super()._unacked_record(offset, entry)
        return self._as_modified(offset, rec) if self.modified.counts else rec

    def ack(self, offsets) -> None:
        if self.modified.counts:
            for offset in offsets:
                self.modified.forget(offset)
        super().ack(offsets)

    # ---------------------------------------------------------------- delivery count
    def _redelivery(self, offset: int, rec: Record) -> Record:
        if self.modified.counts:
            rec = self._as_modified(offset, rec)
        n = self.counts.get(offset)
        if not n:
            return rec
        try:
            raw = props_mod.rewrite(rec.properties,
                                    set_headers={"x-delivery-count": props_mod.Long(n)})
        except ValueError:
            return rec        # properties we cannot parse go out as they came in
        return rec._replace(properties=raw)

    def requeue(self, items) -> None:
        """Count the return of each message; past the delivery limit it is dead-lettered
        (or dropped) instead of going back."""
        if self.deleted:
            return
        limit = self.args.delivery_limit
        back, over = [], []
        for offset, entry in items:
            n = self.counts.get(offset) + 1
            if limit is not None and n > limit:
                over.append((offset, entry))
            else:
                self.counts.set(offset, n)
                back.append((offset, entry))
        if back:
            self.host.committer.mark(self)      # the counts are written in the next round
        if over:
            self._died(over, "delivery_limit")
        super().requeue(back)

    def _done(self, offset: int) -> None:
        self.counts.forget(offset)
        if self.modified.counts:
            self.modified.forget(offset)
        super()._done(offset)

    # ---------------------------------------------------------------- commit round
    def flush(self) -> None:
        super().flush()
        self.counts.flush()
        self.modified.flush()

    def sync(self) -> None:
        super().sync()
        self.counts.sync()
        self.modified.sync()

    def close_storage(self, destroy: bool) -> None:
        if self._dlx_timer is not None:
            self._dlx_timer.cancel()
            self._dlx_timer = None
        if not destroy and not self.deleted:
            try:
                self.counts.close()
                self.modified.close()
            except OSError as exc:
                log.error("queue '%s' in vhost '%s': delivery counts not written at "
                          "shutdown: %s", self.name, self.vhost_name, exc)
        super().close_storage(destroy)
