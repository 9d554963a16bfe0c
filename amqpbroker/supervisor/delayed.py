"""Messages held back by x-delayed-message exchanges (``frontend/exchange.DelayedExchange``):
the metadata owner's store of them, on disk, and the timer that routes each when it is due.

Theory of operation
-------------------
A channel that publishes to a delayed exchange with a positive ``x-delay`` hands the message
here (``LocalMetadata.delay_message``; from a front-end process, one ``DelayMessage``
request) instead of routing it. ``DelayedMessages.hold`` appends an *add* entry to
``delayed.log`` (an entry file, ``storage/entryfile.py``, magic ``AQDL``) and answers once
that is fsynced: one fsync per loop turn covers every message held in it, and only then is
the publisher confirmed. The entry holds the message whole (its record, routing keys,
priority), its vhost and exchange, and when it is due (the time it came + its delay, wall
clock ms).

At the due time (a sorted index of ``(due, id)`` and one loop timer for the earliest) the
message is routed through its exchange by the bindings it has *then*, its ``x-delay`` header
made negative (the plugin's mark, which also keeps the exchange from holding it again), and
published to those queues as a publisher in confirm mode would: once every queue confirmed
it, a *done* entry is appended. A queue that refuses it (a worker lost meanwhile) makes it
wait a second and go again, ``RETRIES`` times at most, then it is dropped with a log line. A
crash before the done entry routes it again at the next start: a delayed message is
delivered at least once, as a confirmed publish is. An exchange deleted meanwhile drops it
(as the plugin's: it routes by the bindings there are).

At open the file is replayed (adds, minus dones) and rewritten with what is still held;
it is rewritten again whenever the done entries outgrow the held ones (``_compact_soon``).
The plugin keeps its messages in a Mnesia table on one node, not fsynced, and routes them
without confirms (at most once at the due time); this store is stricter on both counts. In a
cluster each node holds the messages published through it, as the plugin does.
"""
from __future__ import annotations

import json
import logging
import struct
from typing import NamedTuple

from sortedcontainers import SortedList

from ..frontend.broker import headers_to_route
from ..frontend.confirms import tickets_reached, tickets_refused
from ..frontend.exchange import DELAY_HEADER, delay_of
from ..protocol import properties as props_mod
from ..storage.entryfile import EntryFile
from ..storage.fileformat import MAGIC_DELAYED, entry, file_header
from ..storage.record import Record, now_ms

log = logging.getLogger("amqpbroker.delayed")

FILE = "delayed.log"
RETRY_MS = 1000             # a refused route goes again this much later
RETRIES = 10                # ... this many times at most
COMPACT_AT = 1000           # done entries before the file may be rewritten

_ADD = struct.Struct(">cQQBI")      # "A", id, due ms, priority, length of the JSON part
_DONE = struct.Struct(">cQ")        # "D", id
_RECORD = struct.Struct(">QBI")     # timestamp, flags, length of the properties


class Held(NamedTuple):
    id: int
    due: int                # ms since the epoch
    vhost: str
    exchange: str
    keys: tuple             # routing keys (the routing key, CC, BCC)
    record: Record
    priority: int


def _encode_add(h: Held) -> bytes:
    meta = json.dumps([h.vhost, h.exchange, list(h.keys), h.record.exchange,
                       h.record.routing_key]).encode()
    r = h.record
    props, body = bytes(r.properties), bytes(r.body)
    return b"".join((_ADD.pack(b"A", h.id, h.due, h.priority, len(meta)), meta,
                     _RECORD.pack(r.timestamp, r.flags, len(props)), props, body))


def _decode_add(payload: bytes) -> Held:
    _, id_, due, priority, n = _ADD.unpack_from(payload)
    pos = _ADD.size
    vhost, exchange, keys, rec_exchange, rec_key = json.loads(payload[pos:pos + n])
    pos += n
    ts, flags, plen = _RECORD.unpack_from(payload, pos)
    pos += _RECORD.size
    props, body = payload[pos:pos + plen], payload[pos + plen:]
    return Held(id_, due, vhost, exchange, tuple(keys),
                Record(ts, rec_exchange, rec_key, props, body, flags), priority)


