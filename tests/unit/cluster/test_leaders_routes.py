"""A node's front-end processes follow the routes of its supervisor's ``Forwarder`` (which
queues it forwards, to which node), told as numbered changes (``cluster/routes.py``).

In one process: the supervisor's side (an in-process broker with the cluster's
``Forwarder``, its leaders read from a table of the test's instead of etcd) and a front-end's
side (another in-process broker, its ``FrontendForwarder`` fed by ``frontend/main.py``'s
handlers), the same queues declared on both, linked by a real control channel (a Unix
socket pair, the contract's codec). After leadership changes, some of them lost or
reordered on the way, the front-end forwards exactly the queues the supervisor forwards, to
the same nodes.
"""
from __future__ import annotations

import asyncio
import functools
import socket
import types

import pytest

from amqpbroker import contract as c
from amqpbroker.cluster.forward import queues_touched
from amqpbroker.cluster.membership import NODES
from amqpbroker.cluster.metadata import meta_key
from amqpbroker.cluster.placement import partition_key
from amqpbroker.config import Config
from amqpbroker.frontend.main import Frontend
from amqpbroker.frontend.partition_client import PartitionClient
from amqpbroker.links.control import ControlChannel, socket_pairs
from amqpbroker.links.local import LocalLink
from amqpbroker.supervisor.frontends import FrontendProcess
from amqpbroker.supervisor.owner import MetadataOwner
from amqpbroker.testing.forwarding import TableForwarder
from amqpbroker.worker.host import PartitionHost

QUEUES = [f"q{i}" for i in range(40)]


class Unreliable:
    """A control channel's sending end that can lose or hold back the next notice."""

    def __init__(self, channel: ControlChannel):
        self.channel = channel
        self.lose_next = False
        self.hold_next = False
        self.held: list = []
        self.sent: list = []

    def notify(self, msg) -> None:
        self.sent.append(msg)
        if self.lose_next:
            self.lose_next = False
        elif self.hold_next:
            self.hold_next = False
            self.held.append(msg)
        else:
            self.channel.notify(msg)

    def release(self) -> None:
        """What was held back, sent now (after what followed it)."""
        for msg in self.held:
            self.channel.notify(msg)
        self.held.clear()


async def broker_with_queues(data_dir) -> MetadataOwner:
    loop = asyncio.get_running_loop()
    config = Config(data_dir=str(data_dir))
    owner = MetadataOwner(config, loop)
    partition = PartitionClient.of(owner, 0)
    LocalLink(PartitionHost(config, loop), partition)
    owner.start([partition])
    for name in QUEUES:
        await owner.vhosts["/"].declare_queue(name, owner=None, durable=True,
                                              arguments={}).opened
    return owner


def forwarded(broker) -> dict:
    """queue name -> the node it is forwarded to, as ``broker``'s queue refs point"""
    fw = broker.forwarder
    return {q.name: client.node for client in fw.remotes.values() for q in client.refs.values()}


@pytest.fixture
async def linked(tmp_path):
    """(the leaders table, the supervisor's forwarder, its front-end's broker, the
    supervisor's unreliable sending end)"""
    listener = socket.create_server(("127.0.0.1", 0))     # the leaders' port: dialled only
    sup = await broker_with_queues(tmp_path / "sup")
    fe_broker = await broker_with_queues(tmp_path / "fe")
    (ctl, ctl_child), (fdp, fdp_child) = socket_pairs()
    receiver = types.SimpleNamespace(broker=fe_broker)
    receiver.control = ControlChannel(ctl_child, fdp_child, {
        c.Leaders: functools.partial(Frontend.on_leaders, receiver),
        c.LeadersChanged: functools.partial(Frontend.on_leaders_changed, receiver)})
    fe = types.SimpleNamespace(index=0, broker=sup)
    fe.channel = ControlChannel(ctl, fdp, {
        c.LeadersWanted: functools.partial(FrontendProcess.on_leaders_wanted, fe)})
    await fe.channel.start()
    await receiver.control.start()
    fe.control = Unreliable(fe.channel)
    sup.frontends = [fe]
    table = {name: ("n1" if i % 3 else "n2") for i, name in enumerate(QUEUES)}
    fwd = TableForwarder(sup, table, listener.getsockname()[1])
    try:
        yield table, fwd, fe_broker, fe.control
    finally:
        await fwd.close()
        if fe_broker.forwarder is not None:
            await fe_broker.forwarder.close()
        fe.channel.close()
        receiver.control.close()
        sup.frontends = []
        sup.close()
        fe_broker.close()
        listener.close()


