"""How long a fuzz target runs, and a coverage-guided driver for any of them.

Every fuzz test in ``tests/`` is a Hypothesis test decorated with ``fuzz(examples)``, which
sets its budget from the environment:

* nothing set (CI, the default ``pytest`` run): ``examples`` examples, a few seconds a target;
* ``HYPOTHESIS_PROFILE=fuzz``: a hundred times as many;
* ``FUZZ_SECONDS=N``: batches of fresh random examples until N seconds have passed, per
  target (``FUZZ_SECONDS=600 python -m pytest tests/property -k fuzz``).

A failure is shrunk, printed with ``@reproduce_failure`` and kept in Hypothesis's example
database (``.hypothesis/``), which the next run of that test replays first.

``python -m amqpbroker.testing.fuzzing tests/property/test_field_table_fuzz.py::NAME
[-max_total_time=3600 ...]`` runs one target under atheris (libFuzzer, coverage-guided;
``pip install atheris``) for as long as you like: Hypothesis turns the bytes atheris mutates
into the target's structured inputs (``fuzz_one_input``), so the same strategies serve both.
A target driven this way takes no pytest fixtures; a module that needs set-up provides
``fuzz_setup()``, which may return a function that tears it down (libFuzzer ends its process
with ``exit()``, so it fuzzes in a forked child and the parent tears down). The management
API's target runs inside a test with a broker process: run it with ``FUZZ_SECONDS`` instead.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import sys
import time

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "")
SECONDS = float(os.environ.get("FUZZ_SECONDS") or 0)
LONG_RUN_FACTOR = 100

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
          HealthCheck.large_base_example]


def time_limit(default: float) -> float:
    """pytest-timeout's limit for a test that runs a fuzz target inside it (not decorated by
    ``fuzz`` itself): ``default``, or past the batches' time under ``FUZZ_SECONDS``."""
    return SECONDS * 2 + 300 if SECONDS > 0 else default


def fuzz(examples: int, **overrides):
    """Decorate a ``@given`` test with the run's budget (above ``@given``)."""
    n = examples * LONG_RUN_FACTOR if PROFILE == "fuzz" else examples
    budget = settings(max_examples=n, deadline=None, suppress_health_check=_QUIET,
                      **overrides)

    def wrap(test):
        test = budget(test)
        if SECONDS <= 0:
            return test

        @functools.wraps(test)
        def for_a_while(*args, **kwargs):
            end = time.monotonic() + SECONDS
            test(*args, **kwargs)
            while time.monotonic() < end:        # each call: a new random batch
                test(*args, **kwargs)
        # pytest must see the fixtures only, not @given's arguments
        for_a_while.__signature__ = inspect.signature(test)
        import pytest
        return pytest.mark.timeout(time_limit(0))(for_a_while)
    return wrap


def main(argv: list[str]) -> None:
    if not argv or "::" not in argv[0]:
        sys.exit("usage: python -m amqpbroker.testing.fuzzing PATH::TEST [libFuzzer flags]")
    import atheris
    path, _, name = argv[0].partition("::")
    with atheris.instrument_imports(include=["amqpbroker", "pamqp"]):
        spec = importlib.util.spec_from_file_location("fuzz_target", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    test = getattr(module, name)
    teardown = module.fuzz_setup() if hasattr(module, "fuzz_setup") else None
    pid = os.fork()              # libFuzzer ends with exit(): the parent tears down after it
    if pid == 0:
        atheris.Setup([sys.argv[0], *argv[1:]], test.hypothesis.fuzz_one_input)
        atheris.Fuzz()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if teardown is not None:
        teardown()
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main(sys.argv[1:])
