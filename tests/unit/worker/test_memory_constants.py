"""worker/memory.py's per-entry constants against what tracemalloc sees for the same tables
at a few table sizes (a hash table's share per entry moves with its fill between resizes):
each constant lies within the measured range, widened by 25 %, so a Python upgrade that
changes them shows here."""
from __future__ import annotations

import tracemalloc
from collections import deque

import pytest

from amqpbroker.storage.record import Record
from amqpbroker.worker import memory
from amqpbroker.worker.queue import Unacked

SIZES = (3000, 6000, 12000, 24000)
BASE = 1 << 33              # offsets of a long-lived queue: not small cached ints


def traced_per_entry(build, n: int) -> float:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = build(n)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held is not None
    return (after - before) / n


@pytest.mark.parametrize("constant, build", [
    ("READY", lambda n: deque(range(BASE, BASE + n))),
    ("REDELIVERED", lambda n: set(range(BASE, BASE + n))),
    ("UNACKED", lambda n: ({o: Unacked(0, 1000 + o % 7) for o in range(BASE, BASE + n)},
                           set(range(BASE, BASE + n)))),
    ("RECORD", lambda n: {o: Record(1_700_000_000_000 + o, "ex", "rk", b"\x00\x00",
                                    bytes(16), 1) for o in range(BASE, BASE + n)}),
])
def test_constant_matches_tracemalloc(constant, build):
    measured = [traced_per_entry(build, n) for n in SIZES]
    if constant == "RECORD":
        measured = [m - 16 for m in measured]   # the body, counted apart (cache_bytes)
    assert 0.75 * min(measured) <= getattr(memory, constant) <= 1.25 * max(measured), measured
