"""``/api/partitions``: every queue's log as the broker stores it (ours). Each queue is a
partition (README, "Storage and durability"); a topic's partitions name their topic.

* ``GET /api/partitions[/{vhost}]``, ``GET /api/partitions/{vhost}/{queue}``::

      {"vhost", "queue", "type", "topic", "partition", "worker", "log_start_offset",
       "log_end_offset", "durable_offset", "bytes",
       "segments": [{"base_offset", "next_offset", "bytes", "settled"}]}

  In a cluster, ``replica``: this node's replica of a replicated queue (null otherwise;
  ``cluster/replication.py``), ``{"node", "role", "leader", "leader_epoch",
  "log_start_offset", "log_end_offset", "high_watermark", "high_watermark_checkpoint"}``
  (the last: the HW its checkpoint file holds, cluster/checkpoint.py), the leader's with ``isr``,
  ``min_isr`` and ``followers`` ({node: {"log_end_offset", "lag", "in_sync",
  "last_fetch_ms_ago"}}), a follower's with ``diverged``; the single-queue GET adds
  ``crc32c``, over the log's batches from its start to the high watermark (replicas with
  the same log start compare). The other fields describe the leader's log (forwarded).
  ``topic`` / ``partition`` are the x-partitioned exchange and the partition number, or null
  for a queue of its own; ``durable_offset``: what is fsynced (readers see no further);
  ``settled``: a classic or quorum queue's messages of that segment that are acked (a
  segment goes once all are). The worker is asked once per list (one request per worker).

Who may see: as the queue endpoints (a management user sees the vhosts it may use).
"""
from __future__ import annotations

import inspect

from .. import contract as c
from .. import errors
from ..frontend.exchange import PartitionedExchange
from ..supervisor.topics import partition_name
from . import access
from .api import Route, not_found


def _topics_of(vh) -> dict:
    """{queue name: (topic, partition)} of a vhost's x-partitioned exchanges."""
    out = {}
    for ex in vh.exchanges.values():
        if isinstance(ex, PartitionedExchange):
            for i in range(ex.partitions):
                out[partition_name(ex.name, i)] = (ex.name, i)
    return out


async def describe_partitions(broker, refs, checksum: bool = False) -> list[dict]:
    by_client: dict = {}
    for ref in refs:
        by_client.setdefault(ref.client, []).append(ref)
    details = {}
    for client, group in by_client.items():
        try:
            details.update({(client, qid): d for qid, d in
                            (await client.request(c.Partitions,
                                                  qids=[r.qid for r in group])).items()})
        except errors.AMQPError:
            pass                        # the worker is restarting: its queues show no detail
    topics = {}
    out = []
    replication = getattr(getattr(broker, "cluster", None), "replication", None)
    for ref in refs:
        vh = ref.vhost
        if vh.name not in topics:
            topics[vh.name] = _topics_of(vh)
        topic, partition = topics[vh.name].get(ref.name, (None, None))
        d = details.get((ref.client, ref.qid), {})
        out.append({"vhost": vh.name, "queue": ref.name, "type": ref.args.queue_type,
                    "topic": topic, "partition": partition, "worker": ref.client.index,
                    "state": "running" if d else "down",
                    "log_start_offset": d.get("log_start_offset"),
                    "log_end_offset": d.get("log_end_offset"),
                    "durable_offset": d.get("durable_offset"), "bytes": d.get("bytes"),
                    "segments": d.get("segments", [])})
        if replication is not None:     # a cluster: this node's replica (replication.py)
            replica = replication.describe(vh.name, ref.name, checksum)
            if inspect.isawaitable(replica):    # asked of the worker hosting the queue
                replica = await replica
            out[-1]["replica"] = replica
    return out


async def list_partitions(call):
    b = call.broker
    refs = [q for n in access.listed_vhosts(call) for q in b.vhosts[n].queues.values()]
    return await describe_partitions(b, refs)


async def get_partition(call):
    vh = call.broker.vhosts.get(call.params["vhost"])
    ref = vh.queues.get(call.params["name"]) if vh else None
    if ref is None:
        raise not_found()
    return (await describe_partitions(call.broker, [ref], checksum=True))[0]


ROUTES = [
    Route("GET", "/api/partitions", list_partitions, access.MANAGEMENT),
    Route("GET", "/api/partitions/{vhost}", list_partitions, access.VHOST),
    Route("GET", "/api/partitions/{vhost}/{name}", get_partition, access.VHOST),
]
