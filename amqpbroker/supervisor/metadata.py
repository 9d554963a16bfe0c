"""Metadata: who may change it (the owner's side; a front-end's is ``frontend/metadata_copy.py``).

The supervisor owns metadata (vhosts, users, exchanges, queues, bindings and where each queue
lives). Channels change it only through ``broker.metadata``:

* ``LocalMetadata`` applies a change to this process's ``Broker`` — the supervisor's, or the
  only process's with ``--frontends 0``. Its methods are coroutines that finish without
  suspending unless they wait for a worker (a queue's files, a delete's message count).
* ``RemoteMetadata`` (a front-end, ``frontend/metadata_copy.py``) sends the change to the supervisor, which applies it with
  ``LocalMetadata``, sends the resulting *ops* to every front-end, then replies. The ops travel
  on the same stream ahead of the reply, so when a front-end's ``queue.declare`` returns, its
  own routing table already has the queue. A call that changed durable metadata replies once
  the change is on disk (``definitions.durable()``, the journal's group commit).

An op is a message of ``contract.METADATA_OPS`` (applied by ``frontend.metadata_copy.apply_op``); ``snapshot`` lists the ops that rebuild everything, for a
front-end that (re)starts.
"""
from __future__ import annotations

import logging

from .. import contract as c
from .. import errors
from ..frontend.events import INTERNAL_USER, acting, emit_metadata, queue_details
from ..frontend.exchange import DEDUP_TYPE
from ..frontend.vhost import PREDECLARED, VirtualHost
from .topics import TYPE as TOPIC

log = logging.getLogger("amqpbroker.metadata")

PREDECLARED_NAMES = {"", *(n for n, _ in PREDECLARED)}


class LocalMetadata:
    """This node's metadata, changed here. In a cluster (``serve --cluster``) the owner's
    ``metadata`` is ``cluster.metadata.EtcdMetadata`` instead: the same calls, each one a
    transaction in etcd that every node applies (docs/CLUSTER.md section 1)."""

    def __init__(self, broker):
        self.broker = broker

    def changed(self, op) -> None:
        """The owner made a change (``owner.changed``); a cluster's metadata pushes some."""

    async def everywhere(self) -> None:
        """Return once what the management API changed holds on every node: here, at once
        (a cluster's waits: ``EtcdMetadata.everywhere``)."""

    def _vhost(self, name: str) -> VirtualHost:
        vh = self.broker.vhosts.get(name)
        if vh is None:
            raise errors.ConnectionForced(f"vhost '{name}' is deleted")
        return vh

    # one method per metadata call of the contract (``contract.METADATA_CALLS``), taking
    # its fields as keywords
    async def declare_exchange(self, *, vhost, name, type, passive, durable, auto_delete,
                               internal, arguments, actor=INTERNAL_USER):
        vh = self._vhost(vhost)
        if type == TOPIC and not passive:       # a topic and its partitions (topics.py)
            await self.broker.topics.declare(vh, name, passive=passive, durable=durable,
                                             auto_delete=auto_delete, internal=internal,
                                             arguments=arguments)
        else:
            with acting(self.broker, actor):
                vh.declare_exchange(name, type, passive=passive, durable=durable,
                                    auto_delete=auto_delete, internal=internal,
                                    arguments=arguments)
        await self.broker.definitions.durable()

    async def delete_exchange(self, *, vhost, name, if_unused, actor=INTERNAL_USER):
        await self.broker.topics.delete(self._vhost(vhost), name, if_unused, actor)
        await self.broker.definitions.durable()

    async def dedup_seen(self, *, vhost, exchange, key, ttl) -> bool:
        """An x-message-deduplication exchange's cache, kept here for the whole node (in a
        cluster, on one node for all: ``EtcdMetadata.dedup_seen``)."""
        return self.dedup_here(vhost=vhost, exchange=exchange, key=key, ttl=ttl)

    async def delay_message(self, *, vhost, exchange, keys, record, priority, delay) -> None:
        """An x-delayed-message exchange's message, held here until it is due (in a cluster
        too: each node holds what was published through it, as the plugin's)."""
        await self.broker.delayed.hold(vhost, exchange, keys, record, priority, delay)

    async def keep_recent(self, *, vhost, exchange, record) -> None:
        """A message routed through an x-recent-history exchange (recent_history.py)."""
        self.broker.recent.keep(vhost, exchange, record)

    def dedup_here(self, *, vhost, exchange, key, ttl) -> bool:
        """Whether this node's cache of the exchange saw ``key`` (and it is noted now)."""
        vh = self.broker.vhosts.get(vhost)
        ex = vh.exchanges.get(exchange) if vh is not None else None
        return ex is not None and ex.type == DEDUP_TYPE and ex.seen(key, ttl)

    async def bind(self, *, vhost, kind, destination, source, key, arguments, owner, cid, mid,
                   actor=INTERNAL_USER):
        with acting(self.broker, actor):
            self._vhost(vhost).bind(kind, destination, source, key, arguments, owner, cid, mid)
        await self.broker.recent.delivered()    # an x-recent-history exchange's history
        await self.broker.definitions.durable()

    async def unbind(self, *, vhost, kind, destination, source, key, arguments, owner, cid, mid,
                     actor=INTERNAL_USER):
        with acting(self.broker, actor):
            self._vhost(vhost).unbind(kind, destination, source, key, arguments, owner, cid,
                                      mid)
        await self.broker.definitions.durable()

    async def declare_queue(self, *, vhost, name, owner, passive, durable, exclusive, auto_delete,
                            arguments, actor=INTERNAL_USER) -> str:
        vh = self._vhost(vhost)
        q = vh.declare_queue(name, owner=owner, passive=passive, durable=durable,
                             exclusive=exclusive, auto_delete=auto_delete, arguments=arguments)
        await q.opened                  # 506 if the data directory refused its files
        self.broker.stats.queues_declared += 1
        if not q.announced:             # front-ends learn of it once its worker has it open
            q.announced = True
            self.broker.changed(queue_op(q))
            with acting(self.broker, actor):
                emit_metadata(self.broker, "queue.created", queue_details(q))
        await self.broker.definitions.durable()
        return q.name

    async def delete_queue(self, *, vhost, name, owner, if_unused, if_empty,
                           actor=INTERNAL_USER) -> int:
        vh = self._vhost(vhost)
        q = vh.queues.get(name)
        if q is None:
            return 0
        vh.check_exclusive(q, owner, 50, 40)
        count = await vh.delete_queue_checked(q, if_unused, if_empty, actor)
        await self.broker.definitions.durable()
        return count

    async def join_group(self, *, vhost, topic, group, member, instance_id, connection):
        """A consumer joins a consumer group (``groups.py``); 406 if its instance id is in
        use."""
        self._vhost(vhost)
        await self.broker.groups.join(vhost, topic, group, member, instance_id, connection)

    async def leave_group(self, *, vhost, topic, group, member, permanent):
        self.broker.groups.leave(vhost, topic, group, member, permanent)

    async def delete_queue_now(self, *, vhost, name, qid, reason):
        """No conditions: the exclusive owner's connection closed."""
        vh = self.broker.vhosts.get(vhost)
        q = vh.queues.get(name) if vh is not None else None
        if q is not None and q.qid == qid:
            vh.delete_queue(q, reason)


