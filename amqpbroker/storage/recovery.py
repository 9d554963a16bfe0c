"""Opening a partition directory: finish interrupted operations, verify, cut, rebuild.

Theory of operation
-------------------
`recover_partition(directory)` runs every time a PartitionLog opens, clean shutdown or not
(there is no "clean shutdown" marker to trust; the checks below are cheap enough):

1. Leftovers by suffix, as Kafka's LogLoader does: `*.deleted` (a retention/deletion that was
   decided) and `*.cleaned` / `*.tmp` (an unfinished rewrite whose original is intact) are
   deleted; a `<base>.log.swap` (a finished replacement whose final rename was lost) is renamed
   into place and its indexes dropped so they are rebuilt; index `.swap` files are deleted.
   Index files without a `.log` are orphans and are deleted. Other names are left alone.
2. Segments are loaded in base-offset order; each must start where the previous ended, or
   after a gap the caller vouches for: a classic queue's store deletes any segment whose
   messages are all settled (worker/store.py), and passes `gap_settled(first, end)`, which is
   True when its ack log records every offset of [first, end) as done. Any other gap is damage.
   * Closed segments: the indexes are loaded and sanity-checked (index.py); the batches from
     the last offset-index entry to EOF are walked and CRC-checked. If anything disagrees the
     segment is fully scanned and its indexes rebuilt from the log.
   * The active (last) segment is always fully scanned and its indexes compared with, and if
     needed replaced by, the ones rebuilt from the scan.
3. A full scan stops at the first batch whose length is implausible or runs past EOF, whose
   CRC does not match, or whose base offset is not the expected next offset. Everything from
   there to EOF is cut (ftruncate + fsync). If that happens in a closed segment, or a segment
   does not start where its predecessor ended, every later segment is deleted: offsets must
   stay contiguous, and the cut segment becomes the active one.

4. No segment at all (a new partition, or one whose files a crash took before anything was
   fsynced into them: its first segment's files are made by the first append, without an
   fsync, and a missing, short or empty file is what a crash can leave of them) -> a first,
   empty segment with no files yet (``Segment.create_lazily``, ``report.created``;
   PartitionLog makes its files at the first append, and the directory if missing, and their
   names durable with the first records it fsyncs). A missing directory is not made here: a
   queue declared and never written to costs no directory and no file.

What is *not* detected at open: bit rot in the middle of a closed segment that leaves its tail
intact. read() verifies the CRC of every batch it decodes and raises CorruptRecordError.

`RecoveryReport.records_truncated` counts the records of valid batches that were discarded
(those in deleted segments); the records in a torn or garbled region cannot be counted and
show up only in `bytes_truncated`, which also includes the size of deleted segments.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Callable

from .filecache import FileCache
from .fileformat import HEADER_SIZE, MAGIC_LOG, file_header, fsync_dir, log_version
from .record import LOG_VERSION, crc_ok, decode_header, header_plausible
from .segment import Segment

log = logging.getLogger("amqpbroker.storage")

_NAME = re.compile(r"^(\d{20})\.(log|index|timeindex)(?:\.(swap|deleted|cleaned|tmp))?$")


@dataclass
class RecoveryReport:
    bytes_truncated: int = 0
    records_truncated: int = 0
    segments_deleted: int = 0
    indexes_rebuilt: int = 0
    created: bool = False           # no segment was there: a first, empty one was made
    messages: list[str] = field(default_factory=list)

    @property
    def data_cut(self) -> bool:
        return bool(self.bytes_truncated or self.records_truncated or self.segments_deleted)


def recover_partition(directory: str, index_interval_bytes: int,
                      gap_settled: Callable[[int, int], bool] | None = None, *,
                      files: FileCache, durable: bool,
                      ) -> tuple[list[Segment], RecoveryReport]:
    """Bring `directory` to a consistent state and return its segments (last = active).

    `gap_settled(first, end)`: True if the offsets [first, end) missing between two segments
    were deleted on purpose (all settled); without it every gap is damage. `files` and
    `durable` are the segments' (segment.py). Recovery reads and repairs through short-lived
    descriptors of its own; the segments it returns hold none."""
    report = RecoveryReport()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        names = None                # a new partition: its first append makes the directory
    bases = []
    if names:
        if _finish_interrupted_operations(directory, names, report):
            names = os.listdir(directory)
        bases = sorted(int(m.group(1)) for m in map(_NAME.match, names)
                       if m and m.group(2) == "log" and m.group(3) is None)
    segments: list[Segment] = []
    for i, base in enumerate(bases):
        if segments and base != segments[-1].next_offset and not (
                base > segments[-1].next_offset and gap_settled is not None
                and gap_settled(segments[-1].next_offset, base)):
            report.messages.append(
                f"segment {base} does not start at {segments[-1].next_offset}, where the "
                f"previous one ends, and the offsets between were not all settled: deleting "
                f"it and every later segment")
            _delete_segments(directory, bases[i:], index_interval_bytes, report, files)
            break
        seg = Segment(directory, base, index_interval_bytes, files, durable)
        is_last = i == len(bases) - 1
        cut = _load_segment(seg, is_last, report)
        segments.append(seg)
        if cut and not is_last:
            report.messages.append(
                f"segment {base} was cut inside the log: deleting the {len(bases) - i - 1} "
                f"later segment(s) to keep offsets contiguous")
            _delete_segments(directory, bases[i + 1:], index_interval_bytes, report, files)
            break
    if not segments:        # a new partition (or one whose files a crash took before any
        # fsync: the definitions say it exists, so it comes back empty)
        report.created = True
        segments.append(Segment.create_lazily(directory, 0, index_interval_bytes, files,
                                              durable))
    if report.messages and names is not None:
        fsync_dir(directory)
    level = logging.WARNING if report.data_cut else logging.INFO
    for message in report.messages:
        log.log(level, "%s: %s", directory, message)
    return segments, report


def _finish_interrupted_operations(directory: str, names: list[str],
                                   report: RecoveryReport) -> bool:
    """Finish or undo what a crash interrupted; True if that changed any name."""
    names = sorted(names)
    done = len(report.messages)
    logs = set()
    for name in names:
        m = _NAME.match(name)
        if not m:
            continue
        suffix, path = m.group(3), os.path.join(directory, name)
        if suffix in ("deleted", "cleaned", "tmp") or (suffix == "swap" and m.group(2) != "log"):
            os.unlink(path)
            report.messages.append(f"removed leftover {name}")
        elif m.group(2) == "log":
            logs.add(m.group(1))
    for name in names:
        m = _NAME.match(name)
        if m and m.group(3) == "swap" and m.group(2) == "log":
            stem = os.path.join(directory, m.group(1))
            os.replace(stem + ".log.swap", stem + ".log")
            for ext in (".index", ".timeindex"):
                if os.path.exists(stem + ext):
                    os.unlink(stem + ext)
            report.messages.append(f"completed the swap of {name} into place")
    for name in names:
        m = _NAME.match(name)
        if m and m.group(3) is None and m.group(2) != "log" and m.group(1) not in logs:
            os.unlink(os.path.join(directory, name))
            report.messages.append(f"removed orphan index {name}")
    return len(report.messages) > done


def _load_segment(seg: Segment, is_last: bool, report: RecoveryReport) -> bool:
    """Load `seg`'s state from disk; True if data was cut from its log."""
    fd = os.open(seg.log_path, os.O_RDWR)
    try:
        file_size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER_SIZE, 0)
        version = log_version(head)
        if version is None:
            return _reset_header(seg, fd, head, file_size, report)
        seg.version = version
        if not is_last and _load_trusting_indexes(seg, fd, file_size):
            return False
        seg.offset_index.clear()
        seg.time_index.clear()
        valid_end = _scan(seg, fd, file_size)
        cut = valid_end < file_size
        if not is_last and not cut:  # a cut segment becomes the active one: no seal
            seg.seal_time_index()
        if cut:
            os.ftruncate(fd, valid_end)
            os.fsync(fd)
            report.bytes_truncated += file_size - valid_end
            report.messages.append(
                f"{os.path.basename(seg.log_path)}: cut {file_size - valid_end} byte(s) after "
                f"position {valid_end} (torn or corrupt batch); log now ends at offset "
                f"{seg.next_offset}")
        _rewrite_indexes_if_stale(seg, report, closed=not is_last and not cut)
        if is_last and seg.is_empty and seg.version != LOG_VERSION:
            _upgrade_header(seg, fd)    # nothing in it yet: appends go in the new layout
        return cut
    finally:
        os.close(fd)


