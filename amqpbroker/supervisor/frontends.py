"""AMQP front-end processes, supervisor side.

Every front-end inherits the one listening socket and accepts on it, so the kernel spreads
connections over them; a front-end that dies takes only its own connections with it. The
supervisor then detaches its links from the workers (its consumers go away, their unacked
messages are requeued), deletes the exclusive queues its connections owned, and starts a new
front-end on the same socket.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging

from .. import errors
from ..links import control, ring
from .metadata import snapshot
from .process import ChildProcess, start_all, stop_all

log = logging.getLogger("amqpbroker.supervisor")


class FrontendProcess(ChildProcess):
    kind = "front-end"

    def __init__(self, broker, index: int, listen_sock, workers):
        super().__init__(index)
        self.broker = broker
        self.listen_sock = listen_sock
        self.workers = workers
        self.control: control.ControlChannel | None = None

    @property
    def running(self) -> bool:
        """Started and serving (it said ``ready``), and not gone since."""
        return self.control is not None and self.ready

    @property
    def link_name(self) -> str:
        return f"frontend{self.index}"

    async def start(self) -> None:
        (ctl, ctl_child), (fdp, fdp_child) = control.socket_pairs()
        spec = {"index": self.index, "workers": len(self.workers),
                "config": dataclasses.asdict(self.broker.config),
                "fds": {"listen": self.listen_sock.fileno(), "control": ctl_child.fileno(),
                        "fdpass": fdp_child.fileno()}}
        try:
            self.spawn("amqpbroker.frontend", spec,
                       (self.listen_sock.fileno(), ctl_child.fileno(), fdp_child.fileno()))
        finally:
            ctl_child.close()
            fdp_child.close()
        self.control = control.ControlChannel(ctl, fdp, self._handlers())
        await self.control.start()
        self.control.notify("snapshot", snapshot(self.broker))
        for name, detail in self.broker.alarms.active.items():
            self.control.notify("alarm", name, detail)
        for w in self.workers:
            if w.client.link is not None:
                self.attach_worker(w)
        self.control.notify("serve")
        await self.wait_ready()

    def attach_worker(self, worker) -> None:
        """Give this front-end a ring link to ``worker`` (at start, or after its restart)."""
        fds = worker.add_link(self.link_name)
        try:
            self.control.send_fds(fds)
        finally:
            ring.close_all(fds)
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
            self.set_ready()

        def reply_to(token, record):
            target = self.broker.frontend_of(token)
            if target is not None:
                target.notify("reply_to", token, record)

        return {"md": metadata, "md_notice": metadata_notice, "ready": ready,
                "reply_to": reply_to}

    # ------------------------------------------------------------ hooks
    def on_exit(self, code: int) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        for w in self.workers:
            w.remove_link(self.link_name)        # its consumers go; unacked are requeued
        prefix = f"{self.index}."                # its connections' exclusive queues go too
        for vh in list(self.broker.vhosts.values()):
            for q in list(vh.queues.values()):
                if isinstance(q.exclusive_owner, str) and q.exclusive_owner.startswith(prefix):
                    vh.delete_queue(q, "exclusive owner closed")

    def on_crash(self) -> None:
        log.error("front-end %d died: its connections are lost", self.index)

    def ask_to_stop(self) -> None:
        """Close its connections (320 CONNECTION_FORCED) and exit."""
        self.notify("shutdown")


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
    await broker.open_all()         # no front-end may publish to a queue its worker lacks
    await start_all(frontends)
    return frontends


async def stop_frontends(frontends) -> None:
    await stop_all(frontends)
