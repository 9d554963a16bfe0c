"""Garbage on real sockets: the broker answers it, survives it, and nobody else notices.

One broker process for the module. Raw sockets do a real handshake and then send broken
frames; where the spec and RabbitMQ prescribe the reply code, the test reads the
connection.close off the wire and checks it. A seeded random loop sends mutated frame streams
from several sockets at once while a pika client on the side keeps publishing and consuming.
Then clients are cut by the fault proxy after 2^k bytes: the broker survives, a fresh client
works, and what the cut client had not acked comes back to another consumer redelivered.
"""
from __future__ import annotations

import random
import socket
import struct
import time
import uuid

import pika
import pika.exceptions
import pytest
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from amqpbroker.testing import BrokerProcess, FaultProxy
from amqpbroker.testing.proxy import DOWNSTREAM

MAX_MESSAGE_SIZE = 20000
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
HARD_CODES = {320, 402, 403, 501, 502, 503, 504, 505, 506, 530, 540}
SOFT_CODES = {311, 312, 313, 403, 404, 405, 406}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = BrokerProcess(tmp_path_factory.mktemp("garbage"), "--max-message-size",
                      str(MAX_MESSAGE_SIZE), "--heartbeat", "0").start()
    try:
        yield b
    finally:
        b.stop()
    # any exception that escaped a handler is logged and answered 541: none may happen
    log = "".join(b.output)
    assert "internal error" not in log and "Traceback" not in log, log[-5000:]


@pytest.fixture(autouse=True)
def no_leaked_proxy_threads():
    """A FaultProxy must take its threads with it when it stops."""
    yield
    import threading
    alive = [t.name for t in threading.enumerate() if t.name.startswith("fault-proxy")]
    assert not alive, f"fault proxy threads still running: {alive}"


@pytest.fixture
def side(broker):
    """The well-behaved client: a pika connection with a queue of its own."""
    conn = pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.port,
                                                             heartbeat=0))
    ch = conn.channel()
    ch.confirm_delivery()
    queue = ch.queue_declare("", exclusive=True).method.queue
    yield conn, ch, queue
    assert conn.is_open, "the well-behaved client lost its connection"
    conn.close()


def roundtrip(side, n: int = 3) -> None:
    """Publish ``n`` confirmed messages and get them back, in order."""
    conn, ch, queue = side
    sent = [uuid.uuid4().bytes for _ in range(n)]
    for body in sent:
        ch.basic_publish("", queue, body)            # confirm mode: returns once confirmed
    got = []
    for method, _, body in ch.consume(queue, inactivity_timeout=5):
        assert method is not None, f"timed out after {len(got)} of {n} messages"
        ch.basic_ack(method.delivery_tag)
        got.append(body)
        if len(got) == n:
            break
    ch.cancel()
    assert got == sent


# ----------------------------------------------------------------------------- a raw client

def m(channel: int, method) -> bytes:
    return pframe.marshal(method, channel)


