"""Prometheus metrics on ``--prometheus-port`` (15692), as RabbitMQ 3.10's
``rabbitmq_prometheus`` plugin serves them, so its Grafana dashboards work unchanged.

Paths, as the plugin's:

* ``/metrics`` — aggregated: every family summed over its objects, no per-object labels
  (``rabbitmq_queue_messages 42``), plus the node's gauges and the ``rabbitmq_global_*``
  counters (labels ``protocol`` and, for deliveries and acks, ``queue_type``);
* ``/metrics/per-object`` — the same families with one sample per queue (``vhost``,
  ``queue``), channel (``channel``) and connection (labelled ``channel`` as well: RabbitMQ
  3.10 labels its connection metrics so);
* ``/metrics/detailed?family=...&vhost=...`` — only the families asked for, named
  ``rabbitmq_detailed_*``, per object, restricted to the vhosts given (RabbitMQ's family
  names: ``queue_coarse_metrics``, ``queue_metrics``, ``queue_consumer_count``,
  ``channel_metrics``, ``channel_exchange_metrics``, ``channel_queue_metrics``,
  ``channel_queue_exchange_metrics``, ``connection_coarse_metrics``, ``connection_metrics``,
  ``connection_churn_metrics``, ``node_coarse_metrics``, ``node_metrics``, ``exchange_names``,
  ``exchange_bindings``, ``vhost_status``, ``auth_attempt_metrics``).

Metric names, types and HELP texts are RabbitMQ's. Departures: per-object channel counters
are per channel (RabbitMQ splits them by exchange or queue as well: ``vhost`` is given, not
``exchange`` / ``queue``); ``rabbitmq_queue_messages_published_total`` per object is per
queue (RabbitMQ: per channel, queue and exchange); Erlang-only families (reductions, the
Erlang VM, mnesia, raft) are not served. ``rabbitmq_message_size_bytes`` (RabbitMQ 4.x, which
the current RabbitMQ-Overview dashboard queries) is served too.

Ours, for what RabbitMQ has no name for: ``amqpbroker_ring_used_bytes`` /
``amqpbroker_ring_capacity_bytes`` (each front-end -> worker ring), ``amqpbroker_commit_*``
(group commit rounds), ``amqpbroker_fsync_latency_seconds`` (a histogram of fsync steps),
``amqpbroker_worker_restarts_total`` and ``amqpbroker_frontend_restarts_total``,
``amqpbroker_heap_trims_total`` / ``amqpbroker_heap_trim_seconds_total`` (the supervisor's
periodic collection and ``malloc_trim``: supervisor/heap.py).
Kafka-style consumer-group metrics, as kafka_exporter names them (``kafka_consumergroup_lag``
...), come from ``consumer_group_families`` on ``/metrics`` and ``/metrics/per-object``.

Every scrape takes a fresh snapshot (``stats.collector``); the text is produced by
``prometheus_client``'s exposition (or OpenMetrics when the scraper asks for it).
"""
from __future__ import annotations

import functools
import os
import platform
import resource
import shutil
import time

import prometheus_client
from aiohttp import web
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, UnknownMetricFamily)
from prometheus_client.exposition import choose_encoder

from .. import __version__
from ..frontend.alarms import node_rss, total_memory
from ..stats.counters import CHANNEL_FIELDS, FSYNC_BOUNDS, QUEUE_FIELDS, SIZE_BOUNDS

NODE = "amqpbroker@localhost"
RABBITMQ_VERSION = "3.13.0"     # the version the management API claims (mgmt/overview.py)
CLASSIC = "rabbit_classic_queue"

_G, _C, _U = GaugeMetricFamily, CounterMetricFamily, UnknownMetricFamily

