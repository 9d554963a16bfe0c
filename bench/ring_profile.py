"""Where a multi-process broker spends its CPU: per process role, per message.

Starts a broker from this checkout in one layout, runs one scenario of ``../shared/bench``
against it, and during the measurement window samples every process of the broker's tree:
CPU seconds (``/proc/<pid>/stat``), system calls and context switches (``perf stat``), and,
with ``--py-spy``, the top frames (``py-spy record --format raw``, self and inclusive share).
Prints per-message figures for each role (supervisor / front-end / worker).

    python bench/ring_profile.py --layout "--workers 1" --scenario pubsub_e2e --size 1024
    python bench/ring_profile.py --layout "--workers 2 --frontends 2" --py-spy --top 25

Counts are over ``--window`` seconds in the middle of the harness's run; per message means
divided by delivered (pubsub_e2e) or confirmed (publish_confirm) messages in that window,
from the harness's rate. Not a timed test: a measurement to read by eye.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from compare_checkouts import READY, stop   # bench/ is on sys.path when run as a script

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def role_of(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmd = f.read().replace(b"\0", b" ").decode()
    if "amqpbroker.worker" in cmd:
        return f"worker {pid}"
    if "amqpbroker.frontend" in cmd:
        return f"front-end {pid}"
    return f"supervisor {pid}" if " serve" in cmd else cmd[:60]


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


SYSCALLS = ["write", "writev", "read", "recvfrom", "sendto", "epoll_wait", "epoll_pwait",
            "epoll_ctl", "futex", "fdatasync", "pwrite64", "sendmsg"]
EVENTS = ["raw_syscalls:sys_enter", "context-switches",
          *(f"syscalls:sys_enter_{name}" for name in SYSCALLS)]


def perf_stat(pid: int, seconds: float) -> dict:
    r = subprocess.run(["perf", "stat", "-x", ",", "-e", ",".join(EVENTS), "-p", str(pid), "--",
                        "sleep", str(seconds)], capture_output=True, text=True)
    out = {}
    for line in r.stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].strip().isdigit():
            out[parts[2]] = int(parts[0])
    return out


def py_spy(pid: int, seconds: float, path: str) -> None:
    subprocess.run(["py-spy", "record", "--pid", str(pid), "-d", str(int(seconds)), "-r", "250",
                    "--format", "raw", "-o", path, "--nonblocking"], capture_output=True)


def top_frames(path: str, top: int) -> list[tuple[float, float, str]]:
    self_, incl, total = collections.Counter(), collections.Counter(), 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not n.isdigit():
                continue
            n = int(n)
            total += n
            frames = [re.sub(r" \(.*?/(amqpbroker|shm|asyncio|uvloop)/", r" (\1/", fr)
                      for fr in stack.split(";")]
            self_[frames[-1]] += n
            for fr in set(frames):
                incl[fr] += n
    rows = [(100 * incl[f] / total, 100 * self_[f] / total, f) for f in incl]
    rows.sort(reverse=True)
    return [r for r in rows if "<module>" not in r[2] and "run_forever" not in r[2]
            and "_run_once" not in r[2] and "main (" not in r[2]][:top]


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layout", default="--workers 1")
    p.add_argument("--scenario", default="pubsub_e2e")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--seconds", type=int, default=14)
    p.add_argument("--window", type=float, default=8)
    p.add_argument("--py-spy", action="store_true")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--save", metavar="DIR",
                   help="keep each process's py-spy samples (DIR/<role>.txt) and CPU µs per "
                        "message (DIR/cpu.json), for comparing layouts frame by frame")
    p.add_argument("--bench-python", default="/tmp/bench-venv/bin/python")
    p.add_argument("--bench", default=next(
        (c for c in (os.path.join(here, "..", "..", "shared", "bench", "amqp_bench.py"),
                     os.path.join(here, "..", "..", "..", "shared", "bench", "amqp_bench.py"))
         if os.path.exists(c)), "amqp_bench.py"))
    args = p.parse_args()
    root = os.path.dirname(here)
    with tempfile.TemporaryDirectory() as data, tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=root, AMQPBROKER_PROMETHEUS_PORT="0")
        proc = subprocess.Popen([sys.executable, "-m", "amqpbroker", "serve", "--host",
                                 "127.0.0.1", "--port", "0", "--management-port", "0",
                                 "--data-dir", data, "--log-level", "warning",
                                 *args.layout.split()], cwd=root, env=env,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            url = None
            for line in proc.stdout:
                m = READY.search(line)
                if m:
                    url = f"amqp://guest:guest@{m.group(1)}:{m.group(2)}/"
                    break
            pids = [proc.pid, *children(proc.pid)]
            out_json = os.path.join(tmp, "out.json")
            bench = subprocess.Popen([args.bench_python, args.bench, "--url", url,
                                      "--broker-pid", str(proc.pid), "--scenario", args.scenario,
                                      "--size", str(args.size), "--seconds", str(args.seconds),
                                      "--json", out_json], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(tmp, "bench.log"), "w"))
            # not synchronisation: places the sampling window in the middle of the harness's
            # measurement (its set-up takes ~3 s; the harness gives no signal to wait on)
            time.sleep(3 + (args.seconds - args.window) / 2)
            results: dict = {}
            cpu0 = {pid: cpu_seconds(pid) for pid in pids}
            threads = []
            for pid in pids:
                def job(pid=pid):
                    r = {"perf": perf_stat(pid, args.window)}
                    results[pid] = r
                threads.append(threading.Thread(target=job))
                if args.py_spy:
                    threads.append(threading.Thread(
                        target=py_spy, args=(pid, args.window, os.path.join(tmp, f"{pid}.txt"))))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            cpu1 = {pid: cpu_seconds(pid) for pid in pids}
            if bench.wait():
                with open(os.path.join(tmp, "bench.log")) as f:
                    sys.exit("the harness failed:\n" + f.read()[-3000:])
            with open(out_json) as f:
                run = json.load(f)["runs"][0]
            rate = run["value"]
            msgs = rate * args.window
            print(f"## {args.layout}, {args.scenario} {args.size} B: {rate:,.0f} msg/s "
                  f"(harness: broker {run['cpu']['broker_pct']} % CPU, "
                  f"{run['cpu']['broker_pct'] / 100 * 1e6 / rate:.1f} µs/msg)\n")
            print("| process | CPU % | CPU µs/msg | syscalls/msg | context switches/msg |")
            print("|---|---:|---:|---:|---:|")
            for pid in pids:
                cpu = cpu1[pid] - cpu0[pid]
                perf = results[pid]["perf"]
                print(f"| {role_of(pid)} | {100 * cpu / args.window:.0f} | "
                      f"{1e6 * cpu / msgs:.1f} | "
                      f"{perf.get('raw_syscalls:sys_enter', 0) / msgs:.2f} | "
                      f"{perf.get('context-switches', 0) / msgs:.3f} |")
            print("\nsystem calls per message, by call:\n")
            for pid in pids:
                perf = results[pid]["perf"]
                print(f"    {role_of(pid)}: " + ", ".join(
                    f"{k.split('sys_enter_')[-1]} {v / msgs:.3f}" for k, v in
                    sorted(((k, v) for k, v in perf.items() if "sys_enter_" in k and v),
                           key=lambda kv: -kv[1])))
            if args.save:
                os.makedirs(args.save, exist_ok=True)
                saved = {}
                for pid in pids:
                    role = role_of(pid).split()[0]
                    path = os.path.join(tmp, f"{pid}.txt")
                    if os.path.exists(path):
                        shutil.copy(path, os.path.join(args.save, f"{role}.txt"))
                    saved[role] = 1e6 * (cpu1[pid] - cpu0[pid]) / msgs
                with open(os.path.join(args.save, "cpu.json"), "w") as f:
                    json.dump(saved, f)
            if args.py_spy:
                for pid in pids:
                    path = os.path.join(tmp, f"{pid}.txt")
                    if not os.path.exists(path):
                        continue
                    print(f"\n### {role_of(pid)}: inclusive % / self %\n")
                    for inc, slf, frame in top_frames(path, args.top):
                        print(f"    {inc:5.1f} {slf:5.1f}  {frame[:130]}")
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
