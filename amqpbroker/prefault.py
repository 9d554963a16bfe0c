"""Faulting in the heap's fresh pages ahead of the event loop (issue 13, 64 KiB bodies).

Theory of operation
-------------------
A queue with no consumer keeps every transient body in memory (worker/store.py,
"Write-behind"), so each 64 KiB message lands in memory the process never touched: sixteen
page faults, taken inside the copy from the read buffer into the body's ``bytes``, on the event
loop. On this 2-core VM a fresh 4 KiB page costs ~3 µs (exception, allocation, zeroing, memcg
charge): about a third of the broker's CPU in publish_confirm at 64 KiB (bench/RESULTS.md,
"64 KiB: faulting the heap ahead"). Transparent huge pages cost more than they save here
(the zeroing of 2 MiB pages went to 67 % of the samples), and the memory is needed: the faults
can only be taken elsewhere, and cheaper.

So glibc is asked to grow its main heap (where the loop thread's bodies come from: bodies
under ``MMAP_THRESHOLD``) ``TOP_PAD`` bytes past what it needs each time it calls ``brk``, and
a thread of ours watches the break (``sbrk(0)``) and populates the new pages in one
``madvise(MADV_POPULATE_WRITE)`` per growth, before malloc hands them out. The loop then copies
into memory already mapped; the thread takes the faults on the other core, in one system call
per growth instead of one exception per page (~17 % cheaper per page, bench/RESULTS.md). The
thread holds the GIL only to read the break and to loop: ``madvise`` runs with the GIL
released (ctypes).

When it populates: only a heap that keeps growing, i.e. a growth within ``BURST`` seconds of
the one before (more than a pad per 30 s); the pad of a burst's first growth is faulted by the
loop as before. A broker that starts, or grows now and then, keeps the resident memory it had
without this (the pad is address space until touched); under a growing queue the thread keeps
at most one pad (``TOP_PAD``) populated ahead of what malloc handed out.

How often it looks: each look at the break takes the GIL from the loop, so the thread looks
every ``POLL_MIN`` seconds only while the heap is growing now (a growth less than ``FAST``
seconds after the one before, or one of more than two pads since the last look: a growth seen
late is faulted by the loop until the thread catches up) and backs off to ``POLL_MAX``
otherwise, so an idle broker wakes it five times a second. Looking every ``POLL_MIN`` for the
whole ``BURST`` after a growth, as it once did, showed in a lone message's p99
(bench/RESULTS.md, "latency_1: the prefault thread's GIL"). One growth alone is not "growing":
``HeapTrimmer``'s ``malloc_trim(0)`` (every minute) gives the pad back and the next allocation
at the top takes it again; a second of looks every ``POLL_MIN`` after each of those took the
GIL from a lone message's loop ~500 times (bench/RESULTS.md, "latency_1 tail").

The pad is 16 MiB because the memory alarm counts it:
tests/integration/test_memory_backpressure.py holds the broker to its limit + 64 MiB, and a
64 MiB pad (2.8 faults per message instead of ~4 with 32 MiB) went past it. After a burst,
glibc keeps up to ``TOP_PAD`` of freed memory at the heap's top (it trims down to the pad, not to nothing) until
``HeapTrimmer``'s ``malloc_trim(0)`` (supervisor/heap.py). Setting either glibc parameter
turns off glibc's dynamic mmap threshold, which would otherwise rise to the largest freed
mmapped chunk: it is fixed at ``MMAP_THRESHOLD`` (1 MiB) instead, so a body up to 1 MiB comes
from the heap and a bigger one is mapped and unmapped on its own.

Only a process that holds message bodies runs the thread: the one-process broker and the
workers. A process that serves AMQP in a split layout (the supervisor with ``--workers N`` and
no front-ends, a front-end) frees each body once it is in a ring or on a socket, so its heap
stops growing after the first seconds, while the thread's polls (then every ``POLL_MIN`` for
``BURST`` seconds after a growth, each one taking the GIL from the loop) cost ~20 ms of CPU a
second in every process that ran it (bench/RING_RESULTS.md, issue 8); such a process sets
glibc's parameters only (``start(thread=False)``).

While the node's memory alarm is on, the thread populates nothing (``hold``): publishers are
blocked, so the heap is not growing with bodies, and the heap trimmer gives free pages back
every few seconds (supervisor/heap.py) -- each trim lowers the break, the next allocation
raises it again, two of those within ``BURST`` looked like a growing heap, and the thread
populated a fresh 16 MiB pad in every worker, which the alarm counts: it stayed on with the
queues empty (tests/integration/test_memory_backpressure.py, a purged queue).

Not glibc (musl, macOS), no ``MADV_POPULATE_WRITE`` (Linux before 5.14), or a main heap that
``brk`` cannot grow (glibc then maps it): nothing is changed, or the thread stops at its first
failure; the loop takes its faults itself, as it did without this.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import threading
import time

log = logging.getLogger("amqpbroker.prefault")

M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MADV_POPULATE_WRITE = 23
PAGE = 4096

TOP_PAD = 16 << 20            # bytes glibc asks brk for beyond its need, each growth
MMAP_THRESHOLD = 1 << 20      # bodies below this come from the heap
POLL_MIN = 0.002              # seconds between looks at the break while the heap grows
POLL_MAX = 0.2                # ... and at most, while it does not
FAST = 1.0                    # seconds after a growth that the heap counts as growing
BURST = 30.0                  # a growth this soon after the last one is populated


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt, sbrk, madvise = libc.mallopt, libc.sbrk, libc.madvise
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    sbrk.argtypes = [ctypes.c_ssize_t]
    sbrk.restype = ctypes.c_void_p
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return mallopt, sbrk, madvise


def _name_thread(name: bytes) -> None:
    try:
        ctypes.CDLL(None).prctl(15, name, 0, 0, 0)        # PR_SET_NAME, this thread only
    except (OSError, AttributeError):
        pass


_running: "HeapPrefaulter | None" = None       # this process's thread, if it runs one


def hold(on: bool) -> None:
    """The node's memory alarm went on (True) or off: this process's thread, if any, stops
    or resumes populating (module docstring)."""
    if _running is not None:
        _running.held = on


class HeapPrefaulter:
    """The thread that populates the main heap's growth (see the module's docstring)."""

    def __init__(self, top_pad: int = TOP_PAD):
        self.top_pad = top_pad
        self.populated = 0          # bytes populated so far
        self.calls = 0              # madvise calls that populated something
        self.covered = 0            # the heap's pages below this address are mapped
        self.looks = 0              # looks at the break so far
        self.growths = 0            # of those, how many found it moved up
        self.held = False           # the memory alarm is on: populate nothing (``hold``)
        self._stop = threading.Event()
        self._thread = None
        self._fns = _libc()

    def start(self, thread: bool = True) -> "HeapPrefaulter":
        """Set glibc's parameters and start the thread; a no-op where either is missing.
        ``thread=False``: the parameters only, for a process that holds no bodies (the
        thread's looks at the break cost ~2 % of a core while it polls, in every process)."""
        if self._fns is None or self._thread is not None:
            return self
        mallopt, sbrk, madvise = self._fns
        if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TOP_PAD, self.top_pad)):
            return self
        if not thread:
            return self
        global _running
        self._thread = threading.Thread(target=self._run, name="heap-prefault", daemon=True)
        self._thread.start()
        _running = self
        return self

    def stop(self) -> None:
        global _running
        if _running is self:
            _running = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        _name_thread(b"heap-prefault")    # as ``top -H`` and /proc/<pid>/task/*/comm show it
        _mallopt, sbrk, madvise = self._fns
        done = sbrk(0) or 0               # the break: pages below it were handed out already
        done -= done % PAGE
        grew = -BURST                     # when the break last moved up
        wait, stop = POLL_MAX, self._stop
        while not stop.wait(wait):
            self.looks += 1
            brk = sbrk(0) or 0
            brk -= brk % PAGE
            if brk <= done:
                done = brk                                # trimmed: follow it down
                if time.monotonic() - grew > FAST:       # not growing now: slow down
                    wait = min(wait * 2, POLL_MAX)
                continue
            self.growths += 1
            now = time.monotonic()
            if now - grew < FAST or brk - done > 2 * self.top_pad:
                wait = POLL_MIN           # growing: a second growth soon, or several pads
            burst, grew = now - grew < BURST, now
            if not burst or self.held:    # one growth, or the memory alarm: the loop
                done = brk                # faults this pad itself
                continue
            if madvise(done, brk - done, MADV_POPULATE_WRITE) != 0:
                err = ctypes.get_errno()
                if err == errno.ENOMEM:   # the heap shrank under us: look again
                    done = min(done, sbrk(0) or 0)
                    done -= done % PAGE
                    continue
                log.info("heap prefault off: madvise failed (%s)", errno.errorcode.get(err, err))
                return
            self.populated += brk - done
            self.calls += 1
            done = self.covered = brk
