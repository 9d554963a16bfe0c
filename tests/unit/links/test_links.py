"""One scenario over every link: the same partition client and host, joined in-process
(``LocalLink``), in-process through the codec, by two shared-memory rings, and over TCP.

The front-end's AMQP side is replaced by a recorder of what the client hands to channels
(deliveries, cancels, confirm watermarks); everything from ``PartitionClient`` down to the
queue's log on disk is the real code.
"""
from __future__ import annotations

import asyncio
import contextlib

import pytest

from amqpbroker import contract as c
from amqpbroker import errors
from amqpbroker.config import Config
from amqpbroker.frontend.broker import Broker
from amqpbroker.frontend.partition_client import PartitionClient
from amqpbroker.links import ring
from amqpbroker.links.local import LocalLink
from amqpbroker.links.tcp import StreamEndpoint
from amqpbroker.storage.record import Record, RecordRun
from amqpbroker.worker.host import PartitionHost

LINKS = ["local", "local-codec", "ring", "tcp"]


class Recorder:
    """Stands where a channel stands: receives deliveries and confirm watermarks."""

    def __init__(self, loop):
        self.loop = loop
        self.deliveries: list = []
        self.runs: list = []            # (offset, count) of each run (deliver_run)
        self.cancelled: list = []
        self.changed = asyncio.Event()

    def deliver(self, consumer, offset, record, redelivered):
        self.deliveries.append((offset, record, redelivered))
        self.changed.set()

    def deliver_many(self, consumer, dlvs):
        """A lot of deliveries to one consumer (``Channel.deliver_many``)."""
        for d in dlvs:
            self.deliver(consumer, d.offset, d.record, d.redelivered)

    def deliver_run(self, consumer, offset, records):
        """A run of deliveries to one consumer, at ``offset``, ``offset + 1``, ...
        (``Channel.deliver_run``)."""
        self.runs.append((offset, len(records)))
        for i, rec in enumerate(records):
            self.deliver(consumer, offset + i, rec, False)

    def consumer_cancelled(self, consumer):
        self.cancelled.append(consumer.cid)
        self.changed.set()

    def on_commit(self):
        self.changed.set()

    async def until(self, predicate, timeout=10.0):
        async def wait():
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), timeout)


class Consumer:
    def __init__(self, cid, channel):
        self.cid = cid
        self.channel = channel


@contextlib.asynccontextmanager
async def joined(kind: str, tmp_path):
    """A PartitionClient and a PartitionHost joined by link ``kind``."""
    loop = asyncio.get_running_loop()
    config = Config(data_dir=str(tmp_path))
    broker = Broker(config, loop)
    client = PartitionClient.of(broker, 0)
    broker.partitions = [client]
    host = PartitionHost(config, loop)
    closers = []
    if kind in ("local", "local-codec"):
        LocalLink(host, client, codec=kind == "local-codec")
    elif kind == "ring":
        front, worker = ring.make_link()
        state = None
        host_end = ring.attach(worker, lambda batch: host.handle(state, batch))
        state = host.attach(host_end)
        client.connect(ring.attach(front, lambda batch: [client.on_event(m) for m in batch],
                                   yield_after=c.Reply))
        closers += [client.link.close, host_end.close]
    else:
        accepted = loop.create_future()

        async def on_connection(reader, writer):
            state = None
            end = StreamEndpoint(reader, writer, lambda batch: host.handle(state, batch))
            state = host.attach(end)
            end.start()
            accepted.set_result(end)
        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        end = StreamEndpoint(reader, writer, lambda batch: [client.on_event(m) for m in batch],
                             yield_after=c.Reply)
        end.start()
        client.connect(end)
        host_end = await asyncio.wait_for(accepted, 10)
        closers += [end.close, host_end.close, server.close]
    try:
        yield client, host
    finally:
        host.close()
        for close in closers:
            close()
        await asyncio.sleep(0)      # let cancelled readers unregister their descriptors


def record(i: int, persistent: bool = True) -> Record:
    return Record(1_700_000_000_000 + i, "amq.direct", f"key.{i}", b"\x00\x00",
                  f"message {i}".encode() * (1 + i), 1 if persistent else 0)


async def open_jobs(client, tmp_path) -> Recorder:
    """Open durable queue 1, "jobs"; a recorder listening to the client's watermark."""
    channel = Recorder(asyncio.get_running_loop())
    await client.request(c.Open, qid=1, vhost="/", name="jobs", durable=True,
                         auto_delete=False, arguments={}, directory=str(tmp_path / "jobs"))
    client.listeners.add(channel)
    return channel


@pytest.mark.parametrize("kind", LINKS)
async def test_publish_confirm_consume_ack_over_each_link(kind, tmp_path):
    async with joined(kind, tmp_path) as (client, host):
        channel = await open_jobs(client, tmp_path)
        seqs = [client.publish(1, record(i), 0, True) for i in range(3)]
        await channel.until(lambda: client.done_seq >= seqs[-1])
        assert not client.nacked                       # stored and fsynced: confirmed

        consumer = Consumer(client.new_cid(), channel)
        client.consumers[consumer.cid] = consumer
        await client.request(c.Sub, qid=1, cid=consumer.cid, tag="ctag", no_ack=False,
                             exclusive=False, arguments={}, credit=10)
        await channel.until(lambda: len(channel.deliveries) == 3)
        offsets = [d[0] for d in channel.deliveries]
        assert offsets == [0, 1, 2]
        assert [d[1] for d in channel.deliveries] == [record(i) for i in range(3)]
        assert not any(d[2] for d in channel.deliveries)

        client.ack(1, offsets[:2])
        client.reject(1, offsets[2:], True)            # back to the queue, redelivered
        await channel.until(lambda: len(channel.deliveries) == 4)
        assert channel.deliveries[3][0] == 2 and channel.deliveries[3][2] is True
        stats = await client.request(c.Stats, qids=[1])
        assert stats[1][:4] == (0, 1, 1, 0)            # ready, consumers, unacked, bytes
        assert stats[1][4] > 0                         # memory (worker/memory.py)

        with pytest.raises(errors.AMQPError) as refused:    # an error reply crosses too
            await client.request(c.Get, qid=99, no_ack=True)
        assert refused.value.reply_code == 404

        assert await client.request(c.Delete, qid=1, if_unused=False, if_empty=False) == 0
        await channel.until(lambda: channel.cancelled == [consumer.cid])


