"""A partition worker's main: a ``PartitionHost`` served over rings.

Started by ``workers.WorkerProcess`` as ``python -m amqpbroker.worker SPEC``, where
SPEC is a JSON object with the broker config, the worker's index and its inherited
descriptors: the supervisor's link (rings and eventfds) and the control channel. Front-ends'
links arrive later over the control channel (``link`` / ``unlink``). The worker stops when the
supervisor says ``close`` (after writing and fsyncing everything), on SIGTERM, or when the
control channel reaches EOF (the supervisor died): pending writes are flushed in every case.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import socket

from .. import child, prefault
from .. import contract as c
from .host import PartitionHost
from ..links import ring
from ..links.control import ControlChannel
from ..supervisor.heap import HeapTrimmer

log = logging.getLogger("amqpbroker.worker")


async def serve(spec: dict) -> None:
    loop = asyncio.get_running_loop()
    host = PartitionHost(child.config_of(spec), loop)
    # its freed pages back to the system, every interval and while the node's memory alarm
    # is on (a worker frees the bodies its queues cached and delivered); no collection: it
    # holds the queues (supervisor/heap.py)
    trimmer = HeapTrimmer(loop, host.config.heap_trim_interval, collect=False)
    stop = asyncio.Event()
    endpoints: dict = {}

    def attach(name, fds, on_close=None):
        state = None

        def on_batch(batch):
            if c.Close not in map(type, batch):         # one pass in C: the usual batch
                host.handle(state, batch)
                return
            host.handle(state, [m for m in batch if type(m) is not c.Close])
            if on_close is not None:
                on_close()
        endpoint = ring.attach(fds, on_batch)
        state = host.attach(endpoint)
        endpoints[name] = (endpoint, state)
        return endpoint

    replicas = None                         # cluster/replication.WorkerReplicas

    class Control:
        """What the supervisor tells a worker (``contract.TO_WORKER``)."""

        @staticmethod
        def on_replica_describe(m: c.ReplicaDescribe):
            return replicas.on_replica_describe(m) if replicas is not None else None

        @staticmethod
        def on_alarm(m: c.Alarm):
            if m.name == "memory":
                trimmer.memory_alarm(m.detail is not None)
                prefault.hold(m.detail is not None)

        @staticmethod
        def on_link_frontend(m: c.LinkFrontend):
            attach(m.name, control.recv_fds(6))

        @staticmethod
        def on_unlink_frontend(m: c.UnlinkFrontend):
            endpoint, state = endpoints.pop(m.name, (None, None))
            if endpoint is not None:
                host.detach(state)
                endpoint.close()

    fds = spec["fds"]
    control = ControlChannel(socket.socket(fileno=fds["control"]),
                             socket.socket(fileno=fds["fdpass"]),
                             c.handlers(Control, c.TO_WORKER),
                             on_eof=stop.set)
    if host.config.cluster:                 # replication's roles of the queues here
        from ..cluster.replication import WorkerReplicas
        replicas = WorkerReplicas(host, control)
    await control.start()
    supervisor = attach("supervisor", fds["link"], on_close=stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    supervisor.send(c.WorkerReady())
    trimmer.start()
    await stop.wait()
    trimmer.stop()
    if replicas is not None:
        replicas.stop_all()
    host.close()
    supervisor.send(c.WorkerClosed())
    supervisor.flush()
    await asyncio.sleep(0)
    for endpoint, _ in endpoints.values():
        endpoint.close()
    control.close()


def main() -> int:
    return child.run("worker", serve)

