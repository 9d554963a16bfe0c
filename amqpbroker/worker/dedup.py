"""Idempotent producers and queue-level de-duplication: the rules, and the producer state file.

Theory of operation
-------------------
*Idempotent producers* (Kafka's model over AMQP headers). A publish whose headers carry
``x-producer-id`` (a string or an integer) and ``x-sequence`` (an integer >= 0) is checked
against the partition's state for that producer: the last ``WINDOW`` (5) sequence numbers
stored, with the offset each got, the last of them being the highest. ``ProducerTable.check``
decides, before the message is stored:

* no state for the producer: store (any first number: a producer's numbers may start
  anywhere, and a partition behind an ``x-partitioned`` exchange never sees most of them);
* a sequence in the window: a *duplicate*, confirmed and not stored again;
* ``highest + 1``, or with ``subsequence`` (the publish came through an ``x-partitioned``
  exchange, so this partition sees only some of the producer's numbers) anything above the
  highest: store;
* above ``highest + 1`` without ``subsequence``: a *gap* (a message before it was lost):
  refused (nacked; without confirms dropped and logged);
* below the highest and not in the window: *out of order* (older than the window, or a
  number the partition never stored): refused.
A stream-protocol publisher with a reference (``contract.PUB_LATEST``, stream_protocol/)
follows RabbitMQ's stream rule instead: a number above the highest is stored, any other is
a duplicate. ``ProducerTable.stored`` then records the number with its offset. Headers with a producer id
but no integer sequence are refused: the producer asked for idempotence and cannot have it.

Several messages may share one sequence number (a stream-protocol sub-entry,
stream_protocol/sub_entry.py): each but the last carries ``x-sequence-continues: true``. They
are checked as the last is, but only the last records the number, so a retry of the whole
group is a duplicate in every message of it, and a group cut short by a crash before its
last message was stored is stored again whole (its first messages twice: at least once).

*Queue-level de-duplication* (``x-message-deduplication: true``, the RabbitMQ plugin's):
``QueueKeys`` maps the key of each message in the queue (ready or unacked) to its offset; a
publish whose key is there is a duplicate, and the key is forgotten when its message leaves
the queue (acked, expired, dropped, dead-lettered, purged), as the plugin deletes the cache
entry on ack. The key is header ``x-deduplication-header`` when present, else the
``message_id`` property; a message with neither is never a duplicate. Nothing is written for
it: at open the queue rebuilds it from the messages it recovers, which are exactly the
messages "in the queue".

The producer state file
-----------------------
Where producer state lives was a choice: rebuilt from the log's tail at start, or a file of
its own. The tail cannot do it here: a classic queue deletes a segment once every message in
it is acked, so a producer whose messages were all consumed has nothing left in the log, and
its next retry would be stored again. So each durable queue that has seen a producer keeps
``producers.log`` beside its segments, a small compacted log:

    header   8 bytes    b"AQPR", version u16 = 1, reserved u16 (``storage/fileformat.py``)
    entry    u32 length of payload, u32 CRC32C of payload, payload:
             u8 id kind (0 str, 1 int), u16 id length, id bytes (UTF-8 or signed decimal),
             u64 sequence, u64 offset of the message it was stored as

Every stored sequence appends one entry, written by the queue's ``flush`` in the same commit
round as the message (after it: the log is written first) and fsynced by the same round's
``sync``, before the round's confirms go out: a confirm means the message and its producer
state are both durable. Replaying the entries in order rebuilds each producer's window. The
file is opened by ``flush`` and closed by ``sync``, so a queue holds its descriptor only
within a commit round (idle queues hold none: the open-files budget of storage/filecache.py);
a failed append is cut back, so no torn entry can hide the entries written after it.

Compaction: once the file holds more than ``COMPACT_ENTRIES`` entries and four times the live
ones, the next ``flush`` takes a snapshot of the live entries (on the event loop, where the
state is) and ``sync`` (the fsync thread) writes it to ``producers.log.tmp``, fsyncs it and
renames it over the file; appends go to the new file from the next round on.

Crash states and what opening does with them:

* a torn tail (killed mid-write): the entries up to the first bad length or CRC are kept, the
  file is cut there;
* entries ahead of the log (the OS kept the entry but not the message's batch, or the log's
  torn tail was cut by recovery): an entry whose offset is not below the log's end is dropped
  (and the file rewritten), so a retry of that message is stored again, not confirmed as a
  duplicate of a message that is gone;
* a leftover ``producers.log.tmp`` (killed during compaction, before the rename): deleted; the
  rename is atomic, so ``producers.log`` is the old file or the new one, whole.
A non-durable queue keeps its producers in memory only (its files are wiped at start anyway).
"""
from __future__ import annotations

