"""The histories of x-recent-history exchanges (RabbitMQ's rabbitmq_recent_history_exchange
plugin; ``frontend/exchange.RecentHistoryExchange``), kept by the metadata owner.

Every message routed through such an exchange, on any front-end, is told here
(``KeepRecent``, a notice: the publish does not wait); the exchange's last
``x-recent-history-length`` of them are kept, in order. When a queue or an exchange is bound
to it (a new binding, made by a client or the management API), the history is published to
that destination at once (to a queue oldest first, through an exchange newest first, as
the plugin's ``add_binding`` does), before the bind is answered — unconfirmed,
as dead letters are. Not for a binding restored at start or imported.

Durable as the plugin's (a disc table): written to ``recent-history.json`` in the data
directory a second after a change and at a clean stop, without an fsync (a crash may lose
the last second's history, never a queue's message). An exchange deleted, or its vhost,
takes its history with it.

In a cluster each node keeps what was published through it; a binding made through a node
gets that node's history.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections import deque

from .. import contract as c
from .. import errors
from ..frontend.broker import headers_to_route
from ..frontend.exchange import Exchange
from ..storage.record import Record

log = logging.getLogger("amqpbroker.recent_history")

FILE = "recent-history.json"
SAVE_AFTER = 1.0            # seconds from a change to its write
ROUND_TRIP = 10.0           # seconds a bind waits for a host to have taken a history


class RecentHistory:
    def __init__(self, owner):
        self.owner = owner
        self.histories: dict[tuple[str, str], deque] = {}
        self._save_timer = None
        self._delivered_to: set = set()     # hosts given a history since ``delivered``

    @property
    def path(self) -> str:
        return os.path.join(self.owner.data_dir, FILE)

    # ------------------------------------------------------------ changes
    def keep(self, vhost: str, exchange: str, record: Record) -> None:
        vh = self.owner.vhosts.get(vhost)
        ex = vh.exchanges.get(exchange) if vh is not None else None
        if ex is None or not ex.keeps_history:
            return
        history = self.histories.get((vhost, exchange))
        if history is None or history.maxlen != ex.length:
            history = self.histories[(vhost, exchange)] = deque(history or (),
                                                                maxlen=ex.length)
        history.append(Record(record.timestamp, record.exchange, record.routing_key,
                              bytes(record.properties), bytes(record.body), record.flags))
        self._save_soon()

    def deliver(self, vh, ex, destination) -> None:
        """A new binding of ``destination`` to ``ex``: the history goes to it."""
        history = self.histories.get((vh.name, ex.name))
        if not history:
            return
        to_exchange = isinstance(destination, Exchange)
        # a queue gets them oldest first, an exchange newest first (the plugin's orders,
        # measured on RabbitMQ 3.10.8)
        for record in (reversed(history) if to_exchange else history):
            if to_exchange:
                keys = (record.routing_key,)
                targets = vh.route(destination, keys,
                                   headers_to_route(destination, record.properties))
            else:
                targets = (destination,)
            for q in targets:
                q.publish(record, 0, False)
                self._delivered_to.add(q.client)

    async def delivered(self) -> None:
        """Return once the hosts given a history have it: a round trip on each link after
        the publishes, so a client told bind-ok finds the history in the queue (its reads
        reach the host on another link)."""
        clients, self._delivered_to = self._delivered_to, set()
        for client in clients:
            try:
                await asyncio.wait_for(client.request(c.Stats, qids=[]), ROUND_TRIP)
            except (errors.AMQPError, asyncio.TimeoutError):
                pass            # restarting or cut off: it has what it recovers

    def forget(self, vhost: str, exchange: str | None = None) -> None:
        """An exchange was deleted (``exchange``), or a whole vhost."""
        gone = [k for k in self.histories if k[0] == vhost and exchange in (None, k[1])]
        for k in gone:
            del self.histories[k]
        if gone:
            self._save_soon()

    # ------------------------------------------------------------ the file
    def _save_soon(self) -> None:
        if self._save_timer is None:
            self._save_timer = self.owner.loop.call_later(SAVE_AFTER, self.save)

    def save(self) -> None:
        if self._save_timer is not None:
            self._save_timer.cancel()
            self._save_timer = None
        data = {json.dumps([v, x]): [[r.timestamp, r.exchange, r.routing_key,
                                      base64.b64encode(r.properties).decode(),
                                      base64.b64encode(r.body).decode(), r.flags]
                                     for r in history]
                for (v, x), history in self.histories.items() if history}
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("recent history not written (%s): it is kept in memory", exc)

    def load(self) -> None:
        """At start: the histories of the exchanges that are still there."""
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("recent history not read (%s): the exchanges start without one", exc)
            return
        for key, records in data.items():
            vhost, exchange = json.loads(key)
            vh = self.owner.vhosts.get(vhost)
            ex = vh.exchanges.get(exchange) if vh is not None else None
            if ex is None or not ex.keeps_history:
                continue
            self.histories[(vhost, exchange)] = deque(
                (Record(ts, x, rk, base64.b64decode(p), base64.b64decode(b), fl)
                 for ts, x, rk, p, b, fl in records), maxlen=ex.length)
