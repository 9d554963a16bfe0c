"""The counters, and the snapshots a front-end and a partition host answer with.

Every counter is an int attribute, added to per batch on the message path (a read's
publishes, a dispatch run's deliveries, a multiple ack) or derived from a number the path keeps
anyway (delivery tags, store offsets), and per event elsewhere; nothing here does I/O or knows
the process it runs in. With statistics off (``--collect-statistics none``) the objects are
``Null*`` twins whose methods do nothing, so the call sites need no ``if``.
"""
from __future__ import annotations

import operator
from bisect import bisect_left, bisect_right
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
# a channel's publishes are folded (``ChannelCounters.fold``) by a snapshot, at its close or
# on a change of exchange, and once this many wait (the memory they hold)
FOLD_EVERY = 4096
# fsync latency buckets (seconds) of amqpbroker_fsync_latency_seconds
FSYNC_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def enabled(config) -> bool:
    return getattr(config, "collect_statistics", "fine") != "none"


# ============================================================================ front-end
class ChannelCounters:
    """One AMQP channel's counts (RabbitMQ's channel message_stats).

    Counted per batch, not per message (issue 11: statistics on must cost within 5 % of off):

    * publishes: the channel appends the body size to ``pending`` (one list append) while the
      exchange is the one of the last publish and the message was routed; anything else goes
      through ``on_publish``. ``fold`` turns ``pending`` into the counts, the node's size
      histogram and its exchange's count: a snapshot (the node's ``fold_dirty``), the
      channel's close and a publish to another exchange fold, and the channel folds once
      ``FOLD_EVERY`` wait (``fold_pending``); not every read (a lone message's read paid
      three calls for it). ``publish`` and ``publish_confirm`` count ``pending`` as well
      (``values``); ``publish_confirm`` is derived: every publish since confirm.select.
    * deliveries: every delivery and basic.get-ok takes the channel's next delivery tag, so
      deliveries are the tags taken less the gets and direct reply-to deliveries; only the
      no-ack ones (and redeliveries) are counted, by an increment in the branch the channel
      takes for them anyway.
    * acks, confirms: one call per frame / per settled run, as before.
    """
    __slots__ = ("node", "channel", "confirmed_upto", "exchange", "pending", "confirm_base",
                 "direct", "publish", "drop_unroutable", "return_unroutable", "confirm",
                 "deliver_no_ack", "get", "get_no_ack", "get_empty", "redeliver", "ack")

    def __init__(self, node: "FrontendStats", channel=None):
        self.node = node
        self.channel = channel      # its next_tag numbers the deliveries (None: no deliveries)
        self.confirmed_upto = 0
        self.exchange = None        # the exchange of the publishes in ``pending``; not None
        self.pending: list = []     # while this is in the node's ``dirty`` list
        self.confirm_base = None    # publishes before confirm.select
        self.direct = 0             # direct reply-to deliveries (they take a tag, not counted)
        self.publish = self.drop_unroutable = self.return_unroutable = self.confirm = 0
        self.deliver_no_ack = self.get = self.get_no_ack = self.get_empty = 0
        self.redeliver = self.ack = 0

    def values(self) -> tuple:
        """The counts in ``CHANNEL_FIELDS`` order."""
        publish = self.publish + len(self.pending)
        base = self.confirm_base
        tagged = self.channel.next_tag - 1 if self.channel is not None else 0
        delivered = tagged - self.get - self.get_no_ack - self.direct
        return (publish, publish - base if base is not None else 0, self.drop_unroutable,
                self.return_unroutable, self.confirm, delivered - self.deliver_no_ack,
                self.deliver_no_ack, self.get, self.get_no_ack, self.get_empty, self.redeliver,
                self.ack, publish - self.drop_unroutable - self.return_unroutable)

    def on_publish(self, exchange, routed: int, mandatory: bool, size: int) -> None:
        """A basic.publish into ``exchange`` that reached ``routed`` queues, when the channel's
        fast path (``exchange is self.exchange`` and routed: append ``size`` to ``pending``)
        does not apply."""
        if exchange is not self.exchange:
            if self.exchange is None:
                self.node.dirty.append(self)
            else:
                self.fold()
            self.exchange = exchange
        self.pending.append(size)
        if not routed:
            self._unroutable(exchange, mandatory)

    def fold(self) -> None:
        """``pending`` joins the counts, the node's size histogram and the exchange's count;
        the next publish goes through ``on_publish`` (which puts this back in ``dirty``)."""
        self.fold_pending()
        self.exchange = None

    def fold_pending(self) -> None:
        """``fold``, the channel staying in the node's ``dirty`` with its exchange (the
        channel's fast path calls this once ``FOLD_EVERY`` publishes wait)."""
        pending = self.pending
        n = len(pending)
        if n:
            node = self.node
            self.publish += n
            node.exchange_in[self.exchange] += n
            node.size_sum += sum(pending)
            sizes = node.sizes
            lo = bisect_left(SIZE_BOUNDS, min(pending))
            hi = bisect_left(SIZE_BOUNDS, max(pending))
            if lo == hi:                # the usual batch: one bucket
                sizes[lo] += n
            else:
                pending.sort()
                below = 0
                for i in range(lo, hi):
                    upto = bisect_right(pending, SIZE_BOUNDS[i])
                    sizes[i] += upto - below
                    below = upto
                sizes[hi] += n - below
            self.pending = []

    def _unroutable(self, exchange, mandatory: bool) -> None:
        self.node.exchange_unrouted[exchange] += 1
        if mandatory:
            self.return_unroutable += 1
        else:
            self.drop_unroutable += 1

    def on_confirm_select(self) -> None:
        if self.confirm_base is None:
            self.confirm_base = self.publish + len(self.pending)

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
        """The channel closed: its counts join the front-end's totals, and the counters let
        go of it (channel -> counters -> channel is a cycle: with the collector's raised
        thresholds a closed connection's buffers stayed until a full collection)."""
        self.node.channel_closed(self)
        self.channel = None


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
        self.dirty: list = []               # ChannelCounters with publishes not yet folded
        # logins by protocol ("amqp091" here; "http" in the supervisor, which serves the
        # management API): [attempts, failed, succeeded], as RabbitMQ's auth_attempt_metrics
        self.auth_attempts: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ factories
    def channel(self, channel=None) -> ChannelCounters:
        self.channels_opened += 1
        return (ChannelCounters(self, channel) if self.enabled
                else NullChannelCounters(self, channel))

    def connection(self) -> ConnectionCounters:
        return ConnectionCounters() if self.enabled else NULL_CONNECTION

    def connection_opened(self) -> None:
        self.connections_opened += 1

    def connection_closed(self, session) -> None:
        if session.vhost is not None:          # it had opened (counted by connection_opened)
            self.connections_closed += 1

    def auth_attempt(self, protocol: str, succeeded: bool) -> None:
        counts = self.auth_attempts.setdefault(protocol, [0, 0, 0])
        counts[0] += 1
        counts[2 if succeeded else 1] += 1

    def on_metadata_op(self, op) -> None:
        """The metadata owner changed something (``contract`` metadata ops)."""
        name = type(op).__name__
        if name == "QueueOp":
            self.queues_created += 1
        elif name == "QueueDeleted":
            self.queues_deleted += 1

    def fold_dirty(self) -> None:
        """Publishes counted since the last fold join the counts (after each read a session
        handled, and before a snapshot): one fold per channel that published, not one
        count per message."""
        dirty = self.dirty
        for counters in dirty:
            counters.fold()
        dirty.clear()

    def channel_closed(self, counters: ChannelCounters) -> None:
        self.channels_closed += 1
        # listed in ``dirty`` while it has publishes since the last snapshot (``on_publish``):
        # let go of it now, or a node that takes no snapshots (management off) would keep
        # every closed channel that ever published
        listed = counters.exchange is not None
        counters.fold()
        if listed and counters in self.dirty:
            self.dirty.remove(counters)
        totals = self.closed_totals
        for i, v in enumerate(counters.values()):
            totals[i] += v

    # ------------------------------------------------------------------ snapshot
    def snapshot(self, broker, sessions) -> dict:
        """What this front-end tells the supervisor: its totals, each connection and channel,
        each exchange's in/out (only this process's publishes)."""
        from ..frontend.session import connection_name      # the API's name of it
        self.fold_dirty()
        totals = list(self.closed_totals)
        conns = []
        publishers = consumers = 0
        for s in sessions:
            if s.vhost is None:
                continue                    # still in the handshake
            chans = []
            for ch in s.channels.values():
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
                "auth": {k: list(v) for k, v in self.auth_attempts.items()},
                "churn": {"connections_opened": self.connections_opened,
                          "connections_closed": self.connections_closed,
                          "channels_opened": self.channels_opened,
                          "channels_closed": self.channels_closed,
                          "queues_declared": self.queues_declared,
                          "queues_created": self.queues_created,
                          "queues_deleted": self.queues_deleted}}