import logging
import os
import struct
import threading
from collections import deque

from crc32c import crc32c

from ..protocol import properties as props_mod
from ..storage.fileformat import HEADER_SIZE, file_header, fsync_dir, header_ok, write_all

log = logging.getLogger("amqpbroker.dedup")

WINDOW = 5                  # sequences remembered per producer and partition (Kafka's 5)
CATCH_UP_RECORDS = 65536    # log records read at open for producers whose entries a crash lost
RECENT = 4096               # newest stored sequences kept for the replication's fetch replies
COMPACT_ENTRIES = 4096      # entries in the file before compaction is considered
MAGIC = b"AQPR"
FILE_NAME = "producers.log"
_ENTRY_HEAD = struct.Struct(">II")          # payload length, crc32c(payload)
_ID_HEAD = struct.Struct(">BH")             # id kind, id length
_SEQ_OFFSET = struct.Struct(">QQ")
MAX_ENTRY = 3 + 0xFFFF + 16

# verdicts of ProducerTable.check
STORE = "store"
DUPLICATE = "duplicate"
GAP = "gap"
OUT_OF_ORDER = "out of order"
INVALID = "invalid"

PRODUCER_ID = "x-producer-id"
SEQUENCE = "x-sequence"
CONTINUES = "x-sequence-continues"
DEDUP_HEADER = "x-deduplication-header"


# ================================================================== headers
_NAMES = frozenset((PRODUCER_ID, SEQUENCE, CONTINUES, DEDUP_HEADER))


def _headers_and_id(raw: bytes):
    try:
        return props_mod.pick(raw, _NAMES)
    except ValueError:
        return {}, None


def producer_of(raw_properties: bytes):
    """(producer id, sequence, continues) of a publish, or (producer id, None, False) if its
    sequence is not an integer >= 0, or None if it names no producer. A producer id is a str
    or an int; ``continues``: header ``x-sequence-continues`` is true (more messages of this
    sequence follow)."""
    headers, _ = _headers_and_id(raw_properties)
    pid = headers.get(PRODUCER_ID)
    if isinstance(pid, (bytes, bytearray)):
        pid = bytes(pid).decode(errors="replace")
    if pid is None or isinstance(pid, bool) or not isinstance(pid, (str, int)):
        return None if pid is None else (repr(pid), None, False)
    seq = headers.get(SEQUENCE)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or seq >= 1 << 64:
        return pid, None, False
    return pid, seq, headers.get(CONTINUES) is True


def dedup_key(raw_properties: bytes):
    """The de-duplication key of a message: header ``x-deduplication-header`` (the plugin's),
    else the ``message_id`` property; None if it has neither."""
    headers, message_id = _headers_and_id(raw_properties)
    key = headers.get(DEDUP_HEADER)
    if key is None:
        return message_id
    if isinstance(key, (bytearray, list)):
        key = repr(key)                  # unhashable: any stable form will do
    elif isinstance(key, dict):
        key = repr(sorted(key.items()))
    return key


