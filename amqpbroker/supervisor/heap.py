"""Giving the supervisor's freed memory back to the OS (issue 9's RSS creep).

Theory of operation
-------------------
The supervisor's work comes in bursts it cannot bound: management requests (JSON listings
and definitions of every object), metadata calls from front-ends, queue churn, statistics
snapshots from every child. Each burst allocates and frees; what is freed stays in the
process. Measured with ``bench/supervisor_heap.py`` (the soak's management and churn load
without its pauses; gdb reads the heap at the end): the Python objects alive after the
warm-up stay flat (~160 KiB allocated since then and still alive after 400 rounds), while RSS
climbs ~2.5 MiB per 1,000 management rounds, in glibc's heap and in anonymous mappings
(CPython's obmalloc arenas, glibc's mmapped chunks).

glibc gives back the top of its heap on ``free`` once more than ``M_TRIM_THRESHOLD`` is free
there, but not free pages below a live chunk, nor anything when the threshold was raised by
the dynamic mmap threshold (a freed large buffer raises both). ``malloc_trim(0)`` walks every
arena and returns each whole free page with ``MADV_DONTNEED``. ``HeapTrimmer`` calls it every
``interval`` seconds from the event loop, between two events (a few milliseconds for a heap
of tens of MiB; an idle heap is walked in well under one). Nothing else changes: the
allocator, its arenas and its thresholds stay glibc's defaults, so the hot paths of the
one-process layout (where the supervisor is the whole broker) are untouched.

Not glibc (musl, macOS): ``malloc_trim`` does not exist and the trimmer does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time

log = logging.getLogger("amqpbroker.supervisor")


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
    """``malloc_trim(0)`` every ``interval`` seconds (0: never)."""

    def __init__(self, loop, interval: float):
        self.loop = loop
        self.interval = interval
        self.trim = _malloc_trim()
        self.trims = 0                  # how many times it trimmed
        self.released = 0               # of those, how many gave memory back (glibc says so)
        self.seconds = 0.0              # time spent trimming
        self._timer = None

    def start(self) -> "HeapTrimmer":
        if self.trim is not None and self.interval > 0:
            self._timer = self.loop.call_later(self.interval, self._tick)
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def trim_now(self) -> bool:
        """``malloc_trim(0)`` once; True if glibc released memory."""
        if self.trim is None:
            return False
        start = time.perf_counter()
        released = bool(self.trim(0))
        self.seconds += time.perf_counter() - start
        self.trims += 1
        self.released += released
        return released

    def _tick(self) -> None:
        self._timer = self.loop.call_later(self.interval, self._tick)
        self.trim_now()
