"""The common start of a child process (worker or front-end): ``python -m ... SPEC``.

SPEC is a JSON object with at least ``index``, ``config`` (the broker's ``Config`` as a dict)
and ``fds`` (descriptors inherited from the supervisor; ``heartbeat``: the memory the child
beats into for its supervisor's watchdog, heartbeat.py). Ctrl-C reaches the whole process
group; children ignore it and let the supervisor shut them down in order.

A child must import exactly what its parent imported. ``python -m`` would put the working
directory first on ``sys.path`` (3.11's ``-P`` does not, 3.10 has no ``-P``): a broker
installed with ``pip install .`` and started in its source checkout would run the checkout's
tree in its children, where ``shm._ring`` was never compiled. So ``command`` starts
``python -c BOOT``: BOOT sets the parent's ``sys.path`` before anything is imported from it,
then runs the module as ``-m`` would.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from . import heartbeat
from .config import Config

_BOOT = """\
import sys
if not getattr(sys.flags, "safe_path", False):
    del sys.path[0]                          # the working directory -c put first
import json, runpy
sys.path[:] = json.loads(sys.argv[1])
module = sys.argv[2]
del sys.argv[1:3]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def command(module: str, *args: str) -> list[str]:
    """The argv that runs ``python -m module args`` importing from this process's
    ``sys.path`` (the working directory, ``''``, as the directory it is now)."""
    path = [os.getcwd() if p == "" else p for p in sys.path if isinstance(p, str)]
    return [sys.executable, "-c", _BOOT, json.dumps(path), module, *args]


def config_of(spec: dict) -> Config:
    cfg = dict(spec["config"])
    cfg["loopback_users"] = tuple(cfg["loopback_users"])
    return Config(**cfg)


def run(kind: str, serve) -> int:
    """Parse SPEC from argv, set the process up, and run ``serve(spec)`` to completion."""
    from .cli import prepare_process
    spec = json.loads(sys.argv[1])
    prepare_process(spec["config"]["log_level"], f"{kind}{spec['index']}",
                    spec["config"].get("log_format", "text"), holds_bodies=kind == "worker")
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def main():
        heartbeat.start(spec["fds"].get("heartbeat"), asyncio.get_running_loop())
        await serve(spec)
    asyncio.run(main())
    return 0
