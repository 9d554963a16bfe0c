"""A durable queue's own files under SIGKILL: made without fsyncs, removed in the background.

A durable declare fsyncs only the definitions journal and makes nothing else: the queue's
directory and files are made by its first write, without an fsync (``storage/entryfile.py``,
``storage/log.py``, ``storage/recovery.py``), and become durable with the first data fsynced
into them. A delete renames the directory to a trash name
and removes it in the background (``storage/trash.py``). So the states a crash can leave are:
a declared queue whose directory or files are missing (never written to, or lost by a power
cut before their first fsync), empty or short (the journal says it exists: it comes back
empty), and trash directories (removed at the next start). A kill -9
right after a burst of declares or deletes must keep every confirmed message and every
declared queue, and bring back none of the deleted ones nor their files.
Each runs in one process and split into front-end and worker processes.
"""
from __future__ import annotations

import os

import pika
import pika.exceptions
import pytest

from amqpbroker.supervisor.owner import queue_dir_name
from amqpbroker.testing import BrokerProcess
from interop.conftest import bodies

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

LAYOUTS = [["--workers", "0", "--frontends", "0"], ["--workers", "1", "--frontends", "1"]]
LAYOUT_IDS = ["one-process", "split"]
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def connect(b: BrokerProcess):
    return pika.BlockingConnection(pika.ConnectionParameters(b.host, b.port,
                                                             connection_attempts=1))


def message_count(conn, name: str) -> int | None:
    """The queue's ready count, None if it does not exist."""
    ch = conn.channel()
    try:
        count = ch.queue_declare(name, durable=True, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return None
    ch.close()
    return count


def queue_dir(data, name: str):
    return data / "queues" / queue_dir_name("/", name)


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
def test_a_burst_of_durable_declares_survives_kill_9(tmp_path, layout):
    data = tmp_path / "data"
    b = BrokerProcess(data, *layout).start()
    try:
        conn = connect(b)
        ch = conn.channel()
        ch.confirm_delivery()
        names = [f"burst-{i}" for i in range(120)]
        for name in names:
            ch.queue_declare(name, durable=True)
        for i, name in enumerate(names[:60]):        # confirmed: on disk when answered
            ch.basic_publish("", name, f"m-{i}".encode(), PERSISTENT, mandatory=True)
        b.kill()
        # a declare makes no directory and no file: the first write does (so declares cost
        # one journal fsync and nothing else)
        for name in names[60:]:
            assert not queue_dir(data, name).exists(), name
        # what a power cut can leave of a first write's files before their first fsync:
        # the directory without its files, or the files empty or cut after their header
        empty = names[60:]
        for i, name in enumerate(empty[30:]):
            d = queue_dir(data, name)
            d.mkdir()
            if i % 3 == 1:
                (d / "00000000000000000000.log").write_bytes(b"")
                (d / "acks.log").write_bytes(b"")
            elif i % 3 == 2:
                (d / "00000000000000000000.log").write_bytes(b"AQLG\x00\x01\x00\x00")
                (d / "00000000000000000000.index").write_bytes(b"AQ")
                (d / "acks.log").write_bytes(b"AQAK\x00\x01")
        b.start()
        conn = connect(b)
        for i, name in enumerate(names[:60]):
            assert message_count(conn, name) == 1, name
        for name in empty:
            assert message_count(conn, name) == 0, name
        ch = conn.channel()
        ch.confirm_delivery()
        for i, name in enumerate(names):                # every one works as a new queue
            ch.basic_publish("", name, f"n-{i}".encode(), PERSISTENT, mandatory=True)
        for i, name in enumerate(names):
            expected = ([f"m-{i}".encode()] if i < 60 else []) + [f"n-{i}".encode()]
            assert bodies(ch, name) == expected, name
        conn.close()
    finally:
        b.stop()
    out = "".join(b.output)
    assert "Traceback" not in out
    assert "belongs to no defined queue" not in out


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
def test_a_burst_of_deletes_leaves_nothing_after_kill_9(tmp_path, layout):
    data = tmp_path / "data"
    b = BrokerProcess(data, *layout).start()
    try:
        conn = connect(b)
        ch = conn.channel()
        ch.confirm_delivery()
        names = [f"doomed-{i}" for i in range(80)]
        for name in names + ["kept", "again"]:
            ch.queue_declare(name, durable=True)
            ch.basic_publish("", name, b"old", PERSISTENT, mandatory=True)
        conn.close()
        b.stop()            # a clean stop: every queue's files and definition are on disk
        # a removal a crash cut short at an earlier run: its trash directory is left
        trash = data / "queues" / (queue_dir_name("/", "long-gone") + ".0123abcd.deleted")
        trash.mkdir()
        (trash / "acks.log").write_bytes(b"x" * 100)
        b.start()
        assert not trash.exists()
        conn = connect(b)
        ch = conn.channel()
        ch.confirm_delivery()
        for name in names + ["again"]:
            ch.queue_delete(name)
        ch.queue_declare("again", durable=True)     # a new queue under the deleted name
        ch.basic_publish("", "again", b"new", PERSISTENT, mandatory=True)
        b.kill()
        b.start()
        conn = connect(b)
        assert [n for n in names if message_count(conn, n) is not None] == []
        ch = conn.channel()
        assert bodies(ch, "kept") == [b"old"]
        assert bodies(ch, "again") == [b"new"]      # not the deleted queue's message
        conn.close()
        # the start removed the deleted queues' files, whatever state the kill left them in
        assert sorted(os.listdir(data / "queues")) == sorted(
            queue_dir_name("/", n) for n in ("kept", "again"))
    finally:
        b.stop()
    out = "".join(b.output)
    assert "Traceback" not in out
    assert "belongs to no defined queue" not in out
