"""Group commit for new names in a directory: the files and directories made in one
directory share the fsync of it that makes their names durable.

A new partition's directory and files are made without an fsync (empty, they owe nothing);
the first sync that makes data in them durable must first make their names durable.
``name_made(directory)`` is called once a name exists in ``directory`` and returns a
ticket; ``make_durable(directory, ticket)`` fsyncs the directory unless an fsync of it that
began after the ticket was taken has already returned. So a queue's ack log and log files,
made one after the other, cost one fsync of the queue's directory, and a thousand queues
declared and then written to cost one fsync of ``queues/`` for all of them, not one each.

Only directories with names not yet covered are tracked (an entry goes when an fsync covers
every ticket of it; a ticket of a directory no longer tracked is covered).

Crash states: none of its own (it writes nothing; it only counts what an fsync covered).
"""
from __future__ import annotations

import threading

from .fileformat import fsync_dir

_lock = threading.Lock()
_made: dict[str, int] = {}      # directory -> tickets handed out
_durable: dict[str, int] = {}   # directory -> tickets covered by an fsync that returned


def name_made(directory: str) -> int:
    """A name now exists in ``directory`` (made before this call): its ticket (>= 1)."""
    with _lock:
        ticket = _made[directory] = _made.get(directory, 0) + 1
        return ticket


def make_durable(directory: str, ticket: int) -> None:
    """Return once the name of ``ticket`` is durable: fsync ``directory`` unless an fsync
    begun after the ticket was taken has already returned. Raises the fsync's OSError."""
    with _lock:
        made = _made.get(directory)
        if made is None or _durable.get(directory, 0) >= ticket:
            return
    fsync_dir(directory)            # covers every ticket handed out before it began
    with _lock:
        if _made.get(directory) == made:
            del _made[directory]    # all covered; later tickets start a new count
            _durable.pop(directory, None)
        elif directory in _made and made > _durable.get(directory, 0):
            _durable[directory] = made


def forget(directory: str) -> None:
    """``directory`` is gone (renamed to the trash): its names owe nothing any more."""
    with _lock:
        _made.pop(directory, None)
        _durable.pop(directory, None)
