"""pika's asyncio adapter answers through callbacks; the broker's own AMQP clients (dynamic
shovels: ``shovel/runner.py``; the MQTT listener: ``mqtt/connection.py``) await them here.

Each client keeps an ``ended`` future that fails (``end``) when its connection or a channel
closes; ``answer`` waits for a method's answer or for that, whichever comes first, so a call
whose channel was closed by the broker raises instead of waiting forever.
"""
from __future__ import annotations

import asyncio


async def answer(start, ended: asyncio.Future, *also_ended: asyncio.Future):
    """Run ``start(callback)`` (a pika method given its callback): the answer it calls back
    with, or the exception of whichever of ``ended`` and ``also_ended`` (e.g. the method's
    channel closing) fails first."""
    got = asyncio.get_running_loop().create_future()
    start(lambda frame: got.done() or got.set_result(frame))
    await asyncio.wait({got, ended, *also_ended}, return_when=asyncio.FIRST_COMPLETED)
    if not got.done():
        raise next(e for e in (*also_ended, ended) if e.done()).exception()
    return got.result()


def end(ended: asyncio.Future | None, exc: Exception) -> None:
    """The client ended with ``exc`` (the first reason is kept)."""
    if ended is not None and not ended.done():
        ended.set_exception(exc)
        ended.exception()                   # retrieved: no "never retrieved" warning


def reading(connection, on: bool) -> None:
    """Stop (or resume) reading a pika connection's socket, so the broker's own flow control
    holds back what it would send (a protocol adapter whose client reads slowly). pika's
    transports have no pause: their reader is taken off (or put back on) the loop."""
    transport = getattr(connection, "_transport", None)
    sock = getattr(transport, "_sock", None)
    if sock is None or transport._nbio is None:
        return
    if on:
        transport._nbio.set_reader(sock.fileno(), transport._on_socket_readable)
    else:
        transport._nbio.remove_reader(sock.fileno())
