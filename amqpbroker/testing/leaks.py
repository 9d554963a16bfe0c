"""Leak checks for tests: descriptors, shared-memory segments and child processes.

Each check is a context manager that snapshots before and asserts after, so a conftest can
turn it into an autouse fixture::

    @pytest.fixture(autouse=True)
    def no_leaked_files():
        with leaks.no_new_files(under="pytest-of-"):
            yield
"""
from __future__ import annotations

import contextlib
import os


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def shm_segments(prefix: str = "") -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}


def child_processes() -> set[int]:
    """Live (non-zombie) children of this process."""
    me = os.getpid()
    kids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            kids.add(int(pid))
    return kids


@contextlib.contextmanager
def no_new_files(under: str = ""):
    """Fail if a descriptor opened inside the block (to a path containing ``under``) is
    still open after it. With ``under=""`` every new descriptor counts."""
    before = open_fds()
    yield
    leaked = {(fd, _target(fd)) for fd in open_fds() - before}
    leaked = {x for x in leaked if x[1] and under in x[1]}
    assert not leaked, f"leaked descriptors: {sorted(leaked)}"


@contextlib.contextmanager
def no_new_shm(prefix: str = ""):
    before = shm_segments(prefix)
    yield
    leaked = shm_segments(prefix) - before
    assert not leaked, f"leaked shared memory segments: {sorted(leaked)}"


@contextlib.contextmanager
def no_new_children():
    before = child_processes()
    yield
    leaked = child_processes() - before
    assert not leaked, f"leaked child processes: {sorted(leaked)}"
