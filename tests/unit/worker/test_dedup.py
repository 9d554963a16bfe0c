"""worker/dedup.py: the producer rules against a table of cases, the producer state file in
each crash state its writers can leave (torn tail, entries ahead of the log, a compaction cut
before its rename), compaction, and the host's Pub flags (subsequence rule, and a duplicate's
confirm waiting for the commit round of the message it repeats)."""
from __future__ import annotations

import asyncio
import os
import threading

import hypothesis
import pytest

from amqpbroker import contract as c
from amqpbroker.config import Config
from amqpbroker.protocol import properties as props_mod
from amqpbroker.storage.record import Record
from amqpbroker.testing import strategies
from amqpbroker.worker import dedup
from amqpbroker.worker.dedup import (DUPLICATE, GAP, INVALID, OUT_OF_ORDER, STORE,
                                     ProducerTable, QueueKeys)
from amqpbroker.worker.host import PartitionHost
from pamqp import commands as spec


def table_with(*seqs, pid="p") -> ProducerTable:
    t = ProducerTable()
    for i, s in enumerate(seqs):
        t.stored(pid, s, i)
    return t


@pytest.mark.parametrize("stored, seq, subsequence, verdict", [
    ((), 7, False, STORE),                   # a new producer may start anywhere
    ((0, 1, 2), 3, False, STORE),
    ((0, 1, 2), 2, False, DUPLICATE),
    ((0, 1, 2), 0, False, DUPLICATE),
    ((0, 1, 2), 4, False, GAP),
    ((0, 1, 2), 4, True, STORE),             # a partition of a topic sees a subsequence
    ((0, 1, 2, 3, 4, 5, 6), 1, False, OUT_OF_ORDER),   # older than the window 2..6
    ((0, 1, 2, 3, 4, 5, 6), 1, True, OUT_OF_ORDER),
    ((0, 3, 9), 5, True, OUT_OF_ORDER),      # never stored here, below the highest
    ((0, 3, 9), 3, True, DUPLICATE),
    ((0, 1), None, False, INVALID),
])
def test_rules(stored, seq, subsequence, verdict):
    assert table_with(*stored).check("p", seq, subsequence) == verdict


def test_headers():
    def raw(headers=None, message_id=None):
        return props_mod.encode(spec.Basic.Properties(headers=headers, message_id=message_id))
    assert dedup.producer_of(raw({"x-producer-id": "a", "x-sequence": 3})) == ("a", 3, False)
    assert dedup.producer_of(raw({"x-producer-id": 9, "x-sequence": 0})) == (9, 0, False)
    assert dedup.producer_of(raw({"x-producer-id": "a", "x-sequence": 3,
                                  "x-sequence-continues": True})) == ("a", 3, True)
    assert dedup.producer_of(raw({"x-producer-id": "a", "x-sequence": 3,
                                  "x-sequence-continues": 1})) == ("a", 3, False)
    assert dedup.producer_of(raw({"x-producer-id": "a", "x-sequence": "3"})) == ("a", None,
                                                                                 False)
    assert dedup.producer_of(raw({"x-producer-id": "a"})) == ("a", None, False)
    assert dedup.producer_of(raw({"x-sequence": 1})) is None
    assert dedup.producer_of(raw()) is None
    assert dedup.dedup_key(raw({"x-deduplication-header": "h"}, "m")) == "h"
    assert dedup.dedup_key(raw({"other": 1}, "m")) == "m"
    assert dedup.dedup_key(raw()) is None


def write(directory, entries, end=1000) -> ProducerTable:
    t = ProducerTable(str(directory), end_offset=end)
    for pid, seq, offset in entries:
        t.stored(pid, seq, offset)
    t.flush()
    t.sync()
    return t


def windows(t: ProducerTable) -> dict:
    return {pid: list(w) for pid, w in t.producers.items()}


def test_state_survives_reopen(tmp_path):
    t = write(tmp_path, [("a", s, s) for s in range(8)] + [(5, 0, 8), ("5", 1, 9)])
    t.close()
    again = ProducerTable(str(tmp_path), end_offset=10)
    assert windows(again) == {"a": [(s, s) for s in range(3, 8)], 5: [(0, 8)], "5": [(1, 9)]}
    again.close()


def test_a_queue_deleted_during_its_round_is_not_synced_after_close(tmp_path):
    """The round's sync (fsync thread) may come after the queue was deleted and its
    directory trashed: it must not reopen the file (FileNotFoundError made the committer
    retry the round and raise the disk alarm)."""
    queue_dir = tmp_path / "q"
    queue_dir.mkdir()
    t = ProducerTable(str(queue_dir))
    t.stored("p", 0, 0)
    t.flush()
    t.close()
    queue_dir.rename(tmp_path / "trash")
    t.sync()
    assert not queue_dir.exists()


