"""Queue arguments: the x-arguments of queue.declare, validated with RabbitMQ's checks and
reply texts (``invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}``).

The validators are RabbitMQ 3.10's ``rabbit_amqqueue:declare_args()`` for classic queues, run in
its order; each returns the reason RabbitMQ prints with ``~p`` (an Erlang term, or a quoted
string), or None. Streams and quorum queues are checked as RabbitMQ checks them instead: the
blocks at the end of this file.
"""
from __future__ import annotations

import calendar
import datetime
import time

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
                                                    "x-queue-mode", "x-dead-letter-strategy"):
                a[key] = value.decode(errors="replace")

        def refuse(key, reason):
            raise errors.PreconditionFailed(
                f"invalid arg '{key}' for queue '{queue_name}' in vhost '{vhost}': {reason}",
                50, 10)

        qtype = a.get("x-queue-type", "classic")      # RabbitMQ checks this one first
        self.queue_type = qtype
        if qtype != "classic":
            if not isinstance(qtype, str):
                refuse("x-queue-type", f"{{unacceptable_type,{amqp_type(qtype)}}}")
            if qtype not in ("quorum", "stream"):
                refuse("x-queue-type", f"\"unsupported queue type '{qtype}'\"")
            if qtype == "stream":
                self.stream = StreamArgs(queue_name, vhost, a)
                self.message_ttl = self.expires = self.max_length = self.max_priority = None
                self.dlx = self.dlrk = None
                self.max_length_bytes = self.stream.max_length_bytes
                self.overflow = "drop-head"
                self.single_active = False
                self.dedup = False
                self.delivery_limit = self.initial_group_size = None
                self.fsync = a.get("x-fsync", "always")
                if self.fsync not in FSYNC_POLICIES:
                    refuse("x-fsync", f"{{unacceptable_value,<<\"{self.fsync}\">>}} (expected "
                                      f"always, interval or never)")
                return
            if qtype != "quorum":
                refuse("x-queue-type", "only 'classic', 'quorum' and 'stream' queues are "
                                       "supported by this broker")
        self.stream = None
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
        # quorum queues only (classic queues keep the argument and dead-letter at most once,
        # as RabbitMQ's): worker/discards.py says when at-least-once applies
        self.dl_strategy = (a.get("x-dead-letter-strategy", "at-most-once")
                            if qtype == "quorum" else "at-most-once")
        self.single_active = a.get("x-single-active-consumer", False)
        # the RabbitMQ message-deduplication plugin's argument; the plugin validates nothing
        # and turns it on for any value but false (Elixir's truthiness), so do we
        self.dedup = a.get("x-message-deduplication", False) is not False
        fsync = a.get("x-fsync", "always")           # our extension: the queue's fsync policy
        if fsync not in FSYNC_POLICIES:
            refuse("x-fsync", f"{{unacceptable_value,<<\"{fsync}\">>}} (expected always, "
                              f"interval or never)")
        self.fsync = fsync
        self.delivery_limit = quorum_delivery_limit(a) if qtype == "quorum" else None
        self.initial_group_size = a.get("x-quorum-initial-group-size")  # stored; one node


# =================================================================== streams
# RabbitMQ 3.13's checks for ``x-queue-type: stream`` (rabbit_amqqueue:check_declare_arguments
# with rabbit_stream_queue:capabilities(), then rabbit_stream_queue:declare), and its
# consumer-side ones (check_consume_arguments, rabbit_stream_queue:consume). Kept in this one
# block: the stream worker (worker/stream.py) and the front-end's channel both use it.

STREAM_TYPE = "rabbit_stream_queue"           # how RabbitMQ names the type in its texts
MAX_STREAM_SEGMENT_BYTES = 3_000_000_000       # ?MAX_STREAM_MAX_SEGMENT_SIZE
# every queue argument some other queue type knows and streams do not (3.13's capabilities:
# classic + quorum queue_arguments minus the stream's): refused by key
STREAM_REFUSED_ARGS = frozenset((
    "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
    "x-max-length", "x-max-priority", "x-overflow", "x-queue-mode", "x-queue-version",
    "x-single-active-consumer", "x-queue-master-locator", "x-dead-letter-strategy",
    "x-max-in-memory-length", "x-max-in-memory-bytes", "x-quorum-initial-group-size",
    "x-delivery-limit"))
STREAM_REFUSED_CONSUMER_ARGS = ("x-priority", "x-cancel-on-ha-failover")
MAX_AGE_UNITS_MS = {"Y": 365 * 86_400_000, "M": 30 * 86_400_000, "D": 86_400_000,
                    "h": 3_600_000, "m": 60_000, "s": 1000}