# (family group, name without prefix, type, help, value of a queue row)
# a queue row: (ready, unacked, consumers, ready bytes, unacked bytes, counters, memory)
QUEUE_METRICS = [
    ("queue_coarse_metrics", "queue_messages_ready", _G,
     "Messages ready to be delivered to consumers", lambda r: r[0]),
    ("queue_coarse_metrics", "queue_messages_unacked", _G,
     "Messages delivered to consumers but not yet acknowledged", lambda r: r[1]),
    ("queue_coarse_metrics", "queue_messages", _G,
     "Sum of ready and unacknowledged messages - total queue depth", lambda r: r[0] + r[1]),
    ("queue_consumer_count", "queue_consumers", _G, "Consumers on a queue", lambda r: r[2]),
    ("queue_metrics", "queue_messages_bytes", _G,
     "Size in bytes of ready and unacknowledged messages", lambda r: r[3] + r[4]),
    ("queue_metrics", "queue_messages_ready_bytes", _G, "Size in bytes of ready messages",
     lambda r: r[3]),
    ("queue_metrics", "queue_messages_unacked_bytes", _G,
     "Size in bytes of all unacknowledged messages", lambda r: r[4]),
    ("queue_metrics", "queue_process_memory_bytes", _G,
     "Memory in bytes used by the Erlang queue process", lambda r: r[6]),
    ("channel_queue_exchange_metrics", "queue_messages_published_total", _C,
     "Total number of messages published to queues",
     lambda r, i=QUEUE_FIELDS.index("publish"): r[5][i]),
]

# (group, name, type, help, value of a channel dict)
_F = {f: i for i, f in enumerate(CHANNEL_FIELDS)}
CHANNEL_METRICS = [
    ("channel_metrics", "channel_consumers", _G, "Consumers on a channel",
     lambda ch: ch["consumers"]),
    ("channel_metrics", "channel_messages_unacked", _G,
     "Delivered but not yet acknowledged messages", lambda ch: ch["unacked"]),
    ("channel_metrics", "channel_messages_unconfirmed", _G,
     "Published but not yet confirmed messages", lambda ch: ch["unconfirmed"]),
    ("channel_metrics", "channel_messages_uncommitted", _G,
     "Messages received in a transaction but not yet committed", lambda ch: ch["uncommitted"]),
    ("channel_metrics", "channel_prefetch", _G,
     "Total limit of unacknowledged messages for all consumers on a channel",
     lambda ch: ch["global_prefetch"]),
    ("channel_metrics", "consumer_prefetch", _G,
     "Limit of unacknowledged messages for each consumer", lambda ch: ch["prefetch"]),
    ("channel_exchange_metrics", "channel_messages_published_total", _C,
     "Total number of messages published into an exchange on a channel",
     lambda ch: ch["values"][_F["publish"]]),
    ("channel_exchange_metrics", "channel_messages_confirmed_total", _C,
     "Total number of messages published into an exchange and confirmed on the channel",
     lambda ch: ch["values"][_F["confirm"]]),
    ("channel_exchange_metrics", "channel_messages_unroutable_returned_total", _C,
     "Total number of messages published as mandatory into an exchange and returned to the "
     "publisher as unroutable", lambda ch: ch["values"][_F["return_unroutable"]]),
    ("channel_exchange_metrics", "channel_messages_unroutable_dropped_total", _C,
     "Total number of messages published as non-mandatory into an exchange and dropped as "
     "unroutable", lambda ch: ch["values"][_F["drop_unroutable"]]),
    ("channel_queue_metrics", "channel_get_ack_total", _C,
     "Total number of messages fetched with basic.get in manual acknowledgement mode",
     lambda ch: ch["values"][_F["get"]]),
    ("channel_queue_metrics", "channel_get_total", _C,
     "Total number of messages fetched with basic.get in automatic acknowledgement mode",
     lambda ch: ch["values"][_F["get_no_ack"]]),
    ("channel_queue_metrics", "channel_messages_delivered_ack_total", _C,
     "Total number of messages delivered to consumers in manual acknowledgement mode",
     lambda ch: ch["values"][_F["deliver"]]),
    ("channel_queue_metrics", "channel_messages_delivered_total", _C,
     "Total number of messages delivered to consumers in automatic acknowledgement mode",
     lambda ch: ch["values"][_F["deliver_no_ack"]]),
    ("channel_queue_metrics", "channel_messages_redelivered_total", _C,
     "Total number of messages redelivered to consumers",
     lambda ch: ch["values"][_F["redeliver"]]),
    ("channel_queue_metrics", "channel_messages_acked_total", _C,
     "Total number of messages acknowledged by consumers", lambda ch: ch["values"][_F["ack"]]),
    ("channel_queue_metrics", "channel_get_empty_total", _C,
     "Total number of times basic.get operations fetched no message",
     lambda ch: ch["values"][_F["get_empty"]]),
]

