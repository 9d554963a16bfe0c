"""``/api/topics``: partitioned topics (ours; RabbitMQ's nearest is
``PUT /api/stream/super-streams/{vhost}/{name}``, whose checks and texts these follow).

* ``GET /api/topics[/{vhost}]``: the topics of the vhosts the user sees; ``GET
  /api/topics/{vhost}/{name}``: one, with its partitions (queue, worker, message counts).
* ``PUT /api/topics/{vhost}/{name}`` with ``{"partitions": N}`` (and, on creation,
  ``"type": "classic" | "stream" | "quorum"`` and queue ``"arguments"``): 201 when it made
  the topic, 204 when it added partitions (N above today's) or N is today's count; fewer is
  400. Adding partitions moves keys (README, "Topics").
* ``DELETE /api/topics/{vhost}/{name}``: the topic and its partitions, messages and all.

Who may: as RabbitMQ's super-stream endpoint, any management user who may use the vhost
(``is_authorized_vhost``), and then, per resource, configure and read on the exchange and
configure and write on each partition queue; otherwise 401 "Access refused.". Deleting asks
configure on the exchange and the partitions (as deleting each over the API would). Every
change is answered once every front-end process routes by it.
"""
from __future__ import annotations

from .. import errors
from ..frontend.exchange import PartitionedExchange
from ..supervisor.topics import (MAX_PARTITIONS, PARTITION_TYPES, partition_name,
                                 partition_type)
from . import access
from .api import Route, bad_request, created, no_content, not_found
from .validation import OPTIONAL, Field, Invalid, Obj, one_of, table


def _partitions(value, where: str) -> int:
    """RabbitMQ's super-stream ``partitions``: a number (or its text), 1 .. the maximum."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid("The partitions must be a number")
    if value < 1:
        raise Invalid("The partition number must be greater than 0")
    if value > MAX_PARTITIONS:
        raise Invalid(f"The partition number must not exceed {MAX_PARTITIONS}")
    return value


TOPIC = Obj(partitions=Field(_partitions), type=Field(one_of(*PARTITION_TYPES), OPTIONAL),
            arguments=Field(table, {}))


def _json(vh, ex: PartitionedExchange, stats=None) -> dict:
    out = {"name": ex.name, "vhost": vh.name, "partitions": ex.partitions,
           "partition_type": partition_type(ex.arguments), "arguments": ex.arguments}
    if stats is not None:
        queues = []
        for i in range(ex.partitions):
            q = vh.queues.get(partition_name(ex.name, i))
            if q is None:
                queues.append({"partition": i, "name": partition_name(ex.name, i),
                               "state": "missing"})
                continue
            ready, consumers, unacked = stats[q][:3]
            queues.append({"partition": i, "name": q.name, "worker": q.client.index,
                           "messages": ready + unacked, "messages_ready": ready,
                           "messages_unacknowledged": unacked, "consumers": consumers,
                           "state": "running" if q.down is None else "down"})
        out["queues"] = queues
    return out


def _topic(call):
    vh = call.broker.vhosts.get(call.params["vhost"])
    ex = vh.exchanges.get(call.params["name"]) if vh else None
    if not isinstance(ex, PartitionedExchange):
        raise not_found()
    return vh, ex


async def list_topics(call):
    b = call.broker
    return [_json(b.vhosts[n], ex) for n in access.listed_vhosts(call)
            for ex in b.vhosts[n].exchanges.values() if isinstance(ex, PartitionedExchange)]


async def get_topic(call):
    vh, ex = _topic(call)
    refs = [q for q in (vh.queues.get(partition_name(ex.name, i))
                        for i in range(ex.partitions)) if q is not None]
    return _json(vh, ex, await call.broker.queue_stats(refs))


def _permitted(call, needs) -> None:
    """Each (permission, resource kind, name), or 401 "Access refused." as RabbitMQ."""
    users, vhost = call.broker.users, call.params["vhost"]
    try:
        for kind, resource, name in needs:
            users.check(call.user, vhost, kind, resource, name)
    except errors.AccessRefused as exc:
        raise access.refused(call.user.name, "Access refused.") from exc


async def put_topic(call):
    b, name = call.broker, call.params["name"]
    vh = b.vhosts.get(call.params["vhost"])
    if vh is None:
        raise not_found()
    n = call.body["partitions"]
    ex = vh.exchanges.get(name)
    if ex is not None and not isinstance(ex, PartitionedExchange):
        raise bad_request(f"exchange '{name}' in vhost '{vh.name}' exists and is not a topic "
                          f"(type '{ex.type}')")
    _permitted(call, [("configure", "exchange", name), ("read", "exchange", name),
                      *(p for i in range(n) for p in (
                          ("configure", "queue", partition_name(name, i)),
                          ("write", "queue", partition_name(name, i))))])
    try:
        if ex is None:
            arguments = {**call.body["arguments"], "x-partitions": n}
            if "type" in call.body:
                arguments["x-partition-type"] = call.body["type"]
            await b.topics.declare(vh, name, passive=False, durable=True, auto_delete=False,
                                   internal=False, arguments=arguments)
        else:
            if "type" in call.body and call.body["type"] != partition_type(ex.arguments):
                raise bad_request(f"topic '{name}' in vhost '{vh.name}' has partitions of "
                                  f"type '{partition_type(ex.arguments)}', not "
                                  f"'{call.body['type']}'")
            await b.topics.grow(vh, name, n)
    except errors.AMQPError as exc:
        raise bad_request(exc.text) from None
    await b.definitions.durable()
    await b.sync_frontends()
    return created(ex is not None)


async def delete_topic(call):
    vh, ex = _topic(call)
    b = call.broker
    _permitted(call, [("configure", "exchange", ex.name),
                      *(("configure", "queue", q.name) for q in b.topics.partitions_of(vh, ex))])
    try:
        await b.topics.delete(vh, ex.name, if_unused=False)
    except errors.AMQPError as exc:
        raise bad_request(exc.text) from None
    await b.definitions.durable()
    await b.sync_frontends()
    return no_content()


ROUTES = [
    Route("GET", "/api/topics", list_topics, access.MANAGEMENT),
    Route("GET", "/api/topics/{vhost}", list_topics, access.VHOST),
    Route("GET", "/api/topics/{vhost}/{name}", get_topic, access.VHOST),
    Route("PUT", "/api/topics/{vhost}/{name}", put_topic, access.VHOST, body=TOPIC),
    Route("DELETE", "/api/topics/{vhost}/{name}", delete_topic, access.VHOST),
]
