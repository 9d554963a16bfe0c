"""Every MessageStore a test opens must be closed (or crashed) by its end."""
import pytest

from amqpbroker.storage import trash
from amqpbroker.testing import leaks


@pytest.fixture(autouse=True)
def no_leaked_descriptors():
    with leaks.no_new_files(under="pytest-of-"):
        yield
        # a deleted queue's directory is removed by trash.py's background thread, whose
        # descriptors are open while it works: not a leak of the test's (storage's conftest)
        assert trash.wait_removed(timeout=30)
