"""``/api/queues``: list, get, declare (PUT), delete (``if-unused``, ``if-empty``), purge
(``DELETE .../contents``), get messages (``POST .../get``) and a queue's bindings.

A queue object has RabbitMQ's fields; the counts come from the queue's worker (one
``Stats`` request per worker for a whole list). ``memory`` is the worker's estimate of the
bytes the queue holds in memory (cached bodies, its tables, consumers, log indexes:
``worker/memory.py``); its messages' bodies are otherwise in its log files.
``message_bytes`` counts the ready messages' bytes (the worker does not keep a sum for the
unacknowledged ones). ``message_stats`` is added by the statistics module.

``get`` fetches up to ``count`` messages unacknowledged and settles them all at the end, as
RabbitMQ does (so a requeue mode does not fetch the same message twice): ``ack_requeue_true``
and ``reject_requeue_true`` requeue them (they come back redelivered),
``ack_requeue_false`` acknowledges them, ``reject_requeue_false`` rejects them (dead-lettered
if the queue says so).
"""
from __future__ import annotations

import base64

from .. import errors
from ..stats.collector import add_message_stats
from ..protocol import properties as props_mod
from . import access, listing
from .api import (ApiError, Route, created, flag_param, from_amqp, no_content,
                  not_found, vhost_of)
from .bindings import binding_json
from .channels import consumers_of
from .validation import QUEUE, QUEUE_GET

NODE = "amqpbroker@localhost"


def queue_json(q, stats) -> dict:
    ready, consumers, unacked, ready_bytes, memory = stats[:5]
    held = stats[5] if len(stats) > 5 else None
    # a quorum queue's dead letters held until confirmed (worker/discards.py): counted in
    # its messages and bytes, as RabbitMQ's
    dlx = {} if held is None else {"messages_dlx": held[0], "message_bytes_dlx": held[1]}
    held_n, held_bytes = held or (0, 0)
    return {"name": q.name, "vhost": q.vhost.name, "durable": q.durable,
            "auto_delete": q.auto_delete, "exclusive": q.exclusive_owner is not None,
            "arguments": q.arguments, "node": NODE, "type": q.args.queue_type,
            "state": "running" if q.down is None else "down",
            "messages": ready + unacked + held_n, "messages_ready": ready,
            "messages_unacknowledged": unacked, "consumers": consumers,
            "message_bytes": ready_bytes + held_bytes, "message_bytes_ready": ready_bytes,
            **dlx,
            "memory": memory, "policy": q.policy.name if q.policy is not None else None,
            "operator_policy": q.operator_policy.name if q.operator_policy is not None
            else None,
            "effective_policy_definition": q.effective_policy_definition(),
            "exclusive_consumer_tag": None,
            "single_active_consumer_tag": None,
            "worker": q.client.index,       # ours: the partition worker that owns it
            **_placement(q)}


def _placement(q) -> dict:
    """In a cluster: RabbitMQ's ``leader``, ``members``, ``online`` (cluster/node.py);
    ``node`` is the leader's."""
    cluster = getattr(q.vhost.broker, "cluster", None)
    if cluster is None:
        return {}
    out = cluster.queue_placement(q.vhost.name, q.name)
    if out.get("leader"):
        out["node"] = out["leader"]
    return out


def elsewhere_json(o: dict) -> dict:
    """Another node's exclusive queue (a cluster: ``cluster/metadata.py``): listed as
    RabbitMQ lists every node's queues, with what etcd says of it; its counts are its
    node's, not known here, so absent."""
    from ..cluster.node import display_name
    node = display_name(o["node"])
    return {"name": o["name"], "vhost": o["vhost"], "durable": False,
            "auto_delete": o["auto_delete"], "exclusive": True, "arguments": o["arguments"],
            "node": node, "type": "classic", "state": "running", "leader": node,
            "members": [node]}


