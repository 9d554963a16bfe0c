"""A queue's ``memory``: the bytes it holds in its worker, estimated when asked.

RabbitMQ reports a queue process's memory (``memory`` in ``/api/queues``,
``rabbitmq_queue_process_memory_bytes`` in Prometheus). Here a queue is not a process but a
set of tables in its worker, so the figure is an estimate, computed at snapshot time from
counts the queue keeps anyway (nothing is added per message except ``MessageStore``'s running
sum of cached body bytes, next to the process-wide one it already kept):

* message bodies held in memory: the store's body cache (recent appends, requeued messages)
  and its read-ahead of records read back from disk, and delivered messages not yet durable
  (held whole until their commit round), each with ``RECORD`` bytes of object overhead;
* settled messages a non-durable queue's write-behind still holds unwritten (up to
  ``WRITE_BEHIND_RECORDS``: worker/store.py, "Write-behind"): ``RECORD`` each, with its body
  if that was under ``ELIDE_BODY`` (a bigger one was dropped at the settle);
* the queue's tables: an offset per ready message (``READY``), an entry per delivered,
  unacknowledged message (``UNACKED``: the queue's outstanding table and the link's set),
  an offset per requeued message waiting for redelivery (``REDELIVERED``);
* its consumers (``CONSUMER`` each) and the sparse indexes of its log segments (the array
  bytes, plus ``SEGMENT`` per segment);
* ``QUEUE``: the queue object itself with its store, ack log and producer table, empty.

Not counted: the pickled or shared-memory copies in flight on a link, buffers of the commit
round in progress (``_pending``: gone by the next round), and the allocator's own slack. A
stream counts its tail of recent appends (``_tail``) and unwritten publishes instead of a
cache, and its log indexes; it has no ready or unacked tables.

The per-entry constants were measured with ``tracemalloc`` on CPython 3.11 (1,000 to 96,000
entries of offsets above 2^30, as a long-lived queue has; a hash table's share moves with its
fill between resizes, so the constants are middle values): a deque slot and its int 40 B; a
set entry 65-119 B; a dict entry offset -> ``Unacked`` plus the link's set entry 230-302 B; a
cached ``Record`` without its body, with its dict entry, 250-268 B
(tests/unit/worker/test_memory_constants.py checks them).
"""
from __future__ import annotations

from .store import ELIDE_BODY, StoredRun

READY = 40
UNACKED = 265
REDELIVERED = 90
RECORD = 250
CONSUMER = 200              # a Subscription (slots) and its place in the consumer list
SEGMENT = 1024              # a Segment, its two index objects and their file handles
QUEUE = 6144                # an empty queue: Queue, MessageStore, AckLog, PartitionLog, ... (with
                            # its one SEGMENT: 7.1 KiB under tracemalloc, 300 queues)


def queue_memory(q) -> int:
    """A classic or quorum queue (worker/queue.py)."""
    store = q.store
    segments, index = store.log.index_bytes()
    total = (QUEUE + SEGMENT * segments + index
             + store.cache_bytes + RECORD * len(store.cache)
             + READY * q.ready_count + UNACKED * len(q.outstanding)
             + REDELIVERED * len(q.redelivered) + CONSUMER * len(q.consumers))
    if store._settled_early:                    # settled, held unwritten (write-behind)
        total += sum(RECORD + (size if size < ELIDE_BODY else 0)
                     for size in store._settled_early.values())
    if store._readahead:                        # records read back from disk, not yet taken
        total += sum(RECORD + len(r.body) for r in store._readahead.values())
    if q._unacked_bodies:                       # delivered, not yet durable: held whole
        for offset in q._unacked_bodies:
            entry = q.outstanding.get(offset)
            if type(entry) is StoredRun:        # its share of the run's bytes
                total += entry.body_size(offset)
            elif entry is not None and len(entry) != 2:
                total += RECORD + len(entry.body)
    return total


def stream_memory(s) -> int:
    """A stream (worker/stream.py): its tail of recent appends and what is not yet written."""
    segments, index = s.log.index_bytes()
    total = (QUEUE + SEGMENT * segments + index + s._tail_bytes + RECORD * len(s._tail)
             + CONSUMER * len(s.consumers))
    if s.pending:
        total += sum(RECORD + len(r.body) for r in s.pending)
    return total
