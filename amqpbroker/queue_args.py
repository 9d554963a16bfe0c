"""Queue arguments: the x-arguments of queue.declare, validated with RabbitMQ's checks and
reply texts (``invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}``).
"""
from __future__ import annotations

from . import errors
from .storage.fileformat import FSYNC_POLICIES

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")


class QueueArgs:
    """Validated x-arguments of a queue (RabbitMQ's names and checks)."""

    def __init__(self, queue_name: str, vhost: str, arguments: dict):
        self.arguments = dict(arguments or {})
        a = self.arguments

        def intarg(key, minimum=0):
            v = a.get(key)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise errors.PreconditionFailed(
                    f"invalid arg '{key}' for queue '{queue_name}' in vhost '{vhost}': "
                    f"{{value_negative,{v}}}" if isinstance(v, int) and v < minimum else
                    f"invalid arg '{key}' for queue '{queue_name}' in vhost '{vhost}': "
                    f"{{unacceptable_type,{type(v).__name__}}}", 50, 10)
            return v

        self.message_ttl = intarg("x-message-ttl")
        self.expires = intarg("x-expires", 1)
        self.max_length = intarg("x-max-length")
        self.max_length_bytes = intarg("x-max-length-bytes")
        self.max_priority = intarg("x-max-priority")
        if self.max_priority is not None:
            self.max_priority = min(self.max_priority, 255)
        overflow = a.get("x-overflow", "drop-head")
        if isinstance(overflow, bytes):
            overflow = overflow.decode()
        if overflow not in OVERFLOW_MODES:
            raise errors.PreconditionFailed(
                f"invalid arg 'x-overflow' for queue '{queue_name}' in vhost '{vhost}': "
                f"{{unacceptable_value,<<\"{overflow}\">>}}", 50, 10)
        self.overflow = overflow
        self.dlx = a.get("x-dead-letter-exchange")
        self.dlrk = a.get("x-dead-letter-routing-key")
        if self.dlrk is not None and self.dlx is None:
            raise errors.PreconditionFailed(
                f"invalid arg 'x-dead-letter-routing-key' for queue '{queue_name}' in vhost "
                f"'{vhost}': Key x-dead-letter-exchange should also be defined", 50, 10)
        self.single_active = bool(a.get("x-single-active-consumer", False))
        fsync = a.get("x-fsync", "always")           # our extension: the queue's fsync policy
        if isinstance(fsync, bytes):
            fsync = fsync.decode()
        if fsync not in FSYNC_POLICIES:
            raise errors.PreconditionFailed(
                f"invalid arg 'x-fsync' for queue '{queue_name}' in vhost '{vhost}': "
                f"{{unacceptable_value,<<\"{fsync}\">>}} (expected always, interval or never)",
                50, 10)
        self.fsync = fsync
        qtype = a.get("x-queue-type", "classic")
        if qtype not in ("classic", b"classic"):
            raise errors.PreconditionFailed(
                f"invalid arg 'x-queue-type' for queue '{queue_name}' in vhost '{vhost}': "
                f"only 'classic' queues are supported by this broker", 50, 10)