@pytest.mark.parametrize("kind", ["local", "local-codec", "ring"])
async def test_a_reads_publishes_to_one_queue_reach_the_host_as_one_pubs(kind, tmp_path):
    """What a session read (``hold`` ... ``release``) for one queue crosses as one ``Pubs``,
    on the ring link too (one ring record), and the host stores each record in order."""
    async with joined(kind, tmp_path) as (client, host):
        channel = await open_jobs(client, tmp_path)
        handled = []
        handle = host.handle

        def recording(state, commands):
            handled.extend(commands)
            handle(state, commands)
        host.handle = recording
        client.hold()
        seqs = [client.publish(1, record(i), 0, True) for i in range(5)]
        client.release()
        await channel.until(lambda: client.done_seq >= seqs[-1])
        assert [type(m) for m in handled] == [c.Pubs]
        assert handled[0].seq == seqs[0] and handled[0].records == [record(i) for i in range(5)]
        assert not client.nacked
        assert [host.queues[1].store.read(i) for i in range(5)] == [record(i) for i in range(5)]


@pytest.mark.parametrize("kind", ["local", "local-codec", "ring"])
async def test_a_run_of_deliveries_to_one_consumer_crosses_as_one_dlvs(kind, tmp_path):
    """What the host dispatches to one consumer in one run (``Queue._dispatch_run``) crosses
    the link as one ``Dlvs`` (on the ring, one ring record), and the channel gets it as one
    run: offsets in order, records intact, none redelivered."""
    async with joined(kind, tmp_path) as (client, host):
        channel = await open_jobs(client, tmp_path)
        seqs = [client.publish(1, record(i), 0, True) for i in range(5)]
        await channel.until(lambda: client.done_seq >= seqs[-1])
        events: list = []
        on_event, on_events = client.on_event, client.on_events

        def one(event):
            events.append(event)
            on_event(event)

        def lot(batch):
            events.extend(batch)
            on_events(batch)
        client.on_event, client.on_events = one, lot
        consumer = Consumer(client.new_cid(), channel)
        client.consumers[consumer.cid] = consumer
        await client.request(c.Sub, qid=1, cid=consumer.cid, tag="ctag", no_ack=False,
                             exclusive=False, arguments={}, credit=10)
        await channel.until(lambda: len(channel.deliveries) == 5)
        deliveries = [e for e in events if type(e) in (c.Dlv, c.Dlvs)]
        assert [type(e) for e in deliveries] == [c.Dlvs]
        assert deliveries[0].cid == consumer.cid and deliveries[0].offset == 0
        assert deliveries[0].records == [record(i) for i in range(5)]
        # decoded by a link as the records' bytes (the channel's frames come from them in C);
        # handed over in one process as the host's list
        assert type(deliveries[0].records) is (list if kind == "local" else RecordRun)
        assert channel.runs == [(0, 5)]
        assert channel.deliveries == [(i, record(i), False) for i in range(5)]


@pytest.mark.parametrize("kind", LINKS)
async def test_a_publish_the_host_failed_to_store_is_nacked(kind, tmp_path):
    """A publish whose handling raised is never confirmed as stored: the publisher that
    asked for confirms gets a nack, and later publishes are confirmed as usual."""
    async with joined(kind, tmp_path) as (client, host):
        channel = Recorder(asyncio.get_running_loop())
        client.listeners.add(channel)
        await client.request(c.Open, qid=1, vhost="/", name="q", durable=True,
                             auto_delete=False, arguments={}, directory=str(tmp_path / "q"))
        queue = host.queues[1]
        stored = queue.publish

        def broken(record, priority, flags):       # fails once, whenever the host gets to it
            queue.publish = stored
            raise RuntimeError("injected fault")
        queue.publish = broken
        bad = client.publish(1, record(1), 0, True)
        good = client.publish(1, record(2), 0, True)
        await channel.until(lambda: client.done_seq >= good)
        assert bad in client.nacked
        assert good not in client.nacked


def test_every_message_round_trips_through_the_codec():
    """Each declared message, with a value of each of its field types, decodes to itself."""
    samples = {"u8": 7, "u32": 70000, "u64": 2**40 + 3, "bool": True, "str": "ünï!",
               "bytes": b"\x00\xff", "u64s": [1, 2**63], "grants": [(1, 500), (2, 1)],
               "record": record(3), "records": [record(4), record(5)],
               "run": [record(6), record(7)], "any": {"k": [1, "v"]}}
    for cls in c.MESSAGES.values():
        msg = cls(**{name: samples[t] for name, t in cls.FIELDS})
        data = c.encode_bytes(msg, b"\x00")
        assert c.decode(data, 1) == msg, cls.NAME
        assert type(c.decode(data, 1)) is cls


def test_a_receiver_without_a_handler_is_refused_at_start():
    class Partial:
        def on_pub(self, state, m):
            pass
    with pytest.raises(TypeError, match="no handler on_sub"):
        c.handlers(Partial(), (c.Pub, c.Sub))
