"""AMQP front-end processes, supervisor side.

Every front-end inherits the one listening socket and accepts on it, so the kernel spreads
connections over them; a front-end that dies takes only its own connections with it. The
supervisor then detaches its links from the workers (its consumers go away, their unacked
messages are requeued), deletes the exclusive queues its connections owned, and starts a new
front-end on the same socket.
"""
from __future__ import annotations

import dataclasses
import logging

from .. import contract as c
from .. import errors
from ..links import control, ring
from .metadata import snapshot
from .process import ChildProcess, start_all, stop_all

log = logging.getLogger("amqpbroker.supervisor")


class FrontendProcess(ChildProcess):
    kind = "front-end"
    lost_on_crash = " (its connections are lost)"

    def __init__(self, broker, index: int, listen_sock, workers, tls_sock=None):
        super().__init__(index)
        self.broker = broker
        self.watchdog_timeout = broker.config.watchdog_timeout
        self.listen_sock = listen_sock
        self.tls_sock = tls_sock            # AMQPS, when TLS is configured
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
        fds = {"listen": self.listen_sock.fileno(), "control": ctl_child.fileno(),
               "fdpass": fdp_child.fileno()}
        if self.tls_sock is not None:
            fds["tls_listen"] = self.tls_sock.fileno()
        spec = {"index": self.index, "workers": len(self.workers),
                "config": dataclasses.asdict(self.broker.config), "fds": fds}
        try:
            self.spawn("amqpbroker.frontend", spec, fds.values())
        finally:
            ctl_child.close()
            fdp_child.close()
        self.control = control.ControlChannel(ctl, fdp, c.handlers(self, c.TO_SUPERVISOR))
        await self.control.start()
        self.control.notify(c.Snapshot(ops=snapshot(self.broker)))
        for name, detail in self.broker.alarms.active.items():
            self.control.notify(c.Alarm(name=name, detail=detail))
        for w in self.workers:
            if w.client.link is not None:
                self.attach_worker(w)
        self.control.notify(c.Serve())
        await self.wait_ready()

    def attach_worker(self, worker) -> None:
        """Give this front-end a ring link to ``worker`` (at start, or after its restart)."""
        fds = worker.add_link(self.link_name)
        try:
            self.control.send_fds(fds)
        finally:
            ring.close_all(fds)
        self.control.notify(c.LinkWorker(worker=worker.index))

    def notify(self, msg) -> None:
        if self.control is not None:
            self.control.notify(msg)

    # ------------------------------------------------------------ what a front-end sends
    async def _metadata_call(self, m):
        """A channel's metadata call, applied by the owner (``LocalMetadata``)."""
        result = await getattr(self.broker.metadata, m.NAME)(**c.fields_of(m))
        # the ops went to every front-end before this reply; wait until the others have
        # applied them too, so a binding is routable everywhere once bind-ok is sent
        await self.broker.sync_frontends(skip=self)
        return result

    on_declare_exchange = on_delete_exchange = on_bind = on_unbind = _metadata_call
    on_declare_queue = on_delete_queue = _metadata_call

    async def on_dedup_seen(self, m: c.DedupSeen) -> bool:
        return await self.broker.metadata.dedup_seen(**c.fields_of(m))

    async def on_keep_recent(self, m: c.KeepRecent) -> None:
        await self.broker.metadata.keep_recent(**c.fields_of(m))

    async def on_delay_message(self, m: c.DelayMessage) -> None:
        await self.broker.metadata.delay_message(**c.fields_of(m))

    async def on_join_group(self, m: c.JoinGroup):
        await self.broker.metadata.join_group(**c.fields_of(m))

    async def on_leave_group(self, m: c.LeaveGroup) -> None:
        await self.broker.metadata.leave_group(**c.fields_of(m))

    def _count(self, m):
        """A connection or channel of this front-end opened or closed (``tally.py``)."""
        getattr(self.broker.tally, m.HANDLER)(m)

    on_open_connection = on_open_channel = on_channel_closed = on_connection_closed = _count

    async def on_delete_queue_now(self, m: c.DeleteQueueNow) -> None:
        try:
            await self.broker.metadata.delete_queue_now(**c.fields_of(m))
        except errors.AMQPError as err:
            log.warning("%s from front-end %d refused: %s", m.NAME, self.index,
                        err.reply_text)

    def on_frontend_ready(self, m: c.FrontendReady) -> None:
        self.set_ready()

    def on_leaders_wanted(self, m: c.LeadersWanted) -> None:
        """Its copy of the routes missed a change (cluster/routes.py): the whole table."""
        if self.broker.forwarder is not None:
            self.broker.forwarder.tell_whole(self)

    def on_reply_to(self, m: c.ReplyTo) -> None:
        target = self.broker.frontend_of(m.token)
        if target is not None:
            target.notify(m)

    # ------------------------------------------------------------ hooks
    def on_exit(self, code: int) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        for w in self.workers:
            w.remove_link(self.link_name)        # its consumers go; unacked are requeued
        prefix = f"{self.index}."                # its connections' exclusive queues go too
        self.broker.tally.forget_prefix(prefix)  # and their counts
        self.broker.groups.frontend_gone(prefix)     # and their consumer group members
        for vh in list(self.broker.vhosts.values()):
            for q in list(vh.queues.values()):
                if isinstance(q.exclusive_owner, str) and q.exclusive_owner.startswith(prefix):
                    vh.delete_queue(q, "exclusive owner closed")

    def ask_to_stop(self) -> None:
        """Close its connections (320 CONNECTION_FORCED) and exit."""
        self.notify(c.Shutdown())


async def start_frontends(broker, workers, listen_sock, count: int,
                          tls_sock=None) -> list[FrontendProcess]:
    frontends = [FrontendProcess(broker, i, listen_sock, workers, tls_sock)
                 for i in range(count)]
    broker.frontends = frontends

    def worker_lost(worker):
        for fe in frontends:
            fe.notify(c.HostLost(worker=worker.index))

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
