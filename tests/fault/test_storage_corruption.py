"""Corrupt partition files on purpose and check that recovery keeps exactly the valid prefix.

Random bytes are written from a point to EOF of the first, a middle and the last segment. The
expected survivor set is computed from the .log sizes recorded after every append (batch
boundaries), never from the storage code under test.
"""
import os
import random

import pytest

from amqpbroker.storage import PartitionLog, Record
from amqpbroker.storage.fileformat import HEADER_SIZE

# no broker here: CI's split pass would repeat it unchanged (.ci/run)
pytestmark = pytest.mark.own_layout

N = 120


def rec(i: int) -> Record:
    return Record(1_000 + i, "ex", f"rk.{i}", b"\x90\x00", bytes([i % 251]) * (i % 40), 1)


def build(path):
    """A log of N one-record batches over several segments; returns the batch boundaries as
    {segment .log path: [(file size after the batch, end offset)]}."""
    log = PartitionLog(path, segment_bytes=700, index_interval_bytes=100, fsync="never")
    boundaries: dict[str, list[tuple[int, int]]] = {}
    for i in range(N):
        log.append([rec(i)])
        name = max(n for n in os.listdir(path) if n.endswith(".log"))
        boundaries.setdefault(os.path.join(path, name), []).append((os.path.getsize(os.path.join(path, name)), i + 1))
    log.close()
    return boundaries


@pytest.mark.parametrize("which", ["first", "middle", "last"])
@pytest.mark.parametrize("seed", range(4))
def test_garbage_to_eof_cuts_to_the_valid_prefix(tmp_path, which, seed):
    rng = random.Random(f"{which}{seed}")
    path = str(tmp_path / "p")
    boundaries = build(path)
    segments = sorted(boundaries)
    assert len(segments) >= 4
    k = {"first": 0, "middle": len(segments) // 2, "last": len(segments) - 1}[which]
    victim = segments[k]
    size = os.path.getsize(victim)
    point = rng.randrange(HEADER_SIZE if seed % 2 else 0, size)
    with open(victim, "r+b") as f:
        f.seek(point)
        original = f.read(1)
        garbage = bytearray(rng.randbytes(size - point))
        garbage[0] = original[0] ^ 0xFF  # the first byte really changes
        f.seek(point)
        f.write(garbage)

    whole = [b for b in boundaries[victim] if b[0] <= point]
    base = int(os.path.basename(victim)[:20])
    keep = whole[-1][1] if whole else base
    cut_at = whole[-1][0] if whole else HEADER_SIZE
    later = segments[k + 1:]
    later_bytes = sum(os.path.getsize(s) for s in later)
    later_records = sum(len(boundaries[s]) for s in later)

    log = PartitionLog(path, segment_bytes=700, index_interval_bytes=100, fsync="always")
    try:
        report = log.recovery
        assert log.end_offset == keep
        assert log.read(0, max_records=N) == [(i, rec(i)) for i in range(keep)]
        assert report.segments_deleted == len(later)
        assert report.records_truncated == later_records
        assert report.bytes_truncated == size - cut_at + later_bytes
        assert report.data_cut and report.messages
        assert not any(os.path.exists(s) for s in later)
        # the log is writable again, and what it takes survives another reopen
        assert log.append([rec(keep)]) == keep
        log.sync()
    finally:
        log.close()
    log = PartitionLog(path, segment_bytes=700, index_interval_bytes=100)
    try:
        assert not log.recovery.messages
        assert log.read(0, max_records=N + 1) == [(i, rec(i)) for i in range(keep + 1)]
    finally:
        log.close()


def test_cut_is_logged_as_a_warning(tmp_path, caplog):
    path = str(tmp_path / "p")
    boundaries = build(path)
    last = sorted(boundaries)[-1]
    with open(last, "ab") as f:
        f.write(b"\x00\x00\x01\x00torn")
    with caplog.at_level("WARNING", logger="amqpbroker.storage"):
        PartitionLog(path).close()
    assert any("cut 8 byte(s)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("damage", ["delete", "garble", "truncate"])
@pytest.mark.parametrize("ext", [".index", ".timeindex"])
def test_damaged_index_of_a_closed_segment_is_rebuilt(tmp_path, damage, ext):
    path = str(tmp_path / "p")
    build(path)
    victim = os.path.join(path, f"{0:020d}{ext}")
    with open(victim, "rb") as f:
        pristine = f.read()
    if damage == "delete":
        os.unlink(victim)
    elif damage == "garble":
        with open(victim, "r+b") as f:
            f.seek(HEADER_SIZE + 3)
            f.write(random.Random(1).randbytes(len(pristine) - HEADER_SIZE - 3))
    else:
        with open(victim, "r+b") as f:
            f.truncate(len(pristine) - 12)
    log = PartitionLog(path, segment_bytes=700, index_interval_bytes=100)
    try:
        assert log.recovery.indexes_rebuilt >= 1 and not log.recovery.data_cut
        with open(victim, "rb") as f:
            assert f.read() == pristine
        for i in range(N):
            assert log.read(i, max_records=1) == [(i, rec(i))]
        assert log.offset_for_timestamp(1_003) == 3
    finally:
        log.close()


def test_interrupted_operations_are_finished_by_suffix(tmp_path):
    path = str(tmp_path / "p")
    boundaries = build(path)
    first, second = sorted(boundaries)[:2]
    # retention renamed the first segment's files to .deleted, then crashed
    for ext in (".log", ".index", ".timeindex"):
        os.replace(first[:-4] + ext, first[:-4] + ext + ".deleted")
    # a rewrite of the second segment finished as .swap (same content) but was not renamed in
    with open(second, "rb") as f:
        content = f.read()
    with open(second + ".swap", "wb") as f:
        f.write(content)
    for leftover in (f"{99:020d}.log.cleaned", f"{0:020d}.index.tmp", f"{99:020d}.index"):
        with open(os.path.join(path, leftover), "wb") as f:
            f.write(b"junk")
    log = PartitionLog(path, segment_bytes=700, index_interval_bytes=100)
    try:
        start = boundaries[first][-1][1]
        assert log.start_offset == start and log.end_offset == N
        assert log.read(start, max_records=N) == [(i, rec(i)) for i in range(start, N)]
        leftovers = [n for n in os.listdir(path) if not n.endswith((".log", ".index", ".timeindex"))]
        assert leftovers == [] and not os.path.exists(os.path.join(path, f"{99:020d}.index"))
        assert not log.recovery.data_cut
    finally:
        log.close()