def parse_max_age(text) -> int | None:
    """``<int><unit>`` (units Y M D h m s, the integer > 0) in milliseconds, as RabbitMQ's
    check_max_age; None if it is not one."""
    if not isinstance(text, str):
        return None
    digits = len(text) - len(text.lstrip("0123456789"))
    value, unit = text[:digits], text[digits:]
    if not value or int(value) <= 0 or unit not in MAX_AGE_UNITS_MS:
        return None
    return int(value) * MAX_AGE_UNITS_MS[unit]


def _max_age(v, args) -> str | None:
    if not isinstance(v, str):
        return f"{{unacceptable_type,{amqp_type(v)}}}"
    return None if parse_max_age(v) is not None else "invalid_max_age"


def _initial_cluster_size(v, args) -> str | None:
    return _non_negative(v) or ("{value_zero,0}" if v == 0 else None)


def _stream_leader_locator(v, args) -> str | None:
    if not isinstance(v, str):
        return f"{{unacceptable_type,{amqp_type(v)}}}"
    return None if v in ("client-local", "balanced") else \
        f'"\'{v}\' is not a valid queue leader locator value"'


STREAM_VALIDATORS = (          # RabbitMQ's declare_args() order, the stream's arguments only
    ("x-max-length-bytes", lambda v, args: _non_negative(v)),
    ("x-max-age", _max_age),
    ("x-stream-max-segment-size-bytes", lambda v, args: _non_negative(v)),
    ("x-initial-cluster-size", _initial_cluster_size),
    ("x-queue-leader-locator", _stream_leader_locator),
)


class StreamArgs:
    """Validated arguments of a stream: retention and segment size."""

    def __init__(self, queue_name: str, vhost: str, a: dict):
        where = f"queue '{queue_name}' in vhost '{vhost}'"
        for key, check in STREAM_VALIDATORS:
            if key in a:
                reason = check(a[key], a)
                if reason is not None:
                    raise errors.PreconditionFailed(
                        f"invalid arg '{key}' for {where}: {reason}", 50, 10)
        for key in a:                 # in the client's order, as RabbitMQ walks them
            if key in STREAM_REFUSED_ARGS:
                raise errors.PreconditionFailed(
                    f"invalid arg '{key}' for {where} of queue type {STREAM_TYPE}", 50, 10)
        self.max_age_ms = parse_max_age(a["x-max-age"]) if "x-max-age" in a else None
        self.max_length_bytes = a.get("x-max-length-bytes")
        self.segment_bytes = a.get("x-stream-max-segment-size-bytes")
        self.initial_cluster_size = a.get("x-initial-cluster-size", 1)


def check_stream_declare(queue_name: str, vhost: str, *, durable: bool, exclusive: bool,
                         auto_delete: bool, arguments: dict) -> None:
    """rabbit_stream_queue:declare's checks, after the arguments' (their order and texts)."""
    where = f"queue '{queue_name}' in vhost '{vhost}'"
    if auto_delete:
        raise errors.PreconditionFailed(f"invalid property 'auto-delete' for {where}", 50, 10)
    if exclusive:
        raise errors.PreconditionFailed(f"invalid property 'exclusive-owner' for {where}",
                                        50, 10)
    if not durable:
        raise errors.PreconditionFailed(f"invalid property 'non-durable' for {where}", 50, 10)
    size = (arguments or {}).get("x-stream-max-segment-size-bytes")
    if isinstance(size, int) and size > MAX_STREAM_SEGMENT_BYTES:
        raise errors.PreconditionFailed(
            "Exceeded max value for x-stream-max-segment-size-bytes", 50, 10)


