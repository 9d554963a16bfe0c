"""Nothing one client does may exhaust the node's memory (issue 9).

* A connection that sends basic.publish and the header of a huge body, then the body slowly, is
  blocked by the memory alarm at its next content frame (it was not yet "a publisher"): the
  broker stops reading from it, and once it has gone and its partial body is freed, the alarm
  clears.
* A client that publishes mandatory messages and never reads its socket (the returns pile up)
  is no longer read from once its output buffer is full, so the broker does not buffer them.
* Delivered, unacked messages keep their bodies in the log, not in memory; a requeue and a
  dead-lettering read them back.

The memory watermark is set just above the broker's own idle memory (measured by a first
start), so a test needs only tens of megabytes to raise the alarm. Memory is the node's RSS as
the management API reports it (``/api/nodes``: every process of the broker).
"""
from __future__ import annotations

import fcntl
import select
import socket
import struct
import termios
import threading
import time

import pika
import pytest
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp import body as pbody

from amqpbroker.frontend.alarms import total_memory
from amqpbroker.protocol.constants import PROTOCOL_HEADER
from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import wait_until

MB = 1 << 20
HEADROOM = 32 * MB           # the watermark sits this far above the idle broker
FRAME_MAX = 131072


def node(broker) -> dict:
    [n] = broker.api("nodes")
    return n


@pytest.fixture
def broker(tmp_path, request):
    """A broker whose memory alarm goes off HEADROOM above its idle memory (more flags:
    the test's parameter, ``indirect``)."""
    extra = getattr(request, "param", [])
    with BrokerProcess(tmp_path / "probe", *extra, management=True) as probe:
        idle = node(probe)["mem_used"]
    fraction = (idle + HEADROOM) / total_memory()
    with BrokerProcess(tmp_path / "data", "--memory-high-watermark", f"{fraction:.6f}",
                       *extra, management=True) as b:
        yield b


class RawClient:
    """A client over a bare socket, so a test can send any frame at any pace."""

    def __init__(self, broker):
        self.sock = socket.create_connection((broker.host, broker.port))
        self.inbox = b""
        self.sock.sendall(PROTOCOL_HEADER)
        self.expect(C.Connection.Start)
        self.send(0, C.Connection.StartOk(
            client_properties={"capabilities": {"connection.blocked": True}},
            mechanism="PLAIN", response="\0guest\0guest"))
        self.expect(C.Connection.Tune)
        self.send(0, C.Connection.TuneOk(channel_max=16, frame_max=FRAME_MAX, heartbeat=0))
        self.send(0, C.Connection.Open(virtual_host="/"))
        self.expect(C.Connection.OpenOk)
        self.send(1, C.Channel.Open())
        self.expect(C.Channel.OpenOk)

    def send(self, channel: int, frame) -> None:
        self.sock.sendall(pframe.marshal(frame, channel))

    def frames(self, timeout: float) -> list:
        """Frames that arrive within ``timeout`` (none if nothing came)."""
        out = []
        if select.select([self.sock], [], [], timeout)[0]:
            data = self.sock.recv(1 << 16)
            assert data, "the broker closed the connection"
            self.inbox += data
        while len(self.inbox) >= 7:
            size = 8 + struct.unpack_from(">I", self.inbox, 3)[0]
            if len(self.inbox) < size:
                break
            _, _, frame = pframe.unmarshal(self.inbox[:size])
            self.inbox = self.inbox[size:]
            out.append(frame)
        return out

    def expect(self, cls):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for frame in self.frames(1.0):
                assert isinstance(frame, cls), frame
                return frame
        raise AssertionError(f"no {cls.__name__} from the broker")

    def close(self) -> None:
        self.sock.close()

    def unread(self) -> int:
        """Bytes we sent that the broker has not read: in our send queue, or in the receive
        queue of its end of the connection (``/proc/net/tcp``'s rx_queue)."""
        outq = struct.unpack("i", fcntl.ioctl(self.sock, termios.TIOCOUTQ, b"\0" * 4))[0]
        ours, theirs = (_proc_address(*self.sock.getsockname()),
                        _proc_address(*self.sock.getpeername()))
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                # the broker's end: local the broker, remote us (both: our port alone is
                # also the port of other tests' connections to other brokers, and of their
                # TIME_WAIT entries; one of those, read instead, hid a full receive queue)
                if fields[1] == theirs and fields[2] == ours:
                    return outq + int(fields[4].split(":")[1], 16)
        raise AssertionError("the broker's end of the connection is not in /proc/net/tcp")


def _proc_address(host: str, port: int) -> str:
    """An IPv4 address and port as /proc/net/tcp writes them."""
    return "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(host))[0], port)


# the heap trimmer every second: it gives back the free pages glibc keeps (a freed buffer,
# the prefaulter's pad), which must not clear an alarm that a body still holds (the alarm
# counts memory in use: it trims before it goes on); at its default (60 s) it did so now and
# then, and the broker read ~30 MB of the body between the alarm's clear and its return
@pytest.mark.parametrize("broker", [[], ["--heap-trim-interval", "1"]], indirect=True,
                         ids=["default", "trim-every-second"])
