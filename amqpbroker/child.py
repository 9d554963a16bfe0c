"""The common start of a child process (worker or front-end): ``python -m ... SPEC``.

SPEC is a JSON object with at least ``index``, ``config`` (the broker's ``Config`` as a dict)
and ``fds`` (descriptors inherited from the supervisor). Ctrl-C reaches the whole process
group; children ignore it and let the supervisor shut them down in order.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys

from .config import Config


def config_of(spec: dict) -> Config:
    cfg = dict(spec["config"])
    cfg["loopback_users"] = tuple(cfg["loopback_users"])
    return Config(**cfg)


def run(kind: str, serve) -> int:
    """Parse SPEC from argv, set the process up, and run ``serve(spec)`` to completion."""
    from .cli import prepare_process
    spec = json.loads(sys.argv[1])
    prepare_process(spec["config"]["log_level"], f"{kind}{spec['index']} ")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(serve(spec))
    return 0
