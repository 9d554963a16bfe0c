"""Resource alarms: memory and disk. While any alarm is active, publishing connections are
sent ``connection.blocked`` and are no longer read from (RabbitMQ's behaviour); consumers keep
going so queues can drain. Cleared alarms send ``connection.unblocked``."""
from __future__ import annotations

import logging
import os

from ..logs import context

log = logging.getLogger("amqpbroker.alarms")


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
            if used > limit and "memory" not in self.active and self._give_back_free_pages():
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

    def _give_back_free_pages(self) -> bool:
        """Before the memory alarm goes on: the heap trimmer's ``malloc_trim(0)`` now
        (supervisor/heap.py; the supervisor's process, every process of ``--workers 0``), so
        the alarm counts memory in use, not free pages glibc keeps (a freed buffer, the
        heap prefaulter's pad: amqpbroker/prefault.py). Otherwise the trimmer gives them back
        while the alarm is on, the alarm clears, blocked publishers are read again for a
        second and blocked again. Not where periodic trimming is off
        (``--heap-trim-interval 0``). True if memory was given back."""
        trimmer = getattr(self.broker, "heap_trimmer", None)
        return trimmer is not None and trimmer.interval > 0 and trimmer.trim_now()
