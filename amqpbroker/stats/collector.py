"""The supervisor's side: ask every front-end and partition host for its counters, merge them
into one node snapshot, sample it every interval and answer RabbitMQ's ``message_stats``.

A snapshot is taken all at once: every child is asked in the same loop turn and each answer
waits at most ``CHILD_ANSWER_TIMEOUT``; a child that is restarting (or too busy to answer in
time) is missing from that snapshot, so its counters are missing too until it answers again.
A front-end that dies takes its counters with it (they restart from zero with it, which
Prometheus treats as a counter reset).
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from .. import contract as c
from .counters import CHANNEL_FIELDS, QUEUE_FIELDS, SIZE_BOUNDS, enabled

log = logging.getLogger("amqpbroker.stats")

CHILD_ANSWER_TIMEOUT = 2.0


class NodeSnapshot:
    """Counters and gauges of the whole node at one time (``loop.time()``)."""

    def __init__(self, at: float):
        self.at = at
        self.totals = dict.fromkeys(CHANNEL_FIELDS, 0)
        self.churn: dict = defaultdict(int)
        self.connections: list[dict] = []           # each with "channels"
        self.connection_by: dict = {}               # name -> connection
        self.channel_by: dict = {}                  # (connection name, number) -> channel
        self.exchanges: dict = defaultdict(lambda: [0, 0])     # (vhost, name) -> [in, out]
        self.sizes = [0] * (len(SIZE_BOUNDS) + 1)
        self.size_sum = 0
        self.publishers = 0
        self.consumers = 0
        # QueueRef -> (ready, unacked, consumers, ready bytes, unacked bytes, counters,
        # memory)
        self.queues: dict = {}
        self.hosts: list[dict] = []                 # per worker: commit timings, rings
        self.dead_lettered: dict = defaultdict(int)     # "reason type strategy" -> count
        self.auth: dict = defaultdict(lambda: [0, 0, 0])    # protocol -> attempts, failed,
        #                                                     succeeded

    def add_frontend(self, index: int, snap: dict) -> None:
        for k, v in snap["totals"].items():
            self.totals[k] += v
        for k, v in snap["churn"].items():
            self.churn[k] += v
        for protocol, counts in snap.get("auth", {}).items():
            self.auth[protocol] = [a + b for a, b in zip(self.auth[protocol], counts)]
        for conn in snap["connections"]:
            conn["frontend"] = index
            self.connections.append(conn)
            self.connection_by[conn["name"]] = conn
            for ch in conn["channels"]:
                self.channel_by[(conn["name"], ch["number"])] = ch
        for vhost, name, n_in, n_out in snap["exchanges"]:
            pair = self.exchanges[(vhost, name)]
            pair[0] += n_in
            pair[1] += n_out
        for i, n in enumerate(snap["sizes"]):
            self.sizes[i] += n
        self.size_sum += snap["size_sum"]
        self.publishers += snap["publishers"]
        self.consumers += snap["consumers"]

    def add_host(self, client, snap: dict) -> None:
        refs = client.refs
        for qid, row in snap["queues"].items():
            ref = refs.get(qid)
            if ref is not None:
                self.queues[ref] = row
        snap["worker"] = client.index
        self.hosts.append(snap)
        for key, n in snap.get("dead_lettered", {}).items():
            self.dead_lettered[key] += n

    def queue_counter(self, field: str) -> int:
        i = QUEUE_FIELDS.index(field)
        return sum(row[5][i] for row in self.queues.values())


class Collector:
    """Takes node snapshots; with sampling on, keeps the last two for rates."""

    def __init__(self, broker, amqp_server):
        self.broker = broker
        self.amqp = amqp_server
        self.enabled = enabled(broker.config)
        self.interval = max(getattr(broker.config, "collect_statistics_interval", 5000),
                            10) / 1000
        self.last: NodeSnapshot | None = None
        self.prev: NodeSnapshot | None = None
        self._task: asyncio.Task | None = None
        self.auth_reset: dict = {}          # protocol -> the auth counts at the last reset

    # ------------------------------------------------------------------ collection
    async def collect(self) -> NodeSnapshot:
        b = self.broker
        snap = NodeSnapshot(b.loop.time())
        snap.add_frontend(0, b.stats.snapshot(b, self.amqp.sessions))
        frontends = [fe for fe in getattr(b, "frontends", ()) if fe.control is not None]
        clients = [cl for cl in b.partitions if cl.link is not None]
        asked = [fe.control.request(c.FrontendCounters) for fe in frontends]
        asked += [cl.request(c.HostCounters) for cl in clients]
        answers = await asyncio.gather(*(asyncio.wait_for(a, CHILD_ANSWER_TIMEOUT)
                                         for a in asked), return_exceptions=True)
        for fe, answer in zip(frontends, answers):
            if isinstance(answer, dict):
                snap.add_frontend(fe.index, answer)
        for cl, answer in zip(clients, answers[len(frontends):]):
            if isinstance(answer, dict):
                snap.add_host(cl, answer)
        return snap

    # ------------------------------------------------------------------ sampling
    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sample_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def sample(self) -> None:
        snap = await self.collect()
        self.prev, self.last = self.last, snap

    async def _sample_forever(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:           # a snapshot that fails is a bug; keep sampling
                log.exception("statistics sample failed")
            await asyncio.sleep(self.interval)

    # ------------------------------------------------------------------ message_stats
    def _stats(self, now: dict, before: dict | None) -> dict:
        """RabbitMQ's shape: each count, and ``<count>_details: {"rate": per second}``."""
        out = {}
        dt = self.last.at - self.prev.at if self.prev is not None else 0
        for k, v in now.items():
            out[k] = v
            rate = 0.0
            if before is not None and dt > 0:
                rate = round(max(v - before.get(k, 0), 0) / dt, 1)
            out[k + "_details"] = {"rate": rate}
        return out

    def overview(self) -> dict | None:
        if not self.enabled or self.last is None:
            return None
        return self._stats(_overview_counts(self.last),
                           _overview_counts(self.prev) if self.prev else None)

    def queue(self, ref) -> dict | None:
        """A queue's message_stats: the hot one of the API (every queue of /api/queues), so
        built straight from the snapshot rows."""
        if not self.enabled or self.last is None:
            return None
        row = self.last.queues.get(ref)
        if row is None or not any(row[5]):
            return None             # as RabbitMQ: no message_stats before the first event
        now = row[5]
        before = self.prev.queues.get(ref) if self.prev is not None else None
        before = before[5] if before is not None else None
        dt = self.last.at - self.prev.at if before is not None else 0
        out = {}
        for i, key, details in _QUEUE_KEYS:
            v = now[i]
            out[key] = v
            out[details] = ({"rate": round((v - before[i]) / dt, 1)}
                            if dt > 0 and v > before[i] else _ZERO)
        dg = now[_DG[0]] + now[_DG[1]] + now[_DG[2]] + now[_DG[3]]
        out["deliver_get"] = dg
        dg_before = (before[_DG[0]] + before[_DG[1]] + before[_DG[2]] + before[_DG[3]]
                     if before is not None else dg)
        out["deliver_get_details"] = ({"rate": round((dg - dg_before) / dt, 1)}
                                      if dt > 0 and dg > dg_before else _ZERO)
        return out

    def exchange(self, vhost: str, name: str) -> dict | None:
        if not self.enabled or self.last is None:
            return None
        now = _exchange_counts(self.last, vhost, name)
        if now is None:
            return None
        return self._stats(now, _exchange_counts(self.prev, vhost, name) if self.prev else None)

    def channel(self, conn_name: str, number: int) -> dict | None:
        if not self.enabled or self.last is None:
            return None
        now = _channel_counts(self.last, conn_name, number)
        if now is None:
            return None
        return self._stats(now, _channel_counts(self.prev, conn_name, number)
                           if self.prev else None)

    def connection(self, conn_name: str) -> dict:
        """RabbitMQ's connection statistics: recv_oct, send_oct, recv_cnt, send_cnt and
        their ``_details``."""
        if not self.enabled or self.last is None:
            return {}
        now = _connection_counts(self.last, conn_name)
        if now is None:
            return {}
        return self._stats(now, _connection_counts(self.prev, conn_name) if self.prev else None)

    def channels(self) -> list[dict]:
        """Every channel as RabbitMQ's ``/api/channels`` lists it, with ``message_stats``
        (for the channels endpoint)."""
        out = []
        if self.last is None:
            return out
        for conn in self.last.connections:
            for ch in conn["channels"]:
                item = {"name": f"{conn['name']} ({ch['number']})", "number": ch["number"],
                        "connection_details": {"name": conn["name"]},
                        "vhost": conn["vhost"], "user": conn["user"],
                        "consumer_count": ch["consumers"],
                        "messages_unacknowledged": ch["unacked"],
                        "messages_unconfirmed": ch["unconfirmed"],
                        "messages_uncommitted": ch["uncommitted"],
                        "prefetch_count": ch["prefetch"],
                        "global_prefetch_count": ch["global_prefetch"],
                        "confirm": ch["confirm"], "transactional": ch["transactional"],
                        "frontend": conn["frontend"]}
                stats = self.channel(conn["name"], ch["number"])
                if stats is not None:
                    item["message_stats"] = stats
                out.append(item)
        return out


