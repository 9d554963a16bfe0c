"""Classic-queue semantics against a model, over real sockets (pika BlockingConnection).

Each example declares one fresh queue, with no arguments, ``x-max-priority=5``,
``x-max-length=N`` (default overflow, drop-head) or ``x-max-length=N`` with
``x-overflow=reject-publish``, and drives it from two channels (on one or two connections, both
in confirm mode) with publish (1-3 messages, or to one past the limit), basic.get (ack or auto-ack), ack / nack / reject (single or
multiple, requeue or not), channel close with unacked deliveries, purge and a consumer that
takes N messages under prefetch N and cancels.

The model is what RabbitMQ 3.10 does with a classic queue, checked by pointing this very test
at it (``QUEUE_MODEL_URL=amqp://guest:guest@127.0.0.1:5673/``):

* ready messages leave highest priority first (a priority above x-max-priority counts as the
  maximum), FIFO within a priority;
* a requeued message goes back to its original position (by publish order within its
  priority), not simply to the head; it is flagged redelivered on every later delivery, and a
  message never delivered before never is;
* x-max-length counts ready messages only (unacked ones do not count); drop-head drops the
  head after a publish *and after a requeue* (which may drop the requeued message itself);
  reject-publish nacks a publish while the queue is full, and a requeue may leave it over the
  limit;
* message_count (queue.declare-ok passive, basic.get-ok, purge-ok) is the ready count;
* delivery tags count every delivery of a channel from 1, auto-ack ones included.

After every step a passive declare (on the connection that made the step, which also orders
the step's asynchronous acks and nacks before it) must report the model's ready count. At the
end both channels are closed (their unacked messages requeue) and draining the queue must
yield exactly the model's messages, in the model's order, with the model's redelivered flags.
``QUEUE_MODEL_EXAMPLES`` (default 50) runs more examples. A failing run shrinks for up to
Hypothesis's five minutes, hence the longer pytest timeout on this test.
"""
from __future__ import annotations

import bisect
import functools
import os
import time
import uuid

import pika
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule, run_state_machine_as_test)

from amqpbroker.testing import BrokerProcess

URL_ENV = "QUEUE_MODEL_URL"
MAX_PRIORITY = 5
KINDS = ("plain", "priority", "drop-head", "reject-publish")


@pytest.fixture(scope="module")
def broker_url(tmp_path_factory):
    url = os.environ.get(URL_ENV)
    if url:
        yield url
        return
    broker = BrokerProcess(tmp_path_factory.mktemp("queue-model")).start()
    try:
        yield broker.url
    finally:
        broker.stop()


class Message:
    __slots__ = ("seq", "body", "level", "delivered")

    def __init__(self, seq: int, body: bytes, level: int):
        self.seq = seq
        self.body = body
        self.level = level
        self.delivered = False

    @property
    def key(self):
        return (-self.level, self.seq)

    def __repr__(self):
        return f"M{self.seq}(p{self.level}{', redelivered' if self.delivered else ''})"


class QueueModel:
    """The ready messages of a RabbitMQ classic queue, in delivery order."""

    def __init__(self, kind: str, max_length: int):
        self.kind = kind
        self.max_length = max_length
        self.ready: list[Message] = []

    def level(self, priority) -> int:
        if self.kind != "priority" or priority is None:
            return 0
        return min(priority, MAX_PRIORITY)

    def _insert(self, msg: Message) -> None:
        keys = [m.key for m in self.ready]
        self.ready.insert(bisect.bisect(keys, msg.key), msg)

    def _drop_head(self) -> None:
        if self.kind == "drop-head":
            del self.ready[:max(0, len(self.ready) - self.max_length)]

    def publish(self, msg: Message) -> bool:
        if self.kind == "reject-publish" and len(self.ready) >= self.max_length:
            return False
        self._insert(msg)
        self._drop_head()
        return True

    def pop(self) -> Message | None:
        return self.ready.pop(0) if self.ready else None

    def requeue(self, msgs) -> None:
        for m in msgs:
            self._insert(m)
        self._drop_head()     # RabbitMQ's requeue_and_run: maybe_drop_head after requeue


def guarded(f):
    """Remember that a step failed, so teardown does not pile a second failure on top."""
    @functools.wraps(f)
    def wrapper(self, *a, **kw):
        try:
            return f(self, *a, **kw)
        except BaseException:
            self.broken = True
            raise
    return wrapper


