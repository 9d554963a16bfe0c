"""The supervisor's RSS under management and queue-churn load, as fast as the load goes: a
quick probe of its heap growth (issue 9's creep, bench/SOAK_RESULTS.md), to compare allocator
settings in minutes rather than a soak's hour.

    python bench/supervisor_heap.py --minutes 4
    python bench/supervisor_heap.py --minutes 4 --env MALLOC_ARENA_MAX=2
    python bench/supervisor_heap.py --minutes 4 --broker-arg=--heap-trim-interval=0
    python bench/supervisor_heap.py --minutes 4 --arenas --garbage /tmp/garbage.txt
    python bench/supervisor_heap.py --minutes 4 --trace /tmp/trace.txt --malloc-info /tmp/m.xml

``--arenas``, ``--garbage``, ``--trace``, ``--gc-report`` and ``--malloc-info`` look inside
the running supervisor with gdb (``PyRun_SimpleString`` under its GIL, glibc's
``malloc_info``): what is in CPython's arenas, which cyclic garbage waits for a collection,
which allocations made after the warm-up are still alive, what glibc's heap holds. Results and
what they showed: bench/SOAK_RESULTS.md, last section.

One broker in the split layout (2 workers, 2 front-ends, management on, a temporary data
directory); ``--threads`` management loops (every listing the soak reads, then vhosts, users
and permissions created and deleted: each change rewrites the definitions) and one churn loop
(durable, exclusive and auto-delete queues declared, bound, published to, deleted) run without
pauses. The supervisor's VmRSS is sampled every ``--interval`` seconds; the result is the RSS
at the first sample after the warm-up, at the end, and the least-squares slope in between
(MiB per 1,000 management rounds and per minute). Memory, not time: a busy machine only makes
the run do fewer rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from amqpbroker.testing import BrokerProcess  # noqa: E402
from soak import MIB, Soak, process_sample  # noqa: E402


class Load(Soak):
    """The soak's management and churn actors, without their pauses."""

    def management_round(self, rng: random.Random) -> None:
        for path in ("overview", "queues", "exchanges", "connections", "nodes", "vhosts",
                     "definitions"):
            self.api("GET", path)
        v, u = f"heap-v{rng.randrange(4)}", f"heap-u{rng.randrange(4)}"
        self.api("PUT", f"vhosts/{v}", {"description": "heap"})
        self.api("PUT", f"users/{u}", {"password": "p", "tags": "management"})
        self.api("PUT", f"permissions/{v}/{u}", {"configure": ".*", "write": ".*", "read": ".*"})
        if rng.random() < 0.5:
            self.api("DELETE", f"users/{u}")
            self.api("DELETE", f"vhosts/{v}")
        self.count("rounds")


def slope(points: list[tuple[float, float]]) -> float:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def gdb_malloc_info(pid: int, path: str) -> str:
    """glibc's heap report of process ``pid`` into ``path``, then malloc_trim(0) (gdb)."""
    out = subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-nx",
         "-ex", f'set $f = (void *) fopen("{path}", "w")',
         "-ex", "call (int) malloc_info(0, $f)", "-ex", "call (int) fclose($f)",
         "-ex", "call (int) malloc_trim(0)"],
        capture_output=True, text=True, timeout=120).stdout
    results = [line.split("=", 1)[1].strip() for line in out.splitlines()
               if line.startswith("$")]
    return results[-1] if results else "?"


GC_REPORT = """\
import gc, os, sys
f = open({path!r}, "w")
f.write("thresholds %r counts %r frozen %d tracked %d\\n" % (gc.get_threshold(), gc.get_count(),
        gc.get_freeze_count(), len(gc.get_objects())))
f.write("collected %d unreachable\\n" % gc.collect())
f.write("tracked after %d\\n" % len(gc.get_objects()))
f.flush()
saved = os.dup(2)
os.dup2(f.fileno(), 2)
sys._debugmallocstats()
os.dup2(saved, 2)
os.close(saved)
f.close()
"""


