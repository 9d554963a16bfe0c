"""A supervised child process: spawn, wait until ready, watch, restart, stop.

Like hypercorn's ``run.py``: the supervisor waits on each child's *sentinel* — here a pidfd in
the event loop — reaps it when it exits, and starts a new one unless it is shutting down. A
child that dies within a second of its start is restarted after a second, so a child that
cannot start does not spin. Subclasses say how to start (``start``), what to release and whom
to tell when one dies (``on_exit``, ``on_crash``), how to ask one to stop (``ask_to_stop``) and
what to do once a restarted one runs (``after_restart``).

The watchdog (``_watch``): a child whose event loop stops (a deadlock, an endless loop,
SIGSTOP) is alive to the pidfd but serves nothing, and holds its queues or connections for
ever. Each child beats into memory shared with the supervisor (heartbeat.py); a child ready
once whose beats stop for ``--watchdog-timeout`` seconds is killed (SIGKILL), and restarted
as after any crash. A supervisor that stood still itself (paused, starved) gives every
child the whole timeout again before it judges.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time

from .. import child
from .. import heartbeat
from ..logs import context

log = logging.getLogger("amqpbroker.supervisor")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
RESTART_DELAY = 0.1         # seconds before a crashed child is started again
WATCH_TICK = 1.0            # seconds between the watchdog's looks at a child's heartbeat


class ChildProcess:
    kind = "child"
    lost_on_crash = ""          # what a crash costs, said in the one line that reports it
    watchdog_timeout = 0.0      # seconds without a heartbeat before a kill (0: never)

    def __init__(self, index: int):
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        self.restarts = 0
        self._pidfd = None
        self._ready: asyncio.Future | None = None
        self._gone: asyncio.Future | None = None
        self._started_at = 0.0
        self._heart: heartbeat.Monitor | None = None
        self._watchdog: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # ------------------------------------------------------------ subclass hooks
    async def start(self) -> None:
        raise NotImplementedError

    def on_exit(self, code: int) -> None:
        """Always, when the process is gone: release what belonged to it."""

    def on_crash(self) -> None:
        """It exited unasked: tell whoever relied on it."""

    def ask_to_stop(self) -> None:
        raise NotImplementedError

    async def after_restart(self) -> None:
        """A restarted child runs."""

    # ------------------------------------------------------------ mechanics
    def spawn(self, module: str, spec: dict, pass_fds) -> None:
        """Start ``python -m module SPEC`` (on the supervisor's ``sys.path``: ``child.command``)
        with ``pass_fds`` and watch it."""
        loop = asyncio.get_running_loop()
        self._forget_heart()
        heart = self._heart = heartbeat.Monitor()
        spec = dict(spec, fds=dict(spec["fds"], heartbeat=heart.fd))
        try:
            self.proc = subprocess.Popen(child.command(module, json.dumps(spec)),
                                         pass_fds=(*pass_fds, heart.fd),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        finally:
            heart.spawned()
        self._started_at = time.monotonic()
        self._ready = loop.create_future()
        self._gone = loop.create_future()
        self._pidfd = os.pidfd_open(self.proc.pid)
        loop.add_reader(self._pidfd, self._exited)

    def set_ready(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    @property
    def ready(self) -> bool:
        r = self._ready
        return r is not None and r.done() and not r.cancelled() and r.exception() is None

    async def wait_ready(self) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except asyncio.TimeoutError:
            raise RuntimeError(f"{self.kind} {self.index} did not start") from None
        log.info("%s %d started (pid %d)", self.kind, self.index, self.proc.pid)
        if self.watchdog_timeout > 0 and self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._watch(self.proc, self._heart))

    async def _watch(self, proc: subprocess.Popen, heart: heartbeat.Monitor) -> None:
        """Kill ``proc`` once its heartbeat has not moved for ``watchdog_timeout`` seconds
        (module doc); ends when the process does (``_exited``, ``stop``)."""
        loop = asyncio.get_running_loop()
        count, moved = heart.count(), loop.time()
        looked = moved
        while True:
            await asyncio.sleep(WATCH_TICK)
            now = loop.time()
            if now - looked > 1.5 * WATCH_TICK:
                moved = now             # we stood still ourselves: the child gets its time
            looked = now
            seen = heart.count()
            if seen != count:
                count, moved = seen, now
            elif now - moved >= self.watchdog_timeout:
                log.error("%s %d (pid %d) has not run for %.0f s (its event loop is stuck): "
                          "killing it", self.kind, self.index, proc.pid, now - moved,
                          extra=context(child=f"{self.kind} {self.index}"))
                proc.kill()
                return

    def _forget_heart(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._heart is not None:
            self._heart.close()
            self._heart = None

    def _exited(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        code = self.proc.wait()
        self._forget_heart()
        self.on_exit(code)
        if not self._gone.done():
            self._gone.set_result(code)
        if not self._ready.done():
            self._ready.set_exception(RuntimeError(f"{self.kind} {self.index} exited ({code})"))
        if self.stopping:
            return
        log.error("%s %d (pid %d) exited with %s%s; restarting it", self.kind, self.index,
                  self.proc.pid, code, self.lost_on_crash,
                  extra=context(child=f"{self.kind} {self.index}"))
        self.on_crash()
        self.restarts += 1
        loop.create_task(self._restart())

    async def _restart(self) -> None:
        # back off: 1 s if it crashed at start (do not spin), else a moment, in which a
        # shutdown that reached the whole process group (and so this child) is seen
        await asyncio.sleep(1.0 if time.monotonic() - self._started_at < 1.0 else RESTART_DELAY)
        while not self.stopping:
            try:
                await self.start()
            except (OSError, RuntimeError) as exc:
                log.error("restarting %s %d failed: %s", self.kind, self.index, exc,
                          extra=context(child=f"{self.kind} {self.index}"))
                await asyncio.sleep(1.0)
                continue
            await self.after_restart()
            return

    async def stop(self) -> None:
        """Ask the child to stop, wait for it (killing it after STOP_TIMEOUT)."""
        self.stopping = True
        if self._watchdog is not None:      # a stop may take its time
            self._watchdog.cancel()
            self._watchdog = None
        if self.proc is None or self.proc.poll() is not None:
            return
        self.ask_to_stop()
        try:
            await asyncio.wait_for(asyncio.shield(self._gone), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            log.error("%s %d did not stop; killing it", self.kind, self.index)
            self.proc.kill()
            await self._gone


async def start_all(children) -> None:
    try:
        await asyncio.gather(*(c.start() for c in children))
    except BaseException:
        await stop_all(children)
        raise


async def stop_all(children) -> None:
    await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)
