"""The stream protocol in a cluster (``--stream-port`` on every node;
amqpbroker/stream_protocol): each node serves every stream (Metadata names the node the
client is on; the cluster forwards to the stream's leader), so rstream clients on different
nodes meet: a replicated stream created through one node is published to through another
and read through a third, and an offset stored through one node is what another answers.
Three real nodes, a real etcd, rstream."""
import asyncio

from rstream import Consumer, ConsumerOffsetSpecification, OffsetType, Producer

from amqpbroker.testing.cluster import LocalCluster

TIMEOUT = 30


def test_stream_clients_on_different_nodes_meet(tmp_path):
    with LocalCluster(3, str(tmp_path / "cluster"), lease_ttl=3, together=True,
                      args=("--stream-port", "-1")) as cluster:
        asyncio.run(_meet(*cluster.nodes))


async def _meet(n1, n2, n3):
    kw = dict(username="guest", password="guest")
    async with Producer(n1.host, n1.stream_port, **kw) as p:
        await p.create_stream("cl-events", arguments={"initial-cluster-size": "3"})
    async with Producer(n2.host, n2.stream_port, **kw) as p:
        for i in range(20):
            await p.send_wait("cl-events", f"e{i}".encode(), publisher_name="app")
        client = await p.default_client
        assert await client.query_publisher_sequence("cl-events", "app") == 20
    got: list = []
    done = asyncio.get_running_loop().create_future()

    def on_message(msg, ctx):
        got.append((ctx.offset, msg))
        if len(got) == 20 and not done.done():
            done.set_result(None)
    async with Consumer(n3.host, n3.stream_port, **kw) as c:
        await c.subscribe("cl-events", on_message, offset_specification=(
            ConsumerOffsetSpecification(OffsetType.FIRST, None)))
        await asyncio.wait_for(done, TIMEOUT)
        await c.store_offset("cl-events", "reader", 9)
        assert await c.query_offset("cl-events", "reader") == 9
    assert got == [(i, f"e{i}".encode()) for i in range(20)]
    async with Consumer(n1.host, n1.stream_port, **kw) as c:
        await c.start()
        assert await c.query_offset("cl-events", "reader") == 9
    queue = {q["name"]: q for q in n1.api("queues")}["cl-events"]
    assert queue["type"] == "stream" and len(queue["members"]) == 3
