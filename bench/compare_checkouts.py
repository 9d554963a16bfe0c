"""Broker CPU per message of two checkouts (e.g. before and after a change), interleaved.

For each round, size and process layout, runs ``../shared/bench``'s ``pubsub_e2e`` against a
broker started from each checkout in turn (``python -m amqpbroker serve`` with the checkout
as working directory and first on PYTHONPATH), so drift on the machine hits both alike; prints
the median broker CPU per delivered message (whole process tree) and delivered msg/s.

Each checkout also gets "cs/1000": the voluntary context switches of the broker's process
tree (every thread, ``/proc/<pid>/task/*/status``) over the harness's whole run, per 1,000
messages the consumers received (per 1,000 published or confirmed when nothing is
consumed): how often a broker process went to sleep, a count that does not depend on the
machine's speed the way CPU time does (a split layout's processes sleep whenever their
ring runs empty; bench/RESULTS.md, "Issue 8: fewer wake-ups").

``pubsub_e2e`` also gets a column per checkout, "µs/handled": the broker's CPU over the mean
of the published and delivered rates. Its producers are not held to the consumers' pace, so
on a loaded machine the queue grows during the run, by how much depends on the layout and
the minute, and the CPU spent on messages published but not yet delivered is charged to the
delivered ones: per delivered message alone, a layout whose consumer falls further behind
looks dearer per message than it is (bench/RING_RESULTS.md, issue 8, "the consumer behind").

``--pin`` places the processes (CPU affinity, every thread, set once the broker is ready):
``tree`` puts the broker's whole process tree on CPU 0 and the harness (and its load
generators) on CPU 1, so the client never shares a core with the broker; ``apart`` puts a
split broker's supervisor (its front-end with ``--workers 1``) on CPU 0 and its other
processes on CPU 1, the harness unpinned (one process: all on CPU 0). Where the processes
run moves the split's CPU per message by tens of per cent on a 2-CPU machine
(bench/RESULTS.md, "Issue 8 at 1 KiB: where the processes run").

    python bench/compare_checkouts.py --checkout before=/path/to/old --checkout after=. \
        [--rounds 3] [--seconds 5] [--size 16,1024] [--scenario pubsub_e2e,publish_confirm]
        [--layouts "1 process,--workers 1"]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile

from lone_message import loop_wakeups, thread_wakeups, tree   # this directory: the same /proc walk

LAYOUTS = {"1 process": ["--workers", "0"], "--workers 1": ["--workers", "1"],
           "2 front-ends + 2 workers": ["--workers", "2", "--frontends", "2"]}
READY = re.compile(r"amqpbroker ready amqp=([\d.]+):(\d+)")


def start(checkout: str, data: str, layout: list[str],
          python: str = sys.executable, port: int = 0) -> tuple[subprocess.Popen, str]:
    # an environment variable, not a flag: older checkouts have no --prometheus-port
    env = dict(os.environ, PYTHONPATH=checkout, AMQPBROKER_PROMETHEUS_PORT="0")
    proc = subprocess.Popen([python, "-m", "amqpbroker", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--management-port", "0", "--data-dir", data,
                             "--log-level", "warning", *layout], cwd=checkout, env=env,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stdout:
        m = READY.search(line)
        if m:
            return proc, f"amqp://guest:guest@{m.group(1)}:{m.group(2)}/"
    raise RuntimeError(f"broker from {checkout} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def pin(pid: int, how: str) -> None:
    """``--pin``: the broker's processes (every thread) on their CPUs; see the module text."""
    if how == "none":
        return
    for p in tree(pid):
        cpus = {0} if how == "tree" or p == pid else {1}
        for tid in os.listdir(f"/proc/{p}/task"):
            os.sched_setaffinity(int(tid), cpus)


def voluntary_switches(pid: int) -> int:
    """The voluntary context switches of ``pid``'s process tree, every thread of it."""
    return sum(loop_wakeups(pid).values()) + thread_wakeups(pid)


