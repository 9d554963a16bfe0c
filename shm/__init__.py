"""Shared-memory transport: SPSC rings between front-ends and partition workers (DESIGN.md §3).

``Ring`` (shm.ring) is one single-producer/single-consumer ring of byte records in a POSIX
shared memory segment, implemented in C (ring.c) and bound with CFFI (``shm._ring``, built
by cffi_build/build_ring.py).  ``RingReader``/``RingWriter`` (shm.wakeup) sleep on eventfds
instead of polling.
"""
from shm.ring import Ring, RingCorrupt, RingError
from shm.wakeup import RingReader, RingWriter, close_fds, make_eventfds

__all__ = ["Ring", "RingError", "RingCorrupt", "RingReader", "RingWriter", "make_eventfds",
           "close_fds"]
