"""A checker in the style of Jepsen for the cluster (issue 12, docs/CLUSTER.md section 5).

    python -m amqpbroker.testing.checker --seeds 20 --rounds 10
    python -m amqpbroker.testing.checker --seeds 3 --rounds 5 --faults kill_leader
    python -m amqpbroker.testing.checker --seeds 3 --topic 2
    python -m amqpbroker.testing.checker --seeds 3 --topic 2 --group
    python -m amqpbroker.testing.checker --seeds 3 --idempotent

For each seed: a fresh ``LocalCluster`` of 3 nodes and an etcd, one quorum queue with
``x-quorum-initial-group-size`` 3, the ``Workload`` (producers with confirms and consumers
with manual acks on random nodes, reconnecting; ``workload.py``) and a nemesis that runs
``--rounds`` faults drawn from ``--faults`` by the seed, one at a time: each fault is
started, held, healed, and the cluster waited on until every node sees three live unfenced
nodes and all agree on the queue's leader; then traffic runs for a moment before the next.
After the last round, once a message published after its heal was confirmed (traffic
flows again), producers stop, consumers drain the queue (until the leader reports it
empty and nothing was delivered for a while, or a timeout), and ``history.check`` judges the
history (lost, duplicated, reordered, phantom: its module comment has the rules). The
history of each seed is kept as JSON lines (``--history-dir``). The seed fixes the fault
schedule and the clients' choices of nodes; the interleavings are the machine's, so a seed
that found something is a place to look again, not a replay.

``--topic N`` runs the same on a topic of N partitions instead (``Target``): quorum
partitions of replication factor 3, each placed and led on its own, the producers
publishing to the topic's exchange with each message's key as its routing key, so a key's
messages go to one partition and keep their order there; consumer i reads partition
i mod N. The faults aim at partition 0's leader or followers (the other partitions' leaders
fall where the placement put them, often on the same node); every partition must drain,
and each partition's replicas are compared. With ``--group`` the partitions are streams
and the consumers are members of one consumer group reading the topic from its first
offset (the group's coordinator is partition 0's leader): the queue never empties, so the
drain waits until every confirmed message was delivered, and the history allows what a
group re-reads from its committed offset after a rebalance or failover (``history.py``).
With ``--idempotent`` the producers are idempotent (``x-producer-id``, ``x-sequence``) and
publish a message again, on a new connection if need be, until it is confirmed: the
broker must store each once, so a confirmed message delivered twice unflagged is a
duplicate, as ever ("exactly once as far as idempotent producers take it").

Fault kinds (``FAULTS``):

    kill_leader      SIGKILL the queue's leader, restart it once a survivor confirmed
                     (that time is the failover time, printed)
    pause_leader     SIGSTOP the leader for 2 x TTL, then SIGCONT
    kill_follower    SIGKILL a node that does not lead the queue, restart it
    pause_follower   SIGSTOP a non-leader for 2 x TTL, then SIGCONT
    restart_etcd     SIGTERM etcd and start it again on its data
    rolling_restart  SIGTERM and restart every node in turn, waiting for each to rejoin
    cut_leader       cut the leader off (from etcd, the other nodes and the clients) for
                     2 x TTL, then heal: every node runs in its own network namespace
                     (``netns.py``; root), and a cut sets its bridge port down, so TCP hangs
    cut_follower     the same for a non-leader
    cut_leader_from_etcd     drop the leader's packets with etcd only (``nft`` rules in its
                     namespace) for 2 x TTL: it must fence itself within the TTL and a new
                     leader from the ISR take over, while clients and peers still reach it
    cut_leader_from_peers    drop the leader's packets with the other nodes only for
                     2 x TTL + the replica lag time (10 s): it keeps its lease, its
                     followers stop fetching, its ISR shrinks until ``min-insync`` nacks
    cut_follower_from_etcd, cut_follower_from_peers    the same for a non-leader

With worker processes (``--layout workers`` or ``split``), five more (``WORKER_FAULTS``, in
``all`` there):

    kill_leader_worker    SIGKILL only the worker process that hosts the queue on its
                          leader (an OOM kill): the node keeps its lease, its supervisor
                          restarts the worker, which reopens the queue and leads again
    kill_follower_worker  the same on a non-leader: the restarted worker fetches again
    pause_leader_worker   SIGSTOP only that worker for 2 x TTL, then SIGCONT: the node keeps
                          its lease and the leadership, the queue stands still meanwhile
    kill_leader_supervisor   SIGKILL only the leader node's supervisor (an OOM kill), then
                          start the node again: its orphaned workers see their control
                          socket close, flush and exit, and the new supervisor waits for
                          them on the data directory's lock (supervisor/dirlock.py)
    pause_leader_supervisor  SIGSTOP only the leader node's supervisor for 2 x TTL, its
                          workers running on: its lease expires and another node leads,
                          while the old leader's worker, told the lease's deadline, must
                          stop confirming by then (fencing across the processes)

With front-end processes (``--layout split`` or ``mixed``), one more (``FRONTEND_FAULTS``):

    kill_frontend         SIGKILL one AMQP front-end of a random node that has them: the
                          clients it served lose their connections and reconnect; the
                          supervisor restarts it

``CI_FAULTS`` is every whole-node kind: with replication (step 5) and the forwarder's move telling
the moved consumers (``basic.cancel``), main survives them all (docs/CLUSTER.md section 5:
what ran and what it found); the CI test runs a fixed schedule per seed that covers each
kind (``tests/cluster/test_checker.py``). Whole cuts set the node's bridge port down; partial cuts
(``*_from_etcd``, ``*_from_peers``) are ``nft`` drop rules in the node's namespace
(``netns.py``; ``.ci/run`` installs nftables).

At the end, besides the history's checks, the runner records every node's replica of the
queue (``/api/partitions/%2F/checker``: log start, high watermark, ``crc32c`` up to it,
once all replicas report one HW) for ``diverged``, and, throughout the run, a thread per
node samples which node claims to lead at which epoch (``LeaderClaims``) for
``split_brain``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time

import pika

from ..config import Config
from ..frontend.broker import worker_of
from .cluster import CLUSTER_LAYOUTS, LocalCluster
from .history import check
from .netns import NetnsLab
from .workload import Recorder, Workload

FAULTS = ("kill_leader", "pause_leader", "kill_follower", "pause_follower", "restart_etcd",
          "rolling_restart", "cut_leader", "cut_follower", "cut_leader_from_etcd",
          "cut_leader_from_peers", "cut_follower_from_etcd", "cut_follower_from_peers")
WORKER_FAULTS = ("kill_leader_worker", "kill_follower_worker", "pause_leader_worker",
                 "kill_leader_supervisor", "pause_leader_supervisor")
FRONTEND_FAULTS = ("kill_frontend",)
# the process layouts a seed's nodes may run in (``--layout``; README "Processes"): the
# machine's default (one process below 4 CPUs, workers and front-ends from 4), or one of
# ``CLUSTER_LAYOUTS``: with worker processes a queue's replication runs in the worker that
# hosts it (``replication.WorkerReplicas``), fed by the supervisor over the rings
LAYOUTS = {"default": None, **CLUSTER_LAYOUTS}
NETNS_FAULTS = ("cut_leader", "cut_follower", "cut_leader_from_etcd",     # need the nodes in
                "cut_leader_from_peers", "cut_follower_from_etcd",       # network namespaces
                "cut_follower_from_peers")
# every whole-node kind passes since replication and the move's cancel fix; the partial cuts
# run by hand (docs/CLUSTER.md) and in tests/cluster/test_cluster_partial_cuts.py
CI_FAULTS = tuple(k for k in FAULTS if "_from_" not in k)
QUEUE = "checker"


class Target:
    """What the workload uses and the faults aim at: one quorum queue ``checker`` of group
    size 3 (``partitions`` 0), or a topic ``checker`` of ``partitions`` quorum partitions
    with ``x-replication-factor`` 3 (``--topic N``), published to with each message's key as
    its routing key (key-based partitioning: one key's messages all go to one partition, in
    order) and consumed partition by partition (consumer i reads partition i mod N). The
    faults' "leader" and "follower" are those of ``aimed`` (partition 0); the cluster's
    health, the drain and the replicas' comparison take every partition."""

    def __init__(self, partitions: int = 0, group: bool = False):
        if group and not partitions:
            raise ValueError("a consumer group reads a topic: give it partitions")
        self.partitions = partitions
        self.group = group
        self.queues = [f"{QUEUE}-{i}" for i in range(partitions)] if partitions else [QUEUE]
        self.aimed = self.queues[0]
        self.exchange = QUEUE if partitions else ""
        # a group's members consume the topic itself, from its first offset
        self.consume_arguments = ({"x-consumer-group": QUEUE, "x-stream-offset": "first"}
                                  if group else {})

    def routing_key(self, key: str) -> str:
        return key if self.partitions else QUEUE

    def consumed_by(self, cid: int) -> str:
        return QUEUE if self.group else self.queues[cid % len(self.queues)]

    def worker(self, workers: int) -> int:
        """The index of the worker hosting ``aimed`` on a node of ``workers`` workers (a
        topic's partition i: the topic's own place + i, supervisor/topics.py)."""
        return worker_of("/", QUEUE, workers)

    def declare(self, cluster: LocalCluster) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(cluster.nodes[0].url))
        try:
            if self.partitions:
                conn.channel().exchange_declare(QUEUE, "x-partitioned", durable=True, arguments={
                    "x-partitions": self.partitions,
                    "x-partition-type": "stream" if self.group else "quorum",
                    "x-replication-factor": 3})
            else:
                conn.channel().queue_declare(QUEUE, durable=True, arguments={
                    "x-queue-type": "quorum", "x-quorum-initial-group-size": 3})
        finally:
            conn.close()