async def list_queues(call):
    b = call.broker
    names = access.listed_vhosts(call)
    queues = [q for n in names for q in b.vhosts[n].queues.values()]
    find = getattr(b.metadata, "exclusive_elsewhere", None)
    elsewhere = [elsewhere_json(o) for o in find(names)] if find is not None else []
    if listing.chosen_by(call.query, ("name", "vhost")):
        # a page in name order: the workers count that page's queues only
        async def build(chosen):
            refs = [item["ref"] for item in chosen if "ref" in item]
            stats = await b.queue_stats(refs)
            return [add_message_stats(queue_json(item["ref"], stats[item["ref"]]), b, "queue",
                                      item["ref"]) if "ref" in item else item["elsewhere"]
                    for item in chosen]
        return await listing.page_first(
            [{"name": q.name, "vhost": q.vhost.name, "ref": q} for q in queues] +
            [{"name": o["name"], "vhost": o["vhost"], "elsewhere": o} for o in elsewhere],
            call.query, build)
    stats = await b.queue_stats(queues)
    return [add_message_stats(queue_json(q, stats[q]), b, "queue", q)
            for q in queues] + elsewhere


def _queue(call):
    vh = call.broker.vhosts.get(call.params["vhost"])
    q = vh.queues.get(call.params["name"]) if vh else None
    if q is None:
        raise not_found()
    return vh, q


async def get_queue(call):
    _, q = _queue(call)
    stats = await call.broker.queue_stats([q])
    out = add_message_stats(queue_json(q, stats[q]), call.broker, "queue", q)
    conns = await call.broker.connection_list(call.amqp.sessions)
    out["consumer_details"] = [c for c in consumers_of(conns)
                               if c["queue"] == {"name": q.name, "vhost": q.vhost.name}]
    return out


async def put_queue(call):
    """Declare, as queue.declare does on a channel of the caller (its configure permission,
    the reserved ``amq.`` prefix, equivalence with an existing queue)."""
    b, name, body = call.broker, call.params["name"], call.body
    vh = vhost_of(call)
    try:
        if name.startswith("amq."):
            raise errors.AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        b.users.check(call.user, vh.name, "configure", "queue", name)
        existed = name in vh.queues
        await b.metadata.declare_queue(vhost=vh.name, name=name, owner=None, passive=False,
                                       durable=body["durable"], exclusive=False,
                                       auto_delete=body["auto_delete"],
                                       arguments=body["arguments"], actor=call.user.name)
    except errors.AMQPError as err:
        raise from_amqp(err) from None
    return created(existed)


async def delete_queue(call):
    b = call.broker
    vh, q = _queue(call)
    try:
        b.users.check(call.user, vh.name, "configure", "queue", q.name)
        await b.metadata.delete_queue(vhost=vh.name, name=q.name, owner=None,
                                      if_unused=flag_param(call, "if-unused"),
                                      if_empty=flag_param(call, "if-empty"),
                                      actor=call.user.name)
    except errors.AMQPError as err:
        raise from_amqp(err) from None
    return no_content()


async def purge_queue(call):
    vh, q = _queue(call)
    try:
        call.broker.users.check(call.user, vh.name, "read", "queue", q.name)
        await q.purge()
    except errors.AMQPError as err:
        raise from_amqp(err) from None
    return no_content()


async def get_messages(call):
    b, body = call.broker, call.body
    vh = b.vhosts.get(call.params["vhost"])
    q = vh.queues.get(call.params["name"]) if vh else None
    if q is None:
        raise ApiError(404, f"NOT_FOUND - no queue '{call.params['name']}' in vhost "
                            f"'{call.params['vhost']}'", "not_found")
    mode = body["ackmode"]
    no_ack = mode == "ack_requeue_false"
    out, held = [], []
    try:
        b.users.check(call.user, vh.name, "read", "queue", q.name)
        for _ in range(body["count"]):
            got = await q.get(no_ack)
            if got is None:
                break
            offset, record, redelivered, remaining = got
            held.append(offset)
            out.append(_message_json(record, redelivered, remaining, body))
    except errors.AMQPError as err:
        raise from_amqp(err) from None
    finally:
        if held and not no_ack:
            if mode == "ack_requeue_true" or mode == "reject_requeue_true":
                q.reject(held, True)
            else:
                q.reject(held, False)
    return out