GARBAGE_REPORT = """\
import collections, gc
gc.set_debug(gc.DEBUG_SAVEALL)
n = gc.collect()
kinds = collections.Counter(type(o).__module__ + "." + type(o).__qualname__ for o in gc.garbage)
with open({path!r}, "w") as f:
    f.write("%d objects of cyclic garbage, counts %r before\\n" % (n, gc.get_count()))
    for kind, count in kinds.most_common(40):
        f.write("%7d %s\\n" % (count, kind))
gc.garbage.clear()
gc.set_debug(0)
"""


TRACE_REPORT = """\
import gc, tracemalloc
gc.collect()
snap = tracemalloc.take_snapshot().filter_traces([
    tracemalloc.Filter(False, tracemalloc.__file__)])
tracemalloc.stop()
stats = snap.statistics("traceback")
with open({path!r}, "w") as f:
    f.write("%d bytes in %d blocks alive, allocated since the warm-up\\n\\n"
            % (sum(s.size for s in stats), sum(s.count for s in stats)))
    for s in stats[:40]:
        f.write("%d bytes in %d blocks\\n" % (s.size, s.count))
        for line in s.traceback.format(most_recent_first=True)[:24]:
            f.write("    " + line + "\\n")
"""


def mappings(pid: int) -> dict:
    """MiB resident per kind of mapping: [heap] (glibc's main arena), anonymous mappings
    (CPython's obmalloc arenas, glibc's mmapped chunks and thread arenas, thread stacks),
    files (code)."""
    out: dict = {}
    kind = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split()
            if "-" in first[0] and len(first) >= 5 and ":" in first[3]:
                name = first[5] if len(first) > 5 else ""
                kind = name if name.startswith("[") else ("file" if name else "anon")
            elif first[0] == "Rss:":
                out[kind] = out.get(kind, 0) + int(first[1]) / 1024
    return {k: round(v, 1) for k, v in sorted(out.items())}


ARENAS = """\
import os, sys
f = open({path!r}, "w")
saved = os.dup(2)
os.dup2(f.fileno(), 2)
sys._debugmallocstats()
os.dup2(saved, 2)
os.close(saved)
f.close()
"""


