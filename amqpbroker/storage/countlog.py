"""DeliveryCountLog: how many times each message of a quorum queue went back to the queue;
ModifiedLog: the properties an AMQP 1.0 ``modified`` outcome gave a message of one.

A quorum queue counts the returns of a message (a reject or nack with requeue, the unacked
messages of a closed channel) and dead-letters it once the count passes the queue's delivery
limit. RabbitMQ keeps that count in the queue's Raft log, so it survives a restart; here it is
kept beside the queue's log, in ``counts.log``, apart from the ack log (which only knows done
and not done).

File format: the 8-byte file header (magic ``AQDC``, schema version), then 16-byte entries
``offset u64 | count u32 | crc32c u32`` (the CRC covers the 12 bytes before it), big-endian.
A later entry for an offset replaces an earlier one. Entries are appended in one write per
commit round (``flush``) and fsynced per the queue's policy (``sync``); nothing is read back
while the queue runs (the counts are in memory). When the file holds more than twice the
entries that are still needed, it is rewritten as the live counts only (tmp + fsync + rename).
A missing file is no counts: it is made by the first flush that has one (header and entries
in one write, owing an fsync like any flush; the first sync also makes its name durable,
dirsync.py), so a quorum queue that never requeues costs no file and no fsync at declare.

ModifiedLog is the same file with other entries (magic ``AQMA``): ``offset u64 | size u32 |
properties | crc32c u32`` (the CRC covers what is before it): a message's AMQP 0-9-1
properties with the annotations a consumer's ``modified`` outcome merged in
(amqp10/message.py ``modified``), kept until the message is settled, as RabbitMQ keeps them
in its Raft log. Both are an ``OffsetLog``: a value per offset, the last written winning.

Crash states: a torn or corrupt tail (a write cut short) is cut at the first bad entry on
open: the counts recorded after it are lost and those messages come back with the count they
had before (the same as a requeue whose count was not durable yet); a stray ``.tmp`` of a
rewrite is removed (the old file is whole). Offsets whose messages were settled since are
dropped by the queue when it recovers (``retain``).

No descriptor is held between calls: returns are rare next to publishes and acks, and the
worker's descriptor budget (filecache.py) stays with the logs that are written all the time.
"""
from __future__ import annotations

import logging
import os
import struct
from typing import Callable

from crc32c import crc32c

from . import dirsync
from .fileformat import (HEADER_SIZE, FsyncPolicy, file_header, header_ok, write_all,
                         write_file_atomically)

log = logging.getLogger("amqpbroker.storage")

MAGIC_COUNTS = b"AQDC"
MAGIC_MODIFIED = b"AQMA"
_ENTRY = struct.Struct(">QI")
_CRC = struct.Struct(">I")
ENTRY_SIZE = _ENTRY.size + _CRC.size        # 16
COMPACT_MIN_ENTRIES = 1024


def _entry(offset: int, count: int) -> bytes:
    body = _ENTRY.pack(offset, count)
    return body + _CRC.pack(crc32c(body))


