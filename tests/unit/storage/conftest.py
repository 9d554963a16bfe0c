import os

import pytest


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_leaked_descriptors():
    """Every PartitionLog/AckLog a test opens must be closed (or crashed) by its end."""
    before = open_fds()
    yield
    leaked = {fd for fd in open_fds() - before
              if os.path.exists(f"/proc/self/fd/{fd}")
              and "pytest-of-" in os.readlink(f"/proc/self/fd/{fd}")}
    assert not leaked, f"leaked storage descriptors: {leaked}"
