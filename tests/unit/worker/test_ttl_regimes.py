"""worker/ttls.py: the message TTL regimes a durable queue keeps across restarts."""
from __future__ import annotations

from amqpbroker.worker import ttls


def test_saved_then_loaded(tmp_path):
    regimes = [(0, None), (17, 5000), (40, None)]
    ttls.save(str(tmp_path), regimes)
    assert ttls.load(str(tmp_path)) == regimes
    assert not (tmp_path / (ttls.FILE + ".tmp")).exists()


def test_none_stored_or_unreadable_is_one_regime(tmp_path):
    assert ttls.load(str(tmp_path)) is None
    (tmp_path / ttls.FILE).write_bytes(b'{"ttls": [[0, 5')            # torn
    assert ttls.load(str(tmp_path)) is None
    (tmp_path / ttls.FILE).write_bytes(b'{"ttls": [[9, 1], [3, 2]]}')  # not ascending
    assert ttls.load(str(tmp_path)) is None


def test_regimes_whose_messages_are_gone_are_dropped():
    regimes = [(0, None), (10, 500), (20, None)]
    assert ttls.live(regimes, 5) == regimes
    assert ttls.live(regimes, 10) == [(10, 500), (20, None)]
    assert ttls.live(regimes, 15) == [(10, 500), (20, None)]
    assert ttls.live(regimes, 25) == [(20, None)]