class OffsetLog:
    """A value per offset, on disk (the module comment): ``MAGIC``, ``_encode`` and
    ``_decode`` are a subclass's. ``counts``: offset -> value, in memory."""

    MAGIC = b""
    WHAT = "values"                  # what a warning calls them

    @staticmethod
    def _encode(offset: int, value) -> bytes:
        raise NotImplementedError

    @staticmethod
    def _decode(data: bytes, pos: int):
        """(offset, value, the position after the entry), or None for a torn or corrupt
        entry (or none left)."""
        raise NotImplementedError

    def __init__(self, path: str | os.PathLike, *, fsync: str = "always",
                 fsync_interval_ms: int = 1000):
        """Open (creating if needed) the log at ``path``; a torn tail is cut."""
        self.path = os.fspath(path)
        self._policy = FsyncPolicy(fsync, fsync_interval_ms)
        self.counts: dict = {}
        self.version = 0             # moves with every change of ``counts`` (replication)
        self._pending: dict[int, int] = {}
        self._entries = 0            # entries in the file (live or replaced)
        self._written = 0            # flushes since open ...
        self._synced = 0             # ... of which known to be fsynced
        self._unmade = False         # no file yet: the first flush makes it
        self._names_owed: list[tuple[str, int]] = []   # (directory, dirsync ticket)
        self._recover()

    def _recover(self) -> None:
        if os.path.exists(self.path + ".tmp"):
            os.unlink(self.path + ".tmp")       # an unfinished rewrite; the old file is whole
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            self._unmade = True     # made by the first flush: most queues never requeue
            return
        if not header_ok(data, self.MAGIC):
            log.warning("%s: unreadable header; %s start from none", self.path, self.WHAT)
            write_file_atomically(self.path, file_header(self.MAGIC))
            return
        pos = HEADER_SIZE
        while (entry := self._decode(data, pos)) is not None:
            offset, value, pos = entry
            self.counts[offset] = value
            self._entries += 1
        if pos < len(data):
            log.warning("%s: cut %d byte(s) of torn tail at position %d", self.path,
                        len(data) - pos, pos)
            with open(self.path, "r+b") as f:
                f.truncate(pos)
                os.fsync(f.fileno())

    # ---------------------------------------------------------------- values
    def set(self, offset: int, count) -> None:
        """Record ``count`` for ``offset`` (written at the next ``flush``)."""
        self.counts[offset] = count
        self._pending[offset] = count
        self.version += 1

    def forget(self, offset: int) -> None:
        """The message is settled: its count is not needed any more (in memory; the file
        forgets it at the next rewrite)."""
        if self.counts.pop(offset, None) is not None:
            self._pending.pop(offset, None)
            self.version += 1

    def retain(self, keep: Callable[[int], bool]) -> None:
        """Keep only the offsets ``keep`` accepts (recovery: the messages still queued), and
        rewrite the file if that dropped any."""
        gone = [o for o in self.counts if not keep(o)]
        for o in gone:
            del self.counts[o]
        self.version += bool(gone)
        if gone or self._entries > len(self.counts):
            self._rewrite()

    # ---------------------------------------------------------------- commit round
    def flush(self) -> None:
        """Append the counts set since the last flush (event-loop thread, no fsync)."""
        if not self._pending:
            return
        if self._entries + len(self._pending) > max(COMPACT_MIN_ENTRIES, 2 * len(self.counts)):
            self._rewrite()          # fsynced: nothing owed
            self._pending.clear()
            return
        data = b"".join(self._encode(o, n) for o, n in self._pending.items())
        if self._unmade:
            data = file_header(self.MAGIC) + data
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | (os.O_CREAT if self._unmade else 0),
                     0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                write_all(fd, data)
            except OSError:
                os.ftruncate(fd, size)     # never leave half an entry before later ones
                raise
        finally:
            os.close(fd)
        if self._unmade:            # its name is made durable with its first fsync (sync)
            self._unmade = False
            directory = os.path.dirname(os.path.abspath(self.path))
            self._names_owed = [(directory, dirsync.name_made(directory))]
        self._entries += len(self._pending)
        self._pending.clear()
        self._written += 1

    def sync(self, force: bool = False) -> None:
        """fsync what ``flush`` wrote, per the policy (worker thread)."""
        written = self._written
        if written == self._synced or not self._policy.due(force):
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        names, self._names_owed = self._names_owed, []
        try:
            for directory, ticket in names:     # shared with the names made beside it
                dirsync.make_durable(directory, ticket)
        except BaseException:
            self._names_owed = names
            raise
        self._policy.done()
        self._synced = written

    def _rewrite(self) -> None:
        if self._unmade and not self.counts:
            return                  # no file and nothing to keep: no file is the same
        data = file_header(self.MAGIC) + b"".join(self._encode(o, n)
                                                  for o, n in self.counts.items())
        write_file_atomically(self.path, data)
        self._unmade = False
        self._names_owed = []       # renamed into place, directory fsynced
        self._entries = len(self.counts)
        self._synced = self._written

    def close(self) -> None:
        """Write and fsync what is pending."""
        self.flush()
        self.sync(force=True)


class DeliveryCountLog(OffsetLog):
    """How many times each message went back to its quorum queue (16-byte entries)."""

    MAGIC = MAGIC_COUNTS
    WHAT = "delivery counts"
    _encode = staticmethod(_entry)

    @staticmethod
    def _decode(data: bytes, pos: int):
        if pos + ENTRY_SIZE > len(data):
            return None
        body = data[pos:pos + _ENTRY.size]
        if _CRC.unpack_from(data, pos + _ENTRY.size)[0] != crc32c(body):
            return None
        offset, count = _ENTRY.unpack(body)
        return offset, count, pos + ENTRY_SIZE

    def get(self, offset: int) -> int:
        return self.counts.get(offset, 0)


class ModifiedLog(OffsetLog):
    """The properties a ``modified`` outcome gave each message (entries of any size)."""

    MAGIC = MAGIC_MODIFIED
    WHAT = "modified properties"

    @staticmethod
    def _encode(offset: int, properties: bytes) -> bytes:
        body = _ENTRY.pack(offset, len(properties)) + properties
        return body + _CRC.pack(crc32c(body))

    @staticmethod
    def _decode(data: bytes, pos: int):
        if pos + _ENTRY.size > len(data):
            return None
        offset, size = _ENTRY.unpack_from(data, pos)
        end = pos + _ENTRY.size + size
        if end + _CRC.size > len(data) or \
                _CRC.unpack_from(data, end)[0] != crc32c(data[pos:end]):
            return None
        return offset, data[pos + _ENTRY.size:end], end + _CRC.size
