"""The memory alarm's rule about free pages: the node's RSS counts pages glibc keeps after a
free, so the alarm gives them back (the heap trimmer's ``malloc_trim``) before it goes on, and
again while it stays on, after 1, 2, 4 ... 32 s: memory freed while it is on clears it within
seconds, not at the periodic trimmer's next turn. The node's memory is scripted (in use, and
free pages kept until a trim); the alarm's own code runs."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from amqpbroker.frontend import alarms


class Clock:
    def __init__(self):
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def call_later(self, delay, callback):
        return SimpleNamespace(cancel=lambda: None)


class Node:
    """What the node holds: memory in use and free pages glibc keeps until a trim."""

    def __init__(self):
        self.in_use = 0
        self.kept = 0
        self.trims: list[float] = []

    def rss(self, broker) -> int:
        return self.in_use + self.kept


@pytest.fixture
def node(monkeypatch, tmp_path):
    node = Node()
    clock = Clock()

    def trim_now() -> bool:
        node.trims.append(clock.now)
        released, node.kept = node.kept > 0, 0
        return released

    broker = SimpleNamespace(
        config=SimpleNamespace(memory_high_watermark=0.5, data_dir=str(tmp_path),
                               disk_free_limit=0),
        loop=clock, sessions=[], child_pids=lambda: [], alarm_changed=lambda *a: None,
        heap_trimmer=SimpleNamespace(interval=60, trim_now=trim_now))
    monkeypatch.setattr(alarms, "node_rss", node.rss)
    monkeypatch.setattr(alarms, "total_memory", lambda: 1000)      # the limit: 500
    node.alarms, node.clock = alarms.Alarms(broker), clock
    return node


def check_at(node: Node, t: float) -> bool:
    node.clock.now = t
    node.alarms._check()
    return "memory" in node.alarms.active


def test_memory_freed_while_the_alarm_is_on_clears_it_at_the_next_trim(node):
    node.in_use, node.kept = 600, 100
    assert check_at(node, 0.0)                  # trimmed first: 600 in use is over 500
    assert node.trims == [0.0]
    # the blocked publisher goes: 300 freed, kept by glibc (RSS unchanged)
    node.in_use, node.kept = 300, 300
    assert check_at(node, 0.5)                  # no trim yet
    assert not check_at(node, 1.0)              # trimmed: 300 in use, the alarm clears
    assert node.trims == [0.0, 1.0]


def test_while_memory_stays_in_use_the_trims_back_off_to_32_s(node):
    node.in_use = 600
    for t in range(0, 200):
        assert check_at(node, float(t))
    assert node.trims == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 95.0, 127.0, 159.0, 191.0]
    node.in_use = 100                           # below the limit: clears without a trim
    assert not check_at(node, 200.0)
    node.in_use = 600                           # on again: the waits start over
    for t in range(201, 205):
        assert check_at(node, float(t))
    assert node.trims[-3:] == [201.0, 202.0, 204.0]
