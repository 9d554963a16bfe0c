"""Queue arguments: the x-arguments of queue.declare, validated with RabbitMQ's checks and
reply texts (``invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}``).

The validators are RabbitMQ 3.10's ``rabbit_amqqueue:declare_args()`` for classic queues, run in
its order; each returns the reason RabbitMQ prints with ``~p`` (an Erlang term, or a quoted
string), or None. Quorum queues (``x-queue-type: quorum``) are checked as RabbitMQ 4.0 checks
them instead: the block at the end of this file.
"""
from __future__ import annotations

from . import errors
from .storage.fileformat import FSYNC_POLICIES

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_MODES = ("default", "lazy")
MAX_EXPIRY = 315_360_000_000         # ten years in ms (rabbit_misc:check_expiry)
MAX_PRIORITY = 255


def amqp_type(value) -> str:
    """The AMQP field type RabbitMQ names for a decoded value (pamqp loses int widths)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "signedint" if -2**31 <= value < 2**31 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "longstr"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, (bytes, bytearray)):       # pamqp decodes 'x' as bytearray
        return "binary"
    if value is None:
        return "void"
    return type(value).__name__


def _integer(v) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return f'"expected integer, got {amqp_type(v)}"'
    return None


def _non_negative(v) -> str | None:
    return _integer(v) or (f"{{value_negative,{v}}}" if v < 0 else None)


def _expiry(v) -> str | None:
    if v < 0:
        return f"{{value_negative,{v}}}"
    if v > MAX_EXPIRY:
        return f"{{value_too_large,{v}}}"
    return None


def _expires(v, args) -> str | None:
    return _integer(v) or ("{value_zero,0}" if v == 0 else _expiry(v))


def _message_ttl(v, args) -> str | None:
    return _integer(v) or _expiry(v)


def _string(v, args) -> str | None:
    return None if isinstance(v, str) else f"{{unacceptable_type,{amqp_type(v)}}}"


def _dead_letter_routing_key(v, args) -> str | None:
    if not isinstance(v, str):
        return f"{{unacceptable_type,{amqp_type(v)}}}"
    return None if "x-dead-letter-exchange" in args else "routing_key_but_no_dlx_defined"


def _max_priority(v, args) -> str | None:
    return _non_negative(v) or (f"{{max_value_exceeded,{v}}}" if v > MAX_PRIORITY else None)


def _one_of(known, wrong):
    def check(v, args) -> str | None:
        if not isinstance(v, str):
            return f"{{unacceptable_type,{amqp_type(v)}}}"
        return None if v in known else wrong(v)
    return check


def _queue_version(v, args) -> str | None:
    return _non_negative(v) or (None if v in (1, 2) else f'"unsupported queue version \'{v}\'"')


def _boolean(v, args) -> str | None:
    return None if isinstance(v, bool) else f"{{unacceptable_type,{amqp_type(v)}}}"


VALIDATORS = (
    ("x-expires", _expires),
    ("x-message-ttl", _message_ttl),
    ("x-dead-letter-exchange", _string),
    ("x-dead-letter-routing-key", _dead_letter_routing_key),
    ("x-max-length", lambda v, args: _non_negative(v)),
    ("x-max-length-bytes", lambda v, args: _non_negative(v)),
    ("x-max-priority", _max_priority),
    ("x-overflow", _one_of(OVERFLOW_MODES, lambda v: "invalid_overflow")),
    ("x-queue-mode", _one_of(QUEUE_MODES, lambda v: f"\"unsupported queue mode '{v}'\"")),
    ("x-queue-version", _queue_version),
    ("x-single-active-consumer", _boolean),
)


class QueueArgs:
    """Validated x-arguments of a queue (RabbitMQ's names and checks)."""

    def __init__(self, queue_name: str, vhost: str, arguments: dict):
        self.arguments = dict(arguments or {})
        a = self.arguments
        for key, value in a.items():
            if isinstance(value, bytes) and key in ("x-overflow", "x-fsync", "x-queue-type",
                                                    "x-queue-mode"):
                a[key] = value.decode(errors="replace")

        def refuse(key, reason):
            raise errors.PreconditionFailed(
                f"invalid arg '{key}' for queue '{queue_name}' in vhost '{vhost}': {reason}",
                50, 10)

        qtype = a.get("x-queue-type", "classic")      # RabbitMQ checks this one first
        if qtype != "classic":
            if not isinstance(qtype, str):
                refuse("x-queue-type", f"{{unacceptable_type,{amqp_type(qtype)}}}")
            if qtype not in ("quorum", "stream"):
                refuse("x-queue-type", f"\"unsupported queue type '{qtype}'\"")
            if qtype != "quorum":
                refuse("x-queue-type", "only 'classic' and 'quorum' queues are supported by "
                                       "this broker")
        self.queue_type = qtype
        if qtype == "quorum":
            check_quorum_args(queue_name, vhost, a, refuse)
        else:
            for key, check in VALIDATORS:
                if key in a:
                    reason = check(a[key], a)
                    if reason is not None:
                        refuse(key, reason)

        self.message_ttl = a.get("x-message-ttl")
        self.expires = a.get("x-expires")
        self.max_length = a.get("x-max-length")
        self.max_length_bytes = a.get("x-max-length-bytes")
        self.max_priority = a.get("x-max-priority")
        self.overflow = a.get("x-overflow", "drop-head")
        if qtype == "quorum" and self.overflow == "reject-publish-dlx":
            self.overflow = "drop-head"     # RabbitMQ 4.0 logs a warning and drops from the head
        self.dlx = a.get("x-dead-letter-exchange")
        self.dlrk = a.get("x-dead-letter-routing-key")
        self.single_active = a.get("x-single-active-consumer", False)
        fsync = a.get("x-fsync", "always")           # our extension: the queue's fsync policy
        if fsync not in FSYNC_POLICIES:
            refuse("x-fsync", f"{{unacceptable_value,<<\"{fsync}\">>}} (expected always, "
                              f"interval or never)")
        self.fsync = fsync
        self.delivery_limit = quorum_delivery_limit(a) if qtype == "quorum" else None
        self.initial_group_size = a.get("x-quorum-initial-group-size")  # stored; one node


# ---------------------------------------------------------------------------- quorum queues
# RabbitMQ 4.0's rabbit_amqqueue:check_declare_arguments/3 for a quorum queue: the validators
# of declare_args() for the arguments quorum queues take (rabbit_quorum_queue:capabilities()),
# in declare_args() order; then, in the order the client sent them, the first argument another
# queue type takes and quorum queues do not is refused. Arguments no queue type knows (x-foo,
# our x-fsync) are kept and ignored by RabbitMQ.

QUORUM_DEFAULT_DELIVERY_LIMIT = 20          # RabbitMQ 4.0 (?DEFAULT_DELIVERY_LIMIT)
DLX_STRATEGIES = ("at-most-once", "at-least-once")
LEADER_LOCATORS = ("client-local", "balanced", "random", "least-leaders", "min-masters")

# the arguments of classic queues and streams (their capabilities()) that quorum queues refuse
QUORUM_REFUSED = ("x-max-priority", "x-queue-mode", "x-queue-version", "x-queue-master-locator",
                  "x-max-age", "x-stream-max-segment-size-bytes", "x-initial-cluster-size")

# a redeclare must repeat these (rabbit_amqqueue:assert_args_equivalence, quorum's list)
QUORUM_EQUIVALENT_ARGS = (
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-dead-letter-strategy", "x-expires",
    "x-max-length", "x-max-length-bytes", "x-max-in-memory-length", "x-max-in-memory-bytes",
    "x-overflow", "x-single-active-consumer", "x-queue-type", "x-quorum-initial-group-size",
    "x-delivery-limit", "x-message-ttl", "x-queue-leader-locator", "x-fsync")


def _initial_group_size(v, args) -> str | None:
    return _non_negative(v) or ("{value_zero,0}" if v == 0 else None)


def _leader_locator(v, args) -> str | None:
    if not isinstance(v, str):
        return f"{{unacceptable_type,{amqp_type(v)}}}"
    return None if v in LEADER_LOCATORS else "invalid_queue_locator_arg"


QUORUM_VALIDATORS = (
    ("x-expires", _expires),
    ("x-message-ttl", _message_ttl),
    ("x-dead-letter-exchange", _string),
    ("x-dead-letter-routing-key", _dead_letter_routing_key),
    ("x-dead-letter-strategy", _one_of(DLX_STRATEGIES, lambda v: "invalid_dlx_strategy")),
    ("x-max-length", lambda v, args: _non_negative(v)),
    ("x-max-length-bytes", lambda v, args: _non_negative(v)),
    ("x-max-in-memory-length", lambda v, args: _non_negative(v)),
    ("x-max-in-memory-bytes", lambda v, args: _non_negative(v)),
    ("x-overflow", _one_of(OVERFLOW_MODES, lambda v: "invalid_overflow")),
    ("x-single-active-consumer", _boolean),
    ("x-quorum-initial-group-size", _initial_group_size),
    ("x-queue-leader-locator", _leader_locator),
)


def check_quorum_args(queue_name: str, vhost: str, args: dict, refuse) -> None:
    """Refuse (through ``refuse(key, reason)`` or a 406 of its own) what RabbitMQ 4.0 refuses
    in a quorum queue's arguments."""
    for key, check in QUORUM_VALIDATORS:
        if key in args:
            reason = check(args[key], args)
            if reason is not None:
                refuse(key, reason)
    for key in args:
        if key in QUORUM_REFUSED:
            raise errors.PreconditionFailed(
                f"invalid arg '{key}' for queue '{queue_name}' in vhost '{vhost}' of queue type "
                f"rabbit_quorum_queue", 50, 10)


def check_quorum_properties(queue_name: str, vhost: str, *, durable: bool, exclusive: bool,
                            auto_delete: bool) -> None:
    """rabbit_quorum_queue:declare's checks, in its order, with its texts (406)."""
    for bad, prop in ((auto_delete, "auto-delete"), (exclusive, "exclusive-owner"),
                      (not durable, "non-durable")):
        if bad:
            raise errors.PreconditionFailed(
                f"invalid property '{prop}' for queue '{queue_name}' in vhost '{vhost}'", 50, 10)


def quorum_delivery_limit(args: dict) -> int | float | None:
    """The delivery limit of a quorum queue (None: unlimited), as RabbitMQ 4.0 reads it: 20
    without x-delivery-limit, unlimited when negative. RabbitMQ does not validate the value;
    one that is not a number never compares greater than a count in Erlang, so it is
    unlimited there and here."""
    v = args.get("x-delivery-limit")
    if v is None:
        return QUORUM_DEFAULT_DELIVERY_LIMIT
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        return None
    return v


def quorum_delete_refusal(vhost: str, queue_name: str, if_unused: bool) -> str:
    """RabbitMQ's text (540 NOT_IMPLEMENTED) for queue.delete with if-unused or if-empty on a
    quorum queue (rabbit_quorum_queue:delete/4: if-unused is named when both are set)."""
    flag = "if-unused" if if_unused else "if-empty"
    return (f"cannot delete queue '{queue_name}' in vhost '{vhost}'. queue.delete operations "
            f"with {flag} flag set are not supported by quorum queues")
