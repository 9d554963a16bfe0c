"""A queue as the front-end sees it: its declaration, where it lives, and its flow state.

The messages, consumers and acks of the queue are on its partition host (``worker/host.py``, reached through
``partition_client.py``);
a ``QueueRef`` is what exchanges bind to, what routing returns, and what channels publish to,
consume from and settle with.

Opening can fail (the host answers 506: a full disk, too many open files, a bad stored
argument). A queue a client is declaring for the first time is then forgotten: the declare
fails and nothing was stored. A queue that existed before — restored at start, or reopened
after its worker restarted — stays defined and keeps its files: it is *down* (``down`` says
why), declares of it are refused, and its host refuses everything else.
"""
from __future__ import annotations

import logging

from .. import contract as c
from .. import errors
from ..logs import context
from ..policies import choose, effective_arguments, merged
from ..queue_args import (QUORUM_EQUIVALENT_ARGS, QueueArgs, check_quorum_properties,
                          check_stream_declare)
from .partition_client import HostGone

log = logging.getLogger("amqpbroker.queue")

# the arguments a redeclare must repeat: RabbitMQ 3.10's for classic queues, and x-fsync
EQUIVALENT_ARGS = ("x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes",
                   "x-overflow", "x-dead-letter-exchange", "x-dead-letter-routing-key",
                   "x-single-active-consumer", "x-max-priority", "x-queue-type", "x-queue-mode",
                   "x-queue-version", "x-queue-master-locator", "x-fsync")
# a stream's: RabbitMQ 3.13's stream queue_arguments, and x-fsync
STREAM_EQUIVALENT_ARGS = ("x-max-length-bytes", "x-queue-type", "x-max-age",
                          "x-stream-max-segment-size-bytes", "x-initial-cluster-size",
                          "x-queue-leader-locator", "x-fsync")


