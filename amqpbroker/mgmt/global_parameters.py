"""``/api/cluster-name`` and ``/api/global-parameters``: RabbitMQ's global runtime
parameters. ``cluster_name`` names the broker in connection.start's server properties (for
connections opened after the answer: the answer waits until every front-end process has
it; a federation link reads it there to know which broker a message came from), ``/api/overview`` and the metrics'
``rabbitmq_identity_info``; until set it is ``amqpbroker@<host>``. Any other name holds any
JSON value, kept as RabbitMQ keeps it (in the definitions' ``global_parameters``) for tools
that store their own; this broker reads none of them.

Who may (RabbitMQ 3.10's rules): any management user reads the cluster name; policymakers
and administrators list the global parameters; administrators set them. Stored with the
definitions (journal, restarts) and, in a cluster, in etcd: every node has the same ones.
"""
from __future__ import annotations

from ..supervisor.journal import global_parameter_items
from . import access
from .api import Route, bad_request, created, no_content, not_found
from .validation import CLUSTER_NAME, PARAMETER, Invalid
from .validation import name as non_empty_string

CLUSTER = "cluster_name"


def _items(broker) -> dict:
    """The parameters, ``cluster_name`` always among them (its default until set)."""
    return {CLUSTER: broker.cluster_name, **{k: v for k, v in broker.global_parameters.items()
                                             if k != CLUSTER}}


async def get_cluster_name(call):
    return {"name": call.broker.cluster_name}


async def put_cluster_name(call):
    call.broker.set_global_parameter(CLUSTER, call.body["name"])
    await call.broker.sync_frontends()
    return no_content()


async def list_global_parameters(call):
    return global_parameter_items(_items(call.broker))


async def get_global_parameter(call):
    items = _items(call.broker)
    if call.params["name"] not in items:
        raise not_found()
    return {"name": call.params["name"], "value": items[call.params["name"]]}


async def put_global_parameter(call):
    b, key, value = call.broker, call.params["name"], call.body["value"]
    if key == CLUSTER:
        try:
            non_empty_string(value, "value")
        except Invalid as err:
            raise bad_request(str(err)) from None
    existed = key in b.global_parameters
    b.set_global_parameter(key, value)
    await b.sync_frontends()
    return created(existed)


async def delete_global_parameter(call):
    b = call.broker
    if call.params["name"] not in b.global_parameters:
        raise not_found()
    b.set_global_parameter(call.params["name"], None)       # a cluster name: the default
    await b.sync_frontends()
    return no_content()


ROUTES = [
    Route("GET", "/api/cluster-name", get_cluster_name, access.MANAGEMENT),
    Route("PUT", "/api/cluster-name", put_cluster_name, access.ADMINISTRATOR,
          body=CLUSTER_NAME),
    Route("GET", "/api/global-parameters", list_global_parameters, access.POLICIES,
          sort=("name",)),
    Route("GET", "/api/global-parameters/{name}", get_global_parameter, access.POLICIES),
    Route("PUT", "/api/global-parameters/{name}", put_global_parameter, access.ADMINISTRATOR,
          body=PARAMETER),
    Route("DELETE", "/api/global-parameters/{name}", delete_global_parameter,
          access.ADMINISTRATOR),
]