class NullChannelCounters(ChannelCounters):
    """Statistics off: the same calls, counting nothing (``exchange`` stays None, so every
    publish takes ``on_publish``, which does nothing; the channel's increments of
    ``deliver_no_ack`` and ``redeliver`` land here and are never reported)."""
    __slots__ = ()

    def values(self) -> tuple:
        return (0,) * len(CHANNEL_FIELDS)

    def on_publish(self, exchange, routed, mandatory, size) -> None:
        pass

    def fold(self) -> None:
        pass

    def fold_pending(self) -> None:
        pass

    def on_confirm_select(self) -> None:
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
        self.channel = None


class NullConnectionCounters(ConnectionCounters):
    __slots__ = ()

    def on_receive(self, nbytes: int) -> None:
        pass

    def on_send(self, pieces) -> None:
        pass


NULL_CONNECTION = NullConnectionCounters()


# ============================================================================ worker
class QueueCounters:
    """One queue's counts (RabbitMQ's queue message_stats), kept by its partition host.

    A classic or quorum queue counts its publishes by the offsets its store handed out since
    it opened (``count_appends``): nothing per message but the bytes, which the queue adds
    itself (``publish_bytes += size``); deliveries are counted per dispatch run
    (``on_deliveries``), acks per ack command."""
    __slots__ = (*QUEUE_FIELDS, "store", "base")

    def __init__(self):
        for f in QUEUE_FIELDS:
            setattr(self, f, 0)
        self.store = None
        self.base = 0

    def count_appends(self, store) -> None:
        """Publishes are the records appended to ``store`` from now on."""
        self.store = store
        self.base = store.next_offset

    def values(self, _get=operator.attrgetter(*QUEUE_FIELDS)) -> tuple:
        """The counts in ``QUEUE_FIELDS`` order."""
        counted = _get(self)
        if self.store is None:
            return counted
        return (counted[0] + self.store.next_offset - self.base, *counted[1:])

    def on_publish(self, size: int) -> None:
        self.publish += 1
        self.publish_bytes += size

    def on_publishes(self, n: int, size: int) -> None:
        """``n`` publishes of ``size`` bytes of bodies in all (a stream's batch)."""
        self.publish += n
        self.publish_bytes += size

    def on_deliver(self, no_ack: bool, redelivered: bool) -> None:
        if no_ack:
            self.deliver_no_ack += 1
        else:
            self.deliver += 1
        if redelivered:
            self.redeliver += 1

    def on_deliveries(self, acked: int, no_ack: int, redelivered: int) -> None:
        """A dispatch run: ``acked`` + ``no_ack`` deliveries, ``redelivered`` of them again."""
        self.deliver += acked
        self.deliver_no_ack += no_ack
        self.redeliver += redelivered

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
    """Statistics off: nothing reported (what a queue adds inline lands here unread)."""
    __slots__ = ()

    def values(self) -> tuple:
        return (0,) * len(QUEUE_FIELDS)

    def count_appends(self, store) -> None:
        pass

    def on_publish(self, size) -> None:
        pass

    def on_publishes(self, n, size) -> None:
        pass

    def on_deliver(self, no_ack, redelivered) -> None:
        pass

    def on_deliveries(self, acked, no_ack, redelivered) -> None:
        pass

    def on_get(self, no_ack, redelivered) -> None:
        pass

    def on_ack(self, n) -> None:
        pass


def queue_counters(config) -> QueueCounters:
    return QueueCounters() if enabled(config) else NullQueueCounters()


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
        for offset, entry in q.outstanding.items():
            # an Unacked (level, size), or the Record itself while not yet durable (or the
            # run of publishes it came in: worker/store.py's StoredRun)
            if isinstance(entry, tuple):
                unacked_bytes += entry[1] if len(entry) == 2 else len(entry.body)
            else:
                unacked_bytes += entry.body_size(offset)
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
            "dead_lettered": dict(host.dead_lettered),
            "commit": {"rounds": t.rounds, "round_seconds": t.round_seconds,
                       "fsyncs": list(t.fsyncs), "fsync_seconds": t.fsync_seconds}}
