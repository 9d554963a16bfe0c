"""The shared harness's many_queues sequence with *durable* queues: N queues declared,
consumed (no-ack), one message published to each and received, deleted; queues/s per phase
(with ``--exchanges``, then N durable exchanges declared and deleted).

Each round runs every target in turn (interleaved, so drift on the machine hits all alike): a
broker started from each ``--checkout`` (a fresh data directory each time; e.g. a clean
checkout of main as ``before`` and this one as ``after``) and, with ``--reference``, an already
running broker such as the reference RabbitMQ. The client is the shared harness's raw asyncio
client (``../shared/bench/rawamqp.py``, imported from there at run time), so it needs that
harness's environment:

    /tmp/bench-venv/bin/python bench/many_durable_queues.py \\
        --checkout before=/work/wt/cleanmain --checkout after=. \\
        --reference rabbitmq=amqp://guest:guest@127.0.0.1:5673/ --queues 1000 --rounds 3

Prints one JSON line per run and, at the end, the median queues/s per phase and target, and
the broker's CPU seconds for the whole sequence and its CPU ms per queue in each phase (its
process tree; checkouts only: on a loaded machine the rates are mostly the scheduler's, the
CPU per queue is the broker's own).

``--queue-type quorum`` declares quorum queues (``x-queue-type``). ``--strace`` attaches
``strace -c -f`` to each broker for each phase and prints its file syscalls per queue (for a
``--reference``, only with ``--reference-pid LABEL=PID``, e.g. RabbitMQ's
``pgrep -f beam.smp``); tracing slows the brokers, so such a run's rates mean nothing:

    /tmp/bench-venv/bin/python bench/many_durable_queues.py --checkout after=. \
        --reference rabbitmq=amqp://guest:guest@127.0.0.1:5673/ \
        --reference-pid rabbitmq=$(pgrep -f beam.smp) --queues 300 --rounds 1 --strace
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare_checkouts import start, stop  # noqa: E402

PHASES = ("declare", "consume", "publish_deliver", "delete")


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (their own and their reaped children's)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[1] is ppid, [2] pgrp; utime, stime, cutime, cstime are 11..14
        if int(entry) == pid or int(fields[2]) == pid:
            total += sum(int(x) for x in fields[11:15]) / tick
    return total


TRACED = ("fsync", "fdatasync", "openat", "mkdir", "rename", "unlink", "write", "pwrite64",
          "close", "ftruncate", "fallocate", "stat", "newfstatat", "statx", "fstat", "rmdir",
          "read", "pread64", "sync_file_range")


def tree_pids(pid: int) -> list[int]:
    """``pid`` and the processes of its process group (the broker's workers, if any)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(entry) == pid or int(fields[2]) == pid:
                pids.append(int(entry))
    return pids


class SyscallCount:
    """``strace -c -f`` attached to a broker's processes for one phase: calls per name.
    Tracing slows the broker several-fold, so a traced run's rates are not comparable."""

    def __init__(self, pids: list[int]):
        self.out = tempfile.NamedTemporaryFile(suffix=".strace", delete=False).name
        argv = ["strace", "-c", "-f", "-qq", "-e", "trace=" + ",".join(TRACED), "-o", self.out]
        for p in pids:
            argv += ["-p", str(p)]
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        # wait until attached: strace has set up every thread once the traced processes'
        # /proc/<pid>/status shows a TracerPid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(self._traced(p) for p in pids):
            time.sleep(0.01)

    @staticmethod
    def _traced(pid: int) -> bool:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("TracerPid:") and line.split()[1] != "0" for line in f)

    def finish(self) -> dict[str, int]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        calls = {}
        with open(self.out) as f:
            for line in f:
                parts = line.split()
                # % time, seconds, usecs/call, calls, [errors], syscall
                if len(parts) >= 5 and parts[-1] in TRACED and parts[3].isdigit():
                    calls[parts[-1]] = int(parts[3])
        os.unlink(self.out)
        return calls


