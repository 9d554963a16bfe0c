"""Request bodies, checked whole before anything is applied.

A schema is a function ``check(value, where) -> value`` that returns the value normalized
(tags as a list, defaults filled in) or raises ``Invalid`` with a reason that names the field
(``where``: ``tags``, ``permissions[2].configure``) and what was wrong; the server answers it
as 400 ``bad_request``. Small checks compose: ``Obj`` checks a JSON object field by field,
``list_of`` each element of a list. As in RabbitMQ, fields a schema does not name are
ignored, and ``null`` counts as absent.

Where RabbitMQ answers a bad body with 400, the reason is RabbitMQ's (``tags_not_present``,
``both_password_and_password_hash_are_provided``, ``not_base64``, ``invalid_regexp``,
``key_missing``). Where RabbitMQ 3.10 crashes with 500 (``"tags": 5``, a number as a
permission regex or a password) or stores what it cannot use (a vhost description of 5), this
answers 400 and stores nothing.
"""
from __future__ import annotations

import base64
import copy
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from .. import errors, pcre
from ..frontend.auth import HASHING
from ..frontend.exchange import TYPES, make_exchange
from ..erlang import erlang_term
from ..policies import PolicyInvalid, make_policy
from ..queue_args import QUEUE_TYPES, QueueArgs
from ..federation import upstreams
from ..shovel import definition as shovel_definition


class Invalid(ValueError):
    """A body that does not fit its schema; ``str()`` is the reason sent with the 400."""


REQUIRED = object()          # Field default: the field must be present
OPTIONAL = object()          # Field default: absent stays absent


def _show(value) -> str:
    return json.dumps(value)[:60]


