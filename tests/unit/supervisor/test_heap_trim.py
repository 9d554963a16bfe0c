"""supervisor/heap.py: malloc_trim(0) gives back freed heap memory that glibc keeps.

Real allocations, no mocks: 64 MiB of 4 KiB buffers (below glibc's mmap threshold, so they
come from the heap) with one live buffer above them, so the freed space is not at the top of
the heap and glibc keeps it after ``free``; RSS stays up until the trimmer runs."""
from __future__ import annotations

import asyncio
import gc
import platform

from amqpbroker.supervisor.heap import HeapTrimmer

MIB = 1024 * 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def fragment() -> tuple[int, bytes]:
    """RSS after freeing 64 MiB below a live buffer, and that buffer (keep it alive)."""
    blocks = [bytearray(4096) for _ in range(16384)]
    for b in blocks:
        b[0] = 1                                    # touched: resident
    pin = bytes(bytearray(4096))                    # above them in the heap
    del blocks
    return rss(), pin


def test_glibc_is_there():
    assert platform.libc_ver()[0] == "glibc"
    assert HeapTrimmer(None, 60).trim is not None


def test_trim_returns_freed_memory_below_a_live_chunk():
    trimmer = HeapTrimmer(None, 60, collect=False)
    trimmer.trim_now()                              # start from a trimmed heap
    before, pin = fragment()
    assert trimmer.trim_now()
    assert rss() < before - 32 * MIB
    assert trimmer.trims == 2 and trimmer.released >= 1
    assert pin


async def test_the_trimmer_runs_every_interval_until_stopped():
    loop = asyncio.get_running_loop()
    trimmer = HeapTrimmer(loop, 0.05).start()

    async def three_trims():
        while trimmer.trims < 3:
            await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(three_trims(), 30)
    finally:
        trimmer.stop()
    done = trimmer.trims
    await asyncio.sleep(0.2)                        # four intervals: none comes once stopped
    assert trimmer.trims == done and trimmer.seconds > 0


def test_it_collects_cyclic_garbage_the_tuned_thresholds_leave():
    class Node:
        pass
    gc.collect()
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)              # cli.tune_gc's
    try:
        for _ in range(1000):
            a, b = Node(), Node()
            a.other, b.other = b, a                 # a cycle, dropped at once
        del a, b
        assert gc.get_count()[0] < 100_000         # not collected yet
        trimmer = HeapTrimmer(None, 60)
        trimmer.trim_now()
        assert trimmer.collected >= 2000
        assert not [o for o in gc.get_objects() if type(o) is Node]
    finally:
        gc.set_threshold(*thresholds)


def test_interval_0_never_trims():
    trimmer = HeapTrimmer(None, 0).start()        # no loop needed: nothing is scheduled
    assert trimmer.trims == 0 and trimmer._timer is None
