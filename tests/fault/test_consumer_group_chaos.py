"""A consumer group under failure: members join, leave and die, the broker crashes and a worker
is SIGKILLed, while producers publish keyed messages with confirms (issue 10, "Tests that
prove it").

Setup, per layout (the test starts its own broker: one process, and 2 workers + 2 front-ends):
a 6-partition topic (stream partitions), PRODUCERS producer processes and a group of MEMBERS
member processes, all unchanged pika code (group_chaos_clients.py says what each one writes).
Then STEPS chaos steps, each once the members have processed STEP_MESSAGES more messages (a
condition on their record files, never a sleep): a member is SIGKILLed, or leaves with
basic.cancel, or by closing its connection, and a new member joins in its place; at one step
the broker is SIGKILLed and started again on its data directory, at another (split layout)
the worker that owns a partition is SIGKILLed. The seed picks the steps; it is printed, and
GROUP_CHAOS_SEED sets it. Then the producers stop, the last members drain the topic, leave,
and the records are checked:

  * every confirmed message was processed at least once;
  * per key, the first processing of each message is in publish (sequence) order;
  * redeliveries (one partition offset processed twice) only where a delivery can have been
    unacked at a failure: at most PREFETCH per ended member session, plus PREFETCH per
    partition per broker crash or worker kill (acks the dead process had not yet committed);
    and no message stored twice: producers are idempotent (x-producer-id, x-sequence), so a
    publish retried after its confirm was lost is a duplicate the broker does not store
    (exactly once into the log; processing is at least once, exactly once where no failure
    left a delivery unacked);
  * no partition was delivered to two live members at once. The records of one partition,
    in time order (time.monotonic(), one clock for all processes), fall into runs by owner
    (member session). At a handover the old owner had acked all it was given (a revocation
    completes when nothing is in flight), so the new owner starts past the old one's last
    offset; it may start at or below it (a redelivery) only if the old owner's session had
    ended by then, or a broker crash or worker kill came after that offset was first
    handed out (less CRASH_SLACK: a delivery sent just before a crash is processed just after
    it) and before the new owner got it: its ack may have died with the process. Within one
    run offsets only rise, except across such a crash. And each handover needs a
    cause: matched one to one with membership events (a join, a session's end) or crashes
    before it, no partition changes owner more often than the group changed. Two owners
    delivering at once would interleave runs, fail both.
  * finally, with no member left, the group's lag is 0 on every partition (the acks
    committed) and the API still shows the group.
"""
from __future__ import annotations

import bisect
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pika
import pytest

from amqpbroker.partitioner import partition_of
from amqpbroker.testing import LAYOUTS, BrokerProcess, leaks


# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

PARTITIONS = 6
MEMBERS = 3
PRODUCERS = 2
KEYS = 8                 # per producer
PREFETCH = 10
STEPS = 8
STEP_MESSAGES = 300
SEED = int(os.environ.get("GROUP_CHAOS_SEED", "20261201"))
CRASH_SLACK = 2.0        # s: a delivery sent before a crash is processed within this after it
CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "group_chaos_clients.py")
TOPIC, GROUP = "chaos-orders", "billing"


