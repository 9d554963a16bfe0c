"""A consumer: the link between a queue and the channel that receives its messages.

The queue asks ``can_take()`` (credit: prefetch, flow, socket writable) and calls
``deliver``; the channel owns delivery tags and unacked messages.
"""
from __future__ import annotations


class Consumer:
    __slots__ = ("tag", "tag_bytes", "channel", "queue", "no_ack", "exclusive", "priority",
                 "prefetch", "unacked", "arguments")

    def __init__(self, tag: str, channel, queue, *, no_ack: bool, exclusive: bool,
                 priority: int, prefetch: int, arguments: dict):
        self.tag = tag
        self.tag_bytes = tag.encode()
        self.channel = channel
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = priority
        self.prefetch = prefetch
        self.unacked = 0
        self.arguments = arguments

    def can_take(self) -> bool:
        return self.channel.can_deliver(self)

    def deliver(self, queue, offset, record, redelivered: bool) -> None:
        self.channel.deliver(self, queue, offset, record, redelivered)

    def cancelled_by_broker(self) -> None:
        self.channel.consumer_cancelled(self)

    def __repr__(self) -> str:
        return f"<Consumer {self.tag} on {getattr(self.queue, 'name', '?')}>"
