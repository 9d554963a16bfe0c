"""Every test session (tests/ and interop/) must leave no process and no shared-memory segment behind.

The suite runs in several processes (pytest-xdist, ``-n`` in pyproject.toml): each checks
its own children, and the whole run (its controller) checks /dev/shm once.

A test marked ``own_layout`` must start every broker with ``--workers`` and ``--frontends``
on its command line: CI's second pass, which sets the layout through
``AMQPBROKER_WORKERS``/``AMQPBROKER_FRONTENDS``, leaves it out as a repeat (.ci/run); a broker
of such a test started without them fails the test here."""
import pytest
from hypothesis import HealthCheck, settings

from amqpbroker.testing import BrokerProcess, leaks

# The suite runs in several processes at once on a shared machine: how fast Hypothesis draws an
# input or runs an example says nothing of correctness here (speed is measured in bench/, never
# by tests), so neither its per-example deadline nor its too-slow health check applies.
settings.register_profile("amqpbroker", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("amqpbroker")


@pytest.fixture(scope="session", autouse=True)
def no_leaked_processes():
    """Per test process (each pytest-xdist worker is one): its brokers are its children."""
    with leaks.no_new_children():
        yield


def _is_xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session):
    """Shared-memory segments are machine-wide, so they are counted once for the whole run:
    in the one pytest process, or in pytest-xdist's controller around all its workers."""
    if not _is_xdist_worker(session.config):
        session.config.stash[_SHM_BEFORE] = leaks.shm_segments()


def pytest_sessionfinish(session, exitstatus):
    if _is_xdist_worker(session.config) or _SHM_BEFORE not in session.config.stash:
        return
    leaked = leaks.shm_segments() - session.config.stash[_SHM_BEFORE]
    if leaked:
        writer = session.config.get_terminal_writer()
        writer.line()
        writer.line(f"leaked shared memory segments: {sorted(leaked)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_SHM_BEFORE = pytest.StashKey[set]()


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
