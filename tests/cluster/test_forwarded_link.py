"""The leader's end of a cluster link (``cluster/forward.ForwardedLink``) on a real partition
host in this process, without etcd or sockets: what it answers when the calling node's view of
a queue's leader and its own differ.

- A forwarded publish for a queue the link never opened (its Open failed, or never came) is
  nacked: before, it was mapped to no queue and confirmed although nothing was stored.
- An Open for a queue this node itself forwards to another node is refused at once: before,
  the link waited 5 s for the queue to appear, holding every later command of that node
  (its ``/api/queues`` statistics with them).
"""
import asyncio
from types import SimpleNamespace

import pytest

from amqpbroker import contract as c
from amqpbroker.cluster.forward import ForwardedLink, Forwarder, RemoteClient
from amqpbroker.config import Config
from amqpbroker.storage.record import Record
from amqpbroker.worker.host import PartitionHost


class Wire:
    """Where the link's ``StreamEndpoint`` would write: what the host answers, in order."""

    def __init__(self):
        self.sent = []
        self.closed = False

    def send(self, msg) -> None:
        self.sent.append(msg)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def leader(tmp_path):
    loop = asyncio.new_event_loop()
    host = PartitionHost(Config(data_dir=str(tmp_path)), loop)
    # the node's own metadata as the forwarder reads it: vhosts of queues (none yet)
    broker = SimpleNamespace(vhosts={}, loop=loop)
    forwarder = Forwarder(SimpleNamespace(name="n1"), broker)
    link = ForwardedLink(forwarder, host)
    link.endpoint = Wire()
    link.state = host.attach(link)
    yield SimpleNamespace(host=host, forwarder=forwarder, link=link, wire=link.endpoint)
    host.close()
    loop.close()


def test_a_forwarded_publish_for_a_queue_not_open_here_is_nacked(leader):
    record = Record(1700000000000, "", "jobs", b"", b"body", 0)
    leader.link.on_batch([c.NodeHello(node="n2", worker=0),
                          c.Pub(qid=7, seq=1, priority=0, track=True, flags=0, record=record)])
    confirms = [m for m in leader.wire.sent if type(m) is c.Confirm]
    assert confirms and confirms[-1].nacked == [1]
    assert confirms[-1].seen == 1


def test_an_open_for_a_queue_this_node_forwards_elsewhere_is_refused_at_once(leader):
    broker = leader.forwarder.broker
    remote = RemoteClient(leader.forwarder, "n3")          # this node's view: n3 leads "q"
    broker.vhosts["/"] = SimpleNamespace(name="/", queues={
        "q": SimpleNamespace(name="q", deleted=False, exclusive_owner=None, client=remote)})
    leader.link.on_batch([c.Open(req=1, qid=1, vhost="/", name="q", durable=True,
                                 auto_delete=False, arguments={}, directory="unused"),
                          c.Purge(req=2, qid=1)])
    assert leader.link.held is None                 # nothing of n2's waits behind the Open
    replies = {m.req: m for m in leader.wire.sent if type(m) is c.Reply}
    assert replies[1].ok is False and "not led by node 'n1'" in str(replies[1].value)
    assert 2 in replies                             # the next command was answered too


def test_a_queue_refused_while_this_nodes_view_was_behind_is_served_once_it_caught_up(
        leader, tmp_path):
    """The caller saw this node become the queue's leader before this node did: the Open is
    refused at once (above), but once this node's view has caught up (it serves the queue
    itself) the caller's next commands on that qid reach the queue; before, they went to
    no queue ("no queue with id 0") until the caller's view changed again, which it does
    not (found by a failover in the workers + front-ends layout, tests/cluster)."""
    broker = leader.forwarder.broker
    remote = RemoteClient(leader.forwarder, "n3")          # this node's view: n3 leads "q"
    ref = SimpleNamespace(name="q", deleted=False, exclusive_owner=None, client=remote,
                          qid=4)
    broker.vhosts["/"] = SimpleNamespace(name="/", queues={"q": ref})
    leader.link.on_batch([c.Open(req=1, qid=1, vhost="/", name="q", durable=False,
                                 auto_delete=False, arguments={}, directory="unused")])
    replies = {m.req: m for m in leader.wire.sent if type(m) is c.Reply}
    assert replies[1].ok is False
    # this node's view catches up: it leads "q", its own copy (qid 4 on its host) serves it
    leader.host.handle(leader.link.state, [c.Open(
        req=0, qid=4, vhost="/", name="q", durable=False, auto_delete=False, arguments={},
        directory=str(tmp_path / "q"))])
    ref.client = SimpleNamespace()                         # a local partition client
    record = Record(1700000000000, "", "q", b"", b"body", 0)
    leader.link.on_batch([c.Pub(qid=1, seq=1, priority=0, track=True, flags=0,
                                record=record),
                          c.Get(req=2, qid=1, no_ack=True)])
    replies = {m.req: m for m in leader.wire.sent if type(m) is c.Reply}
    assert replies[2].ok is True, replies[2]
    confirms = [m for m in leader.wire.sent if type(m) is c.Confirm]
    assert confirms and confirms[-1].nacked == [] and confirms[-1].upto >= 1
