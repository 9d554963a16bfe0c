"""The Jepsen-style checker end to end (``amqpbroker.testing.checker``): a real etcd, three
real nodes each in its own network namespace (root, as CI runs), a quorum queue of group
size 3, aiormq producers with confirms and consumers with acks on random nodes, and a fixed
schedule per seed that runs every fault kind (``CI_SCHEDULES``): the leader SIGKILLed,
SIGSTOPped or cut off for 2 x TTL; a follower the same; etcd restarted; every node
restarted in turn. Every confirmed message must arrive, none twice unflagged, per key in
order; the queue must drain to its consumers; every replica's log must be the same up to
the high watermark; no two nodes may lead in one epoch. One more seed runs its nodes with
worker processes (``--layout workers``: replication in the workers) and kills the worker
hosting the queue, on a follower (twice) and on the leader, pauses that worker alone, then
the leader's supervisor alone (its workers run on past its lease), kills it alone (its
orphaned workers exit before the restarted node may open the data directory), then kills
the leader's node. And one seed on a topic of two quorum partitions (``--topic 2``: keyed
publishes to the topic's exchange, a consumer per partition), its nodes with worker
processes, and one on a topic of two streams read by a consumer group (``--group``: what a
group re-reads from its commit after a rebalance is allowed, nothing may be lost), and one
with idempotent producers that publish again what was not confirmed (``--idempotent``:
each message stored once). Many seeds of random schedules run by hand: docs/CLUSTER.md section 5."""
import pytest

from amqpbroker.testing.checker import CI_FAULTS, WORKER_FAULTS, run_seed
from amqpbroker.testing.history import load

CI_SCHEDULES = {
    1: ("kill_leader", "pause_follower", "restart_etcd"),
    2: ("pause_leader", "kill_follower", "rolling_restart"),
    3: ("cut_leader", "cut_follower", "kill_leader"),
    # the nodes with worker processes (LAYOUT)
    4: ("kill_follower_worker", "kill_follower_worker", "kill_leader_worker",
        "pause_leader_worker", "pause_leader_supervisor", "kill_leader_supervisor",
        "kill_leader"),
    # a topic of two quorum partitions (TOPIC), its nodes with worker processes: each
    # partition on its own worker and led on its own
    5: ("kill_leader_worker", "kill_follower", "pause_leader"),
    # a topic of two stream partitions read by one consumer group (TOPIC): the coordinator
    # is partition 0's leader, so its kill moves the group too
    6: ("kill_leader", "pause_follower", "kill_follower"),
    # idempotent producers (IDEMPOTENT) publishing again what was not confirmed
    7: ("kill_leader", "pause_leader", "kill_follower"),
}
LAYOUT = {4: "workers", 5: "workers"}
# (partitions, consumer group) of checker.Target; the others: one quorum queue
TOPIC = {5: (2, False), 6: (2, True)}
IDEMPOTENT = {7}


def test_the_ci_schedules_run_every_fault_kind():
    assert {k for s in CI_SCHEDULES.values() for k in s} == set(CI_FAULTS + WORKER_FAULTS)


@pytest.mark.parametrize("seed", sorted(CI_SCHEDULES))
def test_no_confirmed_message_is_lost_duplicated_or_reordered_under_faults(seed, tmp_path):
    lines = []
    schedule = CI_SCHEDULES[seed]
    partitions, group = TOPIC.get(seed, (0, False))
    verdict, _ = run_seed(seed, len(schedule), settle=0.5, history_dir=str(tmp_path),
                          log=lines.append, schedule=schedule,
                          layout=LAYOUT.get(seed, "default"), partitions=partitions,
                          group=group, idempotent=seed in IDEMPOTENT)
    print("\n".join(lines))
    assert verdict.ok, verdict.summary()
    assert verdict.confirmed > 200, verdict.summary()      # the workload did run
    assert verdict.replicas_compared == 3 * max(partitions, 1), verdict.summary()
    history = load(str(tmp_path / f"history-{seed}.jsonl"))
    if partitions:          # every partition was consumed (by the group: the topic) and led
        consumed = {e["queue"] for e in history if e["ev"] == "consuming"}
        led = {e["queue"] for e in history if e["ev"] == "leader"}
        partition_queues = {f"checker-{i}" for i in range(partitions)}
        assert led == partition_queues
        assert consumed == ({"checker"} if group else partition_queues)
    healed = [e["kind"] for e in history if e["ev"] == "fault" and e["phase"] == "healed"]
    assert tuple(healed) == schedule
    # traffic flowed after the last fault too: a confirm after it healed
    last_healed = max(e["t"] for e in history if e["ev"] == "fault")
    assert any(e["ev"] == "confirm" and e["t"] > last_healed for e in history)
    # the sampler saw the leader (at least the first one)
    assert any(e["ev"] == "leader" for e in history)
