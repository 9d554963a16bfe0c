"""``/api/overview``, ``/api/nodes``, ``/api/whoami``: the node and who is asking."""
from __future__ import annotations

import os
import resource
import time

from .. import __version__
from ..frontend.alarms import node_rss, rss_bytes, total_memory
from ..frontend.exchange import TYPES

# what /api/overview says of the types no AMQP specification has (RabbitMQ 3.10.8 with the
# consistent-hash plugin says this of it; the de-duplication plugin's description; ours)
EXCHANGE_TYPE_DESCRIPTIONS = {
    "x-consistent-hash": "Consistent Hashing Exchange",
    "x-message-deduplication": "Message Deduplication Exchange.",
    "x-partitioned": "Topic of partitions (amqpbroker)",
    "x-delayed-message": "Delayed Message Exchange.",
    "x-local-random": "Picks one random local binding (queue) to route via (to).",
    "x-random": "Randomly picks a binding (queue) to route via (to).",
    "x-recent-history": "Recent History Exchange.",
    "x-modulus-hash": "Modulus Hashing Exchange",
    "x-federation-upstream": "Federation upstream helper exchange",
}
from ..frontend.session import NODE
from ..stats.collector import add_message_stats
from . import access
from .api import Route, not_found

STARTED = time.monotonic()      # the management server starts with the broker
VERSION = "3.13.0"          # as the definitions export says (supervisor/definitions.py)


async def overview(call):
    """Node-wide totals for monitors; for other users, totals over their own vhosts and
    connections, without the node's name (as RabbitMQ's ``rabbit_mgmt_wm_overview``)."""
    b, user = call.broker, call.user
    monitor = access.is_monitor(user)
    names = list(b.vhosts) if monitor else access.login_vhosts(b, user)
    queues = [q for n in names for q in b.vhosts[n].queues.values()]
    stats = (await b.queue_stats(queues)).values()
    conns = await b.connection_list(call.amqp.sessions)
    if not monitor:
        conns = [c for c in conns if c.get("user") == user.name]
    ready, unacked = sum(s[0] for s in stats), sum(s[2] for s in stats)
    out = {"management_version": VERSION, "rabbitmq_version": VERSION,
           "product_name": "amqpbroker", "product_version": __version__,
           "cluster_name": b.cluster_name,
           "rates_mode": "basic", "disable_stats": False, "enable_queue_totals": False,
           "exchange_types": [{"name": t, "description": EXCHANGE_TYPE_DESCRIPTIONS.get(
                               t, f"AMQP {t} exchange, as per the AMQP specification"),
                               "enabled": True} for t in TYPES],
           "object_totals": {"connections": len(conns),
                             "channels": sum(c["channels"] for c in conns),
                             "queues": len(queues),
                             "exchanges": sum(len(b.vhosts[n].exchanges) for n in names),
                             "consumers": sum(s[1] for s in stats)},
           "queue_totals": {"messages": ready + unacked, "messages_ready": ready,
                            "messages_unacknowledged": unacked}}
    if monitor:
        out["node"] = node_name(b)
        out["listeners"] = [{"node": node_name(b), **entry} for entry in b.listeners]
        out["contexts"] = [{"node": node_name(b), "description": "RabbitMQ Management", "path": "/",
                            "port": str(entry["port"])}
                           for entry in b.listeners if entry["protocol"].startswith("http")]
        add_message_stats(out, b, "overview")     # node-wide, as RabbitMQ's for monitors
    return out


async def auth_settings(call):
    """How the management UI logs in, asked before a login: basic auth here, no OAuth 2
    (RabbitMQ 3.13's key, and 3.10's UAA keys for its older UI)."""
    return {"oauth_enabled": False, "enable_uaa": False, "uaa_client_id": "",
            "uaa_location": ""}


def node_name(broker) -> str:
    """This node's name: ``amqpbroker@localhost`` alone, ``amqpbroker@<node>`` in a cluster."""
    return broker.cluster.display_name if broker.cluster is not None else NODE


async def nodes(call):
    b = call.broker
    local = await _node(call)
    if b.cluster is None:
        return [local]
    # a cluster: every node etcd knows (cluster/node.py); this one with its own figures too
    return [{**n, **local} if n["node_name"] == b.cluster.name else n
            for n in b.cluster.nodes()]


async def node(call):
    if call.params["name"] != node_name(call.broker):
        raise not_found()
    return await _node(call)