def _scan(seg: Segment, fd: int, file_size: int) -> int:
    """Walk every batch from the header; account the valid ones; return where validity ends."""
    pos = HEADER_SIZE
    for batch_pos, h, batch in seg.iter_batches(HEADER_SIZE, file_size, fd):
        if h.base_offset != seg.next_offset or not crc_ok(batch):
            break
        seg.note_batch(batch_pos, h)
        pos = batch_pos + h.size
    return pos


def _load_trusting_indexes(seg: Segment, fd: int, file_size: int) -> bool:
    """Accept a closed segment's indexes after sanity checks and a CRC walk of its tail."""
    oi, ti = seg.offset_index, seg.time_index
    if not (oi.load() and ti.load()) or not ti.values:
        return False
    if oi.values and (oi.values[0] < HEADER_SIZE or oi.values[-1] >= file_size):
        return False
    start_pos, expected = seg.position_for(seg.base_offset + (1 << 32))
    pos, max_ts = start_pos, -1
    for batch_pos, h, batch in seg.iter_batches(start_pos, file_size, fd):
        if h.base_offset != expected or not crc_ok(batch):
            return False
        expected, pos, max_ts = h.next_offset, batch_pos + h.size, max(max_ts, h.max_ts)
    sealed_ts, sealed_count = ti.keys[-1], ti.values[-1]
    if pos != file_size or sealed_count != expected - seg.base_offset or max_ts > sealed_ts:
        return False
    first = os.pread(fd, seg.head_size, HEADER_SIZE)
    if len(first) < seg.head_size or not header_plausible(
            decode_header(first, 0, seg.version), seg.version):
        return False
    seg.first_timestamp = decode_header(first, 0, seg.version).first_ts
    seg.max_timestamp, seg.next_offset, seg.size = sealed_ts, expected, file_size
    return True


