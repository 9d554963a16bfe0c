"""Starting, watching and restarting partition workers (supervisor side).

A ``WorkerProcess`` is one worker and its link: two unnamed rings, their eventfds, an
alive pipe, and a pidfd the event loop watches. When the worker exits unasked (SIGKILL, a
crash), its ``PartitionClient`` fails what waited on it — requests raise, publishes in flight
are nacked, consumers are cancelled (``basic.cancel``) — and a new worker is started at once;
its queues recover from disk as at a broker start, and consumers on other workers never notice.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time

from . import control, links

log = logging.getLogger("amqpbroker.supervisor")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class WorkerProcess:
    def __init__(self, config, index: int, client, workers: int):
        self.config = config
        self.index = index
        self.client = client
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.endpoint: RingEndpoint | None = None
        self.stopping = False
        self.restarts = 0
        self._pidfd = None
        self.control: control.ControlChannel | None = None
        self.on_restart = None               # called once a restarted worker has its queues
        self.on_lost = None                  # called when the worker died unasked
        self._ready: asyncio.Future | None = None
        self._started_at = 0.0
        self._gone: asyncio.Future | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # ------------------------------------------------------------ start
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        mine, theirs = links.make_link()
        (ctl, ctl_child), (fdp, fdp_child) = control.socket_pairs()
        cfg = dataclasses.asdict(self.config)
        cfg["cache_limit"] = self.config.cache_limit // self.workers
        spec = {"index": self.index, "config": cfg,
                "fds": {"link": theirs, "control": ctl_child.fileno(),
                        "fdpass": fdp_child.fileno()}}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "amqpbroker.supervisor.worker", json.dumps(spec)],
                pass_fds=(*theirs, ctl_child.fileno(), fdp_child.fileno()),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except BaseException:
            links.close_all(mine)
            ctl.close()
            fdp.close()
            raise
        finally:
            links.close_all(theirs)
            ctl_child.close()
            fdp_child.close()
        self._started_at = time.monotonic()
        self._ready = loop.create_future()
        self._gone = loop.create_future()
        self.control = control.ControlChannel(ctl, fdp, {})
        await self.control.start()
        self.endpoint = links.attach(mine, self._on_batch, yield_after="reply")
        self._pidfd = os.pidfd_open(self.proc.pid)
        loop.add_reader(self._pidfd, self._exited)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except asyncio.TimeoutError:
            raise RuntimeError(f"worker {self.index} did not start") from None
        self.client.connect(self.endpoint)
        log.info("worker %d started (pid %d)", self.index, self.proc.pid)

    def add_link(self, name: str) -> list[int]:
        """A link for a front-end: the worker gets its side now; the caller sends the other
        side (the returned fds) to the front-end and closes them."""
        front, worker = links.make_link()
        try:
            self.control.send_fds(worker)
        finally:
            links.close_all(worker)
        self.control.notify("link", name)
        return front

    def remove_link(self, name: str) -> None:
        if self.control is not None and not self.control.closed:
            self.control.notify("unlink", name)

    def _on_batch(self, batch) -> None:
        for msg in batch:
            kind = msg[0]
            if kind == "ready":
                if not self._ready.done():
                    self._ready.set_result(None)
            elif kind != "closed":
                self.client.on_event(msg)

    # ------------------------------------------------------------ exit, restart
    def _exited(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        code = self.proc.wait()
        self._release()
        if not self._gone.done():
            self._gone.set_result(code)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError(f"worker {self.index} exited ({code})"))
        if self.stopping:
            return
        log.error("worker %d (pid %d) exited with %s; restarting it", self.index,
                  self.proc.pid, code)
        self.client.host_lost()
        if self.on_lost is not None:
            self.on_lost(self)
        self.restarts += 1
        loop.create_task(self._restart())

    async def _restart(self) -> None:
        if time.monotonic() - self._started_at < 1.0:
            await asyncio.sleep(1.0)           # crashing at start: do not spin
        while not self.stopping:
            try:
                await self.start()
            except (OSError, RuntimeError) as exc:
                log.error("restarting worker %d failed: %s", self.index, exc)
                await asyncio.sleep(1.0)
                continue
            self.client.reopen()
            await asyncio.gather(*(ref.opened for ref in list(self.client.refs.values())),
                                 return_exceptions=True)
            if self.on_restart is not None:
                self.on_restart(self)
            return

    def _release(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        if self.control is not None:
            self.control.close()
            self.control = None

    # ------------------------------------------------------------ stop
    async def stop(self) -> None:
        """Ask the worker to write, fsync and close everything, and wait for it to exit."""
        self.stopping = True
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.endpoint is not None:
            self.endpoint.send(("close",))
            self.endpoint.flush()
        try:
            await asyncio.wait_for(asyncio.shield(self._gone), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            log.error("worker %d did not stop; killing it", self.index)
            self.proc.kill()
            await self._gone


async def start_workers(broker, count: int) -> list[WorkerProcess]:
    """Start ``count`` workers and give the broker their partition clients."""
    from ..partition.client import PartitionClient
    workers = [WorkerProcess(broker.config, i, PartitionClient(broker, i), count)
               for i in range(count)]
    try:
        await asyncio.gather(*(w.start() for w in workers))
    except BaseException:
        await stop_workers(workers)
        raise
    return workers


async def stop_workers(workers) -> None:
    await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
