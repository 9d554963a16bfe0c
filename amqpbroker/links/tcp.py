"""The link to another node: the contract's messages over a TCP stream.

The same messages, encoded by the same codec (``amqpbroker/contract.py``) as on the rings,
each prefixed by its length (u32, big-endian). ``StreamEndpoint`` has the ring endpoint's
interface (``send`` / ``emit`` / ``flush`` / ``start`` / ``close``, ``on_batch`` with every
batch read), so a ``PartitionClient`` or a ``PartitionHost`` cannot tell which link joins
them: writes are gathered and written once per loop turn, reads hand over everything that
arrived in one read, a turn after each ``yield_after`` message as the ring does.
``TCP_NODELAY`` is set: a lone message goes out at once instead of waiting for Nagle.
``on_close`` (optional) is called once when the stream ends, broken or closed by either side,
so the owner can fail what waited on the other end (``cluster/forward.py``).
"""
from __future__ import annotations

import asyncio
import socket
import struct

from .. import contract
from .ring import hand_over

LENGTH = struct.Struct(">I")
MAX_MESSAGE = 256 << 20          # a longer length is a broken stream, not a message


class StreamEndpoint:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_batch,
                 *, yield_after=None, on_close=None):
        self.loop = asyncio.get_running_loop()
        self.reader = reader
        self.writer = writer
        self.on_batch = on_batch
        self.yield_after = yield_after
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._reader_task = None
        self.closed = False
        self.on_close = on_close
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def start(self) -> None:
        self._reader_task = self.loop.create_task(self._read_loop())

    # ------------------------------------------------------------ out
    def send(self, msg) -> None:
        if self.closed:
            return
        pieces = contract.encode(msg)       # a cold message's pickle is not joined again
        self._out.append(LENGTH.pack(sum(map(len, pieces))))
        self._out.extend(pieces)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    emit = send

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._out and not self.closed:
            out, self._out = self._out, []
            self.writer.writelines(out)

    # ------------------------------------------------------------ in
    async def _read_loop(self) -> None:
        buf = bytearray()
        try:
            while not self.closed:
                chunk = await self.reader.read(1 << 16)
                if not chunk:
                    break
                buf += chunk
                batch, used = [], 0
                while len(buf) - used >= LENGTH.size:
                    n = LENGTH.unpack_from(buf, used)[0]
                    if n > MAX_MESSAGE:
                        raise ConnectionError(f"link message of {n} bytes")
                    if len(buf) - used - LENGTH.size < n:
                        break
                    start = used + LENGTH.size
                    batch.append(contract.decode(bytes(buf[start:start + n])))
                    used = start + n
                del buf[:used]
                if not batch:
                    continue
                if self.yield_after is None:
                    self.on_batch(batch)
                else:
                    await hand_over(batch, self.on_batch, self.yield_after)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass                            # ValueError: bytes that are no message
        finally:
            self._closed()

    def _closed(self) -> None:
        self.closed = True
        self.writer.close()
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close(self)

    def close(self) -> None:
        """Close from this side; ``on_close`` is not called (the caller knows)."""
        self.on_close = None
        self.closed = True
        if self._reader_task is not None:
            self._reader_task.cancel()
        self.writer.close()
