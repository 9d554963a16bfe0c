"""AMQP 1.0 on the AMQP port (amqpbroker/amqp10), in both process layouts: what ours does
beyond what interop/test_amqp10.py pins against RabbitMQ 3.10.8 -- a refused attach detaches
only its link, with the error (RabbitMQ 3.10 ends the whole session); the ``modified``
outcome (RabbitMQ 3.10 ends the session on it); ANONYMOUS as the default user; the
management API's view; a queue deleted under a consumer; pre-settled sending and receiving;
garbage after the header; a client that never settles holds at most its credit.

Every wait is on a client call with a timeout or ``wait_until``.
"""
from __future__ import annotations

import socket
import struct
import uuid

import pika
import pytest
from proton import Delivery, Message
from proton.reactor import AtMostOnce
from proton.utils import BlockingConnection, LinkDetached

from amqpbroker.amqp10 import frames as f
from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import wait_until

pytestmark = pytest.mark.own_layout         # every broker here names its layout
TIMEOUT = 10


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("amqp10"), *LAYOUTS[request.param],
                       management=True) as b:
        yield b


@pytest.fixture
def names(request):
    counter = iter(range(1000))
    base = request.node.name.replace("[", "-").replace("]", "").replace(" ", "")[-50:]
    return lambda prefix="q": f"{prefix}-{base}-{next(counter)}"


@pytest.fixture
def connect(broker):
    opened = []

    def make(mechanism: str = "PLAIN") -> BlockingConnection:
        c = BlockingConnection(f"amqp://guest:guest@{broker.host}:{broker.port}",
                               timeout=TIMEOUT, allowed_mechs=mechanism)
        opened.append(c)
        return c
    yield make
    for c in opened:
        try:
            c.close()
        except Exception:                           # noqa: BLE001 - already gone
            pass


@pytest.fixture
def ch(broker):
    conn = pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.port))
    yield conn.channel()
    conn.close()


def count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def sent(c: BlockingConnection, queue: str) -> None:
    """What ``c`` sent so far is out: proton writes only while it waits for something, so
    wait for a link's attach (its frames go in order)."""
    c.create_sender(f"/amq/queue/{queue}", name=f"flush-{uuid.uuid4()}").close()


def test_a_refused_attach_detaches_that_link_only(connect, ch, names):
    c = connect()
    with pytest.raises(LinkDetached) as err:
        c.create_receiver("/amq/queue/no-such-queue")
    assert "amqp:not-found" in str(err.value)
    assert "NOT_FOUND - no queue 'no-such-queue' in vhost '/'" in str(err.value)
    with pytest.raises(LinkDetached) as err:
        c.create_sender("/exchange/no-such-exchange/key")
    assert "NOT_FOUND - no exchange 'no-such-exchange' in vhost '/'" in str(err.value)
    with pytest.raises(LinkDetached) as err:
        c.create_sender("/fruit/orange")
    assert "amqp:invalid-field" in str(err.value)
    with pytest.raises(LinkDetached) as err:
        c.create_receiver(None, dynamic=True)
    assert "amqp:not-implemented" in str(err.value)
    # the session and the connection go on
    queue = names()
    ch.queue_declare(queue)
    c.create_sender(f"/amq/queue/{queue}").send(Message(body="still here"))
    assert c.create_receiver(f"/amq/queue/{queue}").receive(timeout=TIMEOUT).body == \
        "still here"


def test_a_sender_without_a_target_routes_by_each_messages_to(connect, ch, names):
    queue = names()
    ch.queue_declare(queue)
    c = connect()
    sender = c.create_sender(None)
    sender.send(Message(body="by its to", address=f"/amq/queue/{queue}"))
    with pytest.raises(Exception):              # no `to`: rejected, nothing stored
        sender.send(Message(body="nowhere"))
    receiver = c.create_receiver(f"/amq/queue/{queue}")
    assert receiver.receive(timeout=TIMEOUT).body == "by its to"
    receiver.accept()
    sent(c, queue)
    assert count(ch, queue) == 0


