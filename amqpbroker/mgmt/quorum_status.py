"""``/api/queues/quorum/{vhost}/{queue}/status``: a quorum queue's members, as RabbitMQ 3.13
reports its Raft members (``rabbit_quorum_queue:status/2``), with the same keys, filled from
this broker's replication (Kafka's rules, ``cluster/replication.py``): "Raft State" is the
replica's role (leader, follower), "Membership" ``voter`` while it is in the in-sync
replicas, ``promotable`` while it catches up; the indexes are log offsets — "Last Log
Index" a replica's log end, "Last Written" what the leader has fsynced, "Commit Index" and
"Last Applied" the high watermark (what consumers see), "Snapshot Index" the log start —
and "Term" the leader epoch. A queue on one node (no cluster, or not replicated) is its own
leader. In a cluster only the leader knows its followers: another node answers with the
leader's answer. A classic queue or a stream is 503 with RabbitMQ's reason.

Who may: any management user of the vhost (RabbitMQ's ``is_authorized``).
"""
from __future__ import annotations

from urllib.parse import quote

from ..cluster.node import display_name
from . import access
from .api import Route, json_response, not_found
from .overview import node_name
from .partitions import describe_partitions
from .peers import ask_node

MACHINE_VERSION = 3         # RabbitMQ 3.13's quorum queue state machine


def _member(node: str, state: str, membership: str, last: int, written: int, commit: int,
            start: int, term: int) -> dict:
    return {"Node Name": node, "Raft State": state, "Membership": membership,
            "Last Log Index": last, "Last Written": written, "Last Applied": commit,
            "Commit Index": commit, "Snapshot Index": start, "Term": term,
            "Machine Version": MACHINE_VERSION}


async def quorum_status(call):
    b, vhost, name = call.broker, call.params["vhost"], call.params["queue"]
    vh = b.vhosts.get(vhost)
    q = vh.queues.get(name) if vh is not None else None
    if q is None:
        raise not_found()
    if q.queue_type != "quorum":
        reason = "classic_queue_not_supported" if q.queue_type == "classic" \
            else "not_quorum_queue"
        return json_response({"status": "failed", "reason": reason}, 503)
    [part] = await describe_partitions(b, [q])
    replica = part.get("replica")
    if replica is None:                 # its own leader, on this node
        end, durable = part["log_end_offset"] or 0, part["durable_offset"] or 0
        return [_member(node_name(b), "leader", "voter", end, durable, durable,
                        part["log_start_offset"] or 0, 0)]
    if replica["role"] != "leader":
        return await ask_node(call, replica["leader"], "GET",
                              f"/api/queues/quorum/{quote(vhost, safe='')}/"
                              f"{quote(name, safe='')}/status")
    hw, epoch, start = replica["high_watermark"], replica["leader_epoch"], \
        replica["log_start_offset"]
    out = [_member(display_name(replica["node"]), "leader", "voter",
                   replica["log_end_offset"], part["durable_offset"] or 0, hw, start, epoch)]
    for node, f in sorted(replica["followers"].items()):
        leo = f["log_end_offset"] or 0
        out.append(_member(display_name(node), "follower",
                           "voter" if f["in_sync"] else "promotable", leo, leo, hw, start,
                           epoch))
    return sorted(out, key=lambda m: m["Node Name"])


ROUTES = [
    Route("GET", "/api/queues/quorum/{vhost}/{queue}/status", quorum_status, access.VHOST,
          sort=()),
]
