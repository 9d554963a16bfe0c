"""A full disk under the data directory: the broker blocks publishers, does not crash, keeps
every confirmed message, and recovers by itself once space is freed.

The data directory lives on a small tmpfs mounted for the test (needs root, as CI has),
and a filler file takes the free space. Two ways to run out:
  * below `--disk-free-limit` (RabbitMQ's disk alarm, checked every second): connection.blocked
    before any write fails; deleting the filler clears it (connection.unblocked);
  * writes failing with ENOSPC (limit 0, disk filled to the last page): the commit round fails,
    nothing pending is dropped or confirmed, the disk alarm blocks publishers, the round is
    retried every second, and once the filler is gone the pending messages are written and
    confirmed, and publishers are unblocked.
Afterwards the broker is SIGKILLed and restarted: every confirmed message is there, in order,
intact.
"""
from __future__ import annotations

import errno
import os
import subprocess
import threading
import time

import pika
import pytest

from amqpbroker.supervisor.definitions import read_definitions
from amqpbroker.testing import BrokerProcess, leaks

PERSISTENT = pika.BasicProperties(delivery_mode=2)
BIG = 64 * 1024          # bigger than any page slack left in a file: every append needs pages


@pytest.fixture
def small_disk(tmp_path):
    assert os.geteuid() == 0, "mounting a tmpfs needs root (see README: tests that need root)"
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_disk(path, leave: int = 0) -> None:
    """Write a filler file until at most `leave` bytes are free (0: until ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        chunk = b"\0" * (1 << 20)
        while True:
            st = os.statvfs(os.path.dirname(path))
            free = st.f_bavail * st.f_frsize
            if leave and free <= leave:
                return
            want = min(len(chunk), free - leave) if leave else len(chunk)
            try:
                os.write(fd, chunk[:max(want, 4096)])
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return
    finally:
        os.close(fd)


def wait_for(cond, timeout: float, what: str, conn=None) -> None:
    step = (lambda: conn.process_data_events(time_limit=0.05)) if conn is not None else None
    leaks.wait_until(cond, timeout, what, step)


class Publisher(threading.Thread):
    """Publishes `bodies` with confirms on its own connection, recording connection.blocked /
    unblocked and which bodies were confirmed."""

    def __init__(self, broker: BrokerProcess, queue: str):
        super().__init__(daemon=True)
        self.conn = pika.BlockingConnection(pika.ConnectionParameters(
            broker.host, broker.port, blocked_connection_timeout=120))
        self.events: list[str] = []
        self.conn.add_on_connection_blocked_callback(lambda *_: self.events.append("blocked"))
        self.conn.add_on_connection_unblocked_callback(lambda *_: self.events.append("unblocked"))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.queue = queue
        self.todo: list[bytes] = []
        self.confirmed: list[bytes] = []
        self.error: BaseException | None = None

    def publish_now(self, bodies) -> None:
        """Publish on the calling thread (before the thread is started)."""
        for b in bodies:
            self.ch.basic_publish("", self.queue, b, PERSISTENT)
            self.confirmed.append(b)

    def run(self) -> None:
        try:
            self.publish_now(self.todo)
        except BaseException as exc:       # reported by the test
            self.error = exc


def bodies(tag: str, n: int) -> list[bytes]:
    return [f"{tag}-{i:04d}-".encode().ljust(BIG, tag[0].encode()) for i in range(n)]


def read_back(broker: BrokerProcess, queue: str, n: int) -> list[bytes]:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    got = []
    for method, _, body in ch.consume(queue, auto_ack=True, inactivity_timeout=5):
        assert method is not None, f"stalled after {len(got)} of {n}"
        got.append(body)
        if len(got) == n:
            break
    ch.cancel()
    assert ch.queue_declare(queue, passive=True).method.message_count == 0
    conn.close()
    return got


def declare(broker: BrokerProcess, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    conn.channel().queue_declare(queue, durable=True)
    conn.close()


def test_free_space_below_limit_blocks_then_unblocks(small_disk):
    data = small_disk / "data"
    broker = BrokerProcess(data, "--disk-free-limit", str(4 << 20)).start()
    filler = str(small_disk / "filler")
    try:
        declare(broker, "q")
        pub = Publisher(broker, "q")
        before = bodies("before", 20)
        pub.publish_now(before)
        fill_disk(filler, leave=2 << 20)
        wait_for(lambda: "blocked" in pub.events, 10, "connection.blocked", pub.conn)

        pub.todo = bodies("during", 10)      # the broker stops reading this connection
        pub.start()
        os.unlink(filler)
        pub.join(30)
        assert not pub.is_alive() and pub.error is None, pub.error
        wait_for(lambda: "unblocked" in pub.events, 5, "connection.unblocked", pub.conn)
        assert pub.events == ["blocked", "unblocked"]
        assert broker.proc.poll() is None
        broker.kill()
        broker.start()
        assert read_back(broker, "q", 30) == before + pub.todo
    finally:
        broker.stop()


def test_enospc_blocks_keeps_pending_and_recovers(small_disk):
    data = small_disk / "data"
    broker = BrokerProcess(data, "--disk-free-limit", "0").start()
    filler = str(small_disk / "filler")
    try:
        declare(broker, "q")
        pub = Publisher(broker, "q")
        before = bodies("before", 20)
        pub.publish_now(before)
        fill_disk(filler)                    # to the last page: the next append fails

        observer = Publisher(broker, "q")    # never publishes; its thread is this one
        pub.todo = bodies("during", 10)
        pub.start()
        # the first publish cannot be written: disk alarm, connection.blocked, no confirm
        wait_for(lambda: "blocked" in observer.events, 10, "connection.blocked", observer.conn)
        assert len(pub.confirmed) == len(before), "confirmed a message it could not write"
        # the broker keeps failing its retries (once a second) without crashing
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert broker.proc.poll() is None, "".join(broker.output)
            observer.conn.process_data_events(time_limit=0.1)
        assert len(pub.confirmed) == len(before)
        assert sum("data directory failed" in line for line in broker.output) >= 2, \
            "".join(broker.output)

        os.unlink(filler)
        pub.join(30)
        assert not pub.is_alive() and pub.error is None, pub.error
        wait_for(lambda: "unblocked" in pub.events, 5, "connection.unblocked", pub.conn)
        assert pub.confirmed == before + pub.todo
        assert pub.events == ["blocked", "unblocked"]
        wait_for(lambda: "unblocked" in observer.events, 5, "unblocked", observer.conn)
        after = bodies("after", 5)
        pub2 = Publisher(broker, "q")
        pub2.publish_now(after)
        assert pub2.events == []

        broker.kill()
        broker.start()
        assert read_back(broker, "q", 35) == before + pub.todo + after
    finally:
        broker.stop()


def test_ack_log_write_failure_leaves_no_torn_entry(small_disk):
    """A failed ack-log append (ENOSPC part-way through an entry) must not leave half an entry
    behind: recovery cuts at the first bad entry, which would drop every later ack."""
    from amqpbroker.storage.acklog import AckLog

    path = str(small_disk / "acks.log")
    acks = AckLog(path)
    acks.record([1])
    fill_disk(str(small_disk / "filler"))
    scattered = range(3, 20000, 2)          # ~10k runs: an entry of ~120 KB, many pages
    with pytest.raises(OSError):
        acks.record(scattered)
    os.unlink(str(small_disk / "filler"))
    acks.record(scattered)                  # the retry, as the commit round does
    acks.record([0])
    acks.sync()
    acks._simulate_crash()
    reopened = AckLog(path)
    try:
        assert reopened.truncated_bytes == 0
        assert reopened.floor == 2 and all(reopened.is_done(o) for o in scattered)
    finally:
        reopened.close()


def test_log_index_write_failure_does_not_duplicate_the_batch(tmp_path, monkeypatch):
    """ENOSPC can hit the offset index right after the batch itself was written; the retry of
    the same records must not find a copy of the batch already in the log."""
    from amqpbroker.storage.index import OffsetIndex
    from amqpbroker.storage.log import PartitionLog
    from amqpbroker.storage.record import Record

    def rec(i: int) -> Record:
        return Record(1000 + i, "", "q", b"", b"m%d" % i, 1)

    log = PartitionLog(tmp_path / "p", index_interval_bytes=1)     # an index entry per batch
    log.append([rec(0)])
    real_append = OffsetIndex.append

    def no_space(self, key, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(OffsetIndex, "append", no_space)
    with pytest.raises(OSError):
        log.append([rec(1), rec(2)])
    monkeypatch.setattr(OffsetIndex, "append", real_append)
    log.append([rec(1), rec(2)])                                  # the commit round's retry
    log.append([rec(3)])
    log.sync()
    assert [r.body for _, r in log.read(0)] == [b"m0", b"m1", b"m2", b"m3"]
    log.close()
    log = PartitionLog(tmp_path / "p", index_interval_bytes=1)
    try:
        assert log.end_offset == 4
        assert [(o, r.body) for o, r in log.read(0)] == [(0, b"m0"), (1, b"m1"), (2, b"m2"),
                                                         (3, b"m3")]
    finally:
        log.close()


def test_connection_first_publishing_during_alarm_is_blocked(small_disk):
    """A connection whose first publish comes during an alarm is blocked then, before that
    publish is handled (checked against RabbitMQ 3.10: the first publish is not confirmed)."""
    broker = BrokerProcess(small_disk / "data", "--disk-free-limit", str(4 << 20)).start()
    try:
        declare(broker, "q")
        observer = Publisher(broker, "q")
        fill_disk(str(small_disk / "filler"), leave=2 << 20)
        wait_for(lambda: "blocked" in observer.events, 10, "connection.blocked", observer.conn)
        late = Publisher(broker, "q")            # connected during the alarm, never published
        late.todo = bodies("late", 5)
        late.start()
        late.join(3)
        assert late.is_alive() and late.confirmed == [], "published straight through the alarm"
        os.unlink(str(small_disk / "filler"))
        late.join(30)
        assert late.confirmed == late.todo
    finally:
        broker.stop()


def test_sigterm_while_disk_full_shuts_down_cleanly(small_disk):
    """A clean shutdown that cannot write what is pending drops only unconfirmed messages and
    still exits 0, closing every queue; confirmed ones are there after the restart."""
    broker = BrokerProcess(small_disk / "data", "--disk-free-limit", "0").start()
    try:
        declare(broker, "q")
        declare(broker, "q2")
        pub = Publisher(broker, "q")
        before = bodies("before", 10)
        pub.publish_now(before)
        observer = Publisher(broker, "q2")
        fill_disk(str(small_disk / "filler"))
        pub.todo = bodies("during", 3)
        pub.start()
        wait_for(lambda: "blocked" in observer.events, 10, "connection.blocked", observer.conn)
        assert broker.stop() == 0, "".join(broker.output)
        assert pub.confirmed == before
        os.unlink(str(small_disk / "filler"))
        broker.start()
        assert read_back(broker, "q", 10) == before
    finally:
        broker.stop()


def test_declares_while_disk_full(small_disk):
    """Metadata is kept in memory and saved once the disk has room: a durable exchange, and a
    durable queue, which has no files until its first message. That first message cannot be
    written: it is not confirmed, the publisher is blocked, and once there is room it is
    written, confirmed, and kept across a kill -9. The broker stays up throughout."""
    data = small_disk / "data"
    broker = BrokerProcess(data, "--disk-free-limit", "0").start()
    filler = str(small_disk / "filler")
    try:
        fill_disk(filler)
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.exchange_declare("kept-x", "topic", durable=True)
        ch.queue_declare("no-room-q", durable=True)     # no file to make: accepted
        observer = Publisher(broker, "no-room-q")  # never publishes; its thread is this one
        pub = Publisher(broker, "no-room-q")
        pub.todo = bodies("first", 1)
        pub.start()
        wait_for(lambda: "blocked" in observer.events, 10, "connection.blocked", observer.conn)
        deadline = time.monotonic() + 2.5       # its first write keeps failing, retried
        while time.monotonic() < deadline:
            assert broker.proc.poll() is None, "".join(broker.output)
            observer.conn.process_data_events(time_limit=0.1)
        assert pub.is_alive() and pub.confirmed == [], "confirmed a message it could not write"
        assert sum("data directory failed" in line for line in broker.output) >= 2, \
            "".join(broker.output)
        conn.close()
        os.unlink(filler)
        pub.join(30)
        assert not pub.is_alive() and pub.error is None, pub.error
        assert pub.confirmed == pub.todo
        observer.conn.close()
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.queue_declare("room-q", durable=True)      # space again: queues can be declared
        conn.close()
        definitions = str(data / "definitions.json")
        wait_for(lambda: "kept-x" in {e["name"]
                                      for e in read_definitions(definitions)["exchanges"]},
                 10, "definitions saved")
        broker.kill()
        broker.start()
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.exchange_declare("kept-x", "topic", passive=True)
        ch.queue_declare("room-q", passive=True)
        conn.close()
        assert read_back(broker, "no-room-q", 1) == pub.todo
        assert "Traceback" not in "".join(broker.output)
    finally:
        broker.stop()
