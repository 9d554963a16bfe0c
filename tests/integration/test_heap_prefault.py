"""A queue with no consumer holds every 64 KiB body in memory; the broker's event loops should
not take the page faults of that fresh memory themselves (amqpbroker/prefault.py: a thread
maps the heap's growth ahead of them). Counted from outside: the minor faults of each broker
process's main thread (``/proc/<pid>/task/<pid>/stat``, the loop's thread; the prefault
thread's own faults are not in it) while pika publishes, with confirms, 64 MiB past the
first 64 MiB, in both process layouts. Without the thread every body costs its 16 pages."""
from __future__ import annotations

import os
import time

import pika
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import session_members

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

BODY = 65536
WARM = 1024             # 64 MiB first: the heap's first growths are the loop's own
COUNT = 1024            # then 64 MiB counted


@pytest.fixture(params=list(LAYOUTS))
def broker(request, tmp_path):
    with BrokerProcess(tmp_path, *LAYOUTS[request.param]) as b:
        yield b


def loop_faults(b: BrokerProcess) -> int:
    """Minor faults of the main thread of every process of the broker."""
    total = 0
    for pid in session_members(b.proc.pid):
        try:
            with open(f"/proc/{pid}/task/{pid}/stat") as f:
                total += int(f.read().rsplit(")", 1)[1].split()[7])     # minflt
        except OSError:
            pass
    return total


def test_a_growing_queue_of_64k_bodies_faults_off_the_loop(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.queue_declare("prefault.q", auto_delete=False)
        ch.confirm_delivery()
        body = b"b" * BODY
        for _ in range(WARM):
            ch.basic_publish("", "prefault.q", body)
        before = loop_faults(broker)
        for _ in range(COUNT):
            ch.basic_publish("", "prefault.q", body)
        faults = loop_faults(broker) - before
        assert ch.queue_declare("prefault.q", passive=True).method.message_count == WARM + COUNT
        ch.queue_delete("prefault.q")
    finally:
        conn.close()
    pages = COUNT * BODY // 4096
    assert faults < pages // 3, f"{faults} faults on the loops for {pages} pages of bodies"


def prefaulting(pids) -> set[int]:
    """The processes among ``pids`` that run the heap-prefault thread (named by prctl)."""
    out = set()
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    if f.read().strip() == "heap-prefault":
                        out.add(pid)
            except OSError:
                pass
    return out


@pytest.mark.parametrize("layout", ["one process", "--workers 1", "2 workers + 2 front-ends"])
def test_only_the_processes_that_hold_bodies_run_the_prefault_thread(tmp_path, layout):
    """Its polls cost every process that runs it (issue 8: ~20 ms of CPU a second while the
    heap grew in the last 30 s); a process that serves AMQP in a split layout holds no body
    past its ring or socket write, so only the one process or the workers run it."""
    args = {"--workers 1": ("--workers", "1", "--frontends", "0")}.get(layout, LAYOUTS.get(layout))
    with BrokerProcess(tmp_path, *args) as b:
        everyone = session_members(b.proc.pid)
        expected = set(b.worker_pids) or {b.proc.pid}
        assert len(everyone) == 1 + len(b.worker_pids) + len(b.frontend_pids)
        deadline = time.monotonic() + 30
        while prefaulting(everyone) != expected and time.monotonic() < deadline:
            time.sleep(0.05)    # polling a condition: the threads name themselves as they start
        assert prefaulting(everyone) == expected
