"""Every OffsetStore a test opens must be closed (or crashed) by its end."""
import pytest

from amqpbroker.testing import leaks


@pytest.fixture(autouse=True)
def no_leaked_descriptors():
    with leaks.no_new_files(under="pytest-of-"):
        yield
