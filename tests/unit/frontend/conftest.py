"""The middle layer in one process, without sockets (``test_channel_inprocess.py``,
``test_partition_client.py``): a ``Session`` fed AMQP bytes, its channels, the partition
client, a ``LocalLink`` (plain, and through the codec) and the partition host with its queue
on disk. What goes out is decoded by pamqp, the generic codec.
"""
from __future__ import annotations

import asyncio

import pytest
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp.body import ContentBody
from pamqp.header import ContentHeader, ProtocolHeader

from amqpbroker.config import Config
from amqpbroker.frontend.listener import AMQPServer
from amqpbroker.frontend.partition_client import PartitionClient
from amqpbroker.frontend.session import Session
from amqpbroker.links.local import LocalLink
from amqpbroker.supervisor.owner import MetadataOwner
from amqpbroker.testing.feeder import frames
from amqpbroker.testing.inprocess import Transport
from amqpbroker.worker.host import PartitionHost


class Client:
    """Sends frames into the session and reads back what it answered."""

    def __init__(self, session: Session, transport: Transport):
        self.session = session
        self.transport = transport
        self.seen: list = []

    def send(self, channel: int, *frames_):
        self.session.data_received(b"".join(pframe.marshal(f, channel) for f in frames_))

    def publish(self, channel: int, routing_key: str, body: bytes):
        self.send(channel, C.Basic.Publish(exchange="", routing_key=routing_key),
                  ContentHeader(0, len(body)), ContentBody(body))

    async def expect(self, kind, count: int = 1, turns: int = 100):
        """Let the loop turn until ``count`` frames of type ``kind`` came back; return them."""
        for _ in range(turns):
            self.seen += frames(bytes(self.transport.out))
            self.transport.out.clear()
            got = [f for _, f in self.seen if isinstance(f, kind)]
            if len(got) >= count:
                self.seen = [(c, f) for c, f in self.seen if not isinstance(f, kind)]
                return got
            await asyncio.sleep(0)
        raise AssertionError(f"no {kind.__name__} after {turns} turns; saw {self.seen}")

    async def another(self, client_properties: dict | None = None) -> "Client":
        """A second connection to this client's broker, handshake done (as guest, with
        ``client_properties``)."""
        session = Session(self.session.server)
        transport = Transport()
        session.connection_made(transport)
        other = Client(session, transport)
        session.data_received(bytes(ProtocolHeader().marshal()))
        await other.expect(C.Connection.Start)
        other.send(0, C.Connection.StartOk(client_properties=client_properties or {},
                                           mechanism="PLAIN", response="\0guest\0guest",
                                           locale="en_US"))
        [tune] = await other.expect(C.Connection.Tune)
        other.send(0, C.Connection.TuneOk(channel_max=tune.channel_max,
                                          frame_max=tune.frame_max, heartbeat=0),
                   C.Connection.Open(virtual_host="/"))
        await other.expect(C.Connection.OpenOk)
        return other


@pytest.fixture(params=["plain", "codec"])
async def client(request, tmp_path):
    loop = asyncio.get_running_loop()
    config = Config(data_dir=str(tmp_path))
    owner = MetadataOwner(config, loop)
    partition = PartitionClient.of(owner, 0)
    LocalLink(PartitionHost(config, loop), partition, codec=request.param == "codec")
    owner.start([partition])
    server = AMQPServer(owner)
    session = Session(server)
    transport = Transport()
    session.connection_made(transport)
    c = Client(session, transport)
    session.data_received(bytes(ProtocolHeader().marshal()))
    await c.expect(C.Connection.Start)
    # what every client library announces: basic.cancel from the broker, confirms
    props = {"capabilities": {"consumer_cancel_notify": True, "publisher_confirms": True}}
    c.send(0, C.Connection.StartOk(client_properties=props, mechanism="PLAIN",
                                   response="\0guest\0guest", locale="en_US"))
    [tune] = await c.expect(C.Connection.Tune)
    c.send(0, C.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max,
                                  heartbeat=0), C.Connection.Open(virtual_host="/"))
    await c.expect(C.Connection.OpenOk)
    yield c
    session.connection_lost(None)
    owner.close()