def test_outcomes_released_modified_rejected(connect, ch, names):
    queue, dead = names(), names("dlq")
    ch.queue_declare(dead)
    ch.queue_declare(queue, arguments={"x-dead-letter-exchange": "",
                                       "x-dead-letter-routing-key": dead})
    c = connect()
    c.create_sender(f"/amq/queue/{queue}").send(Message(body="m"))
    receiver = c.create_receiver(f"/amq/queue/{queue}")
    m = receiver.receive(timeout=TIMEOUT)
    assert m.first_acquirer is True
    receiver.release(delivered=False)                        # released: back to the queue
    assert receiver.receive(timeout=TIMEOUT).first_acquirer is False
    receiver.release()                                       # modified: back to the queue
    assert receiver.receive(timeout=TIMEOUT).body == "m"
    receiver.reject()                                        # rejected: dead-lettered
    sent(c, queue)
    wait_until(lambda: count(ch, dead) == 1, 10, what="the rejected message dead-lettered")
    assert count(ch, queue) == 0
    # modified with undeliverable-here: not for this queue again, dead-lettered too
    c.create_sender(f"/amq/queue/{queue}", name="again").send(Message(body="m2"))
    assert receiver.receive(timeout=TIMEOUT).body == "m2"
    receiver.fetcher.unsettled[0].local.undeliverable = True
    receiver.settle(Delivery.MODIFIED)
    sent(c, queue)
    wait_until(lambda: count(ch, dead) == 2, 10, what="the undeliverable one dead-lettered")
    assert count(ch, queue) == 0


def test_drain_uses_the_credit_up(connect, ch, names):
    queue = names()
    ch.queue_declare(queue)
    ch.basic_publish("", queue, b"only one")
    c = connect()
    receiver = c.create_receiver(f"/amq/queue/{queue}", credit=0)
    receiver.link.drain(10)
    # the one message, then a flow that used the other nine credits up
    c.wait(lambda: receiver.fetcher.has_message and receiver.link.credit == 0
           and not receiver.link.draining(), timeout=TIMEOUT, msg="the drain answered")
    assert bytes(receiver.receive(timeout=TIMEOUT).body) == b"only one"


def test_anonymous_is_the_default_user(connect, broker, names, ch):
    queue = names()
    ch.queue_declare(queue)
    c = connect("ANONYMOUS")
    c.create_sender(f"/amq/queue/{queue}").send(Message(body="anonymous"))
    wait_until(lambda: count(ch, queue) == 1, 10, what="the anonymous message")
    shown = [x for x in broker.api("connections") if x.get("protocol") == "AMQP 1-0"]
    assert shown and {x["user"] for x in shown} == {"guest"}


def test_a_deleted_queue_detaches_its_receiver(connect, ch, names):
    queue = names()
    ch.queue_declare(queue)
    c = connect()
    receiver = c.create_receiver(f"/amq/queue/{queue}")
    ch.queue_delete(queue)
    with pytest.raises(LinkDetached) as err:
        receiver.receive(timeout=TIMEOUT)
    assert "amqp:resource-deleted" in str(err.value) and "was deleted" in str(err.value)


def test_presettled_sending_and_receiving(broker, connect, ch, names):
    queue = names()
    ch.queue_declare(queue)
    c = connect()
    sender = c.create_sender(f"/amq/queue/{queue}", options=AtMostOnce())
    for i in range(20):
        sender.send(Message(body=f"m{i}"))
    sent(c, queue)
    wait_until(lambda: count(ch, queue) == 20, 10, what="the pre-settled messages")
    receiver = c.create_receiver(f"/amq/queue/{queue}", options=AtMostOnce(), credit=5)
    got = [receiver.receive(timeout=TIMEOUT).body for _ in range(20)]
    assert got == [f"m{i}" for i in range(20)]
    c.close()
    wait_until(lambda: not [x for x in broker.api("connections")
                            if x.get("protocol") == "AMQP 1-0"], 10, "the connection gone")
    assert count(ch, queue) == 0                    # settled when sent: nothing came back


