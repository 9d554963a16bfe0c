"""The control channel between the supervisor and a child process (front-end or worker).

Metadata and management traffic, not messages: the contract's control messages and metadata
calls (``amqpbroker/contract.py``), encoded by its codec and length-prefixed over a Unix stream
socket. A request carries a number (``req``) and is answered by ``Reply(req, ok, value)``; a
notice is answered by nothing. Descriptors (the rings and eventfds of a new link)
go over a second, datagram socket with ``SCM_RIGHTS``, just before the notice that names them,
so the receiver finds them waiting. EOF on the stream means the other side is gone.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct

from .. import contract as c
from .. import errors

log = logging.getLogger("amqpbroker.control")

LENGTH = struct.Struct(">I")


def socket_pairs():
    """(stream pair, fd-passing pair) for one child: the parent keeps [0], the child [1]."""
    stream = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fdpass = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return stream, fdpass


class ControlChannel:
    """One end. ``handlers[message class](msg)`` answers requests (its result is the reply's
    value; it may be a coroutine function) and handles notices; ``on_eof()`` is called when
    the peer goes away."""

    def __init__(self, stream_sock: socket.socket, fd_sock: socket.socket, handlers: dict,
                 on_eof=None):
        self.stream_sock = stream_sock
        self.fd_sock = fd_sock
        self.handlers = handlers
        self.on_eof = on_eof
        self.writer: asyncio.StreamWriter | None = None
        self._next = 0
        self.pending: dict[int, asyncio.Future] = {}
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._tasks: list = []
        self.closed = False

    async def start(self) -> None:
        reader, self.writer = await asyncio.open_unix_connection(sock=self.stream_sock)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_loop(reader)),
                       loop.create_task(self._serve_inbox())]

    # ------------------------------------------------------------ out
    def _write(self, msg) -> None:
        if self.closed or self.writer is None or self.writer.is_closing():
            return
        data = c.encode_bytes(msg)
        self.writer.write(LENGTH.pack(len(data)) + data)

    def notify(self, msg) -> None:
        """Send a notice (a message that is not a request)."""
        self._write(msg)

    def request(self, cls, **fields) -> asyncio.Future:
        """Send request ``cls(req=<next number>, **fields)``; the future gets the reply's
        value, or raises the error the other side answered."""
        fut = asyncio.get_running_loop().create_future()
        if self.closed:
            fut.set_exception(errors.InternalError("the supervisor is gone"))
            return fut
        self._next += 1
        self.pending[self._next] = fut
        self._write(cls(req=self._next, **fields))
        return fut

    def send_fds(self, fds: list[int]) -> None:
        """Descriptors for the next notice (blocking send of a tiny datagram)."""
        socket.send_fds(self.fd_sock, [b"f"], fds)

    def recv_fds(self, count: int) -> list[int]:
        _, fds, _, _ = socket.recv_fds(self.fd_sock, 1, count)
        return fds

    # ------------------------------------------------------------ in
    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        """Replies are handled as they arrive; requests and notices go to ``_serve_inbox``,
        which handles them one at a time, in order. A handler that waits (for a worker, or
        for another front-end) must not stop the replies it waits for from being read: two
        front-ends waiting on each other through the supervisor would deadlock."""
        try:
            while True:
                head = await reader.readexactly(LENGTH.size)
                msg = c.decode(await reader.readexactly(LENGTH.unpack(head)[0]))
                if type(msg) is c.Reply:
                    fut = self.pending.pop(msg.req, None)
                    if fut is not None and not fut.done():
                        if msg.ok:
                            fut.set_result(msg.value)
                        else:
                            fut.set_exception(errors.from_reply(*msg.value))
                else:
                    self._inbox.put_nowait(msg)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("control channel failed")
        self.closed = True
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(errors.InternalError("the supervisor is gone"))
        self.pending.clear()
        if self.on_eof is not None:
            self.on_eof()

    async def _serve_inbox(self) -> None:
        while True:
            msg = await self._inbox.get()
            try:
                if msg.REQUEST and msg.req:      # req 0 asks for no answer (contract)
                    await self._answer(msg)
                else:
                    result = self.handlers[type(msg)](msg)
                    if asyncio.iscoroutine(result):
                        await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("control message %s failed", msg.NAME)

    async def _answer(self, msg) -> None:
        try:
            result = self.handlers[type(msg)](msg)
            if asyncio.iscoroutine(result):
                result = await result
        except errors.AMQPError as err:
            self._write(c.Reply(req=msg.req, ok=False, value=errors.to_reply(err)))
        except Exception as exc:
            log.exception("control request %s failed", msg.NAME)
            err = errors.InternalError(f"{msg.NAME} failed: {exc}")
            self._write(c.Reply(req=msg.req, ok=False, value=errors.to_reply(err)))
        else:
            self._write(c.Reply(req=msg.req, ok=True, value=result))

    def close(self) -> None:
        self.closed = True
        for task in self._tasks:
            task.cancel()
        if self.writer is not None:
            self.writer.close()
        self.fd_sock.close()
