"""Queue arguments: the x-arguments of queue.declare, validated with RabbitMQ's checks and
reply texts (``invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}``).

The validators are RabbitMQ 3.10's ``rabbit_amqqueue:declare_args()`` for classic queues, run in
its order; each returns the reason RabbitMQ prints with ``~p`` (an Erlang term, or a quoted
string), or None.
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
            refuse("x-queue-type", "only 'classic' queues are supported by this broker")
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
        self.dlx = a.get("x-dead-letter-exchange")
        self.dlrk = a.get("x-dead-letter-routing-key")
        self.single_active = a.get("x-single-active-consumer", False)
        # the RabbitMQ message-deduplication plugin's argument; the plugin validates nothing
        # and turns it on for any value but false (Elixir's truthiness), so do we
        self.dedup = a.get("x-message-deduplication", False) is not False
        fsync = a.get("x-fsync", "always")           # our extension: the queue's fsync policy
        if fsync not in FSYNC_POLICIES:
            refuse("x-fsync", f"{{unacceptable_value,<<\"{fsync}\">>}} (expected always, "
                              f"interval or never)")
        self.fsync = fsync