class RawClient:
    """A socket that speaks AMQP frames by hand (pamqp to encode and decode)."""

    def __init__(self, broker: BrokerProcess, timeout: float = 5.0):
        self.sock = socket.create_connection((broker.host, broker.port), timeout=timeout)
        self.buf = b""
        self.frame_max = 131072

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self):
        """The next (channel, frame), or None at EOF (or a reset)."""
        while True:
            if self.buf.startswith(b"AMQP") and len(self.buf) >= 8:
                frame, self.buf = self.buf[:8], self.buf[8:]
                return 0, frame
            if len(self.buf) >= 7:
                size = struct.unpack_from(">I", self.buf, 3)[0]
                if len(self.buf) >= size + 8:
                    n, channel, frame = pframe.unmarshal(self.buf[:size + 8])
                    self.buf = self.buf[n:]
                    return channel, frame
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            self.buf += data

    def expect(self, cls):
        got = self.read_frame()
        assert got is not None and isinstance(got[1], cls), f"expected {cls.__name__}, got {got}"
        return got[1]

    def handshake(self, channels=(1,)) -> None:
        self.send(PROTOCOL_HEADER)
        self.expect(C.Connection.Start)
        self.send(m(0, C.Connection.StartOk(client_properties={"product": "raw"},
                                            mechanism="PLAIN", response="\0guest\0guest")))
        tune = self.expect(C.Connection.Tune)
        self.frame_max = tune.frame_max
        self.send(m(0, C.Connection.TuneOk(channel_max=tune.channel_max,
                                           frame_max=tune.frame_max, heartbeat=0))
                  + m(0, C.Connection.Open(virtual_host="/")))
        self.expect(C.Connection.OpenOk)
        for ch in channels:
            self.send(m(ch, C.Channel.Open()))
            self.expect(C.Channel.OpenOk)

    def replies_until_eof(self) -> list:
        """Every frame until the broker closes the socket, answering connection.close."""
        out = []
        while (got := self.read_frame()) is not None:
            out.append(got)
            if isinstance(got[1], C.Connection.Close):
                try:
                    self.send(m(0, C.Connection.CloseOk()))
                except OSError:
                    pass
        return out

    def connection_close(self) -> C.Connection.Close:
        """Read up to the broker's connection.close, answer close-ok, and see the socket end."""
        replies = self.replies_until_eof()
        closes = [f for _, f in replies if isinstance(f, C.Connection.Close)]
        assert closes, f"no connection.close, got {replies}"
        return closes[0]


@pytest.fixture
def raw(broker):
    opened = []

    def make() -> RawClient:
        c = RawClient(broker)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


def publish_frames(channel: int, body: bytes, frame_max: int, routing_key: str = "nowhere"):
    out = [m(channel, C.Basic.Publish(exchange="", routing_key=routing_key)),
           pframe.marshal(pheader.ContentHeader(0, len(body), C.Basic.Properties()), channel)]
    for i in range(0, len(body), frame_max - 8):
        out.append(pframe.marshal(pbody.ContentBody(body[i:i + frame_max - 8]), channel))
    return out


# ----------------------------------------------------------------------------- deterministic