class Nemesis:
    """Faults on a ``LocalCluster``, each healed before it returns."""

    def __init__(self, cluster: LocalCluster, record: Recorder, rng: random.Random,
                 target: Target | None = None):
        self.cluster, self.record, self.rng = cluster, record, rng
        self.target = target or Target()
        self.ttl = cluster.lease_ttl
        self.failovers: list[float] = []

    # ------------------------------------------------------------ looking
    def leader(self, queue: str | None = None):
        """The node leading ``queue`` (the target's aimed one), as every live node agrees
        (else None)."""
        queue = queue or self.target.aimed
        seen = set()
        for node in self.cluster.nodes:
            queues = {q["name"]: q for q in node.api("queues")}
            seen.add(queues.get(queue, {}).get("leader"))
        if len(seen) != 1 or None in seen:
            return None
        return self.cluster.node(seen.pop().split("@", 1)[1])

    def healthy(self):
        """Every node sees every node unfenced, all agree on the leader, and that leader can
        confirm: it holds the role and its ISR has ``min_isr`` replicas. (All agreeing on a
        leader is not enough: a leader restarted last is named by etcd before it took its
        role back, and its publishes are nacked until then.)"""
        names = sorted(n.node for n in self.cluster.nodes)
        for node in self.cluster.nodes:
            view = self.cluster.nodes_seen_by(node)
            if sorted(v["node_name"] for v in view) != names or any(v["fenced"] for v in view):
                return None
        for queue in self.target.queues:
            leader = self.leader(queue)
            if leader is None:
                return None
            r = leader.api("partitions/%2F/" + queue).get("replica") or {}
            if r.get("role") != "leader" or len(r.get("isr", ())) < r.get("min_isr", 2):
                return None
        return self.leader()

    def wait_healthy(self, timeout: float = 60.0):
        return self.cluster.wait_until(self.healthy, timeout=timeout, interval=0.2)

    # ------------------------------------------------------------ faults
    def run(self, kind: str) -> None:
        leader = self.wait_healthy()
        others = [n for n in self.cluster.nodes if n is not leader]
        follower = self.rng.choice(others)
        target = (leader if "_leader" in kind else           # kill_leader, cut_leader_from_etcd
                  follower if "_follower" in kind else None)
        self.record("fault", kind=kind, node=target.node if target else None, phase="start")
        getattr(self, kind)(target)
        self.wait_healthy()
        self.record("fault", kind=kind, node=target.node if target else None, phase="healed")

    def kill_leader(self, node) -> None:
        node.kill()
        killed = time.monotonic()
        try:                # the first publish after the kill confirmed, through a survivor
            confirmed = self.cluster.wait_until(lambda: self.record.first_confirm_after(killed),
                                                timeout=4 * self.ttl + 10, interval=0.01)
            self.failovers.append(confirmed - killed)
            self.record("failover", node=node.node, seconds=self.failovers[-1])
        finally:
            self.cluster.start_node(node)

    def kill_follower(self, node) -> None:
        node.kill()
        self.cluster.start_node(node)

    def kill_leader_worker(self, node) -> None:
        self._kill_worker(node)

    def kill_follower_worker(self, node) -> None:
        self._kill_worker(node)

    def pause_leader_worker(self, node) -> None:
        self._stopped(os.kill, self._queue_worker(node)[0])

    @staticmethod
    def _need_workers(node) -> None:
        if not node.worker_pids:
            raise ValueError(f"{node.node} has no worker processes: a worker fault needs "
                             f"--layout workers or split")

    def _queue_worker(self, node) -> tuple[int, int]:
        """(pid, index) of the node's worker that hosts the queue."""
        self._need_workers(node)
        index = self.target.worker(len(node.worker_pids))
        return self.cluster.wait_until(lambda: worker_pid(node.proc.pid, index),
                                       timeout=60), index

    def _kill_worker(self, node) -> None:
        """SIGKILL the node's worker that hosts the queue (its supervisor restarts it)."""
        pid, index = self._queue_worker(node)
        os.kill(pid, signal.SIGKILL)
        # healed: a new worker runs, and the node's replica has its role again in it
        self.cluster.wait_until(lambda: worker_pid(node.proc.pid, index) not in (None, pid),
                                timeout=60)
        self.cluster.wait_until(lambda: all(
            ((node.api("partitions/%2F/" + queue) or {}).get("replica") or {}).get("role")
            in ("leader", "follower") for queue in self.target.queues), timeout=60)

    def kill_leader_supervisor(self, node) -> None:
        self._need_workers(node)
        os.kill(node.proc.pid, signal.SIGKILL)      # the supervisor alone, not its group
        node.proc.wait(60)
        self.cluster.start_node(node)

    def pause_leader_supervisor(self, node) -> None:
        self._need_workers(node)
        self._stopped(os.kill, node.proc.pid)       # the supervisor alone, not its group

    def kill_frontend(self, _node) -> None:
        """SIGKILL one AMQP front-end process of a node that has them: its clients'
        connections break (they reconnect elsewhere); its supervisor restarts it."""
        nodes = [n for n in self.cluster.nodes if n.frontend_pids]
        if not nodes:
            raise ValueError("no node has front-end processes: kill_frontend needs --layout "
                             "split or mixed")
        node = self.rng.choice(nodes)
        index = self.rng.randrange(len(node.frontend_pids))
        pid = self.cluster.wait_until(
            lambda: child_pid(node.proc.pid, "amqpbroker.frontend", index), timeout=60)
        self.record("frontend_killed", node=node.node, index=index, pid=pid)
        os.kill(pid, signal.SIGKILL)
        self.cluster.wait_until(lambda: child_pid(node.proc.pid, "amqpbroker.frontend", index)
                                not in (None, pid), timeout=60)

    def pause_leader(self, node) -> None:
        self._pause(node)

    def pause_follower(self, node) -> None:
        self._pause(node)

    def _pause(self, node) -> None:
        self._stopped(os.killpg, node.proc.pid)     # the node: its whole process group

    def _stopped(self, send, pid: int) -> None:
        """SIGSTOP ``pid`` (``send``: ``os.kill``, or ``os.killpg`` for its group) for
        2 x TTL, then SIGCONT."""
        send(pid, signal.SIGSTOP)
        try:
            time.sleep(2 * self.ttl)        # the fault's length, not a synchronisation
        finally:
            send(pid, signal.SIGCONT)

    def cut_leader(self, node) -> None:
        self._cut(node)

    def cut_follower(self, node) -> None:
        self._cut(node)

    def cut_leader_from_etcd(self, node) -> None:
        self._cut(node, "etcd")

    def cut_follower_from_etcd(self, node) -> None:
        self._cut(node, "etcd")

    def cut_leader_from_peers(self, node) -> None:
        self._cut(node, "peers")

    def cut_follower_from_peers(self, node) -> None:
        self._cut(node, "peers")

    def _cut(self, node, part: str = "all") -> None:
        lab = self.cluster.netns
        hold = 2 * self.ttl
        if part == "etcd":
            lab.cut_from_etcd(node.node, self.cluster.etcd.client_port)
        elif part == "peers":
            lab.cut_from_peers(node.node)
            # past the replica lag time, so the leader drops the followers from its ISR and
            # min-insync nacks (a shorter cut only delays confirms)
            hold += Config.replica_lag_time
        else:
            lab.cut(node.node)
        try:
            time.sleep(hold)                # the fault's length, not a synchronisation
        finally:
            self.cluster.netns.heal(node.node)

    def restart_etcd(self, _node) -> None:
        self.cluster.etcd.restart()

    def rolling_restart(self, _node) -> None:
        for node in self.cluster.nodes:
            node.stop()
            self.cluster.start_node(node)
            self.wait_healthy()


