"""Fuzz the whole front-end — session, channels, vhost, exchanges, the partition client and
host through the contract's codec — with what clients can put on the wire.

One broker in this process (``amqpbroker.testing.inprocess``, no sockets) for the module. Each
example opens a connection, sends a stream of client methods with any field values (names
pamqp would refuse, every x-argument with values of every type, typed header tables, content
on open and unopened channels) and closes it. The invariant is h11's at the broker's scale:
every input is handled or refused with a protocol error — never 541 INTERNAL_ERROR, never an
error in the log — whatever went on the wire decodes, and the broker keeps answering another
client: after each example a second connection declares, publishes and gets a message back.
Each example runs in a vhost of its own, deleted after it (so examples replay alike, and the
deletion of whatever they made is fuzzed too).
"""
from __future__ import annotations

import logging
import shutil
import tempfile

import pytest
from hypothesis import given
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from amqpbroker.testing import strategies as S
from amqpbroker.testing.fuzzing import fuzz
from amqpbroker.testing.inprocess import InProcessBroker

pytestmark = pytest.mark.filterwarnings("ignore:This command is deprecated")


def handshake(vhost: str) -> bytes:
    return (b"AMQP\x00\x00\x09\x01"
            + pframe.marshal(C.Connection.StartOk(client_properties={"capabilities": {
                "consumer_cancel_notify": True}}, mechanism="PLAIN",
                response="\0guest\0guest"), 0)
            + pframe.marshal(C.Connection.TuneOk(channel_max=8, frame_max=4096,
                                                 heartbeat=0), 0)
            + pframe.marshal(C.Connection.Open(virtual_host=vhost), 0)
            + pframe.marshal(C.Channel.Open(), 1) + pframe.marshal(C.Channel.Open(), 2))


# what each example finds in its vhost, for its methods to act on
SETUP = b"".join(pframe.marshal(m, 2) for m in (
    C.Exchange.Declare(exchange="ex", exchange_type="topic"),
    C.Queue.Declare(queue="q", arguments={"x-dead-letter-exchange": "ex"}),
    C.Queue.Declare(queue="q2", arguments={"x-message-ttl": 0,
                                           "x-dead-letter-exchange": "amq.fanout"}),
    C.Queue.Bind(queue="q", exchange="ex", routing_key="#"),
    C.Queue.Bind(queue="q", exchange="amq.fanout"),
    C.Queue.Bind(queue="q2", exchange="amq.headers", arguments={"a": 1})))


class ErrorLog(logging.Handler):
    """Every ERROR the broker logs (an internal error is logged with its traceback)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


class Harness:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="session-fuzz-")
        self.broker = InProcessBroker(self.dir)
        self.errors = ErrorLog()
        logging.getLogger("amqpbroker").addHandler(self.errors)
        self.round = 0

    def close(self):
        logging.getLogger("amqpbroker").removeHandler(self.errors)
        self.broker.close()
        shutil.rmtree(self.dir, ignore_errors=True)


HARNESS: Harness | None = None


def fuzz_setup():
    """One broker for every example (and for the atheris driver)."""
    global HARNESS
    HARNESS = Harness()

    def teardown():
        global HARNESS
        HARNESS.close()
        HARNESS = None
    return teardown


@pytest.fixture(scope="module", autouse=True)
def harness():
    teardown = fuzz_setup()
    yield
    teardown()


def check_replies(replies: list) -> None:
    for channel, frame in replies:
        assert frame is not None, "the broker wrote a frame that does not decode"
        if isinstance(frame, (C.Connection.Close, C.Channel.Close)):
            assert frame.reply_code != 541, f"channel {channel}: {frame.reply_text}"
            assert frame.reply_code in (311, 312, 313, 320, 402, 403, 404, 405, 406, 501, 502,
                                        503, 504, 505, 506, 530, 540), frame.reply_code


def side_roundtrip(h: Harness) -> None:
    """Another client: declare a queue of its own, publish, get the message back."""
    b = h.broker
    peer = b.connect()
    h.round += 1
    queue, body = f"side-{h.round}", b"still here %d" % h.round
    peer.send(handshake("/") + pframe.marshal(C.Queue.Declare(queue=queue, exclusive=True), 1)
              + pframe.marshal(C.Basic.Publish(exchange="", routing_key=queue), 1)
              + pframe.marshal(ContentHeader(0, len(body)), 1)
              + pframe.marshal(ContentBody(body), 1))
    b.settle([peer])
    peer.send(pframe.marshal(C.Basic.Get(queue=queue, no_ack=True), 1))
    b.settle([peer])
    got = [f.value for _, f in peer.take() if isinstance(f, ContentBody)]
    assert got == [body], got
    peer.close()
    b.settle()


@fuzz(60)
@given(S.client_stream())
def test_any_client_methods_get_a_reply_code_never_an_internal_error(stream):
    h = HARNESS
    b = h.broker
    before = len(h.errors.records)
    h.round += 1
    vhost = f"fuzz-{h.round}"            # its own vhost: examples do not see each other
    b.owner.add_vhost(vhost)
    b.owner.users.set_permissions(vhost, "guest")
    peer = b.connect()
    peer.send(handshake(vhost) + SETUP)
    replies = []
    for part in stream:
        peer.send(part)
        b.settle([peer], quiet_turns=5)
        now = peer.take()
        replies += now
        if peer.transport.closed:
            break
        for channel, frame in now:           # as a client does: reopen a closed channel
            if isinstance(frame, C.Channel.Close):
                peer.send(pframe.marshal(C.Channel.CloseOk(), channel)
                          + pframe.marshal(C.Channel.Open(), channel))
    b.settle([peer])
    replies += peer.take()
    peer.close()
    b.owner.delete_vhost(vhost)             # and everything in it
    b.settle()
    logged = [r.getMessage() + "\n" + (logging.Formatter().formatException(r.exc_info)
                                       if r.exc_info else "")
              for r in h.errors.records[before:]]
    assert not logged, "\n".join(logged)
    check_replies(replies)
    side_roundtrip(h)
