"""The definitions journal (``supervisor/journal.py``) under SIGKILL and torn files.

A durable declare, bind or delete is answered only once its journal entry is fsynced, so a
kill -9 right after the last answer loses nothing; a journal cut anywhere (a torn write) loses
only the entries after the cut, whose changes no client was told of; a deleted object stays
deleted, a deleted exchange's bindings do not come back with a new exchange of its name.
Each runs in one process and split into front-end and worker processes.
"""
from __future__ import annotations

import base64
import json
import os
import random
import shutil
import struct
import urllib.request

import pika
import pika.exceptions
import pytest

from amqpbroker.supervisor.definitions import read_definitions
from amqpbroker.testing import BrokerProcess

LAYOUTS = [["--workers", "0", "--frontends", "0"], ["--workers", "1", "--frontends", "1"]]
LAYOUT_IDS = ["one-process", "split"]

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

HEADER = 8


def connect(b: BrokerProcess):
    return pika.BlockingConnection(pika.ConnectionParameters(b.host, b.port,
                                                             connection_attempts=1))


def api(b: BrokerProcess, path: str):
    req = urllib.request.Request(f"http://{b.host}:{b.management_port}/api/{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def exists(conn, kind: str, name: str) -> bool:
    ch = conn.channel()
    try:
        if kind == "queue":
            ch.queue_declare(name, passive=True)
        else:
            ch.exchange_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False
    ch.close()
    return True


def bindings(b: BrokerProcess) -> set:
    return {(x["source"], x["destination_type"], x["destination"], x["routing_key"])
            for x in api(b, "bindings/%2F") if x["source"]}


def snapshot_text(data) -> str:
    return (data / "definitions.json").read_text()


def journal_entries(path) -> list[tuple[int, list]]:
    """(end offset, changes) of each whole entry of a journal file."""
    raw = path.read_bytes()
    pos, out = HEADER, []
    while pos + 8 <= len(raw):
        length, _ = struct.unpack_from(">II", raw, pos)
        if pos + 8 + length > len(raw):
            break
        pos += 8 + length
        out.append((pos, json.loads(raw[pos - length:pos])))
    return out


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
def test_everything_declared_ok_is_there_after_kill_9(tmp_path, layout):
    data = tmp_path / "data"
    b = BrokerProcess(data, *layout, management=True).start()
    try:
        conn = connect(b)
        ch = conn.channel()
        for i in range(30):
            ch.queue_declare(f"jq-{i}", durable=True, arguments={"x-max-length": 100 + i})
        ch.exchange_declare("jx-topic", "topic", durable=True)
        ch.exchange_declare("jx-fanout", "fanout", durable=True)
        ch.exchange_declare("jx-gone", "direct", durable=True)
        ch.exchange_declare("jx-transient", "direct", durable=False)
        ch.queue_declare("jq-transient", durable=False)
        ch.queue_bind("jq-0", "jx-topic", "a.*")
        ch.queue_bind("jq-1", "jx-topic", "b.#")
        ch.queue_bind("jq-2", "jx-fanout")
        ch.exchange_bind("jx-fanout", "jx-topic", "to-fanout")
        ch.queue_bind("jq-3", "jx-gone", "old")             # goes with its exchange...
        ch.exchange_delete("jx-gone")
        ch.exchange_declare("jx-gone", "direct", durable=True)  # ...and stays gone
        ch.queue_bind("jq-4", "jx-gone", "new")
        ch.queue_bind("jq-5", "jx-topic", "unbound")
        ch.queue_unbind("jq-5", "jx-topic", "unbound")
        ch.queue_bind("jq-6", "jx-topic", "with-queue")
        ch.queue_delete("jq-6")                                 # and its binding
        ch.queue_delete("jq-7")
        # all of it is in the journal, none of it yet in the snapshot
        assert "jq-0" not in snapshot_text(data)
        b.kill()
        conn = None
        b.start()
        conn = connect(b)
        for i in range(30):
            assert exists(conn, "queue", f"jq-{i}") == (i not in (6, 7)), i
        stored = {q["name"]: q for q in api(b, "queues/%2F")}
        assert stored["jq-29"]["arguments"] == {"x-max-length": 129}
        assert all(stored[f"jq-{i}"]["durable"] for i in range(6))
        for name in ("jx-topic", "jx-fanout", "jx-gone"):
            assert exists(conn, "exchange", name)
        assert not exists(conn, "exchange", "jx-transient")
        assert not exists(conn, "queue", "jq-transient")
        assert bindings(b) == {("jx-topic", "queue", "jq-0", "a.*"),
                               ("jx-topic", "queue", "jq-1", "b.#"),
                               ("jx-fanout", "queue", "jq-2", "jq-2"),
                               ("jx-topic", "exchange", "jx-fanout", "to-fanout"),
                               ("jx-gone", "queue", "jq-4", "new")}
        # the start compacted: the snapshot holds everything, the journal is empty
        assert "jq-29" in snapshot_text(data)
        assert (data / "definitions.journal").stat().st_size == HEADER
        conn.close()
    finally:
        b.stop()
    assert "Traceback" not in "".join(b.output)


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
def test_deletes_of_what_the_snapshot_holds_survive_kill_9(tmp_path, layout):
    data = tmp_path / "data"
    b = BrokerProcess(data, *layout, management=True).start()
    try:
        conn = connect(b)
        ch = conn.channel()
        for i in range(6):
            ch.queue_declare(f"dq-{i}", durable=True)
        ch.exchange_declare("dx", "direct", durable=True)
        ch.exchange_declare("dx-kept", "direct", durable=True)
        ch.queue_bind("dq-0", "dx", "k")
        ch.queue_bind("dq-1", "dx-kept", "k1")
        ch.queue_bind("dq-2", "dx-kept", "k2")
        conn.close()
        b.stop()                        # a clean stop compacts: all of it in the snapshot
        assert "dq-5" in snapshot_text(data)
        assert (data / "definitions.journal").stat().st_size == HEADER
        b.start()
        conn = connect(b)
        ch = conn.channel()
        ch.queue_delete("dq-1")
        ch.queue_delete("dq-3")
        ch.exchange_delete("dx")
        ch.queue_unbind("dq-2", "dx-kept", "k2")
        b.kill()
        b.start()
        conn = connect(b)
        assert [i for i in range(6) if exists(conn, "queue", f"dq-{i}")] == [0, 2, 4, 5]
        assert not exists(conn, "exchange", "dx")
        assert exists(conn, "exchange", "dx-kept")
        assert bindings(b) == set()
        conn.close()
    finally:
        b.stop()
    assert "Traceback" not in "".join(b.output)


def test_a_torn_or_corrupt_journal_loses_only_its_tail(tmp_path):
    """Declares answered one by one make one journal entry each. The journal is then cut at
    random points (and, once, a byte of a middle entry flipped): a start keeps exactly the
    whole entries before the damage, says it cut the rest, and never fails."""
    data = tmp_path / "data"
    b = BrokerProcess(data, "--workers", "0", "--frontends", "0").start()
    try:
        conn = connect(b)
        ch = conn.channel()
        for i in range(20):
            ch.queue_declare(f"tq-{i}", durable=True)
            ch.exchange_declare(f"tx-{i}", "fanout", durable=True)
    finally:
        b.kill()
    journal = data / "definitions.journal"
    entries = journal_entries(journal)
    assert len(entries) >= 40
    assert entries[-1][0] == journal.stat().st_size
    rng = random.Random(13)
    size = journal.stat().st_size
    cuts = [("cut", p) for p in sorted(rng.sample(range(HEADER + 1, size), 4))]
    cuts.append(("flip", entries[len(entries) // 2][0] - 3))
    for how, point in cuts:
        copy = tmp_path / f"{how}-{point}"
        shutil.copytree(data, copy)
        raw = bytearray((copy / "definitions.journal").read_bytes())
        if how == "cut":
            raw = raw[:point]
        else:
            raw[point] ^= 0xFF
        (copy / "definitions.journal").write_bytes(bytes(raw))
        kept = [changes for end, changes in entries if end <= point]
        names = {ch[1]["name"] for changes in kept for ch in changes if ch[0].endswith("+")}
        assert read_definitions(str(copy / "definitions.json")) is not None
        b = BrokerProcess(copy, "--workers", "0", "--frontends", "0").start()
        try:
            conn = connect(b)
            for i in range(20):
                for kind, name in (("queue", f"tq-{i}"), ("exchange", f"tx-{i}")):
                    assert exists(conn, kind, name) == (name in names), (how, point, name)
            conn.close()
        finally:
            b.stop()
        log = "".join(b.output)
        if point not in {end for end, _ in entries}:
            assert "torn definitions journal tail" in log, log
        assert "Traceback" not in log


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
def test_a_growing_journal_is_compacted_while_running(tmp_path, layout):
    """Changes worth more than the bound (here exchanges with a 100 KB argument, declared and
    deleted) compact the journal while the broker runs; what stands survives a kill -9."""
    data = tmp_path / "data"
    b = BrokerProcess(data, *layout).start()
    pad = "p" * 100_000
    try:
        conn = connect(b)
        ch = conn.channel()
        for i in range(16):
            ch.exchange_declare(f"big-{i}", "direct", durable=True, arguments={"pad": pad})
            if i % 2:
                ch.exchange_delete(f"big-{i}")
        assert journal_size(data) < 1 << 20
        assert "big-0" in snapshot_text(data)       # written there only by a compaction
        b.kill()
        b.start()
        conn = connect(b)
        assert [i for i in range(16) if exists(conn, "exchange", f"big-{i}")] == \
            list(range(0, 16, 2))
        conn.close()
    finally:
        b.stop()
    assert "Traceback" not in "".join(b.output)


def journal_size(data) -> int:
    return os.stat(data / "definitions.journal").st_size
