"""Leader epochs in the log (storage/epochs.py, record.py): every batch carries the epoch it
was written in, the epoch cache is rebuilt from the log and follows its truncation, an old
(version 1) segment is still read, and the fetch check and the follower's truncation
(KIP-101/279) bring two diverged logs to the same bytes."""
import glob
import os
import struct

import pytest
from crc32c import crc32c

from amqpbroker.cluster.replication import truncate_files
from amqpbroker.storage import PartitionLog, Record
from amqpbroker.storage.errors import CorruptRecordError
from amqpbroker.storage.epochs import EpochCache, diverging, truncation_offset
from amqpbroker.storage.fileformat import MAGIC_LOG, file_header
from amqpbroker.storage.record import BATCH_HEADER_V1, decode_header


def rec(i: int) -> Record:
    return Record(1_000 + i, "ex", f"rk.{i}", b"", b"m%d" % i)


def append(log, epoch, first, n, per_batch=1):
    for i in range(first, first + n, per_batch):
        log.append([rec(j) for j in range(i, min(i + per_batch, first + n))], epoch)


def batch_positions(data: bytes) -> list[int]:
    """Where each batch of a version 2 segment file's bytes starts."""
    pos, out = 8, []            # after the file header
    while pos < len(data):
        out.append(pos)
        pos += decode_header(data, pos).size
    return out


def log_bytes(directory) -> bytes:
    out = b""
    for p in sorted(glob.glob(os.path.join(directory, "*.log"))):
        with open(p, "rb") as f:
            out += f.read()
    return out


def test_batches_carry_the_epoch_stamped_by_default_or_given(open_log):
    log = open_log()
    log.leader_epoch = 4
    log.append([rec(0), rec(1)])
    log.append([rec(2)], 6)
    log.sync(force=True)
    assert [(b, e) for b, e, _, _ in log.read_batches(0)] == [(0, 4), (2, 6)]
    with open(glob.glob(os.path.join(log.directory, "*.log"))[0], "rb") as f:
        data = f.read()
    assert decode_header(data, 8).epoch == 4


def test_the_epoch_cache_is_rebuilt_from_the_log_across_segments(open_log, tmp_path):
    log = open_log(segment_bytes=300)
    append(log, 1, 0, 7)             # several segments of epoch 1
    append(log, 3, 7, 3)             # an epoch change inside a segment
    append(log, 5, 10, 4, per_batch=2)
    assert len(log.segment_bounds()) > 3
    live = list(log.epochs.entries)
    log.close()
    again = open_log(segment_bytes=300)
    assert again.epochs.entries == live == [(1, 0), (3, 7), (5, 10)]
    assert again.epoch_end(0) == (None, 0)
    assert again.epoch_end(1) == (1, 7)
    assert again.epoch_end(2) == (1, 7)
    assert again.epoch_end(3) == (3, 10)
    assert again.epoch_end(9) == (5, 14)
    assert again.last_epoch() == 5


def test_the_epoch_cache_follows_a_truncated_log(open_log):
    log = open_log(segment_bytes=300)
    append(log, 1, 0, 6)
    append(log, 2, 6, 6)
    append(log, 4, 12, 2)
    assert log.epochs.entries == [(1, 0), (2, 6), (4, 12)]
    cuts = log.cut_points(9)
    log.close()
    truncate_files(cuts)
    cut = open_log(segment_bytes=300)
    assert cut.end_offset == 9 and cut.epochs.entries == [(1, 0), (2, 6)]
    assert cut.epoch_end(4) == (2, 9)
    cut.append([rec(9)], 7)           # a newer epoch starts where the cut left the end
    assert cut.epochs.entries == [(1, 0), (2, 6), (7, 9)]
    # the cache's own truncation and the log start moving
    cache = EpochCache([(1, 0), (2, 6), (7, 9)])
    cache.truncate(6)
    assert cache.entries == [(1, 0)]
    cache = EpochCache([(1, 0), (2, 6), (7, 9)])
    cache.drop_before(7)
    assert cache.entries == [(2, 7), (7, 9)]
    cache.assign(5, 12)               # older than the newest: not an epoch start
    assert cache.entries == [(2, 7), (7, 9)]


def v1_batch(base: int, records: list[Record]) -> bytes:
    """A batch as a version 1 segment holds it: no leader epoch in its header."""
    body = b"".join(struct.pack(">IQBB", 19 + len(r.exchange) + len(r.routing_key)
                                + len(r.properties) + len(r.body), r.timestamp, r.flags,
                                len(r.exchange)) + r.exchange.encode()
                    + bytes([len(r.routing_key)]) + r.routing_key.encode()
                    + struct.pack(">I", len(r.properties)) + r.properties
                    + struct.pack(">I", len(r.body)) + r.body for r in records)
    stamps = struct.pack(">QQ", records[0].timestamp, max(r.timestamp for r in records))
    crc = crc32c(body, crc32c(stamps, crc32c(struct.pack(">QI", base, len(records)))))
    return BATCH_HEADER_V1.pack(32 + len(body), base, len(records), crc,
                                records[0].timestamp,
                                max(r.timestamp for r in records)) + body


