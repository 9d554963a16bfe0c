"""A directory whose disk can be made to stop answering, for fencing tests (root; ``bindfs``).

LavinMQ #2151: a leader whose disk hung kept its lease and stayed a zombie leader. To test
that against a real stall, a node's data directory is a FUSE mount (``bindfs``, a
pass-through of another directory) whose daemon this object runs in the foreground and
owns: ``pause()`` SIGSTOPs the daemon, and from then on every operation of the file system
that reaches it (a write, an fsync, a ``statvfs``, a read the page cache cannot answer)
waits in the kernel, as on a device that stopped answering, until ``resume()`` SIGCONTs it.
No data is lost by the pause: the daemon carries on where it stopped.

Device-mapper (``dmsetup suspend`` over a loop device) would also hold writes that the page
cache took and only stall their writeback and fsync; the kernel this was written on has no
device-mapper driver, so the FUSE daemon is the stall here. ``close()`` resumes, unmounts
(lazily if a process still waits on it) and stops the daemon by its pid; the source
directory is the caller's.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time


def available() -> bool:
    """Root, ``/dev/fuse`` and ``bindfs`` (``.ci/run`` installs it)."""
    return (os.geteuid() == 0 and os.path.exists("/dev/fuse")
            and shutil.which("bindfs") is not None)


class StallableDir:
    def __init__(self, source: str, mountpoint: str):
        self.source, self.mountpoint = str(source), str(mountpoint)
        self.proc: subprocess.Popen | None = None
        self.paused = False

    def mount(self, timeout: float = 10.0) -> "StallableDir":
        os.makedirs(self.source, exist_ok=True)
        os.makedirs(self.mountpoint, exist_ok=True)
        # -f: in the foreground, so self.proc is the daemon and pause() stops it
        self.proc = subprocess.Popen(["bindfs", "-f", self.source, self.mountpoint],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() \
                    is not None else "not mounted in time"
                self.close()
                raise OSError(f"bindfs {self.source} {self.mountpoint}: {err}")
            time.sleep(0.02)
        return self

    def pause(self) -> None:
        """The disk stops answering: the FUSE daemon is stopped."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False
        if os.path.ismount(self.mountpoint):
            if subprocess.run(["umount", self.mountpoint], capture_output=True).returncode:
                subprocess.run(["umount", "-l", self.mountpoint], capture_output=True)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> "StallableDir":
        return self.mount()

    def __exit__(self, *exc) -> None:
        self.close()
