"""Placement by the controller (docs/CLUSTER.md section 2): which nodes hold each partition's
replicas, which one leads, at which leader epoch.

Theory of operation
-------------------
Level-triggered, as Kubernetes' controllers are: on every change of the mirror of etcd while
this node is the controller, ``reconcile`` compares what ``meta/`` says exists with what
``partitions/`` says is placed and writes the difference. So a newly elected controller
needs no hand-over: it reconciles what it finds.

**A pass per change, over what it touched** (as the applier's and the replication's,
``Membership.touched``): a pass looks at every partition only on becoming the controller,
after a fresh list of etcd or fencing (touched None), when a node's key changed (it came,
went or registered again: failovers, waiting reassignments, preferred leaders) or a
``draining/`` key did, and after a pass that failed. Otherwise it looks at the partitions
the keys of the events since the last pass name: a partition key, its reassign key, a queue
object's partition, a topic object's partitions; plus the partitions whose preferred-leader
move an earlier pass left for later (one move per pass, below). Every rule below reads only
the partition's own keys, its object, the live nodes and the draining marks, so the rest
needs no look; a write that etcd refused changed its key (an event names it) or found this
node deposed (its next election is a whole pass). No periodic pass is needed. The load the
placement balances (replicas and leaderships per node) is counted once and kept up to date
from the partition keys events touch. (A pass over every queue and partition per event
cost 26 ms of CPU at 1,000 queues, 150-170 ms at 5,000: bench/RESULTS.md "The controller's
pass".)

- **A queue without partitions** gets ``partitions/<vhost>/<queue>/0`` (a topic, one key per
  partition ``i``): ``{"replicas", "leader", "leader_epoch": 0, "isr", "min_isr",
  "controller_epoch", "queue_rev"}``. Replica counts: a classic queue 1, the node that
  declared it (RabbitMQ 4: classic queues are not replicated); a quorum queue
  ``x-quorum-initial-group-size``, a stream ``x-initial-cluster-size``, both by default
  min(3, nodes); a topic ``x-replication-factor`` (default 1, Kafka's), for every partition;
  never more than the live nodes. Replicas are the live nodes holding the fewest replicas
  (ties by name), the leader the one of them leading the fewest partitions; the leader is
  listed first, the preferred leader. ``min_isr`` is ``x-min-insync-replicas`` or a
  majority. ``queue_rev`` is the queue key's create revision: a queue deleted and declared
  again is placed again.
- **A partition whose queue is gone** is deleted.
- **A leader that is not alive** (its ``nodes/`` key expired or it left): the first replica,
  in replica order, that is in the ISR and alive leads, with ``leader_epoch + 1``. ISR members
  that are not alive leave the ISR. No ISR member alive: no leader (``null``, epoch bumped),
  and the ISR keeps its last members (Kafka's rule: only they hold every confirmed message),
  so the first of them to return leads again. ``x-unclean-leader-election: true`` on the
  queue allows any live replica instead, logged.
- **A reassignment** (``reassign/<vhost>/<queue>/<i>`` = ``{"replicas": target}``, written
  by ``ctl reassign`` / ``PUT /api/reassignments/...`` on any node, or by the controller for
  a drain) runs in Kafka's order: the replicas become ``target + (old - target)`` (every
  new one added, none removed yet; a new replica on a node that is not alive waits for it);
  once every target replica is in the ISR, the leader stays if it is in the target, else the
  first target replica in the ISR leads, and ``replicas = target``, the ISR cut to it,
  ``leader_epoch + 1`` and the reassign key's delete are one txn.
- **A draining node** (``draining/<node>``, ``ctl drain``): new placements avoid it (unless
  every live node drains), and every partition holding it gets a reassign key: its replicas
  without the node, plus the live non-draining node holding the fewest replicas when one is
  free, so the replica count stays. A partition with nowhere to go keeps its replica there.
- **The preferred leader** (the first replica) leads again when it is alive and in the ISR
  and not draining: one partition per pass (Kafka's preferred-replica election), so
  leaderships move one at a time.
- **Back in the ISR**: not the controller's business. The partition's leader adds a
  follower that has fetched up to the high watermark, and removes one that lags for
  ``replica_lag_time`` (``replication.py``, Kafka's rule); the reassignment and the
  preferred-leader moves above wait for exactly that.

At most one write per partition per pass, in this order: deleted, failover,
reassignment, drain, preferred leader. Each write changes the mirror, which runs another pass.

**Every write is guarded**: a txn whose compares are ``CREATE(controller/<my lease>) ==
controller epoch`` (this node's election key still exists and is the one that won) and the
partition key's ``MOD`` revision as read (or ``CREATE == 0`` for a new one). A deposed
controller's writes fail in etcd; a failed write is retried by the next reconcile.
"""
from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote, unquote