async def agreed(fwd, fe_broker, deadline: float = 10.0) -> None:
    """Wait until the front-end forwards what the supervisor does (the channel delivers)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline
    while loop.time() < until:
        if fe_broker.forwarder is not None and forwarded(fe_broker) == forwarded(fwd.broker) \
                and fe_broker.forwarder.copy.version == fwd.routes.version:
            return
        await asyncio.sleep(0.01)
    mine = forwarded(fe_broker) if fe_broker.forwarder is not None else None
    raise AssertionError(f"front-end forwards {mine}, supervisor {forwarded(fwd.broker)}")


async def test_a_front_end_follows_every_change_then_a_lost_and_a_reordered_one(linked):
    table, fwd, fe_broker, control = linked
    fwd.review()                                    # the first pass: the whole table
    await agreed(fwd, fe_broker)
    assert type(control.sent[0]) is c.Leaders
    assert forwarded(fwd.broker) == {n: "n2" for i, n in enumerate(QUEUES) if i % 3 == 0}

    # one leader at a time, as a node loss moves them: each told as a change of one queue
    for name in QUEUES[:6]:
        table[name] = "n3" if table[name] != "n3" else "n1"
        fwd.review()
    changes = control.sent[1:]
    assert [type(m) for m in changes] == [c.LeadersChanged] * 6
    assert all(len(m.set) + len(m.removed) == 1 for m in changes)
    await agreed(fwd, fe_broker)

    # a change lost on the way: the next one does not follow, the front-end asks for the
    # whole table (LeadersWanted) and gets it
    control.lose_next = True
    table["q10"] = "n3"
    fwd.review()
    table["q11"] = "n2"
    fwd.review()
    await agreed(fwd, fe_broker)
    assert type(control.sent[-1]) is c.Leaders      # the answer to LeadersWanted

    # a change held back behind the next: the later one asks for the whole table, the old
    # one, arriving after it, is dropped
    control.hold_next = True
    table["q12"] = "n3"
    fwd.review()
    table["q13"] = "n3"
    fwd.review()
    await agreed(fwd, fe_broker)
    control.release()
    table["q14"] = "n2"
    fwd.review()
    await agreed(fwd, fe_broker)
    assert forwarded(fe_broker)["q12"] == forwarded(fe_broker)["q13"] == "n3"
    assert forwarded(fe_broker)["q14"] == "n2"

    # a queue led here again is no longer forwarded, on either side
    for name in QUEUES:
        table[name] = "n1"
    fwd.review()
    await agreed(fwd, fe_broker)
    assert forwarded(fe_broker) == {}


async def test_an_etcd_change_points_again_only_the_queues_whose_keys_it_touched(linked):
    """After the first (whole) pass, the pass after a change of etcd points again the
    queues its keys name (``queues_touched``: a partition key's queue, a queue object's),
    tells the front-end only their routes, and leaves the others as they are until a key of
    theirs comes; a node's key is a whole pass."""
    table, fwd, fe_broker, control = linked
    fwd.review()
    await agreed(fwd, fe_broker)
    table["q0"] = table["q3"] = "n3"                # both were n2's
    fwd.review(queues_touched({partition_key("/", "q0", 0), "/amqpbroker/controller"}))
    assert forwarded(fwd.broker)["q0"] == "n3" and forwarded(fwd.broker)["q3"] == "n2"
    await agreed(fwd, fe_broker)
    assert control.sent[-1].set == [["/", "q0", "n3"]] and control.sent[-1].removed == []

    fwd.review(queues_touched({NODES + "n3"}))     # a node's registration: every queue
    assert forwarded(fwd.broker)["q3"] == "n3"
    await agreed(fwd, fe_broker)

    # a forwarded queue deleted: its object's key removes its route
    vh = fwd.broker.vhosts["/"]
    frontends, fwd.broker.frontends = fwd.broker.frontends, []  # the test's one takes
    vh.delete_queue(vh.queues["q6"])                            # routes only, no ApplyOp
    fwd.broker.frontends = frontends
    fwd.review(queues_touched({meta_key("queue", "/", "q6")}))
    await agreed(fwd, fe_broker)
    assert control.sent[-1].removed == [["/", "q6"]]
    assert "q6" not in forwarded(fe_broker)


def test_the_queues_an_etcd_change_touched():
    assert queues_touched({partition_key("/", "q", 0)}) == {("/", "q"), ("/", "q-0")}
    assert queues_touched({partition_key("v/1", "t", 2)}) == {("v/1", "t-2")}   # a topic's
    assert queues_touched({meta_key("queue", "/", "a/b")}) == {("/", "a/b")}
    assert queues_touched({meta_key("binding", "/", "x", "queue", "q", "k", "0"),
                           meta_key("exchange", "/", "x"), meta_key("user", "u"),
                           "/amqpbroker/controller/1"}) == set()
    assert queues_touched(None) is None                      # a fresh list, fencing
    assert queues_touched({NODES + "n2"}) is None            # a node came, went, changed
    assert queues_touched({meta_key("vhost", "v")}) is None
