"""One broker per data directory.

Two brokers writing the same queue files would corrupt them: both append to one segment,
both compact one definitions journal. So the supervisor takes an exclusive ``flock`` on
``<data-dir>/.lock`` before it opens anything there (Kafka locks each log directory the same
way, and refuses to start: "Failed to acquire lock on file .lock"), and writes its pid into
the file for the message below.

The lock belongs to the open file, not to the process: the supervisor hands the locked
descriptor to each worker it starts (``WorkerProcess.start``), so the lock is held while any
process of the tree that writes the directory lives. A supervisor killed alone leaves its
workers flushing before they exit (their control channel's EOF); a broker started meanwhile
on the directory (systemd's restart) waits for them, up to ``--data-dir-wait`` seconds,
and otherwise refuses to start, in one line naming the directory and the pid that took the
lock.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time

log = logging.getLogger("amqpbroker.supervisor")

NAME = ".lock"
POLL = 0.1              # seconds between tries while another holds the lock

_held: int | None = None    # this process's locked descriptor (passed to its workers)


class DataDirInUse(OSError):
    """Another broker holds the data directory."""


def lock(data_dir: str, wait: float) -> int:
    """Take the data directory's lock, waiting up to ``wait`` seconds for another holder to
    go; ``DataDirInUse`` if it does not. Returns the locked descriptor, kept open (and so
    locked) until this process and the workers it hands it to have exited."""
    global _held
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _holder(fd)
            if time.monotonic() >= deadline:
                os.close(fd)
                raise DataDirInUse(
                    f"the data directory {data_dir} is in use by another broker (pid "
                    f"{holder or 'unknown'}, or the workers it started): a data directory "
                    f"serves one broker at a time; stop that broker or choose another "
                    f"--data-dir") from None
            if not told:
                log.warning("the data directory %s is in use by another broker (pid %s, or "
                            "the workers it started): waiting up to %.0f s for it to exit",
                            data_dir, holder or "unknown", wait)
                told = True
            time.sleep(POLL)        # polling a lock that has no wait-with-timeout
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held = fd
    return fd


def held() -> int | None:
    """The descriptor this process locked the data directory with, if it did."""
    return _held


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
