"""Metadata: who may change it, and how front-ends keep their copy.

The supervisor owns metadata (vhosts, users, exchanges, queues, bindings and where each queue
lives). Channels change it only through ``broker.metadata``:

* ``LocalMetadata`` applies a change to this process's ``Broker`` — the supervisor's, or the
  only process's with ``--frontends 0``. Its methods are coroutines that finish without
  suspending unless they wait for a worker (a queue's files, a delete's message count).
* ``RemoteMetadata`` (a front-end) sends the change to the supervisor, which applies it with
  ``LocalMetadata``, sends the resulting *ops* to every front-end, then replies. The ops travel
  on the same stream ahead of the reply, so when a front-end's ``queue.declare`` returns, its
  own routing table already has the queue.

An op is a tuple (see ``apply_op``); ``snapshot`` lists the ops that rebuild everything, for a
front-end that (re)starts.
"""
from __future__ import annotations

import logging

from .. import errors
from ..broker.exchange import make_exchange
from ..broker.queue_ref import QueueRef
from ..broker.vhost import PREDECLARED, VirtualHost

log = logging.getLogger("amqpbroker.metadata")

PREDECLARED_NAMES = {"", *(n for n, _ in PREDECLARED)}


class LocalMetadata:
    def __init__(self, broker):
        self.broker = broker

    def _vhost(self, name: str) -> VirtualHost:
        vh = self.broker.vhosts.get(name)
        if vh is None:
            raise errors.ConnectionForced(f"vhost '{name}' is deleted")
        return vh

    async def declare_exchange(self, vhost, name, type_, passive, durable, auto_delete,
                               internal, arguments):
        self._vhost(vhost).declare_exchange(name, type_, passive=passive, durable=durable,
                                            auto_delete=auto_delete, internal=internal,
                                            arguments=arguments)

    async def delete_exchange(self, vhost, name, if_unused):
        self._vhost(vhost).delete_exchange(name, if_unused)

    def _destination(self, vh, kind, name, owner, cid, mid):
        if kind == "queue":
            return vh.get_queue(name, owner, cid, mid)
        return vh.get_exchange(name, cid, mid)

    async def bind(self, vhost, kind, destination, source, key, arguments, owner, cid, mid):
        vh = self._vhost(vhost)
        vh.bind(self._destination(vh, kind, destination, owner, cid, mid), source, key,
                arguments, cid, mid)

    async def unbind(self, vhost, kind, destination, source, key, arguments, owner, cid, mid):
        vh = self._vhost(vhost)
        vh.unbind(self._destination(vh, kind, destination, owner, cid, mid), source, key,
                  arguments, cid, mid)

    async def declare_queue(self, vhost, name, owner, passive, durable, exclusive, auto_delete,
                            arguments) -> str:
        vh = self._vhost(vhost)
        q = vh.declare_queue(name, owner=owner, passive=passive, durable=durable,
                             exclusive=exclusive, auto_delete=auto_delete, arguments=arguments)
        await q.opened                  # 506 if the data directory refused its files
        if not q.announced:             # front-ends learn of it once its worker has it open
            q.announced = True
            self.broker.changed(queue_op(q))
        return q.name

    async def delete_queue(self, vhost, name, owner, if_unused, if_empty) -> int:
        vh = self._vhost(vhost)
        q = vh.queues.get(name)
        if q is None:
            return 0
        vh.check_exclusive(q, owner, 50, 40)
        return await vh.delete_queue_checked(q, if_unused, if_empty)

    async def delete_queue_now(self, vhost, name, qid, reason):
        """No conditions: the exclusive owner's connection closed."""
        vh = self.broker.vhosts.get(vhost)
        q = vh.queues.get(name) if vh is not None else None
        if q is not None and q.qid == qid:
            vh.delete_queue(q, reason)


class RemoteMetadata:
    """A front-end's view: every change is a request to the supervisor."""

    def __init__(self, control):
        self.control = control

    def __getattr__(self, method):
        if method == "delete_queue_now":
            def notice(*args):
                self.control.notify("md_notice", method, args)
            return _async(notice)

        def call(*args):
            return self.control.request("md", method, args)
        return call


def _async(fn):
    async def wrapper(*args):
        fn(*args)
    return wrapper


# ---------------------------------------------------------------- ops
def queue_op(q) -> tuple:
    return ("queue", q.vhost.name, q.name, q.qid, q.client.index, q.durable, q.exclusive_owner,
            q.auto_delete, q.arguments, q.directory)


def snapshot(broker) -> list[tuple]:
    ops = [("users", broker.users.users, broker.users.permissions)]
    for vh in broker.vhosts.values():
        ops.append(("vhost", vh.name, vh.description, vh.tags))
        for ex in vh.exchanges.values():
            if ex.name not in PREDECLARED_NAMES:
                ops.append(vh.exchange_op(ex))
        for q in vh.queues.values():
            ops.append(queue_op(q))
        for ex, dest, _, key, args in vh.bindings():
            ops.append(vh.binding_op("bind", ex, dest, key, args))
    return ops


def apply_op(broker, op: tuple) -> None:
    """Apply one op to a front-end's copy (no checks: the supervisor made them)."""
    kind = op[0]
    if kind == "users":
        broker.users.users, broker.users.permissions = op[1], op[2]
        return
    if kind == "vhost":
        if op[1] not in broker.vhosts:
            broker.vhosts[op[1]] = VirtualHost(broker, op[1], op[2], op[3])
        return
    if kind == "vhost-":
        broker.delete_vhost(op[1])
        return
    vh = broker.vhosts.get(op[1])
    if vh is None:
        return
    if kind == "exchange":
        _, _, name, type_, durable, auto_delete, internal, arguments = op
        if name not in vh.exchanges:
            vh.exchanges[name] = make_exchange(type_, name, durable, auto_delete, internal,
                                               arguments)
    elif kind == "exchange-":
        ex = vh.exchanges.pop(op[2], None)
        if ex is not None:
            for other in vh.exchanges.values():
                other.remove_destination(ex)
    elif kind == "queue":
        _, _, name, qid, worker, durable, owner, auto_delete, arguments, directory = op
        client = broker.partitions[worker]
        if qid not in client.refs:
            vh.queues[name] = QueueRef(vh, name, durable=durable, exclusive_owner=owner,
                                       auto_delete=auto_delete, arguments=arguments,
                                       directory=directory, client=client, qid=qid)
    elif kind == "queue-":
        q = vh.queues.get(op[2])
        if q is not None and q.qid == op[3]:
            vh.forget_queue(q, "deleted")
    elif kind in ("bind", "unbind"):
        _, _, source, dkind, dname, key, arguments = op
        ex = vh.exchanges.get(source)
        dest = vh.queues.get(dname) if dkind == "queue" else vh.exchanges.get(dname)
        if ex is None or dest is None:
            return
        if kind == "bind":
            ex.bind(dest, key, arguments)
        else:
            ex.unbind(dest, key, arguments)
