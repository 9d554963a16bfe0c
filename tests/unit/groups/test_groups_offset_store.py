"""OffsetStore: reopen, buffered commits, deletes and resets, torn and corrupt tails,
leftovers of an interrupted compaction, compaction keeping the file small, many groups."""
import os
import random

import pytest

from amqpbroker.groups.offset_store import FILE_NAME, OffsetStore
from amqpbroker.storage.fileformat import HEADER_SIZE


def test_new_store_is_empty_and_has_a_versioned_header(tmp_path):
    with OffsetStore(tmp_path) as store:
        assert store.groups() == {}
        assert store.get("billing") is None
    assert not (tmp_path / FILE_NAME).exists()      # made by the first entry
    with OffsetStore(tmp_path) as store:
        assert store.groups() == {}
        store.commit("billing", 5)
        store.flush()
    data = (tmp_path / FILE_NAME).read_bytes()
    assert data[:8] == b"AQGO\x00\x01\x00\x00" and len(data) > 8
    with OffsetStore(tmp_path) as store:
        assert store.groups() == {"billing": 5}


def test_commits_survive_reopen_last_one_wins(tmp_path):
    with OffsetStore(tmp_path) as store:
        store.commit("billing", 5)
        store.commit("billing", 9)          # buffered: one entry per group per flush
        store.commit("audit", 3)
        assert store.get("billing") == 9 and store.groups() == {"billing": 9, "audit": 3}
        store.flush()
        assert store.written == 1
        store.commit("billing", 12)
        store.flush()
        store.sync()
        assert store.durable == store.written == 2
    with OffsetStore(tmp_path) as store:
        assert store.groups() == {"billing": 12, "audit": 3}


def test_close_flushes_what_is_buffered_and_a_crash_loses_only_that(tmp_path):
    with OffsetStore(tmp_path) as store:
        store.commit("a", 1)
    store = OffsetStore(tmp_path)
    assert store.groups() == {"a": 1}
    store.commit("a", 2)
    store.flush()
    store.commit("a", 3)                    # buffered, not written
    store._simulate_crash()
    with OffsetStore(tmp_path) as store:
        assert store.groups() == {"a": 2}


def test_delete_and_reset(tmp_path):
    with OffsetStore(tmp_path) as store:
        store.commit("a", 10)
        store.commit("b", 20)
        store.flush()
        store.delete("a")
        assert store.get("a") is None and store.groups() == {"b": 20}
        store.reset("b", 4)                 # backwards, written and fsynced at once
        assert store.durable == store.written
    with OffsetStore(tmp_path) as store:
        assert store.groups() == {"b": 4}


def test_refuses_names_an_amqp_short_string_cannot_carry(tmp_path):
    with OffsetStore(tmp_path) as store:
        with pytest.raises(ValueError, match="longer than 255"):
            store.commit("g" * 256, 1)
        with pytest.raises(ValueError, match="negative"):
            store.commit("g", -1)
        store.commit("é" * 127, 1)          # 254 bytes of UTF-8
    with OffsetStore(tmp_path) as store:
        assert store.groups() == {"é" * 127: 1}


def write_history(path, rounds):
    """rounds x (group, offset) commits, a flush after each; returns the state after each."""
    states = []
    with OffsetStore(path, fsync="never", compact_bytes=1 << 30) as store:
        for r in range(rounds):
            store.commit(f"g{r % 3}", r)
            store.flush()
            states.append(store.groups())
    return states


@pytest.mark.parametrize("where", ["header", "first", "middle", "last"])
def test_garbage_from_a_point_to_eof_keeps_the_good_prefix(tmp_path, where):
    states = write_history(tmp_path, 12)
    path = tmp_path / FILE_NAME
    size = path.stat().st_size
    entry = (size - HEADER_SIZE) // 12
    cut = {"header": 3, "first": HEADER_SIZE + 5, "middle": HEADER_SIZE + 6 * entry + 2,
           "last": size - 1}[where]
    rnd = random.Random(cut)
    with open(path, "r+b") as f:
        f.seek(cut)
        f.write(bytes(rnd.randrange(256) for _ in range(size - cut)))
    with OffsetStore(tmp_path) as store:
        good = (cut - HEADER_SIZE) // entry if cut >= HEADER_SIZE else 0
        assert store.groups() == (states[good - 1] if good else {})
        assert store.truncated_bytes == (size - HEADER_SIZE - good * entry if cut >= HEADER_SIZE
                                         else size)
    assert path.stat().st_size == HEADER_SIZE + good * entry   # cut on disk: appends go after it
    with OffsetStore(tmp_path) as store:
        store.commit("later", 1)
    with OffsetStore(tmp_path) as store:
        assert store.groups()["later"] == 1


