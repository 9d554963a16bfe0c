"""Every PartitionLog/AckLog a test opens must be closed (or crashed) by its end; ``open_log``
opens logs under the test's directory and closes them after it."""
import pytest

from amqpbroker.storage import PartitionLog, trash
from amqpbroker.testing import leaks


@pytest.fixture(autouse=True)
def no_leaked_descriptors():
    with leaks.no_new_files(under="pytest-of-"):
        yield
        # a destroyed log's directory is removed by trash.py's background thread, whose
        # descriptors (the parent's fsync, rmtree's scandirs) are open while it works: not
        # a leak of the test's, so it is waited for (it errored the check once, under load)
        assert trash.wait_removed(timeout=30)


@pytest.fixture
def open_log(tmp_path):
    """``open_log(name="p0", **kw)``: a ``PartitionLog`` (``fsync="never"`` unless given),
    closed at the test's end."""
    opened = []

    def make(name="p0", **kw):
        kw.setdefault("fsync", "never")
        log = PartitionLog(tmp_path / name, **kw)
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()