def test_close_during_the_fsync_keeps_its_descriptor_until_it_returns(tmp_path, monkeypatch):
    """CI saw ``queue.delete`` fail with EBADF: the loop closed the producer file while the
    fsync thread's sync was closing it too. close() now waits for the sync under way; the
    fsync's descriptor stays the file's until the fsync returns (a closed number could be
    reused by another queue's file)."""
    t = ProducerTable(str(tmp_path))
    t.stored("p", 0, 0)
    t.flush()
    in_fsync, release = threading.Event(), threading.Event()
    seen, real_fsync = [], os.fsync

    def fsync(fd):
        in_fsync.set()
        release.wait()
        seen.append(os.fstat(fd).st_ino)         # EBADF if closed under it
        real_fsync(fd)

    monkeypatch.setattr(dedup.os, "fsync", fsync)
    errors = []

    def run(fn):
        try:
            fn()
        except Exception as exc:                  # reported by the assertion below
            errors.append(exc)

    syncer = threading.Thread(target=run, args=(t.sync,))
    syncer.start()
    assert in_fsync.wait(10)
    closer = threading.Thread(target=run, args=(t.close,))
    closer.start()
    closer.join(0.2)          # not synchronisation: time for a close that does not wait
    release.set()
    syncer.join(10)
    closer.join(10)
    assert errors == []
    assert seen == [(tmp_path / dedup.FILE_NAME).stat().st_ino]
    assert t._fd == -1


@pytest.mark.parametrize("cut", [1, 5, 12, 25])
def test_a_torn_tail_is_cut_and_the_good_prefix_kept(tmp_path, cut):
    write(tmp_path, [("a", s, s) for s in range(4)]).close()
    path = tmp_path / dedup.FILE_NAME
    size = path.stat().st_size
    os.truncate(path, size - cut)            # the last entry is 28 bytes: torn
    t = ProducerTable(str(tmp_path), end_offset=10)
    assert windows(t) == {"a": [(0, 0), (1, 1), (2, 2)]}
    assert path.stat().st_size == size - 28
    t.stored("a", 3, 3)                      # appends after the cut, readable again
    t.flush()
    t.sync()
    t.close()
    again = ProducerTable(str(tmp_path), end_offset=10)
    assert windows(again) == {"a": [(0, 0), (1, 1), (2, 2), (3, 3)]}
    again.close()


def test_garbage_in_the_middle_keeps_what_precedes_it(tmp_path):
    write(tmp_path, [("a", s, s) for s in range(4)]).close()
    path = tmp_path / dedup.FILE_NAME
    data = bytearray(path.read_bytes())
    data[8 + 28 + 20] ^= 0xFF                # inside the second entry
    path.write_bytes(bytes(data))
    t = ProducerTable(str(tmp_path), end_offset=10)
    assert windows(t) == {"a": [(0, 0)]}
    t.close()


def test_entries_ahead_of_the_log_are_dropped_for_good(tmp_path):
    write(tmp_path, [("a", s, s) for s in range(6)]).close()
    t = ProducerTable(str(tmp_path), end_offset=4)       # the log lost offsets 4 and 5
    assert windows(t) == {"a": [(s, s) for s in range(4)]}
    assert t.check("a", 4) == STORE          # the retry is stored, not taken for a duplicate
    t.close()
    again = ProducerTable(str(tmp_path), end_offset=100)  # offsets reused later: still gone
    assert windows(again) == {"a": [(s, s) for s in range(4)]}
    again.close()


def test_a_compaction_cut_before_its_rename_leaves_the_old_file(tmp_path):
    write(tmp_path, [("a", 0, 0)]).close()
    (tmp_path / (dedup.FILE_NAME + ".tmp")).write_bytes(b"half a snapshot")
    t = ProducerTable(str(tmp_path), end_offset=10)
    assert windows(t) == {"a": [(0, 0)]}
    assert not (tmp_path / (dedup.FILE_NAME + ".tmp")).exists()
    t.close()