class DelayedLog(EntryFile):
    MAGIC = MAGIC_DELAYED
    WHAT = "delayed messages log"
    LOST = "the messages delayed by x-delayed-message exchanges are lost"

    def __init__(self, path: str):
        self.held: dict[int, Held] = {}         # what the file held at open, by id
        self._open_file(path, "always", 0, None)

    def _apply(self, payload: bytes) -> bool:
        try:
            if payload[:1] == b"A":
                h = _decode_add(payload)
                self.held[h.id] = h
            elif payload[:1] == b"D" and len(payload) == _DONE.size:
                self.held.pop(_DONE.unpack(payload)[1], None)
            else:
                return False
        except (ValueError, struct.error, TypeError):
            return False
        return True

    def add(self, h: Held) -> None:
        with self._lock:
            self._check_open()
            self._append(entry(_encode_add(h)))

    def done(self, id_: int) -> None:
        with self._lock:
            self._check_open()
            self._append(entry(_DONE.pack(b"D", id_)))

    def rewrite(self, held) -> None:
        """Compaction: the file becomes the adds of ``held`` alone, fsynced."""
        with self._lock:
            self._check_open()
            self._rewrite(file_header(self.MAGIC) + b"".join(entry(_encode_add(h))
                                                             for h in held))

    def _compact_locked(self) -> None:
        raise NotImplementedError("DelayedLog.rewrite(held)")


def negate_delay(record: Record) -> Record:
    """The record with its ``x-delay`` header made negative, as the plugin sends it on (the
    delay as read, ``delay_of``: a string or a float became an integer)."""
    raw = bytes(record.properties)
    delay = delay_of(props_mod.decode(raw).headers)
    if delay is None:
        return record
    return record._replace(properties=props_mod.rewrite(raw, set_headers={DELAY_HEADER: -delay}))