# ================================================================== producer state
class ProducerTable:
    """The producers of one partition: id -> deque of (sequence, offset), oldest first, at
    most WINDOW long. With a ``directory`` it is kept in ``producers.log`` there."""

    def __init__(self, directory: str | None = None, *, end_offset: int = 0,
                 fsync: bool = True):
        self.producers: dict = {}
        # (offset, pid, seq) of the newest stored sequences, oldest first: a leader's fetch
        # replies carry those of the records they carry (cluster/replication.py)
        self.recent: deque = deque(maxlen=RECENT)
        self.path = os.path.join(directory, FILE_NAME) if directory else None
        self.fsync = fsync
        self._pending: list[bytes] = []      # entries for the next flush
        self._snapshot: bytes | None = None  # a compaction for the next sync
        self._fd = -1
        self._entries = 0                    # entries in the file
        self._unsynced = False
        # ``sync`` runs in the fsync thread, ``flush`` and ``close`` on the event loop: the
        # lock keeps the descriptor from being closed (and its number reused) under an
        # fsync, and a sync after ``close`` (a queue deleted during its round) does nothing
        self._lock = threading.Lock()
        self._closed = False
        if self.path is not None:
            self._open(end_offset)

    # ------------------------------------------------------------ rules
    def check(self, pid, seq, subsequence: bool = False, latest: bool = False) -> str:
        """What to do with sequence ``seq`` of producer ``pid`` (see the module comment).
        ``latest``: RabbitMQ's stream-protocol rule (a publisher reference's publishing ids):
        above the highest is stored, anything else is a duplicate."""
        if seq is None:
            return INVALID
        window = self.producers.get(pid)
        if not window:
            return STORE
        highest = window[-1][0]
        if latest:
            return STORE if seq > highest else DUPLICATE
        if seq > highest:
            return STORE if subsequence or seq == highest + 1 else GAP
        for s, _ in window:
            if s == seq:
                return DUPLICATE
        return OUT_OF_ORDER

    def stored(self, pid, seq: int, offset: int) -> None:
        """Sequence ``seq`` of ``pid`` was stored at ``offset`` (after ``check`` said STORE)."""
        self._apply(pid, seq, offset)
        self.recent.append((offset, pid, seq))
        if self.path is not None:
            self._pending.append(_entry(pid, seq, offset))

    def stored_between(self, first: int, end: int) -> list | None:
        """(offset, pid, seq) of the sequences stored at offsets in [first, end) that
        ``recent`` still holds, oldest first; None when there are none."""
        out = []
        for entry in reversed(self.recent):
            if entry[0] < first:
                break
            if entry[0] < end:
                out.append(entry)
        out.reverse()
        return out or None

    def copy(self, entries, end: int) -> bool:
        """A follower takes the leader's entries (``stored_between``) for the records it
        has (below ``end``): its own ``producers.log``, so it leads with the producers'
        state. True when that recorded any (to flush and sync)."""
        found = False
        for offset, pid, seq in entries or ():
            if offset < end and self.offset_of(pid, seq) is None:
                self.stored(pid, seq, offset)
                found = True
        return found

    def highest(self, pid) -> int | None:
        """The highest sequence stored for producer ``pid``, None if it has none."""
        window = self.producers.get(pid)
        return window[-1][0] if window else None

    def offset_of(self, pid, seq: int) -> int | None:
        for s, off in self.producers.get(pid, ()):
            if s == seq:
                return off
        return None

    def catch_up(self, plog, always: bool = False) -> int:
        """After a crash the log may hold messages whose producer entries were not yet on
        disk (the round fsyncs the log, then this file): read the producers of the log's
        last records after the newest entry here, as Kafka rebuilds producer state from
        its log. Only a table with a file does it (a queue that never saw a producer has
        none), unless ``always``: a replica that starts to lead (cluster/replication.py),
        whose log was written by another leader's fetches and this file not at all. Over
        at most CATCH_UP_RECORDS records. Returns how many it recorded."""
        if not always and (self.path is None or not os.path.exists(self.path)):
            return 0
        newest = max((off for w in self.producers.values() for _, off in w), default=-1)
        offset = max(newest + 1, plog.start_offset, plog.end_offset - CATCH_UP_RECORDS)
        found = 0
        while offset < plog.end_offset:
            batch = plog.read(offset, max_records=256)
            if not batch:
                break
            for off, rec in batch:
                producer = producer_of(rec.properties)
                if producer is not None and producer[1] is not None and not producer[2]:
                    pid, seq, _ = producer
                    if self.offset_of(pid, seq) is None:
                        self.stored(pid, seq, off)
                        found += 1
            offset = batch[-1][0] + 1
        if found:
            log.info("%s: %d producer sequences recovered from the log's tail", self.path,
                      found)
        return found

    def _apply(self, pid, seq: int, offset: int) -> None:
        window = self.producers.get(pid)
        if window is None:
            window = self.producers[pid] = deque(maxlen=WINDOW)
        window.append((seq, offset))

    # ------------------------------------------------------------ file
    def _open(self, end_offset: int) -> None:
        tmp = self.path + ".tmp"
        if os.path.exists(tmp):
            os.unlink(tmp)                  # a compaction cut before its rename
        if not os.path.exists(self.path):
            return                          # created at the first flush that has entries
        with open(self.path, "rb") as f:
            data = f.read()
        good, dropped = HEADER_SIZE, 0
        if not header_ok(data, MAGIC):
            log.warning("%s: unknown header; producer state starts empty", self.path)
            dropped = 1
        else:
            pos = HEADER_SIZE
            while pos + _ENTRY_HEAD.size <= len(data):
                length, crc = _ENTRY_HEAD.unpack_from(data, pos)
                payload = data[pos + 8:pos + 8 + length]
                if length > MAX_ENTRY or len(payload) != length or crc32c(payload) != crc:
                    break
                try:
                    pid, seq, offset = _parse(payload)
                except ValueError:
                    break
                pos += 8 + length
                good = pos
                if offset >= end_offset:     # its message is not in the log (any more)
                    dropped += 1
                    continue
                self._apply(pid, seq, offset)
                self._entries += 1
            if good != len(data):
                log.warning("%s: torn tail cut at byte %d of %d", self.path, good, len(data))
        if dropped:
            if dropped and header_ok(data, MAGIC):
                log.warning("%s: %d producer entries ahead of the log end %d dropped",
                            self.path, dropped, end_offset)
            self._write_snapshot(self._snapshot_bytes())
        elif good != len(data):
            os.truncate(self.path, good)
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _snapshot_bytes(self) -> bytes:
        parts = [file_header(MAGIC)]
        for pid, window in self.producers.items():
            parts.extend(_entry(pid, seq, offset) for seq, offset in window)
        return b"".join(parts)

    def _write_snapshot(self, data: bytes) -> None:
        """tmp, fsync, rename, directory fsync; appends go to the new file."""
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(os.path.dirname(self.path))
        self._entries = sum(len(w) for w in self.producers.values())

    def flush(self) -> None:
        """Write the entries of this round (event-loop thread, after the log's write)."""
        if not self._pending:
            return
        with self._lock:
            if not self._closed:
                self._flush_locked()

    def _flush_locked(self) -> None:
        if self._fd < 0:
            new = not os.path.exists(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if new or os.fstat(self._fd).st_size == 0:
                write_all(self._fd, file_header(MAGIC))
                if new:
                    fsync_dir(os.path.dirname(self.path))
        data = b"".join(self._pending)
        size = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            write_all(self._fd, data)
        except OSError:          # pending for the retry; no torn entry before later ones
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            raise
        self._entries += len(self._pending)
        self._pending = []
        self._unsynced = True
        live = sum(len(w) for w in self.producers.values())
        if self._entries > COMPACT_ENTRIES and self._entries > 4 * live:
            self._snapshot = self._snapshot_bytes()

    def sync(self) -> None:
        """fsync what ``flush`` wrote and close the file, then compact if due (fsync
        thread). The descriptor is held only from ``flush`` to ``sync``, within one commit
        round: an idle queue holds none (the open-files budget, storage/filecache.py).
        After ``close`` it does nothing: the queue is gone or its shutdown synced it."""
        with self._lock:
            if self._closed:
                return
            if self._unsynced and self.fsync:
                if self._fd < 0:                 # a failed fsync's retry
                    self._fd = os.open(self.path, os.O_WRONLY)
                os.fsync(self._fd)               # raises: still owed, the committer retries
            self._unsynced = False
            self._close_fd()
            snapshot, self._snapshot = self._snapshot, None
            if snapshot is not None:
                self._write_snapshot(snapshot)

    def close(self) -> None:
        """Release the descriptor (after the fsync under way, if any); nothing is written
        or synced from now on."""
        with self._lock:
            self._closed = True
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def _entry(pid, seq: int, offset: int) -> bytes:
    if isinstance(pid, int):
        kind, raw = 1, str(pid).encode()
    else:
        kind, raw = 0, pid.encode(errors="surrogatepass")[:0xFFFF]
    payload = _ID_HEAD.pack(kind, len(raw)) + raw + _SEQ_OFFSET.pack(seq, offset)
    return _ENTRY_HEAD.pack(len(payload), crc32c(payload)) + payload


def _parse(payload: bytes):
    if len(payload) < _ID_HEAD.size + _SEQ_OFFSET.size:
        raise ValueError("short entry")
    kind, n = _ID_HEAD.unpack_from(payload)
    raw = payload[3:3 + n]
    if len(payload) != 3 + n + _SEQ_OFFSET.size or kind not in (0, 1):
        raise ValueError("bad entry")
    pid = int(raw) if kind == 1 else raw.decode(errors="surrogatepass")
    seq, offset = _SEQ_OFFSET.unpack_from(payload, 3 + n)
    return pid, seq, offset


# ================================================================== queue keys
class QueueKeys:
    """x-message-deduplication: the keys of the messages in the queue (ready or unacked)."""

    def __init__(self):
        self.offsets: dict = {}     # key -> offset
        self.keys: dict = {}        # offset -> key

    def __contains__(self, key) -> bool:
        return key in self.offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def add(self, key, offset: int) -> None:
        self.offsets[key] = offset
        self.keys[offset] = key

    def discard(self, offset: int) -> None:
        key = self.keys.pop(offset, None)
        if key is not None and self.offsets.get(key) == offset:
            del self.offsets[key]

    def clear(self) -> None:
        self.offsets.clear()
        self.keys.clear()
