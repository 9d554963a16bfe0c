"""A front-end process's main: AMQP connections over a copy of the supervisor's metadata.

Started by ``frontends.FrontendProcess`` as ``python -m amqpbroker.frontend SPEC``
with the shared listening socket and its control channel inherited. It owns everything about
its connections (channels, consumers' credit, confirms, routing); queues live in the workers,
reached through one ring link per worker; metadata changes go to the supervisor
(``metadata.RemoteMetadata``), whose ops keep this process's copy current.

Order of start: the supervisor sends the metadata snapshot and the worker links, then
``serve``: only then does this process accept connections, and it answers ``ready``.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import socket

from .broker import Broker
from .metadata_copy import RemoteMetadata, apply_op
from .partition_client import PartitionClient
from .listener import AMQPServer
from .session import session_json
from .. import child
from ..links import ring
from ..links.control import ControlChannel

log = logging.getLogger("amqpbroker.frontend")


async def serve(spec: dict) -> None:
    loop = asyncio.get_running_loop()
    index = spec["index"]
    broker = Broker(child.config_of(spec), loop)
    broker.partitions = [PartitionClient(broker, i) for i in range(spec["workers"])]
    server = AMQPServer(broker, index)
    listen = socket.socket(fileno=spec["fds"]["listen"])
    stop = asyncio.Event()

    def on_link(worker: int) -> None:
        client = broker.partitions[worker]

        def on_batch(batch):
            for msg in batch:
                client.on_event(msg)
        client.connect(ring.attach(control.recv_fds(6), on_batch, yield_after="reply"))

    def on_host_lost(worker: int) -> None:
        client = broker.partitions[worker]
        if client.link is not None:
            client.link.close()
        client.host_lost()

    async def on_serve() -> None:
        await server.start("", 0, sock=listen)      # alarms: the supervisor checks, we obey
        control.notify("ready", index)

    def on_reply_to(token: str, record) -> None:
        target = server.reply_to.get(token)
        if target is not None:
            channel, consumer = target
            channel.deliver_direct(consumer, record)

    def on_close_connection(name: str, reason: str) -> bool:
        for s in list(server.sessions):
            if f"{s.peer[0]}:{s.peer[1]}" == name:
                s.force_close(reason)
                return True
        return False

    handlers = {
        "snapshot": lambda ops: [apply_op(broker, op) for op in ops],
        "op": lambda op: apply_op(broker, op),
        "link": on_link,
        "host_lost": on_host_lost,
        "serve": on_serve,
        "shutdown": stop.set,
        "connections": lambda: [session_json(s) for s in server.sessions],
        "close_connection": on_close_connection,
        "reply_to": on_reply_to,
        "sync": lambda: None,          # answered after every op sent before it is applied
        "alarm": lambda name, detail: (broker.alarms.clear(name) if detail is None
                                       else broker.alarms.set(name, detail)),
    }
    control = ControlChannel(socket.socket(fileno=spec["fds"]["control"]),
                             socket.socket(fileno=spec["fds"]["fdpass"]), handlers,
                             on_eof=stop.set)
    broker.metadata = RemoteMetadata(control)
    broker.forward_reply = lambda token, record: control.notify("reply_to", token, record)
    await control.start()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    log.info("front-end %d stopping", index)
    await server.stop()
    for client in broker.partitions:
        if client.link is not None:
            client.link.flush()
    await asyncio.sleep(0)
    control.close()


def main() -> int:
    return child.run("frontend", serve)

