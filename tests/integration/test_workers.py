"""Supervision of partition workers (``--workers 2``).

A worker killed with SIGKILL is restarted and its queues recover from disk; consumers of its
queues are cancelled (``basic.cancel``), consumers on the other worker never notice; publishers
waiting for confirms get an ack or a nack, never silence, and what was acked survives. After a
crash of any process, and after a clean stop, no process and no /dev/shm segment is left.
"""
from __future__ import annotations

import asyncio
import os
import signal

import aiormq
import pika
import pytest
from pamqp import commands as spec

from amqpbroker.testing import BrokerProcess, leaks

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def restarted(broker, index: int, old_pid: int):
    def check():
        w = broker.api("nodes")[0]["workers"][index]
        return w if w["running"] and w["pid"] != old_pid else None
    return leaks.wait_until(check, what=f"worker {index} to restart")


def reachable(conn, queue: str) -> None:
    """Wait until ``queue`` answers on ``conn``: the supervisor reports a restarted worker
    running before every front-end has its new link (until then a front-end answers 404
    "being restarted", as RabbitMQ answers for a queue whose node is down)."""
    def probe():
        probe_ch = conn.channel()
        try:
            probe_ch.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as err:
            if err.reply_code == 404 and "being restarted" in err.reply_text:
                return False
            raise
        probe_ch.close()
        return True
    leaks.wait_until(probe, what=f"queue {queue} to answer on this connection")


@pytest.fixture
def broker(tmp_path):
    with BrokerProcess(tmp_path, "--workers", "2", management=True) as b:
        assert len(b.worker_pids) == 2
        yield b


