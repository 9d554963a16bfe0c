"""Broker configuration: one dataclass, filled from flags and AMQPBROKER_<FLAG> variables."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Config:
    host: str = ""                      # "" = all interfaces, as RabbitMQ
    port: int = 5672
    management_port: int = 15672        # 0 = off, -1 = any free port (tests)
    data_dir: str = "./amqpbroker-data"
    log_level: str = "info"
    frame_max: int = 131072
    channel_max: int = 2047
    heartbeat: int = 60
    max_message_size: int = 128 * 1024 * 1024
    segment_bytes: int = 64 * 1024 * 1024
    fsync_interval_ms: int = 1000                # queues declared with x-fsync=interval
    cache_limit: int = 64 * 1024 * 1024          # bodies kept in memory across all queues
    memory_high_watermark: float = 0.4           # fraction of RAM, as RabbitMQ's default
    disk_free_limit: int = 50 * 1000 * 1000      # bytes, as RabbitMQ's default
    default_user: str = "guest"
    default_pass: str = "guest"
    loopback_users: tuple = ("guest",)
    workers: int = -1                            # partition worker processes; -1 = by CPUs
    frontends: int = 0                           # AMQP front-end processes; 0 = the supervisor

    def worker_count(self) -> int:
        """``--workers -1``: one worker per CPU beside the supervisor's own, at least one."""
        if self.workers >= 0:
            return self.workers
        import os
        return max(1, (os.cpu_count() or 2) - 1)
