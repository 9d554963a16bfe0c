"""Throughput of two checkouts against RabbitMQ with the shared harness, interleaved in one run.

Starts a broker from each checkout (default layout, as ``compare_checkouts.py`` does), runs
``../shared/bench/amqp_bench.py`` with RabbitMQ as the reference and both brokers after it
(runs interleave, so drift on the machine hits all three alike), writes ``OUT.json`` and
``OUT.md`` (medians and ratios), and stops both brokers. Extra arguments go to the harness::

    python bench/ratio_vs_rabbitmq.py /path/to/main . /tmp/ratio \
        --scenario publish_only,publish_confirm,pubsub_e2e,fanout_4 --size 16,1024 \
        --repeat 3 --seconds 5
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_checkouts import start, stop  # noqa: E402

RABBITMQ = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5673/")
HARNESS = os.environ.get("AMQP_BENCH", "/work/shared/bench/amqp_bench.py")
BENCH_PYTHON = os.environ.get("BENCH_PYTHON", "/tmp/bench-venv/bin/python")


def main() -> None:
    before, after, out, *extra = sys.argv[1:]
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        pb, ub = start(os.path.abspath(before), d1, [])
        try:
            pa, ua = start(os.path.abspath(after), d2, [])
            try:
                subprocess.run([BENCH_PYTHON, HARNESS, "--url", RABBITMQ, "--label", "rabbitmq",
                                "--url", ub, "--label", "before", "--url", ua, "--label", "after",
                                "--json", out + ".json", "--markdown", out + ".md", *extra],
                               check=True)
            finally:
                stop(pa)
        finally:
            stop(pb)


if __name__ == "__main__":
    main()
