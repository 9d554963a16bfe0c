"""A front-end process's copy of the metadata, and how its channels change metadata.

The supervisor owns metadata (``supervisor/metadata.py``). A front-end's channels change it
only by asking: ``RemoteMetadata`` sends each change to the supervisor, which applies it, sends
the resulting *ops* to every front-end, then replies. The ops travel on the same stream ahead
of the reply, so when a front-end's ``queue.declare`` returns, its own routing table already
has the queue. ``apply_op`` applies one op to this copy, without checks: the supervisor made
them.
"""
from __future__ import annotations

from .exchange import make_exchange
from .queue_ref import QueueRef
from .vhost import VirtualHost


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
