"""The checker's clients: producers with confirms and consumers with manual acks (aiormq),
each on a random node, reconnecting to another random node whenever its connection breaks,
its publish times out, or the broker cancels its consumer. Every publish, confirm, nack,
unknown outcome, delivery and ack goes to a ``Recorder`` with a monotonic time.

The workload runs on its own event loop in a thread (``Workload.start``), so the nemesis can
be plain blocking code in the calling thread.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
import time

import aiormq
from pamqp.commands import Basic

PUBLISH_TIMEOUT = 5.0       # a publish with no answer by then is "unknown"; reconnect
CONNECT_TIMEOUT = 3.0
NACK_BACKOFF = 0.05         # a producer's pause after a nack (a client's backoff)


class Recorder:
    """The history: events in time order, written to a JSON-lines file at the end."""

    def __init__(self):
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._published_at: dict[str, float] = {}
        self.fresh_confirm = (0.0, 0.0)     # (publish time, confirm time), newest publish
        self._confirmed: set[str] = set()
        self._delivered: set[str] = set()

    def __call__(self, ev: str, **fields) -> None:
        t = time.monotonic()
        with self._lock:
            self.events.append({"t": t, "ev": ev, **fields})
            if ev == "publish":
                self._published_at[fields["id"]] = t
            elif ev == "confirm":
                self._confirmed.add(fields["id"])
                if self._published_at[fields["id"]] > self.fresh_confirm[0]:
                    self.fresh_confirm = (self._published_at[fields["id"]], t)
            elif ev == "deliver":
                self._delivered.add(fields["id"])

    def undelivered(self) -> int:
        """How many confirmed messages no consumer has received yet."""
        with self._lock:
            return len(self._confirmed - self._delivered)

    def first_confirm_after(self, t: float) -> float | None:
        """When the first message published after ``t`` was confirmed (None: none yet)."""
        if self.fresh_confirm[0] <= t:
            return None
        with self._lock:
            return min(e["t"] for e in self.events if e["ev"] == "confirm"
                       and self._published_at[e["id"]] > t)

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            for e in self.events:
                f.write(json.dumps(e) + "\n")


class Workload:
    """``producers`` publishers over ``keys`` keys each and ``consumers`` consumers of
    ``target`` (checker.Target: publishes go to its ``exchange`` with the routing key
    ``routing_key(key)``, consumer i reads ``consumed_by(i)``); ``urls()`` returns the
    current ``(node name, amqp url)`` of every node that is up (ports change on a
    restart)."""

    def __init__(self, urls, target, record: Recorder, seed: int, producers: int = 3,
                 consumers: int = 2, keys: int = 4, prefetch: int = 20,
                 idempotent: bool = False):
        self.urls, self.target, self.record = urls, target, record
        # idempotent producers (README "Idempotent producers"): each message carries
        # ``x-producer-id`` and ``x-sequence``, and one without a confirm (nacked, or no
        # answer) is published again, the same message, until one confirms it
        self.idempotent = idempotent
        self.rng = random.Random(seed)
        self.producers, self.consumers, self.keys, self.prefetch = (
            producers, consumers, keys, prefetch)
        self.sessions = itertools.count(1)
        self.last_delivery = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: list = []
        self._producing = True
        self._consuming = True
        self._generation = 0                # reconnect_consumers() bumps it

    # ------------------------------------------------------------ control
    def start(self) -> None:
        self._thread.start()
        for i in range(self.producers):
            self._tasks.append(asyncio.run_coroutine_threadsafe(self._producer(i), self._loop))
        for i in range(self.consumers):
            self._tasks.append(asyncio.run_coroutine_threadsafe(self._consumer(i), self._loop))

    def stop_producing(self, timeout: float = 30.0) -> None:
        self._producing = False
        for f in self._tasks[:self.producers]:
            f.result(timeout)

    def reconnect_consumers(self) -> None:
        """Every consumer closes its connection and starts a new session on a random node."""
        self._generation += 1

    def stop(self, timeout: float = 30.0) -> None:
        self._producing = self._consuming = False
        for f in self._tasks:
            f.result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()

    # ------------------------------------------------------------ clients
    async def _connect(self, running):
        """A connection to a random node that is up (retried until one answers, or until
        ``running()`` turns false: then (None, None))."""
        while running():
            up = self.urls()
            if up:
                node, url = self.rng.choice(up)
                try:
                    conn = await asyncio.wait_for(aiormq.connect(url + "?heartbeat=5"),
                                                  CONNECT_TIMEOUT)
                    return node, conn
                except (Exception, asyncio.TimeoutError):
                    pass
            await asyncio.sleep(0.2)
        return None, None

    async def _producer(self, pid: int) -> None:
        seqs = [0] * self.keys
        produced = 0                        # the producer's x-sequence (idempotent)
        again = None                        # (key, seq, x-sequence) to publish again
        while self._producing:
            node, conn = await self._connect(lambda: self._producing)
            if conn is None:
                return
            try:
                ch = await asyncio.wait_for(conn.channel(publisher_confirms=True),
                                            PUBLISH_TIMEOUT)
                while self._producing:
                    if again is None:
                        k = self.rng.randrange(self.keys)
                        seqs[k] += 1
                        produced += 1
                        again = (f"p{pid}k{k}", seqs[k], produced)
                    key, seq, xseq = again
                    if not self.idempotent:
                        again = None        # never published twice
                    mid = f"{key}:{seq}"
                    headers = ({"x-producer-id": f"p{pid}", "x-sequence": xseq}
                               if self.idempotent else None)
                    self.record("publish", p=pid, id=mid, key=key, seq=seq, node=node)
                    try:
                        answer = await ch.basic_publish(
                            mid.encode(), exchange=self.target.exchange,
                            routing_key=self.target.routing_key(key), timeout=PUBLISH_TIMEOUT,
                            properties=Basic.Properties(delivery_mode=2, message_id=mid,
                                                        headers=headers))
                    except aiormq.exceptions.DeliveryError:
                        self.record("nack", id=mid)     # aiormq raises on a basic.nack
                        await asyncio.sleep(NACK_BACKOFF)
                        continue
                    except (Exception, asyncio.TimeoutError) as exc:
                        self.record("unknown", id=mid, why=type(exc).__name__)
                        break
                    if isinstance(answer, Basic.Ack):
                        self.record("confirm", id=mid)
                        again = None
                    else:
                        self.record("nack", id=mid)
            except (Exception, asyncio.TimeoutError):
                pass
            finally:
                await _close(conn)

    async def _consumer(self, cid: int) -> None:
        while self._consuming:
            generation = self._generation
            node, conn = await self._connect(lambda: self._consuming)
            if conn is None:
                return
            session = f"c{cid}.{next(self.sessions)}"
            cancelled = asyncio.Event()
            try:
                # no step waits for ever: a broker that never answers is left for another
                ch = await asyncio.wait_for(conn.channel(), PUBLISH_TIMEOUT)
                await asyncio.wait_for(ch.basic_qos(prefetch_count=self.prefetch),
                                       PUBLISH_TIMEOUT)

                def on_cancel(_frame):
                    self.record("cancelled", c=session, node=node)
                    cancelled.set()
                ch.on_consumer_cancel_callbacks.add(on_cancel)

                async def on_message(msg):
                    mid = msg.body.decode()
                    self.last_delivery = time.monotonic()
                    self.record("deliver", c=session, id=mid, node=node,
                                redelivered=bool(msg.delivery.redelivered))
                    await ch.basic_ack(msg.delivery.delivery_tag)
                    self.record("ack", c=session, id=mid)

                queue = self.target.consumed_by(cid)
                await asyncio.wait_for(ch.basic_consume(
                    queue, on_message, arguments=self.target.consume_arguments),
                    PUBLISH_TIMEOUT)
                self.record("consuming", c=session, node=node, queue=queue)
                while (self._consuming and not cancelled.is_set() and not conn.is_closed
                       and generation == self._generation):
                    await asyncio.sleep(0.1)
            except (Exception, asyncio.TimeoutError) as exc:
                self.record("consumer_error", c=session, node=node, why=type(exc).__name__)
            finally:
                await _close(conn)


async def _close(conn) -> None:
    try:
        await asyncio.wait_for(conn.close(), 2)
    except (Exception, asyncio.TimeoutError):
        pass