class PhaseClock:
    """Wall time and, for a broker this script started, its process tree's CPU time; with
    ``trace``, the syscalls of every pid in ``trace`` per phase instead."""

    def __init__(self, pid: int | None, trace: list[int] | None = None):
        self.pid = pid
        self.trace = trace
        self.cpu_ms: dict[str, float] = {}      # phase -> broker CPU ms per queue
        self.calls: dict[str, dict[str, float]] = {}    # phase -> syscall -> calls per queue

    def start(self) -> None:
        self._strace = SyscallCount(self.trace) if self.trace else None
        self._cpu = tree_cpu(self.pid) if self.pid else 0.0
        self._t = time.monotonic()

    def stop(self, phase: str, n: int) -> float:
        """Rate (per second) of the phase just ended; notes its CPU per queue."""
        rate = n / (time.monotonic() - self._t)
        if self.pid:
            self.cpu_ms[phase] = (tree_cpu(self.pid) - self._cpu) * 1000 / n
        if self._strace:
            self.calls[phase] = {k: round(v / n, 2)
                                 for k, v in sorted(self._strace.finish().items())}
        return rate


async def sequence(url: str, n: int, exchanges: bool, clock: PhaseClock | None = None,
                   queue_type: str = "classic") -> dict:
    from pamqp import commands as spec
    from rawamqp import build_publish, connect
    names = [f"bench.mdq.{uuid.uuid4().hex[:8]}.{i}" for i in range(n)]
    conn = await connect(url)
    ch = await conn.channel()
    rates = {}
    clock = clock or PhaseClock(None)
    clock.start()
    arguments = {"x-queue-type": queue_type} if queue_type != "classic" else None
    for q in names:
        await ch.queue_declare(q, durable=True, arguments=arguments)
    rates["declare"] = clock.stop("declare", n)
    got = {"n": 0}
    done = asyncio.get_running_loop().create_future()

    def on_message(tag, ts, now, size):
        got["n"] += 1
        if got["n"] == n and not done.done():
            done.set_result(None)
    ch.on_message = on_message
    ch.want_ts = False
    clock.start()
    for q in names:
        await ch.consume(q, no_ack=True)
    rates["consume"] = clock.stop("consume", n)
    clock.start()
    for q in names:
        pre, suf = build_publish(ch.number, "", q, 16, conn.frame_max)
        conn.write(pre + suf)
    await asyncio.wait_for(done, 120)
    rates["publish_deliver"] = clock.stop("publish_deliver", n)
    clock.start()
    for q in names:
        await ch.queue_delete(q)
    rates["delete"] = clock.stop("delete", n)
    if exchanges:       # metadata alone: durable exchanges have no files of their own
        clock.start()
        for q in names:
            await ch.exchange_declare(q, "direct", durable=True)
        rates["x_declare"] = clock.stop("x_declare", n)
        clock.start()
        for q in names:
            await ch.rpc(spec.Exchange.Delete(exchange=q))
        rates["x_delete"] = clock.stop("x_delete", n)
    await conn.close()
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", action="append", default=[], metavar="LABEL=PATH")
    ap.add_argument("--reference", action="append", default=[], metavar="LABEL=URL")
    ap.add_argument("--queues", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--exchanges", action="store_true",
                    help="then as many durable exchanges declared and deleted (x_declare, "
                         "x_delete): the definitions' cost without any queue files")
    ap.add_argument("--queue-type", default="classic", choices=("classic", "quorum"),
                    help="x-queue-type of the declared queues")
    ap.add_argument("--strace", action="store_true",
                    help="count the brokers' file syscalls per queue in each phase (strace "
                         "-c -f; it slows the broker, so the rates of such a run mean nothing)")
    ap.add_argument("--reference-pid", action="append", default=[], metavar="LABEL=PID",
                    help="with --strace: the process of a --reference broker to trace")
    ap.add_argument("--layout", default="--workers 0 --frontends 0",
                    help="the checkouts' process layout (serve's flags)")
    ap.add_argument("--broker-python", default=shutil.which("python3") or "python3",
                    help="the interpreter that runs the checkouts' brokers (the project's; "
                         "this script runs in the harness's environment)")
    ap.add_argument("--shared-bench", default=os.path.join(HERE, "..", "..", "shared", "bench"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.shared_bench))
    if not os.path.exists(os.path.join(args.shared_bench, "rawamqp.py")):
        sys.path.insert(0, "/work/shared/bench")
    targets = [(lbl, "checkout", where) for lbl, where in
               (c.split("=", 1) for c in args.checkout)]
    targets += [(lbl, "url", where) for lbl, where in (r.split("=", 1) for r in args.reference)]
    ref_pids = dict(r.split("=", 1) for r in args.reference_pid)
    results: dict = {lbl: [] for lbl, _, _ in targets}
    for rnd in range(args.rounds):
        for label, kind, where in targets:
            if kind == "url":
                trace = [int(ref_pids[label])] if args.strace and label in ref_pids else None
                clock = PhaseClock(None, trace)
                rates = asyncio.run(sequence(where, args.queues, args.exchanges, clock,
                                             args.queue_type))
                cpu = None
            else:
                with tempfile.TemporaryDirectory() as data:
                    proc, url = start(os.path.abspath(where), data, args.layout.split(),
                                      args.broker_python)
                    try:
                        clock = PhaseClock(proc.pid,
                                           tree_pids(proc.pid) if args.strace else None)
                        cpu0 = tree_cpu(proc.pid)
                        rates = asyncio.run(sequence(url, args.queues, args.exchanges, clock,
                                                     args.queue_type))
                        cpu = tree_cpu(proc.pid) - cpu0
                        cpu_ms = {k: round(v, 3) for k, v in clock.cpu_ms.items()}
                    finally:
                        stop(proc)
            run = {"round": rnd, "target": label, "queues": args.queues,
                   "queues_per_s": {k: round(v, 1) for k, v in rates.items()},
                   "broker_cpu_s": cpu}
            if kind != "url":
                run["broker_cpu_ms_per_queue"] = cpu_ms
            if clock.calls:
                run["syscalls_per_queue"] = clock.calls
            results[label].append(run)
            print(json.dumps(run), flush=True)
    print(f"\nmedian queues/s over {args.rounds} round(s), {args.queues} durable "
          f"{args.queue_type} queues", file=sys.stderr)
    phases = PHASES + (("x_declare", "x_delete") if args.exchanges else ())
    print("| target | " + " | ".join(phases) + " | broker CPU s |", file=sys.stderr)
    print("|---|" + "---:|" * (len(phases) + 1), file=sys.stderr)
    for label, runs in results.items():
        cells = [f"{statistics.median(r['queues_per_s'][p] for r in runs):.0f}" for p in phases]
        cpus = [r["broker_cpu_s"] for r in runs if r["broker_cpu_s"] is not None]
        cells.append(f"{statistics.median(cpus):.2f}" if cpus else "-")
        print(f"| {label} | " + " | ".join(cells) + " |", file=sys.stderr)
    checkouts = [lbl for lbl, kind, _ in targets if kind == "checkout"]
    if checkouts:
        print("\nmedian broker CPU ms per queue (its process tree, per phase)", file=sys.stderr)
        print("| target | " + " | ".join(phases) + " |", file=sys.stderr)
        print("|---|" + "---:|" * len(phases), file=sys.stderr)
        for label in checkouts:
            runs = results[label]
            cells = [f"{statistics.median(r['broker_cpu_ms_per_queue'][p] for r in runs):.2f}"
                     for p in phases]
            print(f"| {label} | " + " | ".join(cells) + " |", file=sys.stderr)
    traced = [(lbl, runs[-1]["syscalls_per_queue"]) for lbl, runs in results.items()
              if runs and "syscalls_per_queue" in runs[-1]]
    if traced:
        names = sorted({c for _, calls in traced for ph in calls.values() for c in ph})
        print("\nfile syscalls per queue (last round; strace -c -f)", file=sys.stderr)
        print("| target | phase | " + " | ".join(names) + " |", file=sys.stderr)
        print("|---|---|" + "---:|" * len(names), file=sys.stderr)
        for label, calls in traced:
            for phase in phases:
                ph = calls.get(phase, {})
                print(f"| {label} | {phase} | " + " | ".join(f"{ph.get(c, 0):g}" for c in names)
                      + " |", file=sys.stderr)


if __name__ == "__main__":
    main()