from .controller import CONTROLLER
from .etcd import EtcdError, compare, delete_op, put_op
from .membership import NODES, PREFIX
from .metadata import META, kind_of

log = logging.getLogger("amqpbroker.cluster")

PARTITIONS = PREFIX + "partitions/"
REASSIGN = PREFIX + "reassign/"
DRAINING = PREFIX + "draining/"
TOPIC = "x-partitioned"


def partition_key(vhost: str, queue: str, i: int) -> str:
    return PARTITIONS + f"{quote(vhost, safe='')}/{quote(queue, safe='')}/{i}"


def reassign_key(partition: str) -> str:
    """The reassign key of a partition key (the same ``<vhost>/<queue>/<i>``)."""
    return REASSIGN + partition[len(PARTITIONS):]


def parse_partition_key(key: str) -> tuple[str, str, int]:
    vhost, queue, i = key[len(PARTITIONS):].split("/")
    return unquote(vhost), unquote(queue), int(i)


def _int(v, default: int) -> int:
    try:
        n = int(v)
    except (TypeError, ValueError):
        return default
    return n if n > 0 else default


def wanted(obj: dict, kind: str, nodes: int) -> tuple[int, int]:
    """(partitions, replicas per partition) of a queue or topic object of ``meta/``."""
    args = obj.get("arguments") or {}
    if kind == "exchange":
        return _int(args.get("x-partitions"), 1), min(_int(args.get("x-replication-factor"),
                                                           1), nodes)
    qtype = args.get("x-queue-type", "classic")
    if qtype == "quorum":
        return 1, min(_int(args.get("x-quorum-initial-group-size"), min(3, nodes)), nodes)
    if qtype == "stream":
        return 1, min(_int(args.get("x-initial-cluster-size"), min(3, nodes)), nodes)
    return 1, 1


def partitions_wanted(kv, nodes: int) -> dict:
    """What one ``meta/`` object wants placed (``Placement._placed``'s entries): partition
    key -> (queue object, kind, its key's create revision, replicas wanted) of a queue's
    partition, of a topic's partitions; nothing for other objects."""
    kind = kind_of(kv.key)
    if kind not in ("queue", "exchange"):
        return {}
    obj = json.loads(kv.value)
    if kind == "exchange" and obj.get("type") != TOPIC:
        return {}
    if obj.get("exclusive"):
        return {}               # lives on its connection's node, never placed or forwarded
    n, replicas = wanted(obj, kind, nodes)
    return {partition_key(obj["vhost"], obj["name"], i): (obj, kind, kv.create_revision,
                                                          replicas) for i in range(n)}


def queue_entry(view, vhost: str, queue: str):
    """(key, etcd entry) of the partition a queue is: its own partition 0, or for a topic's
    partition queue ``T-i`` partition i of topic T; (None, None) if the view has neither."""
    key = partition_key(vhost, queue, 0)
    kv = view.get(key)
    if kv is None:
        topic, _, i = queue.rpartition("-")
        if topic and i.isdigit():
            key = partition_key(vhost, topic, int(i))
            kv = view.get(key)
    return (key, kv) if kv is not None else (None, None)


def partition_keys(vhost: str, queue: str) -> list[str]:
    """The keys ``queue_entry`` may read for a queue: its own partition 0, and for a name
    ``T-i`` partition i of topic T."""
    keys = [partition_key(vhost, queue, 0)]
    topic, _, i = queue.rpartition("-")
    if topic and i.isdigit():
        keys.append(partition_key(vhost, topic, int(i)))
    return keys


