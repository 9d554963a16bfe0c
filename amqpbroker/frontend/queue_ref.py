"""A queue as the front-end sees it: its declaration, where it lives, and its flow state.

The messages, consumers and acks of the queue are on its partition host (``partition/``);
a ``QueueRef`` is what exchanges bind to, what routing returns, and what channels publish to,
consume from and settle with.
"""
from __future__ import annotations

import logging

from ..queue_args import QueueArgs

log = logging.getLogger("amqpbroker.queue")

# the arguments a redeclare must repeat: RabbitMQ 3.10's for classic queues, and x-fsync
EQUIVALENT_ARGS = ("x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes",
                   "x-overflow", "x-dead-letter-exchange", "x-dead-letter-routing-key",
                   "x-single-active-consumer", "x-max-priority", "x-queue-type", "x-queue-mode",
                   "x-queue-version", "x-queue-master-locator", "x-fsync")


class QueueRef:
    def __init__(self, vhost, name: str, *, durable: bool, exclusive_owner, auto_delete: bool,
                 arguments: dict, directory: str, client, qid: int | None = None):
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.args = QueueArgs(name, vhost.name, arguments)     # validates: raises 406
        self.arguments = self.args.arguments
        self.directory = directory
        self.client = client
        self.deleted = False
        self.backlogged = False             # the host asked publishers to wait
        self.flow_waiters: set = set()      # sessions waiting for that to end
        self.announced = False              # front-ends were told (supervisor/metadata.py)
        if qid is None:                     # a new queue: its host creates or recovers it
            self.qid = client.new_qid()
            client.refs[self.qid] = self
            self.opened = self.open()
        else:                               # a front-end's copy of a queue already open
            self.qid = qid
            client.refs[qid] = self
            self.opened = client.loop.create_future()
            self.opened.set_result(None)

    def open(self):
        """Ask the host to create or recover the queue; the future fails with 506 if the data
        directory refuses (the queue is then forgotten)."""
        fut = self.client.request("open", self.qid, self.vhost.name, self.name, self.durable,
                                  self.auto_delete, self.arguments, self.directory)
        fut.add_done_callback(self._open_done)
        return fut

    def _open_done(self, fut) -> None:
        exc = None if fut.cancelled() else fut.exception()
        # 506: the data directory refused the queue's files (a restarting worker is not that)
        if getattr(exc, "reply_code", 0) == 506 and not self.deleted:
            log.error("%r could not be opened: %s", self, fut.exception())
            self.vhost.forget_queue(self, "open failed")

    # ------------------------------------------------------------ messages
    def publish(self, record, priority: int, track: bool) -> int:
        """Send a message to the queue; returns its publish number (for confirms)."""
        return self.client.publish(self.qid, record, priority, track)

    def ack(self, offsets: list[int]) -> int:
        return self.client.settle("ack", self.qid, offsets)

    def reject(self, offsets: list[int], requeue: bool) -> int:
        return self.client.settle("reject", self.qid, offsets, requeue)

    def set_backlogged(self, on: bool) -> None:
        self.backlogged = on
        if not on and self.flow_waiters:
            waiters, self.flow_waiters = self.flow_waiters, set()
            for session in waiters:
                session.unthrottle(self)

    # ------------------------------------------------------------ requests (futures)
    def subscribe(self, consumer, credit: int):
        self.client.consumers[consumer.cid] = consumer
        return self.client.request("sub", self.qid, consumer.cid, consumer.tag,
                                   consumer.no_ack, consumer.exclusive, consumer.priority,
                                   credit)

    def unsubscribe(self, consumer, wait: bool = False):
        """Stop the consumer; with ``wait``, a future done once the host has (an auto-delete
        queue is gone by then, as RabbitMQ deletes it before cancel-ok)."""
        if self.client.consumers.pop(consumer.cid, None) is None or self.deleted:
            return None
        if wait:
            return self.client.request("unsub", consumer.cid)
        self.client.send(("unsub", 0, consumer.cid))
        return None

    def get(self, no_ack: bool):
        return self.client.request("get", self.qid, no_ack)

    def purge(self):
        return self.client.request("purge", self.qid)

    async def counts(self) -> tuple[int, int]:
        """(messages ready, consumers)."""
        stats = await self.client.request("stats", [self.qid])
        s = stats.get(self.qid)
        return (s[0], s[1]) if s else (0, 0)

    def delete(self, if_unused: bool, if_empty: bool):
        return self.client.request("delete", self.qid, if_unused, if_empty)

    def touch(self) -> None:
        if self.args.expires is not None:
            self.client.send(("touch", self.qid))

    # ------------------------------------------------------------ declaration
    def equivalent(self, durable, exclusive, auto_delete, arguments) -> str | None:
        if durable != self.durable:
            return "durable"
        if exclusive != (self.exclusive_owner is not None):
            return "exclusive"
        if auto_delete != self.auto_delete:
            return "auto_delete"
        for key in EQUIVALENT_ARGS:
            got, current = (arguments or {}).get(key), self.arguments.get(key)
            if got != current and not (key == "x-queue-type" and got in (None, "classic")
                                       and current in (None, "classic")):
                return key
        return None

    def __repr__(self) -> str:
        return f"<QueueRef {self.name!r} in {self.vhost.name!r} on worker {self.client.index}>"