CONNECTION_METRICS = [
    ("connection_coarse_metrics", "connection_incoming_bytes_total", _C,
     "Total number of bytes received on a connection", lambda c: c["recv_oct"]),
    ("connection_coarse_metrics", "connection_outgoing_bytes_total", _C,
     "Total number of bytes sent on a connection", lambda c: c["send_oct"]),
    ("connection_metrics", "connection_incoming_packets_total", _C,
     "Total number of packets received on a connection", lambda c: c["recv_cnt"]),
    ("connection_metrics", "connection_outgoing_packets_total", _C,
     "Total number of packets sent on a connection", lambda c: c["send_cnt"]),
    ("connection_metrics", "connection_channels", _G, "Channels on a connection",
     lambda c: len(c["channels"])),
]

CHURN_METRICS = [
    ("connections_opened_total", "Total number of connections opened", "connections_opened"),
    ("connections_closed_total", "Total number of connections closed or terminated",
     "connections_closed"),
    ("channels_opened_total", "Total number of channels opened", "channels_opened"),
    ("channels_closed_total", "Total number of channels closed", "channels_closed"),
    ("queues_declared_total", "Total number of queues declared", "queues_declared"),
    ("queues_created_total", "Total number of queues created", "queues_created"),
    ("queues_deleted_total", "Total number of queues deleted", "queues_deleted"),
]

# rabbitmq_global_*: (name, help, count of the node totals, labelled by queue type)
GLOBAL_COUNTERS = [
    ("messages_received_total", "Total number of messages received from publishers",
     lambda t: t["publish"], False),
    ("messages_received_confirm_total",
     "Total number of messages received from publishers expecting confirmations",
     lambda t: t["publish_confirm"], False),
    ("messages_routed_total", "Total number of messages routed to queues or streams",
     lambda t: t["routed"], False),
    ("messages_unroutable_dropped_total",
     "Total number of messages published as non-mandatory into an exchange and dropped as "
     "unroutable", lambda t: t["drop_unroutable"], False),
    ("messages_unroutable_returned_total",
     "Total number of messages published as mandatory into an exchange and returned to the "
     "publisher as unroutable", lambda t: t["return_unroutable"], False),
    ("messages_confirmed_total", "Total number of messages confirmed to publishers",
     lambda t: t["confirm"], False),
    ("messages_delivered_total", "Total number of messages delivered to consumers",
     lambda t: t["deliver"] + t["deliver_no_ack"] + t["get"] + t["get_no_ack"], True),
    ("messages_delivered_consume_manual_ack_total",
     "Total number of messages delivered to consumers using basic.consume with manual "
     "acknowledgment", lambda t: t["deliver"], True),
    ("messages_delivered_consume_auto_ack_total",
     "Total number of messages delivered to consumers using basic.consume with automatic "
     "acknowledgment", lambda t: t["deliver_no_ack"], True),
    ("messages_delivered_get_manual_ack_total",
     "Total number of messages delivered to consumers using basic.get with manual "
     "acknowledgment", lambda t: t["get"], True),
    ("messages_delivered_get_auto_ack_total",
     "Total number of messages delivered to consumers using basic.get with automatic "
     "acknowledgment", lambda t: t["get_no_ack"], True),
    ("messages_get_empty_total", "Total number of times basic.get operations fetched no message",
     lambda t: t["get_empty"], True),
    ("messages_redelivered_total", "Total number of messages redelivered to consumers",
     lambda t: t["redeliver"], True),
    ("messages_acknowledged_total", "Total number of messages acknowledged by consumers",
     lambda t: t["ack"], True),
]

# rabbitmq_global_messages_dead_lettered_<reason>_total{queue_type, dead_letter_strategy}:
# (reason, help), and the (queue type, strategy) pairs each has a sample for, as RabbitMQ
# 3.10's rabbit_global_counters:boot_step (counted by ``Queue.count_dead``)
DEAD_LETTERED = [
    ("expired", "Total number of messages dead-lettered due to message TTL exceeded"),
    ("rejected", "Total number of messages dead-lettered due to basic.reject or basic.nack"),
    ("maxlen", "Total number of messages dead-lettered due to overflow drop-head or "
               "reject-publish-dlx"),
    ("confirmed", "Total number of messages dead-lettered and confirmed by target queues"),
    ("delivery_limit", "Total number of messages dead-lettered due to delivery-limit exceeded"),
]
_MOST = ("expired", "rejected", "maxlen")
DEAD_LETTER_SAMPLES = {
    ("classic", "disabled"): _MOST, ("classic", "at_most_once"): _MOST,
    ("quorum", "disabled"): (*_MOST, "delivery_limit"),
    ("quorum", "at_most_once"): (*_MOST, "delivery_limit"),
    ("quorum", "at_least_once"): ("expired", "rejected", "confirmed", "delivery_limit"),
}