def _upgrade_header(seg: Segment, fd: int) -> None:
    """An empty active segment of an older version (only its header): rewritten as the
    current version, so that its batches carry their epoch."""
    os.pwrite(fd, file_header(MAGIC_LOG, LOG_VERSION), 0)
    os.fsync(fd)
    seg.version = LOG_VERSION


def _reset_header(seg: Segment, fd: int, head: bytes, file_size: int,
                  report: RecoveryReport) -> bool:
    """The log's header is missing or wrong: the segment keeps no data."""
    header = file_header(MAGIC_LOG, LOG_VERSION)
    os.ftruncate(fd, 0)
    os.pwrite(fd, header, 0)
    os.fsync(fd)
    name = os.path.basename(seg.log_path)
    cut = file_size > HEADER_SIZE or not header.startswith(head)
    if cut:
        report.bytes_truncated += max(0, file_size - HEADER_SIZE)
        report.messages.append(f"{name}: bad file header; cut all {file_size} byte(s)")
    else:
        report.messages.append(f"{name}: header incomplete (crash while creating); rewritten")
    seg.offset_index.clear()
    seg.time_index.clear()
    _rewrite_indexes_if_stale(seg, report)
    return cut


def _rewrite_indexes_if_stale(seg: Segment, report: RecoveryReport,
                              closed: bool = False) -> None:
    """Rewrite an index whose file does not hold its entries; a closed segment's must
    exist even if empty (the next open trusts them: ``_load_trusting_indexes``)."""
    for index in (seg.offset_index, seg.time_index):
        if not index.matches_file() or (closed and not os.path.exists(index.path)):
            index.rewrite()
            report.indexes_rebuilt += 1
            report.messages.append(f"rebuilt {os.path.basename(index.path)} from the log")


def _delete_segments(directory: str, bases: list[int], index_interval_bytes: int,
                     report: RecoveryReport, files: FileCache) -> None:
    for base in bases:
        seg = Segment(directory, base, index_interval_bytes, files, False)
        fd = os.open(seg.log_path, os.O_RDONLY)
        try:
            file_size = os.fstat(fd).st_size
            version = log_version(os.pread(fd, HEADER_SIZE, 0))
            if version is not None:
                seg.version = version
                for _, h, batch in seg.iter_batches(HEADER_SIZE, file_size, fd):
                    if not crc_ok(batch):
                        break
                    report.records_truncated += h.count
        finally:
            os.close(fd)
        seg.delete_files()
        report.segments_deleted += 1
        report.bytes_truncated += file_size