def test_killed_worker_restarts_queues_recover_other_worker_unaffected(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    q0, q1 = broker.queue_on_worker(ch, 0, "w0"), broker.queue_on_worker(ch, 1, "w1")
    for i in range(100):
        ch.basic_publish("", q0, b"a%d" % i, PERSISTENT)
        ch.basic_publish("", q1, b"b%d" % i, PERSISTENT)

    got1 = []
    c1 = conn.channel()
    tag1 = c1.basic_consume(q1, lambda c, m, p, b: (got1.append(b), c.basic_ack(m.delivery_tag)))
    c0 = conn.channel()
    c0.basic_qos(prefetch_count=5)
    got0, cancelled = [], []
    c0.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag0 = c0.basic_consume(q0, lambda c, m, p, b: got0.append(b))     # never acked
    conn.process_data_events(time_limit=0)
    while len(got1) < 100 or len(got0) < 5:
        conn.process_data_events(time_limit=1)
    assert len(got0) == 5                                            # prefetch holds

    old = broker.worker_pids[0]
    os.kill(old, signal.SIGKILL)
    while not cancelled:                       # consumer_cancel_notify for the dead queue
        conn.process_data_events(time_limit=1)
    assert cancelled == [tag0]
    assert not leaks.wait_gone([old], timeout=10)
    restarted(broker, 0, old)
    reachable(conn, q0)

    # the consumer on the other worker never noticed: same tag, still receiving
    for i in range(100, 110):
        ch.basic_publish("", q1, b"b%d" % i, PERSISTENT)
    while len(got1) < 110:
        conn.process_data_events(time_limit=1)
    assert got1 == [b"b%d" % i for i in range(110)]
    assert tag1 in c1.consumer_tags

    # every confirmed message of the killed worker's queue is back; the 5 unacked ones
    # (and maybe more: recovery cannot know what was delivered) flagged redelivered
    assert ch.queue_declare(q0, passive=True).method.message_count == 100
    bodies, redelivered = [], 0
    for _ in range(100):
        method, _, body = ch.basic_get(q0, auto_ack=True)
        bodies.append(body)
        redelivered += method.redelivered
    assert bodies == [b"a%d" % i for i in range(100)]
    assert redelivered >= 5
    conn.close()


async def test_publishers_waiting_for_confirms_get_ack_or_nack(broker):
    setup = pika.BlockingConnection(pika.URLParameters(broker.url))
    q0 = broker.queue_on_worker(setup.channel(), 0, "confirm")
    setup.close()
    conn = await aiormq.connect(broker.url)
    ch = await conn.channel()                  # publisher confirms are on by default

    async def publish(i: int):
        try:
            return i, await ch.basic_publish(b"%d" % i, routing_key=q0,
                                             properties=spec.Basic.Properties(delivery_mode=2))
        except aiormq.exceptions.DeliveryError as e:      # aiormq raises on a nack
            return i, e.frame

    first = await asyncio.gather(*(publish(i) for i in range(200)))
    assert all(isinstance(r, spec.Basic.Ack) for _, r in first)
    old = broker.worker_pids[0]
    in_flight = [asyncio.ensure_future(publish(i)) for i in range(200, 3000)]
    await asyncio.sleep(0)                     # let some of them reach the worker
    os.kill(old, signal.SIGKILL)
    done, pending = await asyncio.wait(in_flight, timeout=30)
    assert not pending, f"{len(pending)} publishes never got a confirm"
    answers = dict(t.result() for t in done)
    acked = {i for i, r in answers.items() if isinstance(r, spec.Basic.Ack)}
    nacked = {i for i, r in answers.items() if isinstance(r, spec.Basic.Nack)}
    assert acked | nacked == set(range(200, 3000))
    assert nacked, "the kill landed after every publish was confirmed: nothing was tested"
    await conn.close()

    await asyncio.get_running_loop().run_in_executor(None, restarted, broker, 0, old)
    check = pika.BlockingConnection(pika.URLParameters(broker.url))
    reachable(check, q0)
    cch = check.channel()
    present = set()
    while True:
        method, _, body = cch.basic_get(q0, auto_ack=True)
        if method is None:
            break
        present.add(int(body))
    check.close()
    assert set(range(200)) | acked <= present          # confirmed => durable


def test_nothing_left_behind_after_worker_and_supervisor_crash(tmp_path):
    shm_before = leaks.broker_segments()
    b = BrokerProcess(tmp_path, "--workers", "2", management=True).start()
    try:
        first = list(b.worker_pids)
        os.kill(first[1], signal.SIGKILL)
        new = restarted(b, 1, first[1])["pid"]
        assert not leaks.broker_segments_left(shm_before)      # rings have no names to leak
        b.proc.send_signal(signal.SIGKILL)             # the supervisor alone
        b.proc.wait(30)
        # the workers see their alive pipe close, write what they have, and exit
        assert not leaks.wait_gone([first[0], new], timeout=30)
    finally:
        b.kill()
    assert not leaks.broker_segments_left(shm_before)


def test_clean_stop_stops_workers_and_leaves_nothing(tmp_path):
    shm_before = leaks.broker_segments()
    b = BrokerProcess(tmp_path, "--workers", "2").start()
    conn = pika.BlockingConnection(pika.URLParameters(b.url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("kept", durable=True)
    ch.basic_publish("", "kept", b"x", PERSISTENT)
    conn.close()
    pids = list(b.worker_pids)
    assert b.stop() == 0
    assert not leaks.wait_gone(pids, timeout=1)       # gone before the supervisor exited
    assert not leaks.broker_segments_left(shm_before)
    b.start()                                          # and the data is intact
    conn = pika.BlockingConnection(pika.URLParameters(b.url))
    assert conn.channel().basic_get("kept", auto_ack=True)[2] == b"x"
    conn.close()
    b.stop()


def test_a_signal_to_the_whole_process_group_shuts_down_without_restarts(tmp_path):
    """Ctrl-C in a terminal, `timeout`, or systemd signal every process of the group: the
    children's exits are the shutdown, and no child is started again."""
    b = BrokerProcess(tmp_path, "--workers", "2", "--frontends", "2").start()
    started = sum("started (pid" in line for line in b.output)
    os.killpg(b.proc.pid, signal.SIGTERM)
    assert b.proc.wait(30) == 0
    b.stop()                                  # asserts every process of the group is gone
    assert sum("started (pid" in line for line in b.output) == started, \
        "a child was restarted during shutdown:\n" + "".join(b.output)