DETAILED_GROUPS = {"queue_coarse_metrics", "queue_metrics", "queue_consumer_count",
                   "channel_metrics", "channel_exchange_metrics", "channel_queue_metrics",
                   "channel_queue_exchange_metrics", "connection_coarse_metrics",
                   "connection_metrics", "connection_churn_metrics", "node_coarse_metrics",
                   "node_metrics", "exchange_names", "exchange_bindings", "vhost_status",
                   "auth_attempt_metrics"}


class PrometheusServer:
    """The metrics HTTP listener (its own port, no authentication, as RabbitMQ's plugin)."""

    def __init__(self, broker, amqp_server):
        self.broker = broker
        self.amqp = amqp_server
        self.started = time.monotonic()
        self.runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_get("/metrics", self.aggregated)
        self.app.router.add_get("/metrics/per-object", self.per_object)
        self.app.router.add_get("/metrics/detailed", self.detailed)

    async def start(self, host: str, port: int):
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host or None, port)
        await site.start()
        return site._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # ------------------------------------------------------------------ endpoints
    async def aggregated(self, request: web.Request) -> web.Response:
        snap = await self.broker.collector.collect()
        snap.consumer_groups = await self._consumer_groups()
        snap.led_partitions = await self._led_partitions()
        return _respond(request, self.families(snap, "rabbitmq_", per_object=False))

    async def per_object(self, request: web.Request) -> web.Response:
        snap = await self.broker.collector.collect()
        snap.consumer_groups = await self._consumer_groups()
        snap.led_partitions = await self._led_partitions()
        return _respond(request, self.families(snap, "rabbitmq_", per_object=True))

    async def _led_partitions(self) -> list[dict] | None:
        """The cluster's partitions this node leads (None: not in a cluster); asked of the
        workers when they host the queues (``Replication.led_partitions``)."""
        replication = getattr(getattr(self.broker, "cluster", None), "replication", None)
        if replication is None:
            return None
        return await replication.led_partitions()

    async def _consumer_groups(self) -> list[dict]:
        groups = getattr(self.broker, "groups", None)
        return [] if groups is None else await groups.describe(list(self.broker.vhosts))

    async def detailed(self, request: web.Request) -> web.Response:
        groups = set(request.query.getall("family", [])) & DETAILED_GROUPS
        vhosts = set(request.query.getall("vhost", [])) or None
        snap = await self.broker.collector.collect()
        return _respond(request, self.families(snap, "rabbitmq_detailed_", per_object=True,
                                               groups=groups, vhosts=vhosts))

    # ------------------------------------------------------------------ families
    def families(self, snap, prefix: str, *, per_object: bool, groups=None,
                 vhosts=None) -> list:
        """Every family for one scrape; ``groups`` (detailed) keeps only those asked."""
        want = (lambda g: True) if groups is None else (lambda g: g in groups)
        out = []
        if groups is None:
            out += self._node_families(snap)
        else:
            if "connection_churn_metrics" in groups:
                out += _churn(snap, prefix)
            if "auth_attempt_metrics" in groups:
                out += _auth(snap, prefix)
            if "node_coarse_metrics" in groups or "node_metrics" in groups:
                out += self._node_gauges(prefix, groups, snap)
        queues = [(ref, row) for ref, row in snap.queues.items()
                  if vhosts is None or ref.vhost.name in vhosts]
        rows = None if per_object else [row for _, row in queues]
        for group, name, kind, help_, value in QUEUE_METRICS:
            if not want(group):
                continue
            if rows is not None:        # aggregated: no labels to build for 10,000 queues
                out.append(_single(kind, prefix + name, help_, sum(map(value, rows))))
            else:
                out.append(_objects(prefix + name, kind, help_, True, ["vhost", "queue"],
                                    (([ref.vhost.name, ref.name], value(row))
                                     for ref, row in queues)))
        channels = [(conn, ch) for conn in snap.connections for ch in conn["channels"]
                    if vhosts is None or conn["vhost"] in vhosts]
        for group, name, kind, help_, value in CHANNEL_METRICS:
            if want(group):
                labels = (["channel", "vhost"] if kind is _C else ["channel"])
                out.append(_objects(
                    prefix + name, kind, help_, per_object, labels,
                    (([f"{conn['name']} ({ch['number']})", conn["vhost"]][:len(labels)],
                      value(ch)) for conn, ch in channels)))
        conns = [conn for conn in snap.connections if vhosts is None or conn["vhost"] in vhosts]
        for group, name, kind, help_, value in CONNECTION_METRICS:
            if want(group):
                out.append(_objects(prefix + name, kind, help_, per_object, ["channel"],
                                    (([conn["name"]], value(conn)) for conn in conns)))
        if groups is not None:
            out += self._cluster_families(groups, vhosts)
        out += self._info_families()
        return out

    def _node_families(self, snap) -> list:
        b = self.broker
        out = []
        alarms = b.alarms.active
        for name, help_, on in (
                ("alarms_file_descriptor_limit",
                 "is 1 if file descriptor limit alarm is in effect", False),
                ("alarms_free_disk_space_watermark",
                 "is 1 if free disk space watermark alarm is in effect",
                 any(k.startswith("disk") for k in alarms)),
                ("alarms_memory_used_watermark", "is 1 if VM memory watermark alarm is in effect",
                 "memory" in alarms)):
            out.append(_single(_U, "rabbitmq_" + name, help_, int(on)))
        out += _churn(snap, "rabbitmq_")
        out += _auth(snap, "rabbitmq_")
        out += self._node_gauges("rabbitmq_", None, snap)
        n_channels = sum(len(conn["channels"]) for conn in snap.connections)
        out += [_single(_G, "rabbitmq_connections", "Connections currently open",
                        len(snap.connections)),
                _single(_G, "rabbitmq_channels", "Channels currently open", n_channels),
                _single(_G, "rabbitmq_consumers", "Consumers currently connected",
                        snap.consumers),
                _single(_G, "rabbitmq_queues", "Queues available",
                        sum(len(vh.queues) for vh in b.vhosts.values()))]
        totals = snap.totals
        for name, help_, value, by_type in GLOBAL_COUNTERS:
            fam = _C("rabbitmq_global_" + name, help_,
                     labels=["protocol", "queue_type"] if by_type else ["protocol"])
            fam.add_metric(["amqp091", CLASSIC] if by_type else ["amqp091"], value(totals))
            out.append(fam)
        out += _dead_lettered(snap)
        for name, help_, value in (("consumers", "Current number of consumers", snap.consumers),
                                   ("publishers", "Current number of publishers",
                                    snap.publishers)):
            fam = _G("rabbitmq_global_" + name, help_, labels=["protocol"])
            fam.add_metric(["amqp091"], value)
            out.append(fam)
        sizes = HistogramMetricFamily("rabbitmq_message_size_bytes",
                                      "Size of messages received from publishers",
                                      labels=["protocol"])
        running, buckets = 0, []
        for bound, n in zip((*SIZE_BOUNDS, None), snap.sizes):
            running += n
            buckets.append(("+Inf" if bound is None else _le(bound), running))
        sizes.add_metric(["amqp091"], buckets, snap.size_sum)
        out.append(sizes)
        out += self._own_families(snap)
        out += consumer_group_families(getattr(snap, "consumer_groups", []))
        led = getattr(snap, "led_partitions", None)
        if led is not None:
            out += replication_families(led)
        return out

    def _node_gauges(self, prefix: str, groups, snap) -> list:
        """The node's process gauges (RabbitMQ's node_coarse_metrics and node_metrics)."""
        b = self.broker
        cfg = b.config
        coarse = groups is None or "node_coarse_metrics" in groups
        node = groups is None or "node_metrics" in groups
        out = []
        if coarse:
            fds = _open_fds(b)
            out += [_single(_G, prefix + "process_open_fds", "Open file descriptors", fds),
                    _single(_G, prefix + "process_open_tcp_sockets", "Open TCP sockets",
                            len(snap.connections)),
                    _single(_G, prefix + "process_resident_memory_bytes", "Memory used in bytes",
                            node_rss(b)),
                    _single(_G, prefix + "disk_space_available_bytes",
                            "Disk space available in bytes",
                            shutil.disk_usage(getattr(b, "data_dir", cfg.data_dir)).free)]
        if node:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            out += [_single(_G, prefix + "process_max_fds", "Open file descriptors limit", soft),
                    _single(_G, prefix + "process_max_tcp_sockets", "Open TCP sockets limit",
                            max(soft - 256, 0)),
                    _single(_G, prefix + "resident_memory_limit_bytes",
                            "Memory high watermark in bytes",
                            int(total_memory() * cfg.memory_high_watermark)),
                    _single(_G, prefix + "disk_space_available_limit_bytes",
                            "Free disk space low watermark in bytes", cfg.disk_free_limit),
                    _single(_G, prefix + "erlang_uptime_seconds", "Node uptime",
                            round(time.monotonic() - self.started, 3))]
        return out

    def _own_families(self, snap) -> list:
        """amqpbroker_*: what RabbitMQ has no name for."""
        b = self.broker
        used = _G("amqpbroker_ring_used_bytes",
                  "Bytes waiting in the shared-memory ring from a front-end to a worker",
                  labels=["worker", "ring"])
        cap = _G("amqpbroker_ring_capacity_bytes",
                 "Size of the data area of the shared-memory ring from a front-end to a worker",
                 labels=["worker", "ring"])
        rounds = _C("amqpbroker_commit_rounds_total",
                    "Group commit rounds (write and fsync of every dirty queue) completed",
                    labels=["worker"])
        round_s = _C("amqpbroker_commit_round_seconds_total",
                     "Seconds spent in group commit rounds, from start to confirms",
                     labels=["worker"])
        fsync = HistogramMetricFamily("amqpbroker_fsync_latency_seconds",
                                      "Latency of the fsync step of a group commit round",
                                      labels=["worker"])
        fallbacks = _C("amqpbroker_group_offset_fallbacks_total",
                       "Consumer-group commits moved up to the log start because retention "
                       "removed the messages they named", labels=["worker"])
        for host in snap.hosts:
            w = str(host["worker"])
            fallbacks.add_metric([w], host.get("group_fallbacks", 0))
            for i, (n_used, n_cap) in enumerate(host["rings"]):
                used.add_metric([w, str(i)], n_used)
                cap.add_metric([w, str(i)], n_cap)
            commit = host["commit"]
            rounds.add_metric([w], commit["rounds"])
            round_s.add_metric([w], commit["round_seconds"])
            running, buckets = 0, []
            for bound, n in zip((*FSYNC_BOUNDS, None), commit["fsyncs"]):
                running += n
                buckets.append(("+Inf" if bound is None else _le(bound), running))
            fsync.add_metric([w], buckets, commit["fsync_seconds"])
        restarts = _C("amqpbroker_worker_restarts_total",
                      "Times a worker process was restarted after it died", labels=["worker"])
        for w in getattr(b, "workers", ()):
            restarts.add_metric([str(w.index)], w.restarts)
        fe_restarts = _C("amqpbroker_frontend_restarts_total",
                         "Times a front-end process was restarted after it died",
                         labels=["frontend"])
        for fe in getattr(b, "frontends", ()):
            fe_restarts.add_metric([str(fe.index)], fe.restarts)
        trims = _C("amqpbroker_heap_trims_total",
                   "Times the supervisor gave its freed heap memory back to the OS "
                   "(malloc_trim), by whether glibc released any", labels=["released"])
        trim_s = _C("amqpbroker_heap_trim_seconds_total",
                    "Seconds the supervisor spent collecting garbage and in malloc_trim")
        trimmer = getattr(b, "heap_trimmer", None)
        if trimmer is not None:
            trims.add_metric(["true"], trimmer.released)
            trims.add_metric(["false"], trimmer.trims - trimmer.released)
            trim_s.add_metric([], trimmer.seconds)
        return [used, cap, rounds, round_s, fsync, restarts, fe_restarts, fallbacks, trims,
                trim_s]

    def _cluster_families(self, groups, vhosts) -> list:
        b = self.broker
        out = []
        names = [n for n in b.vhosts if vhosts is None or n in vhosts]
        if "vhost_status" in groups:
            fam = _U("rabbitmq_cluster_vhost_status", "Whether a given vhost is running",
                     labels=["vhost"])
            for n in names:
                fam.add_metric([n], 1)
            out.append(fam)
        if "exchange_names" in groups:
            fam = _U("rabbitmq_cluster_exchange_name",
                     "Enumerates exchanges without any additional info. This value is "
                     "cluster-wide. A cheaper alternative to `exchange_bindings`",
                     labels=["vhost", "exchange", "type"])
            for n in names:
                for ex in b.vhosts[n].exchanges.values():
                    fam.add_metric([n, ex.name, ex.type], 1)
            out.append(fam)
        if "exchange_bindings" in groups:
            fam = _U("rabbitmq_cluster_exchange_bindings",
                     "Number of bindings for an exchange. This value is cluster-wide.",
                     labels=["vhost", "exchange", "type"])
            for n in names:
                for ex in b.vhosts[n].exchanges.values():
                    fam.add_metric([n, ex.name, ex.type], len(ex.bindings))
            out.append(fam)
        return out

    def _info_families(self) -> list:
        build = _U("rabbitmq_build_info", "RabbitMQ & Erlang/OTP version info",
                   labels=["rabbitmq_version", "prometheus_plugin_version",
                           "prometheus_client_version", "erlang_version",
                           "amqpbroker_version", "python_version"])
        build.add_metric([RABBITMQ_VERSION, __version__, _client_version(), "none",
                          __version__, platform.python_version()], 1)
        identity = _U("rabbitmq_identity_info", "RabbitMQ node & cluster identity info",
                      labels=["rabbitmq_node", "rabbitmq_cluster",
                              "rabbitmq_cluster_permanent_id"])
        cluster = self.broker.cluster_name
        identity.add_metric([NODE, cluster, f"amqpbroker-cluster-id-{cluster}"], 1)
        return [build, identity]


