"""Group commit: many publishes and acks, one write per log and one fsync per round.

Theory of operation
-------------------
Queues do not write per message. A publish or ack appends to the queue's ``pending`` lists and
``mark``s the queue dirty. Once per event-loop turn a *round* starts: it takes every dirty
queue, writes its pending records and ack records (one batch, one ``write`` each), then fsyncs
the durable ones in a worker thread while the loop keeps serving clients. When the fsyncs
return, the round's *generation* is done: the partition host moves each link's
confirm watermark past the publishes and acks of that generation (or older), and queues
dispatch messages that became durable.

A publish that needs durability records ``committer.open_gen`` — the generation of the next
round to start — because the round that starts next will include its queue. Only one round is
in flight; marks during it go to the next one.

A failed write or fsync (disk full, read-only data dir) raises the disk alarm: publishers are
blocked (``connection.blocked``), nothing pending is dropped, and the round is retried every
second until it succeeds; then the alarm clears.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("amqpbroker.commit")


class Committer:
    def __init__(self, broker):
        self.broker = broker
        self.dirty: dict = {}
        self.open_gen = 1
        self.in_flight = False
        self._scheduled = False
        self._retry = None
        self.listeners: set = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fsync")

    def mark(self, queue) -> None:
        self.dirty[queue] = None
        if not self._scheduled and not self.in_flight and self._retry is None:
            self._scheduled = True
            self.broker.loop.call_soon(self._round)

    def _round(self) -> None:
        self._scheduled = False
        if self.in_flight or not self.dirty:
            return
        queues = list(self.dirty)
        self.dirty.clear()
        gen = self.open_gen
        self.open_gen += 1
        try:
            for q in queues:
                if not q.deleted:
                    q.flush()
        except OSError as exc:
            self._failed(queues, gen, exc)
            return
        durable = [q for q in queues if q.durable and not q.deleted]
        if not durable:
            self._complete(gen, queues)
            return
        self.in_flight = True
        fut = self.broker.loop.run_in_executor(self._executor, self._sync, durable)
        fut.add_done_callback(lambda f: self._synced(f, gen, queues))

    @staticmethod
    def _sync(queues) -> None:
        for q in queues:
            if not q.deleted:
                q.sync()

    def _synced(self, fut, gen, queues) -> None:
        self.in_flight = False
        exc = fut.exception()
        if exc is not None:
            self._failed(queues, gen, exc)
            return
        self._complete(gen, queues)
        if self.dirty and not self._scheduled:
            self._scheduled = True
            self.broker.loop.call_soon(self._round)

    def _failed(self, queues, gen, exc) -> None:
        log.error("writing to the data directory failed: %s; publishers blocked until it "
                  "succeeds", exc)
        for q in queues:
            self.dirty[q] = None
        self.broker.alarms.set("disk", f"disk write failed: {exc}")
        self._retry = self.broker.loop.call_later(1.0, self._retry_round)

    def _retry_round(self) -> None:
        self._retry = None
        self._round()

    def _complete(self, gen, queues) -> None:
        if "disk" in self.broker.alarms.active and self._retry is None:
            self.broker.alarms.clear("disk")
        for q in queues:
            q.after_sync()
        for listener in list(self.listeners):
            listener.on_commit(gen)

    def drain(self) -> None:
        """Shutdown: write and fsync everything pending, synchronously."""
        queues = list(self.dirty)
        self.dirty.clear()
        for q in queues:
            if not q.deleted:
                try:
                    q.flush()
                    q.sync()
                except OSError as exc:
                    log.error("flush at shutdown failed for queue '%s': %s", q.name, exc)
        self._executor.shutdown(wait=True)
