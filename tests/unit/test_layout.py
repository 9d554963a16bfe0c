"""The process layout chosen from the CPU count (``Config.layout``)."""
import pytest

from amqpbroker.config import Config


@pytest.mark.parametrize("cpus, expected", [
    (1, (0, 0)), (2, (0, 0)), (3, (0, 0)),       # one process below 4 CPUs
    (4, (2, 2)), (8, (4, 4)), (16, (7, 9)),      # 3/5 of the CPUs speak AMQP, the rest own queues
])
def test_default_layout_follows_cpu_count(cpus, expected):
    assert Config().layout(cpus) == expected


def test_explicit_counts_win():
    assert Config(workers=2).layout(2) == (2, 0)
    assert Config(workers=2, frontends=3).layout(16) == (2, 3)
    assert Config(frontends=2).layout(2) == (1, 2)    # workers follow: at least one
    assert Config(workers=0).layout(16) == (0, 0)     # no workers: AMQP in the same process


def test_frontends_without_workers_is_refused():
    with pytest.raises(ValueError, match="--frontends needs"):
        Config(workers=0, frontends=2).layout(8)
