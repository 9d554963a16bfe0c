"""amqpbroker/prefault.py: once the heap grows in a burst, the thread maps the pad glibc keeps
ahead, and the loop's thread then allocates bodies there without faulting. Each case runs in
a fresh interpreter (glibc's parameters are per process) and counts the minor page faults of
the allocating thread alone (RUSAGE_THREAD): the prefault thread's own faults are not in it."""
from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import ctypes, json, resource, sys, time
from amqpbroker.prefault import HeapPrefaulter, PAGE

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_ssize_t]
BODY = 65536
prefault = sys.argv[1] == "on"
h = HeapPrefaulter().start() if prefault else None
keep = []
# a queue growing for a second: 256 MiB of bodies, a growth of the heap every ~120 ms
for i in range(256 * 16):
    keep.append(b"x" * BODY)
    if i % 64 == 0:
        time.sleep(0.03)
if prefault:
    deadline = time.monotonic() + 60
    while True:             # the thread has mapped the heap up to its break, 16 MiB+ free
        brk = libc.sbrk(0)
        if h.covered < brk - brk % PAGE:
            time.sleep(0.01)
        elif libc.mallinfo2().keepcost >= 16 << 20:
            break
        else:               # the top is nearly used: use it up, the next growth is mapped
            keep.append(b"x" * BODY)
        assert time.monotonic() < deadline, (h.covered, brk, h.calls)
# the top chunk is where the next bodies go: half of what is left of it with the thread,
# 8 MiB without
free_top = libc.mallinfo2().keepcost if prefault else 16 << 20
count = free_top // 2 // (BODY + 4096)
before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
for _ in range(count):
    keep.append(b"y" * BODY)
faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
print(json.dumps({"faults": faults, "pages": count * BODY // PAGE, "calls": h.calls if h else 0}))
"""


def run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_bodies_in_a_populated_pad_take_no_faults():
    got = run("on")
    assert got["calls"] >= 1
    assert got["pages"] >= 1024, got          # at least 4 MiB of bodies measured
    assert got["faults"] < got["pages"] // 20, got


def test_without_it_every_page_of_a_body_faults():
    got = run("off")        # the measurement above tells the two apart
    assert got["pages"] >= 16
    assert got["faults"] >= got["pages"] // 2, got


QUIET = r"""
import json, time
from amqpbroker.prefault import HeapPrefaulter, PAGE
import ctypes
libc = ctypes.CDLL(None)
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_ssize_t]
h = HeapPrefaulter().start()
keep = []
# a burst: the heap grows every half second (the thread, at POLL_MAX while idle, sees each
# growth apart: the second within BURST of the first is populated), then stops growing
for i in range(3):
    keep += [b"x" * 65536 for _ in range(512)]       # 32 MiB
    time.sleep(0.5)
grown = time.monotonic()
deadline = grown + 60
while h.covered < libc.sbrk(0) - libc.sbrk(0) % PAGE:   # the thread has seen the last growth
    assert time.monotonic() < deadline, (h.covered, h.calls)
    time.sleep(0.01)
def wakeups():
    with open(f"/proc/self/task/{h._thread.native_id}/status") as f:
        return int(next(l for l in f if l.startswith("voluntary_ctxt_switches")).split()[1])
time.sleep(max(0.0, grown + 2.0 - time.monotonic()))   # 2 s after the heap last grew
before = wakeups()
time.sleep(1.0)                                        # the second that is measured
print(json.dumps({"wakeups": wakeups() - before, "calls": h.calls}))
"""


def test_a_heap_that_stopped_growing_is_polled_rarely():
    """Each poll takes the GIL from the event loop (a lone message's round trip waits for it:
    bench/RESULTS.md, "latency_1"): once the heap has not grown for a while the thread looks
    a few times a second, not every ``POLL_MIN`` for the whole ``BURST``."""
    out = subprocess.run([sys.executable, "-c", QUIET], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["calls"] >= 1, got              # it was a burst: the thread populated a growth
    assert got["wakeups"] <= 20, got           # POLL_MIN all along: ~500 a second


ONE_GROWTH = r"""
import json, time
from amqpbroker.prefault import HeapPrefaulter, POLL_MAX
h = HeapPrefaulter().start()
deadline = time.monotonic() + 60
while h.looks < 2:                          # the thread has looked at the break, idle
    assert time.monotonic() < deadline
    time.sleep(0.01)
keep = [b"x" * 65536 for _ in range(32)]    # 2 MiB of bodies: one growth of the heap (+ the pad)
while h.growths < 1:                        # the thread has seen it
    assert time.monotonic() < deadline, h.looks
    time.sleep(0.001)
def wakeups():
    with open(f"/proc/self/task/{h._thread.native_id}/status") as f:
        return int(next(l for l in f if l.startswith("voluntary_ctxt_switches")).split()[1])
before = wakeups()
time.sleep(0.5)                                        # the half second that is measured
print(json.dumps({"wakeups": wakeups() - before, "growths": h.growths}))
"""


def test_one_growth_of_the_heap_is_not_polled_for():
    """A heap that grows once (the pad glibc gave back to ``malloc_trim`` every minute, taken
    again) is no burst: the thread keeps looking a few times a second. Polling every
    ``POLL_MIN`` for ``FAST`` after it took the GIL from the event loop ~500 times in that
    second (bench/RESULTS.md, "latency_1 tail")."""
    out = subprocess.run([sys.executable, "-c", ONE_GROWTH], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["growths"] == 1, got
    assert got["wakeups"] <= 20, got           # POLL_MIN after it: ~250 in half a second


HELD = r"""
import json, time
from amqpbroker import prefault
h = prefault.HeapPrefaulter().start()
def burst():                                # the heap grows three times, each seen by the
                                            # thread (its counter polled) before the next
    seen = h.growths
    deadline = time.monotonic() + 60
    for i in range(3):
        keep.extend(b"x" * 65536 for _ in range(512))   # 32 MiB
        while h.growths == seen:            # the thread has seen this growth
            assert time.monotonic() < deadline, h.looks
            time.sleep(0.01)
        seen = h.growths
keep = []
deadline = time.monotonic() + 60
while h.looks < 1:                          # the thread has taken the break as its baseline:
    assert time.monotonic() < deadline      # a burst before that is no growth to it
    time.sleep(0.01)
prefault.hold(True)                         # the memory alarm is on
burst()
held = {"growths": h.growths, "calls": h.calls, "populated": h.populated}
prefault.hold(False)                        # ... and off again
burst()
print(json.dumps({"held": held, "after": {"calls": h.calls}}))
"""


def test_while_the_memory_alarm_is_on_nothing_is_populated():
    """The heap trimmer gives free pages back every few seconds while the memory alarm is on;
    the next allocation raises the break again, and a populated pad after each of those is
    memory the alarm counts (a worker's alarm stayed on with its queue purged:
    tests/integration/test_memory_backpressure.py). Held, growths are seen but not
    populated; released, the next burst is."""
    out = subprocess.run([sys.executable, "-c", HELD], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["held"]["growths"] >= 3, got
    assert got["held"]["calls"] == 0 and got["held"]["populated"] == 0, got
    assert got["after"]["calls"] >= 1, got