def _message_json(record, redelivered: bool, remaining: int, body: dict) -> dict:
    payload = bytes(record.body)
    size = len(payload)
    if body.get("truncate") is not None:
        payload = payload[:body["truncate"]]
    encoding = "base64"
    if body["encoding"] == "auto":
        try:
            text, encoding = payload.decode("utf-8"), "string"
        except UnicodeDecodeError:
            pass
    if encoding == "base64":
        text = base64.b64encode(payload).decode()
    return {"payload_bytes": size, "redelivered": redelivered, "exchange": record.exchange,
            "routing_key": record.routing_key, "message_count": remaining,
            "properties": properties_json(bytes(record.properties)), "payload": text,
            "payload_encoding": encoding}


_PROPERTY_FLAGS = (
    ("content_type", props_mod.F_CONTENT_TYPE), ("content_encoding", props_mod.F_CONTENT_ENCODING),
    ("headers", props_mod.F_HEADERS), ("delivery_mode", props_mod.F_DELIVERY_MODE),
    ("priority", props_mod.F_PRIORITY), ("correlation_id", props_mod.F_CORRELATION_ID),
    ("reply_to", props_mod.F_REPLY_TO), ("expiration", props_mod.F_EXPIRATION),
    ("message_id", props_mod.F_MESSAGE_ID), ("timestamp", props_mod.F_TIMESTAMP),
    ("type", props_mod.F_TYPE), ("user_id", props_mod.F_USER_ID),
    ("app_id", props_mod.F_APP_ID), ("cluster_id", props_mod.F_CLUSTER_ID))


def properties_json(raw: bytes):
    """A message's properties as RabbitMQ's management shows them: the ones the publisher
    set, by name; none set is ``[]`` (RabbitMQ's empty proplist)."""
    try:
        flags = props_mod.scan(raw).flags
        props = props_mod.decode(raw)
    except ValueError:
        return []
    out = {}
    for name, flag in _PROPERTY_FLAGS:
        if flags & flag:
            out[name] = _plain(getattr(props, name, None))
    if "timestamp" in out and not isinstance(out["timestamp"], int):
        out["timestamp"] = int(props.timestamp.timestamp())
    return out or []


def _plain(value):
    """A property or header value as JSON: bytes as text (or base64 if not UTF-8)."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "timestamp") and callable(value.timestamp):
        return int(value.timestamp())
    if hasattr(value, "as_tuple"):          # decimal
        return float(value)
    return value


async def queue_bindings(call):
    vh, q = _queue(call)
    out = [binding_json(vh.name, "", q, "queue", q.name, {})]
    out.extend(binding_json(vh.name, ex.name, dest, kind, key, args)
               for ex, dest, kind, key, args in vh.bindings() if dest is q)
    return out


ROUTES = [
    Route("GET", "/api/queues", list_queues, access.MANAGEMENT),
    # RabbitMQ 3.13's (its /api/queues answers fewer fields; ours every field on both):
    # before {vhost}, so it wins over a vhost named "detailed", as RabbitMQ's does
    Route("GET", "/api/queues/detailed", list_queues, access.MANAGEMENT),
    Route("GET", "/api/queues/{vhost}", list_queues, access.VHOST),
    Route("GET", "/api/queues/{vhost}/{name}", get_queue, access.VHOST),
    Route("PUT", "/api/queues/{vhost}/{name}", put_queue, access.VHOST, body=QUEUE),
    Route("DELETE", "/api/queues/{vhost}/{name}", delete_queue, access.VHOST),
    Route("DELETE", "/api/queues/{vhost}/{name}/contents", purge_queue, access.VHOST),
    Route("POST", "/api/queues/{vhost}/{name}/get", get_messages, access.VHOST,
          body=QUEUE_GET),
    Route("GET", "/api/queues/{vhost}/{name}/bindings", queue_bindings, access.VHOST,
          sort=()),
]
