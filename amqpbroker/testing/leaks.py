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


def broker_segments() -> set[str]:
    """The segments named as a broker names its rings (``shm/ring.py``, which unlinks each at
    once): tests running beside this one (pytest-xdist) make segments of other names."""
    return shm_segments("amqpbroker-")


def broker_segments_left(before: set[str], timeout: float = 10.0) -> set[str]:
    """The broker segments not in ``before`` that stay. A ring's name exists only between
    its creation and its unlink (``shm/ring.py``), so a broker another test starts beside
    this one (pytest-xdist; every broker has rings in the supervisor-and-workers pass) shows
    a name for an instant; a leaked one stays past ``timeout``."""
    try:
        wait_until(lambda: not broker_segments() - before, timeout, "no new broker segment")
    except AssertionError:
        pass                            # some stayed: returned below
    return broker_segments() - before


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


def session_members(sid: int) -> set[int]:
    """Live processes of session ``sid``: a broker started in its own session (as
    ``BrokerProcess`` does) and every worker or front-end it ever started, orphans included."""
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getsid(int(pid)) == sid:
                    with open(f"/proc/{pid}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                            out.add(int(pid))
            except OSError:
                pass
    return out


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


def wait_gone(pids, timeout: float = 30.0) -> set[int]:
    """Wait until the processes ``pids`` (not necessarily our children) have exited; return
    those still alive at the timeout. Waits on pidfds, which become readable at exit."""
    import select
    import time
    fds = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:
            pass                                  # already gone
    deadline = time.monotonic() + timeout
    try:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        alive = dict(fds)
        while alive:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                alive.pop(fd, None)
        return set(alive.values())
    finally:
        for fd in fds:
            os.close(fd)



def wait_until(cond, timeout: float = 30.0, what: str = "condition", step=None):
    """Poll ``cond`` until it returns something true, for states that announce themselves
    with no event a test could wait on (a process restarted); fail after ``timeout``.
    ``step`` runs between polls (e.g. a pika connection's ``process_data_events``, so its
    events arrive meanwhile); by default a short sleep."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        step() if step is not None else time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
