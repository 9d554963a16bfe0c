"""RabbitMQ 3.13's quorum queue replica operations over HTTP (``rabbitmq-queues add_member``,
``delete_member``, ``grow``, ``shrink``, ``rebalance``), each a reassignment the cluster's
controller carries out (``cluster/placement.py``, ``mgmt/reassignments.py``):

* ``POST /api/queues/quorum/{vhost}/{queue}/replicas/add`` ``{"node": "amqpbroker@n4"}``:
  the queue gets a replica on that node (204; already one there: nothing to do);
* ``DELETE /api/queues/quorum/{vhost}/{queue}/replicas/delete`` ``{"node": ...}``: its
  replica there goes (202, as RabbitMQ: it happens after the answer);
* ``POST /api/queues/quorum/replicas/on/{node}/grow`` ``{"vhost_pattern": ".*",
  "queue_pattern": ".*", "strategy": "all" | "even"}``: every quorum queue whose vhost and
  name match (regular expressions, searched as RabbitMQ's ``re:run``) and that has no replica
  there gets one (``even``: only those with an even number of replicas); 204;
* ``DELETE /api/queues/quorum/replicas/on/{node}/shrink``: every quorum queue loses its
  replica on that node, unless it is its last; 202;
* ``POST /api/rebalance/queues``: the quorum queues' and streams' leaders are spread over
  the nodes — each queue's preferred leader becomes the in-sync replica that leads the
  fewest so far (its replicas stay), and the controller moves the leaderships; 204.

Administrators only, as RabbitMQ's. RabbitMQ's refusals: a queue that is not there 404, a
node that is not a running member 404 for grow; what the operation itself refuses (not a
quorum queue, not a cluster member, its last replica) 503 with the reason. On one node
there is nothing to move: adding or deleting a member is 503 (RabbitMQ: the node is not a
cluster member), growing onto this node, shrinking and rebalancing change nothing.
"""
from __future__ import annotations

import logging
import re

from ..cluster.etcd import EtcdError
from . import access
from .api import Route, bad_request, json_response, no_content, not_found
from .overview import node_name
from .reassignments import _node_name, _unavailable
from .validation import OPTIONAL, Field, Obj, string

log = logging.getLogger("amqpbroker.mgmt")

# "membership" (RabbitMQ 3.13's promotable / voter) is taken and has no meaning here: a new
# replica is in-sync once it has caught up, as Kafka's
MEMBER = Obj(node=Field(string), membership=Field(string, OPTIONAL))
GROW = Obj(vhost_pattern=Field(string), queue_pattern=Field(string), strategy=Field(string),
           membership=Field(string, OPTIONAL))
STRATEGIES = ("all", "even")
REBALANCED_TYPES = ("quorum", "stream")


class _Unable(Exception):
    """What the operation refuses: RabbitMQ's ``service_unavailable`` answer, 503
    ``{"status": "failed", "reason": ...}`` (as ``/status``'s, quorum_status.py)."""


def _answer_refusals(handler):
    async def run(call):
        try:
            return await handler(call)
        except _Unable as err:
            return json_response({"status": "failed", "reason": str(err)}, 503)
    run.__name__ = handler.__name__
    return run


def _cluster(call):
    cluster = call.broker.cluster
    if cluster is None or cluster.placement is None:
        raise _Unable("this node is not in a cluster (amqpbroker serve --cluster): no other "
                      "node to place a replica on")
    return cluster


def _quorum_queue(call):
    vh = call.broker.vhosts.get(call.params["vhost"])
    q = vh.queues.get(call.params["queue"]) if vh is not None else None
    if q is None:
        raise not_found()
    if q.queue_type != "quorum":
        raise _Unable(f"{q.queue_type} queue '{q.name}' in vhost '{vh.name}' has no "
                      f"replicas to add or delete: only quorum queues have")
    return q


def _replicas(cluster, q) -> list[str]:
    p = cluster.placement.of_queue(q.vhost.name, q.name)
    if p is None:
        raise _Unable(f"queue '{q.name}' in vhost '{q.vhost.name}' is not placed in the "
                      f"cluster yet")
    return list(p["replicas"])


async def _reassign(cluster, q, replicas: list[str]) -> None:
    try:
        await cluster.placement.request_reassign(q.vhost.name, q.name, replicas)
    except ValueError as err:
        raise _Unable(str(err)) from None
    except LookupError:
        raise _Unable(f"queue '{q.name}' in vhost '{q.vhost.name}' is not placed in the "
                      f"cluster") from None
    except EtcdError as err:
        raise _unavailable(err) from None