class QueueRef:
    def __init__(self, vhost, name: str, *, durable: bool, exclusive_owner, auto_delete: bool,
                 arguments: dict, directory: str, client, qid: int | None = None,
                 existed: bool = False):
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.existed = existed or qid is not None   # stored before: a failed open keeps it
        self.down: str | None = None        # why its host could not open it
        try:
            self.args = QueueArgs(name, vhost.name, arguments)     # validates: raises 406
            if self.args.queue_type == "quorum":
                check_quorum_properties(name, vhost.name, durable=durable,
                                        exclusive=exclusive_owner is not None,
                                        auto_delete=auto_delete)
        except errors.AMQPError:
            if not self.existed:
                raise
            # stored under older rules: kept as stored; its host refuses it the same way
            self.args = QueueArgs(name, vhost.name, {})
        self.is_stream = self.args.stream is not None     # deliveries carry x-stream-offset
        if self.is_stream and not self.existed:
            check_stream_declare(name, vhost.name, durable=durable,
                                 exclusive=exclusive_owner is not None,
                                 auto_delete=auto_delete, arguments=arguments)
        self.arguments = dict(arguments or {})
        # its policy (policies.py), and the arguments its host runs it with: the declared
        # ones with the policy's resolved in (a front-end's copy too: its channels read the
        # consumer timeout there, frontend/ack_timeouts.py)
        self.policy = self.operator_policy = None
        self.effective = self.arguments
        self.choose_policy()
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
        """Ask the host to create or recover the queue; the future fails with 506 if the host
        cannot open it (the queue is then forgotten, or down if it existed)."""
        fut = self.open_on(self.client, self.qid)
        fut.add_done_callback(self._open_done)
        return fut

    def open_on(self, client, qid: int):
        """Ask ``client``'s host to open the queue as ``qid``: ``open``, and a forwarded
        queue's local copy, opened again by a restarted worker (``forward.worker_back``)."""
        return client.request(c.Open, qid=qid, vhost=self.vhost.name, name=self.name,
                              durable=self.durable, auto_delete=self.auto_delete,
                              arguments=self.effective, directory=self.directory)

    # ------------------------------------------------------------ policies
    @property
    def queue_type(self) -> str:
        return "stream" if self.is_stream else self.args.queue_type

    def choose_policy(self) -> None:
        policy = choose(self.vhost.policies.values(), self.name, self.queue_type)
        operator = choose(self.vhost.operator_policies.values(), self.name, self.queue_type)
        effective = effective_arguments(merged(policy, operator), self.arguments,
                                        self.queue_type)
        if policy is not None or operator is not None:
            try:
                QueueArgs(self.name, self.vhost.name, effective)
            except errors.AMQPError as exc:     # e.g. a policy's value its type refuses
                log.warning("policy '%s' does not apply to queue '%s' in vhost '%s': %s",
                            (policy or operator).name, self.name, self.vhost.name, exc.text)
                policy = operator = None
                effective = self.arguments
        self.policy, self.operator_policy, self.effective = policy, operator, effective

    def effective_policy_definition(self) -> dict:
        """RabbitMQ's: its policy's definition with its operator policy's merged in."""
        return merged(self.policy, self.operator_policy)

    def apply_policy(self) -> None:
        """The vhost's policies changed: if this queue's arguments did, the hosts of this
        node's copies take them at once (``Queue.apply_arguments``)."""
        before = self.effective
        self.choose_policy()
        if self.effective != before and not self.deleted:
            for client, qid in self.local_hosts():
                client.send(c.SetArguments(qid=qid, arguments=self.effective))

    def local_hosts(self):
        """(client, qid) of this node's copies: where it is served, unless that is another
        node (its leader there is told by that node's own copy of the policies), and the
        copy a cluster keeps open here while another node leads (a follower's replica: it
        leads with the arguments of the time)."""
        if not self.client.remote:
            yield self.client, self.qid
        fw = self.vhost.broker.forwarder
        copy = fw.local_copies.get(self) if fw is not None else None
        if copy is not None and copy[0] is not self.client:
            yield copy

    def _open_done(self, fut) -> None:
        if fut is not self.opened:
            return              # superseded: the queue moved to another host meanwhile
        exc = None if fut.cancelled() else fut.exception()
        if exc is None:
            if self.down is not None:
                log.warning("queue '%s' in vhost '%s' is open again", self.name,
                            self.vhost.name, extra=self._log_context())
            self.down = None
            self.existed = True
        elif isinstance(exc, HostGone) or self.deleted:
            pass                # its worker is restarting: the new one opens it again
        elif self.existed:
            self.down = getattr(exc, "text", str(exc)).removeprefix(
                "cannot complete the method: ")
            log.error("queue '%s' in vhost '%s' is down: it could not be opened (%s). It stays "
                      "defined and its files in %s are kept; declares of it are refused until "
                      "a start opens it", self.name, self.vhost.name, self.down, self.directory,
                      extra=self._log_context())
        else:
            log.error("%r could not be created: %s", self, exc, extra=self._log_context())
            self.vhost.forget_queue(self, "open failed")

    def _log_context(self) -> dict:
        return context(queue=self.name, vhost=self.vhost.name)

    def refuse_if_down(self, class_id: int, method_id: int) -> None:
        """A declare of a down queue: RabbitMQ's 404 for a crashed queue."""
        if self.down is not None:
            raise errors.queue_down(self.vhost.name, self.name, self.down, class_id, method_id)

    # ------------------------------------------------------------ messages
    def publish(self, record, priority: int, track: bool, flags: int = 0) -> int:
        """Send a message to the queue; returns its publish number (for confirms).
        ``flags``: ``contract.PUB_*``."""
        return self.client.publish(self.qid, record, priority, track, flags)

    def ack(self, offsets: list[int]) -> int:
        return self.client.ack(self.qid, offsets)

    def reject(self, offsets: list[int], requeue: bool) -> int:
        return self.client.reject(self.qid, offsets, requeue)

    def modify(self, offset: int, requeue: bool, properties: bytes) -> int:
        return self.client.modify(self.qid, offset, requeue, properties)

    def set_backlogged(self, on: bool) -> None:
        self.backlogged = on
        if not on and self.flow_waiters:
            waiters, self.flow_waiters = self.flow_waiters, set()
            for session in waiters:
                session.unthrottle(self)

    # ------------------------------------------------------------ requests (futures)
    def subscribe(self, consumer, credit: int):
        self.client.consumers[consumer.cid] = consumer
        return self.client.request(c.Sub, qid=self.qid, cid=consumer.cid, tag=consumer.tag,
                                   no_ack=consumer.no_ack, exclusive=consumer.exclusive,
                                   arguments=consumer.arguments, credit=credit)

    def unsubscribe(self, consumer, wait: bool = False):
        """Stop the consumer; with ``wait``, a future done once the host has (an auto-delete
        queue is gone by then, as RabbitMQ deletes it before cancel-ok)."""
        if self.client.consumers.pop(consumer.cid, None) is None or self.deleted:
            return None
        if wait:
            return self.client.request(c.Unsub, cid=consumer.cid)
        self.client.send(c.Unsub(req=0, cid=consumer.cid))
        return None

    def get(self, no_ack: bool):
        return self.client.request(c.Get, qid=self.qid, no_ack=no_ack)

    def purge(self):
        return self.client.request(c.Purge, qid=self.qid)

    async def counts(self) -> tuple[int, int]:
        """(messages ready, consumers)."""
        stats = await self.client.request(c.Stats, qids=[self.qid])
        s = stats.get(self.qid)
        return (s[0], s[1]) if s else (0, 0)

    def delete(self, if_unused: bool, if_empty: bool):
        return self.client.request(c.Delete, qid=self.qid, if_unused=if_unused,
                                   if_empty=if_empty)

    def touch(self) -> None:
        # a policy's expires too, which a front-end's copy does not know: the host decides
        self.client.send(c.Touch(qid=self.qid))

    # ------------------------------------------------------------ declaration
    def equivalent(self, durable, exclusive, auto_delete, arguments) -> str | None:
        if durable != self.durable:
            return "durable"
        if exclusive != (self.exclusive_owner is not None):
            return "exclusive"
        if auto_delete != self.auto_delete:
            return "auto_delete"
        if self.is_stream:
            keys = STREAM_EQUIVALENT_ARGS
        elif self.args.queue_type == "quorum":
            keys = QUORUM_EQUIVALENT_ARGS
        else:
            keys = EQUIVALENT_ARGS
        for key in keys:
            got, current = (arguments or {}).get(key), self.arguments.get(key)
            if got != current and not (key == "x-queue-type" and got in (None, "classic")
                                       and current in (None, "classic")):
                return key
        return None

    def __repr__(self) -> str:
        return f"<QueueRef {self.name!r} in {self.vhost.name!r} on worker {self.client.index}>"
