"""A front-end process's main: AMQP connections over a copy of the supervisor's metadata.

Started by ``frontends.FrontendProcess`` as ``python -m amqpbroker.frontend SPEC``
with the shared listening sockets (AMQP, and AMQPS when TLS is configured: each process
builds its own TLS context from the configuration) and its control channel inherited. It
owns everything about its connections (channels, consumers' credit, confirms, routing); queues live in the workers,
reached through one ring link per worker; metadata changes go to the supervisor
(``metadata_copy.RemoteMetadata``), whose ops keep this process's copy current.

Order of start: the supervisor sends the metadata snapshot and the worker links, then
``Serve``: only then does this process accept connections, and it answers ``FrontendReady``.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket

from .admission import Admission
from .auth import INTERNAL_SECRET_ENV
from .broker import Broker
from .metadata_copy import MetadataCopy, RemoteMetadata
from .partition_client import PartitionClient
from . import tls
from .listener import AMQPServer
from .session import connection_name, session_json
from .. import child
from .. import contract as c
from ..links import ring
from ..links.control import ControlChannel
from ..supervisor.heap import HeapTrimmer

log = logging.getLogger("amqpbroker.frontend")


class Frontend:
    """This process's half of the control channel: one handler per message the supervisor
    sends a front-end (``contract.TO_FRONTEND``)."""

    def __init__(self, spec: dict, loop):
        self.index = spec["index"]
        self.spec = spec
        self.broker = broker = Broker(child.config_of(spec), loop)
        # its freed pages back to the system, every interval and while the memory alarm is
        # on (a front-end holds the bodies clients send); no collection (supervisor/heap.py)
        self.trimmer = HeapTrimmer(loop, broker.config.heap_trim_interval, collect=False)
        broker.partitions = [PartitionClient.of(broker, i) for i in range(spec["workers"])]
        broker.alarms.logs = False      # a mirror of the supervisor's, which logs them once
        self.copy = MetadataCopy(broker)
        # the internal login of the supervisor's shovels (frontend/auth.py)
        broker.users.internal_secret = os.environ.get(INTERNAL_SECRET_ENV, "")
        self.server = AMQPServer(broker, self.index)
        self.listen = socket.socket(fileno=spec["fds"]["listen"])
        tls_fd = spec["fds"].get("tls_listen")          # AMQPS, when TLS is configured
        self.tls_listen = socket.socket(fileno=tls_fd) if tls_fd is not None else None
        self.stop = asyncio.Event()
        self.control = ControlChannel(socket.socket(fileno=spec["fds"]["control"]),
                                      socket.socket(fileno=spec["fds"]["fdpass"]),
                                      c.handlers(self, c.TO_FRONTEND), on_eof=self.stop.set)
        broker.metadata = RemoteMetadata(self.control)
        broker.admission = Admission(broker, self.control)     # counted by the supervisor
        broker.forward_reply = self.forward_reply

    def forward_reply(self, token: str, record) -> None:
        self.control.notify(c.ReplyTo(token=token, record=record))

    # ------------------------------------------------------------ handlers
    def on_snapshot(self, m: c.Snapshot) -> None:
        for op in m.ops:
            self.copy.apply(op)

    def on_apply_op(self, m: c.ApplyOp) -> None:
        self.copy.apply(m.op)
        if self.broker.forwarder is not None and type(m.op) is c.QueueOp:
            self.broker.forwarder.review_queue(m.op.vhost, m.op.name)

    def on_apply_ops(self, m: c.ApplyOps) -> None:
        for op in m.ops:
            self.copy.apply(op)
        if self.broker.forwarder is not None:
            for op in m.ops:
                if type(op) is c.QueueOp:
                    self.broker.forwarder.review_queue(op.vhost, op.name)

    def on_leaders(self, m: c.Leaders) -> None:
        """In a cluster: the queues other nodes lead, and where they are (forward.py)."""
        if self.broker.forwarder is None:
            from ..cluster.forward import FrontendForwarder
            FrontendForwarder(self.broker)
        self.broker.forwarder.update(m)

    def on_leaders_changed(self, m: c.LeadersChanged) -> None:
        """A change of those routes (cluster/routes.py): applied on top of the version
        before it, else the whole table is asked for."""
        forwarder = self.broker.forwarder       # a FrontendForwarder since the first Leaders
        if forwarder is None:
            self.control.notify(c.LeadersWanted(version=None))
        elif not forwarder.change(m):
            self.control.notify(c.LeadersWanted(version=forwarder.copy.version))

    def on_link_worker(self, m: c.LinkWorker) -> None:
        client = self.broker.partitions[m.worker]

        client.connect(ring.attach(self.control.recv_fds(6),
                                   functools.partial(self.broker.handle_events, client),
                                   yield_after=c.Reply, lend_runs=True))
        client.resubscribe()        # after a worker restart: consumer group shares

    def on_host_lost(self, m: c.HostLost) -> None:
        client = self.broker.partitions[m.worker]
        if client.link is not None:
            client.link.close()
        client.host_lost()

    async def on_serve(self, m: c.Serve) -> None:
        await self.server.start("", 0, sock=self.listen)   # alarms: the supervisor checks
        if self.tls_listen is not None:
            await self.server.start("", 0, sock=self.tls_listen,
                                    ssl=tls.amqps_context(self.broker.config))
        self.control.notify(c.FrontendReady(index=self.index))

    def on_shutdown(self, m: c.Shutdown) -> None:
        self.stop.set()

    def on_connections(self, m: c.Connections) -> list:
        return [session_json(s) for s in self.server.sessions]

    def on_frontend_counters(self, m: c.FrontendCounters) -> dict:
        return self.broker.stats.snapshot(self.broker, self.server.sessions)

    def on_close_connection(self, m: c.CloseConnection) -> bool:
        for s in list(self.server.sessions):
            if connection_name(s) == m.name:
                s.force_close(m.reason)
                return True
        return False

    def on_sync(self, m: c.Sync) -> None:
        """Answered after every op sent before it is applied."""

    def on_reply_to(self, m: c.ReplyTo) -> None:
        target = self.server.reply_to.get(m.token)
        if target is not None:
            channel, consumer = target
            channel.deliver_direct(consumer, m.record)

    def on_alarm(self, m: c.Alarm) -> None:
        if m.detail is None:
            self.broker.alarms.clear(m.name)
        else:
            self.broker.alarms.set(m.name, m.detail)
        if m.name == "memory":
            self.trimmer.memory_alarm(m.detail is not None)     # supervisor/heap.py


async def serve(spec: dict) -> None:
    loop = asyncio.get_running_loop()
    fe = Frontend(spec, loop)
    await fe.control.start()
    fe.trimmer.start()
    loop.add_signal_handler(signal.SIGTERM, fe.stop.set)
    await fe.stop.wait()
    log.info("front-end %d stopping", fe.index)
    fe.trimmer.stop()
    await fe.server.stop()
    if fe.broker.forwarder is not None:
        await fe.broker.forwarder.close()
    for client in fe.broker.partitions:
        if client.link is not None:
            client.link.flush()
    await asyncio.sleep(0)
    fe.control.close()


def main() -> int:
    return child.run("frontend", serve)