BAD = {
    "bad frame end": (m(1, C.Basic.Qos(prefetch_count=1))[:-1] + b"\x00", 501),
    "unknown frame type": (b"\x07\x00\x01\x00\x00\x00\x01x\xce", 501),
    "oversized frame": (b"\x01\x00\x01\xff\xff\xff\x00", 501),
    "heartbeat on a channel": (b"\x08\x00\x01\x00\x00\x00\x00\xce", 505),   # RabbitMQ's
    "method on unopened channel": (m(9, C.Basic.Qos(prefetch_count=1)), 504),
    "second channel.open": (m(1, C.Channel.Open()), 504),
    "header without publish": (pframe.marshal(pheader.ContentHeader(0, 3, C.Basic.Properties()),
                                              1), 505),
    "method while awaiting body": (m(1, C.Basic.Publish(routing_key="q"))
                                   + pframe.marshal(pheader.ContentHeader(
                                       0, 3, C.Basic.Properties()), 1)
                                   + m(1, C.Basic.Qos(prefetch_count=1)), 505),
    "body overrun": (m(1, C.Basic.Publish(routing_key="q"))
                     + pframe.marshal(pheader.ContentHeader(0, 2, C.Basic.Properties()), 1)
                     + pframe.marshal(pbody.ContentBody(b"abc"), 1), 501),
    "unknown method": (b"\x01\x00\x01\x00\x00\x00\x04\x00\x3c\x00\x63\xce", 540),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_broken_frame_gets_connection_close(broker, raw, side, case):
    data, code = BAD[case]
    client = raw()
    client.handshake()
    client.send(data)
    close = client.connection_close()
    assert close.reply_code == code, close.reply_text
    assert close.reply_text.startswith(
        {501: "FRAME_ERROR", 504: "CHANNEL_ERROR", 505: "UNEXPECTED_FRAME",
         540: "NOT_IMPLEMENTED"}[code])
    roundtrip(side)


@pytest.mark.parametrize("header", [b"AMQP\x01\x01\x00\x09", b"GET / HTTP/1.1\r\n\r\n"])
def test_wrong_protocol_header_gets_ours_and_eof(broker, raw, header):
    client = raw()
    client.send(header)
    assert client.replies_until_eof() == [(0, PROTOCOL_HEADER)]


def test_garbage_during_handshake_drops_the_socket(broker, raw, side):
    """RabbitMQ answers nothing before connection.open (no close, the socket just ends)."""
    client = raw()
    client.send(PROTOCOL_HEADER)
    client.expect(C.Connection.Start)
    client.send(b"\x01\x00\x00\x00\x00\x00\x02\x00\x0a\x00")          # bad end byte
    assert client.replies_until_eof() == []
    roundtrip(side)


def test_message_over_max_size_closes_only_the_channel(broker, raw, side):
    client = raw()
    client.handshake(channels=(1, 2))
    client.send(b"".join(publish_frames(1, b"x" * (MAX_MESSAGE_SIZE + 1), client.frame_max)))
    _, close = client.read_frame()
    assert isinstance(close, C.Channel.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (406, 60, 40)
    assert f"larger than configured max size {MAX_MESSAGE_SIZE}" in close.reply_text
    client.send(m(1, C.Channel.CloseOk()))
    # channel 2 and the connection are fine: a declare on it is answered
    client.send(m(2, C.Queue.Declare(queue="", exclusive=True)))
    assert client.read_frame()[0] == 2
    client.send(m(1, C.Channel.Open()))
    assert client.expect(C.Channel.OpenOk)
    roundtrip(side)


def test_long_unicode_reply_text_still_closes_the_channel(broker, raw):
    """A 404 whose text passes 255 bytes (but not 255 characters) is cut, not fatal."""
    client = raw()
    client.handshake()
    name = ("é" * 120).encode()                 # pamqp refuses to build it; RabbitMQ accepts it
    args = b"\x00\x32\x00\x0a\x00\x00" + bytes([len(name)]) + name + b"\x01" + bytes(4)
    client.send(b"\x01\x00\x01" + struct.pack(">I", len(args)) + args + b"\xce")
    channel, close = client.read_frame()
    assert channel == 1 and isinstance(close, C.Channel.Close)
    assert close.reply_code == 404
    assert len(close.reply_text.encode()) <= 255
    client.send(m(1, C.Channel.CloseOk()) + m(1, C.Channel.Open()))
    assert client.expect(C.Channel.OpenOk)


# ----------------------------------------------------------------------------- random garbage

def valid_stream(rng: random.Random, frame_max: int) -> list[bytes]:
    out = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.choice(["publish", "big", "ack", "qos", "declare", "heartbeat", "open"])
        if kind in ("publish", "big"):
            size = rng.randint(0, 200) if kind == "publish" else rng.randint(frame_max,
                                                                             3 * frame_max)
            out += publish_frames(1, rng.randbytes(size), frame_max)
        elif kind == "ack":
            out.append(m(1, C.Basic.Ack(delivery_tag=rng.randint(1, 50))))
        elif kind == "qos":
            out.append(m(1, C.Basic.Qos(prefetch_count=rng.randint(0, 100))))
        elif kind == "declare":
            out.append(m(1, C.Queue.Declare(queue="", exclusive=True)))
        elif kind == "heartbeat":
            out.append(b"\x08\x00\x00\x00\x00\x00\x00\xce")
        else:
            out.append(m(rng.randint(2, 5), C.Channel.Open()))
    return out


def mutate(rng: random.Random, parts: list[bytes]) -> bytes:
    parts = list(parts)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(parts))
        f = bytearray(parts[i])
        if not f:
            continue
        op = rng.choice(["flip", "truncate", "insert", "size", "type", "channel", "end", "junk"])
        if op == "flip":
            f[rng.randrange(len(f))] ^= 1 << rng.randrange(8)
        elif op == "truncate":
            del f[rng.randrange(len(f)):]
        elif op == "insert":
            pos = rng.randrange(len(f) + 1)
            f[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == "size" and len(f) >= 7:
            f[3:7] = struct.pack(">I", rng.choice([0, 1, rng.randrange(64), rng.getrandbits(32)]))
        elif op == "type":
            f[0] = rng.randrange(256)
        elif op == "channel" and len(f) >= 3:
            f[1:3] = struct.pack(">H", rng.randrange(65536))
        elif op == "end":
            f[-1] = rng.randrange(256)
        elif op == "junk":
            f = bytearray(rng.randbytes(rng.randint(1, 100)))
        parts[i] = bytes(f)
    return b"".join(parts)


@pytest.mark.parametrize("seed", range(10))
def test_random_garbage_from_several_sockets(broker, raw, side, seed):
    rng = random.Random(seed)
    clients = [raw() for _ in range(3)]
    for client in clients:
        client.handshake()
    for client in clients:
        garbage = mutate(rng, valid_stream(rng, client.frame_max))
        if rng.random() < 0.2:
            garbage = rng.randbytes(rng.randint(1, 300))
        client.send(garbage)
        client.sock.shutdown(socket.SHUT_WR)        # EOF: the broker must not wait for more
    roundtrip(side)                                  # while the broker deals with the garbage
    for client in clients:
        for channel, frame in client.replies_until_eof():
            if isinstance(frame, C.Connection.Close):
                assert frame.reply_code in HARD_CODES, frame.reply_text
            elif isinstance(frame, C.Channel.Close):
                assert channel and frame.reply_code in SOFT_CODES, frame.reply_text
    roundtrip(side)


# ----------------------------------------------------------------------------- cut by the proxy

def drain_queue(broker, queue: str, expected: int, timeout: float = 10.0) -> list:
    """Consume ``expected`` messages on a fresh connection: [(body, redelivered)]."""
    conn = pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.port))
    try:
        ch = conn.channel()
        got = []
        deadline = time.monotonic() + timeout
        for method, _, body in ch.consume(queue, inactivity_timeout=0.2):
            if method is not None:
                ch.basic_ack(method.delivery_tag)
                got.append((body, method.redelivered))
            if len(got) == expected or time.monotonic() > deadline:
                break
        ch.cancel()
        assert ch.queue_declare(queue, passive=True).method.message_count == 0
        return got
    finally:
        conn.close()


