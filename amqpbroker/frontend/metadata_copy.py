"""A front-end process's copy of the metadata, and how its channels change metadata.

The supervisor owns metadata (``supervisor/metadata.py``). A front-end's channels change it
only by asking: ``RemoteMetadata`` sends each change to the supervisor, which applies it, sends
the resulting *ops* to every front-end, then replies. The ops travel on the same stream ahead
of the reply, so when a front-end's ``queue.declare`` returns, its own routing table already
has the queue. ``apply_op`` applies one op to this copy, without checks: the supervisor made
them.
"""
from __future__ import annotations

from .. import contract as c
from ..policies import make_policy
from .exchange import make_exchange
from .events import INTERNAL_USER
from .queue_ref import QueueRef
from .vhost import VirtualHost


def run_now(coro) -> None:
    """Run a coroutine that never waits (a notice, or a change made in this process)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise RuntimeError("a notice waited")


class RemoteMetadata:
    """A front-end's view: every change is a metadata call to the supervisor
    (``contract.METADATA_CALLS``; ``md.declare_queue(vhost=..., ...)`` sends ``DeclareQueue``).
    A call that is not a request (``delete_queue_now``) is sent as a notice."""

    def __init__(self, control):
        self.control = control

    def __getattr__(self, method):
        cls = c.BY_NAME[method]
        if cls not in c.METADATA_CALLS:
            raise AttributeError(method)
        if cls.REQUEST:
            if any(name == "actor" for name, _ in cls.FIELDS):
                # the user the change is made for (frontend/events.py), the broker's own
                # when the caller names none
                return lambda actor=INTERNAL_USER, **fields: self.control.request(
                    cls, actor=actor, **fields)
            return lambda **fields: self.control.request(cls, **fields)

        async def notice(**fields):
            self.control.notify(cls(**fields))
        return notice


class MetadataCopy:
    """Applies the supervisor's ops to a front-end's copy, without checks: the supervisor
    made them. One handler per op of ``contract.METADATA_OPS``."""

    def __init__(self, broker):
        self.broker = broker
        self.table = c.handlers(self, c.METADATA_OPS)

    def apply(self, op) -> None:
        self.table[type(op)](op)

    def on_users_op(self, op: c.UsersOp) -> None:
        users = self.broker.users
        users.users, users.permissions = op.users, op.permissions
        users.topic_permissions = op.topic_permissions

    def on_vhost_op(self, op: c.VhostOp) -> None:
        vh = self.broker.vhosts.get(op.name)
        if vh is None:
            self.broker.vhosts[op.name] = VirtualHost(self.broker, op.name, op.description,
                                                      op.tags, op.default_queue_type)
        else:                                   # its settings changed
            vh.description, vh.tags = op.description, list(op.tags)
            vh.default_queue_type = op.default_queue_type

    def on_policy_op(self, op: c.PolicyOp) -> None:
        """Policies act in the workers, through the arguments the supervisor gives each
        queue (``QueueRef.apply_policy``); a front-end keeps a copy for what its channels
        read of a queue's effective arguments (its consumer timeout)."""
        vh = self.broker.vhosts.get(op.vhost)
        if vh is not None:
            table = vh.operator_policies if op.operator else vh.policies
            table[op.name] = make_policy(op.vhost, op.name, op.item, op.operator)
            self._policies_changed(vh)

    def on_policy_deleted(self, op: c.PolicyDeleted) -> None:
        vh = self.broker.vhosts.get(op.vhost)
        if vh is not None:
            table = vh.operator_policies if op.operator else vh.policies
            if table.pop(op.name, None) is not None:
                self._policies_changed(vh)

    @staticmethod
    def _policies_changed(vh) -> None:
        """The copies of the vhost's queues take their effective arguments again (their
        hosts are told by the supervisor)."""
        for q in vh.queues.values():
            q.choose_policy()

    def on_parameter_op(self, op: c.ParameterOp) -> None:
        """Shovels run in the supervisor (amqpbroker/shovel): a front-end keeps none."""

    def on_parameter_deleted(self, op: c.ParameterDeleted) -> None:
        """As ``on_parameter_op``."""

    def on_vhost_tracing_op(self, op: c.VhostTracingOp) -> None:
        vh = self.broker.vhosts.get(op.name)
        if vh is not None:
            vh.tracing = op.on

    def on_global_parameters_op(self, op: c.GlobalParametersOp) -> None:
        self.broker.global_parameters = dict(op.parameters)

    def on_vhost_limits_op(self, op: c.VhostLimitsOp) -> None:
        vh = self.broker.vhosts.get(op.name)
        if vh is not None:
            vh.limits = dict(op.limits)

    def on_vhost_deleted(self, op: c.VhostDeleted) -> None:
        self.broker.delete_vhost(op.name)

    def on_exchange_op(self, op: c.ExchangeOp) -> None:
        vh = self.broker.vhosts.get(op.vhost)
        if vh is None:
            return
        ex = vh.exchanges.get(op.name)
        if ex is None:
            ex = vh.exchanges[op.name] = make_exchange(op.type, op.name, op.durable,
                                                       op.auto_delete, op.internal,
                                                       op.arguments)
        elif ex.type == op.type:
            grew = op.arguments.get("x-partitions") != ex.arguments.get("x-partitions")
            ex.arguments = dict(op.arguments)   # a topic grew (its x-partitions)
            if grew:
                self.broker.topic_grew(vh, ex)
        ex.set_policy_alternate(op.policy_alternate)    # its policy's, or none

    def on_exchange_deleted(self, op: c.ExchangeDeleted) -> None:
        vh = self.broker.vhosts.get(op.vhost)
        if vh is not None:
            vh.forget_exchange(op.name)

    def on_queue_op(self, op: c.QueueOp) -> None:
        vh = self.broker.vhosts.get(op.vhost)
        client = self.broker.partitions[op.worker]
        if vh is not None and self._forwarded(vh.queues.get(op.name)) == op.qid:
            return                          # this queue, forwarded to its leader's node
        if vh is not None and op.qid not in client.refs:
            vh.queues[op.name] = QueueRef(vh, op.name, durable=op.durable,
                                          exclusive_owner=op.owner, auto_delete=op.auto_delete,
                                          arguments=op.arguments, directory=op.directory,
                                          client=client, qid=op.qid)
        elif vh is not None:            # known: its own arguments may have changed (an
            q = vh.queues.get(op.name)  # MQTT 5 session's expiry: owner.set_queue_expires)
            if q is not None and q.qid == op.qid and q.arguments != op.arguments:
                q.arguments = dict(op.arguments)
                q.choose_policy()

    def on_queue_deleted(self, op: c.QueueDeleted) -> None:
        vh = self.broker.vhosts.get(op.vhost)
        q = vh.queues.get(op.name) if vh is not None else None
        if q is not None and op.qid in (q.qid, self._forwarded(q)):
            vh.forget_queue(q, "deleted")

    def _forwarded(self, q) -> int | None:
        """The qid of a queue's copy on this node's worker while the queue is forwarded to
        another node (cluster/forward.py), else None."""
        fw = self.broker.forwarder
        saved = fw.local_copies.get(q) if fw is not None and q is not None else None
        return saved[1] if saved is not None else None

    def _binding(self, op):
        vh = self.broker.vhosts.get(op.vhost)
        if vh is None:
            return None, None
        ex = vh.exchanges.get(op.source)
        dest = (vh.queues if op.dest_kind == "queue" else vh.exchanges).get(op.destination)
        return ex, dest

    def on_bind_op(self, op: c.BindOp) -> None:
        ex, dest = self._binding(op)
        if ex is not None and dest is not None:
            ex.bind(dest, op.key, op.arguments)

    def on_unbind_op(self, op: c.UnbindOp) -> None:
        ex, dest = self._binding(op)
        if ex is not None and dest is not None:
            ex.unbind(dest, op.key, op.arguments)