def worker_pid(supervisor: int, index: int) -> int | None:
    """The pid of worker ``index`` of a node's supervisor now (a restarted worker has a new
    one); None while there is none (between a worker's death and its restart)."""
    return child_pid(supervisor, "amqpbroker.worker", index)


def child_pid(supervisor: int, module: str, index: int) -> int | None:
    """The pid of the supervisor's child started as ``python -m MODULE SPEC`` with that
    ``index`` in its spec (``supervisor/process.py``: a worker or a front-end), else None."""
    with open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
        children = [int(p) for p in f.read().split()]
    name = module.encode()
    for pid in children:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except FileNotFoundError:
            continue
        if name in argv and json.loads(argv[argv.index(name) + 1]).get("index") == index:
            return pid
    return None


class LeaderClaims:
    """Samples, from a thread per node, which node believes it leads the queue at which
    epoch (``/api/partitions/%2F``: the node's replica, ``role`` and ``leader_epoch``), and
    records each new (node, epoch) claim as a ``leader`` event; ``history.check`` finds two
    nodes claiming one epoch (``split_brain``). A sample every ``interval``; a paused or cut
    node is simply not sampled meanwhile."""

    def __init__(self, cluster: LocalCluster, record: Recorder, interval: float = 0.1,
                 target: Target | None = None):
        self.cluster, self.record, self.interval = cluster, record, interval
        self.queues = set((target or Target()).queues)
        self.seen: set = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample, args=(i,), daemon=True)
                         for i in range(len(cluster.nodes))]

    def start(self) -> "LeaderClaims":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _sample(self, i: int) -> None:
        while not self._stop.wait(self.interval):
            node = self.cluster.nodes[i]
            if not node.port or node.proc is None or node.proc.poll() is not None:
                continue
            try:
                parts = node.api("partitions/%2F")
            except (OSError, ValueError):
                continue
            for p in parts:
                r = p.get("replica") if p.get("queue") in self.queues else None
                if r and r.get("role") == "leader":
                    claim = (p["queue"], r["node"], r["leader_epoch"])
                    if claim not in self.seen:
                        self.seen.add(claim)
                        self.record("leader", queue=claim[0], node=claim[1], epoch=claim[2])


