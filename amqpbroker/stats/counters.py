"""The counters, and the snapshots a front-end and a partition host answer with.

Every counter is an int attribute bumped by one method call where the event happens
(``channel.stats.on_publish(...)``); nothing here does I/O, allocates per message or knows
the process it runs in. With statistics off (``--collect-statistics none``) the objects are
``Null*`` twins whose methods do nothing, so the call sites need no ``if``.
"""
from __future__ import annotations

import operator
from bisect import bisect_left
from collections import defaultdict

# RabbitMQ's message_size_bytes buckets (rabbit_msg_size_metrics.erl), upper bounds inclusive;
# a tenth bucket is +Inf
SIZE_BOUNDS = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 50_000_000, 100_000_000)

# a channel's counters, named as RabbitMQ's message_stats keys where it has one
# (``routed`` is not counted: it is publish - drop_unroutable - return_unroutable)
COUNTED_FIELDS = ("publish", "publish_confirm", "drop_unroutable", "return_unroutable",
                  "confirm", "deliver", "deliver_no_ack", "get", "get_no_ack", "get_empty",
                  "redeliver", "ack")
CHANNEL_FIELDS = (*COUNTED_FIELDS, "routed")
QUEUE_FIELDS = ("publish", "publish_bytes", "deliver", "deliver_no_ack", "get", "get_no_ack",
                "redeliver", "ack")
# fsync latency buckets (seconds) of amqpbroker_fsync_latency_seconds
FSYNC_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def enabled(config) -> bool:
    return getattr(config, "collect_statistics", "fine") != "none"


# ============================================================================ front-end
class ChannelCounters:
    """One AMQP channel's counts (RabbitMQ's channel message_stats)."""
    __slots__ = ("node", "confirmed_upto", "exchange", "exchange_n", "sizes", "size_sum",
                 *COUNTED_FIELDS)

    def __init__(self, node: "FrontendStats"):
        self.node = node
        self.confirmed_upto = 0
        self.exchange = None        # the exchange of the last publishes, and how many since
        self.exchange_n = 0         # it became the last (added to the node's on a change)
        self.sizes = [0] * (len(SIZE_BOUNDS) + 1)
        self.size_sum = 0
        for f in COUNTED_FIELDS:
            setattr(self, f, 0)

    def values(self) -> tuple:
        """The counts in ``CHANNEL_FIELDS`` order."""
        counted = [getattr(self, f) for f in COUNTED_FIELDS]
        return (*counted, counted[0] - counted[2] - counted[3])

    def on_publish(self, exchange, routed: int, mandatory: bool, confirm: bool,
                   size: int) -> None:
        """A basic.publish into ``exchange`` that reached ``routed`` queues. The usual case
        (routed, to the same exchange as the last) is four increments, an identity test and
        a bisect; the rest is derived when asked."""
        self.publish += 1
        if exchange is self.exchange:
            self.exchange_n += 1
        else:
            self._switch_exchange(exchange)
        if confirm:
            self.publish_confirm += 1
        if not routed:
            self._unroutable(exchange, mandatory)
        self.sizes[bisect_left(SIZE_BOUNDS, size)] += 1
        self.size_sum += size

    def _switch_exchange(self, exchange) -> None:
        if self.exchange is not None:
            self.node.exchange_in[self.exchange] += self.exchange_n
        self.exchange = exchange
        self.exchange_n = 1

    def _unroutable(self, exchange, mandatory: bool) -> None:
        self.node.exchange_unrouted[exchange] += 1
        if mandatory:
            self.return_unroutable += 1
        else:
            self.drop_unroutable += 1

    def on_deliver(self, no_ack: bool, redelivered: bool) -> None:
        if no_ack:
            self.deliver_no_ack += 1
        else:
            self.deliver += 1
        if redelivered:
            self.redeliver += 1

    def on_get(self, no_ack: bool, redelivered: bool) -> None:
        if no_ack:
            self.get_no_ack += 1
        else:
            self.get += 1
        if redelivered:
            self.redeliver += 1

    def on_get_empty(self) -> None:
        self.get_empty += 1

    def on_ack(self, n: int) -> None:
        self.ack += n

    def on_confirms(self, settled) -> None:
        """``Confirms.take_settled``'s actions, which come in publish order: an ack (multiple
        or not) confirms every publish since the last action."""
        last = self.confirmed_upto
        for seq, _multiple, ack in settled:
            if ack:
                self.confirm += seq - last
            last = seq
        self.confirmed_upto = last

    def on_close(self) -> None:
        """The channel closed: its counts join the front-end's totals."""
        self.node.channel_closed(self)