def test_a_version_1_segment_is_read_as_epoch_0_and_appends_go_to_a_version_2_one(
        open_log, tmp_path):
    d = tmp_path / "p0"
    os.makedirs(d)
    with open(d / f"{0:020d}.log", "wb") as f:
        f.write(file_header(MAGIC_LOG, 1) + v1_batch(0, [rec(0), rec(1)]) + v1_batch(2, [rec(2)]))
    old = open_log()
    assert old.read(0) == [(i, rec(i)) for i in range(3)]
    assert old.epochs.entries == [(0, 0)]
    old.append([rec(3)], 2)
    assert old.segment_bounds() == [(0, 3), (3, 4)]   # rolled: the old file is not appended to
    old.close()
    again = open_log()
    assert again.read(0) == [(i, rec(i)) for i in range(4)]
    assert again.epochs.entries == [(0, 0), (2, 3)]
    assert [(b, e) for b, e, _, _ in again.read_batches(0)] == [(0, 0), (2, 0), (3, 2)]


def test_fetched_batches_are_the_records_bytes_and_copy_byte_for_byte(open_log, tmp_path):
    """``read_batches`` hands each batch's records as the log holds them (a ``RecordRun``
    of their bytes: nothing decoded) and its CRC, small and big bodies, batches of one and
    of many, and a follower appending them as they are (``append_raw``, replication.py),
    checking the CRC, writes the same bytes as the leader's."""
    leader = open_log("leader")
    big = Record(2_000, "ex", "big", b"\x90\x00", b"B" * 70_000, 1)
    leader.append([rec(0)], 1)
    leader.append([rec(1), big, rec(2)], 1)
    leader.append([rec(i) for i in range(3, 40)], 2)
    batches = leader.read_batches(0, 1 << 30, written=True)
    assert [(b, e, len(run)) for b, e, run, _ in batches] == [(0, 1, 1), (1, 1, 3), (4, 2, 37)]
    assert all(type(run.data) is bytes for _, _, run, _ in batches)
    assert batches[1][2] == [rec(1), big, rec(2)]
    leader.sync(force=True)
    with open(glob.glob(os.path.join(leader.directory, "*.log"))[0], "rb") as f:
        data = f.read()
    assert [crc for _, _, _, crc in batches] == [
        decode_header(data, pos).crc for pos in batch_positions(data)]
    follower = open_log("f")
    for base, epoch, run, crc in batches:
        assert follower.append_raw([(run.data, run.count)], epoch, crc) == base
    follower.close()
    assert log_bytes(tmp_path / "f") == log_bytes(tmp_path / "leader")


def test_a_fetched_batch_whose_crc_differs_is_not_written(open_log):
    """What a follower makes of a fetched batch must have the CRC the leader's has (the
    same base offset, epoch and records): a record changed on the way, or a batch appended
    at another offset, is refused and nothing is written."""
    leader = open_log("leader")
    leader.append([rec(0), rec(1)], 3)
    (base, epoch, run, crc), = leader.read_batches(0, written=True)
    follower = open_log("f")
    changed = run.data.replace(b"m1", b"mX")
    with pytest.raises(CorruptRecordError, match="CRC"):
        follower.append_raw([(changed, run.count)], epoch, crc)
    with pytest.raises(CorruptRecordError, match="CRC"):
        follower.append_raw([(run.data, run.count)], epoch + 1, crc)    # another stamp
    assert follower.end_offset == 0 and follower.read(0) == []
    follower.append([rec(9)], 3)                                        # another offset
    with pytest.raises(CorruptRecordError, match="offset 1 has CRC"):
        follower.append_raw([(run.data, run.count)], epoch, crc)
    assert follower.end_offset == 1
    follower.close()


def test_a_version_1_segment_is_fetched_as_its_records(open_log, tmp_path):
    """A version 1 segment's batches have a shorter header: what a fetch hands is still
    just the records, which a follower appends as version 2 batches of epoch 0."""
    d = tmp_path / "p0"
    os.makedirs(d)
    with open(d / f"{0:020d}.log", "wb") as f:
        f.write(file_header(MAGIC_LOG, 1) + v1_batch(0, [rec(0), rec(1)]) + v1_batch(2, [rec(2)]))
    old = open_log()
    follower = open_log("f")
    batches = old.read_batches(0)
    assert [crc for _, _, _, crc in batches] == [None, None]    # its CRCs cover no epoch
    for base, epoch, run, crc in batches:
        follower.append_raw([(run.data, run.count)], epoch, crc)
    assert follower.read(0) == old.read(0) == [(i, rec(i)) for i in range(3)]
    assert follower.epochs.entries == [(0, 0)]


