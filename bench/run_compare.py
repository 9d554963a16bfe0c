"""Run the loadgen matrix against amqpbroker and a RabbitMQ, and print a Markdown table.

amqpbroker is started (fresh data dir) and stopped by this script; RabbitMQ is given by URL and
the pid of its beam.smp (for CPU and RSS). Cells alternate between the two brokers so that
background noise on the machine hits both about equally. Every loadgen run is bounded by
--duration plus a fixed drain, and killed if it overruns.

    python bench/run_compare.py --rabbit-url amqp://guest:guest@127.0.0.1:5673/ \\
        --rabbit-pid $(pgrep -f beam.smp) --duration 8 --out /tmp/compare.md
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# (scenario, size); 64 KiB only where bodies dominate: e2e and durable
MATRIX = [
    ("publish", 16), ("publish", 1024),
    ("confirm", 16), ("confirm", 1024),
    ("e2e", 16), ("e2e", 1024), ("e2e", 65536),
    ("fanout4", 16), ("fanout4", 1024),
    ("durable", 16), ("durable", 1024), ("durable", 65536),
]


def start_ours(port: int, data_dir: str, extra=()) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "amqpbroker", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--management-port", "0", "--prometheus-port", "0", "--data-dir", data_dir, "--log-level", "warning", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("amqpbroker ready"):
            return proc
        if not line and proc.poll() is not None:
            break
    stop(proc)
    raise SystemExit("amqpbroker did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_cell(url: str, pid: int, scenario: str, size: int, a: argparse.Namespace) -> dict:
    consumers = a.consumers if scenario != "fanout4" else 4
    cmd = [sys.executable, os.path.join(HERE, "loadgen.py"), "--url", url, "--scenario", scenario,
           "--size", str(size), "--duration", str(a.duration), "--producers", str(a.producers),
           "--consumers", str(consumers), "--broker-pid", str(pid)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                             timeout=a.duration + 40)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError) as e:
        return {"scenario": scenario, "size": size, "error": repr(e)[:200]}


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 else f"{n} B"


def _num(v, fmt="{:,.0f}") -> str:
    return "–" if v is None else fmt.format(v)


def table(rows: list[tuple[str, dict]]) -> str:
    out = ["| scenario | size | broker | published msg/s | consumed msg/s | p50 ms | p99 ms "
           "| CPU s / M msgs | RSS MB (end) |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for broker, r in rows:
        if "error" in r:
            out.append(f"| {r['scenario']} | {_size(r['size'])} | {broker} | error: "
                       f"{r['error']} | | | | | |")
            continue
        pub = r["confirm_rate"] if r["confirm_rate"] is not None else r["publish_rate"]
        out.append(
            f"| {r['scenario']} | {_size(r['size'])} | {broker} | {_num(pub)} "
            f"| {_num(r['consume_rate'])} | {_num(r['latency_p50_ms'], '{:.1f}')} "
            f"| {_num(r['latency_p99_ms'], '{:.1f}')} "
            f"| {_num(r.get('broker_cpu_s_per_million'), '{:.1f}')} "
            f"| {_num(r.get('broker_rss_mb_after'), '{:.0f}')} |")
    return "\n".join(out)


def ratios(rows: list[tuple[str, dict]]) -> str:
    by = {}
    ours = []
    for broker, r in rows:
        if "error" not in r:
            by[(r["scenario"], r["size"], broker)] = r
        if broker != "rabbitmq" and broker not in ours:
            ours.append(broker)
    lines = ["| scenario | size | " + " | ".join(f"{o} / RabbitMQ" for o in ours) + " |",
             "|---|---|" + "---:|" * len(ours)]
    for scenario, size in MATRIX:
        q = by.get((scenario, size, "rabbitmq"))
        cells = []
        for name in ours:
            o = by.get((scenario, size, name))
            if not o or not q:
                cells.append("")
                continue
            key = "consume_rate" if o["consume_rate"] is not None else (
                "confirm_rate" if o["confirm_rate"] is not None else "publish_rate")
            cells.append(f"{o[key] / q[key]:.2f}" if q[key] else "")
        if any(cells):
            lines.append(f"| {scenario} | {_size(size)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rabbit-url", default="amqp://guest:guest@127.0.0.1:5673/")
    p.add_argument("--rabbit-pid", type=int, required=True)
    p.add_argument("--port", type=int, default=5680, help="port for amqpbroker")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--producers", type=int, default=1)
    p.add_argument("--consumers", type=int, default=2)
    p.add_argument("--only", default="", help="comma list of scenarios to run")
    p.add_argument("--sizes", default="", help="comma list of message sizes to run")
    p.add_argument("--out", default="", help="also write the Markdown here")
    p.add_argument("--jsonl", default="", help="append raw loadgen JSON lines here")
    p.add_argument("--workers", default="",
                   help="comma list of process layouts, one amqpbroker each, side by side: "
                        "N = --workers N, NfF = --workers N --frontends F (e.g. 0,1,2,2f2); "
                        "default: one broker with the default layout")
    a = p.parse_args()
    cells = [c for c in MATRIX if not a.only or c[0] in a.only.split(",")]
    only_sizes = [c for c in cells if not a.sizes or str(c[1]) in a.sizes.split(",")]
    cells = only_sizes
    rows: list[tuple[str, dict]] = []
    data_dirs, ours, brokers = [], [], []
    variants = a.workers.split(",") if a.workers else [None]
    for k, w in enumerate(variants):
        data_dirs.append(tempfile.mkdtemp(prefix="amqpbroker-bench-"))
        port = a.port + k
        extra = ()
        if w is not None:                     # "2" = --workers 2; "2f2" = and --frontends 2
            workers, _, fronts = w.partition("f")
            extra = ("--workers", workers, "--frontends", fronts or "0")
        ours.append(start_ours(port, data_dirs[-1], extra))
        name = "amqpbroker" if w is None else f"amqpbroker-w{w}"
        brokers.append((name, f"amqp://guest:guest@127.0.0.1:{port}/", ours[-1].pid))
    brokers.append(("rabbitmq", a.rabbit_url, a.rabbit_pid))
    started = time.monotonic()
    try:
        for i, (scenario, size) in enumerate(cells):
            for name, url, pid in (brokers if i % 2 == 0 else brokers[::-1]):
                r = run_cell(url, pid, scenario, size, a)
                print(f"{name:10} {scenario:8} {size:6} {json.dumps(r)}", file=sys.stderr,
                      flush=True)
                rows.append((name, r))
                if a.jsonl:
                    with open(a.jsonl, "a") as f:
                        f.write(json.dumps({"broker": name, **r}) + "\n")
    finally:
        for proc in ours:
            stop(proc)
        for d in data_dirs:
            subprocess.run(["rm", "-rf", d], check=False)
    rows.sort(key=lambda br: (cells.index((br[1]["scenario"], br[1]["size"])), br[0]))
    md = (table(rows) + "\n\n" + ratios(rows) + "\n\n"
          f"matrix wall time {time.monotonic() - started:.0f} s\n")
    print(md)
    if a.out:
        with open(a.out, "w") as f:
            f.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