@pytest.mark.parametrize("direction,n", [("client_to_server", 100), ("both", 1000)])
def test_fault_proxy_forwards_exactly_n_bytes(direction, n):
    """The proxy itself: with a sink behind it, exactly n bytes get through, then a reset."""
    import threading
    sink = socket.create_server(("127.0.0.1", 0))
    got = bytearray()

    def drain():
        conn, _ = sink.accept()
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except ConnectionResetError:
                    return
                if not data:
                    return
                got.extend(data)

    t = threading.Thread(target=drain)
    t.start()
    with FaultProxy("127.0.0.1", sink.getsockname()[1], cut_after=n, direction=direction) as proxy:
        client = socket.create_connection((proxy.host, proxy.port), timeout=5)
        try:
            client.sendall(b"x" * (n + 500))
            ended = client.recv(1) == b""          # the cut reaches us as EOF or reset
        except (ConnectionResetError, BrokenPipeError):
            ended = True
        assert ended
        client.close()
        t.join(5)
        assert bytes(got) == b"x" * n
        assert proxy.cuts == 1 and proxy.live == 0
    sink.close()


def consume_until_cut(host: str, port: int, queue: str) -> list[bytes]:
    """A raw consumer (no acks) that pipelines its whole handshake, then reads until EOF.

    Returns the bodies it received in full. A raw client rather than pika: pika drops the
    frames it had read but not yet dispatched when the socket dies, so what it reports
    received would depend on timing.
    """
    sock = socket.create_connection((host, port), timeout=10)
    client = RawClient.__new__(RawClient)
    client.sock, client.buf = sock, b""
    try:
        sock.sendall(PROTOCOL_HEADER
                     + m(0, C.Connection.StartOk(client_properties={"product": "cut"},
                                                 mechanism="PLAIN", response="\0guest\0guest"))
                     + m(0, C.Connection.TuneOk(channel_max=16, frame_max=131072, heartbeat=0))
                     + m(0, C.Connection.Open(virtual_host="/"))
                     + m(1, C.Channel.Open())
                     + m(1, C.Basic.Consume(queue=queue, no_ack=False)))
    except OSError:
        pass
    received, current, expected = [], None, 0
    while (got := client.read_frame()) is not None:
        frame = got[1]
        if isinstance(frame, C.Basic.Deliver):
            current = b""
        elif isinstance(frame, pheader.ContentHeader):
            expected = frame.body_size
        elif isinstance(frame, pbody.ContentBody):
            current += frame.value
            if len(current) == expected:
                received.append(current)
    sock.close()
    return received


