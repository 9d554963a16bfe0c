"""Deleting metadata frees it by reference counting alone (issue 9's RSS creep).

``cli.tune_gc`` sets thresholds under which cyclic garbage that reached the oldest generation
is, in practice, never collected; the supervisor's RSS crept with deleted vhosts (their
default exchange pointed back at them) and pruned topic-trie nodes (parent pointers, and a
closure that held the node itself). The same classes are every front-end's metadata copy.

A one-process broker (the metadata owner and a partition host on disk, in this process) and a
front-end's copy fed with the owner's ops go through many rounds of declare / bind / unbind /
delete of vhosts, exchanges of every type (topic with deep ``#`` / ``*`` patterns, headers,
fanout, direct, x-partitioned, x-message-deduplication), queues and bindings
(exchange-to-exchange both ways and to itself), through the metadata calls a channel makes.
The collector is off meanwhile; a collection afterwards, saving what it finds
(``DEBUG_SAVEALL``), must find no object of ours: all of it was freed when it was deleted.
"""
from __future__ import annotations

import asyncio
import gc

import pytest

from amqpbroker import contract as c
from amqpbroker.frontend.broker import Broker
from amqpbroker.frontend.exchange import TopicTrie
from amqpbroker.frontend.metadata_copy import MetadataCopy
from amqpbroker.frontend.partition_client import PartitionClient
from amqpbroker.supervisor.metadata import snapshot
from amqpbroker.testing.inprocess import InProcessBroker

ROUNDS = 12
DEEP = ["#.#.a.*.#.b", "a.#.#.*.*.#.c.#", "#", "*.#", "a.b.c.d.e.f.g.h", "#.*.#.*.#.*.z",
        "x.*.y.#", "x.*.y.#.w"]


class Relay:
    """A front-end as the owner sees it (``owner.frontends``): it takes the ops the owner
    sends and applies them to a front-end's copy, as ``frontend/main.py`` does over a link."""

    def __init__(self, copy: Broker):
        self.pid = 0
        self.control = None
        self.apply = MetadataCopy(copy).apply
        self.ops = 0

    def notify(self, message) -> None:
        if isinstance(message, c.ApplyOp):
            self.apply(message.op)
            self.ops += 1


def ours() -> list:
    """Objects in ``gc.garbage`` of classes defined in amqpbroker."""
    return [o for o in gc.garbage
            if getattr(type(o), "__module__", "").startswith("amqpbroker")]


def unreachable_after(fn) -> list:
    """Run ``fn`` with the collector off, then collect, saving every unreachable object;
    return ours among them."""
    gc.collect()
    gc.disable()
    try:
        fn()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return ours()
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.fixture
def broker(tmp_path):
    b = InProcessBroker(tmp_path)
    copy = Broker(b.config, b.loop)
    copy.partitions = [PartitionClient.of(copy, 0)]    # a copy's queues need no link
    relay = Relay(copy)
    for op in snapshot(b.owner):                        # what a starting front-end is sent
        relay.notify(c.ApplyOp(op=op))
    b.owner.frontends.append(relay)
    b.copy, b.relay = copy, relay
    yield b
    b.owner.frontends.remove(relay)
    b.close()