def _at(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


def _fail(where: str, reason: str) -> Invalid:
    return Invalid(f"{where}: {reason}" if where else reason)


# ------------------------------------------------------------------------- values
def string(value, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"expected a string, got {_show(value)}")
    return value


def name(value, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, f"expected a non-empty string, got {_show(value)}")
    return value


def boolean(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, f"expected true or false, got {_show(value)}")
    return value


def flag(value, where: str) -> bool:
    """A boolean that RabbitMQ also takes as the strings "true" / "false" (``parse_bool``)."""
    if value in ("true", "false"):
        return value == "true"
    return boolean(value, where)


def table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(where, f"expected an object, got {_show(value)}")
    return value


def regex(value, where: str) -> str:
    """A permission pattern: a string that compiles as RabbitMQ's PCRE (``pcre.py``)."""
    string(value, where)
    try:
        pcre.compile(value)
    except re.error as exc:
        raise _fail(where, f"invalid_regexp {_show(value)}: {exc}") from None
    return value


def tags(value, where: str) -> list[str]:
    """RabbitMQ's tags: a comma-separated string (``"management, policymaker"``) or a list
    of strings."""
    if isinstance(value, str):
        value = value.split(",")
    elif not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise _fail(where, f"expected a comma-separated string or a list of strings, "
                           f"got {_show(value)}")
    return [t.strip() for t in value if t.strip()]


def password_hash(value, where: str) -> str:
    """Base64 of salt + digest, as RabbitMQ exports it; "" is a user without a password."""
    string(value, where)
    try:
        base64.b64decode(value, validate=True)
    except ValueError:          # binascii.Error, and ValueError for text that is not ASCII
        raise _fail(where, f"not_base64 {_show(value)}") from None
    return value


def one_of(*choices: str) -> Callable:
    def check(value, where: str):
        if not isinstance(value, str) or value not in choices:
            raise _fail(where, f"{_show(value)} is not one of {', '.join(choices)}")
        return value
    return check


def list_of(item: Callable) -> Callable:
    def check(value, where: str) -> list:
        if not isinstance(value, list):
            raise _fail(where, f"expected a list, got {_show(value)}")
        return [item(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return check


# ------------------------------------------------------------------------- limits
VHOST_LIMITS = ("max-connections", "max-queues")
USER_LIMITS = ("max-connections", "max-channels")


def check_limit(name: str, value, known: tuple, where: str) -> str | None:
    """None if ``value`` may be limit ``name``, else the reason RabbitMQ gives (``where``:
    "limits" for a vhost's, "user-limits" for a user's). A limit is any integer; below
    zero is no limit."""
    if name not in known:
        return f"Unrecognised terms [{{{erlang_term(name)},{erlang_term(value)}}}] in {where}"
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{name} should be a number, actually was {erlang_term(value)}"
    return None


def limits_of(known: tuple, where: str) -> Callable:
    """A table of limits, ``{"max-connections": 10}``; also the list of pairs RabbitMQ
    3.10's ``rabbitmqctl export_definitions`` writes for a vhost's."""
    def check(value, at: str) -> dict:
        if isinstance(value, list) and all(isinstance(p, list) and len(p) == 2
                                           and isinstance(p[0], str) for p in value):
            value = dict(value)
        table(value, at)
        for name, limit in value.items():
            reason = check_limit(name, limit, known, where)
            if reason:
                raise _fail(at, reason)
        return dict(value)
    return check


def anything(value, where: str):
    return value


# ------------------------------------------------------------------------- objects
@dataclass(frozen=True)
class Field:
    check: Callable
    default: Any = REQUIRED


class Obj:
    """A JSON object with named fields; ``then(obj, where)`` checks rules across fields."""

    def __init__(self, then: Callable | None = None, **fields: Field):
        self.fields = fields
        self.then = then

    def __call__(self, value, where: str = ""):
        if not isinstance(value, dict):
            raise _fail(where, f"expected an object, got {_show(value)}")
        out, missing = {}, []
        for key, f in self.fields.items():
            v = value.get(key)
            if v is not None:
                out[key] = f.check(v, _at(where, key))
            elif f.default is REQUIRED:
                missing.append(key)
            elif f.default is not OPTIONAL:
                out[key] = copy.copy(f.default)
        if missing:
            raise _fail(where, "key_missing: " + ", ".join(missing))
        return self.then(out, where) if self.then else out


# ------------------------------------------------------------------------- bodies
def _user_rules(user: dict, where: str) -> dict:
    """RabbitMQ's ``put_user``: tags (or the old ``administrator`` flag) are required, at
    most one of password and password_hash; with neither, the user has no password, and no
    password logs it in (an empty hash never matches)."""
    admin = user.pop("administrator", None)
    if "tags" not in user:
        if admin is None:
            raise _fail(where, "tags_not_present")
        user["tags"] = ["administrator"] if admin else []
    if "password" in user and "password_hash" in user:
        raise _fail(where, "both_password_and_password_hash_are_provided")
    if "password" not in user and "password_hash" not in user:
        user["password_hash"] = ""
    user.pop("hashing_algorithm", None)
    return user


_USER_FIELDS = dict(
    password=Field(string, OPTIONAL),
    password_hash=Field(password_hash, OPTIONAL),
    # the only hashing this broker checks passwords with
    hashing_algorithm=Field(one_of(HASHING), OPTIONAL),
    tags=Field(tags, OPTIONAL),
    administrator=Field(flag, OPTIONAL))

_PERMISSION_FIELDS = dict(configure=Field(regex), write=Field(regex), read=Field(regex))
_TOPIC_PERMISSION_FIELDS = dict(exchange=Field(string), write=Field(regex), read=Field(regex))

USER = Obj(_user_rules, **_USER_FIELDS)                 # PUT /api/users/{name}
# a vhost's default queue type (queue_args.with_default_type): RabbitMQ 3.11+ and its clients
# (rabbit-hole, the Terraform provider) send "default_queue_type", 3.10's management UI
# "defaultqueuetype"
queue_type = one_of(*QUEUE_TYPES)


def _vhost_body(vhost: dict, where: str) -> dict:
    other = vhost.pop("defaultqueuetype", None)
    vhost.setdefault("default_queue_type", other)
    return vhost


VHOST = Obj(_vhost_body, description=Field(string, ""), tags=Field(tags, []),
            tracing=Field(flag, OPTIONAL), default_queue_type=Field(queue_type, OPTIONAL),
            defaultqueuetype=Field(queue_type, OPTIONAL))    # PUT /api/vhosts/{vhost}
PERMISSION = Obj(**_PERMISSION_FIELDS)                  # PUT /api/permissions/{vhost}/{user}
TOPIC_PERMISSION = Obj(**_TOPIC_PERMISSION_FIELDS)  # PUT /api/topic-permissions/{vhost}/{user}
BULK_DELETE = Obj(users=Field(list_of(name)))           # POST /api/users/bulk-delete
CLUSTER_NAME = Obj(name=Field(name))                    # PUT /api/cluster-name
# PUT /api/parameters/{component}/{vhost}/{name}: the value is checked by the handler, which
# knows the component; the body may repeat the path's parts, as RabbitMQ's exports do
PARAMETER = Obj(value=Field(anything), component=Field(string, OPTIONAL),
                vhost=Field(string, OPTIONAL), name=Field(string, OPTIONAL))
LIMIT = Obj(value=Field(anything))      # PUT /api/vhost-limits/.../{name}, user-limits: the
                                        # value is checked by the handler, which knows name


def integer(value, where: str) -> int:
    """A whole number, also as a string of digits (rabbitmqadmin sends ``"count": "1"``)."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise _fail(where, f"expected a whole number, got {_show(value)}") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(where, f"expected a whole number, got {_show(value)}")
    return value


def natural(value, where: str) -> int:
    value = integer(value, where)
    if value < 0:
        raise _fail(where, f"expected a number >= 0, got {value}")
    return value


def octet(value, where: str) -> int:
    value = integer(value, where)
    if not 0 <= value <= 255:
        raise _fail(where, f"expected a number from 0 to 255, got {value}")
    return value


# the properties a publish may set, as RabbitMQ's management takes them
PROPERTIES = Obj(
    content_type=Field(string, OPTIONAL), content_encoding=Field(string, OPTIONAL),
    headers=Field(table, OPTIONAL), delivery_mode=Field(octet, OPTIONAL),
    priority=Field(octet, OPTIONAL), correlation_id=Field(string, OPTIONAL),
    reply_to=Field(string, OPTIONAL), expiration=Field(string, OPTIONAL),
    message_id=Field(string, OPTIONAL), timestamp=Field(natural, OPTIONAL),
    type=Field(string, OPTIONAL), user_id=Field(string, OPTIONAL),
    app_id=Field(string, OPTIONAL), cluster_id=Field(string, OPTIONAL))

QUEUE = Obj(durable=Field(flag, False), auto_delete=Field(flag, False),
            arguments=Field(table, {}))                 # PUT /api/queues/{vhost}/{name}
EXCHANGE = Obj(type=Field(string, "direct"), durable=Field(flag, False),
               auto_delete=Field(flag, False), internal=Field(flag, False),
               arguments=Field(table, {}))              # PUT /api/exchanges/{vhost}/{name}
PUBLISH = Obj(properties=Field(PROPERTIES), routing_key=Field(string),
              payload=Field(string), payload_encoding=Field(one_of("string", "base64")))
QUEUE_GET = Obj(count=Field(natural), ackmode=Field(one_of(
    "ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false")),
    encoding=Field(one_of("auto", "base64")), truncate=Field(natural, OPTIONAL))
BINDING = Obj(routing_key=Field(string, ""), arguments=Field(table, {}))


def _vhost_metadata(vhost: dict, where: str) -> dict:
    """RabbitMQ 3.10 exports description and tags inside ``metadata``, later ones beside."""
    meta = vhost.pop("metadata", {})
    vhost.setdefault("description", meta.get("description", ""))
    vhost.setdefault("tags", meta.get("tags", []))
    vhost.setdefault("default_queue_type", meta.get("default_queue_type"))
    return vhost


def _runtime_parameter(parameter: dict, where: str) -> dict:
    """A definitions document's runtime parameter: a vhost's limits, a shovel (checked
    as ``PUT /api/parameters/shovel/...`` checks one, but for the vhosts of local URIs: an
    import runs as the broker, as RabbitMQ's), a federation upstream or upstream set; other
    components are ignored."""
    if parameter["component"] == "vhost-limits":
        parameter["value"] = limits_of(VHOST_LIMITS, "limits")(parameter["value"],
                                                                _at(where, "value"))
    elif parameter["component"] == "shovel":
        try:
            shovel_definition.check(parameter["value"], parameter["name"])
        except shovel_definition.Invalid as exc:
            raise _fail(_at(where, "value"), "; ".join(exc.reasons)) from None
    elif parameter["component"] in upstreams.COMPONENTS:
        try:
            upstreams.check(parameter["component"], parameter["name"], parameter["value"])
        except upstreams.Invalid as exc:
            raise _fail(_at(where, "value"), "; ".join(exc.reasons)) from None
    return parameter


def global_parameter(parameter: dict, where: str) -> dict:
    """A global parameter: any JSON value (as RabbitMQ), but ``cluster_name`` a string
    (RabbitMQ 3.10 stores a number there too, and names the cluster 5)."""
    if parameter["name"] == "cluster_name":
        name(parameter["value"], _at(where, "value"))
    return parameter


def _queue_arguments(queue: dict, where: str) -> dict:
    """The x-arguments pass the checks queue.declare makes."""
    try:
        QueueArgs(queue["name"], queue["vhost"], queue["arguments"])
    except errors.AMQPError as exc:
        raise _fail(_at(where, "arguments"), exc.text) from None
    return queue


def _exchange_arguments(exchange: dict, where: str) -> dict:
    """The arguments pass the checks exchange.declare makes (the x-message-deduplication
    type checks its own)."""
    try:
        make_exchange(exchange["type"], exchange["name"], arguments=exchange["arguments"])
    except errors.AMQPError as exc:
        raise _fail(_at(where, "arguments"), exc.text) from None
    return exchange


def policy_entry(value, where: str, operator: bool = False) -> dict:
    """A definitions document's policy: as a ``PUT /api/policies`` body, with its vhost and
    name (policies.make_policy checks it); ``operator``: an operator policy."""
    entry = Obj(vhost=Field(name), name=Field(name), pattern=Field(anything),
                definition=Field(anything), priority=Field(anything, 0),
                **{"apply-to": Field(anything, "all")})(value, where)
    try:
        return make_policy(entry["vhost"], entry["name"], entry, operator).item()
    except PolicyInvalid as exc:
        raise _fail(where, str(exc)) from None


def operator_policy_entry(value, where: str) -> dict:
    return policy_entry(value, where, operator=True)


DEFINITIONS = Obj(                                     # POST /api/definitions
    users=Field(list_of(Obj(_user_rules, name=Field(name), **_USER_FIELDS,
                            limits=Field(limits_of(USER_LIMITS, "user-limits"), OPTIONAL))),
                []),
    vhosts=Field(list_of(Obj(
        _vhost_metadata, name=Field(name), description=Field(string, OPTIONAL),
        tags=Field(tags, OPTIONAL), default_queue_type=Field(queue_type, OPTIONAL),
        metadata=Field(Obj(description=Field(string, ""), tags=Field(tags, []),
                           default_queue_type=Field(queue_type, OPTIONAL)), OPTIONAL),
        limits=Field(limits_of(VHOST_LIMITS, "limits"), OPTIONAL))),
        []),
    # RabbitMQ keeps a vhost's limits as its parameter "limits" of component "vhost-limits";
    # shovels are component "shovel", federation upstreams "federation-upstream" and
    # "federation-upstream-set"; the others are not this broker's and are ignored
    parameters=Field(list_of(Obj(
        _runtime_parameter, vhost=Field(name), component=Field(string),
        name=Field(string), value=Field(anything))), []),
    permissions=Field(list_of(Obj(user=Field(name), vhost=Field(name),
                                  **_PERMISSION_FIELDS)), []),
    global_parameters=Field(list_of(Obj(global_parameter, name=Field(name),
                                        value=Field(anything))), []),
    topic_permissions=Field(list_of(Obj(user=Field(name), vhost=Field(name),
                                        **_TOPIC_PERMISSION_FIELDS)), []),
    exchanges=Field(list_of(Obj(
        _exchange_arguments,
        name=Field(string), vhost=Field(name), type=Field(one_of(*TYPES), "direct"),
        durable=Field(boolean, True), auto_delete=Field(boolean, False),
        internal=Field(boolean, False), arguments=Field(table, {}))), []),
    queues=Field(list_of(Obj(
        _queue_arguments, name=Field(string), vhost=Field(name), durable=Field(boolean, True),
        auto_delete=Field(boolean, False), arguments=Field(table, {}))), []),
    bindings=Field(list_of(Obj(
        source=Field(string), vhost=Field(name), destination=Field(string),
        destination_type=Field(one_of("queue", "exchange"), "queue"),
        routing_key=Field(string, ""), arguments=Field(table, {}))), []),
    policies=Field(list_of(policy_entry), []),
    # ours: RabbitMQ 3.10 neither exports nor imports them (README, Policies)
    operator_policies=Field(list_of(operator_policy_entry), []))


def parse_json(raw: bytes) -> dict:
    """A request body as a JSON object: empty or ``null`` is ``{}``, as RabbitMQ reads it;
    anything but an object, or text with a lone surrogate, is ``not_json``."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_no_constant)
        # "\ud800" (a lone surrogate escape) loads, but is no Unicode text: no name, password
        # or description made of it could be stored, hashed or sent over AMQP
        json.dumps(data, ensure_ascii=False).encode()
    except (ValueError, RecursionError):
        raise Invalid("not_json") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Invalid("not_json")
    return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")        # NaN, Infinity: Python's json takes them
