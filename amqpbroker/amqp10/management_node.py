"""The management node's requests carried out for one AMQP 1.0 connection
(``management.py`` reads them and writes the answers).

Each operation is done as an AMQP 0-9-1 client would do it, on a channel of the
connection's own AMQP connection (opened when first needed, again after the broker closed
it for an error): declares, deletes, purges and (un)binds are the 0-9-1 methods, so the
broker checks permissions, equivalence, limits and exclusivity as it does for any client,
in every process layout. What a response describes (a queue's properties, type and
replicas; the bindings between two names) is read from the broker's metadata, as the
management API reads it.

A 0-9-1 error becomes the status RabbitMQ 4's node answers: a declare that differs from
the existing queue or exchange (406) is 409, a refused permission (403) is 403, a missing
queue to read or purge (404) is 404, anything else 400, with RabbitMQ's text (its
``NOT_FOUND - `` prefix left off, as the node's explanations have none). RabbitMQ ends the
AMQP 1.0 session on a refused permission; here the request is answered 403 and the session
goes on.
"""
from __future__ import annotations

import logging
import re

from ..adapter import ChannelGone
from ..frontend.exchange import DELAYED_TYPE, TYPES
from .management import HttpError, Operation
from . import management as m

log = logging.getLogger("amqpbroker.amqp10")

_PREFIX = re.compile(r"^[A-Z_]+ - ")


def _text(exc: ChannelGone) -> str:
    return _PREFIX.sub("", exc.text)


