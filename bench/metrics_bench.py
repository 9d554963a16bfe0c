"""How long the management API and the Prometheus endpoints take with many queues.

Starts a broker (``amqpbroker.testing.BrokerProcess``, management and Prometheus on free
ports), declares ``--queues`` queues with one message each through pika, then times each
endpoint ``--repeat`` times (after one warm-up request) and prints the median and the worst
in ms, with the size of the answer::

    python bench/metrics_bench.py --queues 10000
    python bench/metrics_bench.py --queues 10000 --broker-args "--workers 2 --frontends 2"

The targets (issue 11): ``/api/queues?page=1`` under 200 ms, ``/metrics`` under a second.
"""
from __future__ import annotations

import argparse
import base64
import shlex
import statistics
import sys
import tempfile
import time
import urllib.request

import pika

sys.path.insert(0, ".")
from amqpbroker.testing import BrokerProcess  # noqa: E402

AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}


def timed_get(url: str, headers: dict) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=120) as r:
        body = r.read()
    return time.perf_counter() - start, len(body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--queues", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--broker-args", default="", help="extra flags for amqpbroker serve")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as data, \
            BrokerProcess(data, *shlex.split(args.broker_args), management=True,
                          prometheus=True, startup_timeout=120) as b:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        start = time.perf_counter()
        for i in range(args.queues):
            ch.queue_declare(f"mq-{i}")
            ch.basic_publish("", f"mq-{i}", b"x" * 16)
        conn.process_data_events(0)
        print(f"declared {args.queues} queues with a message each in "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
        mgmt = f"http://127.0.0.1:{b.management_port}"
        prom = f"http://127.0.0.1:{b.prometheus_port}"
        endpoints = [("/api/queues?page=1", mgmt + "/api/queues?page=1", AUTH),
                     ("/api/queues (all)", mgmt + "/api/queues", AUTH),
                     ("/api/overview", mgmt + "/api/overview", AUTH),
                     ("/metrics", prom + "/metrics", {}),
                     ("/metrics/per-object", prom + "/metrics/per-object", {}),
                     ("/metrics/detailed?family=queue_coarse_metrics",
                      prom + "/metrics/detailed?family=queue_coarse_metrics", {})]
        print(f"| endpoint ({args.queues} queues{', ' + args.broker_args if args.broker_args else ''})"
              f" | median ms | worst ms | bytes |")
        print("|---|---|---|---|")
        for label, url, headers in endpoints:
            timed_get(url, headers)                 # warm-up
            runs = [timed_get(url, headers) for _ in range(args.repeat)]
            times = [t for t, _ in runs]
            print(f"| `{label}` | {statistics.median(times) * 1000:.0f} | "
                  f"{max(times) * 1000:.0f} | {runs[-1][1]:,} |", flush=True)
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
