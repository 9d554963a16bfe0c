"""A child's heap trimmer while the memory alarm is on (supervisor/heap.py): it trims when
told, then after 1, 2, 4 ... 32 s while the alarm stays, and stops when it clears."""
from __future__ import annotations

import asyncio

from amqpbroker.supervisor.heap import HeapTrimmer


def test_trims_at_the_alarm_then_backs_off_and_stops_when_it_clears():
    loop = asyncio.new_event_loop()
    try:
        calls = []
        trimmer = HeapTrimmer(loop, 60, collect=False)
        trimmer.trim = lambda pad: calls.append(pad) or 1
        trimmer.memory_alarm(True)
        assert calls == [0] and trimmer.released == 1
        waits = []
        for _ in range(7):              # what each scheduled trim would wait next
            timer = trimmer._alarm_timer
            waits.append(round(timer.when() - loop.time()))
            callback, args = timer._callback, timer._args
            timer.cancel()
            callback(*args)             # the trim the timer holds, run now
        assert waits == [1, 2, 4, 8, 16, 32, 32]
        assert len(calls) == 8
        trimmer.memory_alarm(False)
        assert trimmer._alarm_timer is None
        trimmer.stop()
    finally:
        loop.close()
