"""Group commit: many publishes and acks, one write per log and one fsync per round.

Theory of operation
-------------------
Queues do not write per message. A publish or ack appends to the queue's ``pending`` lists and
``mark``s the queue dirty. Once per event-loop turn a *round* starts: it takes every dirty
queue, writes its pending records and ack records (one batch, one ``write`` each), then fsyncs
the durable ones in a worker thread while the loop keeps serving clients (the queues of a
round fsync at once, FSYNC_THREADS at a time: concurrent fsyncs share the file system's
journal commit). When the fsyncs return, the round's *generation* is done: the partition host
moves each link's confirm watermark past the publishes and acks of that generation (or
older), and queues dispatch messages that became durable.

A publish that needs durability records ``committer.open_gen`` — the generation of the next
round to start — because the round that starts next will include its queue. Only one round is
in flight; marks during it go to the next one. A round starts in the turn after its first mark (``_next_turn``):
the deliveries and replies of the turn that marked are written to their sockets first.
Once a step's writes are in the files, and just before its fsync starts, ``write_listeners``
are told (``on_written``): a replicated queue's leader answers its followers' waiting fetches
with what was just written, so their fsyncs run beside its own (cluster/replication.py). The
answers are on the wire before the fsync thread is woken: woken first, it took the GIL while
they were read and encoded, and they left after it (a lone rf3 publish, bench/RESULTS.md).

A non-durable queue owes nobody a round (no confirm waits for its writes: it is wiped at
start). When its records reach the log is its store's write-behind rule alone (worker/store.py,
"Write-behind"): a mark starts a round only if the store says a flush would write something
(``write_owed``), and that flush writes what the rule says is due. A lone message published,
delivered and acked leaves nothing due, so it costs no round; its round has nothing to fsync.

Open files. A queue's files are handles of the process's file cache (storage/filecache.py),
which closes the least recently used when it is full, fsyncing first a handle whose writes
are not yet fsynced — on the event loop, where it blocks everything. A round that wrote more
queues than the cache holds before its fsync would do just that, queue after queue. So a
round goes in *steps* of at most ``limit // FILES_PER_QUEUE`` queues: write a step, fsync it
in the thread, back on the loop ``after_sync`` its queues, then the next step; the round's
generation is done (confirms go out) after its last step. With the default limit (half of
RLIMIT_NOFILE) a round is one step unless thousands of queues are dirty at once.

A failed write or fsync (disk full, read-only data dir) raises the disk alarm: publishers are
blocked (``connection.blocked``), nothing pending is dropped, and the round is retried every
second until it succeeds; then the alarm clears.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait

from ..stats import CommitTimings
from ..storage.filecache import process_cache

log = logging.getLogger("amqpbroker.commit")

# descriptors one queue's flush can leave owing an fsync: log and ack log, the two indexes,
# across a segment roll the new segment's three, and a stream's group offsets
FILES_PER_QUEUE = 9
# threads fsyncing the durable queues of a step at once
FSYNC_THREADS = 8


class Committer:
    def __init__(self, broker):
        self.broker = broker
        self.dirty: dict = {}
        self.open_gen = 1
        self.in_flight = False          # a round is under way (from its first step to its end)
        self._scheduled = False
        self._retry = None
        self.listeners: set = set()
        # told after each step's writes, while its fsync runs (``on_written``): replicated
        # queues' leaders, whose followers fetch what is written (cluster/replication.py)
        self.write_listeners: set = set()
        self._files = process_cache()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fsync")
        # the queues of one step fsync in parallel (each queue's files in order)
        self._fanout = ThreadPoolExecutor(max_workers=FSYNC_THREADS,
                                          thread_name_prefix="fsync-queue")
        self.timings = CommitTimings()      # amqpbroker_commit_* metrics (amqpbroker/stats)
        self._round_start = 0.0

    def mark(self, queue) -> None:
        store = getattr(queue, "store", None)
        if store is not None and store.write_behind and not store.write_owed:
            return              # write-behind holds everything it has (worker/store.py)
        self.dirty[queue] = None
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and not self.in_flight and self._retry is None:
            self._scheduled = True
            self.broker.loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """The round starts a turn later: what this turn made for the sockets and links (a
        delivery, a reply) is written first, and the round's writes are not in its way."""
        self.broker.loop.call_soon(self._round)

    @property
    def step_size(self) -> int:
        """Queues written per fsync step: as many as the file cache holds the files of."""
        return max(1, self._files.limit // FILES_PER_QUEUE)

    def _round(self) -> None:
        self._scheduled = False
        if self.in_flight or not self.dirty:
            return
        queues = list(self.dirty)
        self.dirty.clear()
        gen = self.open_gen
        self.open_gen += 1
        self.in_flight = True
        self._round_start = time.perf_counter()
        self._step(gen, queues, 0)

    def _step(self, gen, queues, start) -> None:
        """Write queues[start:start + step_size], fsync the durable ones in the thread; the
        next step, or the end of the round, follows."""
        while start < len(queues):
            step = queues[start:start + self.step_size]
            try:
                for q in step:
                    if not q.deleted:
                        q.flush()
            except OSError as exc:
                self._failed(queues[start:], exc)
                return
            durable = [q for q in step if q.durable and not q.deleted]
            if durable:
                # the followers' fetch replies go out first (``on_written`` writes them to
                # their sockets): the fsync thread, woken after, does not hold the GIL
                # while they are read and encoded, and their fsyncs start beside ours
                try:
                    self._written()
                finally:                    # a listener's failure must not stall the round
                    fut = self.broker.loop.run_in_executor(self._executor, self._sync, durable)
                    fut.add_done_callback(lambda f: self._synced(f, gen, queues, start, step))
                return
            self._written()
            self._after_sync(step)          # nothing to fsync: straight to the next step
            start += len(step)
        self._complete(gen)

    def _sync(self, queues) -> float:
        """fsync (worker thread), the queues at once; returns the seconds it took."""
        start = time.perf_counter()
        live = [q for q in queues if not q.deleted]
        if len(live) == 1:
            _sync_queue(live[0])
        elif live:
            # concurrent fsyncs of different files join one journal commit: 8 files took
            # 1.3 ms at once against 13 ms one after the other here (bench/RESULTS.md)
            futures = [self._fanout.submit(_sync_queue, q) for q in live]
            wait(futures)
            for f in futures:
                f.result()                  # the first failure, once all have returned
        return time.perf_counter() - start

    def _synced(self, fut, gen, queues, start, step) -> None:
        exc = fut.exception()
        if exc is not None:
            self._failed(queues[start:], exc)
            return
        self.timings.on_fsync(fut.result())
        self._after_sync(step)
        self._step(gen, queues, start + len(step))

    def _failed(self, queues, exc) -> None:
        """Write or fsync failed: what this round had not done yet goes back to ``dirty``
        (its generation completes with the retry's)."""
        self.in_flight = False
        log.error("writing to the data directory failed: %s; publishers blocked until it "
                  "succeeds", exc)
        for q in queues:
            self.dirty[q] = None
        self.broker.alarms.set("disk", f"disk write failed: {exc}")
        self._retry = self.broker.loop.call_later(1.0, self._retry_round)

    def _retry_round(self) -> None:
        self._retry = None
        self._round()

    def _written(self) -> None:
        """A step's writes are in the files; its fsync (if any) starts next."""
        if self.write_listeners:            # none on a single node: no copy per step
            for listener in list(self.write_listeners):
                listener.on_written()

    @staticmethod
    def _after_sync(queues) -> None:
        for q in queues:
            q.after_sync()

    def _complete(self, gen) -> None:
        self.in_flight = False
        self.timings.on_round(time.perf_counter() - self._round_start)
        if "disk" in self.broker.alarms.active and self._retry is None:
            self.broker.alarms.clear("disk")
        for listener in list(self.listeners):
            listener.on_commit(gen)
        if self.dirty and not self._scheduled:
            self._scheduled = True
            self.broker.loop.call_soon(self._round)

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
        self._fanout.shutdown(wait=True)


def _sync_queue(q) -> None:
    """fsync one queue's files (fsync thread). A queue deleted on the loop meanwhile has had
    its files closed and its directory moved to the trash: whatever its sync hits then is
    not a disk failure (no alarm, no retry), nothing it holds is owed to anyone."""
    try:
        q.sync()
    except OSError:
        if not q.deleted:
            raise
