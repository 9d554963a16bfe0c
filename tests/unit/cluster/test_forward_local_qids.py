"""A queue its node leads again goes back to this node's worker only under the qid its copy
is open with there (the metadata owner's numbering), never under one ``Forwarder.move``
invents (docs/CLUSTER.md "A queue led here goes back only to its own copy").

A front-end's worker clients number no queue of the worker's: the qid of a queue comes in
its ``QueueOp``, so ``new_qid`` of such a client names another queue there, or none (the
mixed-layout nacks fixed by ``Forwarder.local_client``). In one process: the supervisor's
broker with two workers, the cluster's ``Forwarder`` with its leaders from a table.
"""
from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from amqpbroker.config import Config
from amqpbroker.frontend.partition_client import PartitionClient
from amqpbroker.links.local import LocalLink
from amqpbroker.supervisor.owner import MetadataOwner
from amqpbroker.testing.forwarding import TableForwarder
from amqpbroker.worker.host import PartitionHost


@pytest.fixture
async def two_workers(tmp_path):
    """(the leaders table, the forwarder, the broker, queue 'q' on its worker)"""
    loop = asyncio.get_running_loop()
    config = Config(data_dir=str(tmp_path))
    owner = MetadataOwner(config, loop)
    clients = []
    for i in range(2):
        client = PartitionClient.of(owner, i)
        LocalLink(PartitionHost(config, loop), client)
        clients.append(client)
    owner.start(clients)
    q = owner.vhosts["/"].declare_queue("q", owner=None, durable=True, arguments={})
    await q.opened
    listener = socket.create_server(("127.0.0.1", 0))     # the other node: dialled only
    table = {"q": "n1"}
    fwd = TableForwarder(owner, table, listener.getsockname()[1])
    try:
        yield table, fwd, owner, q
    finally:
        await fwd.close()
        owner.close()
        listener.close()


async def test_led_here_again_a_queue_goes_back_to_its_copy_under_its_qid(two_workers):
    table, fwd, owner, q = two_workers
    home, qid = q.client, q.qid
    table["q"] = "n2"
    fwd.review()
    assert q.client.remote and fwd.local_copies[q] == (home, qid)
    table["q"] = "n1"
    fwd.review()
    assert (q.client, q.qid) == (home, qid) and q not in fwd.local_copies


async def test_a_queue_is_never_moved_to_a_worker_without_its_copy(two_workers, caplog):
    table, fwd, owner, q = two_workers
    home, qid = q.client, q.qid
    other = next(p for p in owner.partitions if p is not home)
    # directly: a worker that has no copy open would get a qid of this process's numbering
    with pytest.raises(ValueError, match="no copy open"):
        fwd.move(q, other)
    assert (q.client, q.qid) == (home, qid)
    # forwarded, its copy here forgotten (never happens: a queue is made on its worker and
    # moved away from it): led here again, it stays forwarded, not placed again by name
    table["q"] = "n2"
    fwd.review()
    remote, remote_qid = q.client, q.qid
    fwd._forget_copy(q)
    table["q"] = "n1"
    with caplog.at_level(logging.WARNING, logger="amqpbroker.cluster"):
        fwd.review()
    assert (q.client, q.qid) == (remote, remote_qid)
    assert "has no copy of it open" in caplog.text


def test_only_the_metadata_owner_places_a_queue_on_a_worker():
    """A front-end's broker has no placement (by the queue's name it put a topic's
    partition on the wrong worker); the owner places a topic's partitions round the
    workers from the topic's place."""
    from amqpbroker.frontend.broker import Broker, worker_of
    assert not hasattr(Broker, "place")

    async def placed():
        loop = asyncio.get_running_loop()
        owner = MetadataOwner(Config(data_dir="/nonexistent"), loop)
        owner.partitions = [PartitionClient.of(owner, i) for i in range(3)]
        vh = owner.vhosts.get("/") or owner.add_vhost("/")
        from amqpbroker.frontend.exchange import make_exchange
        vh.exchanges["t"] = make_exchange("x-partitioned", "t", True, False, False,
                                          {"x-partitions": 3})
        base = worker_of("/", "t", 3)
        return ([owner.place(vh, f"t-{i}").index for i in range(3)],
                [(base + i) % 3 for i in range(3)],
                owner.place(vh, "plain").index, worker_of("/", "plain", 3))
    got, want, plain, plain_want = asyncio.run(placed())
    assert got == want and plain == plain_want
