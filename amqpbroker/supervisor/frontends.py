"""Starting, watching and restarting AMQP front-end processes (supervisor side).

Every front-end inherits the one listening socket and accepts on it, so the kernel spreads
connections over them; a front-end that dies takes only its own connections with it. The
supervisor then detaches its links from the workers (its consumers go away, their unacked
messages are requeued), deletes the exclusive queues its connections owned, and starts a new
front-end on the same socket.
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

from .. import errors
from . import control, links
from .metadata import snapshot

log = logging.getLogger("amqpbroker.supervisor")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class FrontendProcess:
    def __init__(self, broker, index: int, listen_sock, workers):
        self.broker = broker
        self.index = index
        self.listen_sock = listen_sock
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.control: control.ControlChannel | None = None
        self.stopping = False
        self.restarts = 0
        self._pidfd = None
        self._ready = None
        self._gone = None
        self._started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        """Started and serving (it said ``ready``), and not gone since."""
        r = self._ready
        return (self.control is not None and r is not None and r.done()
                and not r.cancelled() and r.exception() is None)

    @property
    def link_name(self) -> str:
        return f"frontend{self.index}"

    # ------------------------------------------------------------ start
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        (ctl, ctl_child), (fdp, fdp_child) = control.socket_pairs()
        spec = {"index": self.index, "workers": len(self.workers),
                "config": dataclasses.asdict(self.broker.config),
                "fds": {"listen": self.listen_sock.fileno(), "control": ctl_child.fileno(),
                        "fdpass": fdp_child.fileno()}}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "amqpbroker.supervisor.frontend", json.dumps(spec)],
                pass_fds=(self.listen_sock.fileno(), ctl_child.fileno(), fdp_child.fileno()),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        finally:
            ctl_child.close()
            fdp_child.close()
        self._started_at = time.monotonic()
        self._ready = loop.create_future()
        self._gone = loop.create_future()
        self.control = control.ControlChannel(ctl, fdp, self._handlers())
        await self.control.start()
        self._pidfd = os.pidfd_open(self.proc.pid)
        loop.add_reader(self._pidfd, self._exited)
        self.control.notify("snapshot", snapshot(self.broker))
        for w in self.workers:
            if w.client.link is not None:
                self.attach_worker(w)
        self.control.notify("serve")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except asyncio.TimeoutError:
            raise RuntimeError(f"front-end {self.index} did not start") from None
        log.info("front-end %d started (pid %d)", self.index, self.proc.pid)

    def attach_worker(self, worker) -> None:
        """Give this front-end a ring link to ``worker`` (at start, or after its restart)."""
        fds = worker.add_link(self.link_name)
        try:
            self.control.send_fds(fds)
        finally:
            links.close_all(fds)
        self.control.notify("link", worker.index)

    def notify(self, op: str, *args) -> None:
        if self.control is not None:
            self.control.notify(op, *args)

    def _handlers(self) -> dict:
        md = self.broker.metadata

        async def metadata(method, args):
            result = await getattr(md, method)(*args)
            # the ops went to every front-end before this reply; wait until the others have
            # applied them too, so a binding is routable everywhere once bind-ok is sent
            others = [fe.control.request("sync") for fe in self.broker.frontends
                      if fe is not self and fe.control is not None]
            if others:
                await asyncio.gather(*others, return_exceptions=True)
            return result

        async def metadata_notice(method, args):
            try:
                await getattr(md, method)(*args)
            except errors.AMQPError as err:
                log.warning("%s from front-end %d refused: %s", method, self.index,
                            err.reply_text)

        def ready(index):
            if not self._ready.done():
                self._ready.set_result(None)

        def reply_to(token, record):
            target = self.broker.frontend_of(token)
            if target is not None:
                target.notify("reply_to", token, record)

        return {"md": metadata, "md_notice": metadata_notice, "ready": ready,
                "reply_to": reply_to}

    # ------------------------------------------------------------ exit, restart
    def _exited(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        code = self.proc.wait()
        if self.control is not None:
            self.control.close()
            self.control = None
        for w in self.workers:
            w.remove_link(self.link_name)        # its consumers go; unacked are requeued
        self._drop_exclusive_queues()
        if not self._gone.done():
            self._gone.set_result(code)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError(f"front-end {self.index} exited ({code})"))
        if self.stopping:
            return
        log.error("front-end %d (pid %d) exited with %s; its connections are lost; "
                  "restarting it", self.index, self.proc.pid, code)
        self.restarts += 1
        loop.create_task(self._restart())

    def _drop_exclusive_queues(self) -> None:
        prefix = f"{self.index}."
        for vh in list(self.broker.vhosts.values()):
            for q in list(vh.queues.values()):
                if isinstance(q.exclusive_owner, str) and q.exclusive_owner.startswith(prefix):
                    vh.delete_queue(q, "exclusive owner closed")

    async def _restart(self) -> None:
        if time.monotonic() - self._started_at < 1.0:
            await asyncio.sleep(1.0)           # crashing at start: do not spin
        while not self.stopping:
            try:
                await self.start()
                return
            except (OSError, RuntimeError) as exc:
                log.error("restarting front-end %d failed: %s", self.index, exc)
                await asyncio.sleep(1.0)

    # ------------------------------------------------------------ stop
    async def stop(self) -> None:
        """Close its connections (320 CONNECTION_FORCED) and wait for it to exit."""
        self.stopping = True
        if self.proc is None or self.proc.poll() is not None:
            return
        self.notify("shutdown")
        try:
            await asyncio.wait_for(asyncio.shield(self._gone), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            log.error("front-end %d did not stop; killing it", self.index)
            self.proc.kill()
            await self._gone


async def start_frontends(broker, workers, listen_sock, count: int) -> list[FrontendProcess]:
    frontends = [FrontendProcess(broker, i, listen_sock, workers) for i in range(count)]
    broker.frontends = frontends

    def worker_lost(worker):
        for fe in frontends:
            fe.notify("host_lost", worker.index)

    def worker_back(worker):
        for fe in frontends:
            if fe.control is not None:
                fe.attach_worker(worker)

    for w in workers:
        w.on_lost = worker_lost
        w.on_restart = worker_back
    try:
        await asyncio.gather(*(fe.start() for fe in frontends))
    except BaseException:
        await stop_frontends(frontends)
        raise
    return frontends


async def stop_frontends(frontends) -> None:
    await asyncio.gather(*(fe.stop() for fe in frontends), return_exceptions=True)