def test_compaction_keeps_the_windows_and_shrinks_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(dedup, "COMPACT_ENTRIES", 50)
    t = ProducerTable(str(tmp_path), end_offset=10_000)
    offset = 0
    for round_ in range(20):
        for pid in ("a", "b"):
            for _ in range(10):
                t.stored(pid, offset, offset)
                offset += 1
        t.flush()
        t.sync()
    size = (tmp_path / dedup.FILE_NAME).stat().st_size
    assert size < 8 + 28 * 60                # never much more than the compaction threshold
    before = windows(t)
    t.close()
    again = ProducerTable(str(tmp_path), end_offset=10_000)
    assert windows(again) == before
    again.close()


def test_queue_keys():
    k = QueueKeys()
    k.add("x", 1)
    assert "x" in k
    k.discard(1)
    assert "x" not in k and len(k) == 0


# ------------------------------------------------------------------------- through the host
class FrontEnd:
    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)


def pub(qid, seq, pid, pseq, flags):
    raw = props_mod.encode(spec.Basic.Properties(
        delivery_mode=2, headers={"x-producer-id": pid, "x-sequence": pseq}))
    return c.Pub(qid=qid, seq=seq, priority=0, track=True, flags=flags,
                 record=Record(1_700_000_000_000, "", "q", raw, b"m", 1))


async def test_host_applies_the_subsequence_flag_and_delays_a_duplicates_confirm(tmp_path):
    host = PartitionHost(Config(data_dir=str(tmp_path)), asyncio.get_running_loop())
    try:
        front = FrontEnd()
        state = host.attach(front)
        host.handle(state, [c.Open(req=0, qid=1, vhost="/", name="q", durable=True,
                                   auto_delete=False, arguments={},
                                   directory=str(tmp_path / "q"))])
        strict, topic = c.PUB_PRODUCER, c.PUB_PRODUCER | c.PUB_SUBSEQUENCE
        # 1 stored; its duplicate in the same batch must not be confirmed before 1 is durable
        host.handle(state, [pub(1, 1, "p", 0, strict), pub(1, 2, "p", 0, strict)])
        assert not [e for e in front.events if type(e) is c.Confirm and e.upto >= 1]

        async def confirmed(n):
            while not any(type(e) is c.Confirm and e.upto >= n for e in front.events):
                await asyncio.sleep(0.01)
        await asyncio.wait_for(confirmed(2), 10)
        assert host.queues[1].store.log.durable_offset == 1
        host.handle(state, [pub(1, 3, "p", 5, strict),       # a gap: nacked
                            pub(1, 4, "p", 5, topic),        # a subsequence: stored
                            pub(1, 5, "p", 3, topic)])       # below the highest: nacked
        await asyncio.wait_for(confirmed(5), 10)
        nacked = [n for e in front.events if type(e) is c.Confirm for n in e.nacked]
        assert nacked == [3, 5]
        assert host.queues[1].ready_count == 2
    finally:
        host.close()


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(strategies.typed_properties())
def test_pick_reads_what_the_full_decode_reads(case):
    """properties.pick (the worker's shortcut) against pamqp's full decode."""
    raw = case[0]
    try:
        full = props_mod.decode(raw)
    except ValueError:
        return
    headers = full.headers or {}
    names = set(list(headers)[:2]) | {"absent"}
    picked, message_id = props_mod.pick(raw, names)
    assert picked == {k: v for k, v in headers.items() if k in names}
    assert message_id == full.message_id


def test_producer_entries_a_crash_lost_are_read_back_from_the_log(tmp_path):
    """The commit round fsyncs the log, then producers.log: a crash in between leaves
    messages whose producer entries are gone. At open the table reads the log's tail after
    its newest entry, so a retry of such a message is a duplicate, not a second copy."""
    from amqpbroker.storage.log import PartitionLog

    def rec(seq):
        raw = props_mod.encode(spec.Basic.Properties(
            headers={"x-producer-id": "p", "x-sequence": seq}))
        return Record(0, "", "q", raw, b"m%d" % seq, 1)

    plog = PartitionLog(tmp_path, fsync="always")
    plog.append([rec(0), rec(1)])
    plog.sync(force=True)
    table = dedup.ProducerTable(str(tmp_path), end_offset=plog.end_offset)
    table.stored("p", 0, 0)
    table.stored("p", 1, 1)
    table.flush()
    table.sync()
    table.close()
    plog.append([rec(2), rec(3)])              # written and fsynced; their entries never were
    plog.sync(force=True)

    table = dedup.ProducerTable(str(tmp_path), end_offset=plog.end_offset)
    assert table.check("p", 3) == GAP              # before the catch-up: 2 and 3 unknown
    assert table.catch_up(plog) == 2
    assert table.check("p", 2) == DUPLICATE and table.offset_of("p", 3) == 3
    assert table.check("p", 4) == STORE
    table.close()
    plog.close()