class ConnectionCounters:
    """Bytes and frames' writes of one connection (recv_oct / send_oct, *_cnt)."""
    __slots__ = ("recv_oct", "recv_cnt", "send_oct", "send_cnt")

    def __init__(self):
        self.recv_oct = self.recv_cnt = self.send_oct = self.send_cnt = 0

    def on_receive(self, nbytes: int) -> None:
        self.recv_oct += nbytes
        self.recv_cnt += 1

    def on_send(self, pieces) -> None:
        self.send_oct += sum(map(len, pieces))
        self.send_cnt += 1


class FrontendStats:
    """A front-end's (or the single process's) counters: the node totals it contributes."""

    def __init__(self, config=None):
        self.enabled = enabled(config)
        self.connections_opened = 0
        self.connections_closed = 0
        self.channels_opened = 0
        self.channels_closed = 0
        self.queues_declared = 0            # these three: the supervisor's (metadata owner)
        self.queues_created = 0
        self.queues_deleted = 0
        self.closed_totals = [0] * len(CHANNEL_FIELDS)  # of channels that closed
        self.exchange_in: defaultdict = defaultdict(int)   # Exchange -> messages in
        self.exchange_unrouted: defaultdict = defaultdict(int)  # Exchange -> not routed
        self.sizes = [0] * (len(SIZE_BOUNDS) + 1)
        self.size_sum = 0

    # ------------------------------------------------------------------ factories
    def channel(self) -> ChannelCounters:
        self.channels_opened += 1
        return ChannelCounters(self) if self.enabled else NullChannelCounters(self)

    def connection(self) -> ConnectionCounters:
        return ConnectionCounters() if self.enabled else NULL_CONNECTION

    def connection_opened(self) -> None:
        self.connections_opened += 1

    def connection_closed(self, session) -> None:
        if session.vhost is not None:          # it had opened (counted by connection_opened)
            self.connections_closed += 1

    def on_metadata_op(self, op) -> None:
        """The metadata owner changed something (``contract`` metadata ops)."""
        name = type(op).__name__
        if name == "QueueOp":
            self.queues_created += 1
        elif name == "QueueDeleted":
            self.queues_deleted += 1

    def channel_closed(self, counters: ChannelCounters) -> None:
        self.channels_closed += 1
        totals = self.closed_totals
        for i, v in enumerate(counters.values()):
            totals[i] += v
        self._fold_sizes_and_exchange(counters)

    def _fold_sizes_and_exchange(self, counters: ChannelCounters) -> None:
        """A channel's message sizes and publishes of its current exchange join the node's
        (at close, and when a snapshot is taken)."""
        for i, n in enumerate(counters.sizes):
            self.sizes[i] += n
            counters.sizes[i] = 0
        self.size_sum += counters.size_sum
        counters.size_sum = 0
        if counters.exchange is not None:
            self.exchange_in[counters.exchange] += counters.exchange_n
            counters.exchange_n = 0

    # ------------------------------------------------------------------ snapshot
    def snapshot(self, broker, sessions) -> dict:
        """What this front-end tells the supervisor: its totals, each connection and channel,
        each exchange's in/out (only this process's publishes)."""
        from ..frontend.session import connection_name      # the API's name of it
        totals = list(self.closed_totals)
        conns = []
        publishers = consumers = 0
        for s in sessions:
            if s.vhost is None:
                continue                    # still in the handshake
            chans = []
            for ch in s.channels.values():
                self._fold_sizes_and_exchange(ch.stats)
                values = ch.stats.values()
                for i, v in enumerate(values):
                    totals[i] += v
                if values[0]:
                    publishers += 1
                consumers += len(ch.consumers)
                chans.append({"number": ch.number, "values": values,
                              "consumers": len(ch.consumers), "unacked": len(ch.unacked),
                              "unconfirmed": len(ch.confirms), "prefetch": ch.prefetch,
                              "global_prefetch": ch.global_prefetch, "confirm": ch.confirm,
                              "transactional": ch.tx is not None,
                              "uncommitted": len(ch.tx) if ch.tx is not None else 0})
            io = s.stats
            conns.append({"name": connection_name(s), "vhost": s.vhost.name,
                          "user": s.user.name if s.user else None,
                          "recv_oct": io.recv_oct, "recv_cnt": io.recv_cnt,
                          "send_oct": io.send_oct, "send_cnt": io.send_cnt,
                          "channels": chans})
        exchanges = []
        live = set()
        for vh in broker.vhosts.values():
            for name, ex in vh.exchanges.items():
                live.add(ex)
                n_in = self.exchange_in.get(ex, 0)
                if n_in:
                    exchanges.append((vh.name, name, n_in,
                                      n_in - self.exchange_unrouted.get(ex, 0)))
        for ex in [e for e in self.exchange_in if e not in live]:    # deleted since
            self.exchange_in.pop(ex, None)
            self.exchange_unrouted.pop(ex, None)
        return {"totals": dict(zip(CHANNEL_FIELDS, totals)), "connections": conns,
                "exchanges": exchanges, "sizes": list(self.sizes), "size_sum": self.size_sum,
                "publishers": publishers, "consumers": consumers,
                "churn": {"connections_opened": self.connections_opened,
                          "connections_closed": self.connections_closed,
                          "channels_opened": self.channels_opened,
                          "channels_closed": self.channels_closed,
                          "queues_declared": self.queues_declared,
                          "queues_created": self.queues_created,
                          "queues_deleted": self.queues_deleted}}