def arenas(pid: int) -> str:
    """CPython's obmalloc arenas in use and the bytes in their allocated blocks."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as f:
        gdb_python(pid, ARENAS.format(path=f.name))
        text = f.read()
    wanted = ("# arenas allocated current", "# bytes in allocated blocks",
              "# bytes in available blocks")
    return "; ".join(f"{line.split('=')[0].strip('# ').strip()} "
                     f"{line.split('=')[1].strip()}"
                     for line in text.splitlines() if line.startswith(wanted))


def gdb_python(pid: int, code: str) -> None:
    """Run ``code`` in process ``pid``'s interpreter, holding its GIL (gdb)."""
    subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-nx",
         "-ex", "set $g = (int) PyGILState_Ensure()",
         "-ex", f"call (int) PyRun_SimpleString({json.dumps(code)})",
         "-ex", "call (void) PyGILState_Release($g)"],
        capture_output=True, text=True, timeout=120, check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the first kept "
                   "sample")
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2, help="management loops")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the broker")
    p.add_argument("--broker-arg", action="append", default=[])
    p.add_argument("--gc-report", metavar="FILE", help="at the end, attach gdb to the "
                   "supervisor and, under its GIL, write to FILE its gc counts, the objects gc "
                   "tracks, what a full collection frees, and sys._debugmallocstats(); report "
                   "the RSS before and after that collection")
    p.add_argument("--trace", metavar="FILE", help="start tracemalloc in the supervisor "
                   "after the warm-up (gdb) and write, at the end, the allocations made since "
                   "then and still alive, largest first, with their tracebacks, to FILE")
    p.add_argument("--arenas", action="store_true", help="after the warm-up and at the end, "
                   "report CPython's obmalloc arenas and the bytes in their allocated blocks "
                   "(sys._debugmallocstats through gdb)")
    p.add_argument("--garbage", metavar="FILE", help="at the end, collect with "
                   "gc.DEBUG_SAVEALL in the supervisor (gdb) and write the types of the cyclic "
                   "garbage found, most common first, to FILE")
    p.add_argument("--malloc-info", metavar="FILE", help="at the end, attach gdb to the "
                   "supervisor: write glibc's malloc_info to FILE, call malloc_trim(0), and "
                   "report the RSS before and after")
    a = p.parse_args(argv)
    env = dict(os.environ)
    env.update(item.split("=", 1) for item in a.env)
    data = tempfile.mkdtemp(prefix="heap-probe-")
    broker = BrokerProcess(data, "--workers", "2", "--frontends", "2", *a.broker_arg,
                           management=True, env=env).start()
    try:
        load = Load(broker, a.minutes * 60, seed=1)
        load.setup()
        actors = [("management", load.management_round)] * a.threads + [("churn", load.churn)]
        threads = [threading.Thread(target=load.loop, args=(n, body, random.Random(i)),
                                    daemon=True) for i, (n, body) in enumerate(actors)]
        for t in threads:
            t.start()
        start, points = time.monotonic(), []
        while load.running():
            time.sleep(a.interval)
            s = process_sample(broker.proc.pid)
            t = time.monotonic() - start
            with load.lock:
                rounds = load.counts.get("rounds", 0)
            print(f"{t:6.0f} s  {rounds:6d} rounds  supervisor {s['rss'] / MIB:6.1f} MiB",
                  flush=True)
            if t >= a.warmup:
                if not points:
                    print("mappings after the warm-up (MiB):", mappings(broker.proc.pid))
                    if a.arenas:
                        print("obmalloc after the warm-up:", arenas(broker.proc.pid))
                    if a.trace:
                        gdb_python(broker.proc.pid, "import tracemalloc\ntracemalloc.start(12)")
                points.append((t, rounds, s["rss"] / MIB))
        print("mappings at the end (MiB):", mappings(broker.proc.pid))
        if a.arenas:
            print("obmalloc at the end:", arenas(broker.proc.pid))
        load.stop.set()
        for t in threads:
            t.join(30)
        load.proxy.stop()
        if a.garbage:
            gdb_python(broker.proc.pid, GARBAGE_REPORT.format(path=a.garbage))
        if a.trace:
            gdb_python(broker.proc.pid, TRACE_REPORT.format(path=a.trace))
        if a.gc_report:
            before = process_sample(broker.proc.pid)["rss"] / MIB
            gdb_python(broker.proc.pid, GC_REPORT.format(path=a.gc_report))
            after = process_sample(broker.proc.pid)["rss"] / MIB
            print(f"gc report in {a.gc_report}: supervisor {before:.1f} -> {after:.1f} MiB "
                  f"after gc.collect()")
        if a.malloc_info:
            before = process_sample(broker.proc.pid)["rss"] / MIB
            trimmed = gdb_malloc_info(broker.proc.pid, a.malloc_info)
            after = process_sample(broker.proc.pid)["rss"] / MIB
            print(f"malloc_info in {a.malloc_info}; malloc_trim(0) -> {trimmed}: supervisor "
                  f"{before:.1f} -> {after:.1f} MiB")
        errors = {k: v for k, v in load.counts.items() if ":" in k}
        if len(points) >= 2:
            per_round = slope([(r, m) for _, r, m in points]) * 1000
            per_min = slope([(t, m) for t, _, m in points]) * 60
            print(f"env {a.env or '-'} args {a.broker_arg or '-'}: supervisor "
                  f"{points[0][2]:.1f} -> {points[-1][2]:.1f} MiB over "
                  f"{points[-1][1] - points[0][1]} rounds after the warm-up: "
                  f"{per_round:+.2f} MiB per 1000 rounds, {per_min:+.2f} MiB/min; "
                  f"churned {load.counts.get('churned', 0)}; errors {errors or 'none'}")
    finally:
        broker.stop()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
