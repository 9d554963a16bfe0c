"""Publishes with a headers table through the broker, measured with the shared harness's raw
client (``../shared/bench/rawamqp.py``, which does not hide the broker): what reading a
publish's headers costs the broker end to end, on the property lists of
``headers_decode_bench.py`` (a celery task's 19 headers, an application's few).

    python bench/headers_publish_bench.py --target after=127.0.0.1:5674:<pid> \\
        --target before=127.0.0.1:5675:<pid> --props celery,app --size 16 --count 50000

Mode (``--props``): which property list every message carries. Each run declares a fresh
queue, publishes ``count`` messages to it through the default exchange with confirms
(``window`` outstanding), timed to the last confirm, then deletes the queue. Reported:
messages per second and the broker's CPU per message (its process group, from /proc), a
markdown table of medians (``plugin_bench.py``).
"""
from __future__ import annotations

import asyncio
import os
import struct
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "bench"))
sys.path.insert(0, os.path.join(HERE, ".."))
import plugin_bench                                     # noqa: E402
import rawamqp                                          # noqa: E402
from headers_decode_bench import CASES                  # noqa: E402

from amqpbroker.protocol import properties as P         # noqa: E402

PROPS = {"celery": "celery task", "app": "app headers", "stream": "stream raw"}


def publish_frames(queue: str, raw_props: bytes, size: int) -> bytes:
    method = rawamqp._frame(1, 1, struct.pack(">HH", 60, 40) + b"\x00\x00"
                            + rawamqp._shortstr("") + rawamqp._shortstr(queue) + b"\x00")
    header = rawamqp._frame(2, 1, struct.pack(">HHQ", 60, 0, size) + raw_props)
    return method + header + rawamqp._frame(3, 1, b"x" * size)


async def run_once(host: str, port: int, mode: str, size: int, count: int,
                   window: int) -> float:
    conn = await rawamqp.connect(f"amqp://guest:guest@{host}:{port}/")
    ch = await conn.channel()
    queue = f"headers-bench-{uuid.uuid4().hex[:8]}"
    await ch.queue_declare(queue)
    await ch.confirm_select()
    message = publish_frames(queue, P.encode(CASES[PROPS[mode]]), size)
    confirmed = 0
    room = asyncio.Event()
    done = asyncio.get_running_loop().create_future()

    def on_confirm(tag, multiple, ack, _now):
        nonlocal confirmed
        assert ack, "a publish was nacked"
        confirmed = tag if multiple else confirmed + 1
        room.set()
        if confirmed >= count and not done.done():
            done.set_result(None)
    ch.on_confirm = on_confirm
    start = time.perf_counter()
    sent = 0
    while sent < count:
        n = min(window - (sent - confirmed), count - sent)
        if n <= 0:
            room.clear()
            await room.wait()
            continue
        conn.write(message * n)
        sent += n
        await conn.wait_writable()
    await asyncio.wait_for(done, 120)
    rate = count / (time.perf_counter() - start)
    await ch.queue_delete(queue)
    await conn.close()
    return rate


if __name__ == "__main__":
    plugin_bench.main(__doc__, "props", "celery,app", run_once)
