"""The controller's operator moves (ours; docs/CLUSTER.md section 2, administrators only):

* ``PUT /api/reassignments/{vhost}/{queue}`` ``{"replicas": ["n1", "n2", "n4"]}``: move the
  queue's replicas (a topic's: every partition's) to these nodes, the first the preferred
  leader; 202, the controller does it (``cluster/placement.py``). ``ctl reassign``.
* ``GET /api/reassignments``: the reassignments in progress (target and current replicas).
* ``PUT /api/nodes/{name}/drain``: the node drains: every replica moves off it, new queues
  are placed elsewhere (``ctl drain``); ``DELETE`` ends that (``ctl revive``; nothing moves
  back by itself).

RabbitMQ's ``rabbitmq-queues add_member`` / ``delete_member`` / ``grow`` / ``shrink``
are each a reassignment (the replica list after the change), over HTTP as RabbitMQ 3.13's
endpoints in quorum_replicas.py; ``rabbitmq-upgrade drain`` / ``revive`` are
``ctl``'s names for these (RabbitMQ's drain moves leaderships only, for a restart; ours
moves the replicas too, Kafka's decommission). Node names may be given as shown in ``/api/nodes`` (``amqpbroker@n1``) or
bare (``n1``). A single node answers 400: there is nothing to move between.
"""
from __future__ import annotations

from ..cluster.etcd import EtcdError
from . import access
from .api import ApiError, Route, bad_request, json_response, no_content
from .validation import Field, Obj, list_of, string

REASSIGNMENT = Obj(replicas=Field(list_of(string)))


def _node_name(name: str) -> str:
    return name[len("amqpbroker@"):] if name.startswith("amqpbroker@") else name


def _placement(call):
    cluster = call.broker.cluster
    if cluster is None or cluster.placement is None:
        raise bad_request("this node is not in a cluster (amqpbroker serve --cluster)")
    return cluster.placement


async def reassign(call):
    placement = _placement(call)
    vhost, queue = call.params["vhost"], call.params["name"]
    if vhost not in call.broker.vhosts:
        raise ApiError(404, "vhost_not_found", "not_found")
    replicas = [_node_name(n) for n in call.body["replicas"]]
    try:
        partitions = await placement.request_reassign(vhost, queue, replicas)
    except ValueError as err:
        raise bad_request(str(err)) from None
    except LookupError:
        raise ApiError(404, f"no queue '{queue}' in vhost '{vhost}' placed in the cluster",
                       "not_found") from None
    except EtcdError as err:
        raise _unavailable(err) from None
    return json_response({"vhost": vhost, "queue": queue, "partitions": partitions,
                          "replicas": replicas}, status=202)


async def reassignments(call):
    return _placement(call).reassignments()


async def drain(call):
    placement = _placement(call)
    name = _node_name(call.params["name"])
    known = set(call.broker.cluster.membership.nodes()) | {
        r for p in placement.partitions().values() for r in p["replicas"]}
    if name not in known and call.method == "PUT":
        raise ApiError(404, f"no node '{name}' in the cluster", "not_found")
    try:
        await placement.set_draining(name, call.method == "PUT")
    except EtcdError as err:
        raise _unavailable(err) from None
    return no_content()


def _unavailable(err) -> ApiError:
    return ApiError(503, f"the metadata store (etcd) did not answer: {err}",
                    "service_unavailable")


ROUTES = [
    Route("GET", "/api/reassignments", reassignments, access.ADMINISTRATOR,
          sort=("vhost", "queue", "partition")),
    Route("PUT", "/api/reassignments/{vhost}/{name}", reassign, access.ADMINISTRATOR,
          body=REASSIGNMENT),
    Route("PUT", "/api/nodes/{name}/drain", drain, access.ADMINISTRATOR),
    Route("DELETE", "/api/nodes/{name}/drain", drain, access.ADMINISTRATOR),
]
