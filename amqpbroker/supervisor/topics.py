"""Topics: partitioned exchanges and their partitions (the metadata owner's side).

Theory of operation
-------------------
A topic ``NAME`` with N partitions is, in the metadata, RabbitMQ's super-stream layout:

* exchange ``NAME`` of type ``x-partitioned`` (``frontend/exchange.PartitionedExchange``),
  durable, arguments ``x-partitions: N`` and ``x-super-stream: true`` (plus the declare's);
* durable queues ``NAME-0`` ... ``NAME-(N-1)``, the partitions, of type ``x-partition-type``
  (``stream`` unless ``classic`` or ``quorum`` is asked), with the declare's other
  x-arguments as their queue arguments (retention: ``x-max-age``, ``x-max-length-bytes``);
* bindings ``NAME -> NAME-i`` with routing key ``str(i)`` and argument
  ``x-stream-partition-order: i``.

Nothing else is stored: ``definitions.json`` holds those objects like any others, so a restart
(or a definitions export and import) brings the topic back as it was.

Creating, growing and deleting are each one metadata change. The new partitions' queues are
made (saved once) and opened on their workers first; then, without suspending, the queues are
announced, the exchange made or its ``x-partitions`` raised, the bindings added, and every
front-end gets all of it in one ``ApplyOps`` (``owner.one_change``): no front-end ever routes
with part of a change. Deleting a topic deletes its partitions and their messages, as deleting
a Kafka topic does. A lock per topic orders the changes to one topic.

A queue ``NAME-i`` that exists before the topic (a classic queue of that name, or partitions a
crash left without their exchange) becomes partition i if it is what the topic would make
(durable, not exclusive, the same arguments); otherwise the declare is refused.

Placement: partition i lives on worker ``(w + i) mod W``, ``w`` being the worker the topic's
name hashes to, so a topic of W partitions uses every worker once (``owner.place``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from .. import errors
from ..frontend.broker import worker_of
from ..frontend.events import INTERNAL_USER, acting
from ..frontend.exchange import PartitionedExchange
from ..frontend.vhost import _arg_repr, _plain
from ..queue_args import QueueArgs, amqp_type

log = logging.getLogger("amqpbroker.topics")

TYPE = PartitionedExchange.type
MAX_PARTITIONS = PartitionedExchange.MAX_PARTITIONS
PARTITION_TYPES = ("stream", "classic", "quorum")
DEFAULT_PARTITION_TYPE = "stream"
# the exchange's own arguments; every other x-argument is the partitions' queue argument
TOPIC_ARGS = ("x-partitions", "x-partition-type", "x-super-stream", "alternate-exchange")
ORDER = "x-stream-partition-order"   # RabbitMQ's binding argument: the partition's index


def partition_name(topic: str, i: int) -> str:
    return f"{topic}-{i}"


def partition_type(arguments: dict) -> str:
    t = arguments.get("x-partition-type", DEFAULT_PARTITION_TYPE)
    return t.decode(errors="replace") if isinstance(t, bytes) else t


def queue_arguments(arguments: dict) -> dict:
    """The partitions' queue arguments, from the topic's."""
    out = {k: v for k, v in arguments.items() if k not in TOPIC_ARGS}
    out["x-queue-type"] = partition_type(arguments)
    return out


class Topics:
    def __init__(self, owner):
        self.owner = owner
        self._locks: dict[tuple, list] = {}    # (vhost, topic) -> [lock, users]
        self._pending: dict[tuple, int] = {}   # (vhost, topic) -> partitions being made

    # ------------------------------------------------------------ placement
    def partition_worker(self, vhost, name: str) -> int | None:
        """The worker of queue ``name`` if it is a partition of a topic (existing or being
        made), else None."""
        topic, sep, index = name.rpartition("-")
        if not sep or not (index.isascii() and index.isdigit()) \
                or (index != "0" and index.startswith("0")):
            return None
        n = self._pending.get((vhost.name, topic))
        if n is None:
            ex = vhost.exchanges.get(topic)
            if not isinstance(ex, PartitionedExchange):
                return None
            n = ex.partitions
        i = int(index)
        if i >= n:
            return None
        workers = len(self.owner.partitions)
        return (worker_of(vhost.name, topic, workers) + i) % workers    # from the topic's

    # ------------------------------------------------------------ checks
    def check_arguments(self, vhost: str, name: str, arguments: dict) -> int:
        """The partition count a declare asks for; 406 with RabbitMQ's wording of a bad
        argument (``invalid arg 'x-partitions' for exchange 'orders' in vhost '/': ...``)."""
        def refuse(key, reason):
            raise errors.PreconditionFailed(
                f"invalid arg '{key}' for exchange '{name}' in vhost '{vhost}': {reason}",
                40, 10)
        if "x-partitions" not in arguments:
            refuse("x-partitions", "missing (a topic needs its number of partitions)")
        n = arguments["x-partitions"]
        if isinstance(n, bool) or not isinstance(n, int):
            refuse("x-partitions", f'"expected integer, got {amqp_type(n)}"')
        if n < 1:
            refuse("x-partitions", f"{{value_{'zero' if n == 0 else 'negative'},{n}}}")
        if n > MAX_PARTITIONS:
            refuse("x-partitions", f"{{value_too_large,{n}}} (at most {MAX_PARTITIONS})")
        ptype = partition_type(arguments)
        if not isinstance(ptype, str):
            refuse("x-partition-type", f"{{unacceptable_type,{amqp_type(ptype)}}}")
        if ptype not in PARTITION_TYPES:
            refuse("x-partition-type", f"\"unsupported partition type '{ptype}'\" (expected "
                                       f"{', '.join(PARTITION_TYPES)})")
        longest = partition_name(name, n - 1)
        if len(longest.encode()) > 255:
            refuse("x-partitions", f"partition name '{longest}' is longer than 255 bytes")
        return n

    def _check_equivalent(self, vh, ex: PartitionedExchange, arguments: dict) -> None:
        """A redeclare must name the same partition count and type (RabbitMQ's
        ``inequivalent arg`` wording)."""
        for key, got, cur in (
                ("x-partitions", arguments.get("x-partitions"), ex.arguments.get("x-partitions")),
                ("x-partition-type", partition_type(arguments), partition_type(ex.arguments))):
            if got != cur or isinstance(got, bool) != isinstance(cur, bool):
                if got is not None and cur is not None:
                    shown = f"'{_plain(got)}' but current is '{_plain(cur)}'"
                else:
                    shown = f"{_arg_repr(got)} but current is {_arg_repr(cur)}"
                raise errors.PreconditionFailed(
                    f"inequivalent arg '{key}' for exchange '{ex.name}' in vhost '{vh.name}': "
                    f"received {shown}", 40, 10)

    @contextlib.asynccontextmanager
    async def _changing(self, vh, name: str):
        """One change to topic ``name`` at a time; the lock lives while someone holds or
        waits for it."""
        key = (vh.name, name)
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._locks[key]

    # ------------------------------------------------------------ declare
    async def declare(self, vh, name: str, *, passive: bool, durable: bool, auto_delete: bool,
                      internal: bool, arguments: dict) -> None:
        """exchange.declare of type ``x-partitioned`` (and PUT /api/topics): a topic is
        always durable, as a Kafka topic, whatever ``durable`` says."""
        arguments = dict(arguments or {})
        if passive:
            vh.declare_exchange(name, TYPE, passive=True)
            return
        vh.check_exchange_declare(name, TYPE, False)
        async with self._changing(vh, name):
            existing = vh.exchanges.get(name)
            if existing is not None:
                if isinstance(existing, PartitionedExchange):
                    self._check_equivalent(vh, existing, arguments)
                    durable = existing.durable      # not compared: a topic is durable
                # the type, auto_delete, internal and reserved names: the vhost's checks
                vh.declare_exchange(name, TYPE, durable=durable, auto_delete=auto_delete,
                                    internal=internal, arguments=arguments)
                return
            n = self.check_arguments(vh.name, name, arguments)
            if name.startswith("amq."):
                raise errors.AccessRefused(
                    f"exchange name '{name}' contains reserved prefix 'amq.*'", 40, 10)
            arguments["x-super-stream"] = True
            queues = await self._make_partitions(vh, name, 0, n, queue_arguments(arguments))
            with self.owner.one_change():
                vh.declare_exchange(name, TYPE, durable=True, auto_delete=auto_delete,
                                    internal=internal, arguments=arguments)
                self._bind(vh, name, queues, 0)
            log.info("topic '%s' in vhost '%s' created with %d partitions", name, vh.name, n)

    async def grow(self, vh, name: str, n: int) -> None:
        """Raise a topic's partition count to ``n`` (PUT /api/topics): partitions
        ``NAME-old`` ... ``NAME-(n-1)`` are made; keys move (see the README)."""
        async with self._changing(vh, name):
            ex = vh.exchanges.get(name)
            if not isinstance(ex, PartitionedExchange):
                raise errors.NotFound(f"no topic '{name}' in vhost '{vh.name}'", 40, 10)
            old = ex.partitions
            if n < old:
                raise errors.PreconditionFailed(
                    f"topic '{name}' in vhost '{vh.name}' has {old} partitions: partitions "
                    f"can be added, not removed (asked for {n})", 40, 10)
            if n == old:
                return
            self.check_arguments(vh.name, name, {**ex.arguments, "x-partitions": n})
            queues = await self._make_partitions(vh, name, old, n, queue_arguments(ex.arguments))
            with self.owner.one_change():
                self._bind(vh, name, queues, old)
                ex.arguments = {**ex.arguments, "x-partitions": n}
                self.owner.changed(vh.exchange_op(ex))
                self.owner.persist()
            self.owner.topic_grew(vh, ex)           # this process's group members
            self.owner.groups.topic_grew(vh.name, name)     # and the groups' assignments
            log.info("topic '%s' in vhost '%s' grew from %d to %d partitions", name, vh.name,
                     old, n)

    async def _make_partitions(self, vh, name: str, first: int, n: int, qargs: dict) -> list:
        """Queues ``NAME-first`` ... ``NAME-(n-1)``, open on their workers (not yet told to
        the front-ends); either all of them or, on a failure, none that were new."""
        names = [partition_name(name, i) for i in range(first, n)]
        try:
            QueueArgs(names[0], vh.name, qargs)
        except errors.AMQPError as exc:
            raise errors.PreconditionFailed(exc.text, 40, 10) from None
        for qname in names:
            q = vh.queues.get(qname)
            if q is not None and (q.exclusive_owner is not None
                                  or q.equivalent(True, False, False, qargs) is not None):
                raise errors.PreconditionFailed(
                    f"cannot make partition '{qname}' of topic '{name}' in vhost '{vh.name}': "
                    f"a queue of that name exists and is not one", 40, 10)
        new = [qname for qname in names if qname not in vh.queues]
        limit = vh.limits.get("max-queues")
        if isinstance(limit, int) and limit >= 0 and len(vh.queues) + len(new) > limit:
            raise errors.PreconditionFailed(                  # RabbitMQ 3.10's words
                f"cannot declare queue '{new[0]}': queue limit in vhost '{vh.name}' ({limit}) "
                f"is reached", 40, 10)
        self._pending[(vh.name, name)] = n          # owner.place puts them round the workers
        try:
            with self.owner.one_change():           # saved once, told to nobody yet
                made = [vh.declare_queue(qname, owner=None, durable=True, arguments=qargs)
                        for qname in new]
        finally:
            del self._pending[(vh.name, name)]
        results = await asyncio.gather(*(q.opened for q in made), return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            with self.owner.one_change():
                for q in made:
                    if not q.deleted:
                        self.owner.drop_queue_of_deleted_vhost(vh, q, "topic not created")
            raise failed
        return [vh.queues[qname] for qname in names]

    def _bind(self, vh, name: str, queues: list, first: int) -> None:
        """Announce the new partitions and bind them (inside ``one_change``)."""
        from .metadata import queue_op
        for q in queues:
            if not q.announced:
                q.announced = True
                self.owner.changed(queue_op(q))
        for i, q in enumerate(queues, first):
            vh.bind("queue", q.name, name, str(i), {ORDER: i}, None, 40, 10)

    # ------------------------------------------------------------ delete
    def partitions_of(self, vh, ex: PartitionedExchange) -> list:
        """The topic's partition queues that exist, in order."""
        out = []
        for i in range(ex.partitions):
            q = vh.queues.get(partition_name(ex.name, i))
            if q is not None:
                out.append(q)
        return out

    async def delete(self, vh, name: str, if_unused: bool, actor: str = INTERNAL_USER) -> None:
        """exchange.delete of a topic (and DELETE /api/topics): its partitions go with it,
        messages and all. ``if_unused``: refused while the topic has bindings other than
        its partitions'. ``actor``: who deletes it (frontend/events.py)."""
        vh.check_exchange_delete(name)
        if not isinstance(vh.exchanges.get(name), PartitionedExchange):
            with acting(self.owner, actor):
                vh.delete_exchange(name, if_unused)
            return
        async with self._changing(vh, name):
            ex = vh.exchanges.get(name)
            if not isinstance(ex, PartitionedExchange):
                vh.delete_exchange(name, if_unused)
                return
            partitions = self.partitions_of(vh, ex)
            own = {(q, str(i)) for i, q in enumerate(partitions)}
            if if_unused and any((dest, key) not in own for dest, key, _ in ex.bindings):
                raise errors.PreconditionFailed(f"exchange '{name}' in vhost '{vh.name}' in use",
                                                40, 20)
            with self.owner.one_change():
                for q in partitions:
                    self.owner.drop_queue_of_deleted_vhost(vh, q, "topic deleted")
                if name in vh.exchanges:            # an auto-delete topic went with them
                    vh.delete_exchange(name)
            log.info("topic '%s' in vhost '%s' deleted with its %d partitions", name, vh.name,
                     len(partitions))
