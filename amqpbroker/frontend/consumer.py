"""A consumer as the front-end sees it: a tag on a channel, its prefetch and unacked count.

The queue's host keeps the other half (``partition/subscription.py``) with the credit; the
channel returns credit as the client acks (prefetch) or as deliveries go out (no prefetch).
"""
from __future__ import annotations


class Consumer:
    __slots__ = ("tag", "tag_bytes", "channel", "queue", "no_ack", "exclusive", "priority",
                 "prefetch", "unacked", "arguments", "cid", "owed", "credit_out", "key",
                 "member", "partition")

    def __init__(self, tag: str, channel, queue, *, no_ack: bool, exclusive: bool,
                 priority: int, prefetch: int, arguments: dict):
        self.tag = tag
        self.tag_bytes = tag.encode()
        self.channel = channel
        self.queue = queue              # QueueRef, or None for the direct reply-to consumer
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = priority
        self.prefetch = prefetch
        self.unacked = 0
        self.arguments = arguments
        self.cid = queue.client.new_cid() if queue is not None else 0
        self.owed = 0                   # credit not yet returned (no prefetch: in lots)
        self.credit_out = 0             # credit the host holds for this consumer
        self.key = tag                  # its key in the channel's consumers
        self.member = None              # a consumer group member's share of a partition:
        self.partition = None           # its GroupMember and partition number

    @property
    def credit_on_ack(self) -> bool:
        """Credit comes back with acks (a prefetch limit) rather than with each write."""
        return bool(self.prefetch) and not self.no_ack

    def initial_credit(self, window: int) -> int:
        return self.prefetch if self.credit_on_ack else window

    def __repr__(self) -> str:
        return f"<Consumer {self.tag} on {getattr(self.queue, 'name', '?')}>"