async def add_member(call):
    q = _quorum_queue(call)
    cluster = _cluster(call)
    node = _node_name(call.body["node"])
    replicas = _replicas(cluster, q)
    if node not in replicas:
        await _reassign(cluster, q, [*replicas, node])
        log.info("queue '%s' in vhost '%s': a replica on node %s asked for by user '%s'",
                 q.name, q.vhost.name, node, call.user.name)
    return no_content()


async def delete_member(call):
    q = _quorum_queue(call)
    cluster = _cluster(call)
    node = _node_name(call.body["node"])
    replicas = _replicas(cluster, q)
    if node in replicas:
        if len(replicas) == 1:
            raise _Unable(f"queue '{q.name}' in vhost '{q.vhost.name}': its replica on "
                          f"{node} is its last")
        await _reassign(cluster, q, [r for r in replicas if r != node])
        log.info("queue '%s' in vhost '%s': its replica on node %s removed by user '%s'",
                 q.name, q.vhost.name, node, call.user.name)
    return json_response(None, status=202)


def _search(pattern: str, what: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise bad_request(f"{what}: not a regular expression: {err}") from None


def _quorum_queues(broker):
    for vh in broker.vhosts.values():
        for q in vh.queues.values():
            if q.queue_type == "quorum":
                yield q


async def grow(call):
    cluster = call.broker.cluster
    node = _node_name(call.params["node"])
    if cluster is None or cluster.placement is None:
        # one node: its queues all have their replica on it already (RabbitMQ's no-op)
        if call.params["node"] != node_name(call.broker):
            raise not_found()
        return no_content()
    if node not in cluster.membership.nodes():
        raise not_found()
    body = call.body
    if body["strategy"] not in STRATEGIES:
        raise bad_request(f"strategy: one of {', '.join(STRATEGIES)} expected")
    vhosts = _search(body["vhost_pattern"], "vhost_pattern")
    queues = _search(body["queue_pattern"], "queue_pattern")
    for q in list(_quorum_queues(call.broker)):
        if not (vhosts.search(q.vhost.name) and queues.search(q.name)):
            continue
        p = cluster.placement.of_queue(q.vhost.name, q.name)
        if p is None or node in p["replicas"]:
            continue
        if body["strategy"] == "even" and len(p["replicas"]) % 2:
            continue
        await _reassign(cluster, q, [*p["replicas"], node])
    log.info("node %s: a replica of each matching quorum queue asked for by user '%s'",
             node, call.user.name)
    return no_content()


async def shrink(call):
    cluster = call.broker.cluster
    if cluster is None or cluster.placement is None:
        return json_response(None, status=202)      # one node: no queue loses its last
    node = _node_name(call.params["node"])
    for q in list(_quorum_queues(call.broker)):
        p = cluster.placement.of_queue(q.vhost.name, q.name)
        if p is None or node not in p["replicas"] or len(p["replicas"]) == 1:
            continue
        await _reassign(cluster, q, [r for r in p["replicas"] if r != node])
    log.info("node %s: the quorum queues' replicas there removed by user '%s'", node,
             call.user.name)
    return json_response(None, status=202)


async def rebalance(call):
    log.info("User '%s' has initiated a queue rebalance", call.user.name)    # RabbitMQ's
    cluster = call.broker.cluster
    if cluster is None or cluster.placement is None:
        return no_content()                 # one node leads them all: nothing to spread
    alive = set(cluster.membership.nodes())
    leads = {n: 0 for n in alive}
    queues = sorted((q for vh in call.broker.vhosts.values() for q in vh.queues.values()
                     if q.queue_type in REBALANCED_TYPES),
                    key=lambda q: (q.vhost.name, q.name))
    for q in queues:
        p = cluster.placement.of_queue(q.vhost.name, q.name)
        if p is None:
            continue
        able = [r for r in p["replicas"] if r in alive and r in p["isr"]]
        if not able:
            continue
        best = min(able, key=lambda r: (leads[r], r != p["replicas"][0]))
        leads[best] += 1
        if best != p["replicas"][0]:
            await _reassign(cluster, q, [best, *(r for r in p["replicas"] if r != best)])
    return no_content()


ROUTES = [
    Route("POST", "/api/queues/quorum/{vhost}/{queue}/replicas/add",
          _answer_refusals(add_member), access.ADMINISTRATOR, body=MEMBER),
    Route("DELETE", "/api/queues/quorum/{vhost}/{queue}/replicas/delete",
          _answer_refusals(delete_member), access.ADMINISTRATOR, body=MEMBER),
    Route("POST", "/api/queues/quorum/replicas/on/{node}/grow", _answer_refusals(grow),
          access.ADMINISTRATOR, body=GROW),
    Route("DELETE", "/api/queues/quorum/replicas/on/{node}/shrink", _answer_refusals(shrink),
          access.ADMINISTRATOR),
    Route("POST", "/api/rebalance/queues", rebalance, access.ADMINISTRATOR),
]
