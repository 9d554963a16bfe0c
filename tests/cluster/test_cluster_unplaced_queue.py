"""A replicated queue the controller has not placed yet (docs/CLUSTER.md "As built (step 4)",
issue 12): its declare waits for the placement at most ``--cluster-place-timeout``, then is
answered, and until the controller places it the declaring node's copy refuses what reaches
it: a publish is nacked (nothing stored), never confirmed by that copy alone. (It was
confirmed there, unreplicated, and once the controller placed the leader on another node
the confirmed message was not in the leader's log: one CI failure of
``test_a_publish_right_after_declare_ok_goes_to_the_leader_the_controller_chose``.)

The controller is held back deterministically: before any node starts, the test stands for
controller itself (etcd's election recipe, ``cluster/controller.py``: the oldest key under
``controller/`` wins) with an etcd lease of its own, and places nothing; revoking that lease
lets the oldest node's candidacy win, which places the queue. Three real nodes in one
process each, and in the mixed layout (the declaring node n2 split into front-ends and
worker processes: its copy's role comes from the supervisor over the ring), a real etcd,
pika and the management API."""
import asyncio

import pika
import pytest

from amqpbroker.cluster.controller import CONTROLLER
from amqpbroker.cluster.etcd import EtcdClient
from amqpbroker.testing.cluster import CLUSTER_LAYOUTS, LocalCluster
from amqpbroker.testing.cluster_clients import connect, queue_on

PLACE_TIMEOUT = "1"         # seconds a declare waits for the placement (default 10)
PERSISTENT = pika.BasicProperties(delivery_mode=2)


class IdleController:
    """The test's own candidacy for controller, older than every node's: while it stands
    nothing is placed."""

    def __init__(self, etcd):
        self.etcd = etcd                    # EtcdProcess: its port is chosen at its start
        self.lease = 0

    async def _call(self, fn):
        client = EtcdClient(self.etcd.url)
        try:
            return await fn(client)
        finally:
            await client.close()

    def stand(self) -> None:
        async def stand(etcd):
            self.lease, _ = await etcd.grant(600)
            created, _ = await etcd.create(CONTROLLER + f"{self.lease:x}", "the test",
                                           self.lease)
            assert created
        asyncio.run(self._call(stand))

    def leave(self) -> None:
        if self.lease:
            asyncio.run(self._call(lambda etcd: etcd.revoke(self.lease)))
            self.lease = 0


@pytest.fixture(params=["one", "mixed"])
def unplaced_cluster(request, tmp_path):
    """A cluster whose controller is the test's ``IdleController`` until it leaves."""
    cluster = LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3,
                           args=("--cluster-place-timeout", PLACE_TIMEOUT),
                           layouts=CLUSTER_LAYOUTS[request.param])
    controller = IdleController(cluster.etcd)
    try:
        cluster.etcd.start()
        controller.stand()
        for node in cluster.nodes:
            cluster.start_node(node)
        yield cluster, controller
    finally:
        cluster.stop()


def test_an_unplaced_replicated_queue_nacks_publishes_until_the_controller_places_it(
        unplaced_cluster):
    cluster, controller = unplaced_cluster
    n1, n2, n3 = cluster.nodes
    conn = connect(n2)
    ch = conn.channel()
    ch.confirm_delivery()
    # answered after the place timeout: nothing places it
    ch.queue_declare("unplaced", durable=True, arguments={"x-queue-type": "quorum"})
    assert queue_on(n2, "unplaced").get("leader") is None
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "unplaced", b"alone", PERSISTENT)
    assert ch.basic_get("unplaced", auto_ack=True) == (None, None, None)

    controller.leave()          # the oldest node's candidacy wins, and places the queue
    cluster.wait_until(lambda: len({queue_on(n, "unplaced").get("leader")
                                    for n in cluster.nodes} - {None}) == 1
                       and all(queue_on(n, "unplaced").get("leader") for n in cluster.nodes))
    leader = queue_on(n2, "unplaced")["leader"].split("@")[1]
    ch.basic_publish("", "unplaced", b"placed", PERSISTENT)      # confirmed: no NackError
    conn.close()

    conn = connect(cluster.node(leader))
    ch = conn.channel()
    _, _, body = ch.basic_get("unplaced", auto_ack=True)
    assert body == b"placed"                # the nacked one was stored nowhere
    assert ch.basic_get("unplaced", auto_ack=True) == (None, None, None)
    conn.close()
