"""A virtual host: its exchanges, queues and bindings, and routing across them.

Declare / delete / bind follow RabbitMQ's rules and reply texts (``amq.`` names are reserved,
redeclares must be equivalent, exclusive queues are locked to their connection).
``route`` resolves a publish to the set of queues: the exchange's own bindings, then
exchange-to-exchange bindings (each exchange visited once) and alternate exchanges.
"""
from __future__ import annotations

import logging
import uuid

from .. import contract as c
from .. import errors
from ..policies import choose
from ..queue_args import with_default_type
from .admission import limit_of
from .events import (INTERNAL_USER, acting, binding_details, emit_metadata,
                     exchange_details)
from .exchange import TYPES, Exchange, _args_key, make_exchange
from .queue_ref import QueueRef

log = logging.getLogger("amqpbroker.vhost")

PREDECLARED = [("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
               ("amq.headers", "headers"), ("amq.match", "headers"),
               ("amq.rabbitmq.trace", "topic")]


class DefaultExchange(Exchange):
    """The nameless direct exchange every queue is bound to by its name. It holds the vhost's
    queue dictionary, not the vhost: the vhost holds it, and a pointer back would make every
    vhost a reference cycle, left for the cyclic collector once deleted."""
    type = "direct"

    def __init__(self, queues: dict):
        super().__init__("", durable=True)
        self.queues = queues

    def route(self, routing_key, headers):
        q = self.queues.get(routing_key)
        return (q,) if q is not None else ()


class VirtualHost:
    """Reference cycles: the metadata holds none that outlives a delete, so that deleting a
    vhost, an exchange, a queue or a binding frees its objects by reference counting alone
    (the tuned gc thresholds of ``cli.tune_gc`` leave cyclic garbage for a very long time;
    ``supervisor/heap.py``). While a vhost lives, its queues point back to it (``QueueRef.vhost``)
    and exchange-to-exchange bindings can point both ways; a deleted queue leaves the dict,
    a deleted exchange is unbound from everything (itself too) and ``close`` unbinds every
    exchange of a deleted vhost. The topic trie points only down (``exchange._Node``)."""

    def __init__(self, broker, name: str, description: str = "", tags=(),
                 default_queue_type: str | None = None):
        self.broker = broker
        self.name = name
        self.tracing = False            # the firehose (trace.py): off at every start
        self.description = description
        self.tags = list(tags)
        # the type of a queue declared without x-queue-type (queue_args.with_default_type)
        self.default_queue_type = default_queue_type
        self.limits: dict = {}              # max-connections, max-queues (RabbitMQ's)
        self.policies: dict = {}            # name -> policies.Policy (the supervisor's only)
        self.operator_policies: dict = {}   # the same, set by administrators (policies.py)
        self.queues: dict[str, QueueRef] = {}
        self.exchanges: dict[str, Exchange] = {"": DefaultExchange(self.queues)}
        for ex_name, ex_type in PREDECLARED:
            self.exchanges[ex_name] = make_exchange(ex_type, ex_name, durable=True,
                                                    internal=ex_name == "amq.rabbitmq.trace")

    def _q(self, name: str) -> str:
        return f"queue '{name}' in vhost '{self.name}'"

    def _x(self, name: str) -> str:
        return f"exchange '{name}' in vhost '{self.name}'"

    # ----------------------------------------------------------- exchanges
    def get_exchange(self, name: str, cid=0, mid=0) -> Exchange:
        ex = self.exchanges.get(name)
        if ex is None:
            raise errors.NotFound(f"no {self._x(name)}", cid, mid)
        return ex

    def check_exchange_declare(self, name: str, type_: str, passive: bool) -> None:
        """What RabbitMQ checks of an exchange.declare before permissions, in its order: the
        type (503, a connection error), then the default exchange (403, passive too)."""
        if not passive and type_ not in TYPES:
            raise errors.CommandInvalid(f"unknown exchange type '{type_}'", 40, 10)
        if name == "":
            raise errors.AccessRefused("operation not permitted on the default exchange", 40, 10)

    def declare_exchange(self, name, type_, *, passive=False, durable=False, auto_delete=False,
                         internal=False, arguments=None, persist=True) -> Exchange:
        arguments = dict(arguments or {})
        self.check_exchange_declare(name, type_, passive)
        if passive:
            return self.get_exchange(name, 40, 10)
        if name.startswith("amq.") and name not in self.exchanges:
            # reserved only for creation: redeclaring amq.direct is fine (RabbitMQ)
            raise errors.AccessRefused(
                f"exchange name '{name}' contains reserved prefix 'amq.*'", 40, 10)
        existing = self.exchanges.get(name)
        if existing is not None:
            diff = existing.equivalent(type_, durable, auto_delete, internal, arguments)
            if diff == "type":
                raise errors.PreconditionFailed(
                    f"inequivalent arg 'type' for {self._x(name)}: received '{type_}' but "
                    f"current is '{existing.type}'", 40, 10)
            if diff in ("durable", "auto_delete", "internal"):
                received = {"durable": durable, "auto_delete": auto_delete,
                            "internal": internal}[diff]
                raise errors.PreconditionFailed(
                    f"inequivalent arg '{diff}' for {self._x(name)}: received "
                    f"'{str(received).lower()}' but current is "
                    f"'{str(getattr(existing, diff)).lower()}'", 40, 10)
            if diff == "arguments":
                # of the arguments RabbitMQ compares only 'alternate-exchange'
                got = arguments.get("alternate-exchange")
                cur = existing.arguments.get("alternate-exchange")
                if got != cur:
                    if got is not None and cur is not None:
                        shown = f"'{_plain(got)}' but current is '{_plain(cur)}'"
                    else:
                        shown = f"{_arg_repr(got)} but current is {_arg_repr(cur)}"
                    raise errors.PreconditionFailed(
                        f"inequivalent arg 'alternate-exchange' for {self._x(name)}: received "
                        f"{shown}", 40, 10)
            return existing
        ex = make_exchange(type_, name, durable, auto_delete, internal, arguments)
        self.exchanges[name] = ex
        self.choose_exchange_policy(ex)
        self.broker.changed(self.exchange_op(ex))
        if durable and persist:
            self.broker.persist()
        emit_metadata(self.broker, "exchange.created", exchange_details(self.name, ex))
        return ex

    def check_exchange_delete(self, name: str) -> None:
        """What RabbitMQ checks of an exchange.delete before permissions, in its order."""
        if name == "":
            raise errors.AccessRefused("operation not permitted on the default exchange", 40, 20)
        if name.startswith("amq."):
            raise errors.AccessRefused(f"deletion of system {self._x(name)} not allowed", 40, 20)

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        self.check_exchange_delete(name)
        ex = self.exchanges.get(name)
        if ex is None:
            return      # RabbitMQ: deleting a missing exchange is ok
        if if_unused and ex.has_bindings():
            raise errors.PreconditionFailed(f"{self._x(name)} in use", 40, 20)
        del self.exchanges[name]
        self._unbind_everywhere(ex)
        self.broker.changed(c.ExchangeDeleted(vhost=self.name, name=name))
        if ex.durable:
            self.broker.persist()
        emit_metadata(self.broker, "exchange.deleted", {"name": name, "vhost": self.name})

    def _maybe_auto_delete_exchange(self, ex: Exchange) -> None:
        if ex.auto_delete and not ex.has_bindings() and self.exchanges.get(ex.name) is ex:
            del self.exchanges[ex.name]
            self._unbind_everywhere(ex)
            self.broker.changed(c.ExchangeDeleted(vhost=self.name, name=ex.name))
            with acting(self.broker, INTERNAL_USER):
                emit_metadata(self.broker, "exchange.deleted",
                              {"name": ex.name, "vhost": self.name})

    def forget_exchange(self, name: str) -> None:
        """An exchange deleted elsewhere (a front-end's copy, told by the supervisor)."""
        ex = self.exchanges.pop(name, None)
        if ex is not None:
            self._unbind_everywhere(ex)

    def _unbind_everywhere(self, ex: Exchange) -> None:
        """A deleted exchange: no binding of the others leads to it, and its own to itself
        (RabbitMQ allows one) are gone, so nothing cyclic keeps it."""
        for other in self.exchanges.values():
            other.remove_destination(ex)
        ex.remove_destination(ex)

    def close(self) -> None:
        """The vhost is deleted (its queues were dropped first): unbind every exchange, so
        that exchange-to-exchange bindings that point both ways leave no cycle behind."""
        for ex in self.exchanges.values():
            ex.clear_bindings()

    # ----------------------------------------------------------- queues
    def get_queue(self, name: str, owner=None, cid=0, mid=0) -> QueueRef:
        q = self.queues.get(name)
        if q is None:
            raise errors.NotFound(f"no {self._q(name)}", cid, mid)
        self.check_exclusive(q, owner, cid, mid)
        return q

    def check_exclusive(self, q: QueueRef, owner, cid=0, mid=0) -> None:
        if q.exclusive_owner is not None and q.exclusive_owner != owner:
            self.exclusive_locked(q, cid, mid)

    def exclusive_locked(self, q: QueueRef, cid=0, mid=0):
        raise errors.ResourceLocked(
            f"cannot obtain exclusive access to locked {self._q(q.name)}. It could be "
            f"originally declared on another connection or the exclusive property value "
            f"does not match that of the original declaration.", cid, mid)

    def declare_queue(self, name: str, *, owner, passive=False, durable=False, exclusive=False,
                      auto_delete=False, arguments=None) -> QueueRef:
        if passive:
            if not name:
                raise errors.NotFound(f"no {self._q(name)}", 50, 10)
            q = self.get_queue(name, owner, 50, 10)
            q.refuse_if_down(50, 10)
            q.touch()           # a passive declare renews x-expires too (RabbitMQ's stat)
            return q
        if not name:
            name = "amq.gen-" + uuid.uuid4().hex[:22]
        # the reserved 'amq.' prefix is the channel's check (as in RabbitMQ), not the
        # definitions import's: exported server-named queues import again
        arguments = dict(arguments or {})
        existing = self.queues.get(name)
        if existing is not None:
            # RabbitMQ checks exclusive access strictly first: the queue's owner must be this
            # connection when declared exclusive, and nobody when not, else 405
            if existing.exclusive_owner != (owner if exclusive else None):
                self.exclusive_locked(existing, 50, 10)
            existing.refuse_if_down(50, 10)
            if exclusive:
                durable = existing.durable
            current = existing.arguments.get("x-queue-type")
            if self.default_queue_type is not None and "x-queue-type" not in arguments \
                    and current is not None:
                # the vhost's default types new queues only: a redeclare without a type
                # matches the queue's (one made before the default was set, one left
                # classic by its flags), as RabbitMQ 3.13 (3.10 refused it with 406)
                arguments["x-queue-type"] = current
            diff = existing.equivalent(durable, exclusive, auto_delete, arguments)
            if diff is not None:
                if diff in ("durable", "exclusive", "auto_delete"):
                    received = {"durable": durable, "exclusive": exclusive,
                                "auto_delete": auto_delete}[diff]
                    current = (existing.exclusive_owner is not None) if diff == "exclusive" \
                        else getattr(existing, diff)
                    raise errors.PreconditionFailed(
                        f"inequivalent arg '{diff}' for {self._q(name)}: received "
                        f"'{str(received).lower()}' but current is '{str(current).lower()}'",
                        50, 10)
                got, cur = arguments.get(diff), existing.arguments.get(diff)
                if got is not None and cur is not None:
                    shown = f"'{_plain(got)}' but current is '{_plain(cur)}'"
                else:
                    shown = f"{_arg_repr(got)} but current is {_arg_repr(cur)}"
                raise errors.PreconditionFailed(
                    f"inequivalent arg '{diff}' for {self._q(name)}: received {shown}", 50, 10)
            existing.touch()
            return existing
        limit = limit_of(self.limits, "max-queues")
        if limit is not None and len(self.queues) >= limit:
            raise errors.PreconditionFailed(                  # RabbitMQ 3.10's words
                f"cannot declare queue '{name}': queue limit in vhost '{self.name}' ({limit}) "
                f"is reached", 50, 10)
        if exclusive:
            durable = False       # RabbitMQ makes exclusive queues transient
        arguments = with_default_type(self.default_queue_type, arguments, durable=durable,
                                      exclusive=exclusive, auto_delete=auto_delete)
        directory = self.broker.queue_directory(self, name, durable)
        q = QueueRef(self, name, durable=durable, exclusive_owner=owner if exclusive else None,
                     auto_delete=auto_delete, arguments=arguments, directory=directory,
                     client=self.broker.place(self, name))
        self.queues[name] = q
        if durable and not exclusive:
            self.broker.persist()
        return q

    # ----------------------------------------------------------- restore
    # Definitions at start, or imported: what was stored is recreated as it was, without a
    # client's checks (reserved names, equivalence); what exists already is left as it is.
    def restore_exchange(self, name, type_, *, durable, auto_delete, internal,
                         arguments) -> Exchange:
        ex = self.exchanges.get(name)
        if ex is None:
            ex = make_exchange(type_, name, durable, auto_delete, internal, arguments)
            self.exchanges[name] = ex
            self.choose_exchange_policy(ex)
            self.broker.changed(self.exchange_op(ex))
        return ex

    def choose_exchange_policy(self, ex) -> bool:
        """The exchange's policy (policies.py: only ``alternate-exchange`` acts on one);
        True when the alternate exchange it routes by changed."""
        policy = choose(self.policies.values(), ex.name, "exchange")
        ex.policy = policy
        return ex.set_policy_alternate(
            policy.definition.get("alternate-exchange") if policy is not None else None)

    def restore_queue(self, name, *, durable, auto_delete, arguments) -> QueueRef:
        q = self.queues.get(name)
        if q is None:
            q = QueueRef(self, name, durable=durable, exclusive_owner=None,
                         auto_delete=auto_delete, arguments=arguments,
                         directory=self.broker.queue_directory(self, name, durable),
                         client=self.broker.place(self, name), existed=True)
            self.queues[name] = q
        return q

    async def delete_queue_checked(self, q: QueueRef, if_unused: bool, if_empty: bool,
                                   actor: str = INTERNAL_USER) -> int:
        """queue.delete: the host checks if-unused / if-empty and answers the message count.
        ``actor``: the user deleting it (events.py)."""
        count = await q.delete(if_unused, if_empty)
        with acting(self.broker, actor):
            self.forget_queue(q, "deleted")
        return count

    def delete_queue(self, q: QueueRef, reason: str = "deleted") -> None:
        """Delete without conditions (exclusive owner gone, vhost deleted)."""
        if not q.deleted:
            self.forget_queue(q, reason)
            q.client.send(c.Delete(req=0, qid=q.qid, if_unused=False, if_empty=False))

    def forget_queue(self, q: QueueRef, reason: str) -> None:
        """Remove the queue from the metadata: its name, bindings, and the definitions."""
        if q.deleted:
            return
        q.deleted = True
        q.client.refs.pop(q.qid, None)
        q.set_backlogged(False)
        if self.queues.get(q.name) is q:
            del self.queues[q.name]
            self.broker.changed(c.QueueDeleted(vhost=self.name, name=q.name, qid=q.qid))
            emit_metadata(self.broker, "queue.deleted", {"name": q.name, "vhost": self.name})
        for ex in list(self.exchanges.values()):
            if ex.remove_destination(q):
                self._maybe_auto_delete_exchange(ex)
        if q.durable and q.exclusive_owner is None:
            self.broker.persist()
        log.debug("%s deleted (%s)", self._q(q.name), reason)

    # ----------------------------------------------------------- bindings
    def bind(self, kind: str, destination_name: str, exchange_name: str, routing_key: str,
             arguments, owner, cid, mid) -> None:
        """queue.bind / exchange.bind, checked in RabbitMQ's order: the default exchange
        (403), the source (404), the destination (404), the queue's exclusive owner (405)."""
        ex = self._bindable(exchange_name, cid, mid)
        destination = self._destination(kind, destination_name, cid, mid)
        if kind == "queue":
            self.check_exclusive(destination, owner, cid, mid)
        ex.validate_binding(routing_key, arguments, cid, mid, destination)
        if ex.bind(destination, routing_key, arguments):
            self.broker.changed(self.binding_op(c.BindOp, ex, destination, routing_key,
                                                arguments))
            if ex.durable and getattr(destination, "durable", False):
                self.broker.persist()
            emit_metadata(self.broker, "binding.created", binding_details(
                self.name, ex.name, kind, destination_name, routing_key, arguments))
            if ex.keeps_history:
                self.broker.history_bound(self, ex, destination)

    def unbind(self, kind: str, destination_name: str, exchange_name: str, routing_key: str,
               arguments, owner, cid, mid) -> None:
        """queue.unbind / exchange.unbind. As RabbitMQ's ``rabbit_binding:remove``, a source,
        destination or binding that is not there is ok (teardowns unbind after an auto-delete
        queue went away); only an existing binding checks the queue's exclusive owner."""
        if exchange_name == "":
            raise errors.AccessRefused("operation not permitted on the default exchange",
                                       cid, mid)
        ex = self.exchanges.get(exchange_name)
        destination = (self.queues if kind == "queue" else self.exchanges).get(destination_name)
        if ex is None or destination is None \
                or (destination, routing_key, _args_key(arguments)) not in ex.bindings:
            return
        if kind == "queue":
            self.check_exclusive(destination, owner, cid, mid)
        ex.unbind(destination, routing_key, arguments)
        self.broker.changed(self.binding_op(c.UnbindOp, ex, destination, routing_key,
                                            arguments))
        if ex.durable:
            self.broker.persist()
        emit_metadata(self.broker, "binding.deleted", binding_details(
            self.name, ex.name, kind, destination_name, routing_key, arguments))
        self._maybe_auto_delete_exchange(ex)

    def _destination(self, kind: str, name: str, cid, mid):
        if kind == "queue":
            q = self.queues.get(name)
            if q is None:
                raise errors.NotFound(f"no {self._q(name)}", cid, mid)
            return q
        return self.get_exchange(name, cid, mid)

    def metadata(self) -> dict:
        """Its settings as RabbitMQ shows them under ``metadata`` (the API, definitions)."""
        out = {"description": self.description, "tags": self.tags}
        if self.default_queue_type is not None:
            out["default_queue_type"] = self.default_queue_type
        return out

    def op(self) -> c.VhostOp:
        """The op that tells front-ends (and etcd's copy) of this vhost's settings."""
        return c.VhostOp(name=self.name, description=self.description, tags=list(self.tags),
                         default_queue_type=self.default_queue_type)

    def exchange_op(self, ex) -> c.ExchangeOp:
        """The op that tells front-ends of an exchange (supervisor/metadata.py)."""
        return c.ExchangeOp(vhost=self.name, name=ex.name, type=ex.type, durable=ex.durable,
                            auto_delete=ex.auto_delete, internal=ex.internal,
                            arguments=ex.arguments, policy_alternate=ex.policy_alternate)

    def binding_op(self, op, ex, destination, key, arguments):
        """The op (``BindOp`` or ``UnbindOp``) for a binding made or removed."""
        dkind = "queue" if isinstance(destination, QueueRef) else "exchange"
        return op(vhost=self.name, source=ex.name, dest_kind=dkind,
                  destination=destination.name, key=key, arguments=dict(arguments or {}))

    def _bindable(self, exchange_name, cid, mid) -> Exchange:
        if exchange_name == "":
            raise errors.AccessRefused("operation not permitted on the default exchange",
                                       cid, mid)
        return self.get_exchange(exchange_name, cid, mid)

    # ----------------------------------------------------------- routing
    def route(self, exchange: Exchange, routing_keys, headers):
        if len(routing_keys) == 1 and not exchange.e2e and exchange.alternate is None:
            return exchange.route(routing_keys[0], headers)      # the common case
        queues: set = set()
        seen = {exchange}
        todo = [exchange]
        while todo:
            ex = todo.pop()
            dests = set()
            for key in routing_keys:
                dests.update(ex.route(key, headers))
            if not dests and ex.alternate:
                ae = self.exchanges.get(ex.alternate)
                if ae is not None and ae not in seen:
                    seen.add(ae)
                    todo.append(ae)
            for d in dests:
                if isinstance(d, QueueRef):
                    queues.add(d)
                elif d not in seen:
                    seen.add(d)
                    todo.append(d)
        return queues

    def bindings(self):
        """(source, destination, destination_type, routing_key, arguments) for every binding."""
        for ex in self.exchanges.values():
            if ex.name == "":
                continue
            for (dest, key, _), args in ex.bindings.items():
                yield ex, dest, ("queue" if isinstance(dest, QueueRef) else "exchange"), key, args


def _plain(v) -> str:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def _arg_repr(v) -> str:
    """RabbitMQ's wording of an argument value in an inequivalent-arg error."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        kind = "bool"
    elif isinstance(v, int):
        kind = "signedint" if -2**31 <= v < 2**31 else "long"
    elif isinstance(v, float):
        kind = "double"
    else:
        kind = "longstr"
    if isinstance(v, bytes):
        v = v.decode(errors="replace")
    if isinstance(v, bool):
        v = str(v).lower()
    return f"the value '{v}' of type '{kind}'"
