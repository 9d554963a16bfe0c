"""Production client libraries keep working across a broker restart, clean (SIGTERM) and crash
(SIGKILL), over real sockets.

- aio-pika ``connect_robust``: a consumer on a durable queue (plus a non-durable one, which only
  exists after the restart if the client re-declares it) and a publisher with confirms. Across
  the restart the robust connections reconnect by themselves, re-declare their queues and
  consumers, and persistent messages published (and confirmed) after the restart are consumed.
  Persistent messages confirmed before the restart, including ones delivered but not yet acked
  when the broker went down, are delivered again afterwards (the unacked ones redelivered).
- kombu: ``Producer.publish(..., retry=True, retry_policy=...)`` with publisher confirms keeps
  publishing while the broker goes down and comes back (the publish that hits the dead broker is
  retried until the new one answers), and a ``SimpleQueue`` opened with
  ``Connection.ensure_connection`` reads every message afterwards.

The broker restarts on the same, explicitly chosen port (``BrokerProcess`` picks a new free port
on every start otherwise), so clients reconnect to the address they were given. Nothing waits
with a sleep: every wait is for a condition, with a deadline. Delivery is at-least-once: a
publish whose confirm was lost in the restart is retried, so duplicates are allowed, losses not.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import kombu
import pytest

from amqpbroker.testing import BrokerProcess

DEADLINE = 15.0  # seconds for any single wait; a healthy run needs well under 1 s per wait


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(tmp_path) -> BrokerProcess:
    port = free_port()
    broker = BrokerProcess(tmp_path / "data", "--port", str(port)).start()
    assert broker.port == port
    return broker


def down(broker: BrokerProcess, how: str) -> None:
    if how == "sigkill":
        broker.kill()
    else:
        assert broker.stop() == 0, "".join(broker.output)


def log(broker: BrokerProcess) -> str:
    return "broker log:\n" + "".join(broker.output)


# ------------------------------------------------------------------------------------ aio-pika
async def wait_for(cond, what: str, broker: BrokerProcess, timeout: float = DEADLINE,
                   event: asyncio.Event | None = None) -> None:
    """Wait until cond() is true. `event` (if given) is set by whoever changes the state."""
    deadline = time.monotonic() + timeout
    while not cond():
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {what}\n{log(broker)}"
        if event is None:
            await asyncio.sleep(0.01)  # poll: no signal to wait on
        else:
            event.clear()
            if cond():
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), min(left, 0.5))


PUBLISH_ERRORS = (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError,
                  aio_pika.exceptions.ChannelClosed, ConnectionError, asyncio.TimeoutError)


async def publish_confirmed(channel: aio_pika.abc.AbstractRobustChannel, queue: str, body: str,
                            broker: BrokerProcess) -> None:
    """What an application does with a robust channel: publish with a confirm, and if the
    connection was lost meanwhile wait for the channel to be restored and publish again."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            confirm = await channel.default_exchange.publish(
                aio_pika.Message(body.encode(),
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue, mandatory=True, timeout=5)
            assert isinstance(confirm, aiormq.spec.Basic.Ack), (body, confirm)
            return
        except PUBLISH_ERRORS:
            assert time.monotonic() < deadline, f"could not publish {body}\n{log(broker)}"
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(channel.ready(), 1.0)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_aio_pika_robust_connection_survives_restart(tmp_path, how):
    durable_q, transient_q = "reconnect.durable", "reconnect.transient"
    prefetch = 10
    broker = start_broker(tmp_path)
    connections: list[aio_pika.abc.AbstractRobustConnection] = []
    try:
        reconnected = {"consumer": asyncio.Event(), "publisher": asyncio.Event()}

        async def robust(name: str) -> aio_pika.abc.AbstractRobustConnection:
            conn = await aio_pika.connect_robust(broker.url, reconnect_interval=0.05,
                                                 client_properties={"connection_name": name})
            conn.reconnect_callbacks.add(lambda *_: reconnected[name].set())
            connections.append(conn)
            return conn

        # consumer: manual acks, prefetch; it acks only while `acking` is True
        received: list[tuple[str, str, bool]] = []  # (queue, body, redelivered)
        arrived = asyncio.Event()
        acking = True

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.append((message.routing_key, message.body.decode(), message.redelivered))
            arrived.set()
            if acking:
                await message.ack()

        consumer = await robust("consumer")
        cch = await consumer.channel()
        await cch.set_qos(prefetch_count=prefetch)
        dq = await cch.declare_queue(durable_q, durable=True)
        tq = await cch.declare_queue(transient_q, durable=False)
        await dq.consume(on_message)
        await tq.consume(on_message)

        publisher = await robust("publisher")
        pch = await publisher.channel(publisher_confirms=True)

        def bodies(queue: str) -> set[str]:
            return {b for q, b, _ in received if q == queue}

        # A: normal flow, consumed and acked
        batch_a = [f"a{i}" for i in range(5)]
        for body in batch_a:
            await publish_confirmed(pch, durable_q, body, broker)
        await wait_for(lambda: set(batch_a) <= bodies(durable_q), "batch A", broker, event=arrived)

        # B: confirmed before the restart; the consumer stops acking, so `prefetch` of them are
        # delivered but unacked when the broker goes down, the rest are still in the queue
        acking = False
        batch_b = [f"b{i}" for i in range(3 * prefetch)]
        for body in batch_b:
            await publish_confirmed(pch, durable_q, body, broker)
        await wait_for(lambda: len(bodies(durable_q) & set(batch_b)) == prefetch,
                       "prefetch-many of batch B delivered", broker, event=arrived)
        held = bodies(durable_q) & set(batch_b)
        assert len(held) == prefetch
        before = len(received)

        # the event loop keeps running meanwhile: the clients see the 320 (or the dead socket)
        # and retry against the closed port until the new broker listens
        await asyncio.to_thread(down, broker, how)
        acking = True
        await asyncio.to_thread(broker.start)
        assert broker.port == connections[0].url.port

        # both robust connections come back by themselves
        for name, event in reconnected.items():
            try:
                await asyncio.wait_for(event.wait(), DEADLINE)
            except asyncio.TimeoutError:
                pytest.fail(f"{name} did not reconnect\n{log(broker)}")

        # C: published and confirmed after the restart, on the same (restored) publisher channel
        batch_c = [f"c{i}" for i in range(20)]
        for body in batch_c:
            await publish_confirmed(pch, durable_q, body, broker)
        # the non-durable queue exists again only because the consumer re-declared it: a
        # mandatory publish to it is routed (not returned) and the restored consumer gets it
        await publish_confirmed(pch, transient_q, "t0", broker)

        after = lambda: received[before:]  # noqa: E731
        await wait_for(lambda: set(batch_b) | set(batch_c) <= {b for q, b, _ in after()
                                                                if q == durable_q}
                       and {"t0"} <= {b for q, b, _ in after() if q == transient_q},
                       "batches B and C and t0 after the restart", broker, event=arrived)

        redelivered_after = {b for q, b, r in after() if r}
        assert held <= redelivered_after, (held, received)
        got_after = [b for q, b, _ in after() if q == durable_q]
        # nothing confirmed is lost; after a clean shutdown nothing acked comes back either
        assert set(got_after) <= set(batch_a) | set(batch_b) | set(batch_c)
        if how == "sigterm":
            assert not set(got_after) & set(batch_a), received
            # and the restored consumer got B (the unacked ones first) before C, in order
            assert got_after == batch_b + batch_c, (got_after, log(broker))

        # everything is acked now and exactly one consumer is on each queue
        async with await aio_pika.connect(broker.url) as plain:
            ch = await plain.channel()
            for name in (durable_q, transient_q):
                deadline = time.monotonic() + DEADLINE
                while True:
                    q = await ch.declare_queue(name, passive=True)
                    res = q.declaration_result
                    if res.message_count == 0 and res.consumer_count == 1:
                        break
                    assert time.monotonic() < deadline, (name, res, log(broker))
                    await asyncio.sleep(0.01)  # poll: acks are in flight, no signal to wait on
    finally:
        for conn in connections:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
        broker.stop()


