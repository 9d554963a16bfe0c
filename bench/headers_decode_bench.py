"""What a publish with headers costs the front-end to read them: the full property decode
(pamqp: every property built and checked) against ``properties.headers_of`` (the headers
table alone, what routing reads), per message, on property lists real clients send.

    python bench/headers_decode_bench.py [--number 20000]

Prints a markdown table: microseconds per call, best of 5 repeats, each with the field-table
walk in C (``_fastpath.c``'s ``decode_table``, what the broker runs) and in Python (the
reference, ``fieldtable._table_at_py``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pamqp.commands import Basic                    # noqa: E402

from amqpbroker.protocol import fieldtable          # noqa: E402
from amqpbroker.protocol import properties as P     # noqa: E402

CASES = {
    # what celery 5 (task protocol 2, through kombu and py-amqp) sends for a task
    "celery task": Basic.Properties(
        content_type="application/json", content_encoding="utf-8", delivery_mode=2,
        priority=0, correlation_id="3b1f0c2e-8f0e-4a7e-9a55-0d1b7f0c2e11",
        reply_to="6c4b2d1e-0a9f-3c8b-7e6d-5f4a3b2c1d0e",
        headers={"lang": "py", "task": "proj.tasks.add",
                 "id": "3b1f0c2e-8f0e-4a7e-9a55-0d1b7f0c2e11",
                 "shadow": None, "eta": None, "expires": None, "group": None,
                 "group_index": None, "retries": 0, "timelimit": [None, None],
                 "root_id": "3b1f0c2e-8f0e-4a7e-9a55-0d1b7f0c2e11", "parent_id": None,
                 "argsrepr": "(2, 2)", "kwargsrepr": "{}", "origin": "gen1234@host",
                 "ignore_result": False, "stamped_headers": None, "stamps": {}}),
    # a stream-protocol client's raw message (stream_protocol/connection.py)
    "stream raw": Basic.Properties(headers={"x-stream-raw": True}, delivery_mode=2),
    # an application's few headers and a timestamp
    "app headers": Basic.Properties(
        content_type="application/json", delivery_mode=2, message_id="m-1",
        timestamp=datetime.datetime(2026, 12, 5, tzinfo=datetime.timezone.utc),
        headers={"tenant": "acme", "version": 3, "trace-id": "a1b2c3d4"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--number", type=int, default=20_000)
    args = ap.parse_args()
    print("| property list | bytes | full decode µs (C / Python) | headers_of µs (C / Python) "
          "| headers_of Python / C |")
    print("|---|---:|---:|---:|---:|")
    walks = {"C": (fieldtable._table_at, fieldtable._array_at),
             "Python": (fieldtable._table_at_py, fieldtable._array_at_py)}
    for name, props in CASES.items():
        raw = P.encode(props)
        times = {}
        for walk, (table_at, array_at) in walks.items():
            fieldtable._table_at, fieldtable._array_at = table_at, array_at
            assert P.headers_of(raw) == (P.decode(raw).headers or {})
            times[walk] = [min(timeit.repeat(fn, number=args.number, repeat=5)) / args.number
                           * 1e6 for fn in (lambda: P.decode(raw), lambda: P.headers_of(raw))]
        fieldtable._table_at, fieldtable._array_at = walks["C"]
        c, py = times["C"], times["Python"]
        print(f"| {name} | {len(raw)} | {c[0]:.2f} / {py[0]:.2f} | {c[1]:.2f} / {py[1]:.2f} | "
              f"{py[1] / c[1]:.1f}x |")

if __name__ == "__main__":
    main()
