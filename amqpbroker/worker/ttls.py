"""The message TTLs a queue ran under, by the offset each applies from, kept across restarts.

RabbitMQ stamps a message's expiry when it is queued: a policy that sets, changes or removes
``message-ttl`` applies to messages queued after it, not to the backlog (policies.py;
checked against RabbitMQ 3.10). A queue here computes expiry from the message's timestamp
and the TTL of its offset (``Queue._ttl_of``), so it keeps every TTL regime that still has
messages: ``[(from_offset, ttl or None), ...]``, ascending. Without a record of them a
restart opened the queue with the TTL of the time for every message still queued: a backlog
queued with no TTL expired at the first read after a TTL policy and a restart.

A durable queue writes the list to ``message-ttls.json`` in its directory when a regime
begins (tmp, fsync, rename, directory fsync: a policy change is rare), and reads it at open.
Regimes whose messages are all gone are dropped when the next one is written. A missing or
unreadable file (a queue from before this, a torn ``.tmp``) means one regime: the queue's
TTL of the time, as before.
"""
from __future__ import annotations

import json
import logging
import os

from ..storage.fileformat import write_file_atomically

log = logging.getLogger("amqpbroker.queue")

FILE = "message-ttls.json"


def load(directory: str) -> list[tuple[int, int | None]] | None:
    """The regimes stored in ``directory``, or None (none stored, or unreadable)."""
    path = os.path.join(directory, FILE)
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
        regimes = [(int(off), None if ttl is None else int(ttl)) for off, ttl in doc["ttls"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("%s: unreadable (%s); the queue's TTL applies to every message", path, exc)
        return None
    if not regimes or regimes != sorted(regimes, key=lambda r: r[0]):
        return None
    return regimes


def save(directory: str, regimes: list[tuple[int, int | None]]) -> None:
    """Written now; a queue no message was published to yet has no directory: made here
    (its name made durable by the log's first sync, as when the log makes it)."""
    os.makedirs(directory, exist_ok=True)
    write_file_atomically(os.path.join(directory, FILE),
                          json.dumps({"ttls": [list(r) for r in regimes]}).encode())


def live(regimes: list, lowest: int) -> list:
    """``regimes`` without those that end at or below ``lowest`` (the lowest offset a
    message still queued has): the last one starting at or below it stays."""
    keep = 0
    for i, (start, _) in enumerate(regimes):
        if start <= lowest:
            keep = i
    return regimes[keep:]