class QueueMachine(RuleBasedStateMachine):
    url: str = ""

    def __init__(self):
        super().__init__()
        self.broken = False
        self.conns: list = []
        self.model: QueueModel | None = None
        self.queue = "queue-model-" + uuid.uuid4().hex[:12]

    # ------------------------------------------------------------------ set-up
    @initialize(kind=st.sampled_from(KINDS), max_length=st.sampled_from([2, 1, 3, 0]),
                durable=st.booleans(), two_connections=st.booleans())
    @guarded
    def declare(self, kind, max_length, durable, two_connections):
        params = pika.URLParameters(self.url)
        self.conns = [pika.BlockingConnection(params)
                      for _ in range(2 if two_connections else 1)]
        self.channels = [None, None]
        self.held: list[dict[int, Message]] = [{}, {}]
        self.next_tag = [1, 1]
        for i in (0, 1):
            self._open(i)
        args = {"plain": None, "priority": {"x-max-priority": MAX_PRIORITY},
                "drop-head": {"x-max-length": max_length},
                "reject-publish": {"x-max-length": max_length,
                                   "x-overflow": "reject-publish"}}[kind]
        self.channels[0].queue_declare(self.queue, durable=durable, arguments=args)
        self.model = QueueModel(kind, max_length)
        self.seq = 0
        self.last = 0

    def _conn(self, i: int):
        return self.conns[i % len(self.conns)]

    def _open(self, i: int) -> None:
        ch = self._conn(i).channel()
        ch.confirm_delivery()
        self.channels[i] = ch
        self.held[i] = {}
        self.next_tag[i] = 1

    def _delivered(self, i: int, method, body, msg: Message | None, auto_ack: bool) -> None:
        """Check one delivery (get-ok or deliver) against the model's next message."""
        assert msg is not None, f"got {body!r} but the model's queue is empty"
        assert body == msg.body, f"got {body!r}, model expects {msg} {msg.body!r}"
        assert method.redelivered == msg.delivered, f"redelivered flag of {msg}"
        assert method.delivery_tag == self.next_tag[i]
        self.next_tag[i] += 1
        msg.delivered = True
        if not auto_ack:
            self.held[i][method.delivery_tag] = msg

    # ------------------------------------------------------------------ rules
    @rule(i=st.integers(0, 1), bodies=st.lists(st.binary(max_size=16), min_size=1, max_size=3),
          priority=st.none() | st.integers(0, 9), persistent=st.booleans())
    @guarded
    def publish(self, i, bodies, priority, persistent):
        """Publish 1-3 messages."""
        self.last = i
        for body in bodies:
            self._publish(i, body, priority, persistent)

    @rule(i=st.integers(0, 1), priority=st.none() | st.integers(0, 9), persistent=st.booleans())
    @guarded
    def fill(self, i, priority, persistent):
        """Publish until one past x-max-length (3 messages if there is no limit), so that
        limits are reached often and requeues meet a full queue."""
        self.last = i
        limited = self.model.kind in ("drop-head", "reject-publish")
        n = max(1, self.model.max_length - len(self.model.ready) + 1) if limited else 3
        for _ in range(n):
            self._publish(i, b"", priority, persistent)

    def _publish(self, i, body, priority, persistent):
        self.seq += 1
        body = b"%d:" % self.seq + body
        msg = Message(self.seq, body, self.model.level(priority))
        props = pika.BasicProperties(priority=priority, delivery_mode=2 if persistent else 1)
        try:
            self.channels[i].basic_publish("", self.queue, body, props)
            confirmed = True
        except pika.exceptions.NackError:
            confirmed = False
        assert confirmed == self.model.publish(msg), \
            f"publish of {msg}: broker {'acked' if confirmed else 'nacked'}"

    @rule(i=st.integers(0, 1), auto_ack=st.booleans())
    @guarded
    def get(self, i, auto_ack):
        self.last = i
        msg = self.model.pop()
        method, _, body = self.channels[i].basic_get(self.queue, auto_ack=auto_ack)
        if method is None:
            assert msg is None, f"get-empty, but the model expects {msg}"
            return
        self._delivered(i, method, body, msg, auto_ack)
        assert method.message_count == len(self.model.ready)

    def _held_tag(self, data):
        i = data.draw(st.sampled_from([j for j in (0, 1) if self.held[j]]))
        tag = data.draw(st.sampled_from(sorted(self.held[i])))
        return i, tag

    def _take(self, i, tag, multiple) -> list[Message]:
        tags = [t for t in self.held[i] if t <= tag] if multiple else [tag]
        return [self.held[i].pop(t) for t in tags]

    def _holding(self):
        return any(self.held)

    @precondition(_holding)
    @rule(data=st.data(), multiple=st.booleans())
    @guarded
    def ack(self, data, multiple):
        i, tag = self._held_tag(data)
        self.last = i
        self._take(i, tag, multiple)
        self.channels[i].basic_ack(tag, multiple=multiple)

    @precondition(_holding)
    @rule(data=st.data(), requeue=st.booleans(),
          how=st.sampled_from(["reject", "nack", "nack-multiple"]))
    @guarded
    def nack(self, data, requeue, how):
        i, tag = self._held_tag(data)
        self.last = i
        msgs = self._take(i, tag, how == "nack-multiple")
        if how == "reject":
            self.channels[i].basic_reject(tag, requeue=requeue)
        else:
            self.channels[i].basic_nack(tag, multiple=how == "nack-multiple", requeue=requeue)
        if requeue:
            self.model.requeue(msgs)

    @precondition(_holding)
    @rule(data=st.data())
    @guarded
    def close_channel(self, data):
        i = data.draw(st.sampled_from([j for j in (0, 1) if self.held[j]]))
        self.last = i
        msgs = list(self.held[i].values())
        self.channels[i].close()
        self.model.requeue(msgs)
        self._open(i)

    @rule(i=st.integers(0, 1))
    @guarded
    def purge(self, i):
        self.last = i
        count = self.channels[i].queue_purge(self.queue).method.message_count
        assert count == len(self.model.ready)
        self.model.ready.clear()

    @rule(i=st.integers(0, 1), n=st.integers(1, 5))
    @guarded
    def consume(self, i, n):
        """A consumer with prefetch n takes what it can (n or all that is ready), cancels."""
        self.last = i
        ch = self.channels[i]
        expected = [self.model.pop() for _ in range(min(n, len(self.model.ready)))]
        got = []
        ch.basic_qos(prefetch_count=n)
        tag = ch.basic_consume(self.queue, lambda _c, m, _p, b: got.append((m, b)))
        deadline = time.monotonic() + 1
        while len(got) < len(expected) and time.monotonic() < deadline:
            self._conn(i).process_data_events(time_limit=0.05)
        self._conn(i).process_data_events(time_limit=0)    # anything beyond the prefetch?
        ch.basic_cancel(tag)
        assert len(got) == len(expected), \
            f"consumer with prefetch {n} got {[b for _, b in got]}, model expects {expected}"
        for (method, body), msg in zip(got, expected):
            self._delivered(i, method, body, msg, auto_ack=False)

    # ------------------------------------------------------------------ invariants
    @invariant()
    @guarded
    def message_count_is_ready_count(self):
        if self.model is None:
            return
        got = self._message_count(self.channels[self.last])
        assert got == len(self.model.ready), f"message_count {got}, model has {self.model.ready}"

    def _message_count(self, ch) -> int:
        """Passive declare; asked again for a moment if it differs from the model, as
        RabbitMQ requeues a closed channel's deliveries asynchronously."""
        deadline = time.monotonic() + 0.5
        while True:
            got = ch.queue_declare(self.queue, passive=True).method.message_count
            if got == len(self.model.ready) or time.monotonic() > deadline:
                return got
            time.sleep(0.02)

    def teardown(self):
        try:
            if self.model is not None and not self.broken:
                for i in (0, 1):
                    msgs = list(self.held[i].values())
                    self.channels[i].close()
                    self.model.requeue(msgs)
                ch = self.conns[0].channel()
                self._message_count(ch)
                drained = []
                while True:
                    method, _, body = ch.basic_get(self.queue, auto_ack=True)
                    if method is None:
                        break
                    drained.append((body, method.redelivered))
                assert drained == [(m.body, m.delivered) for m in self.model.ready]
        finally:
            if self.conns:
                try:
                    if self.conns[0].is_open:
                        self.conns[0].channel().queue_delete(self.queue)
                finally:
                    for c in self.conns:
                        if c.is_open:
                            c.close()


@pytest.mark.timeout(420)
def test_classic_queue_against_model(broker_url):
    QueueMachine.url = broker_url
    run_state_machine_as_test(QueueMachine, settings=settings(
        max_examples=int(os.environ.get("QUEUE_MODEL_EXAMPLES", 50)), stateful_step_count=30,
        deadline=None,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
