"""worker/ttls.py: the message TTL regimes a durable queue keeps across restarts."""
from __future__ import annotations

import asyncio

from amqpbroker import contract as c
from amqpbroker.config import Config
from amqpbroker.storage.record import Record
from amqpbroker.worker import ttls
from amqpbroker.worker.host import PartitionHost
from amqpbroker.worker.queue import now_ms


class FrontEnd:
    def emit(self, event):
        pass


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


async def test_a_queue_emptied_after_a_ttl_policy_went_takes_the_fast_path_again(tmp_path):
    """A TTL removed at runtime leaves the messages queued under it with their TTL; once
    they are all gone only the current regime (no TTL) stays, and publishes take the
    ``_plain`` path again (before: not until a restart)."""
    host = PartitionHost(Config(data_dir=str(tmp_path)), asyncio.get_running_loop())
    state = host.attach(FrontEnd())
    try:
        host.handle(state, [c.Open(req=0, qid=1, vhost="/", name="q", durable=True,
                                   auto_delete=False, arguments={},
                                   directory=str(tmp_path / "q"))])
        q = host.queues[1]
        assert q._plain and not (tmp_path / "q").exists()     # made at the first append

        def publish(seq):
            host.handle(state, [c.Pub(qid=1, seq=seq, priority=0, track=False, flags=0,
                                      record=Record(now_ms(), "", "q", b"", b"m", 1))])
        publish(1)
        q.apply_arguments({"x-message-ttl": 60000})
        publish(2)
        q.apply_arguments({})
        publish(3)
        assert [ttl for _, ttl in q._ttls] == [None, 60000, None] and not q._plain
        assert ttls.load(str(tmp_path / "q")) == q._ttls       # before any log file
        offset, _, _, _ = q.get(no_ack=True)
        assert not q._plain                         # the TTL'd message is still queued
        offset, _, _, _ = q.get(no_ack=False)
        assert not q._plain                         # delivered, not yet acked
        q.get(no_ack=True)
        q.ack([offset])
        assert q._ttls == [(2, None)] and q._plain
    finally:
        host.close()
