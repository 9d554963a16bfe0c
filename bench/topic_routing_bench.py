"""Routing cost per publish of a topic exchange with 10,000 bindings, before and after the
trie/NFA matcher (bench/TOPIC_ROUTING.md).

    python bench/topic_routing_bench.py [--bindings 10000] [--keys 2000]

"Before" is the matcher this replaced, copied below: every binding key tried in turn by a
recursive match (lru-cached per (binding key, routing key)). "After" is
``frontend.exchange.TopicTrie``. Both exchanges also remember the result per routing key
(``TopicExchange._cache``); that is bypassed here, so every publish is a cache miss: fresh
routing keys, as a publisher with ids in its keys sends. Workloads (seeded, so every run draws
the same keys):

* exact:  10,000 binding keys of three words (``eu.billing.created``), no wildcard;
* star:   10,000 of four words, each word '*' with probability 1/2 (``*.billing.*.v2``);
* hash:   10,000 with one or two '#' among one to three words (``eu.#``, ``#.created``,
          ``#.billing.#``, ``eu.#.id42``, ``#.billing.#.id42``);
* mixed:  a third of each;

and routing keys of three to six words drawn from the same vocabulary (some match nothing).
Then the issue's pathological binding ``#.#.#.#.#.#.z`` (and 12, 20 '#'s) against 40-word
keys. CPU time (``process_time``), best of 3.

    python bench/topic_routing_bench.py --end-to-end [--tree DIR]

Through a broker instead (``BrokerProcess``, default layout): a topic exchange with the mixed
10,000 bindings spread over 100 queues, then 2,000 publishes (pika, transient, no confirms;
a passive declare on the same channel after them waits until all are routed) with distinct
routing keys; reports the broker's CPU time (supervisor and children, /proc) per publish.
``--tree`` runs the broker from another checkout (e.g. ``git archive`` of the commit before,
with the compiled ``shm/_ring*.so`` and ``amqpbroker/storage/_record*.so`` copied in);
``--url URL --broker-pid PID`` uses a running broker instead (RabbitMQ: the beam.smp pid).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from functools import lru_cache

_tree = sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv else \
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.abspath(_tree))


# ------------------------------------------------------------------- before (as it was)
@lru_cache(maxsize=4096)
def old_topic_matches(pattern: str, routing_key: str) -> bool:
    return _old_match(_old_words(pattern), _old_words(routing_key))


def _old_words(key: str) -> tuple:
    return tuple(key.split(".")) if key else ()


def _old_match(p: tuple, k: tuple) -> bool:
    if not p:
        return not k
    head = p[0]
    if head == "#":
        rest = p[1:]
        if not rest:
            return True
        return any(_old_match(rest, k[i:]) for i in range(len(k) + 1))
    if not k:
        return False
    if head == "*" or head == k[0]:
        return _old_match(p[1:], k[1:])
    return False


class OldMatcher:
    def __init__(self):
        self.patterns: dict[str, set] = {}

    def add(self, pattern, dest):
        self.patterns.setdefault(pattern, set()).add(dest)

    def match(self, routing_key):
        hit = set()
        for pattern, dests in self.patterns.items():
            if old_topic_matches(pattern, routing_key):
                hit |= dests
        return hit


# ------------------------------------------------------------------- workloads
VOCAB = [[f"{kind}{i}" for i in range(n)] for kind, n in
         (("region", 20), ("service", 25), ("event", 20), ("version", 8), ("shard", 16),
          ("id", 1000))]
ANY_WORD = [w for words in VOCAB for w in words[:30]]


def exact_keys(rng, n):
    out = set()
    while len(out) < n:
        out.add(".".join(rng.choice(VOCAB[i]) for i in range(3)))
    return out


def star_keys(rng, n):
    out = set()
    while len(out) < n:
        words = [rng.choice(VOCAB[i]) if rng.random() < 0.5 else "*" for i in range(4)]
        out.add(".".join(words))
    return out


def hash_keys(rng, n):
    out = set()
    shapes = ["{a}.#", "#.{c}", "#.{b}.#", "{a}.#.{c}", "{a}.{b}.#", "#.{b}.{c}",
              "{a}.#.{e}", "#.{b}.#.{e}"]
    while len(out) < n:
        shape = rng.choice(shapes)
        out.add(shape.format(a=rng.choice(VOCAB[0]), b=rng.choice(VOCAB[1]),
                             c=rng.choice(VOCAB[2]), e=rng.choice(VOCAB[5])))
    return out


def routing_keys(rng, n):
    keys = []
    for _ in range(n):
        words = [rng.choice(VOCAB[i]) for i in range(3 + rng.randrange(4))]
        if rng.random() < 0.1:
            words[rng.randrange(len(words))] = rng.choice(ANY_WORD)   # a word out of place
        keys.append(".".join(words))
    return keys


def workloads(n):
    rng = random.Random(9)
    third = n // 3
    return {
        "exact": exact_keys(rng, n),
        "star": star_keys(rng, n),
        "hash": hash_keys(rng, n),
        "mixed": exact_keys(rng, third) | star_keys(rng, third) | hash_keys(rng, n - 2 * third),
    }


def build(matcher_cls, patterns):
    m = matcher_cls()
    for i, p in enumerate(sorted(patterns)):
        m.add(p, f"q{i}")
    return m


def per_key_us(matcher, keys) -> float:
    best = None
    for _ in range(3):
        old_topic_matches.cache_clear()
        t0 = time.process_time()
        for k in keys:
            matcher.match(k)
        dt = time.process_time() - t0
        best = dt if best is None else min(best, dt)
    return best / len(keys) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bindings", type=int, default=10_000)
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--old-keys", type=int, default=200, help="keys for the (slow) old matcher")
    ap.add_argument("--skip-old-pathological", action="store_true")
    ap.add_argument("--end-to-end", action="store_true")
    ap.add_argument("--tree", help="with --end-to-end: the checkout the broker runs from")
    ap.add_argument("--url", help="with --end-to-end: a running broker's AMQP URL ...")
    ap.add_argument("--broker-pid", type=int, help="... and the pid whose CPU time counts")
    args = ap.parse_args()
    if args.end_to_end:
        end_to_end(args)
        return
    from amqpbroker.frontend.exchange import TopicTrie
    keys = routing_keys(random.Random(4), args.keys)
    print(f"{args.bindings} bindings; routing keys of 3-6 words, every one a cache miss\n")
    print("| workload | matched per key (avg) | before µs/publish | after µs/publish "
          "| after: trie nodes | after: steps/key |")
    print("|---|---|---|---|---|---|")
    for name, patterns in workloads(args.bindings).items():
        new = build(TopicTrie, patterns)
        old = build(OldMatcher, patterns)
        for k in keys[:50]:
            assert new.match(k) == old.match(k), (name, k)
        matched = sum(len(new.match(k)) for k in keys) / len(keys)
        new.steps = 0
        after = per_key_us(new, keys)
        steps = new.steps / (3 * len(keys))
        before = per_key_us(old, keys[:args.old_keys])
        nodes = count_nodes(new.root)
        print(f"| {name} | {matched:.1f} | {before:,.0f} | {after:,.1f} | {nodes:,} "
              f"| {steps:.1f} |")

    print("\nOne binding '#' x N + '.z'; a 40-word key ending in z (routed) and one that does "
          "not end in z (not routed: every way to split it is tried before)\n")
    print("| '#'s | before, not routed | after µs, routed | after µs, not routed "
          "| after steps, not routed |")
    print("|---|---|---|---|---|")
    routed_key = ".".join(["w"] * 39 + ["z"])
    missed_key = ".".join(["w"] * 40)
    for hashes in (6, 12, 20):
        pattern = ".".join(["#"] * hashes + ["z"])
        t = TopicTrie()
        t.add(pattern, "q")
        after = []
        for key, want in ((routed_key, {"q"}), (missed_key, set())):
            t.steps = 0
            t0 = time.process_time()
            for _ in range(100):
                assert t.match(key) == want
            after.append((time.process_time() - t0) / 100 * 1e6)
        steps = t.steps // 100
        if hashes == 6 and not args.skip_old_pathological:
            old = OldMatcher()
            old.add(pattern, "q")
            t0 = time.process_time()
            assert old.match(missed_key) == set()
            before = f"{time.process_time() - t0:.1f} s"
        else:
            before = "C(40+N, N) splits"
        print(f"| {hashes} | {before} | {after[0]:,.0f} | {after[1]:,.0f} | {steps} |")


def broker_cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])          # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def end_to_end(args) -> None:
    import shutil
    import tempfile

    import pika

    import amqpbroker
    from amqpbroker.testing import BrokerProcess
    data = broker = None
    if args.url:
        url, pids, where = args.url, [args.broker_pid], f"the broker at {args.url}"
    else:
        data = tempfile.mkdtemp(prefix="topic-bench-")
        broker = BrokerProcess(data, "--log-level", "error").start()
        url, pids = broker.url, [broker.proc.pid, *broker.worker_pids, *broker.frontend_pids]
        where = (f"amqpbroker from {os.path.dirname(amqpbroker.__file__)}, workers "
                 f"{broker.worker_pids or 'in-process'}, front-ends "
                 f"{broker.frontend_pids or 'in-process'}")
    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        ex = f"topic-bench-{os.getpid()}"
        ch.exchange_declare(ex, "topic", auto_delete=True)
        queues = [ch.queue_declare("", exclusive=True).method.queue for i in range(100)]
        t0 = time.monotonic()
        for i, pattern in enumerate(sorted(workloads(args.bindings)["mixed"])):
            ch.queue_bind(queues[i % 100], ex, pattern)
        bind_s = time.monotonic() - t0
        keys = routing_keys(random.Random(4), args.keys)
        cpu0 = broker_cpu_seconds(pids)
        t0 = time.monotonic()
        for k in keys:
            ch.basic_publish(ex, k, b"x")
        ch.queue_declare(queues[0], passive=True)
        wall = time.monotonic() - t0
        cpu = broker_cpu_seconds(pids) - cpu0
        routed = sum(ch.queue_declare(q, passive=True).method.message_count for q in queues)
        conn.close()
        print(where)
        print(f"{args.bindings} bindings made in {bind_s:.1f} s; {len(keys)} publishes "
              f"({routed} messages routed) in {wall:.2f} s; broker CPU "
              f"{cpu / len(keys) * 1e6:,.0f} µs per publish")
    finally:
        if broker is not None:
            broker.stop()
            shutil.rmtree(data, ignore_errors=True)


def count_nodes(root) -> int:
    n, todo = 0, [root]
    while todo:
        node = todo.pop()
        n += 1
        todo.extend(node.words.values())
        todo.extend(c for c in (node.star, node.hash) if c is not None)
    return n


if __name__ == "__main__":
    main()