# ---------------------------------------------------------------- ops
def queue_op(q) -> c.QueueOp:
    """A queue forwarded to another node (cluster/forward.py) is named by its copy on this
    node's worker: a front-end's ref starts there and follows the supervisor's ``Leaders``."""
    qid, client = q.qid, q.client
    fw = q.vhost.broker.forwarder
    if fw is not None and q in fw.local_copies:
        client, qid = fw.local_copies[q]
    return c.QueueOp(vhost=q.vhost.name, name=q.name, qid=qid, worker=client.index,
                     durable=q.durable, owner=q.exclusive_owner, auto_delete=q.auto_delete,
                     arguments=q.arguments, directory=q.directory)


def users_op(users) -> c.UsersOp:
    """Users and all their permissions, whole, for the front-ends' copies."""
    return c.UsersOp(users=users.users, permissions=users.permissions,
                     topic_permissions=users.topic_permissions)


def global_parameters_op(broker) -> c.GlobalParametersOp:
    """The global parameters, whole (a copy: the op may wait in a batch)."""
    return c.GlobalParametersOp(parameters=dict(broker.global_parameters))


def snapshot(broker) -> list:
    ops = [users_op(broker.users), global_parameters_op(broker)]
    for vh in broker.vhosts.values():
        ops.append(vh.op())
        if vh.tracing:
            ops.append(c.VhostTracingOp(name=vh.name, on=True))
        if vh.limits:
            ops.append(c.VhostLimitsOp(name=vh.name, limits=vh.limits))
        for p in (*vh.policies.values(), *vh.operator_policies.values()):
            ops.append(c.PolicyOp(vhost=vh.name, name=p.name, item=p.item(),
                                  operator=p.operator))
        for ex in vh.exchanges.values():
            if ex.name not in PREDECLARED_NAMES or ex.policy_alternate is not None:
                ops.append(vh.exchange_op(ex))
        for q in vh.queues.values():
            ops.append(queue_op(q))
        for ex, dest, _, key, args in vh.bindings():
            ops.append(vh.binding_op(c.BindOp, ex, dest, key, args))
    return ops