def consumer_group_families(described: list[dict]) -> list:
    """Kafka-style metrics of consumer groups, named and labelled as kafka_exporter names them
    so Kafka dashboards work (plus ``vhost``): ``kafka_consumergroup_lag``,
    ``kafka_consumergroup_current_offset`` (the committed offset: the next one the group
    reads) per (group, topic, partition), ``kafka_consumergroup_members`` per group, and
    ``kafka_topic_partition_current_offset`` / ``_oldest_offset`` (log end and start) of the
    partitions groups read. ``described``: the groups as ``/api/consumer-groups`` shows them,
    so a group with no member keeps its lag here too."""
    part_labels = ["vhost", "consumergroup", "topic", "partition"]
    lag = _G("kafka_consumergroup_lag",
             "Current Approximate Lag of a ConsumerGroup at Topic/Partition", labels=part_labels)
    current = _G("kafka_consumergroup_current_offset",
                 "Current Offset of a ConsumerGroup at Topic/Partition", labels=part_labels)
    members = _G("kafka_consumergroup_members", "Amount of members in a consumer group",
                 labels=["vhost", "consumergroup"])
    end = _G("kafka_topic_partition_current_offset",
             "Current Offset of a Broker at Topic/Partition",
             labels=["vhost", "topic", "partition"])
    start = _G("kafka_topic_partition_oldest_offset",
               "Oldest Offset of a Broker at Topic/Partition",
               labels=["vhost", "topic", "partition"])
    seen = set()
    for g in described:
        members.add_metric([g["vhost"], g["name"]], len(g["members"]))
        for p in g["partitions"]:
            labels = [g["vhost"], g["name"], p["topic"], str(p["partition"])]
            if p.get("committed_offset") is not None:
                current.add_metric(labels, p["committed_offset"])
            if p.get("lag") is not None:
                lag.add_metric(labels, p["lag"])
            where = (g["vhost"], p["topic"], str(p["partition"]))
            if where not in seen and p.get("log_end_offset") is not None:
                seen.add(where)
                end.add_metric(list(where), p["log_end_offset"])
                if p.get("log_start_offset") is not None:
                    start.add_metric(list(where), p["log_start_offset"])
    return [lag, current, members, end, start]


