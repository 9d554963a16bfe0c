"""What a full ``gc.collect()`` costs a process that holds its queues (the one-process layout).

    python bench/gc_pause.py 1000 10000

For each queue count, a one-process broker in this process (``testing.InProcessBroker``: the
metadata owner and a partition host on disk) declares that many queues, each bound to
``amq.topic``, through the metadata calls a channel makes; then it times five full
collections (after one to start from a clean heap) and prints the medians (CPU and wall) with
the number of objects the collector tracks. The pause is the whole event loop's: every
connection and queue of the node waits for it. This is why ``supervisor/heap.py`` collects
only where the supervisor holds no queues (see its docstring).
"""
from __future__ import annotations

import gc
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from amqpbroker.testing.inprocess import InProcessBroker  # noqa: E402


def measure(queues: int) -> tuple[int, float, float]:
    """(objects the collector tracks, median CPU seconds and wall seconds of a full
    collection). On a shared machine the CPU time is the figure to compare; the wall time
    is what the event loop waited, here."""
    data = tempfile.mkdtemp(prefix="gc-pause-")
    broker = InProcessBroker(data)
    md = broker.owner.metadata

    async def declare():
        for i in range(queues):
            await md.declare_queue(vhost="/", name=f"q{i}", owner=None, passive=False,
                                   durable=False, exclusive=False, auto_delete=False,
                                   arguments={})
            await md.bind(vhost="/", kind="queue", destination=f"q{i}", source="amq.topic",
                          key=f"a.{i}.#", arguments={}, owner=None, cid=50, mid=20)
    try:
        broker.run(declare())
        gc.collect()
        cpu, wall = [], []
        for _ in range(5):
            start, start_cpu = time.perf_counter(), time.process_time()
            gc.collect()
            cpu.append(time.process_time() - start_cpu)
            wall.append(time.perf_counter() - start)
        return len(gc.get_objects()), statistics.median(cpu), statistics.median(wall)
    finally:
        broker.close()
        shutil.rmtree(data, ignore_errors=True)


def main(argv) -> None:
    for n in [int(a) for a in argv] or [1000, 10000]:
        objects, cpu, wall = measure(n)
        print(f"{n:>7} queues: {objects:>9,} tracked objects, full collection "
              f"{cpu * 1000:7.1f} ms CPU, {wall * 1000:7.1f} ms wall", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