def test_slow_body_is_blocked_by_the_memory_alarm_which_clears_when_it_goes(broker):
    ch = pika.BlockingConnection(pika.URLParameters(broker.url)).channel()
    ch.queue_declare("big")
    ch.connection.close()
    body_size = 128 * MB                                 # RabbitMQ's max_message_size
    client = RawClient(broker)
    client.send(1, C.Basic.Publish(exchange="", routing_key="big"))
    client.send(1, pheader.ContentHeader(0, body_size, C.Basic.Properties()))
    chunk = pframe.marshal(pbody.ContentBody(b"x" * (FRAME_MAX - 8)), 1)
    burst = chunk * 16                                   # 2 MB
    sent = 0
    blocked_at = None
    pending = memoryview(b"")
    client.sock.setblocking(False)
    # the body goes out 2 MB at a time, each burst after waiting (up to 50 ms) for
    # connection.blocked; once blocked, the client pushes as much as the broker will take
    while sent < body_size - len(burst):
        if blocked_at is None:
            frames = client.frames(0.05)
            if any(isinstance(f, C.Connection.Blocked) for f in frames):
                blocked_at = sent
        if not select.select([], [client.sock], [], 2.0)[1]:
            assert blocked_at is not None, "the broker stopped reading before the alarm"
            break                        # nothing read from us for 2 s: we are blocked
        if not pending:
            pending = memoryview(burst)
        try:
            n = client.sock.send(pending)
        except BlockingIOError:
            continue
        sent += n
        pending = pending[n:]
    assert blocked_at is not None, "no connection.blocked"
    # the kernel holds up to tcp_rmem[2] of what we sent; the broker read the rest
    read_after_block = sent - client.unread() - blocked_at
    info = node(broker)
    assert info["mem_alarm"]
    # at most what it had in hand (one read, one frame), not the rest of the body
    # (on failure: whether the alarm went off and on again meanwhile, and the broker's log)
    assert read_after_block < 2 * MB, (
        f"the broker read {read_after_block >> 20} MB blocked; frames since: "
        f"{[type(f).__name__ for f in client.frames(0)]}; used {info['mem_used']}, limit "
        f"{info['mem_limit']}\n"
        + "".join(broker.output[-20:]))
    assert info["mem_used"] < info["mem_limit"] + 64 * MB
    # the client goes (a reset: a FIN would wait behind the bytes the broker does not read);
    # the broker sees it though it reads nothing, and frees the partial body with the
    # connection: memory returns, the alarm clears
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    try:
        wait_until(lambda: not node(broker)["mem_alarm"], 30, "the memory alarm to clear")
    except AssertionError:
        info = node(broker)
        raise AssertionError(f"the memory alarm stays: {info['mem_used']} bytes used, limit "
                             f"{info['mem_limit']}\n" + "".join(broker.output[-20:])) from None


# whichever process held the bodies frees them; the alarm counts the node's memory in use,
# so that process must give the freed pages back while the alarm is on: with worker
# processes, the worker that held the queue (it had no trimmer, and its heap prefaulter
# populated a fresh pad after each trim: the alarm stayed on with the queue empty and
# 110 MB of the worker's heap free, kept by glibc)
@pytest.mark.parametrize("broker", [list(v) for v in LAYOUTS.values()], indirect=True,
                         ids=list(LAYOUTS))
def test_the_alarm_clears_once_the_queue_that_raised_it_is_purged(broker):
    publisher = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = publisher.channel()
    ch.queue_declare("backlog")
    body = b"b" * (256 << 10)
    published = 0
    while not node(broker)["mem_alarm"]:
        for _ in range(16):
            ch.basic_publish("", "backlog", body)
        published += 16
        publisher.process_data_events(0)
        assert published < 4096, "1 GB queued and no memory alarm"
    # the publisher is blocked now (its connection is not read: it stays open); another
    # connection, which publishes nothing, purges the queue until it stays empty (what the
    # publisher had sent still lands after a first purge)
    admin = pika.BlockingConnection(pika.URLParameters(broker.url)).channel()

    def purged_and_clear():
        admin.queue_purge("backlog")
        return (admin.queue_declare("backlog", passive=True).method.message_count == 0
                and not node(broker)["mem_alarm"])
    try:
        wait_until(purged_and_clear, 30, "the memory alarm to clear")
    except AssertionError:
        info = node(broker)
        raise AssertionError(f"the memory alarm stays with the queue empty: {info['mem_used']} "
                             f"bytes used, limit {info['mem_limit']}") from None
    admin.connection.close()
    publisher.close()