async def churn(b: InProcessBroker, rounds: int) -> None:
    md = b.owner.metadata

    async def exchange(vhost, name, type_, arguments=None, **kw):
        await md.declare_exchange(vhost=vhost, name=name, type=type_, passive=False,
                                  durable=kw.get("durable", False),
                                  auto_delete=kw.get("auto_delete", False), internal=False,
                                  arguments=arguments or {})

    async def queue(vhost, name, **kw):
        await md.declare_queue(vhost=vhost, name=name, owner=None, passive=False,
                               durable=kw.get("durable", False), exclusive=False,
                               auto_delete=False, arguments={})

    async def bind(vhost, kind, dest, source, key, arguments=None, unbind=False):
        call = md.unbind if unbind else md.bind
        await call(vhost=vhost, kind=kind, destination=dest, source=source, key=key,
                   arguments=arguments or {}, owner=None, cid=50, mid=20)

    for r in range(rounds):
        for vhost in (f"v{r}", "/"):
            if vhost != "/":
                b.owner.add_vhost(vhost)
            p = f"r{r}."
            await exchange(vhost, p + "topic", "topic", durable=True)
            await exchange(vhost, p + "headers", "headers")
            await exchange(vhost, p + "fanout", "fanout")
            await exchange(vhost, p + "direct", "direct")
            await exchange(vhost, p + "auto", "topic", auto_delete=True)
            await exchange(vhost, p + "dedup", "x-message-deduplication",
                           {"x-cache-size": 10})
            await exchange(vhost, p + "stream", "x-partitioned", {"x-partitions": 2})
            for i in range(3):
                await queue(vhost, f"{p}q{i}", durable=i == 0)
            for i, pattern in enumerate(DEEP):
                await bind(vhost, "queue", f"{p}q{i % 3}", p + "topic", pattern)
                await bind(vhost, "queue", f"{p}q{i % 3}", p + "auto", pattern)
            await bind(vhost, "queue", p + "q0", p + "headers", "",
                       {"x-match": "any", "a": 1, "b": "x"})
            await bind(vhost, "queue", p + "q1", p + "headers", "", {"x-match": "all", "c": 2})
            await bind(vhost, "queue", p + "q1", p + "fanout", "")
            await bind(vhost, "queue", p + "q2", p + "direct", "k")
            await bind(vhost, "queue", p + "q2", p + "dedup", "")
            # exchange-to-exchange: both ways, and one exchange to itself
            await bind(vhost, "exchange", p + "fanout", p + "topic", "#")
            await bind(vhost, "exchange", p + "topic", p + "fanout", "")
            await bind(vhost, "exchange", p + "direct", p + "direct", "self")
            await bind(vhost, "exchange", p + "headers", p + "direct", "k")
            ex = b.owner.vhosts[vhost].exchanges[p + "topic"]
            assert b.owner.vhosts[vhost].route(ex, ["a.x.b"], None)
            assert b.copy.vhosts[vhost].route(b.copy.vhosts[vhost].exchanges[p + "topic"],
                                              ["a.x.b"], None)
            # unbinding some prunes trie branches; the auto-delete topic goes with its last
            for i, pattern in enumerate(DEEP):
                if i % 2:
                    await bind(vhost, "queue", f"{p}q{i % 3}", p + "topic", pattern,
                               unbind=True)
                await bind(vhost, "queue", f"{p}q{i % 3}", p + "auto", pattern, unbind=True)
            assert p + "auto" not in b.owner.vhosts[vhost].exchanges
            if vhost == "/":
                # everything made in '/' is deleted one by one
                for name in ("direct", "fanout", "topic", "headers", "dedup", "stream"):
                    await md.delete_exchange(vhost=vhost, name=p + name, if_unused=False)
                for i in range(3):
                    await md.delete_queue(vhost=vhost, name=f"{p}q{i}", owner=None,
                                          if_unused=False, if_empty=False)
                for j in range(2):
                    await md.delete_queue(vhost=vhost, name=f"{p}stream-{j}", owner=None,
                                          if_unused=False, if_empty=False)
            else:
                # the whole vhost at once, with its bindings and queues
                b.owner.delete_vhost(vhost)
        for _ in range(50):                 # the host's replies to deletes
            await asyncio.sleep(0)
    assert set(b.copy.vhosts) == set(b.owner.vhosts) == {"/"}
    for v in (b.owner.vhosts["/"], b.copy.vhosts["/"]):
        assert set(v.queues) == set()
        assert not any(ex.bindings for ex in v.exchanges.values())


def test_deleted_metadata_is_freed_by_reference_counting(broker):
    broker.run(churn(broker, 1))              # imports, caches, the loop's first tasks
    assert broker.relay.ops > 0
    left = unreachable_after(lambda: broker.run(churn(broker, ROUNDS)))
    kinds = sorted({type(o).__qualname__ for o in left})
    assert left == [], f"{len(left)} objects of ours were cyclic garbage: {kinds}"


def test_a_pruned_topic_trie_is_freed_by_reference_counting():
    def grow_and_prune():
        for _ in range(50):
            trie = TopicTrie()
            for i, pattern in enumerate(DEEP * 3):
                trie.add(pattern + f".{i}", i % 4)
            for key in ("a.x.b", "a.b.c.d.e.f.g.h", "x.1.y.w.0", "q." * 30 + "z"):
                trie.match(key)
            for i, pattern in enumerate(DEEP * 3):
                if i % 2:
                    trie.remove(pattern + f".{i}", i % 4)
            # half is pruned branch by branch; the rest goes with the trie
    assert unreachable_after(grow_and_prune) == []
