"""cluster/metadata.py ``dedup_owner``: which node holds an x-message-deduplication
exchange's cache for the cluster (rendezvous hashing over the running nodes)."""
from amqpbroker.cluster.metadata import dedup_owner

EXCHANGES = [f"x{i}" for i in range(300)]


def owners(nodes):
    return {x: dedup_owner("/", x, nodes) for x in EXCHANGES}


def test_every_node_picks_the_same_holder_whatever_the_order_it_lists_the_nodes_in():
    assert owners(["n1", "n2", "n3"]) == owners(["n3", "n1", "n2"])
    assert dedup_owner("/", "x", []) is None


def test_the_caches_are_spread_and_a_node_leaving_moves_only_those_it_held():
    before = owners(["n1", "n2", "n3"])
    assert all(list(before.values()).count(n) > 60 for n in ("n1", "n2", "n3"))
    after = owners(["n1", "n3"])
    assert {x for x in EXCHANGES if before[x] != after[x]} == \
        {x for x in EXCHANGES if before[x] == "n2"}
    joined = owners(["n1", "n2", "n3", "n4"])        # a node joining takes, moves nothing else
    assert all(joined[x] in (before[x], "n4") for x in EXCHANGES)
