"""``/api/definitions``: export and import (administrators only).

An import either applies whole or changes nothing. The body passes ``validation.DEFINITIONS``
(every field of every entry), then ``plan`` checks every reference against what exists and
what the document itself defines and drops what RabbitMQ's import skips, and only then does
``supervisor.definitions.Definitions.apply`` run, on entries it cannot refuse. (RabbitMQ
imports entry by entry and stops at the first bad one, leaving what came before it.)
In a cluster the checked plan goes through etcd (``cluster/metadata.py``), so every node
gets the exchanges, queues and bindings as if they had been declared.
"""
from __future__ import annotations


from ..frontend.admission import limit_of
from ..supervisor.definitions import vhost_limits
from ..frontend.exchange import CHASH_TYPE, binding_problem, make_exchange
from . import access
from ..errors import AMQPError
from .api import ApiError, Route, bad_request, from_amqp, no_content
from .validation import DEFINITIONS, Invalid, anything, parse_json

VHOST_KINDS = ("parameters", "policies", "queues", "exchanges", "bindings")


async def export_definitions(call):
    return call.broker.definitions.export()


async def export_vhost_definitions(call):
    """One vhost's exchanges, queues, bindings, policies and parameters, without their
    ``vhost`` field (RabbitMQ's per-vhost export, importable into any vhost)."""
    vhost = call.params["vhost"]
    if vhost not in call.broker.vhosts:
        raise bad_request("vhost_not_found")
    whole = call.broker.definitions.export()
    out = {k: whole[k] for k in ("rabbit_version", "rabbitmq_version", "product_name")}
    for kind in VHOST_KINDS:
        out[kind] = [{k: v for k, v in entry.items() if k != "vhost"}
                     for entry in whole[kind] if entry.get("vhost") == vhost]
    return out


async def import_vhost_definitions(call):
    """A per-vhost export (or a whole one: only its vhost-scoped parts are taken) into the
    vhost of the path; users, vhosts and permissions in it are ignored, as RabbitMQ's."""
    b, vhost = call.broker, call.params["vhost"]
    if vhost not in b.vhosts:
        raise bad_request("vhost_not_found")
    doc = {kind: call.body.get(kind) or [] for kind in VHOST_KINDS}
    for kind in VHOST_KINDS:
        if not isinstance(doc[kind], list):
            raise bad_request(f"{kind}: expected a list")
        doc[kind] = [{**entry, "vhost": vhost} if isinstance(entry, dict) else entry
                     for entry in doc[kind]]
    try:
        checked = DEFINITIONS(doc, "")
    except Invalid as err:
        raise ApiError(400, str(err)) from None
    await _apply(b, plan(b, checked))
    return no_content()


async def import_definitions(call):
    b = call.broker
    await _apply(b, plan(b, call.body))
    return no_content()


async def load_file(broker, path: str) -> None:
    """``--load-definitions``: the file imported as ``POST /api/definitions`` imports a
    body; ``OSError`` (the start fails in one line) if it cannot be read or is refused."""
    try:
        with open(path, "rb") as f:
            doc = parse_json(f.read())
        await _apply(broker, plan(broker, DEFINITIONS(doc, "")))
    except (OSError, Invalid) as err:
        raise OSError(f"--load-definitions {path}: {err}") from None
    except ApiError as err:
        raise OSError(f"--load-definitions {path}: {err.reason}") from None


async def _apply(broker, planned: dict) -> None:
    """Apply a checked plan: here, or in a cluster through etcd (``cluster/metadata.py``'s
    ``import_definitions``: exchanges, queues and bindings as declares are)."""
    cluster_import = getattr(broker.metadata, "import_definitions", None)
    if cluster_import is not None:
        try:
            await cluster_import(planned)
        except AMQPError as err:
            raise from_amqp(err) from None
    else:
        broker.definitions.apply(planned)
    await broker.resync_frontends()


