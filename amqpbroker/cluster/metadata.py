"""Metadata in etcd (docs/CLUSTER.md section 1): ``EtcdMetadata``, ``LocalMetadata``'s methods
over etcd transactions, and the applier that makes every node's ``Broker`` what etcd says.

Theory of operation
-------------------
etcd holds one key per metadata object, a JSON value (``META`` + ``<kind>/<vhost>/<name>``,
each part percent-quoted so any name fits):

=============  ==============================================  =================================
kind           key parts                                       value
=============  ==============================================  =================================
vhost          name                                            description, tags, limits,
                                                               default_queue_type
user           name                                            password_hash, tags, limits
permission     vhost, user                                     configure, write, read
policy         vhost, name                                     pattern, definition, priority,
                                                               apply-to (policies.py)
exchange       vhost, name                                     type, durable, auto_delete, ...
queue          vhost, name                                     durable, auto_delete, arguments,
                                                               node (the declaring one), uuid,
                                                               exclusive (only when true)
binding        vhost, source, dest kind, dest, key, args hash  the binding, and the create
                                                               revisions of both ends
=============  ==============================================  =================================

An operator policy is an ``operator-policy`` key, as a ``policy`` is. A topic permission is a
``topic-permission`` key of vhost, user and exchange, its value write and read. A global
parameter (``cluster_name``, ...) is a ``global-parameter`` key of its name, its value
``{"name", "value"}``. A shovel (amqpbroker/shovel) is a ``shovel`` key of vhost and name, its
value the runtime parameter ``{"value", "vhost", "component", "name"}``; every node keeps it,
the controller runs it. A federation upstream or upstream set (amqpbroker/federation) is a
``federation`` key of vhost, component and name, the same way.

Transient (non-durable) exchanges, queues and bindings are put on the declaring node's lease:
they vanish with that node, as RabbitMQ's transient queues do with theirs. Exclusive queues
live on their connection's node only, but their names are the cluster's: each is a queue key
with ``exclusive: true`` on its node's lease, which the other nodes list (``/api/queues``)
and answer 405 for, and never open; bindings to them stay on their node. A topic's partition
queues and bindings never reach etcd: every node derives them from the topic's exchange.

**A change is one txn.** ``queue.declare``: compare ``CREATE(queue key) == 0`` and
``CREATE(vhost key) != 0``, put. When the compare fails the queue exists: the node waits
until its own copy has reached the stored object's revision and checks the declare against
that copy, so an inequivalent redeclare gets 406 with RabbitMQ's text from what etcd holds
(two nodes declaring at once: one txn wins, the other checks against the winner's object).
A redeclare of what the node already has (the common case: clients declare on every
connection) is checked against its copy without a round trip to etcd; the window this
leaves (a delete made on another node a few milliseconds earlier and not yet applied here
makes the redeclare answer ok, then the queue goes) is that of RabbitMQ's Khepri, whose
queries are local too.
Exchanges likewise; a binding compares both ends' create revisions (a binding never outlives
the incarnation of a queue it was made for); deletes compare the key's mod revision (a
concurrent delete-and-redeclare is not lost) and delete the bindings of what goes with it.
Users, vhosts, permissions and limits change where they do today (the management API, the
definitions import) and are pushed afterwards: the node compares its objects with what it
last applied from etcd and writes the difference in one txn (last writer wins; a vhost's
delete takes every key under it).

**Every node applies its watch.** The membership's mirror of etcd (list, then watch) calls
``_apply_view`` on every change: of the keys the change put or deleted (``Membership.touched``;
every key after a fresh list of etcd, fencing and at the start: a pass costs what changed, not
the number of objects), those whose revision differs from what this node applied are applied
through the owner's usual paths (``restore_queue``, ``bind``, ``delete_vhost``,
``topics.declare`` ...), so front-ends get the same ops as from a local change. The node that
made a txn answers its client only once its copy has reached the txn's revision
(read-your-writes): a ``queue.declare-ok`` on n1 followed by a publish on n1 routes.

**Restart.** ``definitions.json`` stays, as the cache the node starts from. After joining,
the node applies everything under ``META`` and removes what it has that etcd does not —
a durable queue through the tombstone path, so its files go only because etcd said it was
deleted. A node joining for the first time (no ``cluster.json`` in its data directory) first
puts what it has into etcd, each object only if absent: the first node seeds the cluster
(its default user and vhost), later ones adopt what is there.

A queue or exchange the broker deletes by itself (auto-delete, ``x-expires``) on one node is
deleted in etcd by that node (``changed``), so everywhere.

Not yet (next steps): until forwarding (step 4) every node opens its own copy of each queue's
files, so messages stay on the node they were published to (and an auto-delete queue goes
when the last consumer of any node's copy goes).
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import uuid
from types import SimpleNamespace
from urllib.parse import quote

from .. import contract as c
from .. import errors
from ..frontend.events import (INTERNAL_USER, binding_details, emit_as, exchange_details,
                               queue_details, quiet)
from ..frontend.exchange import _args_key, make_exchange
from ..parameter_validation import Invalid as ParameterInvalid
from ..policies import PolicyInvalid, make_policy
from ..queue_args import (QueueArgs, check_quorum_properties, check_stream_declare,
                          with_default_type)
from ..supervisor.definitions import permission_item, topic_permission_item
from ..supervisor.journal import global_parameter_items
from ..supervisor.metadata import LocalMetadata, queue_op
from ..supervisor.topics import TYPE as TOPIC
from .etcd import EtcdError, compare, delete_op, kvs_of, put_op, range_op
from .membership import PREFIX

log = logging.getLogger("amqpbroker.cluster")

META = PREFIX + "meta/"
# creation order (a policy before the queues it applies to: they open with it)
KINDS = ("global-parameter", "vhost", "user", "permission", "topic-permission", "policy",
         "operator-policy", "exchange", "queue", "binding", "shovel", "federation")
# pushed from the node where they changed (``changed``), not declared through etcd
PUSHED = ("global-parameter", "vhost", "user", "permission", "topic-permission", "policy",
          "operator-policy", "shovel", "federation")
# of those, what lives in a vhost (its keys start with the vhost's name)
IN_VHOST = ("permission", "topic-permission", "policy", "operator-policy", "shovel",
            "federation")
RETRIES = 5                 # a declare whose object vanished between txn and check
REACH_TIMEOUT = 10.0        # seconds for this node's copy to reach a txn it made
PUSH_WAIT = 5.0             # seconds a management change waits for etcd before its answer
DEDUP_WAIT = 1.0            # seconds a publish waits for the node holding its exchange's cache
STATE_FILE = "cluster.json"  # in the data directory: this node has been a member


def meta_key(kind: str, *parts: str) -> str:
    return META + kind + "/" + "/".join(quote(p, safe="") for p in parts)


def kind_of(key: str) -> str:
    return key[len(META):].split("/", 1)[0]


def _json_default(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode(errors="replace")
    return str(v)


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def binding_key(vhost, source, dest_kind, destination, key, arguments) -> str:
    digest = hashlib.sha1(dumps(arguments or {}).encode()).hexdigest()[:16]
    return meta_key("binding", vhost, source, dest_kind, destination, key, digest)


def dedup_owner(vhost: str, exchange: str, nodes) -> str | None:
    """The node that holds an x-message-deduplication exchange's cache for the cluster:
    the highest of a hash of (node, exchange) over the live nodes (rendezvous hashing, so
    a node that joins or leaves moves only the caches it takes or held)."""
    def weight(node: str) -> bytes:
        return hashlib.blake2b(f"{node}\0{vhost}\0{exchange}".encode(),
                               digest_size=8).digest()
    return max(nodes, key=weight, default=None)


def visible_everywhere(call):
    """A metadata call (declare, delete, bind, unbind) that changed the cluster's metadata
    (this node's view moved past where it was) answers once every other node has applied
    the change too (``Forwarder.peers_reach``, at most a couple of seconds for a node that
    does not answer): as with RabbitMQ, a client told ``declare-ok`` or ``bind-ok`` by one
    node may publish through any other and be routed. Without it the other nodes applied it
    when their etcd watch brought it, a few milliseconds later: one publish in 40 through
    another node right after a quorum queue's bind-ok came back unroutable
    (tests/cluster/test_cluster_metadata.py)."""
    @functools.wraps(call)
    async def answered_once_everywhere(self, **fields):
        before = self.revision
        result = await call(self, **fields)
        forwarder = self.node.forwarder
        if self.revision > before and forwarder is not None:
            await forwarder.peers_reach(self.revision)
        return result
    return answered_once_everywhere


class EtcdMetadata(LocalMetadata):
    def __init__(self, broker, node):
        super().__init__(broker)
        self.node = node                    # cluster.node.ClusterNode
        self.applied: dict = {}             # key -> KeyValue as this node applied it
        self.revision = 0                   # the etcd revision this node's copy is at
        self.synced = asyncio.Event()       # joined, caught up: changes may go through
        self._waiters: list = []            # (revision, future) for read-your-writes
        self._tasks: set = set()            # applies that suspend (topics, queue opens)
        self._applying = False
        self._push: asyncio.Task | None = None
        self._deleting: set = set()         # keys a delete call of this node is deleting
        self._background: set = set()       # deletes of what this node deleted by itself
        self._push_again = False
        self._pushing_since_asked = False   # a push began since ``everywhere`` last looked
        self._whole_next = False            # a pass failed: the next one diffs every key
        self._dedup_logged = -60.0          # when a de-duplication cache's holder last failed

    @property
    def etcd(self):
        return self.node.etcd

    @property
    def membership(self):
        return self.node.membership

    # ------------------------------------------------------------ start
    async def start(self) -> None:
        """After the join: seed (first time), apply everything etcd has, drop what it has
        not, then follow the watch. Changes wait for this (``synced``)."""
        m = self.membership
        state = os.path.join(self.broker.data_dir, STATE_FILE)
        if not os.path.exists(state):
            await self._seed()
        m.on_view.append(self._on_view)     # from now on every change is applied
        with quiet(self.broker):
            self._apply_view()
        await self._settle()
        self._sweep()
        with open(state + ".tmp", "w") as f:
            json.dump({"node": self.node.name, "cluster": self.node.cfg.cluster}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(state + ".tmp", state)
        self.synced.set()
        log.info("node %s: metadata in etcd applied (revision %d, %d objects)", self.node.name,
                 self.revision, len(self.applied))

    async def _mirror_at(self, revision: int) -> None:
        m = self.membership
        while m.revision < revision:
            await asyncio.wait_for(m.changed(), REACH_TIMEOUT)

    async def _seed(self) -> None:
        """First join: put what this node has, each object only if etcd has none of it."""
        b, last = self.broker, 0
        objects = list(self._desired().items())
        for vh in b.vhosts.values():
            for ex in vh.exchanges.values():
                if ex.durable and ex.name and not ex.name.startswith("amq."):
                    objects.append((meta_key("exchange", vh.name, ex.name),
                                    dumps(self._exchange_obj(vh.name, ex))))
            for q in vh.queues.values():
                if q.durable and q.exclusive_owner is None and not self._partition(vh, q.name):
                    objects.append((meta_key("queue", vh.name, q.name), dumps(
                        self._queue_obj(vh.name, q.name, q.durable, q.auto_delete,
                                        q.arguments))))
        for key, value in objects:
            _, _, rev = await self.etcd.transact([compare(key, "CREATE", "EQUAL", 0)],
                                                 [put_op(key, value)])
            last = max(last, rev)
        await self._mirror_at(last)
        for vh in b.vhosts.values():            # bindings: both ends' revisions now known
            for ex, dest, dkind, rk, args in list(vh.bindings()):
                made = self._binding_txn(vh, ex, dest, dkind, rk, args, create_only=True)
                if made is not None:
                    _, _, rev = await self.etcd.transact(*made)
                    last = max(last, rev)
        await self._mirror_at(last)
        log.info("node %s: first join, %d objects offered to etcd", self.node.name,
                 len(objects))

    def _sweep(self) -> None:
        """Remove what this node has and etcd has not (deleted while it was away)."""
        with quiet(self.broker):
            self._sweep_now()

    def _sweep_now(self) -> None:
        b, keys = self.broker, set(self.applied)
        self._applying = True
        try:
            with b.one_change():
                for vh in list(b.vhosts.values()):
                    if meta_key("vhost", vh.name) not in keys:
                        log.info("vhost '%s' was deleted in the cluster", vh.name)
                        b.delete_vhost(vh.name)
                        continue
                    for ex, dest, dkind, rk, args in list(vh.bindings()):
                        if ex.type == TOPIC or getattr(dest, "exclusive_owner", None):
                            continue
                        if binding_key(vh.name, ex.name, dkind, dest.name, rk, args) not in keys:
                            vh.unbind(dkind, dest.name, ex.name, rk, args, None, 0, 0)
                    for q in list(vh.queues.values()):
                        if q.exclusive_owner is None and not self._partition(vh, q.name) \
                                and meta_key("queue", vh.name, q.name) not in keys:
                            log.info("queue '%s' in vhost '%s' was deleted in the cluster: "
                                     "removing its files", q.name, vh.name)
                            b.drop_queue_of_deleted_vhost(vh, q, "deleted in the cluster")
                    for ex in list(vh.exchanges.values()):
                        if ex.name and not ex.name.startswith("amq.") \
                                and meta_key("exchange", vh.name, ex.name) not in keys:
                            self._drop_exchange(vh, ex.name)
                for name in list(b.users.users):
                    if meta_key("user", name) not in keys:
                        b.users.delete_user(name)
                for v, u in list(b.users.permissions):
                    if meta_key("permission", v, u) not in keys:
                        del b.users.permissions[(v, u)]
                for name in list(b.global_parameters):
                    if meta_key("global-parameter", name) not in keys:
                        b.set_global_parameter(name, None)
                for v, u, ex in list(b.users.topic_permissions):
                    if meta_key("topic-permission", v, u, ex) not in keys:
                        del b.users.topic_permissions[(v, u, ex)]
                b.persist()
        finally:
            self._applying = False

    # ------------------------------------------------------------ applying the watch
    def _on_view(self) -> None:
        keys = None if self._whole_next else self.membership.touched
        self._whole_next = False
        try:
            with quiet(self.broker):        # made elsewhere: its events were published there
                self._apply_view(keys)
        except Exception:       # a bug must not stop the node following etcd
            self._whole_next = True     # what this pass left undone: the next diffs it all
            log.exception("applying metadata from etcd")

    def _apply_view(self, keys=None) -> None:
        """Make the broker what ``meta/`` says: of the keys ``keys`` (a watch event's,
        ``Membership.touched``), or of every key this node applied or the view has (None: the
        start, a fresh list of etcd, fencing), those whose revision differs from the one this
        node applied: deletes in reverse kind order, then puts in kind order (a key deleted
        and created again since, another create revision, is both)."""
        m = self.membership
        view = m.view
        if keys is None:
            current = [k for k in view if k.startswith(META)]
            candidates = [*self.applied, *(k for k in current if k not in self.applied)]
        else:
            candidates = sorted(k for k in keys if k.startswith(META))
        gone, new = [], []
        for k in candidates:
            was, now = self.applied.get(k), view.get(k)
            if was is not None and (now is None or now.create_revision != was.create_revision):
                gone.append(was)
            if now is not None and (was is None or was.mod_revision != now.mod_revision):
                new.append(now)
        if gone or new:
            self._applying = True
            try:
                with self.broker.one_change():
                    for kv in sorted(gone, key=lambda kv: -KINDS.index(kind_of(kv.key))):
                        self.applied.pop(kv.key, None)
                        self._guarded(self._remove, kv)
                    for kv in sorted(new, key=lambda kv: (KINDS.index(kind_of(kv.key)),
                                                          kv.mod_revision)):
                        self.applied[kv.key] = kv
                        self._guarded(self._put, kv)
                    self.broker.persist()
            finally:
                self._applying = False
        self.revision = m.revision
        waiting, self._waiters = self._waiters, []
        for rev, f in waiting:
            if rev <= self.revision:
                if not f.done():
                    f.set_result(None)
            else:
                self._waiters.append((rev, f))

    def _guarded(self, fn, kv) -> None:
        try:
            fn(kv, json.loads(kv.value))
        except errors.AMQPError as exc:
            log.warning("etcd's %s not applied here: %s", kv.key, exc.reply_text)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("etcd's %s is not a metadata object (%s): %r", kv.key, exc, kv.value)

    def _spawn(self, coro) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)

    def _task_done(self, t) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            exc = t.exception()
            text = exc.reply_text if isinstance(exc, errors.AMQPError) else repr(exc)
            log.warning("applying metadata from etcd: %s", text)

    async def _settle(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _put(self, kv, o: dict) -> None:
        b, kind = self.broker, kind_of(kv.key)
        if kind == "vhost":
            b.update_vhost(o["name"], o.get("description", ""), o.get("tags", []),
                           o.get("default_queue_type"))
            vh = b.vhosts[o["name"]]
            if vh.limits != (o.get("limits") or {}):
                b.set_vhost_limits(vh, o.get("limits") or {})
        elif kind == "user":
            user = b.users.add_user(o["name"], password_hash=o["password_hash"],
                                    tags=o.get("tags", []))
            user.limits = dict(o.get("limits") or {})
            b.persist()                 # UsersOp goes with the save (definitions.py)
        elif kind == "permission":
            b.users.set_permissions(o["vhost"], o["user"], o["configure"], o["write"], o["read"])
            b.persist()
        elif kind == "global-parameter":
            b.set_global_parameter(o["name"], o["value"])
        elif kind == "topic-permission":
            b.users.set_topic_permissions(o["vhost"], o["user"], o["exchange"], o["write"],
                                          o["read"])
            b.persist()
        elif kind in ("policy", "operator-policy"):
            if o["vhost"] in b.vhosts:
                try:
                    b.set_policy(make_policy(o["vhost"], o["name"], o,
                                             operator=kind == "operator-policy"))
                except PolicyInvalid as exc:    # checked where it was set: not expected
                    log.error("policy '%s' in vhost '%s' from etcd refused: %s", o["name"],
                              o["vhost"], exc)
        elif kind == "shovel":                  # run by the controller (shovel/shovels.py)
            if o["vhost"] in b.vhosts:
                try:
                    b.shovels.set(o["vhost"], o["name"], o["value"])
                except ParameterInvalid as exc:    # checked where it was set: not expected
                    log.error("shovel '%s' in vhost '%s' from etcd refused: %s", o["name"],
                              o["vhost"], exc)
        elif kind == "federation":              # links run by the controller (federation/)
            if o["vhost"] in b.vhosts:
                try:
                    b.federation.set(o["vhost"], o["component"], o["name"], o["value"])
                except ParameterInvalid as exc:    # checked where it was set: not expected
                    log.error("%s '%s' in vhost '%s' from etcd refused: %s", o["component"],
                              o["name"], o["vhost"], exc)
        elif kind == "exchange":
            vh = b.vhosts.get(o["vhost"])
            if vh is None:
                return
            if o["type"] == TOPIC:
                self._spawn(self._topic(vh, o))
            else:
                vh.restore_exchange(o["name"], o["type"], durable=o["durable"],
                                    auto_delete=o["auto_delete"], internal=o["internal"],
                                    arguments=o["arguments"])
        elif kind == "queue":
            vh = b.vhosts.get(o["vhost"])
            if vh is None or o.get("exclusive"):
                return                  # an exclusive queue: its node's only (module doc)
            q = vh.queues.get(o["name"])
            if q is not None and q.exclusive_owner is not None:
                log.warning("queue '%s' in vhost '%s' is exclusive here: etcd's is not applied",
                            o["name"], o["vhost"])
                return
            q = vh.restore_queue(o["name"], durable=o["durable"], auto_delete=o["auto_delete"],
                                 arguments=o["arguments"])
            if (q.durable, q.auto_delete, q.arguments) != (o["durable"], o["auto_delete"],
                                                           o["arguments"]):
                log.warning("queue '%s' in vhost '%s' here differs from etcd's (durable %s, "
                            "auto_delete %s, arguments %s): kept as it is, with its messages",
                            o["name"], o["vhost"], o["durable"], o["auto_delete"],
                            o["arguments"])
            self._spawn(self._announce(q))
        elif kind == "binding":
            vh = b.vhosts.get(o["vhost"])
            ex = vh.exchanges.get(o["source"]) if vh else None
            dest = self._end(vh, o["dest_kind"], o["destination"]) if vh else None
            if ex is None or dest is None or not self._same(o, vh):
                return                  # an end is gone, or was recreated since
            if ex.bind(dest, o["key"], o["arguments"]):
                b.changed(vh.binding_op(c.BindOp, ex, dest, o["key"], o["arguments"]))

    def _remove(self, kv, o: dict) -> None:
        b, kind = self.broker, kind_of(kv.key)
        if kind == "vhost":
            b.delete_vhost(o["name"])
        elif kind == "user":
            b.users.delete_user(o["name"])
            b.persist()
        elif kind == "permission":
            b.users.permissions.pop((o["vhost"], o["user"]), None)
            b.persist()
        elif kind == "global-parameter":
            b.set_global_parameter(o["name"], None)
        elif kind == "topic-permission":
            b.users.topic_permissions.pop((o["vhost"], o["user"], o["exchange"]), None)
            b.persist()
        elif kind in ("policy", "operator-policy"):
            b.delete_policy(o["vhost"], o["name"], operator=kind == "operator-policy")
            return
        elif kind == "shovel":
            b.shovels.clear(o["vhost"], o["name"])
            return
        elif kind == "federation":
            b.federation.clear(o["vhost"], o["component"], o["name"])
            return
        vh = b.vhosts.get(o.get("vhost", ""))
        if vh is None:
            return
        if kind == "exchange":
            self._drop_exchange(vh, o["name"])
        elif kind == "queue":
            q = vh.queues.get(o["name"])
            if q is not None and q.exclusive_owner is None:
                b.drop_queue_of_deleted_vhost(vh, q, "deleted in the cluster")
        elif kind == "binding":
            if self._end(vh, o["dest_kind"], o["destination"]) is not None:
                vh.unbind(o["dest_kind"], o["destination"], o["source"], o["key"],
                          o["arguments"], None, 0, 0)

    def _drop_exchange(self, vh, name: str) -> None:
        ex = vh.exchanges.get(name)
        if ex is None:
            return
        if ex.type == TOPIC:
            self._spawn(self.broker.topics.delete(vh, name, False))
        else:
            vh.delete_exchange(name)

    async def _topic(self, vh, o: dict) -> None:
        """A topic from etcd. Its partition queues are made by a task, after the passes
        that follow this change of the view (the replication's, then the forwarder's), so
        those run again once the partitions exist. Else a partition whose key came in the
        same read of the watch as the topic's (a loaded or restarted node) stayed a plain
        queue here until the next change of the view: publishes through this node were
        stored and confirmed in its copy, not on the leader, and cut once it followed."""
        await self.broker.topics.declare(vh, o["name"], passive=False, durable=o["durable"],
                                         auto_delete=o["auto_delete"],
                                         internal=o["internal"], arguments=o["arguments"])
        node = self.node
        if node.replication is not None:
            node.replication.review()
        if node.forwarder is not None:
            node.forwarder.review()

    async def _announce(self, q) -> None:
        try:
            await q.opened
        except Exception:
            return                      # down: reported by the queue itself
        if not q.announced and not q.deleted:
            q.announced = True
            self.broker.changed(queue_op(q))

    @staticmethod
    def _end(vh, kind: str, name: str):
        return (vh.queues if kind == "queue" else vh.exchanges).get(name)

    def _same(self, o: dict, vh) -> bool:
        """Both ends of a binding are the incarnations it was made for."""
        for kind, name, rev in (("exchange", o["source"], o.get("source_rev", 0)),
                                (o["dest_kind"], o["destination"], o.get("dest_rev", 0))):
            kv = self.applied.get(meta_key(kind, vh.name, name))
            if rev and (kv is None or kv.create_revision != rev):
                return False
        return True

    # ------------------------------------------------------------ writing
    async def _ready(self) -> None:
        if not self.synced.is_set():
            await self.synced.wait()

    async def reach(self, revision: int) -> None:
        """Wait until this node has applied etcd up to ``revision`` (and what that started)."""
        if self.revision < revision:
            f = asyncio.get_running_loop().create_future()
            self._waiters.append((revision, f))
            try:
                await asyncio.wait_for(f, REACH_TIMEOUT)
            except asyncio.TimeoutError:
                raise errors.InternalError(f"metadata change made in etcd (revision {revision})"
                                           f" not seen by this node within {REACH_TIMEOUT}s")
        await self._settle()

    async def _txn(self, compares, success, failure=()):
        try:
            # in a task of its own: a channel may run this coroutine by hand
            # (``frontend/metadata_copy.py``'s ``run_now``), and aiohttp needs a task
            return await asyncio.ensure_future(self.etcd.transact(compares, success, failure))
        except EtcdError as exc:
            raise errors.InternalError(f"the metadata store (etcd) did not answer: {exc}")

    def _lease(self, transient: bool) -> int:
        return self.membership.lease if transient else 0

    async def _create(self, key: str, obj: dict, vhost: str, transient: bool):
        """Put ``obj`` unless ``key`` exists; wait until this node has it; the stored
        KeyValue when it existed already (else None)."""
        vkey = meta_key("vhost", vhost)
        held, resp, rev = await self._txn(
            [compare(key, "CREATE", "EQUAL", 0), compare(vkey, "CREATE", "NOT_EQUAL", 0)],
            [put_op(key, dumps(obj), self._lease(transient))], [range_op(key), range_op(vkey)])
        if held:
            await self.reach(rev)
            return None
        stored, vhost_kv = kvs_of(resp[0]), kvs_of(resp[1])
        if not vhost_kv:
            raise errors.ConnectionForced(f"vhost '{vhost}' is deleted")
        if stored:
            await self.reach(stored[0].mod_revision)
            return stored[0]
        return None

    async def _delete(self, key: str, kv, extra: list) -> None:
        held, _, rev = await self._txn([compare(key, "MOD", "EQUAL", kv.mod_revision)],
                                       [delete_op(key), *(delete_op(k) for k in extra)])
        if held:
            await self.reach(rev)

    def _bindings_of(self, vhost: str, kind: str, name: str) -> list:
        out = []
        for key, kv in self.applied.items():
            if kind_of(key) != "binding":
                continue
            o = json.loads(kv.value)
            if o["vhost"] == vhost and ((o["dest_kind"] == kind and o["destination"] == name)
                                        or (kind == "exchange" and o["source"] == name)):
                out.append(key)
        return out

    def _partition(self, vh, name: str) -> bool:
        return self.broker.topics.partition_worker(vh, name) is not None

    @staticmethod
    def _exchange_obj(vhost, ex) -> dict:
        return {"vhost": vhost, "name": ex.name, "type": ex.type, "durable": ex.durable,
                "auto_delete": ex.auto_delete, "internal": ex.internal,
                "arguments": ex.arguments}

    def _queue_obj(self, vhost, name, durable, auto_delete, arguments) -> dict:
        return {"vhost": vhost, "name": name, "durable": durable, "auto_delete": auto_delete,
                "arguments": arguments, "node": self.node.name, "uuid": uuid.uuid4().hex}

    # ------------------------------------------------------------ the metadata calls
    @visible_everywhere
    async def declare_exchange(self, *, vhost, name, type, passive, durable, auto_delete,
                               internal, arguments, actor=INTERNAL_USER):
        await self._ready()
        if passive or name == "" or name.startswith("amq."):
            return await super().declare_exchange(
                actor=actor, vhost=vhost, name=name, type=type, passive=passive,
                durable=durable, auto_delete=auto_delete, internal=internal, arguments=arguments)
        vh = self._vhost(vhost)
        vh.check_exchange_declare(name, type, passive)
        arguments = dict(arguments or {})
        existing = vh.exchanges.get(name)
        if existing is not None and existing.type != TOPIC:
            # a redeclare: checked against this node's copy of etcd's object, as a queue's
            return await super().declare_exchange(
                actor=actor, vhost=vhost, name=name, type=type, passive=False,
                durable=durable, auto_delete=auto_delete, internal=internal, arguments=arguments)
        if type == TOPIC:
            n = self.broker.topics.check_arguments(vhost, name, arguments)
            durable = True                  # topics are durable (topics.py)
        else:
            make_exchange(type, name, durable, auto_delete, internal, arguments)   # 406?
        key = meta_key("exchange", vhost, name)
        obj = {"vhost": vhost, "name": name, "type": type, "durable": durable,
               "auto_delete": auto_delete, "internal": internal, "arguments": arguments}
        made = False
        for _ in range(RETRIES):
            stored = await self._create(key, obj, vhost, transient=not durable)
            made = made or stored is None
            if stored is not None and type == TOPIC:
                await self._grow_topic(stored, n)
            if name in self._vhost(vhost).exchanges:
                break
        else:
            raise errors.InternalError(f"exchange '{name}' in vhost '{vhost}' kept vanishing")
        await super().declare_exchange(actor=actor, vhost=vhost, name=name, type=type,
                                       passive=False, durable=durable, auto_delete=auto_delete,
                                       internal=internal, arguments=arguments)
        ex = self._vhost(vhost).exchanges.get(name)
        if made and ex is not None:         # made by this call: its event is this node's
            emit_as(self.broker, actor, "exchange.created", exchange_details(vhost, ex))

    async def _grow_topic(self, stored, n: int) -> None:
        o = json.loads(stored.value)
        if o["type"] != TOPIC or o["arguments"].get("x-partitions", 0) >= n:
            return
        o["arguments"]["x-partitions"] = n
        held, _, rev = await self._txn([compare(stored.key, "MOD", "EQUAL",
                                                stored.mod_revision)],
                                       [put_op(stored.key, dumps(o))])
        if held:
            await self.reach(rev)

    @visible_everywhere
    async def delete_exchange(self, *, vhost, name, if_unused, actor=INTERNAL_USER):
        await self._ready()
        vh = self._vhost(vhost)
        key = meta_key("exchange", vhost, name)
        kv = self.applied.get(key)
        ex = vh.exchanges.get(name)
        if kv is None or ex is None:
            return await super().delete_exchange(actor=actor, vhost=vhost, name=name,
                                                 if_unused=if_unused)
        vh.check_exchange_delete(name)
        if if_unused:
            own = set()
            if ex.type == TOPIC:
                own = {(q, str(i))
                       for i, q in enumerate(self.broker.topics.partitions_of(vh, ex))}
            if any((dest, k) not in own for dest, k, _ in ex.bindings):
                raise errors.PreconditionFailed(f"exchange '{name}' in vhost '{vhost}' in use",
                                                40, 20)
        await self._delete(key, kv, self._bindings_of(vhost, "exchange", name))

    @visible_everywhere
    async def declare_queue(self, *, vhost, name, owner, passive, durable, exclusive, auto_delete,
                            arguments, actor=INTERNAL_USER) -> str:
        await self._ready()
        vh = self._vhost(vhost)
        existing = vh.queues.get(name) if name else None
        key = meta_key("queue", vhost, name)
        if existing is None and name and self._exclusive_elsewhere(key):
            self._locked(vh, name)      # another node's exclusive queue (passive too)
        if exclusive and not passive and existing is None and name:
            return await self._declare_exclusive(vhost, name, owner, auto_delete, arguments,
                                                 actor)
        if passive or exclusive or existing is not None:
            # a topic's partitions: this node's own; a redeclare of a queue this node has
            # from etcd: checked against that copy, without a round trip (module doc: a
            # delete made elsewhere and not yet applied here is a window)
            return await super().declare_queue(
                actor=actor, vhost=vhost, name=name, owner=owner, passive=passive,
                durable=durable, exclusive=exclusive, auto_delete=auto_delete,
                arguments=arguments)
        if not name:
            name = "amq.gen-" + uuid.uuid4().hex[:22]
            key = meta_key("queue", vhost, name)
        arguments = with_default_type(vh.default_queue_type, dict(arguments or {}),
                                      durable=durable, exclusive=False, auto_delete=auto_delete)
        self._check_new_queue(vh, name, durable, auto_delete, arguments)
        obj = self._queue_obj(vhost, name, durable, auto_delete, arguments)
        made = False
        for _ in range(RETRIES):
            stored = await self._create(key, obj, vhost, transient=not durable)
            made = made or stored is None
            if name in self._vhost(vhost).queues:
                break
            if stored is not None and json.loads(stored.value).get("exclusive"):
                self._locked(vh, name)
        else:
            raise errors.InternalError(f"queue '{name}' in vhost '{vhost}' kept vanishing")
        await self._placed(vhost, name)
        name = await super().declare_queue(
            actor=actor, vhost=vhost, name=name, owner=owner, passive=False, durable=durable,
            exclusive=False, auto_delete=auto_delete, arguments=arguments)
        q = self._vhost(vhost).queues.get(name)
        if made and q is not None:          # made by this call: its event is this node's
            emit_as(self.broker, actor, "queue.created", queue_details(q))
        return name

    async def _declare_exclusive(self, vhost, name, owner, auto_delete, arguments,
                                 actor=INTERNAL_USER) -> str:
        """A new exclusive queue lives on this node, but its name is the cluster's: put on
        this node's lease (so it goes with the node), listed by every node, 405 to any
        other connection anywhere, as RabbitMQ's."""
        key = meta_key("queue", vhost, name)
        arguments = dict(arguments or {})
        obj = dict(self._queue_obj(vhost, name, False, auto_delete, arguments), exclusive=True)
        stored = await self._create(key, obj, vhost, transient=True)
        vh = self._vhost(vhost)
        if stored is not None and name not in vh.queues:
            self._locked(vh, name)
        try:
            return await super().declare_queue(
                actor=actor,
                vhost=vhost, name=name, owner=owner, passive=False, durable=False,
                exclusive=True, auto_delete=auto_delete, arguments=arguments)
        except Exception:
            kv = self.applied.get(key)
            if stored is None and kv is not None and name not in vh.queues:
                await self._delete_quietly(key, kv, [])     # refused here: the name is free
            raise

    def _exclusive_elsewhere(self, key: str) -> bool:
        kv = self.applied.get(key)
        if kv is None:
            return False
        o = json.loads(kv.value)
        return bool(o.get("exclusive")) and o.get("node") != self.node.name

    @staticmethod
    def _locked(vh, name: str):
        # the vhost's 405 wording names the queue only: a stand-in for the QueueRef
        vh.exclusive_locked(SimpleNamespace(name=name), 50, 10)

    def exclusive_elsewhere(self, vhosts) -> list[dict]:
        """Other nodes' exclusive queues in these vhosts, as etcd has them (``/api/queues``
        lists them)."""
        wanted, out = set(vhosts), []
        for key, kv in self.applied.items():
            if kind_of(key) == "queue" and self._exclusive_elsewhere(key):
                o = json.loads(kv.value)
                if o["vhost"] in wanted:
                    out.append(o)
        return out

    async def _placed(self, vhost: str, name: str) -> None:
        """Wait (at most ``--cluster-place-timeout``) until the controller has placed the new
        queue: forward.py then points it at its leader, so what the client publishes next
        goes there. After that the declare is answered anyway (no controller): the queue
        stays on this node until placed, a replicated queue's copy refusing publishes
        meanwhile (replication.Held)."""
        from .placement import partition_key        # placement imports this module
        m, key = self.membership, partition_key(vhost, name, 0)
        timeout = self.node.cfg.cluster_place_timeout
        deadline = m.loop.time() + timeout
        while key not in m.view:
            left = deadline - m.loop.time()
            if left <= 0:
                log.warning("queue '%s' in vhost '%s' not placed by the controller within "
                            "%g s: served by this node until it is (a replicated queue "
                            "nacks publishes meanwhile)", name, vhost, timeout)
                return
            try:
                await asyncio.wait_for(m.changed(), left)
            except asyncio.TimeoutError:
                pass

    @staticmethod
    def _check_new_queue(vh, name, durable, auto_delete, arguments) -> None:
        """What ``QueueRef`` refuses of a new queue, before it goes to etcd (406)."""
        args = QueueArgs(name, vh.name, arguments)
        if args.queue_type == "quorum":
            check_quorum_properties(name, vh.name, durable=durable, exclusive=False,
                                    auto_delete=auto_delete)
        if args.stream is not None:
            check_stream_declare(name, vh.name, durable=durable, exclusive=False,
                                 auto_delete=auto_delete, arguments=arguments)
        from ..frontend.admission import limit_of
        limit = limit_of(vh.limits, "max-queues")
        if limit is not None and len(vh.queues) >= limit:
            raise errors.PreconditionFailed(
                f"cannot declare queue '{name}': queue limit in vhost '{vh.name}' ({limit}) "
                f"is reached", 50, 10)

    @visible_everywhere
    async def delete_queue(self, *, vhost, name, owner, if_unused, if_empty,
                           actor=INTERNAL_USER) -> int:
        await self._ready()
        vh = self._vhost(vhost)
        key = meta_key("queue", vhost, name)
        kv, q = self.applied.get(key), vh.queues.get(name)
        self._deleting.add(key)
        try:
            count = await super().delete_queue(actor=actor, vhost=vhost, name=name, owner=owner,
                                               if_unused=if_unused, if_empty=if_empty)
            if kv is not None and q is not None:
                # checked and deleted here first (if-unused, if-empty are this node's
                # answers while every node has its own copy), then in etcd
                await self._delete(key, kv, self._bindings_of(vhost, "queue", name))
        finally:
            self._deleting.discard(key)
        return count

    def _binding_txn(self, vh, ex, dest, dkind, rk, args, create_only=False):
        """The txn (compares, success) that stores a binding, or None: the binding is this
        node's own (an exclusive queue, a topic's partitions, an end not in etcd)."""
        if ex.type == TOPIC or getattr(dest, "exclusive_owner", None) is not None:
            return None
        view = self.membership.view
        src_kv = view.get(meta_key("exchange", vh.name, ex.name))
        dst_kv = view.get(meta_key(dkind, vh.name, dest.name))
        if dst_kv is None or (src_kv is None and not ex.name.startswith("amq.")):
            return None
        compares = [compare(dst_kv.key, "CREATE", "EQUAL", dst_kv.create_revision)]
        if src_kv is not None:
            compares.append(compare(src_kv.key, "CREATE", "EQUAL", src_kv.create_revision))
        key = binding_key(vh.name, ex.name, dkind, dest.name, rk, args)
        if create_only:
            compares.append(compare(key, "CREATE", "EQUAL", 0))
        obj = {"vhost": vh.name, "source": ex.name, "dest_kind": dkind,
               "destination": dest.name, "key": rk, "arguments": dict(args or {}),
               "source_rev": src_kv.create_revision if src_kv else 0,
               "dest_rev": dst_kv.create_revision}
        transient = not (ex.durable and getattr(dest, "durable", False))
        return compares, [put_op(key, dumps(obj), self._lease(transient))]

    @visible_everywhere
    async def bind(self, *, vhost, kind, destination, source, key, arguments, owner, cid, mid,
                   actor=INTERNAL_USER):
        await self._ready()
        for _ in range(RETRIES):
            vh = self._vhost(vhost)
            # the vhost's checks, in RabbitMQ's order (403, 404, 404, 405, 406)
            ex = vh._bindable(source, cid, mid)
            dest = vh._destination(kind, destination, cid, mid)
            if kind == "queue":
                vh.check_exclusive(dest, owner, cid, mid)
            ex.validate_binding(key, arguments, cid, mid, dest)
            made = self._binding_txn(vh, ex, dest, kind, key, arguments)
            if made is None:
                return await super().bind(actor=actor, vhost=vhost, kind=kind,
                                          destination=destination, source=source, key=key,
                                          arguments=arguments, owner=owner, cid=cid, mid=mid)
            if (dest, key, _args_key(arguments)) in ex.bindings:
                return                  # bound already
            held, _, rev = await self._txn(*made)
            if held:
                await self.reach(rev)
                emit_as(self.broker, actor, "binding.created", binding_details(
                    vhost, source, kind, destination, key, arguments))
                if ex.keeps_history:        # made through this node: its history
                    self.broker.history_bound(vh, ex, dest)
                    await self.broker.recent.delivered()
                return
            await self._settle()        # an end changed meanwhile: check again
            await asyncio.sleep(0.05)
        raise errors.NotFound(f"no {kind} '{destination}' in vhost '{vhost}'", cid, mid)

    @visible_everywhere
    async def unbind(self, *, vhost, kind, destination, source, key, arguments, owner, cid, mid,
                     actor=INTERNAL_USER):
        await self._ready()
        bkey = binding_key(vhost, source, kind, destination, key, arguments)
        kv = self.applied.get(bkey)
        if kv is None:
            return await super().unbind(actor=actor, vhost=vhost, kind=kind,
                                        destination=destination, source=source, key=key,
                                        arguments=arguments, owner=owner, cid=cid, mid=mid)
        vh = self._vhost(vhost)
        if source == "":
            raise errors.AccessRefused("operation not permitted on the default exchange",
                                       cid, mid)
        dest = self._end(vh, kind, destination)
        if kind == "queue" and dest is not None:
            vh.check_exclusive(dest, owner, cid, mid)
        held, _, rev = await self._txn([compare(bkey, "MOD", "EQUAL", kv.mod_revision)],
                                       [delete_op(bkey)])
        if held:
            await self.reach(rev)
            emit_as(self.broker, actor, "binding.deleted", binding_details(
                vhost, source, kind, destination, key, arguments))

    # ------------------------------------------------------------ users, vhosts, permissions
    def changed(self, op) -> None:
        """The owner made a change (``owner.changed``): users, vhosts, permissions and limits
        changed here (management API, import) are pushed to etcd; a queue or exchange in
        etcd that this node deleted by itself (auto-delete, ``x-expires``) is deleted there.
        """
        if not self.synced.is_set():
            return
        if isinstance(op, (c.QueueDeleted, c.ExchangeDeleted)):
            # while applying too: an exchange that auto-deletes because etcd took its last
            # binding goes from etcd as well (every node tries; the MOD compare lets one)
            kind = "queue" if isinstance(op, c.QueueDeleted) else "exchange"
            key = meta_key(kind, op.vhost, op.name)
            kv = self.applied.get(key)
            if kv is not None and key not in self._deleting:
                t = asyncio.ensure_future(self._delete_quietly(
                    key, kv, self._bindings_of(op.vhost, kind, op.name)))
                self._background.add(t)
                t.add_done_callback(self._background.discard)
            return
        if self._applying:
            return
        if isinstance(op, (c.UsersOp, c.VhostOp, c.VhostDeleted, c.VhostLimitsOp, c.PolicyOp,
                           c.PolicyDeleted, c.GlobalParametersOp, c.ParameterOp,
                           c.ParameterDeleted)):
            self._pushing_since_asked = True
            if self._push is not None and not self._push.done():
                self._push_again = True
            else:
                self._push = asyncio.ensure_future(self._push_changes())

    async def _delete_quietly(self, key: str, kv, extra: list) -> None:
        try:
            held, _, _ = await self.etcd.transact(
                [compare(key, "MOD", "EQUAL", kv.mod_revision)],
                [delete_op(key), *(delete_op(k) for k in extra)])
        except EtcdError as exc:
            log.error("%s deleted here, not in etcd: %s", key[len(META):], exc)
            return
        if held:
            log.info("%s deleted here by itself: deleted in etcd", key[len(META):])

    def _desired(self) -> dict:
        b, out = self.broker, {}
        for vh in b.vhosts.values():
            out[meta_key("vhost", vh.name)] = dumps({
                "name": vh.name, "description": vh.description, "tags": list(vh.tags),
                "default_queue_type": vh.default_queue_type, "limits": vh.limits})
        for u in b.users.users.values():
            out[meta_key("user", u.name)] = dumps({
                "name": u.name, "password_hash": u.password_hash, "tags": list(u.tags),
                "limits": u.limits})
        for key, p in b.users.permissions.items():
            out[meta_key("permission", *key)] = dumps(permission_item(key, p))
        for item in global_parameter_items(b.global_parameters):
            out[meta_key("global-parameter", item["name"])] = dumps(item)
        for key, p in b.users.topic_permissions.items():
            out[meta_key("topic-permission", *key)] = dumps(topic_permission_item(key, p))
        for vh in b.vhosts.values():
            for policy in vh.policies.values():
                out[meta_key("policy", vh.name, policy.name)] = dumps(policy.item())
            for policy in vh.operator_policies.values():
                out[meta_key("operator-policy", vh.name, policy.name)] = dumps(policy.item())
        for item in b.shovels.items():
            out[meta_key("shovel", item["vhost"], item["name"])] = dumps(item)
        for item in b.federation.items():
            out[meta_key("federation", item["vhost"], item["component"], item["name"])] = \
                dumps(item)
        return out

    async def _push_changes(self) -> None:
        while True:
            self._push_again = False
            want = self._desired()
            have = {k: kv for k, kv in self.applied.items()
                    if kind_of(k) in PUSHED}
            ops = [put_op(k, v) for k, v in want.items()
                   if k not in have or json.loads(have[k].value) != json.loads(v)]
            gone_vhosts = [json.loads(have[k].value)["name"] for k in have.keys() - want.keys()
                           if kind_of(k) == "vhost"]
            for k in have.keys() - want.keys():
                if kind_of(k) in IN_VHOST and \
                        json.loads(have[k].value)["vhost"] in gone_vhosts:
                    continue                # the vhost's prefix delete takes it
                ops.append(delete_op(k))
            for v in gone_vhosts:           # everything in a deleted vhost goes with it
                ops += [delete_op(META + kind + "/" + quote(v, safe="") + "/", prefix=True)
                        for kind in (*IN_VHOST, "exchange", "queue", "binding")]
            try:
                for i in range(0, len(ops), 100):       # etcd's --max-txn-ops is 128
                    _, _, rev = await self.etcd.transact([], ops[i:i + 100])
                    await self.reach(rev)
            except (EtcdError, errors.AMQPError) as exc:
                log.error("users, vhosts, permissions, policies not written to etcd: %s; "
                          "retrying", exc)
                await asyncio.sleep(1.0)
                self._push_again = True
            if not self._push_again:
                return

    # ------------------------------------------------------------ the definitions import
    async def import_definitions(self, planned: dict) -> None:
        """A definitions import (``mgmt/definitions.py``, already checked whole by ``plan``):
        users, vhosts, permissions and limits are applied here and pushed (``changed``);
        exchanges, queues and bindings go to etcd as declares do, each only if absent
        (RabbitMQ's import keeps what exists), and every node, this one included, applies
        them from its watch. Returns once this node has them (read-your-writes)."""
        await self._ready()
        b = self.broker
        for e in planned["exchanges"]:      # a topic's arguments, refused as a declare would
            if e.get("type") == TOPIC:
                b.topics.check_arguments(e["vhost"], e["name"], e.get("arguments") or {})
        b.definitions.apply({**planned, "exchanges": [], "queues": [], "bindings": []})
        await self._pushed()
        objects = []
        for e in planned["exchanges"]:
            if e["name"] == "" or e["name"].startswith("amq."):
                continue                    # skipped with RabbitMQ's warning, as locally
            topic = e.get("type") == TOPIC
            objects.append((meta_key("exchange", e["vhost"], e["name"]), {
                "vhost": e["vhost"], "name": e["name"], "type": e.get("type", "direct"),
                "durable": True if topic else e.get("durable", True),
                "auto_delete": e.get("auto_delete", False), "internal": e.get("internal", False),
                "arguments": e.get("arguments") or {}}))
        for q in planned["queues"]:
            if q["name"] == "" or q["name"].startswith("amq."):
                continue
            objects.append((meta_key("queue", q["vhost"], q["name"]), self._queue_obj(
                q["vhost"], q["name"], q.get("durable", True), q.get("auto_delete", False),
                q.get("arguments") or {})))
        last = 0
        for i in range(0, len(objects), 60):    # etcd's --max-txn-ops is 128 (compares)
            chunk = objects[i:i + 60]
            ops = [put_op(k, dumps(o), self._lease(not o["durable"])) for k, o in chunk]
            vhosts = [compare(meta_key("vhost", v), "CREATE", "NOT_EQUAL", 0)
                      for v in sorted({o["vhost"] for _, o in chunk})]
            held, _, rev = await self._txn(
                [*vhosts, *(compare(k, "CREATE", "EQUAL", 0) for k, _ in chunk)], ops)
            if not held:                    # some exist already (made meanwhile), or a
                for (k, o), op in zip(chunk, ops):  # vhost went: one by one, as declares
                    _, _, rev = await self._txn(
                        [compare(meta_key("vhost", o["vhost"]), "CREATE", "NOT_EQUAL", 0),
                         compare(k, "CREATE", "EQUAL", 0)], [op])
                    last = max(last, rev)
            last = max(last, rev)
        await self.reach(last)
        made = []
        for bd in planned["bindings"]:      # both ends' create revisions are known now
            vh = b.vhosts.get(bd["vhost"])
            ex = vh.exchanges.get(bd["source"]) if vh is not None else None
            dkind = bd.get("destination_type", "queue")
            dest = self._end(vh, dkind, bd["destination"]) if vh is not None else None
            if ex is None or dest is None:
                continue                    # skipped, as the local import skips it
            txn = self._binding_txn(vh, ex, dest, dkind, bd.get("routing_key", ""),
                                    bd.get("arguments") or {}, create_only=True)
            if txn is not None:
                made.append(txn)
        for i in range(0, len(made), 40):   # up to 3 compares each: 120 of etcd's 128
            chunk = made[i:i + 40]
            held, _, rev = await self._txn([c for cs, _ in chunk for c in cs],
                                           [op for _, ops in chunk for op in ops])
            if not held:                    # an end changed, or some exist: one by one
                for txn in chunk:
                    _, _, rev = await self._txn(*txn)
                    last = max(last, rev)
            last = max(last, rev)
        await self.reach(last)
        # answered once every node has it, as a declare is (visible_everywhere)
        if self.node.forwarder is not None:
            await self.node.forwarder.peers_reach(self.revision)

    async def dedup_seen(self, *, vhost, exchange, key, ttl) -> bool:
        """An x-message-deduplication exchange's cache is one for the cluster, as the
        plugin's is one Mnesia table: kept by the node ``dedup_owner`` picks among the live
        nodes and asked over the cluster link (``DedupSeen``), so a retry is caught through
        whichever node it comes. A node that takes a cache over starts it empty (as a
        restart does). The holder not answering within ``DEDUP_WAIT`` (down, cut off, its
        lease not yet expired): this node's own cache answers, and a retry through another
        node may pass until the live nodes are known again."""
        owner = dedup_owner(vhost, exchange, [
            name for name, reg in self.membership.nodes().items()
            if reg.get("state") == "running"])     # not one that is leaving
        forwarder = self.node.forwarder
        if owner is None or owner == self.node.name or forwarder is None:
            return self.dedup_here(vhost=vhost, exchange=exchange, key=key, ttl=ttl)
        call = forwarder.meta_client(owner).request(c.DedupSeen, vhost=vhost,
                                                    exchange=exchange, key=key, ttl=ttl)
        try:
            return bool(await asyncio.wait_for(call, DEDUP_WAIT))
        except asyncio.CancelledError:
            raise
        except Exception as exc:        # no answer or the link lost: HostGone, timeout
            now = asyncio.get_running_loop().time()
            if now - self._dedup_logged > 10:
                self._dedup_logged = now
                log.warning("exchange '%s' in vhost '%s': node %s, which holds its "
                            "de-duplication cache, did not answer (%s); this node's cache "
                            "answers meanwhile", exchange, vhost, owner,
                            exc or type(exc).__name__)
            return self.dedup_here(vhost=vhost, exchange=exchange, key=key, ttl=ttl)

    async def everywhere(self) -> None:
        """After a management API change (users, vhosts, permissions, limits, policies, which
        ``changed`` pushes to etcd behind the change): return once etcd has it and every
        other node has applied it, as RabbitMQ answers once its metadata store has it
        everywhere; before, the answer came first, and a client of another node, or this
        node crashing at once, could miss it. Etcd down: answered after ``PUSH_WAIT``
        anyway (the change holds here, the push retries)."""
        if not self._pushing_since_asked:
            return
        self._pushing_since_asked = False
        push = self._push
        if push is not None and not push.done():
            done, _ = await asyncio.wait([push], timeout=PUSH_WAIT)
            if not done:
                log.warning("a management change not in etcd after %.0fs: answered; it is "
                            "pushed when etcd answers", PUSH_WAIT)
                return
        if self.node.forwarder is not None:
            await self.node.forwarder.peers_reach(self.revision)

    async def _pushed(self) -> None:
        """Wait until the users, vhosts, permissions and limits this node changed are in
        etcd and applied here (a queue's create compares its vhost's key)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REACH_TIMEOUT
        while self._push is not None and not self._push.done():
            if loop.time() > deadline:
                raise errors.InternalError("the metadata store (etcd) did not take the "
                                           f"import's users and vhosts within {REACH_TIMEOUT}s")
            await asyncio.wait([self._push], timeout=deadline - loop.time())

    async def close(self) -> None:
        for t in [self._push, *self._tasks, *self._background]:
            if t is not None:
                t.cancel()