def replication_families(led: list[dict]) -> list:
    """A cluster's replicated partitions this node leads (``Replication.led_partitions``),
    as kafka_exporter names them (plus ``vhost``; a quorum queue is topic ``<queue>``,
    partition 0): ``kafka_topic_partition_replicas``, ``_in_sync_replica``,
    ``_under_replicated_partition`` (1 while the ISR is smaller than the replicas),
    ``_leader`` (our nodes have names, not numeric broker IDs: the value is the leader's
    index in the replica list, 0 for the preferred replica, and label ``leader`` names it)
    and ``_leader_is_preferred``; per follower (label ``replica``) ours:
    ``amqpbroker_replica_lag_messages`` (messages behind the leader's durable log end),
    ``amqpbroker_replica_last_fetch_seconds`` (since its last fetch; absent before the
    first) and ``amqpbroker_replica_in_sync``. Only the leader reports a partition, so a
    scrape of every node sees each led partition once."""
    labels = ["vhost", "topic", "partition"]
    replicas = _G("kafka_topic_partition_replicas", "Number of Replicas for this Topic/Partition",
                  labels=labels)
    in_sync = _G("kafka_topic_partition_in_sync_replica",
                 "Number of In-Sync Replicas for this Topic/Partition", labels=labels)
    under = _G("kafka_topic_partition_under_replicated_partition",
               "1 if Topic/Partition is under Replicated", labels=labels)
    leader = _G("kafka_topic_partition_leader", "Leader Broker ID of this Topic/Partition",
                labels=labels + ["leader"])
    preferred = _G("kafka_topic_partition_leader_is_preferred",
                   "1 if Topic/Partition is using the Preferred Broker", labels=labels)
    f_labels = labels + ["replica"]
    lag = _G("amqpbroker_replica_lag_messages",
             "Messages a follower replica is behind its leader's durable log end",
             labels=f_labels)
    age = _G("amqpbroker_replica_last_fetch_seconds",
             "Seconds since a follower replica last fetched from its leader", labels=f_labels)
    synced = _G("amqpbroker_replica_in_sync",
                "1 if the follower replica is in the in-sync replica set", labels=f_labels)
    for p in led:
        where = [p["vhost"], p["topic"], str(p["partition"])]
        reps = p["replicas"]
        index = reps.index(p["leader"]) if p["leader"] in reps else -1
        replicas.add_metric(where, len(reps))
        in_sync.add_metric(where, len(p["isr"]))
        under.add_metric(where, int(len(p["isr"]) < len(reps)))
        leader.add_metric(where + [p["leader"]], index)
        preferred.add_metric(where, int(index == 0))
        for r, (behind, since) in p["followers"].items():
            lag.add_metric(where + [r], behind)
            if since is not None:
                age.add_metric(where + [r], since)
            synced.add_metric(where + [r], int(r in p["isr"]))
    return [replicas, in_sync, under, leader, preferred, lag, age, synced]


