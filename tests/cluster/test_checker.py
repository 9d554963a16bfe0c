"""The Jepsen-style checker end to end (``amqpbroker.testing.checker``): a real etcd, three
real nodes each in its own network namespace (root, as CI runs), a quorum queue of group
size 3, aiormq producers with confirms and consumers with acks on random nodes, and a seeded
schedule of the faults main survives today (``CI_FAULTS``: a non-leader SIGKILLed and
restarted, SIGSTOPped for 2 x TTL, or cut off for 2 x TTL). Every confirmed message must
arrive, none twice unflagged, per key in order, and the queue must drain to its consumers.
The faults that wait (the leader killed, paused or cut: replication; etcd restarted: stalled
consumers) run by hand: docs/CLUSTER.md section 5."""
import pytest

from amqpbroker.testing.checker import CI_FAULTS, run_seed
from amqpbroker.testing.history import load

ROUNDS = 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_confirmed_message_is_lost_duplicated_or_reordered_under_faults(seed, tmp_path):
    lines = []
    verdict, _ = run_seed(seed, ROUNDS, CI_FAULTS, settle=0.5, history_dir=str(tmp_path),
                          log=lines.append)
    print("\n".join(lines))
    assert verdict.ok, verdict.summary()
    assert verdict.confirmed > 200, verdict.summary()      # the workload did run
    history = load(str(tmp_path / f"history-{seed}.jsonl"))
    healed = [e["kind"] for e in history if e["ev"] == "fault" and e["phase"] == "healed"]
    assert len(healed) == ROUNDS and set(healed) <= set(CI_FAULTS)
    # traffic flowed after the last fault too: a confirm after it healed
    last_healed = max(e["t"] for e in history if e["ev"] == "fault")
    assert any(e["ev"] == "confirm" and e["t"] > last_healed for e in history)