def replica_states(cluster: LocalCluster, queue: str = QUEUE,
                   timeout: float = 30.0) -> list[dict]:
    """Every node's replica of ``queue`` with its ``crc32c`` up to its high watermark (the
    single-queue ``/api/partitions`` GET), once all replicas report the same high watermark
    (or after ``timeout``: then as they are)."""
    def states():
        out = []
        for node in cluster.nodes:
            r = node.api("partitions/%2F/" + queue).get("replica")
            if r is None:
                return None
            out.append({k: r.get(k) for k in ("node", "role", "leader_epoch",
                                              "log_start_offset", "log_end_offset",
                                              "high_watermark", "crc32c")})
        return out
    last = None

    def settled():
        nonlocal last
        last = states()
        return last if last and len({r["high_watermark"] for r in last}) == 1 else None
    try:
        return cluster.wait_until(settled, timeout=timeout, interval=0.2)
    except AssertionError:
        return last or []


def drain(nemesis: Nemesis, workload: Workload, quiet: float = 2.0, stall: float = 10.0,
          timeout: float = 120.0) -> bool:
    """Wait until each target queue's leader reports it empty with nothing unacked and no
    delivery came for ``quiet`` seconds: True. False when it stalled: no delivery for ``stall``
    seconds while the queue is not drained (or not drained within ``timeout``). Progress,
    not speed, is the criterion, so a slow machine does not look stalled."""
    started = time.monotonic()

    def empty(queue: str) -> bool:
        if nemesis.target.group:        # a stream keeps its log: every confirm delivered
            return not workload.record.undelivered()
        leader = nemesis.leader(queue)
        if leader is None:
            return False
        q = {q["name"]: q for q in leader.api("queues")}[queue]
        return q.get("messages", 1) == 0 and q.get("messages_unacknowledged", 1) == 0

    def settled():
        now = time.monotonic()
        idle = now - max(workload.last_delivery, started)
        if idle > quiet and all(empty(queue) for queue in nemesis.target.queues):
            return "drained"
        return "stalled" if idle > stall or now - started > timeout else None
    return nemesis.cluster.wait_until(settled, timeout=timeout + 30, interval=0.2) == "drained"


