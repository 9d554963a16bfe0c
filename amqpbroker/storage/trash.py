"""Removing a deleted partition's directory off the caller's path.

Theory of operation
-------------------
``discard_directory(path)`` renames the directory to a trash name beside it,
``<path>.<8 hex>.deleted``, and returns: the name is free at once (a queue declared again
under it gets a new, empty directory), and the old files go in the background. A remover
thread, started when there is work and ended when there is none (not a daemon: an exiting
process finishes what it was given), takes every directory owed, fsyncs each parent once for
the whole batch (the renames' durability) and removes them.

Crash states: a directory under its trash name, whole or partly removed — whoever scans the
parent removes any ``*.deleted`` it finds (``supervisor/owner.py`` does at start for the
queues, the transient directory is wiped whole), since its removal had begun. A rename not
yet durable when the process died leaves the directory under its old name; the deletion
that asked for it is recorded after the rename (the definitions journal's fsync, on the
metadata owner), and ext4 and XFS commit metadata changes in order, so there the journal
entry is never durable without the rename. Elsewhere the directory would be kept and
reported as belonging to no queue (issue 9's rule: nothing is removed unless the
definitions say so), never lost.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading

from .fileformat import fsync_dir

log = logging.getLogger("amqpbroker.storage")

_lock = threading.Lock()
_owed: list[str] = []                   # trash directories waiting for the remover
_remover: threading.Thread | None = None
_idle = threading.Condition(_lock)      # notified when the remover has nothing left


def discard_directory(path: str) -> str:
    """Rename ``path`` to its trash name and have it removed in the background; returns the
    trash name. A missing ``path`` is nothing to do (returns "")."""
    global _remover
    doomed = f"{path}.{os.urandom(4).hex()}.deleted"
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return ""
    with _lock:
        _owed.append(doomed)
        if _remover is None:
            _remover = threading.Thread(target=_remove_owed, name="trash-remover")
            _remover.start()
    return doomed


def _remove_owed() -> None:
    global _remover
    while True:
        with _lock:
            batch = _owed[:]
            del _owed[:]
            if not batch:
                _remover = None
                _idle.notify_all()
                return
        for parent in {os.path.dirname(p) for p in batch}:
            try:
                fsync_dir(parent)
            except OSError as exc:          # the rename stands; only its durability waits
                log.debug("fsync of %s failed: %s", parent, exc)
        for doomed in batch:
            shutil.rmtree(doomed, ignore_errors=True)


def wait_removed(timeout: float | None = None) -> bool:
    """Block until every directory discarded so far is removed (tests, shutdown); False on
    timeout."""
    with _lock:
        return _idle.wait_for(lambda: _remover is None and not _owed, timeout)
