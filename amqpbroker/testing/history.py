"""The checker's history and the checks over it, with no I/O (Jepsen's "checker" half).

A history is a list of events, each a dict with a monotonic time ``t`` and a kind ``ev``:

    publish  {p, id, key, seq, node}    a producer sent message ``id`` (``key``:``seq``);
                                        an idempotent producer (``workload`` ``idempotent``)
                                        sends it again after a nack or no answer, with
                                        the same ``x-sequence``, until it is confirmed
    confirm  {id}                       the broker acked it (basic.ack of a confirm): a
                                        confirm of any of its publishes counts
    nack     {id}                       the broker nacked it
    unknown  {id, why}                  no answer: the connection broke or the publish timed out
    deliver  {c, id, redelivered, node} consumer session ``c`` received it
    ack      {c, id}                    consumer session ``c`` acked it
    fault    {kind, node, phase}        the nemesis: ``start`` and ``healed``
    stalled  {views}                    after healing, the queue did not drain to the
                                        workload's consumers (how each node saw the queue)
    consuming, cancelled, consumer_error {c, node}   a consumer session's life
    leader   {node, epoch, queue}       a node was seen leading the queue (a topic: one of
                                        its partitions) at that epoch (its own replica's
                                        role; the first sight of each)
    workload {groups}                   first: ``groups`` true when the consumers read as
                                        a consumer group (a topic of streams: re-reads)
    replicas {states, queue}            at the end, per queue: every node's replica, ``node``,
                                        ``log_start_offset``, ``high_watermark``, ``crc32c``
                                        (over its log from the start to the HW) ...

``check(events)`` returns a ``Verdict``. The rules (docs/CLUSTER.md section 5):

- **lost**: confirmed and never delivered.
- **duplicated**: a confirmed message delivered twice *without* the ``redelivered`` flag.
  A broker delivers a message unflagged at most once, its first delivery; every other
  delivery is flagged (a redelivery the broker announces is allowed). The unflagged one need
  not be the first the *clients* see: a leader that delivered it just as it was cut off
  (its TCP segments held until the cut heals) and the new leader's flagged redelivery to
  another consumer arrive in either order (the checker's cut_leader found exactly that:
  one message, flagged on n3 at +2.4 s, unflagged from the old leader at +6.3 s, the moment
  its port came back). An unconfirmed message's second copy is not counted, its publish may
  have been retried by the link.
- **reordered**: within one consumer session, per key, the confirmed messages delivered
  without ``redelivered`` come in publish (sequence) order. Per session, not globally:
  with several consumers and prefetch, two sessions' deliveries interleave by scheduling,
  not by the queue's order; a requeued message comes back flagged and later, legitimately.
  Unconfirmed messages are left out: a publish whose connection hung may reach the leader
  after the producer's next one, through another node.
- **stalled** (liveness, not safety): after healing, the workload's consumers stopped
  receiving while the queue held messages, with no ``basic.cancel`` and no closed
  connection. The runner then reads the rest with fresh sessions, so ``lost`` still means
  lost.
- **diverged**: at the end, two replicas with the same log start and high watermark whose
  logs up to it differ (``crc32c``); replicas at another high watermark than the leader's
  (not caught up when the runner gave up waiting) are not compared, only counted
  (``uncompared``).
- **split_brain**: two nodes seen leading the queue (a topic's partition) in one of its
  leader epochs (each partition has its own). The runner samples
  every node's own view ten times a second, so a claim shorter than that can be missed;
  confirms are not tied to epochs in the history (a client does not see who confirmed), so
  this is "no two leaders in one epoch" as the nodes report it, the precondition of "no two
  leaders confirming in one epoch".
- **with idempotent producers** (``--idempotent``): the producers publish again what was
  not confirmed; the broker must store it once (a retry of what it stored is a duplicate it
  confirms and drops), so the same rules hold over the confirmed messages: one delivered
  twice unflagged is a duplicate, "exactly once as far as idempotent producers take it".
- **with consumer groups** (``workload`` ``groups``: the consumers read a topic of
  streams as one group, ``--group``): a group resumes a partition from its committed offset
  after a rebalance or a failover, and re-reads what was delivered after it, unflagged
  (Kafka's at-least-once; the commit trails the acks by a commit round and replicates with
  the partition). So a delivery of a message delivered before is a **re-read**, counted,
  not a duplicate, and the per-key order restarts at it; a message delivered for the first
  time must still come in order. What stays strict: lost, phantom, reordered first
  deliveries. (A re-read of a message committed long before, a commit that went back, is
  not caught: the history does not see commits.)
- for information: nacked or unknown messages that were delivered anyway (allowed: a nack
  or a broken connection says "maybe"), deliveries of ids never published (a violation:
  ``phantom``), and redeliveries after this history's own ack (an ack lost in flight).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Verdict:
    published: int = 0
    confirmed: int = 0
    nacked: int = 0
    unknown: int = 0
    delivered: int = 0                  # distinct ids delivered
    deliveries: int = 0                 # delivery events
    lost: list = field(default_factory=list)            # ids
    duplicated: list = field(default_factory=list)      # ids
    reordered: list = field(default_factory=list)       # (session, key, previous seq, seq)
    phantom: list = field(default_factory=list)         # ids delivered, never published
    stalled: list = field(default_factory=list)         # the queue as seen when it stalled
    diverged: list = field(default_factory=list)        # (log start, HW, {node: crc32c})
    split_brain: list = field(default_factory=list)     # (queue, epoch, [nodes])
    replicas_compared: int = 0          # replicas whose checksums were compared
    uncompared: int = 0                 # replicas at another HW than the leader's
    maybe_delivered: int = 0            # nacked/unknown, delivered anyway (allowed)
    redelivered_after_ack: int = 0      # allowed (an ack can be lost with its connection)
    reread: int = 0                     # groups: deliveries of a message delivered before

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.reordered or self.phantom
                    or self.stalled or self.diverged or self.split_brain)

    def summary(self) -> str:
        head = (f"published {self.published}, confirmed {self.confirmed}, nacked {self.nacked}, "
                f"unknown {self.unknown}, delivered {self.delivered} "
                f"({self.deliveries} deliveries)")
        found = (f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
                 f"reordered {len(self.reordered)}, phantom {len(self.phantom)}, "
                 f"stalled {len(self.stalled)}, diverged {len(self.diverged)} "
                 f"({self.replicas_compared} replicas compared, {self.uncompared} not), "
                 f"split-brain {len(self.split_brain)}")
        allowed = (f"maybe-delivered {self.maybe_delivered}, "
                   f"redelivered after ack {self.redelivered_after_ack}"
                   + (f", re-read by the group {self.reread}" if self.reread else ""))
        return f"{'OK' if self.ok else 'VIOLATIONS'}: {found}; {head}; allowed: {allowed}"


def check(events) -> Verdict:
    """Check a history (an iterable of event dicts, in time order)."""
    v = Verdict()
    published: dict[str, dict] = {}
    outcome: dict[str, str] = {}
    times_delivered: dict[str, int] = {}
    plain: set[str] = set()                     # delivered once without ``redelivered``
    acked: set[str] = set()
    last_seq: dict[tuple, int] = {}             # (session, key) -> last in-order seq
    claims: dict[tuple, set] = {}               # (queue, epoch) -> nodes seen leading
    events = list(events)
    groups = False
    for e in events:                # outcomes first: a confirm may arrive after the delivery
        if e["ev"] == "publish":
            published[e["id"]] = e
        elif e["ev"] in ("confirm", "nack", "unknown"):
            # the first answer counts; an idempotent producer publishes a message again
            # until one is a confirm, which then counts
            if e["id"] not in outcome or e["ev"] == "confirm":
                outcome[e["id"]] = e["ev"]
        elif e["ev"] == "workload":
            groups = bool(e.get("groups"))
    for e in events:
        if e["ev"] == "deliver":
            _delivery(v, e, published, outcome, times_delivered, plain, acked, last_seq,
                      groups)
        elif e["ev"] == "ack":
            acked.add(e["id"])
        elif e["ev"] == "stalled":
            v.stalled.append(e["views"])
        elif e["ev"] == "leader":
            claims.setdefault((e.get("queue"), e["epoch"]), set()).add(e["node"])
        elif e["ev"] == "replicas":
            _replicas(v, e["states"])
    v.split_brain = sorted((queue or "", epoch, sorted(nodes))
                           for (queue, epoch), nodes in claims.items() if len(nodes) > 1)
    v.published = len(published)
    v.confirmed = sum(1 for o in outcome.values() if o == "confirm")
    v.nacked = sum(1 for o in outcome.values() if o == "nack")
    v.unknown = sum(1 for i in published if outcome.get(i, "unknown") == "unknown")
    v.delivered = len(times_delivered)
    v.lost = sorted(i for i, o in outcome.items() if o == "confirm" and i not in times_delivered)
    v.maybe_delivered = sum(1 for i in times_delivered
                            if i in published and outcome.get(i) != "confirm")
    return v


def _delivery(v, e, published, outcome, times_delivered, plain, acked,
              last_seq, groups=False) -> None:
    mid = e["id"]
    v.deliveries += 1
    if mid not in published:
        v.phantom.append(mid)
        return
    seen = times_delivered.get(mid, 0)
    times_delivered[mid] = seen + 1
    confirmed = outcome.get(mid) == "confirm"
    if seen and mid in acked:
        v.redelivered_after_ack += 1
    if groups and seen:             # a group's re-read from its commit: the order restarts
        v.reread += 1
        last_seq[(e["c"], published[mid]["key"])] = published[mid]["seq"]
        return
    if e["redelivered"] or not confirmed:
        return
    if mid in plain and mid not in v.duplicated:
        v.duplicated.append(mid)
    plain.add(mid)
    pub = published[mid]
    slot = (e["c"], pub["key"])
    prev = last_seq.get(slot)
    if prev is not None and pub["seq"] <= prev:
        v.reordered.append((e["c"], pub["key"], prev, pub["seq"]))
    else:
        last_seq[slot] = pub["seq"]


def _replicas(v, states) -> None:
    """Replicas at the leader's high watermark (all, when none is the leader) with the same
    log start must hold the same log up to it."""
    hws = [r["high_watermark"] for r in states if r.get("role") == "leader"]
    hw = hws[0] if hws else max((r["high_watermark"] for r in states), default=None)
    groups: dict[tuple, dict] = {}
    for r in states:
        if r["high_watermark"] != hw or r.get("crc32c") is None:
            v.uncompared += 1
            continue
        v.replicas_compared += 1
        groups.setdefault((r["log_start_offset"], hw), {})[r["node"]] = r["crc32c"]
    for (start, at), crcs in sorted(groups.items()):
        if len(set(crcs.values())) > 1:
            v.diverged.append((start, at, crcs))


def load(path: str) -> list[dict]:
    """A history file: one JSON event per line."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
