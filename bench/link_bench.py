"""The cost of the partition link's wire format: encode + decode per message.

A publish crosses from front-end to worker as ``("pub", qid, seq, priority, record, track)``
and a delivery back as ``("dlv", cid, qid, offset, redelivered, record)``; both are pickled
(``amqpbroker/partition/ringlink.py``). This measures microseconds per message for each size,
beside the same tuple with the ``Record`` pickled as an object (what we avoid).

    python bench/link_bench.py
"""
from __future__ import annotations

import pickle
import timeit

from amqpbroker.links.ring import decode, encode
from amqpbroker.storage.record import Record


def per_message_us(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    print("| message | size | encode µs | decode µs | bytes "
          "| round trip, Record pickled as an object, µs |")
    print("|---|---:|---:|---:|---:|---:|")
    for size in (16, 1024, 65536):
        rec = Record(1700000000000, "amq.direct", "routing.key", b"\x80\x00\x02", b"x" * size, 1)
        for msg in (("pub", 7, 123456, 0, rec, True), ("dlv", 3, 7, 987654, False, rec)):
            data = encode(msg)
            n = 20000 if size < 65536 else 2000
            enc = per_message_us(lambda: encode(msg), n)
            dec = per_message_us(lambda: decode(data), n)
            naive = per_message_us(lambda: pickle.loads(pickle.dumps(msg, 5)), n)
            print(f"| {msg[0]} | {size} | {enc:.2f} | {dec:.2f} | {len(data)} | {naive:.2f} |")


if __name__ == "__main__":
    main()
