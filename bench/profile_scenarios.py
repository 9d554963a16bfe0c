"""Where the broker's time goes, per scenario of ../shared/bench (py-spy, one-process layout).

Starts a broker from this checkout (``--workers 0``), runs one scenario of the shared harness
against it with py-spy recording the broker, and prints the top frames by own time and by
inclusive time (collapsed stacks, so the numbers are sample shares of the broker's samples).

    python bench/profile_scenarios.py --scenario publish_only,publish_confirm,pubsub_e2e,fanout_4 \
        [--size 16] [--seconds 5] [--top 25] [--out /tmp/prof]
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_checkouts import start, stop  # noqa: E402


def summarize(raw: str, top: int) -> str:
    own: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    with open(raw) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            n = int(n)
            frames = [fr.split(" (")[0] + " (" + fr.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                      + ")" if " (" in fr else fr for fr in stack.split(";")]
            total += n
            own[frames[-1]] += n
            for fr in set(frames):
                incl[fr] += n
    lines = [f"samples: {total}", "", "| own % | frame |", "|---:|---|"]
    lines += [f"| {100 * n / total:.1f} | `{fr}` |" for fr, n in own.most_common(top)]
    lines += ["", "| inclusive % | frame |", "|---:|---|"]
    lines += [f"| {100 * n / total:.1f} | `{fr}` |" for fr, n in incl.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="publish_only,publish_confirm,pubsub_e2e,fanout_4")
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default=tempfile.gettempdir())
    p.add_argument("--bench-python", default="/tmp/bench-venv/bin/python")
    p.add_argument("--bench", default="/work/shared/bench/amqp_bench.py")
    args = p.parse_args()
    checkout = os.path.dirname(here)
    for scenario in args.scenario.split(","):
        raw = os.path.join(args.out, f"prof_{scenario}_{args.size}.txt")
        with tempfile.TemporaryDirectory() as data:
            proc, url = start(checkout, data, ["--workers", "0"])
            spy = subprocess.Popen(["py-spy", "record", "--format", "raw", "-o", raw,
                                    "--pid", str(proc.pid), "--rate", "250", "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                subprocess.run([args.bench_python, args.bench, "--url", url, "--broker-pid",
                                str(proc.pid), "--scenario", scenario, "--size", str(args.size),
                                "--seconds", str(args.seconds)], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            finally:
                spy.send_signal(2)
                spy.wait(60)
                stop(proc)
        print(f"### {scenario} {args.size} B\n")
        print(summarize(raw, args.top))
        print()


if __name__ == "__main__":
    main()
