"""A child process's heartbeat, which its supervisor's watchdog reads (supervisor/process.py).

A worker or front-end whose event loop stops running (a deadlock, an endless loop, SIGSTOP)
keeps its queues and connections, and its node keeps its etcd lease: nothing fails, nothing
moves, and the clients wait forever. So each child counts beats into 8 bytes of memory it
shares with the supervisor (a ``memfd`` the supervisor made and passed, mapped on both
sides): a timer of its event loop beats every ``EVERY`` seconds, and work that holds the
loop for long on purpose beats as it goes (``beat()``: a worker opening its queues after a
restart, each queue's recovery). The supervisor looks at the count every second and kills
(SIGKILL) a child whose count has not moved for ``--watchdog-timeout`` seconds; its usual
restart follows (``ChildProcess._exited``), as after any crash.

Shared memory, not a ping on the control channel: a ping is answered only between the
loop's turns, so a worker recovering thousands of queues in one turn would look hung.
"""
from __future__ import annotations

import mmap
import os
import struct

EVERY = 0.5                     # seconds between a child's beats from its event loop
COUNT = struct.Struct("=Q")

_mine: "Heart | None" = None    # this child's, once ``start`` ran


class Heart:
    """The child's side: beats into the supervisor's memfd."""

    def __init__(self, fd: int):
        self.memory = mmap.mmap(fd, COUNT.size)
        os.close(fd)
        self.count = 0
        self._timer = None
        self._loop = None

    def beat(self) -> None:
        self.count += 1
        COUNT.pack_into(self.memory, 0, self.count)

    def _tick(self) -> None:
        self.beat()
        self._timer = self._loop.call_later(EVERY, self._tick)

    def start(self, loop) -> None:
        self._loop = loop
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def start(fd: int | None, loop) -> None:
    """Beat into ``fd`` (the spec's ``heartbeat``; None: no watchdog reads us) from ``loop``."""
    global _mine
    if fd is None:
        return
    _mine = Heart(fd)
    _mine.start(loop)


def beat() -> None:
    """A beat from work that holds the event loop (no-op without a heartbeat)."""
    if _mine is not None:
        _mine.beat()


class Monitor:
    """The supervisor's side of one child's heartbeat: the memfd to pass (``fd``, closed here
    once the child has it: ``spawned``), and the count as the child last wrote it."""

    def __init__(self):
        self.fd = os.memfd_create("amqpbroker-heartbeat", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, COUNT.size)
        self.memory = mmap.mmap(self.fd, COUNT.size)

    def spawned(self) -> None:
        os.close(self.fd)
        self.fd = -1

    def count(self) -> int:
        return COUNT.unpack_from(self.memory, 0)[0]

    def close(self) -> None:
        if self.fd >= 0:
            self.spawned()
        self.memory.close()