# ============================================================================ counts
def _deliver_get(d: dict) -> int:
    return d["deliver"] + d["deliver_no_ack"] + d["get"] + d["get_no_ack"]


def _message_stats_of(values: dict) -> dict:
    """A channel's (or the node's) counters under RabbitMQ's message_stats keys."""
    out = {k: values[k] for k in ("publish", "confirm", "return_unroutable", "drop_unroutable",
                                  "deliver", "deliver_no_ack", "get", "get_no_ack",
                                  "get_empty", "redeliver", "ack")}
    out["deliver_get"] = _deliver_get(values)
    return out


def _overview_counts(snap: NodeSnapshot) -> dict:
    return _message_stats_of(snap.totals)


# (index in a queue row's counters, message_stats key, its _details key)
_QUEUE_KEYS = [(i, f, f + "_details") for i, f in enumerate(QUEUE_FIELDS)
               if f != "publish_bytes"]
_ZERO = {"rate": 0.0}          # shared by every rate that is zero (never mutated)
_DG = [QUEUE_FIELDS.index(f) for f in ("deliver", "deliver_no_ack", "get", "get_no_ack")]


def _exchange_counts(snap: NodeSnapshot, vhost: str, name: str) -> dict | None:
    pair = snap.exchanges.get((vhost, name))
    if pair is None:
        return None
    return {"publish_in": pair[0], "publish_out": pair[1]}


def _channel_counts(snap: NodeSnapshot, conn_name: str, number: int) -> dict | None:
    ch = snap.channel_by.get((conn_name, number))
    if ch is None:
        return None
    return _message_stats_of(dict(zip(CHANNEL_FIELDS, ch["values"])))


def _connection_counts(snap: NodeSnapshot, conn_name: str) -> dict | None:
    conn = snap.connection_by.get(conn_name)
    if conn is None:
        return None
    return {k: conn[k] for k in ("recv_oct", "recv_cnt", "send_oct", "send_cnt")}


# ============================================================================ for the API
def add_message_stats(obj: dict, broker, kind: str, *key) -> dict:
    """``obj`` with RabbitMQ's ``message_stats`` of the object ``key`` names (kind: queue,
    exchange, channel, overview), when statistics are on and sampled; connections get
    RabbitMQ's ``recv_oct`` / ``send_oct`` / ``*_cnt`` and their ``_details`` instead."""
    collector = getattr(broker, "collector", None)
    if collector is None:
        return obj
    if kind == "connection":
        obj.update(collector.connection(*key))
        return obj
    stats = getattr(collector, kind)(*key)
    if stats is not None:
        obj["message_stats"] = stats
    return obj