@pytest.mark.parametrize("k", [4, 7, 9, 10, 12, 14])
def test_client_cut_after_2_to_the_k_bytes(broker, side, k):
    conn, ch, _ = side
    queue = f"cut-{k}-{uuid.uuid4().hex[:6]}"
    ch.queue_declare(queue)
    bodies = [f"{i:04d}".encode() * 250 for i in range(40)]     # 40 kB: more than 2^14
    for body in bodies:
        ch.basic_publish("", queue, body)

    with FaultProxy(broker.host, broker.port, cut_after=2 ** k) as proxy:
        received = consume_until_cut(proxy.host, proxy.port, queue)
        assert proxy.cuts == 1 and proxy.accepted == 1
    if k >= 12:
        assert received, "the cut client should have had some deliveries in full"
    else:
        assert not received                      # still in the handshake when cut

    got = drain_queue(broker, queue, len(bodies))           # a fresh client works
    assert sorted(b for b, _ in got) == sorted(bodies)      # nothing lost, no duplicate
    redelivered = {b for b, r in got if r}
    assert set(received) <= redelivered
    roundtrip(side)
    ch.queue_delete(queue)


def test_pika_client_cut_mid_stream(broker, side):
    """The same with pika: it sees the cut as a lost stream; the broker requeues its messages."""
    conn, ch, _ = side
    queue = f"cut-pika-{uuid.uuid4().hex[:6]}"
    ch.queue_declare(queue)
    bodies = [f"{i:04d}".encode() * 250 for i in range(40)]
    for body in bodies:
        ch.basic_publish("", queue, body)
    # count only what the broker sends: the handshake is < 1 kB, so the cut falls in deliveries
    with FaultProxy(broker.host, broker.port, cut_after=2 ** 13, direction=DOWNSTREAM) as proxy:
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            cut = pika.BlockingConnection(pika.ConnectionParameters(
                proxy.host, proxy.port, heartbeat=0, connection_attempts=1))
            cut.channel().basic_consume(queue, lambda *a: None)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                cut.process_data_events(time_limit=0.1)
        assert proxy.cuts == 1
    got = drain_queue(broker, queue, len(bodies))
    assert sorted(b for b, _ in got) == sorted(bodies)
    assert any(r for _, r in got)                # some had gone out to the cut client
    ch.queue_delete(queue)


def test_stalled_client_is_dropped_after_missed_heartbeats(broker, side):
    """The proxy stalls a client that asked for 1 s heartbeats: the broker drops it by 2 s."""
    with FaultProxy(broker.host, broker.port) as proxy:
        client = RawClient.__new__(RawClient)
        client.sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
        client.buf = b""
        client.send(PROTOCOL_HEADER)
        client.expect(C.Connection.Start)
        client.send(m(0, C.Connection.StartOk(client_properties={}, mechanism="PLAIN",
                                              response="\0guest\0guest")))
        client.expect(C.Connection.Tune)
        client.send(m(0, C.Connection.TuneOk(channel_max=16, frame_max=131072, heartbeat=1))
                    + m(0, C.Connection.Open(virtual_host="/")))
        client.expect(C.Connection.OpenOk)
        mark = len(broker.output)
        proxy.stall()
        deadline = time.monotonic() + 10
        while not any("missed heartbeats" in line for line in broker.output[mark:]):
            assert time.monotonic() < deadline, "broker never noticed the stalled client"
            roundtrip(side, 1)                   # meanwhile others are served
        proxy.resume()
        # what was held back (the broker's heartbeats) arrives, then the end of the stream
        rest = client.replies_until_eof()
        assert all(ch == 0 and type(f).__name__ == "Heartbeat" for ch, f in rest), rest
        client.close()
