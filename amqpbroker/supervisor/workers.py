"""Partition worker processes, supervisor side.

A ``WorkerProcess`` is one worker: the supervisor's link to it (two unnamed rings and their
eventfds), its control channel (new links for front-ends), and the pidfd that ``process``
watches. When the worker exits unasked (SIGKILL, a crash), its ``PartitionClient`` fails what
waited on it — requests raise, publishes in flight are nacked, consumers are cancelled
(``basic.cancel``) — and a new worker is started at once; its queues recover from disk as at a
broker start, and consumers on other workers never notice.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools

from .. import contract as c
from ..links import control, ring
from . import dirlock
from .process import ChildProcess, start_all, stop_all

_NOTICES = {c.WorkerReady, c.WorkerClosed}      # on a worker's link to the supervisor only


class WorkerProcess(ChildProcess):
    kind = "worker"

    def __init__(self, config, index: int, client, workers: int, groups=None, alarms=None):
        super().__init__(index)
        self.config = config
        self.watchdog_timeout = config.watchdog_timeout
        self.client = client
        self.on_events = client.on_events    # the host's events (``start_workers``)
        self.groups = groups                 # the supervisor's consumer groups
        self.workers = workers
        self.endpoint = None
        self.control: control.ControlChannel | None = None
        self.on_restart = None               # called once a restarted worker has its queues
        self.on_lost = None                  # called when the worker died unasked
        self.lost_listeners: list = []       # more of them (the cluster's relayed links)
        self.back_listeners: list = []       # called once a restarted worker has its queues
        #                                      (the cluster's forwarded queues' local copies)
        self.handlers: dict = {}             # what the worker sends on its control channel
        self.alarms = alarms                 # the node's (frontend/alarms.py): told at start

    async def start(self) -> None:
        mine, theirs = ring.make_link()
        (ctl, ctl_child), (fdp, fdp_child) = control.socket_pairs()
        cfg = dataclasses.asdict(self.config)
        cfg["cache_limit"] = self.config.cache_limit // self.workers
        cfg["transient_memory_limit"] = self.config.transient_limit() // self.workers
        spec = {"index": self.index, "config": cfg,
                "fds": {"link": theirs, "control": ctl_child.fileno(),
                        "fdpass": fdp_child.fileno()}}
        # the data directory's lock too: held while this worker lives (dirlock.py)
        lock = dirlock.held()
        try:
            self.spawn("amqpbroker.worker", spec,
                       (*theirs, ctl_child.fileno(), fdp_child.fileno(),
                        *(() if lock is None else (lock,))))
        except BaseException:
            ring.close_all(mine)
            ctl.close()
            fdp.close()
            raise
        finally:
            ring.close_all(theirs)
            ctl_child.close()
            fdp_child.close()
        self.control = control.ControlChannel(ctl, fdp, self.handlers)   # IsrChange only
        await self.control.start()
        for name, detail in (self.alarms.active.items() if self.alarms is not None else ()):
            self.control.notify(c.Alarm(name=name, detail=detail))     # its heap trimmer
        # a Dlvs is framed where it lies in the ring (its handler keeps no event)
        self.endpoint = ring.attach(mine, self._on_batch, yield_after=c.Reply, lend_runs=True)
        await self.wait_ready()
        self.client.connect(self.endpoint)

    def _on_batch(self, batch) -> None:
        if not _NOTICES.intersection(map(type, batch)):     # the worker's own: rare
            self.on_events(batch)
            return
        for msg in batch:
            kind = type(msg)
            if kind is c.WorkerReady:
                self.set_ready()
            elif kind is not c.WorkerClosed:
                self.client.on_event(msg)

    def add_link(self, name: str) -> list[int]:
        """A link for a front-end: the worker gets its side now; the caller sends the other
        side (the returned fds) to the front-end and closes them."""
        front, worker = ring.make_link()
        try:
            self.control.send_fds(worker)
        finally:
            ring.close_all(worker)
        self.control.notify(c.LinkFrontend(name=name))
        return front

    def remove_link(self, name: str) -> None:
        if self.control is not None and not self.control.closed:
            self.control.notify(c.UnlinkFrontend(name=name))

    # ------------------------------------------------------------ hooks
    def on_exit(self, code: int) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        if self.control is not None:
            self.control.close()
            self.control = None

    def on_crash(self) -> None:
        self.client.host_lost()
        if self.on_lost is not None:
            self.on_lost(self)
        for listener in self.lost_listeners:
            listener(self)

    async def after_restart(self) -> None:
        self.client.reopen()
        await asyncio.gather(*(ref.opened for ref in list(self.client.refs.values())),
                             return_exceptions=True)
        for listener in self.back_listeners:
            listener(self)
        if self.on_restart is not None:
            self.on_restart(self)
        if self.groups is not None:         # consumer groups' assignments on it
            self.groups.worker_back(self.client)

    def ask_to_stop(self) -> None:
        """The worker writes, fsyncs and closes everything, then exits."""
        if self.endpoint is not None:
            self.endpoint.send(c.Close())
            self.endpoint.flush()


async def start_workers(broker, count: int) -> list[WorkerProcess]:
    """Start ``count`` workers and give the broker their partition clients."""
    from ..frontend.partition_client import PartitionClient
    workers = [WorkerProcess(broker.config, i, PartitionClient.of(broker, i), count,
                             getattr(broker, "groups", None), broker.alarms)
               for i in range(count)]
    for worker in workers:      # deliveries written in the wake-up that brought them
        worker.on_events = functools.partial(broker.handle_events, worker.client)
    await start_all(workers)
    return workers


async def stop_workers(workers) -> None:
    await stop_all(workers)
