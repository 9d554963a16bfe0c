"""Resource alarms: memory and disk. While any alarm is active, publishing connections are
sent ``connection.blocked`` and are no longer read from (RabbitMQ's behaviour); consumers keep
going so queues can drain. Cleared alarms send ``connection.unblocked``."""
from __future__ import annotations

import logging
import os

from ..logs import context

log = logging.getLogger("amqpbroker.alarms")

# while the memory alarm is on, free pages are given back again after 1 s, then 2, 4 ... 32 s
TRIM_FIRST_WAIT = 1.0
TRIM_MAX_WAIT = 32.0


def rss_bytes(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def node_rss(broker) -> int:
    """Memory of the whole node: this process and its worker and front-end processes."""
    return rss_bytes() + sum(rss_bytes(pid) for pid in broker.child_pids())


def total_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


class Alarms:
    def __init__(self, broker):
        self.broker = broker
        self.active: dict[str, str] = {}
        self.logs = True        # off in front-end processes: the supervisor logs each alarm
        self._timer = None
        self._next_trim = 0.0           # loop time of the next trim while the memory alarm is on
        self._trim_wait = TRIM_FIRST_WAIT

    @property
    def blocked(self) -> bool:
        return bool(self.active)

    def reason(self) -> str:
        return "low on " + " and ".join("memory" if k == "memory" else "disk"
                                        for k in sorted(self.active))

    def set(self, name: str, detail: str) -> None:
        if name in self.active:
            return
        was = self.blocked
        self.active[name] = detail
        if self.logs:
            log.warning("%s alarm set: %s", name, detail, extra=context(alarm=name))
        self.broker.alarm_changed(name, detail)
        if not was:
            for s in list(self.broker.sessions):
                s.on_alarm(True)

    def clear(self, name: str) -> None:
        if self.active.pop(name, None) is None:
            return
        if self.logs:
            log.warning("%s alarm cleared", name, extra=context(alarm=name))
        self.broker.alarm_changed(name, None)
        if not self.blocked:
            for s in list(self.broker.sessions):
                s.on_alarm(False)

    def start(self) -> None:
        self._check()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _check(self) -> None:
        cfg = self.broker.config
        total = total_memory()
        if total and cfg.memory_high_watermark > 0:
            limit = total * cfg.memory_high_watermark
            used = node_rss(self.broker)
            if used > limit and self._trim_due() and self._give_back_free_pages():
                used = node_rss(self.broker)
            if used > limit:
                self.set("memory", f"memory use above {int(limit)} bytes")
            elif "memory" in self.active:
                self.clear("memory")
        try:
            st = os.statvfs(cfg.data_dir)
            free = st.f_bavail * st.f_frsize
            if free < cfg.disk_free_limit:
                self.set("disk_free", f"free disk {free} below limit {cfg.disk_free_limit}")
            elif "disk_free" in self.active:
                self.clear("disk_free")
        except OSError:
            pass
        self._timer = self.broker.loop.call_later(1.0, self._check)

    def _trim_due(self) -> bool:
        """Whether to give free pages back before this check counts memory: always before
        the memory alarm goes on; while it stays on, again after 1 s, 2, 4 ... up to 32 s
        (``TRIM_*``), so that memory freed meanwhile and kept by glibc (a blocked publisher
        that disconnects with half a body read: a CI run saw 46 MB freed and the alarm still
        on 30 s later) clears the alarm within seconds, not at the periodic trimmer's next
        turn (60 s), at the cost of a trim now and then while the node is short of memory."""
        now = self.broker.loop.time()
        if "memory" not in self.active:
            self._next_trim, self._trim_wait = now + TRIM_FIRST_WAIT, TRIM_FIRST_WAIT * 2
            return True
        if now < self._next_trim:
            return False
        self._next_trim = now + self._trim_wait
        self._trim_wait = min(self._trim_wait * 2, TRIM_MAX_WAIT)
        return True

    def _give_back_free_pages(self) -> bool:
        """Before the memory alarm goes on (and while it stays on: ``_trim_due``): the heap
        trimmer's ``malloc_trim(0)`` now
        (supervisor/heap.py; the supervisor's process, every process of ``--workers 0``), so
        the alarm counts memory in use, not free pages glibc keeps (a freed buffer, the
        heap prefaulter's pad: amqpbroker/prefault.py). Otherwise the trimmer gives them back
        while the alarm is on, the alarm clears, blocked publishers are read again for a
        second and blocked again. Not where periodic trimming is off
        (``--heap-trim-interval 0``). True if memory was given back."""
        trimmer = getattr(self.broker, "heap_trimmer", None)
        return trimmer is not None and trimmer.interval > 0 and trimmer.trim_now()
