"""The delayed messages log (supervisor/delayed.py) and the plugin's reading of ``x-delay``
(frontend/exchange.delay_of): what a restart finds after adds, dones, a torn tail and a
rewrite; which header values delay a message and how it goes on."""
from __future__ import annotations

import os

import pytest
from pamqp import commands

from amqpbroker.frontend.exchange import MAX_DELAY, delay_of
from amqpbroker.protocol import properties as props_mod
from amqpbroker.storage.record import Record
from amqpbroker.supervisor.delayed import DelayedLog, Held, negate_delay


def held(id_: int, delay_header=1000, body: bytes = b"\x00body\xff") -> Held:
    raw = props_mod.encode(commands.Basic.Properties(
        headers={"x-delay": delay_header, "other": "kept"}, delivery_mode=2, priority=3))
    record = Record(1_700_000_000_000 + id_, "dx", "rk.é", raw, body, 1)
    return Held(id_, record.timestamp + 1000, "/vh", "dx", ("rk.é", "cc"), record, 3)


def reopened(path) -> dict:
    log = DelayedLog(str(path))
    try:
        return log.held
    finally:
        log.close()


def test_adds_minus_dones_come_back_whole(tmp_path):
    path = tmp_path / "delayed.log"
    log = DelayedLog(str(path))
    for i in (1, 2, 3):
        log.add(held(i))
    log.done(2)
    log.sync(force=True)
    log.close()
    back = reopened(path)
    assert sorted(back) == [1, 3]
    h = back[3]
    assert h == held(3)._replace(record=h.record)
    assert (h.record.timestamp, h.record.exchange, h.record.routing_key, bytes(h.record.body),
            h.record.flags) == (1_700_000_000_003, "dx", "rk.é", b"\x00body\xff", 1)
    assert bytes(h.record.properties) == bytes(held(3).record.properties)


def test_a_torn_last_entry_is_cut_and_the_rest_kept(tmp_path):
    path = tmp_path / "delayed.log"
    log = DelayedLog(str(path))
    log.add(held(1))
    log.add(held(2))
    log.sync(force=True)
    log.close()
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 5)
    log = DelayedLog(str(path))
    assert sorted(log.held) == [1] and log.truncated_bytes > 0
    log.close()


def test_a_rewrite_keeps_only_what_is_held(tmp_path):
    path = tmp_path / "delayed.log"
    log = DelayedLog(str(path))
    for i in range(1, 51):
        log.add(held(i))
    for i in range(1, 50):
        log.done(i)
    log.sync(force=True)
    before = os.path.getsize(path)
    log.rewrite([held(50)])
    log.add(held(51))                   # appends go to the new file
    log.sync(force=True)
    log.close()
    assert os.path.getsize(path) < before
    assert sorted(reopened(path)) == [50, 51]


@pytest.mark.parametrize("value, delay", [
    (1500, 1500), ("250", 250), (b"250", 250), (2.9, 2), (MAX_DELAY, MAX_DELAY),
    (0, None), (-10, None), (MAX_DELAY + 1, None), ("soon", None), (True, None),
    (None, None), ([1], None),
])
def test_what_delays_a_message(value, delay):
    assert delay_of({"x-delay": value}) == delay
    assert delay_of(None) is None and delay_of({}) is None


@pytest.mark.parametrize("header, seen", [(1000, -1000), ("300", -300), (2.5, -2)])
def test_a_held_message_goes_on_with_its_delay_negated_and_the_rest_as_sent(header, seen):
    h = held(1, delay_header=header)
    out = negate_delay(h.record)
    props = props_mod.decode(bytes(out.properties))
    assert props.headers == {"x-delay": seen, "other": "kept"}
    assert (props.delivery_mode, props.priority) == (2, 3)
    assert out._replace(properties=h.record.properties) == h.record