# ------------------------------------------------------------------- x-stream-offset
# An offset spec, as the worker's cursor starts from it:
#   ("first",) ("last",) ("next",) ("offset", n) ("timestamp", ms since the epoch)
def parse_stream_offset(value, now_ms: int) -> tuple:
    """The consumer argument ``x-stream-offset`` as an offset spec (RabbitMQ's
    parse_offset_arg); ValueError with RabbitMQ's reason term if it is not one.

    A string other than first/last/next is an interval back from now (``30m``, ``7D``); an
    AMQP timestamp (seconds, a ``datetime`` once decoded) is a point in time; an integer is
    an absolute offset (clamped to the log by the cursor)."""
    if value is None:
        return ("next",)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode(errors="replace")
    if isinstance(value, str):
        if value in ("first", "last", "next"):
            return (value,)
        ms = parse_max_age(value)
        if ms is None:
            raise ValueError(f"{{invalid_stream_offset_arg,{{longstr,"
                             f"{errors.erl_binary(value.encode())}}}}}")
        return ("timestamp", now_ms - ms)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:                    # pamqp decodes 'T' as UTC
            value = value.replace(tzinfo=datetime.timezone.utc)
        return ("timestamp", int(value.timestamp()) * 1000)
    if isinstance(value, time.struct_time):
        return ("timestamp", calendar.timegm(value) * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        return ("offset", value)
    # RabbitMQ passes these on to osiris, which fails the consumer with 541 INTERNAL_ERROR;
    # we refuse them as an invalid argument
    shown = str(value).lower() if isinstance(value, bool) else repr(value)
    raise ValueError(f"{{invalid_stream_offset_arg,{{{amqp_type(value)},{shown}}}}}")


class StreamFilter:
    """``x-stream-filter`` (a string or an array of strings) and ``x-stream-match-unfiltered``
    of a consumer, as RabbitMQ 3.13's filter_spec reads them; ``accepts`` decides for one
    message by its ``x-stream-filter-value`` header (None: the message has none)."""
    __slots__ = ("values", "match_unfiltered")

    def __init__(self, values: frozenset, match_unfiltered: bool):
        self.values = values
        self.match_unfiltered = match_unfiltered

    @classmethod
    def from_arguments(cls, args: dict) -> "StreamFilter | None":
        raw = args.get("x-stream-filter")
        if isinstance(raw, (bytes, str)):
            raw = [raw]
        if not isinstance(raw, (list, tuple)):
            return None                 # no filter: every message
        values = frozenset(v.decode(errors="replace") if isinstance(v, bytes) else v
                           for v in raw if isinstance(v, (str, bytes)))
        match = args.get("x-stream-match-unfiltered")
        return cls(values, match if isinstance(match, bool) else False)

    def accepts(self, value) -> bool:
        if value is None:
            return self.match_unfiltered
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        return value in self.values


def check_stream_consume(queue_name: str, vhost: str, arguments: dict, *, prefetch: int,
                         no_ack: bool, global_qos: bool, now_ms: int) -> None:
    """basic.consume on a stream, RabbitMQ 3.13's checks in its order: the consumer
    arguments (x-stream-offset's value, then keys other queue types know), prefetch, no_ack,
    global qos."""
    where = f"queue '{queue_name}' in vhost '{vhost}'"
    args = arguments or {}
    if "x-stream-offset" in args:
        try:
            parse_stream_offset(args["x-stream-offset"], now_ms)
        except ValueError as exc:
            raise errors.PreconditionFailed(
                f"invalid arg 'x-stream-offset' for {where}: {exc}", 60, 20) from None
    for key in args:
        if key in STREAM_REFUSED_CONSUMER_ARGS:
            raise errors.PreconditionFailed(
                f"invalid arg '{key}' for {where} of queue type {STREAM_TYPE}", 60, 20)
    if not prefetch:
        raise errors.PreconditionFailed(f"consumer prefetch count is not set for '{where}'",
                                        60, 20)
    if no_ack:
        raise errors.NotImplemented_(
            f"automatic acknowledgement not supported by stream queues {where}", 60, 20)
    if global_qos:
        raise errors.NotImplemented_(f"{where} does not support global qos", 60, 20)


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


def _quorum_leader_locator(v, args) -> str | None:
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
    ("x-queue-leader-locator", _quorum_leader_locator),
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


# ------------------------------------------------------- a vhost's default queue type
# RabbitMQ's ``default_queue_type`` of a virtual host (``rabbitmqctl add_vhost
# --default-queue-type``, the management API's ``default_queue_type``): a queue declared
# without ``x-queue-type`` gets the vhost's type when that type can have it — quorum queues
# and streams are durable, not exclusive, not auto-delete — and is classic otherwise, so
# unchanged client code gets replicated queues in a cluster (rabbit_amqqueue's
# augment_declare_args). The type is written into the queue's arguments, as RabbitMQ does.
QUEUE_TYPES = ("classic", "quorum", "stream")


def with_default_type(default: str | None, arguments: dict, *, durable: bool, exclusive: bool,
                      auto_delete: bool) -> dict:
    """A new queue's arguments with the vhost's default type put in where it applies."""
    if default in (None, "classic") or "x-queue-type" in arguments:
        return arguments
    if not durable or exclusive or auto_delete:
        return arguments
    return {**arguments, "x-queue-type": default}
