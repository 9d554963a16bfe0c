"""Statistics: counters where events happen, collected on demand, turned into rates by sampling.

Theory of operation
-------------------
RabbitMQ's management plugin keeps a statistics database that every channel and queue process
reports to; it is a known cost on the message path. Here nothing is reported per message:

* **Counters** (``counters.py``) are plain integers on the object the event happens to,
  counted per batch where the hot path runs (a read's publishes, a dispatch run's deliveries,
  a multiple ack) or derived from a number the path keeps anyway (delivery tags, a store's
  offsets), so that statistics on costs within 5 % of off (issue 11; ``ChannelCounters`` and
  ``QueueCounters`` say how): a front-end's channels count publishes, routing outcomes,
  confirms, deliveries, gets, redeliveries and acks; its sessions count bytes in and out; the
  front-end (``broker.stats``) counts connections and channels opened and closed, what each
  exchange took in and let out, and the sizes of published messages (RabbitMQ's
  ``message_size_bytes`` histogram). A worker's queues count publishes, deliveries, gets, acks,
  redeliveries and published bytes; its committer times commit rounds and fsyncs. A closed
  channel's counts are added to its front-end's totals, so node totals never go back while the
  process lives.
* **Collection** (``collector.py``, the supervisor) asks every front-end (``FrontendCounters``
  over the control channel, or a direct call when the supervisor serves AMQP itself) and every
  partition host (``HostCounters`` over the partition link) for a snapshot, all at once, each
  with a deadline: a restarting child is simply missing from that snapshot.
* **Rates** come from sampling: every ``--collect-statistics-interval`` ms (5000, RabbitMQ's
  ``collect_statistics_interval``) the supervisor takes a snapshot and keeps the one before;
  a rate is the difference over the time between them. The management API's ``message_stats``
  (counts and ``*_details: {"rate": ...}``) are read from the last sample, as RabbitMQ's are;
  Prometheus scrapes take a fresh snapshot (Prometheus computes its own rates).

``--collect-statistics none`` (RabbitMQ's ``collect_statistics = none``) gives every object a
counter that counts nothing (the same calls, doing nothing) and no sampling; gauges (queue
depths, connections) are still served.
"""
from .counters import (SIZE_BOUNDS, ChannelCounters, CommitTimings, ConnectionCounters,
                       FrontendStats, QueueCounters, host_snapshot, queue_counters)

__all__ = ["SIZE_BOUNDS", "ChannelCounters", "CommitTimings", "ConnectionCounters",
           "FrontendStats", "QueueCounters", "host_snapshot", "queue_counters"]