class Placement:
    def __init__(self, node):
        self.node = node                    # ClusterNode
        self.membership = node.membership
        self.controller = node.controller
        self._task: asyncio.Task | None = None
        self._again = False
        # what the next pass looks at (module doc, "A pass per change"): the keys the events
        # since the last pass touched, None for every partition
        self._keys: set[str] | None = None
        self._following = False             # controller at the last event: passes under way
        self._deferred: set[str] = set()    # partitions whose preferred leader waits a pass
        self._load: dict[str, list[int]] = {}   # node -> [replicas, leaderships] placed
        self._counted: dict[str, tuple] = {}    # partition key -> what it adds to _load
        # the view's partition keys by their queue's or topic's path ("<vhost>/<name>"):
        # what a topic object's event names without a scan of the view; kept from the
        # events' touched keys, made afresh (None) after a fresh list or when not following
        self._by_path: dict[str, set[str]] | None = None
        self.examined = 0                   # partitions the passes looked at (tests, benches)
        self.membership.on_view.append(self._review)

    # ------------------------------------------------------------ reading (every node)
    def partitions(self) -> dict[str, dict]:
        out = {}
        for key, kv in self.membership.view.items():
            if key.startswith(PARTITIONS):
                try:
                    out[key] = json.loads(kv.value)
                except ValueError:
                    log.warning("unreadable partition key %s", key)
        return out

    def of_queue(self, vhost: str, queue: str) -> dict | None:
        """The partition state of a queue, or of a topic's partition queue ``T-i``."""
        _key, kv = queue_entry(self.membership.view, vhost, queue)
        return json.loads(kv.value) if kv is not None else None

    def draining(self) -> set[str]:
        """The nodes marked draining (``ctl drain``)."""
        return {unquote(kv.key[len(DRAINING):]) for kv in self.membership.under(DRAINING)}

    def reassignments(self) -> list[dict]:
        """Every reassignment in progress: vhost, queue, partition, target and current
        replicas."""
        view, out = self.membership.view, []
        for key, kv in sorted(view.items()):
            if not key.startswith(REASSIGN):
                continue
            pkey = PARTITIONS + key[len(REASSIGN):]
            vhost, queue, i = parse_partition_key(pkey)
            current = view.get(pkey)
            out.append({"vhost": vhost, "queue": queue, "partition": i,
                        "target": json.loads(kv.value)["replicas"],
                        "replicas": json.loads(current.value)["replicas"] if current else []})
        return out

    # ------------------------------------------------------------ requests (any node)
    async def request_reassign(self, vhost: str, queue: str, replicas: list[str]) -> list[int]:
        """Ask the controller to move every partition of ``queue`` (a topic: each of its
        partitions) to ``replicas``; the partitions asked for. ``ValueError`` says what is
        wrong with the request, ``LookupError`` that the queue has no partition."""
        alive, draining = set(self.membership.nodes()), self.draining()
        if not replicas or len(set(replicas)) != len(replicas):
            raise ValueError("replicas: a list of distinct node names expected")
        for n in replicas:
            if n not in alive:
                raise ValueError(f"replicas: node '{n}' is not a live member of the cluster")
            if n in draining:
                raise ValueError(f"replicas: node '{n}' is draining")
        keys = sorted((k for k in self.membership.view if k.startswith(PARTITIONS)
                       and parse_partition_key(k)[:2] == (vhost, queue)),
                      key=lambda k: parse_partition_key(k)[2])
        if not keys:
            raise LookupError(queue)
        value = json.dumps({"replicas": list(replicas)})
        await self.membership.etcd.transact([], [put_op(reassign_key(k), value) for k in keys])
        return [parse_partition_key(k)[2] for k in keys]

    async def set_draining(self, node: str, on: bool) -> None:
        """Mark ``node`` draining (its replicas move off it; new placements avoid it) or
        not (``revive``: new placements may use it again; nothing moves back)."""
        key = DRAINING + quote(node, safe="")
        if on:
            await self.membership.etcd.put(key, json.dumps({"node": node}))
        else:
            await self.membership.etcd.delete(key)

    # ------------------------------------------------------------ the controller's work
    def _review(self) -> None:
        if not self.controller.active:
            self._following = False
            self._by_path = None
            return
        touched = self.membership.touched
        if not self._following or touched is None:
            self._by_path = None            # events unseen: made afresh when asked
        elif self._by_path is not None:
            self._index(touched)
        if not self._following or touched is None or \
                any(k.startswith((NODES, DRAINING)) for k in touched):
            self._keys = None               # elected, a fresh list, a node's key: every one
        elif self._keys is not None:
            self._keys |= touched
        self._following = True
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            keys, self._keys = self._keys, set()
            try:
                await self.reconcile(keys)
            except EtcdError as exc:
                log.warning("placement: %s; trying again", exc)
                self._keys = None           # the pass after a failed one looks at every one
                await asyncio.sleep(0.5)
                self._again = True
            except Exception:
                log.exception("placement")
                self._keys = None
                await asyncio.sleep(0.5)
                self._again = True
            if not self._again or not self.controller.active:
                return

    def _placed(self) -> dict:
        """What should be placed: partition key -> (queue object, kind, its key's create
        revision, replicas wanted)."""
        view, nodes = self.membership.view, len(self.membership.nodes())
        out = {}
        for key, kv in view.items():
            if key.startswith(META):
                out.update(partitions_wanted(kv, max(nodes, 1)))
        return out

    def _partitions_of(self, keys) -> set[str]:
        """The partition keys whose placement the etcd keys ``keys`` may change: a partition
        key itself, a reassign key's partition, a queue object's partition, a topic
        object's partitions (those it wants and those there are: found by their prefix)."""
        view, out = self.membership.view, set()
        for key in keys:
            if key.startswith(PARTITIONS):
                out.add(key)
            elif key.startswith(REASSIGN):
                out.add(PARTITIONS + key[len(REASSIGN):])
            elif key.startswith(META):
                kind, _, path = key[len(META):].partition("/")
                if kind == "queue":
                    out.add(PARTITIONS + path + "/0")
                elif kind == "exchange":
                    kv = view.get(key)
                    if kv is not None:
                        out.update(partitions_wanted(kv, 1))
                    if self._by_path is None:
                        self._index(None)
                    out.update(self._by_path.get(path, ()))
        return {k for k in out if k.count("/", len(PARTITIONS)) == 2}

    def _index(self, keys) -> None:
        """Bring ``_by_path`` up to the view at the etcd keys ``keys`` (None: afresh, one
        scan of the view), so a topic object's event finds the partition keys there are
        (``_partitions_of``) at the cost of its partitions, not of the view."""
        view = self.membership.view
        if keys is None:
            self._by_path = {}
            keys = [k for k in view if k.startswith(PARTITIONS)]
        by_path = self._by_path
        for key in keys:
            if not key.startswith(PARTITIONS):
                continue
            path = key[len(PARTITIONS):].rpartition("/")[0]
            if key in view:
                by_path.setdefault(path, set()).add(key)
            elif path in by_path:
                by_path[path].discard(key)
                if not by_path[path]:
                    del by_path[path]

    def _wanted_at(self, keys, nodes: int) -> dict:
        """``_placed``'s entries for the partition keys ``keys`` only: each one's queue
        object (partition 0) or topic object, found by the key's vhost and name."""
        view, out = self.membership.view, {}
        for key in keys:
            path, _, i = key[len(PARTITIONS):].rpartition("/")
            for kind in ("exchange", "queue") if i == "0" else ("exchange",):
                kv = view.get(META + kind + "/" + path)
                if kv is not None:
                    want = partitions_wanted(kv, nodes).get(key)
                    if want is not None:
                        out[key] = want
        return out

    def _count(self, keys) -> None:
        """Bring ``_load`` (replicas and leaderships per node over every partition) up to
        the view at the partition keys ``keys`` (None: every key, counted afresh)."""
        view = self.membership.view
        if keys is None:
            self._load, self._counted = {}, {}
            keys = [k for k in view if k.startswith(PARTITIONS)]
        load = self._load
        for key in keys:
            replicas, leader = self._counted.pop(key, ((), None))
            for r in replicas:
                load[r][0] -= 1
            if leader is not None:
                load[leader][1] -= 1
            kv = view.get(key)
            if kv is None:
                continue
            p = json.loads(kv.value)
            replicas, leader = tuple(p["replicas"]), p.get("leader")
            for r in replicas:
                load.setdefault(r, [0, 0])[0] += 1
            if leader is not None:
                load.setdefault(leader, [0, 0])[1] += 1
            self._counted[key] = (replicas, leader)

    async def reconcile(self, keys: set[str] | None = None) -> None:
        """One pass (module doc): over every partition (``keys`` None), or over those the
        etcd keys ``keys`` may change, and the preferred-leader moves an earlier pass left."""
        m = self.membership
        alive = set(m.nodes())
        view = m.view
        if keys is None:
            self._deferred = set()
            placed = self._placed()
            current = {k: kv for k, kv in view.items() if k.startswith(PARTITIONS)}
            reassigns = {PARTITIONS + kv.key[len(REASSIGN):]: kv for kv in m.under(REASSIGN)}
            self._count(None)
        else:
            examined = self._partitions_of(keys) | self._deferred
            self._deferred = set()
            placed = self._wanted_at(examined, max(len(alive), 1))
            current = {k: view[k] for k in examined if k in view}
            reassigns = {k: view[reassign_key(k)] for k in examined
                         if reassign_key(k) in view}
            self._count(examined)
        self.examined += len(current.keys() | placed.keys())
        # replicas, leaderships per live node; this pass's placements and drains add theirs
        load = {n: list(self._load.get(n, (0, 0))) for n in alive}
        draining = self.draining()
        preferred_moved = False
        for key, kv in sorted(current.items()):
            want = placed.get(key)
            p = json.loads(kv.value)
            if want is None or want[2] != p.get("queue_rev"):
                gone = [delete_op(reassign_key(key))] if key in reassigns else []
                await self._write(key, kv.mod_revision, None, ops=gone)  # its queue is gone
                continue
            if await self._failover(key, kv, p, alive, want[0]):
                continue
            if key in reassigns:
                await self._reassign(key, kv, p, reassigns[key], alive)
            elif any(r in draining for r in p["replicas"]):
                await self._drain(key, p, alive, draining, load)
            elif not preferred_moved:
                preferred_moved = await self._prefer(key, kv, p, alive, draining)
            elif self._preferred(p, alive, draining):
                self._deferred.add(key)     # one per pass: the next pass looks again
        for key, rkv in reassigns.items():
            if key not in current:          # its partition is gone
                await self._write(rkv.key, rkv.mod_revision, None)
        for key, (obj, kind, rev, replicas) in sorted(placed.items()):
            if key in current and current[key].create_revision and \
                    json.loads(current[key].value).get("queue_rev") == rev:
                continue
            if not alive:
                return
            chosen = self._choose(obj, kind, replicas, alive - draining or alive, load)
            args = obj.get("arguments") or {}
            p = {"replicas": chosen, "leader": chosen[0], "leader_epoch": 0,
                 "isr": list(chosen),
                 "min_isr": min(_int(args.get("x-min-insync-replicas"),
                                     len(chosen) // 2 + 1), len(chosen)),
                 "controller_epoch": self.controller.epoch(), "queue_rev": rev}
            if await self._write(key, 0, p):
                for r in chosen:
                    load[r][0] += 1
                load[chosen[0]][1] += 1
                log.info("controller: %s placed on %s, leader %s", key[len(PARTITIONS):],
                         ",".join(chosen), chosen[0])

    @staticmethod
    def _choose(obj, kind, replicas, alive, load) -> list[str]:
        node = obj.get("node")
        if kind == "queue" and replicas == 1 and node in alive:
            return [node]                   # a classic queue lives where it was declared
        if kind == "queue" and node in alive and (obj.get("arguments") or {}).get(
                "x-queue-leader-locator") == "client-local":
            # RabbitMQ's client-local leader locator: led by the node it was declared through
            # (the followers by load, as any)
            others = sorted((n for n in alive if n != node),
                            key=lambda n: (load[n][0], n))[:replicas - 1]
            return [node] + sorted(others)
        chosen = sorted(alive, key=lambda n: (load[n][0], n))[:replicas]
        leader = min(chosen, key=lambda n: (load[n][1], n))
        return [leader] + sorted(n for n in chosen if n != leader)

    async def _failover(self, key, kv, p: dict, alive: set, obj: dict) -> bool:
        """A leader or ISR members not alive: replaced, dropped (module doc). True when it
        wrote."""
        isr = [r for r in p["isr"] if r in alive]
        leader = p.get("leader")
        if leader in alive and isr == p["isr"]:
            return False
        new = dict(p, controller_epoch=self.controller.epoch())
        if leader not in alive:
            candidates = [r for r in p["replicas"] if r in isr]
            unclean = False
            if not candidates and (obj.get("arguments") or {}).get(
                    "x-unclean-leader-election") is True:
                candidates = [r for r in p["replicas"] if r in alive]
                unclean = bool(candidates)
            new["leader"] = candidates[0] if candidates else None
            if new["leader"] == leader:
                return False
            new["leader_epoch"] = p["leader_epoch"] + 1
            if new["leader"] is None:
                isr = p["isr"]              # keep the last in-sync members (module doc)
            elif unclean:
                isr = [new["leader"]]
                log.warning("controller: %s: UNCLEAN leader election of %s (no in-sync "
                            "replica alive)", key[len(PARTITIONS):], new["leader"])
        new["isr"] = isr
        if new == p:
            return False
        if await self._write(key, kv.mod_revision, new):
            log.info("controller: %s leader %s -> %s (epoch %d), isr %s", key[len(PARTITIONS):],
                     leader, new["leader"], new["leader_epoch"], ",".join(new["isr"]))
        return True

    async def _reassign(self, key, kv, p: dict, rkv, alive: set) -> None:
        """One step of a reassignment (module doc): add the new replicas, or, once every
        target replica is in the ISR, finish it."""
        target = json.loads(rkv.value)["replicas"]
        name = key[len(PARTITIONS):]
        adding = [n for n in target if n not in p["replicas"]]
        if adding:
            if any(n not in alive for n in adding):
                return                      # waits for the node to be back
            new = dict(p, replicas=target + [r for r in p["replicas"] if r not in target],
                       controller_epoch=self.controller.epoch())
            if await self._write(key, kv.mod_revision, new):
                log.info("controller: %s reassignment to %s: replicas %s", name,
                         ",".join(target), ",".join(new["replicas"]))
            return
        if any(n not in p["isr"] for n in target):
            return                          # the new replicas are catching up
        leader = p.get("leader") if p.get("leader") in target else next(
            (n for n in target if n in alive), None)
        if leader is None:
            return
        new = dict(p, replicas=list(target), isr=[r for r in p["isr"] if r in target],
                   leader=leader, leader_epoch=p["leader_epoch"] + 1,
                   controller_epoch=self.controller.epoch())
        if await self._write(key, kv.mod_revision, new,
                             compares=[compare(rkv.key, "MOD", "EQUAL", rkv.mod_revision)],
                             ops=[delete_op(rkv.key)]):
            log.info("controller: %s reassigned to %s, leader %s -> %s (epoch %d)", name,
                     ",".join(target), p.get("leader"), leader, new["leader_epoch"])

    async def _drain(self, key, p: dict, alive: set, draining: set, load: dict) -> None:
        """A partition with a replica on a draining node: ask for its reassignment."""
        keep = [r for r in p["replicas"] if r not in draining]
        spare = sorted((n for n in alive if n not in draining and n not in p["replicas"]),
                       key=lambda n: (load[n][0], n))
        target = keep + spare[:len(p["replicas"]) - len(keep)]
        if not target:
            return                          # nowhere to go: stays until a node joins
        rkey = reassign_key(key)
        if await self._write(rkey, 0, {"replicas": target}):
            for n in target:
                if n not in p["replicas"]:
                    load[n][0] += 1
            log.info("controller: %s off draining %s: reassigned to %s", key[len(PARTITIONS):],
                     ",".join(r for r in p["replicas"] if r in draining), ",".join(target))

    async def _prefer(self, key, kv, p: dict, alive: set, draining: set) -> bool:
        """The preferred (first) replica leads again when it can (module doc)."""
        if not self._preferred(p, alive, draining):
            return False
        preferred = p["replicas"][0]
        new = dict(p, leader=preferred, leader_epoch=p["leader_epoch"] + 1,
                   controller_epoch=self.controller.epoch())
        if await self._write(key, kv.mod_revision, new):
            log.info("controller: %s leader %s -> %s (epoch %d), the preferred replica",
                     key[len(PARTITIONS):], p.get("leader"), preferred, new["leader_epoch"])
        return True

    @staticmethod
    def _preferred(p: dict, alive: set, draining: set) -> bool:
        """The preferred (first) replica can lead again and does not."""
        preferred = p["replicas"][0]
        return not (p.get("leader") in (None, preferred) or preferred not in alive or
                    preferred not in p["isr"] or preferred in draining)

    async def _write(self, key: str, mod_revision: int, value: dict | None,
                     compares=(), ops=()) -> bool:
        """One guarded controller write (module doc); ``value`` None deletes; ``compares``
        and ``ops`` go in the same txn."""
        m = self.membership
        if not self.controller.is_controller():
            return False
        guard = compare(CONTROLLER + f"{m.lease:x}", "CREATE", "EQUAL", self.controller.epoch())
        mine = (compare(key, "MOD", "EQUAL", mod_revision) if mod_revision
                else compare(key, "CREATE", "EQUAL", 0))
        op = delete_op(key) if value is None else put_op(key, json.dumps(value))
        held, _, _ = await m.etcd.transact([guard, mine, *compares], [op, *ops])
        if not held:
            log.info("controller: write of %s refused by etcd (deposed, or changed meanwhile)",
                     key[len(PREFIX):])
        return held
