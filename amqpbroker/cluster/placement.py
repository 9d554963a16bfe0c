"""Placement by the controller (docs/CLUSTER.md section 2): which nodes hold each partition's
replicas, which one leads, at which leader epoch.

Theory of operation
-------------------
Level-triggered, as Kubernetes' controllers are: on every change of the mirror of etcd while
this node is the controller, ``reconcile`` compares what ``meta/`` says exists with what
``partitions/`` says is placed and writes the difference. So a newly elected controller
needs no hand-over: it reconciles what it finds.

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
- Nothing moves data yet: a follower does not fetch (replication is step 5) and so never
  rejoins the ISR; preferred-leader election waits for that.

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
from .membership import PREFIX
from .metadata import META, kind_of

log = logging.getLogger("amqpbroker.cluster")

PARTITIONS = PREFIX + "partitions/"
TOPIC = "x-partitioned"


def partition_key(vhost: str, queue: str, i: int) -> str:
    return PARTITIONS + f"{quote(vhost, safe='')}/{quote(queue, safe='')}/{i}"


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


class Placement:
    def __init__(self, node):
        self.node = node                    # ClusterNode
        self.membership = node.membership
        self.controller = node.controller
        self._task: asyncio.Task | None = None
        self._again = False
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
        view = self.membership.view
        kv = view.get(partition_key(vhost, queue, 0))
        if kv is None:
            topic, _, i = queue.rpartition("-")
            if topic and i.isdigit():
                kv = view.get(partition_key(vhost, topic, int(i)))
        return json.loads(kv.value) if kv is not None else None

    # ------------------------------------------------------------ the controller's work
    def _review(self) -> None:
        if not self.controller.active:
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self.reconcile()
            except EtcdError as exc:
                log.warning("placement: %s; trying again", exc)
                await asyncio.sleep(0.5)
                self._again = True
            except Exception:
                log.exception("placement")
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
            if not key.startswith(META):
                continue
            kind = kind_of(key)
            if kind not in ("queue", "exchange"):
                continue
            obj = json.loads(kv.value)
            if kind == "exchange" and obj.get("type") != TOPIC:
                continue
            n, replicas = wanted(obj, kind, max(nodes, 1))
            for i in range(n):
                out[partition_key(obj["vhost"], obj["name"], i)] = (obj, kind,
                                                                  kv.create_revision, replicas)
        return out

    async def reconcile(self) -> None:
        m = self.membership
        alive = set(m.nodes())
        placed = self._placed()
        current = {k: kv for k, kv in m.view.items() if k.startswith(PARTITIONS)}
        load = {n: [0, 0] for n in alive}           # replicas, leaderships per live node
        for kv in current.values():
            p = json.loads(kv.value)
            for r in p["replicas"]:
                if r in load:
                    load[r][0] += 1
            if p.get("leader") in load:
                load[p["leader"]][1] += 1
        for key, kv in sorted(current.items()):
            want = placed.get(key)
            p = json.loads(kv.value)
            if want is None or want[2] != p.get("queue_rev"):
                await self._write(key, kv.mod_revision, None)       # its queue is gone
                continue
            await self._failover(key, kv, p, alive, want[0])
        for key, (obj, kind, rev, replicas) in sorted(placed.items()):
            if key in current and current[key].create_revision and \
                    json.loads(current[key].value).get("queue_rev") == rev:
                continue
            if not alive:
                return
            chosen = self._choose(obj, kind, replicas, alive, load)
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
        if kind == "queue" and replicas == 1 and obj.get("node") in alive:
            return [obj["node"]]            # a classic queue lives where it was declared
        chosen = sorted(alive, key=lambda n: (load[n][0], n))[:replicas]
        leader = min(chosen, key=lambda n: (load[n][1], n))
        return [leader] + sorted(n for n in chosen if n != leader)

    async def _failover(self, key, kv, p: dict, alive: set, obj: dict) -> None:
        isr = [r for r in p["isr"] if r in alive]
        leader = p.get("leader")
        if leader in alive and isr == p["isr"]:
            return
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
                return
            new["leader_epoch"] = p["leader_epoch"] + 1
            if new["leader"] is None:
                isr = p["isr"]              # keep the last in-sync members (module doc)
            elif unclean:
                isr = [new["leader"]]
                log.warning("controller: %s: UNCLEAN leader election of %s (no in-sync "
                            "replica alive)", key[len(PARTITIONS):], new["leader"])
        new["isr"] = isr
        if new == p:
            return
        if await self._write(key, kv.mod_revision, new):
            log.info("controller: %s leader %s -> %s (epoch %d), isr %s", key[len(PARTITIONS):],
                     leader, new["leader"], new["leader_epoch"], ",".join(new["isr"]))

    async def _write(self, key: str, mod_revision: int, value: dict | None) -> bool:
        """One guarded controller write (module doc); ``value`` None deletes."""
        m = self.membership
        if not self.controller.is_controller():
            return False
        guard = compare(CONTROLLER + f"{m.lease:x}", "CREATE", "EQUAL", self.controller.epoch())
        mine = (compare(key, "MOD", "EQUAL", mod_revision) if mod_revision
                else compare(key, "CREATE", "EQUAL", 0))
        op = delete_op(key) if value is None else put_op(key, json.dumps(value))
        held, _, _ = await m.etcd.transact([guard, mine], [op])
        if not held:
            log.info("controller: write of %s refused by etcd (deposed, or changed meanwhile)",
                     key[len(PARTITIONS):])
        return held
