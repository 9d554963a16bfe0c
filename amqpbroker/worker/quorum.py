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

What differs from RabbitMQ 4.0: a message delivered and not acked when the broker stops comes
back with the count it had (RabbitMQ counts that return: the consumer went down). In a
cluster the counts replicate with the acks (cluster/replication.py, ``FetchReply.counts``):
each follower keeps the leader's in its own ``counts.log``, so a new leader goes on counting.
"""
from __future__ import annotations

import logging
import os

from ..protocol import properties as props_mod
from ..storage.countlog import DeliveryCountLog
from ..storage.record import Record
from .queue import Queue

log = logging.getLogger("amqpbroker.queue")


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

    def _recover(self) -> None:
        # Queue.__init__ calls this once the store is open: the counts open beside it
        self.counts = DeliveryCountLog(os.path.join(self.directory, "counts.log"),
                                       fsync=self.fsync,
                                       fsync_interval_ms=self.host.config.fsync_interval_ms)
        super()._recover()
        acks, log_ = self.store.acks, self.store.log
        start, end = log_.start_offset, log_.end_offset
        self.counts.retain(lambda o: start <= o < end and not acks.is_done(o))

    # ---------------------------------------------------------------- delivery count
    def _redelivery(self, offset: int, rec: Record) -> Record:
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
            records = []
            if self.args.dlx is not None:
                records = [self._unacked_record(o, entry) for o, entry in over]
            for offset, _ in over:
                self._done(offset)
            if records:
                self.host.dead_letter(self, [r for r in records if r is not None],
                                      "delivery_limit")
        super().requeue(back)

    def _done(self, offset: int) -> None:
        self.counts.forget(offset)
        super()._done(offset)

    # ---------------------------------------------------------------- commit round
    def flush(self) -> None:
        super().flush()
        self.counts.flush()

    def sync(self) -> None:
        super().sync()
        self.counts.sync()

    def close_storage(self, destroy: bool) -> None:
        if not destroy and not self.deleted:
            try:
                self.counts.close()
            except OSError as exc:
                log.error("queue '%s' in vhost '%s': delivery counts not written at "
                          "shutdown: %s", self.name, self.vhost_name, exc)
        super().close_storage(destroy)
