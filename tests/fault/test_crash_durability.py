"""SIGKILL the broker while publishers (with confirms) and an acking consumer are busy; restart
on the same data directory and check what a crash may and may not do to durable queues.

Setup per seed: PUBLISHERS aiormq connections publish persistent messages to QUEUES durable
queues (the queue of each message is drawn from the seed), pipelined (a window of unconfirmed
publishes per channel, so many are in flight when the kill lands). Every message carries its
publisher and that publisher's sequence number. A consumer on queue q0 acks every delivery, and
every ACK_BARRIER acks publishes one confirmed "barrier" message on the same connection. After
a seeded random delay the broker gets SIGKILL, then is restarted and every queue is drained.
Half the seeds run the broker with --cache-limit 0, so deliveries come from disk, not memory.

What is guaranteed, and asserted strictly:
  * confirmed => present after the restart, unless the consumer acked it before the kill;
  * an ack followed by a confirmed barrier on the same connection is durable: that message
    never comes back (the group commit writes and fsyncs every queue dirtied up to the
    barrier's round, so the barrier's confirm covers the earlier acks);
  * no message comes back twice, and nothing that was never published appears;
  * per queue and per publisher, the survivors (present after the restart, or consumed before
    the kill) are a prefix of what the publisher sent to that queue: in the original order and
    without gaps. The queue is an append-only log and a crash can only lose its unwritten tail.
What is allowed:
  * unconfirmed messages may be present or missing (but only as a tail, see above);
  * an acked message whose ack was not yet covered by a barrier may come back, since acks have
    no confirm and the last ones may not have reached the disk; if it does, redelivered=True.
  * delivered-but-unacked messages come back with redelivered=True.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import shlex
import time
from collections import defaultdict

import aiormq
import pika
import pytest
from pamqp import commands as spec

from amqpbroker.testing import BrokerProcess

PUBLISHERS = 4
QUEUES = 3
WINDOW = 64              # unconfirmed publishes in flight per publisher
ACK_BARRIER = 25
MAX_PER_PUBLISHER = 20000
SEEDS = [1, 2, 3, 4]
# odd seeds run without a body cache, so the consumer's deliveries are read back from the log
BROKER_ARGS = {1: ("--cache-limit", "0"), 3: ("--cache-limit", "0")}
KILL_DELAY = (0.2, 1.5)  # seconds after the first confirm
REQUEUE = 0.0            # fraction of q0's deliveries nacked with requeue (as many again dropped)


def _env_seeds(spec: str) -> list[int]:
    """"1-40", "7,9,100-120": the seeds of a soak run."""
    out = []
    for part in spec.replace(" ", "").split(","):
        if part:
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    return out


# Soak runs (CI uses the defaults above), e.g.
#   CRASH_SEEDS=1-40 CRASH_BROKER_ARGS="--segment-bytes 65536" CRASH_KILL_DELAY=0-3 \
#   CRASH_REQUEUE=0.1 CRASH_CONSUMED_QUEUES=3 pytest tests/fault/test_crash_durability.py
# CRASH_BROKER_ARGS are added for every seed (on top of the odd seeds' --cache-limit 0).
if os.environ.get("CRASH_SEEDS"):
    SEEDS = _env_seeds(os.environ["CRASH_SEEDS"])
EXTRA_ARGS = tuple(shlex.split(os.environ.get("CRASH_BROKER_ARGS", "")))
if os.environ.get("CRASH_KILL_DELAY"):
    KILL_DELAY = tuple(float(x) for x in os.environ["CRASH_KILL_DELAY"].split("-"))
REQUEUE = float(os.environ.get("CRASH_REQUEUE", REQUEUE))
CONSUMED = int(os.environ.get("CRASH_CONSUMED_QUEUES", 1))   # the consumer takes q0..q{n-1}


class Run:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.sent: dict[tuple[int, int], list[int]] = defaultdict(list)   # (pub, q) -> seqs
        self.queue_of: dict[str, int] = {}
        self.confirmed: set[str] = set()
        self.nacked: set[str] = set()
        self.acked_sent: set[str] = set()
        self.acked_durable: set[str] = set()
        self.delivered_before_kill: set[str] = set()
        self.first_confirm = asyncio.Event()
        self.consuming = asyncio.Event()
        self.killed = False
        self.consumer_rng = random.Random(seed * 7919 + 1)   # nack decisions (CRASH_REQUEUE)


def qname(i: int) -> str:
    return f"q{i}"


async def publisher(url: str, run: Run, pub: int, queue_choice: list[int]) -> None:
    conn = await aiormq.connect(url)
    ch = await conn.channel(publisher_confirms=True)
    window = asyncio.Semaphore(WINDOW)
    tasks = set()

    async def one(mid: str, body: bytes, q: int) -> None:
        try:
            res = await ch.basic_publish(body, routing_key=qname(q), properties=spec.Basic.Properties(
                delivery_mode=2, message_id=mid))
            if isinstance(res, spec.Basic.Ack):
                run.confirmed.add(mid)
                run.first_confirm.set()
            else:
                run.nacked.add(mid)
        except Exception:
            pass                       # the broker died: this one stays unconfirmed
        finally:
            window.release()

    try:
        for seq in range(MAX_PER_PUBLISHER):
            await window.acquire()
            if run.killed or conn.is_closed:
                break
            q = queue_choice[seq]
            mid = f"{pub}-{seq}"
            run.queue_of[mid] = q
            run.sent[(pub, q)].append(seq)
            body = json.dumps({"id": mid, "pub": pub, "seq": seq}).encode() + b"x" * (seq % 500)
            t = asyncio.ensure_future(one(mid, body, q))   # created in order: the channel lock
            tasks.add(t)                                    # is FIFO, so wire order = seq order
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    finally:
        await _close_quietly(conn)


async def acking_consumer(url: str, run: Run) -> None:
    conn = await aiormq.connect(url)
    ch = await conn.channel()
    barrier_ch = await conn.channel(publisher_confirms=True)
    await ch.basic_qos(prefetch_count=100)
    since_barrier = 0
    barriers = set()

    async def barrier(covered: set) -> None:
        try:
            res = await barrier_ch.basic_publish(b"b", routing_key="barrier",
                                                 properties=spec.Basic.Properties(delivery_mode=2))
            if isinstance(res, spec.Basic.Ack):
                run.acked_durable |= covered
        except Exception:
            pass

    async def on_message(m: aiormq.abc.DeliveredMessage) -> None:
        nonlocal since_barrier
        mid = m.header.properties.message_id
        run.delivered_before_kill.add(mid)
        r = run.consumer_rng.random() if REQUEUE else 1.0
        try:
            if r < REQUEUE:
                await m.channel.basic_nack(m.delivery.delivery_tag, requeue=True)
                return                        # comes back; acked (or nacked) at a later turn
            if r < 2 * REQUEUE:
                await m.channel.basic_reject(m.delivery.delivery_tag, requeue=False)
            else:                             # dropped (no DLX): settled like an ack
                await m.channel.basic_ack(m.delivery.delivery_tag)
        except Exception:
            return
        run.acked_sent.add(mid)
        since_barrier += 1
        if since_barrier >= ACK_BARRIER:
            since_barrier = 0
            t = asyncio.ensure_future(barrier(set(run.acked_sent)))   # snapshot before publish
            barriers.add(t)
            t.add_done_callback(barriers.discard)

    try:
        for q in range(CONSUMED):
            await ch.basic_consume(qname(q), on_message)
        run.consuming.set()
        while not run.killed and not conn.is_closed:
            await asyncio.sleep(0.05)
    except Exception:
        pass
    finally:
        if barriers:
            await asyncio.wait(barriers, timeout=10)
        await _close_quietly(conn)


async def _close_quietly(conn) -> None:
    try:
        await asyncio.wait_for(conn.close(), 2)
    except Exception:
        pass


async def load_then_kill(broker: BrokerProcess, run: Run) -> None:
    choices = [[run.rng.randrange(QUEUES) for _ in range(MAX_PER_PUBLISHER)]
               for _ in range(PUBLISHERS)]
    delay = run.rng.uniform(*KILL_DELAY)
    tasks = [asyncio.ensure_future(publisher(broker.url, run, p, choices[p]))
             for p in range(PUBLISHERS)]
    tasks.append(asyncio.ensure_future(acking_consumer(broker.url, run)))
    await asyncio.wait_for(run.first_confirm.wait(), 30)
    await asyncio.wait_for(run.consuming.wait(), 30)   # a kill during its setup tests nothing
    await asyncio.sleep(delay)          # the random moment of the crash (not synchronisation)
    broker.kill()
    run.killed = True
    done, pending = await asyncio.wait(tasks, timeout=60)
    assert not pending, "clients did not notice the dead broker"
    for t in done:
        t.result()


def drain_all(broker: BrokerProcess) -> dict[int, list[tuple[str, bool]]]:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    out = {}
    for q in range(QUEUES):
        expected = ch.queue_declare(qname(q), passive=True).method.message_count
        got = []
        deadline = time.monotonic() + 60
        if expected:
            for method, props, body in ch.consume(qname(q), auto_ack=True, inactivity_timeout=1):
                if method is not None:
                    assert json.loads(body[:body.index(b"}") + 1])["id"] == props.message_id
                    got.append((props.message_id, method.redelivered))
                if len(got) >= expected or time.monotonic() > deadline:
                    break
            ch.cancel()
        assert len(got) == expected
        assert ch.queue_declare(qname(q), passive=True).method.message_count == 0
        out[q] = got
    conn.close()
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_under_load_keeps_confirmed_messages(tmp_path, seed):
    broker = BrokerProcess(tmp_path / "data", *BROKER_ARGS.get(seed, ()), *EXTRA_ARGS).start()
    try:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        for q in range(QUEUES):
            ch.queue_declare(qname(q), durable=True)
        ch.queue_declare("barrier", durable=True)
        conn.close()

        run = Run(seed)
        asyncio.run(load_then_kill(broker, run))
        broker.start()
        survivors = drain_all(broker)
    finally:
        broker.stop()

    assert run.confirmed, "nothing was confirmed before the kill"
    assert not run.nacked, f"the broker nacked {len(run.nacked)} messages"
    present: dict[str, tuple[int, bool]] = {}
    for q, got in survivors.items():
        for mid, redelivered in got:
            assert mid not in present, f"{mid} came back twice"
            assert run.queue_of.get(mid) == q, f"{mid} in q{q} was never published there"
            present[mid] = (q, redelivered)

    lost = run.confirmed - present.keys() - run.acked_sent
    assert not lost, f"{len(lost)} confirmed messages lost, e.g. {sorted(lost)[:5]}"
    back = run.acked_durable & present.keys()
    assert not back, f"{len(back)} messages with durable acks came back, e.g. {sorted(back)[:5]}"
    for mid in run.delivered_before_kill & present.keys():
        assert present[mid][1], f"{mid} was delivered before the crash but not flagged redelivered"

    for (pub, q), seqs in run.sent.items():
        order = [int(mid.split("-")[1]) for mid, _ in survivors[q] if mid.startswith(f"{pub}-")]
        assert order == sorted(order), f"publisher {pub} out of order in q{q}"
        alive = set(order) | {s for s in seqs if f"{pub}-{s}" in run.delivered_before_kill}
        assert sorted(alive) == seqs[:len(alive)], \
            f"publisher {pub}, q{q}: survivors are not a prefix of what was sent"
    print(f"seed {seed}: {len(run.queue_of)} published, {len(run.confirmed)} confirmed, "
          f"{len(present)} present after restart, {len(run.acked_sent)} acked "
          f"({len(run.acked_durable)} durably), "
          f"{len(run.acked_sent & present.keys())} acked came back")