async def _node(call) -> dict:
    b = call.broker
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = 0
    cfg = b.config
    st = os.statvfs(b.data_dir)
    return {
        "name": node_name(b), "type": "disc", "running": True, "being_drained": False,
        "os_pid": str(os.getpid()), "processors": os.cpu_count(),
        "rates_mode": "basic", "net_ticktime": 60, "run_queue": 0,
        "partitions": [], "cluster_links": [],
        "exchange_types": [{"name": t, "enabled": True} for t in TYPES],
        "auth_mechanisms": [{"name": m, "enabled": True} for m in ("PLAIN", "AMQPLAIN")],
        "fd_total": soft, "fd_used": fds,
        # RabbitMQ reserves part of the descriptors for files; we need few besides sockets
        "sockets_total": max(soft - 256, 0),
        "sockets_used": len(await b.connection_list(call.amqp.sessions)),
        "mem_used": node_rss(b), "mem_limit": int(total_memory() * cfg.memory_high_watermark),
        "mem_alarm": "memory" in b.alarms.active,
        "disk_free": st.f_bavail * st.f_frsize, "disk_free_limit": cfg.disk_free_limit,
        "disk_free_alarm": any(k.startswith("disk") for k in b.alarms.active),
        "proc_used": 1 + len(b.workers),
        "uptime": int((time.monotonic() - STARTED) * 1000),
        # ours: the partition worker processes (see amqpbroker/supervisor)
        "workers": [{"index": w.index, "pid": w.pid, "restarts": w.restarts,
                     "running": w.client.link is not None} for w in b.workers],
        "frontends": [{"index": f.index, "pid": f.pid, "restarts": f.restarts,
                       "running": f.running}
                      for f in b.frontends]}


# RabbitMQ's memory breakdown categories (rabbit_vm:memory/0), in its order; this broker
# fills those it has a measure for (``node_memory``) and puts the rest in other_system
MEMORY_CATEGORIES = (
    "connection_readers", "connection_writers", "connection_channels", "connection_other",
    "queue_procs", "queue_slave_procs", "quorum_queue_procs", "quorum_queue_dlx_procs",
    "stream_queue_procs", "stream_queue_replica_reader_procs",
    "stream_queue_coordinator_procs", "plugins", "other_proc", "metrics", "mgmt_db",
    "mnesia", "quorum_ets", "other_ets", "binary", "msg_index", "code", "atom",
    "other_system", "allocated_unused", "reserved_unallocated")
QUEUE_CATEGORY = {"classic": "queue_procs", "quorum": "quorum_queue_procs",
                  "stream": "stream_queue_procs"}


async def node_memory(call):
    """``/api/nodes/{name}/memory``: the node's resident memory (every process, RabbitMQ's
    ``rss`` strategy) in RabbitMQ's categories: each queue type's queues as their workers
    estimate them (``worker/memory.py``), the front-end processes (they hold the
    connections) as ``connection_other``, the rest as ``other_system``."""
    b = call.broker
    if call.params["name"] != node_name(b):
        raise not_found()
    out = dict.fromkeys(MEMORY_CATEGORIES, 0)
    local = [q for vh in b.vhosts.values() for q in vh.queues.values() if not q.client.remote]
    for q, stats in (await b.queue_stats(local)).items():
        out[QUEUE_CATEGORY.get(q.queue_type, "queue_procs")] += stats[4]
    out["connection_other"] = sum(rss_bytes(f.pid) for f in b.frontends if f.pid)
    rss = node_rss(b)
    known = sum(out.values())
    out["other_system"] = max(rss - known, 0)
    out.update(strategy="rss", total={"erlang": max(rss, known), "rss": rss,
                                      "allocated": rss})
    if call.params.get("relative") is not None:
        whole = max(rss, known) or 1
        return {"memory": {"total": 100, **{k: round(out[k] * 100 / whole)
                                            for k in MEMORY_CATEGORIES}}}
    return {"memory": out}


async def whoami(call):
    return {"name": call.user.name, "tags": call.user.tags}


async def extensions(call):
    """The management UI's plugins: none."""
    return []


ROUTES = [
    Route("GET", "/api/overview", overview, access.MANAGEMENT),
    Route("GET", "/api/nodes", nodes, access.MONITOR),
    Route("GET", "/api/nodes/{name}", node, access.MONITOR),
    Route("GET", "/api/nodes/{name}/memory", node_memory, access.MONITOR),
    Route("GET", "/api/nodes/{name}/memory/{relative:relative}", node_memory, access.MONITOR),
    Route("GET", "/api/extensions", extensions, access.MANAGEMENT),
    Route("GET", "/api/whoami", whoami, access.MANAGEMENT),
    Route("GET", "/api/auth", auth_settings, access.MANAGEMENT, public=True),
]
