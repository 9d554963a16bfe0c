"""Giving the supervisor's freed memory back (issue 9's RSS creep).

Theory of operation
-------------------
The supervisor's work comes in bursts it cannot bound: management requests (JSON listings and
definitions of every object), metadata calls from front-ends, queue churn, statistics
snapshots from every child. ``bench/supervisor_heap.py`` runs the soak's management and churn
load without its pauses and reads the supervisor's heap through gdb; its RSS climbed ~2.5 MiB
per 1,000 management rounds (the soak's ~0.3 MiB/min), and the growth was:

* not glibc's heap: ``[heap]`` stayed at 10.1 MiB, ``malloc_trim(0)`` returned 0.5 MiB;
  ``MALLOC_ARENA_MAX=1`` and a fixed ``MALLOC_MMAP_THRESHOLD_`` changed nothing;
* CPython's object arenas: 19 -> 22 of them, the bytes in allocated blocks 19.2 -> 21.4 MB;
  yet the objects still alive after a ``gc.collect()`` that were allocated after the warm-up
  came to 160 KiB. The growth is *cyclic garbage not yet collected*: ``cli.tune_gc`` sets
  the thresholds to (100,000, 50, 100) so the hot path is not re-walked, and a cycle that was
  still alive at a young collection is promoted to the oldest generation, whose collection
  then comes after 5,000 young ones (500 million container allocations): never, in practice.
  Request handling makes such cycles (exceptions with their tracebacks and frames, aiohttp's
  request and response objects, futures);
* file-backed pages (code touched for the first time by rarer paths), ~1 MiB, bounded.

So every ``interval`` seconds ``HeapTrimmer`` runs a full ``gc.collect()`` (when ``collect``:
the supervisor of a split layout, whose heap is metadata, tens of thousands of objects, a few
milliseconds) and then glibc's ``malloc_trim(0)``, which returns every whole free page of
glibc's arenas (``MADV_DONTNEED``), including those below a live chunk that ``free`` keeps.
CPython reuses the collected blocks of its arenas, so they stop growing. Not glibc (musl,
macOS): no ``malloc_trim``; it only collects.

The metadata no longer makes cycles: a deleted vhost, exchange, queue or binding is freed by
reference counting alone, in the supervisor and in every front-end's copy
(``frontend/vhost.py``'s ``VirtualHost`` docstring; ``tests/unit/frontend/test_metadata_cycles.py``
runs the churn with the collector off and finds no garbage of ours). The collection stays for
what request handling still makes (exceptions and their frames, aiohttp's objects).

Where the process holds its queues (``--workers 0``, the one-process broker) it only trims, and
does not collect: a full collection walks every object the collector tracks, ~56 per queue
(each ``QueueRef``, its host-side queue, index and segment objects), and the whole event loop
waits for it. ``bench/gc_pause.py``: 30,000 objects with no queue take 16 ms of CPU, 1,000 queues
(86,000 objects) 49 ms, 10,000 queues (590,000 objects) 536 ms -- a stall of every connection
and queue of the node each interval, growing with the queues, to reclaim garbage that the
metadata no longer makes. The split layout's supervisor holds a ``QueueRef`` per queue but
not the queue itself, and serves no messages: its collection's pause is off the message path.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """Every ``interval`` seconds (0: never), ``gc.collect()`` if ``collect``, then
    ``malloc_trim(0)``."""

    def __init__(self, loop, interval: float, collect: bool = True):
        self.loop = loop
        self.interval = interval
        self.collect = collect
        self.trim = _malloc_trim()
        self.trims = 0                  # how many times it ran
        self.released = 0               # of those, how many gave memory back (glibc says so)
        self.collected = 0              # unreachable objects its collections found
        self.seconds = 0.0              # time spent collecting and trimming
        self._timer = None
        self._alarm_timer = None        # trims while the memory alarm is on (a child's)

    def start(self) -> "HeapTrimmer":
        if self.interval > 0:
            self._timer = self.loop.call_later(self.interval, self._tick)
        return self

    def stop(self) -> None:
        for t in (self._timer, self._alarm_timer):
            if t is not None:
                t.cancel()
        self._timer = self._alarm_timer = None

    def trim_now(self) -> bool:
        """Collect (if ``collect``) and ``malloc_trim(0)`` once; True if glibc released
        memory."""
        start = time.perf_counter()
        if self.collect:
            self.collected += gc.collect()
        released = bool(self.trim(0)) if self.trim is not None else False
        self.seconds += time.perf_counter() - start
        self.trims += 1
        self.released += released
        return released

    def _tick(self) -> None:
        self._timer = self.loop.call_later(self.interval, self._tick)
        self.trim_now()

    # A child process (front-end, worker) of a split layout holds what a client sends or a
    # queue caches, and frees it there: a blocked publisher that goes with half a body read
    # frees it in its front-end, which glibc keeps until a trim. The supervisor counts the
    # node's memory and trims its own heap before it sets or holds the memory alarm
    # (frontend/alarms.py); a child told of the alarm trims its own, now and then after
    # 1, 2, 4 ... 32 s while it stays, or the freed body kept the alarm on (and every
    # publisher of the node blocked) until the child's next periodic trim — one CI run of
    # test_memory_backpressure's split pass.
    ALARM_FIRST_WAIT = 1.0
    ALARM_MAX_WAIT = 32.0

    def memory_alarm(self, on: bool) -> None:
        if self._alarm_timer is not None:
            self._alarm_timer.cancel()
            self._alarm_timer = None
        if on:
            self._alarm_trim(self.ALARM_FIRST_WAIT)

    def _alarm_trim(self, wait: float) -> None:
        self.trim_now()
        self._alarm_timer = self.loop.call_later(
            wait, self._alarm_trim, min(wait * 2, self.ALARM_MAX_WAIT))