def test_publisher_that_does_not_read_its_returns_is_not_read_from(tmp_path):
    """Mandatory publishes that cannot be routed come back as basic.return; a client that
    never reads them fills the broker's output buffer, and from then on the broker reads
    nothing more from it (asyncio's pause_writing), instead of buffering every return."""
    with BrokerProcess(tmp_path, management=True) as broker:
        idle = node(broker)["mem_used"]
        client = RawClient(broker)
        payload = b"r" * (64 << 10)
        message = b"".join(pframe.marshal(f, 1) for f in (
            C.Basic.Publish(exchange="", routing_key="nowhere", mandatory=True),
            pheader.ContentHeader(0, len(payload), C.Basic.Properties()),
            pbody.ContentBody(payload)))
        stream = memoryview(message * 64)                  # 4 MB
        total = 256 * MB
        sent = 0
        pending = stream[:0]
        client.sock.setblocking(False)
        while sent < total:
            if not select.select([], [client.sock], [], 2.0)[1]:
                break                          # nothing read from us for 2 s: paused
            if not pending:
                pending = stream
            try:
                n = client.sock.send(pending)
            except BlockingIOError:
                continue
            sent += n
            pending = pending[n:]
        read = sent - client.unread()
        grown = node(broker)["mem_used"] - idle
        # its output buffer's high-water mark, the kernel's buffers, one read
        assert read < 48 * MB, f"the broker read {read >> 20} MB from a client not reading"
        assert grown < 64 * MB, f"the broker grew by {grown >> 20} MB"
        # the client reads its returns: the broker reads on, and every publish comes back
        client.sock.setblocking(True)
        expected = (sent + len(pending)) // len(message)
        rest = threading.Thread(target=client.sock.sendall, args=(pending,), daemon=True)
        rest.start()
        returned = 0
        deadline = time.monotonic() + 60
        while returned < expected and time.monotonic() < deadline:
            returned += sum(isinstance(f, C.Basic.Return) for f in client.frames(1.0))
        rest.join(30)
        assert returned == expected
        client.close()


def test_unacked_bodies_are_not_held_in_memory(tmp_path):
    """Delivered, unacked messages are kept in the log, not in memory (300 x 1 MB unacked
    took 408 MB of RSS); a requeue and a redelivery read them back."""
    with BrokerProcess(tmp_path, management=True) as broker:
        idle = node(broker)["mem_used"]
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.queue_declare("held", durable=True)
        ch.confirm_delivery()
        count = 300
        for i in range(count):
            body = b"%04d" % i + bytes(MB - 4)
            ch.basic_publish("", "held", body, pika.BasicProperties(delivery_mode=2))
        # basic.get, one at a time: a consumer without a prefetch limit would also measure
        # the deliveries in flight (the front-end's output buffer), not what stays unacked
        got = []
        for _ in range(count):
            method, _, body = ch.basic_get("held")
            assert method is not None, f"{len(got)} of {count} delivered"
            got.append(body[:4])
        assert got == [b"%04d" % i for i in range(count)]
        assert ch.queue_declare("held", passive=True).method.message_count == 0
        grown = node(broker)["mem_used"] - idle
        assert grown < 128 * MB, f"{count} MB unacked: the broker grew by {grown >> 20} MB"
        conn.close()                     # all of them requeued, read back from the log
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        again = []
        for _ in range(count):
            method, props, body = ch.basic_get("held")
            assert method is not None and method.redelivered
            again.append(body[:4])
            assert len(body) == MB
        assert again == [b"%04d" % i for i in range(count)]
        ch.basic_ack(method.delivery_tag, multiple=True)
        assert ch.queue_declare("held", passive=True).method.message_count == 0
        conn.close()


def test_rejected_unacked_messages_are_dead_lettered_whole_from_the_log(tmp_path):
    """The record of an unacked message comes back from the log when it is dead-lettered."""
    with BrokerProcess(tmp_path) as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.queue_declare("dead")
        ch.queue_declare("work", arguments={"x-dead-letter-exchange": "",
                                            "x-dead-letter-routing-key": "dead",
                                            "x-max-priority": 5})
        ch.confirm_delivery()
        bodies = [b"%02d" % i * (32 << 10) for i in range(20)]
        for i, body in enumerate(bodies):
            ch.basic_publish("", "work", body, pika.BasicProperties(priority=i % 5,
                                                                    headers={"n": i}))
        got = []
        for method, props, body in ch.consume("work", inactivity_timeout=30):
            assert method is not None
            got.append(method.delivery_tag)
            if len(got) == len(bodies):
                break
        ch.cancel()
        ch.basic_nack(0, multiple=True, requeue=False)
        wait_until(lambda: ch.queue_declare("dead", passive=True).method.message_count
                   == len(bodies), 30, "the dead-lettered messages")
        dead = []
        for _ in bodies:
            method, props, body = ch.basic_get("dead", auto_ack=True)
            assert method is not None, f"{len(dead)} of {len(bodies)} dead-lettered"
            assert props.headers["x-death"][0]["reason"] == "rejected"
            dead.append((props.headers["n"], props.priority, body))
        assert sorted(dead) == [(i, i % 5, b) for i, b in enumerate(bodies)]
        conn.close()
