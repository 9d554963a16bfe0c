"""Things every storage file shares: the file header, the fsync policy, directory fsync.

Every file the storage layer writes starts with an 8-byte header:

    magic    4 bytes   b"AQLG" segment log, b"AQIX" offset index, b"AQTI" time index,
                       b"AQAK" ack log, b"AQMD" definitions journal
    version  u16       schema version of that file class (big-endian): 1, but 2 for a
                       segment log written since batches carry their leader epoch (a
                       version 1 log is still read: record.py, ``log_version``)
    reserved u16       zero

A reader that finds another magic or a version it does not know refuses the file rather than
guessing (for a log segment, recovery treats it as corrupt from byte 0). All integers in all
storage files are big-endian.
"""
from __future__ import annotations

import logging
import os
import shutil
import struct
import time

from crc32c import crc32c

log = logging.getLogger("amqpbroker.storage")

HEADER = struct.Struct(">4sHH")
HEADER_SIZE = HEADER.size  # 8
SCHEMA_VERSION = 1

MAGIC_LOG = b"AQLG"
MAGIC_INDEX = b"AQIX"
MAGIC_TIMEINDEX = b"AQTI"
MAGIC_ACKLOG = b"AQAK"
MAGIC_DEFINITIONS = b"AQMD"     # the supervisor's definitions journal (supervisor/journal.py)
MAGIC_DELAYED = b"AQDL"         # messages held by delayed exchanges (supervisor/delayed.py)

FSYNC_POLICIES = ("always", "interval", "never")

# An entry file (the ack log, a partition's group offsets): the header, then entries, each
# ``u32 length, u32 crc32c(payload), payload``, appended; a torn or corrupt tail is cut at start.
ENTRY_HEAD = struct.Struct(">II")


def file_header(magic: bytes, version: int = SCHEMA_VERSION) -> bytes:
    return HEADER.pack(magic, version, 0)


def log_version(data: bytes, known=(1, 2)) -> int | None:
    """The schema version of a segment log whose file starts with `data` (one of `known`),
    None if it is not a log header of a known version."""
    if len(data) < HEADER_SIZE:
        return None
    got_magic, version, _ = HEADER.unpack_from(data)
    return version if got_magic == MAGIC_LOG and version in known else None


def header_ok(data: bytes, magic: bytes) -> bool:
    """True if `data` starts with a complete header of this file class and known version."""
    if len(data) < HEADER_SIZE:
        return False
    got_magic, version, _ = HEADER.unpack_from(data)
    return got_magic == magic and version == SCHEMA_VERSION


def entry(payload: bytes) -> bytes:
    """One entry of an entry file, as appended."""
    return ENTRY_HEAD.pack(len(payload), crc32c(payload)) + payload


def load_entry_file(path: str, magic: bytes, apply, what: str, lost: str) -> int:
    """Read an entry file into ``apply(payload) -> bool`` (False: the entry is corrupt), in
    order, and cut the file after the last good entry; returns the bytes cut. A missing file
    is created empty; an unreadable header makes a new empty file (logged with ``lost``, what
    that costs) — the caller's state then starts empty."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        write_file_atomically(path, file_header(magic))
        return 0
    if not header_ok(data, magic):
        write_file_atomically(path, file_header(magic))
        if len(data) > HEADER_SIZE or not file_header(magic).startswith(data):
            log.warning("%s: unreadable %s header; starting empty (%d bytes dropped): %s",
                        path, what, len(data), lost)
        return len(data)
    pos = HEADER_SIZE
    while pos + ENTRY_HEAD.size <= len(data):
        length, crc = ENTRY_HEAD.unpack_from(data, pos)
        payload = data[pos + 8:pos + 8 + length]
        if len(payload) != length or crc32c(payload) != crc or not apply(payload):
            break
        pos += 8 + length
    if pos < len(data):
        with open(path, "r+b") as f:
            f.truncate(pos)
            os.fsync(f.fileno())
        log.warning("%s: cut %d byte(s) of torn %s tail at position %d",
                    path, len(data) - pos, what, pos)
    return len(data) - pos


def fsync_dir(path: str | os.PathLike) -> None:
    """Make creations, renames and unlinks inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_directory(path: str) -> None:
    """Remove a directory so that a crash cannot leave it half removed under its own name:
    first renamed to ``<path>.deleted``, then removed. Whoever scans the parent removes any
    ``*.deleted`` it finds (the removal had begun). Needs no descriptor but for the fsync of
    the rename, which is best effort: a rename lost to a crash leaves the directory whole
    under its name, the safe side."""
    doomed = path if path.endswith(".deleted") else path + ".deleted"
    if doomed != path:
        shutil.rmtree(doomed, ignore_errors=True)     # an earlier removal's leftover
        os.replace(path, doomed)
        try:
            fsync_dir(os.path.dirname(path) or ".")
        except OSError:
            pass
    shutil.rmtree(doomed, ignore_errors=True)


def write_file_atomically(path: str, data: bytes) -> None:
    """Write `data` to `path` via path.tmp + fsync + rename (+ directory fsync).

    A crash leaves either the old file or the new one, plus possibly a stray `.tmp` that the
    owner's recovery deletes.
    """
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def write_all(fd: int, data: bytes) -> None:
    """os.write until everything is written (a regular file can return short on ENOSPC edge)."""
    written = os.write(fd, data)
    if written != len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view):]


IOV_MAX = 1024  # Linux's limit on buffers per writev (sysconf(SC_IOV_MAX))


def writev_all(fd: int, parts: list, size: int) -> None:
    """os.writev `parts` (`size` bytes in all) until everything is written: one syscall
    unless there are more than IOV_MAX parts or the kernel writes short."""
    if len(parts) <= IOV_MAX:
        written = os.writev(fd, parts)
        if written == size:
            return
    else:
        written = 0
    i = 0
    while i < len(parts):
        n = len(parts[i])
        if written >= n:          # this part is out already
            written -= n
            i += 1
            continue
        if written:               # partly out: the rest of it leads the next call
            parts = [memoryview(parts[i])[written:]] + parts[i + 1:]
            i = 0
        written = os.writev(fd, parts[i:i + IOV_MAX])


class FsyncPolicy:
    """When sync() really calls fsync: "always" every call, "interval" if the interval has
    elapsed since the last fsync (or the caller forces it), "never" not at all."""

    __slots__ = ("mode", "interval_s", "_last")

    def __init__(self, mode: str, interval_ms: int = 1000):
        if mode not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {FSYNC_POLICIES}, got {mode!r}")
        self.mode = mode
        self.interval_s = interval_ms / 1000.0
        self._last = time.monotonic()

    def due(self, force: bool = False) -> bool:
        if self.mode == "never":
            return False
        if self.mode == "always" or force:
            return True
        return time.monotonic() - self._last >= self.interval_s

    def done(self) -> None:
        self._last = time.monotonic()
