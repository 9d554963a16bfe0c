"""CPU to decode one field table: pamqp's own decoder against ours (protocol/fieldtable.py).

    python bench/fieldtable_bench.py [--sizes 1024,16384,131072]

Each table is made of small fields, of one array of one-byte values (void), (a one-to-six-character key and a void value, the worst
case for a decoder that copies the rest of the table per field) and of 100-byte strings (a
typical headers table). Prints seconds per decode for both; results in bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import time

from amqpbroker.protocol import fieldtable
from amqpbroker.testing.strategies import longstr, shortstr


def small_fields(size: int) -> bytes:
    out, i = [], 0
    while sum(map(len, out)) < size:
        out.append(shortstr(f"k{i}".encode()) + b"V")
        i += 1
    return longstr(b"".join(out))


def string_fields(size: int) -> bytes:
    out, i = [], 0
    while sum(map(len, out)) < size:
        out.append(shortstr(f"k{i}".encode()) + b"S" + longstr(b"x" * 100))
        i += 1
    return longstr(b"".join(out))


def void_array(size: int) -> bytes:
    return longstr(shortstr(b"a") + b"A" + longstr(b"V" * size))


def seconds(fn, data: bytes) -> float:
    runs, start = 0, time.process_time()
    while True:
        fn(data)
        runs += 1
        elapsed = time.process_time() - start
        if elapsed > 0.5:
            return elapsed / runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,16384,131072")
    args = ap.parse_args()
    original, _ = fieldtable.original_decoders()
    print(f"{'table':>24} {'pamqp s':>10} {'ours s':>10} {'ratio':>7}")
    for size in map(int, args.sizes.split(",")):
        for name, make in (("small fields", small_fields), ("100 B strings", string_fields),
                           ("array of voids", void_array)):
            data = make(size)
            theirs, ours = seconds(original, data), seconds(fieldtable.field_table, data)
            print(f"{name + ' ' + str(size):>24} {theirs:10.6f} {ours:10.6f} "
                  f"{theirs / ours:7.1f}")


if __name__ == "__main__":
    main()