def run_once(args, checkout: str, layout: list[str], size: int,
             scenario: str = "pubsub_e2e") -> dict:
    with tempfile.TemporaryDirectory() as data, tempfile.NamedTemporaryFile(suffix=".json") as out:
        proc, url = start(checkout, data, layout, port=args.port)
        try:
            pin(proc.pid, args.pin)
            before = voluntary_switches(proc.pid)
            subprocess.run([args.bench_python, args.bench, "--url", url, "--broker-pid",
                            str(proc.pid), "--scenario", scenario, "--size", str(size),
                            "--seconds", str(args.seconds), "--json", out.name], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           preexec_fn=(lambda: os.sched_setaffinity(0, {1}))
                           if args.pin == "tree" else None)
            switches = voluntary_switches(proc.pid) - before
        finally:
            stop(proc)
        with open(out.name) as f:
            run = json.load(f)["runs"][0]
        detail = run.get("detail", {})
        moved = detail.get("received_total") or detail.get("client_sent") or 0
        run["switches_per_1000"] = 1000 * switches / moved if moved else math.nan
        return run


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkout", action="append", required=True, help="label=path")
    p.add_argument("--bench-python", default="/tmp/bench-venv/bin/python")
    # the harness beside the checkout's parent, or its grandparent (a worktree in wt/)
    p.add_argument("--bench", default=next(
        (c for c in (os.path.join(here, "..", "..", "shared", "bench", "amqp_bench.py"),
                     os.path.join(here, "..", "..", "..", "shared", "bench", "amqp_bench.py"))
         if os.path.exists(c)), "amqp_bench.py"))
    p.add_argument("--port", type=int, default=0, help="the brokers' AMQP port (0: any)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--size", default="16,1024")
    p.add_argument("--scenario", default="pubsub_e2e",
                   help="comma list of the harness's scenarios (msg/s: delivered or confirmed)")
    p.add_argument("--pin", choices=("none", "tree", "apart"), default="none",
                   help="CPU placement: tree = broker on CPU 0, harness on CPU 1; apart = a "
                        "split broker's supervisor on CPU 0, its children on CPU 1")
    p.add_argument("--layouts", default=",".join(LAYOUTS),
                   help="comma list of: " + ", ".join(LAYOUTS))
    args = p.parse_args()
    layouts = {name: LAYOUTS[name] for name in args.layouts.split(",")}
    checkouts = [c.split("=", 1) for c in args.checkout]
    results: dict = {}
    scenarios = args.scenario.split(",")
    sizes = [int(s) for s in args.size.split(",")]
    for _ in range(args.rounds):
        for scenario in scenarios:
            for size in sizes:
                for name, layout in layouts.items():
                    for label, path in checkouts:
                        r = run_once(args, os.path.abspath(path), layout, size, scenario)
                        cpu = r["cpu"]["broker_pct"] / 100 * 1e6       # µs per second
                        published = r.get("detail", {}).get("published_w_rate")
                        handled = (r["value"] + published) / 2 if published else r["value"]
                        if not r["value"]:          # a run that moved nothing: say so, count it as nan
                            print(f"# {label} {name} {scenario} {size} B: 0 msg/s", file=sys.stderr)
                            cpu, handled = math.nan, 1
                        results.setdefault((scenario, size, name, label), []).append(
                            (r["value"], cpu / (r["value"] or 1), cpu / handled,
                             r["switches_per_1000"]))
    print("| scenario | size | layout | "
          + " | ".join(f"{lbl} µs/msg | {lbl} µs/handled | {lbl} msg/s | {lbl} cs/1000"
                       for lbl, _ in checkouts) + " |")
    print("|---|---:|---|" + "---:|---:|---:|---:|" * len(checkouts))
    for scenario in scenarios:
        for size in sizes:
            for name in layouts:
                cells = []
                for label, _ in checkouts:
                    runs = results[(scenario, size, name, label)]
                    cells.append(f"{statistics.median(c for _, c, _, _ in runs):.1f} | "
                                  f"{statistics.median(h for _, _, h, _ in runs):.1f} | "
                                  f"{statistics.median(v for v, _, _, _ in runs):,.0f} | "
                                  f"{statistics.median(s for _, _, _, s in runs):.2f}")
                print(f"| {scenario} | {size} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
