"""A partition worker's main: a ``PartitionHost`` served over the rings from the supervisor.

Started by ``workers.WorkerProcess`` as ``python -m amqpbroker.supervisor.worker SPEC``, where
SPEC is a JSON object with the broker config, the worker's index and the inherited descriptors
(ring segments, eventfds, the supervisor-alive pipe). The worker stops when the supervisor
says ``close`` (after writing and fsyncing everything), on SIGTERM, or when the alive pipe
reaches EOF (the supervisor died): in each case pending writes are flushed first.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys

from shm.ring import Ring

from ..config import Config
from ..partition.host import PartitionHost
from ..partition.ringlink import RingEndpoint

log = logging.getLogger("amqpbroker.worker")


async def serve(spec: dict) -> None:
    loop = asyncio.get_running_loop()
    cfg = spec["config"]
    cfg["loopback_users"] = tuple(cfg["loopback_users"])
    config = Config(**cfg)
    fds = spec["fds"]
    to_front = Ring.attach_fd(fds["out_ring"], data_fd=fds["out_data"],
                              space_fd=fds["out_space"])
    from_front = Ring.attach_fd(fds["in_ring"], data_fd=fds["in_data"],
                                space_fd=fds["in_space"])
    os.close(fds["out_ring"])
    os.close(fds["in_ring"])
    stop = asyncio.Event()
    host = PartitionHost(config, loop)
    state = None

    def on_batch(batch):
        if any(m[0] == "close" for m in batch):
            host.handle(state, [m for m in batch if m[0] != "close"])
            stop.set()
            return
        host.handle(state, batch)

    endpoint = RingEndpoint(to_front, from_front, on_batch)
    state = host.attach(endpoint)
    endpoint.start()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(fds["alive"], stop.set)          # EOF: the supervisor is gone
    endpoint.send(("ready",))
    await stop.wait()
    loop.remove_reader(fds["alive"])
    host.close()
    endpoint.send(("closed",))
    endpoint.flush()
    await asyncio.sleep(0)
    endpoint.close()


def main() -> int:
    spec = json.loads(sys.argv[1])
    logging.basicConfig(level=getattr(logging, spec["config"]["log_level"].upper(),
                                      logging.INFO),
                        format=f"%(asctime)s %(levelname)s worker{spec['index']} "
                               f"%(name)s: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C: the supervisor shuts us down
    from ..cli import tune_gc
    tune_gc()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
