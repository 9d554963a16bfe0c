"""Every test session (tests/ and interop/) must leave no process and no shared-memory segment behind.

A test marked ``own_layout`` must start every broker with ``--workers`` and ``--frontends``
on its command line: CI's second pass, which sets the layout through
``AMQPBROKER_WORKERS``/``AMQPBROKER_FRONTENDS``, leaves it out as a repeat (.ci/run); a broker
of such a test started without them fails the test here."""
import pytest

from amqpbroker.testing import BrokerProcess, leaks


@pytest.fixture(scope="session", autouse=True)
def no_leaked_processes_or_shm():
    with leaks.no_new_children(), leaks.no_new_shm():
        yield


def _names_its_layout(args) -> bool:
    return all(any(a == flag or a.startswith(flag + "=") for a in args)
               for flag in ("--workers", "--frontends"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """For an ``own_layout`` test (its fixtures' setup included, module-scoped ones too): a
    broker started without its layout on the command line fails the test, as the mark would
    leave that broker's split run out of CI unseen."""
    if item.get_closest_marker("own_layout") is None:
        yield
        return
    start = BrokerProcess.start

    def checked_start(broker):
        assert _names_its_layout(broker.args), (
            f"an own_layout test started a broker without --workers and --frontends: "
            f"{broker.args}")
        return start(broker)
    BrokerProcess.start = checked_start
    try:
        yield
    finally:
        BrokerProcess.start = start