def queue_views(cluster: LocalCluster, target: Target) -> str:
    """How each node sees the target's queues: leader, counts and consumers (a report)."""
    views = []
    for node in cluster.nodes:
        try:
            queues = {q["name"]: q for q in node.api("queues")}
        except OSError as exc:
            views.append(f"{node.node}: {exc}")
            continue
        for name in target.queues:
            q = queues.get(name, {})
            views.append(f"{node.node}: {name} leader {q.get('leader')} messages "
                         f"{q.get('messages')} unacked {q.get('messages_unacknowledged')} "
                         f"consumers {q.get('consumers')}")
    return "; ".join(views)


def run_seed(seed: int, rounds: int, faults=CI_FAULTS, producers: int = 3, consumers: int = 2,
             lease_ttl: int = 3, settle: float = 1.0, history_dir: str | None = None,
             log=print, schedule=None, layout: str = "default", partitions: int = 0,
             group: bool = False, idempotent: bool = False):
    """One cluster, ``rounds`` faults drawn by ``seed`` from ``faults`` (or ``schedule``:
    these kinds in this order, one per round), its nodes in ``layout`` (``LAYOUTS``), the
    workload on ``Target(partitions, group)``, its producers ``idempotent`` or not; returns
    (verdict, nemesis). With a cut among the
    faults each node runs in its own network namespace (root only)."""
    if schedule is not None:
        faults, rounds = tuple(schedule), len(schedule)
    target = Target(partitions, group)
    consumers = max(consumers, len(target.queues))      # every partition consumed
    if set(faults) & set(NETNS_FAULTS):
        with NetnsLab(["n1", "n2", "n3"]) as lab:
            return _run_seed(seed, rounds, faults, producers, consumers, lease_ttl, settle,
                             history_dir, log, lab, schedule, LAYOUTS[layout], target,
                             idempotent)
    return _run_seed(seed, rounds, faults, producers, consumers, lease_ttl, settle,
                     history_dir, log, None, schedule, LAYOUTS[layout], target, idempotent)


