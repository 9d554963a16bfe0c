"""``/api/overview``, ``/api/nodes``, ``/api/whoami``: the node and who is asking."""
from __future__ import annotations

import os
import resource

from ..frontend.alarms import node_rss, total_memory
from . import access
from .api import Route

NODE = "amqpbroker@localhost"


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
    out = {"management_version": "3.13.0", "rabbitmq_version": "3.13.0",
           "product_name": "amqpbroker", "product_version": "0.1.0",
           "cluster_name": call.amqp.server_properties["cluster_name"],
           "object_totals": {"connections": len(conns), "queues": len(queues),
                             "exchanges": sum(len(b.vhosts[n].exchanges) for n in names),
                             "consumers": sum(s[1] for s in stats)},
           "queue_totals": {"messages_ready": sum(s[0] for s in stats),
                            "messages_unacknowledged": sum(s[2] for s in stats)}}
    if monitor:
        out["node"] = node_name(b)
    return out


def node_name(broker) -> str:
    """This node's name: ``amqpbroker@localhost`` alone, ``amqpbroker@<node>`` in a cluster."""
    return broker.cluster.display_name if broker.cluster is not None else NODE


async def nodes(call):
    b = call.broker
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = 0
    cfg = b.config
    st = os.statvfs(b.data_dir)
    local = {
        "name": node_name(b), "type": "disc", "running": True,
        "fd_total": soft, "fd_used": fds,
        # RabbitMQ reserves part of the descriptors for files; we need few besides sockets
        "sockets_total": max(soft - 256, 0),
        "sockets_used": len(await b.connection_list(call.amqp.sessions)),
        "mem_used": node_rss(b), "mem_limit": int(total_memory() * cfg.memory_high_watermark),
        "mem_alarm": "memory" in b.alarms.active,
        "disk_free": st.f_bavail * st.f_frsize, "disk_free_limit": cfg.disk_free_limit,
        "disk_free_alarm": any(k.startswith("disk") for k in b.alarms.active),
        "proc_used": 1 + len(b.workers),
        "uptime": int(b.loop.time() * 1000),
        # ours: the partition worker processes (see amqpbroker/supervisor)
        "workers": [{"index": w.index, "pid": w.pid, "restarts": w.restarts,
                     "running": w.client.link is not None} for w in b.workers],
        "frontends": [{"index": f.index, "pid": f.pid, "restarts": f.restarts,
                       "running": f.running}
                      for f in b.frontends]}
    if b.cluster is None:
        return [local]
    # a cluster: every node etcd knows (cluster/node.py); this one with its own figures too
    return [{**n, **local} if n["node_name"] == b.cluster.name else n
            for n in b.cluster.nodes()]


async def whoami(call):
    return {"name": call.user.name, "tags": call.user.tags}


ROUTES = [
    Route("GET", "/api/overview", overview, access.MANAGEMENT),
    Route("GET", "/api/nodes", nodes, access.MONITOR),
    Route("GET", "/api/whoami", whoami, access.MANAGEMENT),
]