def plan(broker, doc: dict) -> dict:
    """The part of ``doc`` to apply, or 400 naming the first entry that refers to a vhost or
    a user that neither exists nor is defined in ``doc``.

    Dropped, as RabbitMQ's import drops them: exchanges and queues that already exist (they
    stay as they are, even if the document defines them otherwise), bindings from or to the
    default exchange. ``Definitions.apply`` skips exchanges and queues named "" or ``amq.*``
    (with RabbitMQ's warning) and bindings whose source or destination does not exist, as
    RabbitMQ skips them."""
    vhosts = set(broker.vhosts) | {v["name"] for v in doc["vhosts"]}
    users = set(broker.users.users) | {u["name"] for u in doc["users"]}
    for kind in ("permissions", "topic_permissions", "policies", "operator_policies",
                 "exchanges", "queues", "bindings"):
        for i, entry in enumerate(doc.get(kind, ())):
            if entry["vhost"] not in vhosts:
                raise bad_request(f"{kind}[{i}].vhost: no_such_vhost '{entry['vhost']}'")
    for kind in ("permissions", "topic_permissions"):
        for i, p in enumerate(doc[kind]):
            if p["user"] not in users:
                raise bad_request(f"{kind}[{i}].user: no_such_user '{p['user']}'")
    # the rules a binding from each exchange follows (a delayed one's: its x-delayed-type's;
    # the document's exchanges passed make_exchange in the schema)
    types = {(e["vhost"], e["name"]): make_exchange(e["type"], e["name"],
                                                    arguments=e["arguments"]).routes_as
             for e in doc["exchanges"]}
    for i, bd in enumerate(doc["bindings"]):
        vh = broker.vhosts.get(bd["vhost"])
        ex = vh.exchanges.get(bd["source"]) if vh is not None else None
        kind = ex.routes_as if ex is not None else types.get((bd["vhost"], bd["source"]))
        problem = binding_problem(kind, bd["routing_key"], bd["arguments"])
        if problem is not None:              # what a queue.bind would refuse with 406
            field = "routing_key" if kind == CHASH_TYPE else "arguments"
            raise bad_request(f"bindings[{i}].{field}: {problem}")
    out = dict(doc)
    for kind in ("exchanges", "queues"):
        kept, seen = [], set()
        for entry in doc[kind]:
            key = (entry["vhost"], entry["name"])
            vh = broker.vhosts.get(entry["vhost"])
            if key not in seen and (vh is None or entry["name"] not in getattr(vh, kind)):
                kept.append(entry)
            seen.add(key)
        out[kind] = kept
    out["bindings"] = [bd for bd in doc["bindings"] if bd["source"] != "" and not (
        bd["destination_type"] == "exchange" and bd["destination"] == "")]
    _check_queue_limits(broker, doc, out["queues"])
    return out


def _check_queue_limits(broker, doc: dict, new_queues: list) -> None:
    """400 if the new queues would pass a vhost's max-queues (the document's limit for the
    vhost if it sets one, else the vhost's own), in RabbitMQ's words for queue.declare; the
    apply then restores them without checking again."""
    limits = {name: vh.limits for name, vh in broker.vhosts.items()}
    limits.update(vhost_limits(doc))
    count = {name: len(vh.queues) for name, vh in broker.vhosts.items()}
    for q in new_queues:
        if q["name"] == "" or q["name"].startswith("amq."):
            continue                                    # the apply skips them
        vhost = q["vhost"]
        limit = limit_of(limits.get(vhost, {}), "max-queues")
        if limit is not None and count.get(vhost, 0) >= limit:
            raise bad_request(f"queues: cannot declare queue '{q['name']}': queue limit in "
                              f"vhost '{vhost}' ({limit}) is reached")
        count[vhost] = count.get(vhost, 0) + 1


ROUTES = [
    Route("GET", "/api/definitions", export_definitions, access.ADMINISTRATOR),
    Route("POST", "/api/definitions", import_definitions, access.ADMINISTRATOR,
          body=DEFINITIONS),
    # RabbitMQ's older name of the same (rabbit_mgmt_dispatcher: "/all-configuration")
    Route("GET", "/api/all-configuration", export_definitions, access.ADMINISTRATOR),
    Route("POST", "/api/all-configuration", import_definitions, access.ADMINISTRATOR,
          body=DEFINITIONS),
    Route("GET", "/api/definitions/{vhost}", export_vhost_definitions, access.ADMINISTRATOR),
    Route("POST", "/api/definitions/{vhost}", import_vhost_definitions, access.ADMINISTRATOR,
          body=anything),
]