class ManagementNode:
    def __init__(self, conn):
        self.conn = conn
        self.channel = None

    async def _channel(self):
        if self.channel is None or not self.channel.is_open:
            self.channel = await self.conn._channel()
        return self.channel

    async def _ask(self, start, statuses: dict | None = None, default: int = 400):
        """A 0-9-1 method's answer; ``HttpError`` with the status for the code the broker
        closed the channel with (``statuses``, else 403 for 403, else ``default``)."""
        ch = await self._channel()
        try:
            return await self.conn._ask(ch, lambda cb: start(ch, cb))
        except ChannelGone as exc:
            self.channel = None
            status = (statuses or {}).get(exc.code, 403 if exc.code == 403 else default)
            raise HttpError(status, _text(exc)) from None

    @property
    def vhost(self):
        return self.conn.server.broker.vhosts.get(self.conn.vhost)

    async def execute(self, op: Operation) -> tuple[int, tuple]:
        return await getattr(self, op.kind)(op)

    # ------------------------------------------------------------------ queues
    async def _exists(self, name: str):
        """The queue's declare-ok (its counts), or None when there is no such queue (the
        broker's metadata says so first: no channel error for every new queue)."""
        vh = self.vhost
        if vh is None or name not in vh.queues:
            return None
        try:
            return await self._ask(lambda ch, cb: ch.queue_declare(name, passive=True,
                                                                    callback=cb),
                                   {404: 404})
        except HttpError as exc:
            if exc.status == 404:
                return None
            raise

    async def get_queue(self, op: Operation):
        ok = await self._exists(op.name)
        if ok is None:
            raise HttpError(404, f"queue '{op.name}' in vhost '{self.conn.vhost}' not found")
        return 200, self._queue(op, ok.method.message_count, ok.method.consumer_count)

    async def declare_queue(self, op: Operation):
        existing = await self._exists(op.name)
        await self._ask(lambda ch, cb: ch.queue_declare(
            op.name, durable=op.durable, exclusive=op.exclusive, auto_delete=op.auto_delete,
            arguments=op.arguments or None, callback=cb), {406: 409})
        if existing is None:
            return 201, self._queue(op, 0, 0)
        return 200, self._queue(op, existing.method.message_count,
                                existing.method.consumer_count)

    def _queue(self, op: Operation, messages: int, consumers: int) -> tuple:
        """The queue as the node describes it, from the broker's metadata."""
        q = self.vhost.queues.get(op.name) if self.vhost is not None else None
        if q is None:                   # deleted meanwhile: as the request said
            durable, auto_delete, exclusive = op.durable, op.auto_delete, op.exclusive
            queue_type, arguments = op.arguments.get("x-queue-type", "classic"), op.arguments
        else:
            durable, auto_delete = q.durable, q.auto_delete
            exclusive, queue_type = q.exclusive_owner is not None, q.args.queue_type
            arguments = q.arguments
        cluster = getattr(self.conn.server.broker, "cluster", None)
        placement = cluster.queue_placement(self.conn.vhost, op.name) \
            if cluster is not None and q is not None else {}
        from ..mgmt.queues import NODE     # this node's name, as the management API's
        leader = placement.get("leader") or NODE
        return m.queue_value(op.name, self.conn.vhost, durable=durable,
                             auto_delete=auto_delete, exclusive=exclusive,
                             queue_type=queue_type, arguments=arguments, messages=messages,
                             consumers=consumers, leader=leader,
                             replicas=placement.get("members") or [leader])

    async def delete_queue(self, op: Operation):
        ok = await self._ask(lambda ch, cb: ch.queue_delete(op.name, callback=cb))
        return 200, m.count_value(ok.method.message_count)

    async def purge_queue(self, op: Operation):
        ok = await self._ask(lambda ch, cb: ch.queue_purge(op.name, callback=cb), {404: 404})
        return 200, m.count_value(ok.method.message_count)

    # ------------------------------------------------------------------ exchanges
    async def declare_exchange(self, op: Operation):
        # an unknown type is a connection error in 0-9-1 (503): refused here first
        if op.type not in TYPES:
            raise HttpError(400, f"unknown exchange type '{op.type}'")
        inner = op.arguments.get("x-delayed-type")
        if op.type == DELAYED_TYPE and isinstance(inner, str) and inner not in TYPES:
            raise HttpError(400, f"unknown exchange type '{inner}'")
        vh = self.vhost
        if vh is None or op.name not in vh.exchanges:
            m.check_new_exchange(op.name)
        await self._ask(lambda ch, cb: ch.exchange_declare(
            op.name, op.type, durable=op.durable, auto_delete=op.auto_delete,
            internal=op.internal, arguments=op.arguments or None, callback=cb), {406: 409})
        return 204, m.NULL

    async def delete_exchange(self, op: Operation):
        await self._ask(lambda ch, cb: ch.exchange_delete(op.name, callback=cb))
        return 204, m.NULL

    # ------------------------------------------------------------------ bindings
    async def bind(self, op: Operation):
        await self._bind(op, op.arguments, unbind=False)
        return 204, m.NULL

    async def _bind(self, op: Operation, arguments: dict, unbind: bool):
        args = arguments or None
        if op.destination_kind == "queue":
            method = "queue_unbind" if unbind else "queue_bind"
            await self._ask(lambda ch, cb: getattr(ch, method)(
                op.destination, op.name, op.key, arguments=args, callback=cb))
        else:
            method = "exchange_unbind" if unbind else "exchange_bind"
            await self._ask(lambda ch, cb: getattr(ch, method)(
                op.destination, op.name, op.key, arguments=args, callback=cb))

    def _bindings(self, op: Operation) -> list[tuple]:
        """(source, destination kind, destination, key, arguments) of the bindings from
        ``op.name`` to ``op.destination`` with ``op.key``."""
        vh = self.vhost
        if vh is None:
            return []
        return [(ex.name, kind, dest.name, key, args or {})
                for ex, dest, kind, key, args in vh.bindings()
                if ex.name == op.name and kind == op.destination_kind
                and dest.name == op.destination and key == op.key]

    async def unbind(self, op: Operation):
        for *_, arguments in self._bindings(op):
            if m.args_hash(arguments) == op.args_hash:
                await self._bind(op, arguments, unbind=True)
                break
        return 204, m.NULL

    async def list_bindings(self, op: Operation):
        return 200, m.bindings_value(self._bindings(op))

    # ------------------------------------------------------------------ credentials
    async def update_secret(self, op: Operation):
        """A new OAuth 2 token for the connection: its AMQP connection's update-secret
        (a token the broker refuses closes the connection, as RabbitMQ)."""
        await self.conn._call(lambda cb: self.conn.amqp.update_secret(
            op.token, "AMQP 1.0 management node: PUT /auth/tokens", callback=cb))
        self.conn.password = op.token
        if getattr(self.conn.user, "grants", None) is not None:
            import jwt              # the broker verified it: its expiry is what is read here
            exp = jwt.decode(op.token, options={"verify_signature": False}).get("exp")
            self.conn.expire_at(exp if isinstance(exp, (int, float)) else None)
        return 204, m.NULL