# --------------------------------------------------------------------------------------- kombu
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_kombu_publish_retry_and_simple_queue_survive_restart(tmp_path, how):
    name = "reconnect.kombu"
    broker = start_broker(tmp_path)
    restarter: threading.Thread | None = None
    start_error: list[BaseException] = []
    try:
        exchange = kombu.Exchange(name, type="direct", durable=True)  # what SimpleQueue declares
        queue = kombu.Queue(name, exchange, routing_key=name, durable=True)
        # up to ~15 s of retries: well beyond the < 1 s the broker needs to come back
        retry_policy = {"max_retries": 100, "interval_start": 0, "interval_step": 0.05,
                        "interval_max": 0.15}
        errors: list[str] = []
        sent = [f"m{i}" for i in range(40)]

        with kombu.Connection(broker.url, transport_options={"confirm_publish": True},
                              connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=3)
            producer = conn.Producer()

            def publish(body: str) -> None:
                producer.publish(body, exchange=exchange, routing_key=name, declare=[queue],
                                 delivery_mode=2, serializer="json", retry=True,
                                 retry_policy={**retry_policy,
                                               "errback": lambda exc, _: errors.append(repr(exc))})

            for body in sent[:20]:
                publish(body)

            # the broker goes down while this producer is connected; it comes back (same port,
            # same data) in the background while the next publish is retried against it
            down(broker, how)

            def start_again():
                try:
                    broker.start()
                except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                    start_error.append(exc)

            restarter = threading.Thread(target=start_again, daemon=True)
            restarter.start()
            for body in sent[20:]:
                publish(body)
            restarter.join(DEADLINE)
            assert not restarter.is_alive() and not start_error, (start_error, log(broker))
            # the first publish after the restart did hit a dead connection and was retried
            assert errors, "no publish was retried: the restart was not exercised"

        with kombu.Connection(broker.url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=3)
            got: list[str] = []
            with conn.SimpleQueue(name) as sq:
                deadline = time.monotonic() + DEADLINE
                while not set(sent) <= set(got):
                    assert time.monotonic() < deadline, (sorted(set(sent) - set(got)),
                                                         log(broker))
                    try:
                        message = sq.get(timeout=0.5)
                    except sq.Empty:
                        continue
                    got.append(message.payload)
                    message.ack()
                assert sq.qsize() == 0
        # at-least-once: a publish whose confirm died with the broker is sent again
        assert set(got) == set(sent)
        # here nothing was in flight when the broker went down (the publish after it found the
        # connection dead), so each message arrives exactly once, in order
        assert got == sent, got
    finally:
        if restarter is not None:
            restarter.join(DEADLINE)
        broker.stop()
