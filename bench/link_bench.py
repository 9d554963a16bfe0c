"""The cost of the partition link's wire format: encode + decode per message.

A publish crosses from front-end to worker as ``contract.Pub`` and a delivery back as
``contract.Dlv``, encoded by the contract's codec (a fixed header, then the record in the
log's layout; ``amqpbroker/contract.py``). Beside it, the format the rings used before: the
message as a tuple with the ``Record`` turned into a tuple, pickled (protocol 5).

    python bench/link_bench.py
"""
from __future__ import annotations

import pickle
import timeit

from amqpbroker import contract
from amqpbroker.storage.record import Record


def per_message_us(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def pickled_tuple(msg) -> bytes:
    """The old wire format: ("pub", qid, seq, priority, record-as-tuple, track)."""
    r = msg.record
    fields = [v for v in msg if v is not r]
    return pickle.dumps((msg.NAME, *fields, (r.timestamp, r.exchange, r.routing_key,
                                             r.properties, r.body, r.flags)), 5)


def unpickle_tuple(data):
    t = pickle.loads(data)
    return (*t[:-1], Record(*t[-1]))


def main() -> None:
    print("| message | size | encode µs | decode µs | bytes | pickled tuple: encode µs "
          "| decode µs | bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in (16, 1024, 65536):
        rec = Record(1700000000000, "amq.direct", "routing.key", b"\x80\x00\x02", b"x" * size, 1)
        for msg in (contract.Pub(qid=7, seq=123456, priority=0, track=True, record=rec),
                    contract.Dlv(cid=3, qid=7, offset=987654, redelivered=False, record=rec)):
            data = contract.encode_bytes(msg)
            assert contract.decode(data) == msg
            old = pickled_tuple(msg)
            n = 20000 if size < 65536 else 2000
            enc = per_message_us(lambda: contract.encode_bytes(msg), n)
            dec = per_message_us(lambda: contract.decode(data), n)
            old_enc = per_message_us(lambda: pickled_tuple(msg), n)
            old_dec = per_message_us(lambda: unpickle_tuple(old), n)
            print(f"| {msg.NAME} | {size} | {enc:.2f} | {dec:.2f} | {len(data)} "
                  f"| {old_enc:.2f} | {old_dec:.2f} | {len(old)} |")


if __name__ == "__main__":
    main()
