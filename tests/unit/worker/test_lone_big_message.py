"""A lone 64 KiB message (latency_1 at 64 KiB, one process).

Through a non-durable queue its ack costs no commit round: the write-behind rule holds a
settled record of any size, bodiless, until the queue holds more than ``WRITE_BEHIND_RECORDS``
light records (worker/store.py), as RabbitMQ writes nothing for a transient message acked
before it paged out.

Where an ack does cost a round (a durable queue: its settle is recorded at once), that round
must not leave a dispatch scheduled on an empty queue: the next publish, read before the loop
turns, would find it scheduled and wait a loop turn for it instead of going to its consumer
within the batch that brought it.

The host and its queue on disk are the real code; the front-end is a recorder of the events
the host emits.
"""
from __future__ import annotations

import asyncio

from amqpbroker import contract as c
from amqpbroker.config import Config
from amqpbroker.storage.filecache import configure
from amqpbroker.storage.record import Record
from amqpbroker.worker.host import PartitionHost

KIB64 = 65536


class FrontEnd:
    """Stands where a front-end's link stands: records the deliveries."""

    def __init__(self):
        self.delivered: list[int] = []

    def emit(self, event):
        if type(event) is c.Dlv:
            self.delivered.append(event.offset)
        elif type(event) is c.Dlvs:
            self.delivered.extend(range(event.offset, event.offset + len(event.records)))


def pub(seq: int) -> c.Pub:
    return c.Pub(qid=1, seq=seq, priority=0, track=False, flags=0,
                 record=Record(1_700_000_000_000, "", "q", b"", bytes([seq]) * KIB64, 0))


def open_queue(host: PartitionHost, tmp_path, durable: bool):
    """Queue 1 with one consumer (credit 500), and the link state of its front-end."""
    front = FrontEnd()
    state = host.attach(front)
    host.handle(state, [c.Open(req=0, qid=1, vhost="/", name="q", durable=durable,
                               auto_delete=False, arguments={},
                               directory=str(tmp_path / "q"))])
    host.handle(state, [c.Sub(req=0, qid=1, cid=1, tag="ctag", no_ack=False,
                              exclusive=False, arguments={}, credit=500)])
    return front, state


def round_owed(host: PartitionHost) -> bool:
    committer = host.committer
    return bool(committer.dirty or committer.in_flight or committer._scheduled)


async def test_a_lone_big_message_acked_on_a_non_durable_queue_costs_no_round(tmp_path):
    host = PartitionHost(Config(data_dir=str(tmp_path)), asyncio.get_running_loop())
    try:
        front, state = open_queue(host, tmp_path, durable=False)
        await asyncio.sleep(0)                  # the new consumer's dispatch (none ready)
        for seq in range(3):                    # three lone round trips
            host.handle(state, [pub(seq)])
            assert front.delivered == list(range(seq + 1))
            host.handle(state, [c.Ack(qid=1, seq=seq, offsets=[seq])])
            assert not round_owed(host)         # nothing marked: no round to come
        store = host.queues[1].store
        assert host.committer.timings.rounds == 0 and store.end_offset == 0
        assert host.cache_used == 0             # the settled bodies are not held
    finally:
        host.close()
        configure()


async def test_the_publish_after_a_lone_big_messages_round_is_delivered_in_its_batch(tmp_path):
    host = PartitionHost(Config(data_dir=str(tmp_path)), asyncio.get_running_loop())
    try:
        front, state = open_queue(host, tmp_path, durable=True)
        await asyncio.sleep(0)                  # the new consumer's dispatch (none ready)
        host.handle(state, [pub(1)])
        assert front.delivered == [0]

        async def rounds_done():
            while round_owed(host):             # the publish's round (its record, written)
                await asyncio.sleep(0.001)
        await asyncio.wait_for(rounds_done(), 10)

        at_round_end: list = []

        class Publisher:
            """Publishes the next message as the round ends, before the loop turns (a
            publish read in the same loop iteration as the round)."""

            def on_commit(self, gen):
                if not at_round_end:
                    host.handle(state, [pub(2)])
                    at_round_end.append(list(front.delivered))

        host.committer.listeners.add(Publisher())
        host.handle(state, [c.Ack(qid=1, seq=2, offsets=[0])])      # a round records it

        async def round_ended():
            while not at_round_end:
                await asyncio.sleep(0.001)
        await asyncio.wait_for(round_ended(), 10)
        assert at_round_end == [[0, 1]]         # delivered within the publish's batch
    finally:
        host.close()
        configure()