def _run_seed(seed, rounds, faults, producers, consumers, lease_ttl, settle, history_dir,
              log, lab, schedule, layouts, target, idempotent):
    rng = random.Random(seed)
    record = Recorder()
    with LocalCluster(3, lease_ttl=lease_ttl, netns=lab, together=True,
                      layouts=layouts) as cluster:
        target.declare(cluster)
        record("workload", groups=target.group, queues=target.queues, idempotent=idempotent)
        nemesis = Nemesis(cluster, record, rng, target)
        nemesis.wait_healthy()
        workload = Workload(lambda: [(n.node, n.url) for n in cluster.nodes if n.port],
                            target, record, seed, producers=producers, consumers=consumers,
                            idempotent=idempotent)
        claims = LeaderClaims(cluster, record, target=target).start()
        workload.start()
        drained = stalled = False
        try:
            time.sleep(settle)              # traffic before the first fault (a duration)
            for i in range(rounds):
                kind = schedule[i] if schedule is not None else rng.choice(faults)
                started = time.monotonic()
                nemesis.run(kind)
                log(f"seed {seed} round {i + 1}/{rounds}: {kind} healed in "
                    f"{time.monotonic() - started:.1f}s")
                time.sleep(settle)
            # traffic flows after the last fault: producers reconnect (an etcd restart or a
            # node's return may have cut them) and a message published after the heal is
            # confirmed before they stop; none within the bound is a liveness finding
            healed = max((e["t"] for e in record.events if e["ev"] == "fault"), default=0.0)
            try:
                cluster.wait_until(lambda: record.first_confirm_after(healed),
                                   timeout=4 * lease_ttl + 10, interval=0.05)
            except AssertionError:
                log(f"seed {seed}: nothing published after the last fault was confirmed")
            workload.stop_producing()
            started = time.monotonic()
            drained = drain(nemesis, workload)
            if not drained:         # the workload's consumers stalled: a liveness finding
                stalled = True
                record("stalled", views=queue_views(cluster, target))
                log(f"seed {seed}: consumers stalled; queue as seen: {queue_views(cluster, target)}")
                workload.reconnect_consumers()      # the final read, by fresh sessions
                drained = drain(nemesis, workload)
                if not drained:
                    log(f"seed {seed}: the final read did not drain the queue either: "
                        f"{queue_views(cluster, target)}")
            log(f"seed {seed}: drained in {time.monotonic() - started:.1f}s")
            # every replica's log up to the high watermark (history.check compares them)
            started = time.monotonic()
            for queue in target.queues:
                record("replicas", queue=queue, states=replica_states(cluster, queue))
            log(f"seed {seed}: replicas read in {time.monotonic() - started:.1f}s")
        finally:
            claims.stop()
            try:
                workload.stop()
            finally:
                if history_dir:         # kept even when a client did not stop in time
                    record.dump(os.path.join(history_dir, f"history-{seed}.jsonl"))
                    if stalled:         # the nodes' logs, to look at what stalled
                        for node in cluster.nodes:
                            with open(os.path.join(history_dir,
                                                   f"node-{seed}-{node.node}.log"), "w") as f:
                                f.writelines(node.output)
    verdict = check(record.events)
    log(f"seed {seed}: {verdict.summary()}" + ("" if drained else " (drain timed out)"))
    return verdict, nemesis


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m amqpbroker.testing.checker",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="clusters to run, seeds 1..N")
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5, help="faults per seed")
    p.add_argument("--faults", default=",".join(CI_FAULTS),
                   help=f"comma-separated, of "
                        f"{', '.join(FAULTS + WORKER_FAULTS + FRONTEND_FAULTS)}; 'all' "
                        f"for every kind the layout allows (default: every kind but the "
                        f"partial cuts and the worker faults)")
    p.add_argument("--producers", type=int, default=3)
    p.add_argument("--consumers", type=int, default=2)
    p.add_argument("--lease-ttl", type=int, default=3)
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="default",
                   help="the nodes' process layout: the machine's default, one process, "
                        "2 workers, 2 workers + 2 front-ends, or one node of one process "
                        "and two split")
    p.add_argument("--topic", type=int, default=0, metavar="N",
                   help="the workload on a topic of N quorum partitions, replication factor "
                        "3, keyed publishes (default 0: one quorum queue)")
    p.add_argument("--group", action="store_true",
                   help="with --topic: stream partitions read by one consumer group (from "
                        "the first offset; re-reads after a rebalance are allowed)")
    p.add_argument("--idempotent", action="store_true",
                   help="idempotent producers (x-producer-id, x-sequence) that publish again "
                        "what was not confirmed: each message must be stored once")
    p.add_argument("--history-dir", default=None,
                   help="keep each seed's history here (default: a new temporary directory)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)     # every broken connection
    with_workers = args.layout in ("workers", "split")
    with_frontends = args.layout in ("split", "mixed")
    faults = (FAULTS + (WORKER_FAULTS if with_workers else ())
              + (FRONTEND_FAULTS if with_frontends else ()) if args.faults == "all"
              else tuple(args.faults.split(",")))
    unknown = set(faults) - set(FAULTS) - set(WORKER_FAULTS) - set(FRONTEND_FAULTS)
    if unknown:
        p.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    if set(faults) & set(WORKER_FAULTS) and not with_workers:
        p.error("the worker faults need --layout workers or split")
    if set(faults) & set(FRONTEND_FAULTS) and not with_frontends:
        p.error("kill_frontend needs --layout split or mixed")
    if args.group and not args.topic:
        p.error("--group needs --topic N")
    history_dir = args.history_dir or tempfile.mkdtemp(prefix="amqpbroker-checker-")
    os.makedirs(history_dir, exist_ok=True)
    failed, failovers, rounds = 0, [], 0
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        verdict, nemesis = run_seed(seed, args.rounds, faults, args.producers, args.consumers,
                                    args.lease_ttl, history_dir=history_dir,
                                    layout=args.layout, partitions=args.topic,
                                    group=args.group, idempotent=args.idempotent)
        failed += not verdict.ok
        failovers += nemesis.failovers
        rounds += args.rounds
    print(f"{args.seeds} seeds, {rounds} fault rounds, {failed} seeds with violations; "
          f"histories in {history_dir}")
    if failovers:
        print(f"failover (leader SIGKILL -> first confirm through a survivor), {len(failovers)}"
              f" kills: median {statistics.median(failovers):.2f}s, "
              f"max {max(failovers):.2f}s (TTL {args.lease_ttl}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