class DelayedMessages:
    """The owner's held messages: ``hold`` (a future, done once on disk), the timer, and the
    routing when due (``on_commit``: the queues' confirms of what it routed)."""

    def __init__(self, broker, directory: str):
        self.broker = broker
        self.loop = broker.loop
        self.log = DelayedLog(f"{directory}/{FILE}")
        self.held: dict[int, Held] = self.log.held         # the log's, from now on ours
        self.log.held = {}
        self.order = SortedList((h.due, h.id) for h in self.held.values())
        self.next_id = max(self.held, default=0) + 1
        self.counts: dict[tuple, int] = {}      # (vhost, exchange) -> messages held
        for h in self.held.values():
            self._count(h, 1)
        self.attempts: dict[int, int] = {}      # id -> routes refused so far
        self.inflight: list = []                # (Held, tickets) routed, not yet confirmed
        self.dones = 0                          # done entries since the last rewrite
        self._timer = None
        self._sync_handle = None
        self._waiting: list = []                # futures of hold(), answered by the fsync
        if self.log.truncated_bytes or self.held:
            self.log.rewrite(self.held.values())
        if self.held:
            log.info("%d delayed messages held (the earliest due in %d ms)", len(self.held),
                     max(0, self.order[0][0] - now_ms()))

    # ------------------------------------------------------------ holding
    def hold(self, vhost: str, exchange: str, keys, record: Record, priority: int,
             delay: int):
        """Keep ``record`` for ``delay`` ms; the future is done once it is on disk (an
        OSError in it if the disk refused: the message is then not held)."""
        fut = self.loop.create_future()
        # counted from now, as the plugin counts it: a dead letter's record keeps the time
        # it was first published
        h = Held(self.next_id, now_ms() + delay, vhost, exchange, tuple(keys), record,
                 priority)
        self.next_id += 1
        try:
            self.log.add(h)
        except OSError as exc:
            log.error("a delayed message for exchange '%s' in vhost '%s' was not stored: %s",
                      exchange, vhost, exc)
            fut.set_exception(exc)
            return fut
        self.held[h.id] = h
        self._count(h, 1)
        self.order.add((h.due, h.id))
        self._waiting.append(fut)
        self._sync_soon()
        return fut

    def _sync_soon(self) -> None:
        if self._sync_handle is None:
            self._sync_handle = self.loop.call_soon(self._sync)

    def _sync(self) -> None:
        """One fsync for every entry of this loop turn (messages held, routed ones done),
        then the answers to ``hold`` (and the timer, which waits for them: nothing is routed
        before it is confirmed held)."""
        self._sync_handle = None
        waiting, self._waiting = self._waiting, []
        try:
            self.log.sync(force=True)
        except OSError as exc:
            log.error("delayed messages log not synced: %s", exc)
            for fut in waiting:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for fut in waiting:
            if not fut.done():
                fut.set_result(True)
        self._arm()

    def count(self, vhost: str, exchange: str) -> int:
        """How many messages the exchange holds (the plugin's ``messages_delayed``)."""
        return self.counts.get((vhost, exchange), 0)

    def _count(self, h: Held, delta: int) -> None:
        key = (h.vhost, h.exchange)
        n = self.counts.get(key, 0) + delta
        if n > 0:
            self.counts[key] = n
        else:
            self.counts.pop(key, None)

    # ------------------------------------------------------------ the timer
    def start(self) -> None:
        """After the start's recovery (queues open): route what is due, arm the rest."""
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.order:
            return
        wait = max(0, self.order[0][0] - now_ms()) / 1000
        self._timer = self.loop.call_later(wait, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = now_ms()
        while self.order and self.order[0][0] <= now:
            _, id_ = self.order.pop(0)
            h = self.held.get(id_)
            if h is not None:
                try:
                    self._route(h)
                except Exception:       # a bug: logged, the message kept for a retry
                    log.exception("delayed message %d not routed", id_)
                    self._retry(h)
        self.on_commit()        # what its queues confirmed at once (a host in this process)

    def _route(self, h: Held) -> None:
        vh = self.broker.vhosts.get(h.vhost)
        ex = vh.exchanges.get(h.exchange) if vh is not None else None
        if ex is None:
            log.info("a delayed message was dropped: exchange '%s' in vhost '%s' is gone",
                     h.exchange, h.vhost)
            self._done(h)
            return
        record = negate_delay(h.record)
        tickets = []
        for q in vh.route(ex, h.keys, headers_to_route(ex, record.properties)):
            tickets.append((q.client, q.publish(record, h.priority, True)))
        if not tickets:
            self._done(h)
            return
        self.inflight.append((h, tickets))
        for client, _ in tickets:
            client.listeners.add(self)

    # ------------------------------------------------------------ confirms of what it routed
    def on_commit(self) -> None:
        """A queue host's confirm watermark moved (``actions.WatermarkMoved``): what its
        queues confirmed is done, what they refused goes again later."""
        still = []
        for h, tickets in self.inflight:
            if not tickets_reached(tickets):
                still.append((h, tickets))
            elif tickets_refused(tickets):
                self._retry(h)
            else:
                self._done(h)
        self.inflight = still
        if not still:
            for client in self.broker.partitions:
                client.listeners.discard(self)
        self._arm()

    def _retry(self, h: Held) -> None:
        n = self.attempts.get(h.id, 0) + 1
        if n > RETRIES:
            log.error("a delayed message for exchange '%s' in vhost '%s' was dropped: its "
                      "queues refused it %d times", h.exchange, h.vhost, RETRIES)
            self._done(h)
            return
        self.attempts[h.id] = n
        self.order.add((now_ms() + RETRY_MS, h.id))

    def _done(self, h: Held) -> None:
        if self.held.pop(h.id, None) is not None:
            self._count(h, -1)
        self.attempts.pop(h.id, None)
        try:
            self.log.done(h.id)         # fsynced with the loop turn's others (``_sync``)
        except OSError as exc:          # routed again at the next start: at least once
            log.error("delayed messages log: done entry not written: %s", exc)
            return
        self._sync_soon()
        self.dones += 1
        if self.dones >= COMPACT_AT and self.dones > 2 * len(self.held):
            self.dones = 0
            try:
                self.log.rewrite(self.held.values())
            except OSError as exc:
                log.error("delayed messages log not compacted: %s", exc)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sync_handle is not None:
            self._sync_handle.cancel()
            self._sync()
        self.log.close()