def test_torn_tail_every_length(tmp_path):
    states = write_history(tmp_path, 5)
    data = (tmp_path / FILE_NAME).read_bytes()
    entry = (len(data) - HEADER_SIZE) // 5
    for keep in range(HEADER_SIZE, len(data) + 1):
        (tmp_path / FILE_NAME).write_bytes(data[:keep])
        with OffsetStore(tmp_path, fsync="never") as store:
            whole = (keep - HEADER_SIZE) // entry
            assert store.groups() == (states[whole - 1] if whole else {})


def test_leftover_of_an_interrupted_compaction_is_removed(tmp_path):
    states = write_history(tmp_path, 6)
    (tmp_path / (FILE_NAME + ".tmp")).write_bytes(b"AQGO\x00\x01\x00\x00\x00\x00\x00")
    with OffsetStore(tmp_path) as store:
        assert store.groups() == states[-1]
    assert sorted(os.listdir(tmp_path)) == [FILE_NAME]


def test_compaction_keeps_the_file_a_few_times_its_live_size(tmp_path):
    with OffsetStore(tmp_path, compact_bytes=4096, compact_ratio=4) as store:
        for r in range(5000):
            store.commit(f"group-{r % 10}", r)
            store.flush()
            assert os.path.getsize(store.path) <= 4096 + 64
        assert store.compactions > 10
        expected = store.groups()
        store.sync()
        assert store.durable == store.written
    with OffsetStore(tmp_path) as store:
        assert store.groups() == expected
        assert len(expected) == 10 and expected["group-9"] == 4999


def test_many_groups_and_deletes_compact_to_the_live_ones(tmp_path):
    rnd = random.Random(3)
    model = {}
    with OffsetStore(tmp_path, fsync="never", compact_bytes=16 << 10) as store:
        for r in range(20000):
            g = f"consumers-{rnd.randrange(2000)}"
            if rnd.random() < 0.05:
                store.delete(g)
                model.pop(g, None)
            else:
                store.commit(g, r)
                model[g] = r
            if r % 7 == 0:
                store.flush()
        store.flush()
        assert store.groups() == model
        store.compact()
        live = os.path.getsize(store.path)
    assert live == HEADER_SIZE + sum(17 + len(g) for g in model)
    with OffsetStore(tmp_path) as store:
        assert store.groups() == model


def test_unreadable_header_starts_empty(tmp_path, caplog):
    (tmp_path / FILE_NAME).write_bytes(b"NOPE" + bytes(40))
    with OffsetStore(tmp_path) as store:
        assert store.groups() == {} and store.truncated_bytes == 44
    assert "unreadable group offsets header" in caplog.text
    with OffsetStore(tmp_path) as store:
        assert store.groups() == {}


def test_closed_store_refuses_writes(tmp_path):
    store = OffsetStore(tmp_path)
    store.close()
    with pytest.raises(Exception, match="closed"):
        store.commit("a", 1)


def test_written_shows_a_commit_only_once_it_is_in_the_file(tmp_path):
    """The management API reports ``in_file()``: a buffered commit (an ack since the last
    commit round) is not yet there, since a kill -9 would take it back."""
    with OffsetStore(tmp_path) as store:
        store.commit("billing", 5)
        store.flush()
        store.commit("billing", 9)
        store.commit("audit", 3)
        assert store.get("billing") == 9 and store.in_file() == {"billing": 5}
        store.flush()
        assert store.in_file() == {"billing": 9, "audit": 3}
        store.delete("audit")
        assert store.in_file() == {"billing": 9, "audit": 3}
        store.flush()
        assert store.in_file() == {"billing": 9}