# ============================================================================ helpers
def _single(kind, name: str, help_: str, value) -> object:
    fam = kind(name, help_)
    fam.add_metric([], value)
    return fam


def _objects(name, kind, help_, per_object: bool, labels, rows):
    """One family: a sample per object (``per_object``), or their sum."""
    if per_object:
        fam = kind(name, help_, labels=labels)
        for label_values, value in rows:
            fam.add_metric(label_values, value)
        return fam
    return _single(kind, name, help_, sum(value for _, value in rows))


# RabbitMQ's auth_attempt_metrics: (name, HELP, index in the [attempts, failed, succeeded]
# counts of mgmt/auth_attempts.py)
AUTH_METRICS = (("auth_attempts_total", "Total number of authentication attempts", 0),
                ("auth_attempts_succeeded_total",
                 "Total number of successful authentication attempts", 2),
                ("auth_attempts_failed_total", "Total number of failed authentication attempts",
                 1))


def _dead_lettered(snap) -> list:
    out = []
    for reason, help_ in DEAD_LETTERED:
        fam = _C(f"rabbitmq_global_messages_dead_lettered_{reason}", help_,
                 labels=["queue_type", "dead_letter_strategy"])
        for (qtype, strategy), reasons in DEAD_LETTER_SAMPLES.items():
            if reason in reasons:
                fam.add_metric([f"rabbit_{qtype}_queue", strategy],
                               snap.dead_lettered.get(f"{reason} {qtype} {strategy}", 0))
        out.append(fam)
    return out


def _auth(snap, prefix: str) -> list:
    """Logins by protocol since the start (the management API's reset does not take them
    back: a counter only grows)."""
    return [_objects(prefix + name, _C, help_, True, ["protocol"],
                     (([protocol], counts[i]) for protocol, counts in sorted(snap.auth.items())))
            for name, help_, i in AUTH_METRICS]


def _churn(snap, prefix: str) -> list:
    return [_single(_C, prefix + name, help_, snap.churn.get(key, 0))
            for name, help_, key in CHURN_METRICS]


def _le(bound) -> str:
    return prometheus_client.utils.floatToGoString(bound)


def _open_fds(broker) -> int:
    total = 0
    for pid in ["self", *broker.child_pids()]:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


@functools.lru_cache(maxsize=1)
def _client_version() -> str:
    """prometheus-client's version (read once: importlib.metadata scans every installed
    distribution, ~30 ms a scrape)."""
    try:
        from importlib.metadata import version
        return version("prometheus-client")
    except Exception:
        return "unknown"


class _Families:
    """What ``prometheus_client``'s encoders take: something with ``collect()``."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def _respond(request: web.Request, families) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(_Families(families))
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp
