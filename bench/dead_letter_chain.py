"""How long one message takes down a chain of queues that dead-letter at once.

    python bench/dead_letter_chain.py --url amqp://guest:guest@127.0.0.1:5672/ \
        [--queues 200] [--repeat 3]

Declares ``--queues`` classic queues, each with ``x-message-ttl`` 0 and the next as its
dead-letter routing key through the default exchange (the last one plain), publishes one
message to the first and polls the last with ``basic.get`` until it arrives; prints the
seconds per repeat and the x-death entries the message arrived with (one per queue it died
in, so the n-th hop carries n entries: the chain's cost grows with the square of its length
in any broker that writes RabbitMQ's x-death history). Deletes the queues at the end. Works
against RabbitMQ unchanged (the reference: bench/RESULTS.md, "Dead-letter chains").
interop/test_dead_letter_cycles.py runs the same chain as a test (200 queues, 5 s bound).
"""
from __future__ import annotations

import argparse
import time

import pika


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--queues", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    ch = conn.channel()
    ch.confirm_delivery()
    chain = [f"bench.chain{i}" for i in range(args.queues)]
    try:
        ch.queue_declare(chain[-1])
        for q, nxt in zip(chain, chain[1:]):
            ch.queue_declare(q, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                           "x-dead-letter-routing-key": nxt})
        for _ in range(args.repeat):
            start = time.perf_counter()
            ch.basic_publish("", chain[0], b"down the chain")
            while True:
                method, props, _ = ch.basic_get(chain[-1], auto_ack=True)
                if method is not None:
                    break
            took = time.perf_counter() - start
            print(f"{args.queues} queues: {took:.3f} s, "
                  f"{len(props.headers['x-death'])} x-death entries")
    finally:
        for q in chain:
            ch.queue_delete(q)
        conn.close()


if __name__ == "__main__":
    main()