class NullChannelCounters(ChannelCounters):
    """Statistics off: the same calls, counting nothing."""
    __slots__ = ()

    def on_publish(self, exchange, routed, mandatory, confirm, size) -> None:
        pass

    def on_deliver(self, no_ack, redelivered) -> None:
        pass

    def on_get(self, no_ack, redelivered) -> None:
        pass

    def on_get_empty(self) -> None:
        pass

    def on_ack(self, n) -> None:
        pass

    def on_confirms(self, settled) -> None:
        pass

    def on_close(self) -> None:
        self.node.channels_closed += 1


class NullConnectionCounters(ConnectionCounters):
    __slots__ = ()

    def on_receive(self, nbytes: int) -> None:
        pass

    def on_send(self, pieces) -> None:
        pass


NULL_CONNECTION = NullConnectionCounters()


# ============================================================================ worker
class QueueCounters:
    """One queue's counts (RabbitMQ's queue message_stats), kept by its partition host."""
    __slots__ = QUEUE_FIELDS

    def __init__(self):
        for f in QUEUE_FIELDS:
            setattr(self, f, 0)

    def values(self, _get=operator.attrgetter(*QUEUE_FIELDS)) -> tuple:
        """The counts in ``QUEUE_FIELDS`` order."""
        return _get(self)

    def on_publish(self, size: int) -> None:
        self.publish += 1
        self.publish_bytes += size

    def on_deliver(self, no_ack: bool, redelivered: bool) -> None:
        if no_ack:
            self.deliver_no_ack += 1
        else:
            self.deliver += 1
        if redelivered:
            self.redeliver += 1

    def on_get(self, no_ack: bool, redelivered: bool) -> None:
        if no_ack:
            self.get_no_ack += 1
        else:
            self.get += 1
        if redelivered:
            self.redeliver += 1

    def on_ack(self, n: int) -> None:
        self.ack += n


class NullQueueCounters(QueueCounters):
    __slots__ = ()

    def on_publish(self, size) -> None:
        pass

    def on_deliver(self, no_ack, redelivered) -> None:
        pass

    def on_get(self, no_ack, redelivered) -> None:
        pass

    def on_ack(self, n) -> None:
        pass


NULL_QUEUE = NullQueueCounters()


def queue_counters(config) -> QueueCounters:
    return QueueCounters() if enabled(config) else NULL_QUEUE


class CommitTimings:
    """A partition host's group commit: rounds (count, seconds) and fsync steps (histogram)."""

    def __init__(self):
        self.rounds = 0
        self.round_seconds = 0.0
        self.fsyncs = [0] * (len(FSYNC_BOUNDS) + 1)
        self.fsync_seconds = 0.0

    def on_round(self, seconds: float) -> None:
        self.rounds += 1
        self.round_seconds += seconds

    def on_fsync(self, seconds: float) -> None:
        self.fsyncs[bisect_left(FSYNC_BOUNDS, seconds)] += 1
        self.fsync_seconds += seconds


def host_snapshot(host) -> dict:
    """What a partition host tells the supervisor: every queue's gauges and counters by qid,
    its commit timings, and how full the rings from each front-end are."""
    queues = {}
    for qid, q in host.queues.items():
        if q.deleted:
            continue
        unacked_bytes = 0
        for entry in q.outstanding.values():
            # an Unacked (level, size), or the Record itself while not yet durable
            unacked_bytes += entry[1] if len(entry) == 2 else len(entry.body)
        queues[qid] = (q.ready_count, len(q.outstanding), len(q.consumers), q.ready_bytes,
                       unacked_bytes, q.stats.values(), q.memory())
    rings = []
    for state in host.links:
        link = state.link
        ring = getattr(link, "in_ring", None)
        if ring is not None:
            rings.append((ring.used_bytes(), ring.capacity))
    t = host.committer.timings
    return {"queues": queues, "rings": rings, "group_fallbacks": host.group_fallbacks,
            "commit": {"rounds": t.rounds, "round_seconds": t.round_seconds,
                       "fsyncs": list(t.fsyncs), "fsync_seconds": t.fsync_seconds}}