def test_unsettled_deliveries_stay_within_the_credit(connect, ch, names):
    queue = names()
    ch.queue_declare(queue)
    for i in range(30):
        ch.basic_publish("", queue, f"m{i}".encode())
    c = connect()
    receiver = c.create_receiver(f"/amq/queue/{queue}", credit=10)
    got = [receiver.receive(timeout=TIMEOUT) for _ in range(10)]
    assert [bytes(m.body) for m in got] == [f"m{i}".encode() for i in range(10)]
    c.close()                                       # none settled: all back
    wait_until(lambda: count(ch, queue) == 30, 10, what="the unsettled ones requeued")


def test_a_client_that_settles_in_large_batches_gets_its_credit(connect, ch, names):
    """Credit 1,000, and nothing settled until 700 are in: more than the link's first
    prefetch (256), so the consumer's prefetch must grow with the credit."""
    queue = names()
    ch.queue_declare(queue)
    c = connect()
    sender = c.create_sender(f"/amq/queue/{queue}")
    for i in range(800):        # string bodies: proton's bytes ones are views of a buffer
        sender.send(Message(body=f"m{i}"))                     # it reuses: read too late
    assert count(ch, queue) == 800          # each send waited for its accepted
    receiver = c.create_receiver(f"/amq/queue/{queue}", credit=1000)
    got = [receiver.receive(timeout=TIMEOUT).body for _ in range(700)]
    assert got == [f"m{i}" for i in range(700)]
    for _ in range(700):                    # then settled, one accept each
        receiver.accept()
    got = []
    for _ in range(100):
        got.append(receiver.receive(timeout=TIMEOUT).body)
        receiver.accept()
    assert got == [f"m{i}" for i in range(700, 800)]
    sent(c, queue)
    c.close()
    wait_until(lambda: count(ch, queue) == 0, 10, "the settled ones gone")


def test_garbage_after_the_header_closes_only_that_connection(broker, connect, ch, names):
    s = socket.create_connection((broker.host, broker.port), timeout=TIMEOUT)
    try:
        s.sendall(f.AMQP_HEADER + struct.pack(">IBBH", 16, 2, 0, 0) + b"\x00\x53\x10garbage!")
        got = b""
        while True:
            data = s.recv(4096)
            if not data:
                break
            got += data
    finally:
        s.close()
    assert got.startswith(f.AMQP_HEADER)
    assert b"amqp:decode-error" in got or b"framing-error" in got
    queue = names()
    ch.queue_declare(queue)
    c = connect()
    c.create_sender(f"/amq/queue/{queue}").send(Message(body="others go on"))
    wait_until(lambda: count(ch, queue) == 1, 10, what="the other client's message")


def handshake_answers(data: bytes) -> list:
    """The frames a server sent, SASL's then (after the AMQP header) AMQP's, so far."""
    if not data.startswith(f.SASL_HEADER):
        return []
    splitter = f.Splitter(1 << 20)
    frames = splitter.feed(data[8:], until="sasl_outcome")
    rest = bytes(splitter.buf)
    if frames and frames[-1].name == "sasl_outcome" and rest.startswith(f.AMQP_HEADER):
        frames += f.Splitter(1 << 20).feed(rest[8:])
    return frames


def test_a_client_that_pipelines_its_handshake(broker):
    """SASL header, sasl-init, the AMQP header and open in one write, as some clients send
    them: answered in order, the connection opened."""
    plain = b"\x00guest\x00guest"
    s = socket.create_connection((broker.host, broker.port), timeout=TIMEOUT)
    try:
        s.sendall(f.SASL_HEADER
                  + f.frame("sasl_init", mechanism=("symbol", "PLAIN"),
                            initial_response=("binary", plain))
                  + f.AMQP_HEADER
                  + f.frame("open", container_id=("utf8", "pipelined")))
        got, frames = b"", []
        while not any(fr.name == "open" for fr in frames):
            data = s.recv(4096)
            assert data, f"closed after {got!r}"
            got += data
            frames = handshake_answers(got)
    finally:
        s.close()
    names = [fr.name for fr in frames]
    assert names == ["sasl_mechanisms", "sasl_outcome", "open"]
    assert frames[1]["code"] == f.SASL_OK