class Chaos:
    """The test's side: the broker, the client processes, and what it did when."""

    def __init__(self, directory, broker_args, seed: int):
        self.dir = str(directory)
        self.broker = BrokerProcess(os.path.join(self.dir, "broker"), *broker_args,
                                    management=True)
        self.rng = random.Random(seed)
        self.seed = seed
        self.procs: dict[str, subprocess.Popen] = {}
        self.members: list[str] = []            # alive, in join order
        self.kills: dict[str, float] = {}       # member -> time just before its SIGKILL
        self.faults: list[float] = []           # broker crashes and worker kills (start time)
        self.next_member = 0
        self.actions: list[str] = []            # what the test did when, for a failure's report

    def act(self, what: str) -> float:
        now = time.monotonic()
        self.actions.append(f"{now:.3f} {what}")
        return now

    # -------------------------------------------------------------- processes
    def start_broker(self) -> None:
        self.broker.start()
        tmp = os.path.join(self.dir, "url.tmp")
        with open(tmp, "w") as f:
            f.write(self.broker.url)
        os.replace(tmp, os.path.join(self.dir, "url"))

    def spawn(self, role: str, name: str, *args) -> None:
        out = open(os.path.join(self.dir, f"out-{name}"), "w")
        self.procs[name] = subprocess.Popen(
            [sys.executable, CLIENTS, role, self.dir, name, TOPIC, *map(str, args)],
            stdout=out, stderr=subprocess.STDOUT)
        out.close()

    def join(self) -> str:
        name = f"m{self.next_member}"
        self.next_member += 1
        self.act(f"start member {name}")
        self.spawn("member", name, GROUP, PREFETCH)
        self.members.append(name)
        # its signal handlers are set once it logs its join (before basic.consume)
        leaks.wait_until(lambda: any(r["ev"] == "join" for r in self.records().get(name, ())),
                         timeout=30, what=f"member {name} to start")
        return name

    def leave(self, how: str) -> str:
        name = self.members.pop(self.rng.randrange(len(self.members)))
        proc = self.procs[name]
        if how == "kill":
            self.kills[name] = self.act(f"SIGKILL member {name}")
            proc.send_signal(signal.SIGKILL)
        else:
            self.act(f"member {name} to leave: {how}")
            proc.send_signal(signal.SIGUSR1 if how == "cancel" else signal.SIGTERM)
        assert proc.wait(30) == (-signal.SIGKILL if how == "kill" else 0), self.output(name)
        return name

    def crash_broker(self) -> None:
        self.faults.append(self.act("SIGKILL the broker"))
        self.broker.kill()
        self.start_broker()
        self.act("the broker is back")

    def kill_worker(self) -> None:
        p = self.rng.randrange(PARTITIONS)
        index = self.broker.api(f"queues/%2F/{TOPIC}-{p}")["worker"]
        old = self.broker.api("nodes")[0]["workers"][index]["pid"]
        self.faults.append(self.act(f"SIGKILL worker {index} (pid {old}, owns partition {p})"))
        os.kill(old, signal.SIGKILL)

        def restarted():
            w = self.broker.api("nodes")[0]["workers"][index]
            return w["running"] and w["pid"] != old
        leaks.wait_until(restarted, what=f"worker {index} to restart")
        self.act(f"worker {index} restarted")

    def stop_all(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
        if self.broker.proc and self.broker.proc.poll() is None:
            self.broker.stop()

    def output(self, name: str) -> str:
        with open(os.path.join(self.dir, f"out-{name}")) as f:
            return f"--- {name}:\n" + f.read()[-3000:]

    # -------------------------------------------------------------- records
    def records(self) -> dict[str, list[dict]]:
        out = {}
        for fname in os.listdir(self.dir):
            if fname.startswith("member-"):
                with open(os.path.join(self.dir, fname)) as f:
                    out[fname[len("member-"):]] = [json.loads(line) for line in f
                                                   if line.endswith("\n")]
        return out

    def processed(self) -> int:
        return sum(1 for recs in self.records().values() for r in recs if r["ev"] == "msg")

    def confirmed(self) -> set[tuple[str, str, int]]:
        out = set()
        for i in range(PRODUCERS):
            with open(os.path.join(self.dir, f"confirmed-p{i}")) as f:
                for line in f:
                    key, seq = line.split()
                    out.add((f"p{i}", key, int(seq)))
        return out

    def wait_progress(self, n: int) -> None:
        target = self.processed() + n

        def done():
            dead = [name for name, proc in self.procs.items()
                    if proc.poll() is not None and name not in self.kills
                    and (name in self.members or name.startswith("p"))]
            assert not dead, "".join(self.output(name) for name in dead)
            return self.processed() >= target
        leaks.wait_until(done, timeout=60,
                         what=f"{n} more messages processed (seed {self.seed})")


def group_api(broker: BrokerProcess) -> dict:
    return broker.api(f"consumer-groups/%2F/{GROUP}")


def diagnose(chaos: Chaos, confirmed: set) -> str:
    """What is missing where, who holds what: for a drain that never ends."""
    records = chaos.records()
    seen = {(r["pr"], r["k"], r["s"]) for recs in records.values() for r in recs
            if r["ev"] == "msg"}
    lines = []
    for p in range(PARTITIONS):
        missing = sorted(m for m in confirmed - seen
                         if partition_of(m[1].encode(), PARTITIONS) == p)
        last = {}
        for member, recs in records.items():
            offsets = [r["o"] for r in recs if r["ev"] == "msg" and r["p"] == p]
            if offsets:
                last[member] = (len(offsets), max(offsets))
        queue = chaos.broker.api(f"queues/%2F/{TOPIC}-{p}")
        lines.append(f"partition {p}: {len(missing)} missing (first {missing[:3]}); "
                     f"messages in the log {queue.get('messages')}; "
                     f"(count, max offset) per member {last}")
    lines.append(f"alive members {chaos.members}; last events: " + "; ".join(
        f"{m}: {recs[-1]}" for m, recs in records.items() if m in chaos.members and recs))
    try:
        lines.append(json.dumps(group_api(chaos.broker)))
    except OSError as err:
        lines.append(f"/api/consumer-groups: {err}")
    return "\n".join(lines)


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_group_under_chaos(tmp_path, layout):
    print(f"GROUP_CHAOS_SEED={SEED}")
    chaos = Chaos(tmp_path, layout, SEED)
    split = layout != LAYOUTS["one process"]
    rng = chaos.rng
    plan = ["kill", "cancel", "close"] * 2 + [rng.choice(["kill", "cancel", "close"])
                                              for _ in range(STEPS - 6)]
    rng.shuffle(plan)
    crash_at, worker_at = rng.sample(range(1, STEPS), 2)
    print("plan:", plan, "broker crash before step", crash_at,
          "worker kill before step", worker_at if split else None)
    try:
        chaos.start_broker()
        conn = pika.BlockingConnection(pika.URLParameters(chaos.broker.url))
        conn.channel().exchange_declare(TOPIC, exchange_type="x-partitioned",
                                        arguments={"x-partitions": PARTITIONS})
        conn.close()
        for _ in range(MEMBERS):
            chaos.join()
        for i in range(PRODUCERS):
            chaos.spawn("producer", f"p{i}", KEYS, SEED * 31 + i)
        for step, how in enumerate(plan):
            chaos.wait_progress(STEP_MESSAGES)
            if step == crash_at:
                chaos.crash_broker()
                chaos.wait_progress(STEP_MESSAGES)
            if step == worker_at and split:
                chaos.kill_worker()
                chaos.wait_progress(STEP_MESSAGES)
            chaos.leave(how)
            chaos.join()
        chaos.wait_progress(STEP_MESSAGES)

        for i in range(PRODUCERS):
            chaos.procs[f"p{i}"].send_signal(signal.SIGTERM)
        for i in range(PRODUCERS):
            assert chaos.procs[f"p{i}"].wait(30) == 0, chaos.output(f"p{i}")
        confirmed = chaos.confirmed()

        def drained():
            seen = {(r["pr"], r["k"], r["s"]) for recs in chaos.records().values()
                    for r in recs if r["ev"] == "msg"}
            return confirmed <= seen
        try:
            leaks.wait_until(drained, timeout=60, what="every confirmed message processed")
        except AssertionError:
            print(diagnose(chaos, confirmed))
            raise
        while chaos.members:
            chaos.leave("close")
        report = check(chaos.records(), confirmed, chaos.kills, chaos.faults)
        print("report:", json.dumps(report))
        # the acks committed: no lag, and the group stays visible with no member
        leaks.wait_until(lambda: group_api(chaos.broker)["lag"] == 0, timeout=30,
                         what="the group's lag to reach 0")
        group = group_api(chaos.broker)
        assert group["members"] == []
        assert sorted(p["partition"] for p in group["partitions"]) == list(range(PARTITIONS))
        assert all(p["committed_offset"] == p["log_end_offset"] and p["lag"] == 0
                   for p in group["partitions"]), group
    except BaseException:
        print("what the test did:\n" + "\n".join(chaos.actions))
        for name in chaos.procs:
            print(chaos.output(name))
        print("".join(chaos.broker.output[-200:]))
        raise
    finally:
        chaos.stop_all()


# ------------------------------------------------------------------ the checks
def check(records: dict[str, list[dict]], confirmed: set, kills: dict[str, float],
          faults: list[float]) -> dict:
    """Assert the guarantees of the module docstring on the members' records; return counts."""
    msgs = []                                   # (t, owner, partition, offset, message)
    ends: dict[tuple, float] = {}               # owner -> end of its session
    events = sorted(faults)                     # every cause a handover can have
    for member, recs in records.items():
        last_session = None
        for r in recs:
            owner = (member, r["session"])
            if r["ev"] == "msg":
                p = partition_of(r["k"].encode(), PARTITIONS)
                assert r["p"] == p, f"x-partition {r['p']!r} on a message of partition {p}"
                assert isinstance(r["o"], int), f"x-stream-offset {r['o']!r}"
                msgs.append((r["t"], owner, p, r["o"], (r["pr"], r["k"], r["s"])))
            elif r["ev"] == "end":
                ends[owner] = r["t"]
                events.append(r["t"])
            else:
                events.append(r["t"])
            last_session = owner
        if member in kills and last_session is not None:
            ends[last_session] = min(ends.get(last_session, kills[member]), kills[member])
            events.append(kills[member])
    msgs.sort(key=lambda m: m[0])
    events.sort()

    # at least once
    first: dict[tuple, float] = {}
    copies: dict[tuple, set] = defaultdict(set)        # message -> (partition, offset)s
    times: dict[tuple, int] = defaultdict(int)          # (partition, offset) -> processings
    for t, owner, p, o, m in msgs:
        first.setdefault(m, t)
        copies[m].add((p, o))
        times[(p, o)] += 1
    missing = confirmed - set(first)
    assert not missing, f"{len(missing)} confirmed messages never processed: {sorted(missing)[:10]}"

    # per key, first processings in publish order
    by_key: dict[tuple, list] = defaultdict(list)
    for (pr, k, s), t in first.items():
        by_key[(pr, k)].append((s, t))
    for key, seqs in by_key.items():
        seqs.sort()
        assert [s for s, _ in seqs] == list(range(len(seqs))), f"{key}: a gap in {seqs}"
        out_of_order = [(a, b) for a, b in zip(seqs, seqs[1:]) if b[1] < a[1]]
        assert not out_of_order, f"{key}: processed first out of order: {out_of_order[:5]}"

    # duplicates, bounded by the failures that can cause them
    redeliveries = sum(n - 1 for n in times.values())
    stored_twice = sum(len(c) - 1 for c in copies.values())
    ended = len(ends)
    assert redeliveries <= PREFETCH * ended + PREFETCH * PARTITIONS * len(faults), \
        f"{redeliveries} redeliveries for {ended} ended sessions and {len(faults)} crashes"
    assert stored_twice == 0, \
        f"{stored_twice} messages stored twice (idempotent producers) for {len(faults)} crashes"

    # never two live owners of a partition at once
    first_at: dict[tuple, float] = {}
    for t, _, p, o, _ in msgs:
        first_at.setdefault((p, o), t)

    def crash_excuses(p: int, o: int, t: float) -> bool:
        """Offset o of partition p delivered again at t may be a crash's doing: a crash came
        after o was first handed out (its ack may have died with the process; a delivery
        sent just before a crash can be processed just after it, hence the slack) and
        before t."""
        i = bisect.bisect_right(faults, first_at[(p, o)] - CRASH_SLACK)
        return i < len(faults) and faults[i] < t

    handovers = 0
    for p in range(PARTITIONS):
        runs: list[list] = []                    # [owner, first t, first o, last t, last o]
        for t, owner, q, o, _ in msgs:
            if q != p:
                continue
            if runs and runs[-1][0] == owner:
                run = runs[-1]
                assert o > run[4] or crash_excuses(p, o, t), \
                    f"partition {p}: {owner} got offset {o} after {run[4]} with no crash between"
                run[3], run[4] = t, o
            else:
                runs.append([owner, t, o, t, o])
        for prev, cur in zip(runs, runs[1:]):
            if cur[2] <= prev[4]:
                ended_by = ends.get(prev[0], float("inf"))
                assert ended_by <= cur[1] or crash_excuses(p, cur[2], cur[1]), (
                    f"partition {p}: {cur[0]} started at offset {cur[2]} at t={cur[1]:.3f} "
                    f"while {prev[0]}, alive until {ended_by:.3f}, had it up to {prev[4]}")
        # each handover matched to its own earlier cause
        used = 0
        for prev, cur in zip(runs, runs[1:]):
            causes = bisect.bisect_left(events, cur[1])
            assert causes > used, (f"partition {p}: handover {prev[0]} -> {cur[0]} at "
                                   f"t={cur[1]:.3f} with no membership change left to cause it")
            used += 1
        handovers += max(0, len(runs) - 1)
    return {"processed": len(msgs), "confirmed": len(confirmed), "redeliveries": redeliveries,
            "stored_twice": stored_twice, "ended_sessions": ended, "crashes": len(faults),
            "handovers": handovers, "membership_events": len(events)}


# ------------------------------------------------------------------ the checks themselves
def _history(*deliveries, joins=(), ends=()):
    """Member records from (t, member, offset, seq) on one key of partition 0."""
    key = next(f"p0-k{j}" for j in range(100) if partition_of(f"p0-k{j}".encode(),
                                                              PARTITIONS) == 0)
    records: dict[str, list[dict]] = defaultdict(list)
    for t, member in joins:
        records[member].append({"ev": "join", "t": t, "session": 1})
    for t, member, o, s in deliveries:
        records[member].append({"ev": "msg", "t": t, "session": 1, "p": 0, "o": o,
                                "pr": "p0", "k": key, "s": s, "rd": False})
    for t, member in ends:
        records[member].append({"ev": "end", "t": t, "session": 1, "how": "close"})
    for recs in records.values():
        recs.sort(key=lambda r: r["t"])
    return dict(records), {("p0", key, s) for _, _, _, s in deliveries}


@pytest.mark.parametrize("case", ["handover", "two owners", "taken over from a live owner",
                                  "redelivered to a live member",
                                  "redelivered after a crash", "first processings reordered",
                                  "lost"])
def test_the_checks_catch_what_they_are_for(case):
    """The record checks on small made-up histories: a clean handover passes, each broken
    guarantee fails with its own message."""
    joins = [(0.0, "A"), (2.5, "B")]
    clean = [(1.0, "A", 0, 0), (1.1, "A", 1, 1), (1.2, "A", 2, 2),
             (3.0, "B", 3, 3), (3.1, "B", 4, 4)]
    kills, faults, expect = {}, [], None
    if case == "handover":
        deliveries = clean
    elif case == "two owners":          # the partition dealt out to A and B in turn
        deliveries = [(1.0, "A", 0, 0), (1.05, "B", 1, 1), (1.1, "A", 2, 2),
                      (1.15, "B", 3, 3), (1.2, "A", 4, 4)]
        joins, expect = [(0.0, "A"), (0.5, "B")], "no membership change left to cause it"
    elif case == "taken over from a live owner":    # B restarts at A's offsets, A goes on
        deliveries = [(1.0, "A", 0, 0), (1.1, "A", 1, 1), (3.0, "B", 1, 1), (3.1, "B", 2, 2)]
        kills = {"A": 5.0}
        expect = "started at offset 1 at t=3.000 while ('A', 1), alive until 5.000"
    elif case in ("redelivered to a live member", "redelivered after a crash"):
        deliveries = clean + [(3.2, "B", 3, 3), (3.3, "B", 4, 4)]
        if case == "redelivered after a crash":
            faults = [3.15]
        else:
            expect = "redeliveries for 0 ended sessions and 0 crashes"
    elif case == "first processings reordered":
        deliveries = [(1.0, "A", 0, 1), (1.1, "A", 1, 0)]
        expect = "processed first out of order"
    else:
        deliveries = clean[:3]
        expect = "1 confirmed messages never processed"
    records, confirmed = _history(*deliveries, joins=joins)
    if case == "lost":
        confirmed.add((next(iter(confirmed))[0], next(iter(confirmed))[1], 3))
    if expect is None:
        assert check(records, confirmed, kills, faults)["processed"] == len(deliveries)
    else:
        with pytest.raises(AssertionError) as e:
            check(records, confirmed, kills, faults)
        assert expect in str(e.value)
