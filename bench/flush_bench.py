"""Session.flush styles: transport.write(b"".join(parts)) vs transport.writelines(parts).

    python bench/flush_bench.py SIZE join|lines [TOTAL_BYTES]

A uvloop server writes batches of basic.deliver frame lists (fastpath.build_deliver, up to 1 MiB
or 256 messages per flush, as a loop turn does) to a forked client that reads and discards;
prints the server's CPU per message. Flow control as in Session (4 MiB high-water mark).
"""
from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

import uvloop

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from amqpbroker.protocol import fastpath as fp  # noqa: E402

SIZE = int(sys.argv[1])
MODE = sys.argv[2]
TOTAL = int(sys.argv[3]) if len(sys.argv) > 3 else 600_000_000
PER_FLUSH = max(1, min(256, (1 << 20) // SIZE))
BODY = os.urandom(SIZE)


def frames() -> list:
    out: list = []
    for i in range(PER_FLUSH):
        out += fp.build_deliver(1, b"ctag-1", i + 1, False, b"", b"q", b"\x00\x00", BODY, 131072)
    return out


class Writer(asyncio.Protocol):
    def __init__(self, done):
        self.done = done
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport):
        self.t = transport
        transport.set_write_buffer_limits(high=4 << 20, low=1 << 20)
        asyncio.get_running_loop().create_task(self.run())

    def pause_writing(self):
        self.can_write.clear()

    def resume_writing(self):
        self.can_write.set()

    async def run(self):
        sent = n = 0
        c0, t0 = time.process_time(), time.perf_counter()
        while sent < TOTAL:
            await self.can_write.wait()
            out = frames()
            if MODE == "join":
                self.t.write(b"".join(out))
            else:
                self.t.writelines(out)
            sent += PER_FLUSH * SIZE
            n += PER_FLUSH
            await asyncio.sleep(0)
        while self.t.get_write_buffer_size():
            await asyncio.sleep(0.001)
        c, t = time.process_time() - c0, time.perf_counter() - t0
        print(f"size={SIZE} mode={MODE}: {c / n * 1e6:.2f} us CPU/msg, {n / t:,.0f} msg/s wall")
        self.t.close()
        self.done.set_result(None)


async def main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    srv = await loop.create_server(lambda: Writer(done), "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    pid = os.fork()
    if pid == 0:
        s = socket.create_connection(("127.0.0.1", port))
        buf = bytearray(1 << 20)
        while s.recv_into(buf):
            pass
        os._exit(0)
    await done
    os.waitpid(pid, 0)
    srv.close()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main())
