"""Every test session (tests/ and interop/) must leave no process and no shared-memory segment behind."""
import pytest

from amqpbroker.testing import leaks


@pytest.fixture(scope="session", autouse=True)
def no_leaked_processes_or_shm():
    with leaks.no_new_children(), leaks.no_new_shm():
        yield