def test_a_fetch_of_a_corrupt_batch_is_refused(open_log, tmp_path):
    log = open_log()
    log.append([rec(0)], 1)
    log.append([rec(1)], 1)
    log.sync(force=True)
    path = glob.glob(os.path.join(log.directory, "*.log"))[0]
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) - 1)          # the last byte of the second batch's body
        f.write(b"X")
    with pytest.raises(CorruptRecordError, match="CRC mismatch in batch 1"):
        log.read_batches(0)


def test_an_empty_version_1_active_segment_is_rewritten_as_version_2(open_log, tmp_path):
    d = tmp_path / "p0"
    os.makedirs(d)
    with open(d / f"{0:020d}.log", "wb") as f:
        f.write(file_header(MAGIC_LOG, 1))
    log = open_log()
    log.append([rec(0)], 3)
    assert log.segment_bounds() == [(0, 1)]
    log.close()
    with open(d / f"{0:020d}.log", "rb") as f:
        assert f.read(8) == file_header(MAGIC_LOG, 2)
    assert open_log().epochs.entries == [(3, 0)]


def follow(leader: PartitionLog, follower_dir, open_log):
    """What replication does (cluster/replication.py): fetch with the follower's end and
    last epoch, truncate by the leader's answer while it diverges, then copy the batches as
    they are. Returns the follower's offsets it was cut to."""
    follower = open_log(follower_dir)
    cuts = []
    while True:
        answer = diverging(leader, follower.last_epoch(), follower.end_offset)
        if answer is None:
            break
        cut = truncation_offset(follower, *answer)
        assert cut < follower.end_offset, "a divergence with nothing to cut"
        cuts.append(cut)
        points = follower.cut_points(cut)
        follower.close()
        truncate_files(points)
        follower = open_log(follower_dir)
    for base, epoch, run, crc in leader.read_batches(follower.end_offset, 1 << 30):
        follower.append_raw([(run.data, run.count)], epoch, crc)    # as the follower does
    follower.close()
    return cuts


def test_two_failovers_with_unreplicated_tails_kip_279(open_log, tmp_path):
    """KIP-279's case. A leads epoch 1: 0..3 reach everyone, 4..5 only B. A dies; B leads
    epoch 2 and writes 6..7, which nobody gets. B dies; C (which has 0..3) leads epoch 3 and
    writes 4..9. Then A and B return as followers: B's last epoch (2) is unknown to C; C
    answers with its epoch 1, which ends at 4 in C's log: inside B's own epoch 1 (0..5), so
    B cuts to 4, not to where its epoch 1 ends; A (epoch 1 to 5, also beyond C's 4) cuts to
    4 too. Both logs are then C's byte for byte."""
    a, b, c = open_log("a"), open_log("b"), open_log("c")
    for log in (a, b, c):
        append(log, 1, 0, 4)
    for log in (a, b):
        append(log, 1, 4, 2)
    append(b, 2, 6, 2)
    append(c, 3, 4, 6, per_batch=3)
    c.sync(force=True)
    a.close()
    b.close()
    assert diverging(c, 2, 8) == (1, 4)             # the leader's answer to B
    assert follow(c, "b", open_log) == [4]
    assert follow(c, "a", open_log) == [4]
    assert log_bytes(tmp_path / "a") == log_bytes(tmp_path / "b") == log_bytes(tmp_path / "c")


def test_truncation_repeats_until_the_logs_agree(open_log, tmp_path):
    """The follower's last epoch (3) is unknown to the leader, and so is the leader's epoch
    2 to the follower: the first answer (the leader's epoch 2, ending at 6) cuts the
    follower to where its own epoch 1 ends (5); its next fetch names epoch 1, which the
    leader ends at 3 (the follower's 3..4 were an old leader's unreplicated tail): cut
    again there, and the logs agree."""
    leader, f = open_log("leader"), open_log("f")
    for log in (leader, f):
        append(log, 1, 0, 3)
    append(leader, 2, 3, 3)
    append(leader, 4, 6, 2)       # the leader: epochs 1 (0..2), 2 (3..5), 4 (6..7)
    append(f, 1, 3, 2)
    append(f, 3, 5, 3)            # the follower: epochs 1 (0..4), 3 (5..7)
    leader.sync(force=True)
    f.close()
    assert follow(leader, "f", open_log) == [5, 3]
    assert log_bytes(tmp_path / "f") == log_bytes(tmp_path / "leader")


def test_logs_that_agree_are_not_cut(open_log):
    leader = open_log("leader")
    append(leader, 1, 0, 3)
    append(leader, 2, 3, 3)
    assert diverging(leader, 2, 6) is None and diverging(leader, 2, 4) is None
    assert diverging(leader, 1, 3) is None
    assert diverging(leader, 1, 4) == (1, 3)         # more of epoch 1 than the leader has
    assert diverging(leader, 2, 7) == (2, 6)         # past the leader's end
    assert diverging(leader, 0, 2) == (0, 0)         # an epoch older than any it holds
    assert diverging(leader, 3, 0) is None           # at the log start
