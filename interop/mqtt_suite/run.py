"""Run the Eclipse Paho MQTT interoperability tests against amqpbroker, or against any MQTT
broker, and count.

    python interop/mqtt_suite/run.py --paho-git PATH [--ref REF]
        [--suites client_test,client_test5] [--host HOST --port N] [--tests NAME,...]
        [--skip NAME ...] [--nosubscribe-topic FILTER] [--timeout S] [--label NAME]
        [--compare NAME] [--workdir DIR] [--broker-arg ARG ...]

What it does:

* takes the suite where it is published: ``interoperability/`` of
  https://github.com/eclipse/paho.mqtt.testing (``--paho-git`` or ``$PAHO_GIT``: a checkout
  or a git directory, read with ``git archive REF``, default ``HEAD``) into a temporary
  directory, removed afterwards; nothing of it is patched. Its two client suites:
  ``client_test.py`` (MQTT 3.1.1, 10 tests) and ``client_test5.py`` (MQTT 5, 27 tests), both
  on the suite's own bundled clients (``mqtt/clients/V311``, ``mqtt/clients/V5``) and
  standard library only: nothing is installed; they run unchanged on Python 3.11;
* starts a fresh amqpbroker for each suite on free ports with ``--mqtt-port -1``
  (``amqpbroker.testing.BrokerProcess``, ``--log-level error``; more of its arguments in
  ``--broker-arg``, e.g. ``--broker-arg=--workers=0``), stopped afterwards (SIGTERM, by its
  pid); with ``--port`` no broker is started and the suites run against the MQTT broker at
  ``--host`` (default 127.0.0.1) ``--port`` (mosquitto, RabbitMQ, ..., for reference);
* runs every test method of the suite's ``Test`` class on its own, in a child process of its
  own (this file with ``--child``) with a time limit (``--timeout``, default 90 s): one hang
  stops one test, and several of the MQTT 5 tests wait in ``while len(...) < 3`` loops with
  no limit of their own (the child dumps its stacks just before the limit, so a test stopped
  by it is reported with the line it was at). The child imports the test module and sets the globals its
  ``__main__`` block would set (host, port, topics, ...; ``topic_prefix`` for
  ``client_test5``), then runs the test with its ``setUpClass`` (which clears both test
  clients' sessions and every retained message first, so each test starts clean; upstream
  runs them all in one process, in this same alphabetical order, on shared clients).
  The scripts' own command lines are not used: their ``-h`` reaches ``unittest.main()``,
  which takes it for ``--help``; ``client_test.py`` stops on ``-z``/``-d``/``-s``
  ("unhandled option") and ``client_test5.py`` ignores them, so upstream always runs every
  test. Here every test runs too (``--tests`` / ``--skip`` choose), and ``-n``'s topic
  filter, which upstream reads and then never uses, is ``--nosubscribe-topic``: the filter
  ``test_subscribe_failure`` expects the broker to refuse (default ``test/nosubscribe``);
* reports each test as passed, failed (an assertion) or error (an exception, the time limit,
  or ``setUpClass`` failing, e.g. a refused CONNECT), with the first line of the reason.
  Many tests catch their own exception, print its traceback and then fail on
  ``assertEqual(succeeded, True)``: for those the reason is the exception of the last
  traceback printed (a bare ``assert``: its source line) and where, marked ``caught``, and
  the first one's when there were more (e.g. the client's receiver thread stopping on a
  packet it did not expect);
* prints passed / failed / errors per suite and saves every test's outcome and reason in
  ``<workdir>/results/<label>/<suite>.json``, with each test's output in ``<suite>.log``
  (and what our broker logged at level error in ``<suite>.broker.log``); ``--compare
  mosquitto`` then lists the tests that passed in the run labelled ``mosquitto`` and not in
  this one.

Exit status: 0 when every suite ran (failures are counted, not fatal), 2 when one could not.
Not part of the default pytest run: against mosquitto 2.0 on 2 cores, ``client_test`` takes
about 1.5 minutes and ``client_test5`` about 6 (one of its tests waits out its time limit).
"""
from __future__ import annotations

import argparse
import ast
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

SUITE_DIR = "interoperability"
# suite -> (its module in interoperability/, the protocol it tests)
SUITES = {
    "client_test": ("client_test", "MQTT 3.1.1"),
    "client_test5": ("client_test5", "MQTT 5"),
}
TOPICS = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
WILDTOPICS = ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")
RESULT_MARK = "@@mqtt-suite-result@@ "
sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- the child
def child(suite: str, test: str, src: str, host: str, port: int, nosubscribe: str,
          timeout: float) -> None:
    """Run one test of one suite (in ``src``, the unpacked ``interoperability``) and print
    its outcome as the last line: ``RESULT_MARK {"outcome": ..., "reason": ...}``; and
    every thread's stack shortly before the runner's time limit, for the runner to say where
    the test was (``stuck_at``)."""
    import faulthandler
    import importlib
    import logging
    import traceback
    import unittest

    class Tee(io.TextIOBase):           # stderr as it goes, and kept for the reason
        def __init__(self, stream):
            self.stream, self.kept = stream, io.StringIO()

        def write(self, s):
            self.kept.write(s)
            self.stream.write(s)
            self.stream.flush()
            return len(s)

    tee = Tee(sys.stderr)
    sys.stderr = tee
    faulthandler.dump_traceback_later(max(timeout - 2, 1), file=sys.__stderr__)
    os.chdir(src)
    sys.path.insert(0, src)
    module = importlib.import_module(SUITES[suite][0])
    # what ``if __name__ == "__main__"`` sets (the scripts' own getopt is not used: see above)
    module.host, module.port = host, port
    if suite == "client_test5":
        module.topic_prefix = "client_test5/"
        module.topics = [module.topic_prefix + t for t in TOPICS]
        module.wildtopics = [module.topic_prefix + t for t in WILDTOPICS]
        set_data = module.setData       # setUpClass resets the topics (unprefixed) with it

        def setData():
            set_data()
            module.nosubscribe_topics = (nosubscribe,)
        module.setData = setData
    else:
        module.topics, module.wildtopics = TOPICS, WILDTOPICS
    module.nosubscribe_topics = (nosubscribe,)
    logging.getLogger().setLevel(logging.ERROR)

    def first_line(err) -> str:
        """The exception's first line, and the suite's line it was raised from."""
        kind, value, tb = err
        line = (str(value).strip().splitlines() or [""])[0]
        frames = [fr for fr in traceback.extract_tb(tb) if fr.filename.startswith(src)]
        if not line and kind is AssertionError and frames and \
                (frames[-1].line or "").startswith("assert "):
            line = frames[-1].line              # a bare assert: what it asserted
        reason = shorten(f"{kind.__name__}: {line}" if line else kind.__name__)
        if frames:
            where = [f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}"]
            # raised in the packet formats: the client's call that got there, too
            calls = [fr for fr in frames if "formats" not in Path(fr.filename).parts]
            if calls and calls[-1] is not frames[-1]:
                where.append(f"from {Path(calls[-1].filename).name}:{calls[-1].lineno} "
                             f"{calls[-1].name}")
            reason += f" ({', '.join(where)})"
        return reason

    def tracebacks() -> list[tuple[str, str, str]]:
        """(exception line, where, source line) of each traceback printed so far: by the
        test itself (traceback.print_exc) or by the client's receiver threads."""
        found = []
        for block in tee.kept.getvalue().split("Traceback (most recent call last):")[1:]:
            where = source = ""
            lines = block.splitlines()[1:]
            for i, line in enumerate(lines):
                if line.startswith('  File "'):
                    path, _, rest = line[len('  File "'):].partition('", line ')
                    number, _, func = rest.partition(", in ")
                    where = f"{Path(path).name}:{number} {func}"
                    source = lines[i + 1].strip() if i + 1 < len(lines) else ""
                elif line and not line.startswith(" "):
                    found.append((line.strip(), where, source))
                    break
        return found

    def caught() -> str | None:
        """The reason of a test that printed its exception and then asserted it had none:
        the last traceback's exception (a bare assert: its source line) and where, and the
        first one's, if there were more (the client's receiver thread stopping, often)."""
        printed = tracebacks()
        if not printed:
            return None
        line, where, source = printed[-1]
        if line == "AssertionError" and source.startswith("assert "):
            line = f"AssertionError: {source}"
        reason = f"{shorten(line)} (caught, {where}"
        if printed[0][0] != printed[-1][0]:
            reason += f"; earlier: {shorten(printed[0][0])}"
        return reason + ")"

    def shorten(text: str, width: int = 160) -> str:
        return text if len(text) <= width else text[:width - 3] + "..."

    class Result(unittest.TestResult):
        outcome, reason = "passed", ""

        def addError(self, test, err):
            super().addError(test, err)
            self.outcome, self.reason = "error", first_line(err)
            if not isinstance(test, unittest.TestCase):      # setUpClass, ...
                self.reason = f"{test.description}: {self.reason}"

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self.outcome, self.reason = "failed", first_line(err)
            if self.reason.startswith("AssertionError: False != True"):
                self.reason = caught() or self.reason

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            self.outcome, self.reason = "skipped", reason

    result = Result()
    try:
        unittest.TestSuite([module.Test(test)]).run(result)
    except BaseException as exc:        # the runner's own doing: say so, whatever it was
        traceback.print_exc()
        result.outcome, result.reason = "error", first_line((type(exc), exc, None))
    sys.stdout.flush()
    print("\n" + RESULT_MARK + json.dumps({"outcome": result.outcome,
                                           "reason": result.reason}), flush=True)
    os._exit(0)     # the suite's receiver threads (_thread) may still be blocked in recv


# ----------------------------------------------------------------------------- the runner

def log(msg: str = "") -> None:
    print(msg, flush=True)


def git(repo: str, *args: str) -> bytes:
    """``git`` on a checkout or on a git directory (bare, or a mirror's)."""
    where = ["--git-dir", repo] if (Path(repo, "HEAD").is_file()
                                    and Path(repo, "objects").is_dir()) else ["-C", repo]
    return subprocess.run(["git", *where, *args], check=True, capture_output=True).stdout


def extract(repo: str, ref: str, into: Path) -> str:
    """Unpack ``interoperability/`` at ``ref`` into ``into``; the commit it is."""
    commit = git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
    with tarfile.open(fileobj=io.BytesIO(git(repo, "archive", commit, SUITE_DIR))) as tar:
        tar.extractall(into, filter="data")
    return commit


def test_names(path: Path) -> list[str]:
    """The ``test*`` methods of the module's ``Test`` class, in unittest's order (sorted),
    read without importing it."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == "Test":
            return sorted(n.name for n in node.body
                          if isinstance(n, ast.FunctionDef) and n.name.startswith("test"))
    raise SystemExit(f"{path}: no class Test")


def run_test(suite: str, test: str, src: Path, host: str, port: int, nosubscribe: str,
             timeout: float) -> tuple[str, str, str]:
    """(outcome, reason, output) of one test, in a child process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", suite, test, str(src),
           host, str(port), nosubscribe, str(timeout)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        text = out.decode(errors="replace")
        return "error", f"timed out after {timeout:g} s{stuck_at(text, suite)}", text
    finally:
        if proc.poll() is None:         # interrupted: the child goes with us
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = out.decode(errors="replace")
    marks = [line for line in text.splitlines() if line.startswith(RESULT_MARK)]
    if not marks:
        last = (text.strip().splitlines() or ["no output"])[-1]
        return "error", f"the test process ended ({proc.returncode}) without a result: {last}", \
            text
    result = json.loads(marks[-1][len(RESULT_MARK):])
    return result["outcome"], result["reason"], text


def stuck_at(text: str, suite: str) -> str:
    """Where the test method was when the child dumped its threads' stacks (faulthandler,
    most recent call first): `` (at client_test5.py:467 test_user_properties)``."""
    for line in text[text.rfind("Timeout ("):].splitlines():
        if line.startswith('  File "') and f"/{suite}.py" in line:
            number, _, func = line.split('", line ', 1)[1].partition(" in ")
            if func.startswith("test"):
                return f" (at {suite}.py:{number} {func})"
    return ""


def run_suite(suite: str, src: Path, host: str, port: int, tests: list[str], args,
              out: Path) -> dict:
    results = {}
    with open(out / f"{suite}.log", "w") as logf:
        for test in tests:
            started = time.monotonic()
            outcome, reason, text = run_test(suite, test, src, host, port,
                                             args.nosubscribe_topic, args.timeout)
            took = time.monotonic() - started
            results[test] = {"outcome": outcome, "reason": reason}
            logf.write(f"===== {test}: {outcome} ({took:.1f} s) {reason}\n{text}\n")
            logf.flush()
            log(f"[{suite}] {test:32} {outcome:7} {took:5.1f} s"
                + (f"  {reason}" if reason else ""))
    (out / f"{suite}.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    return results


def count(results: dict) -> dict:
    c = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for r in results.values():
        c[r["outcome"]] += 1
    return c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paho-git", default=os.environ.get("PAHO_GIT"),
                    help="a checkout or git directory of eclipse/paho.mqtt.testing "
                         "(or $PAHO_GIT)")
    ap.add_argument("--ref", default="HEAD", help="the suite's commit, tag or branch")
    ap.add_argument("--suites", default=",".join(SUITES),
                    help="client_test (MQTT 3.1.1), client_test5 (MQTT 5); default both")
    ap.add_argument("--host", default="127.0.0.1", help="with --port: the broker's host")
    ap.add_argument("--port", type=int,
                    help="run against the MQTT broker on this port instead of starting ours")
    ap.add_argument("--tests", help="only these tests (comma-separated method names)")
    ap.add_argument("--skip", action="append", default=[],
                    help="leave this test out (repeatable)")
    ap.add_argument("--nosubscribe-topic", default="test/nosubscribe",
                    help="the filter test_subscribe_failure expects to be refused "
                         "(the scripts' -n)")
    ap.add_argument("--timeout", type=float, default=90, help="per-test time limit (seconds)")
    ap.add_argument("--label", help="name of this run's results (default: ours / external)")
    ap.add_argument("--compare", help="list tests that passed in the run with this label only")
    ap.add_argument("--workdir", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "amqpbroker-mqtt-suite", help="where results are saved")
    ap.add_argument("--broker-arg", action="append", default=[],
                    help="extra argument for our broker (repeatable), "
                         "e.g. --broker-arg=--workers=0")
    args = ap.parse_args(argv)
    if not args.paho_git:
        ap.error("--paho-git (or $PAHO_GIT) names a checkout or git directory of "
                 "https://github.com/eclipse/paho.mqtt.testing")
    names = [n.strip() for n in args.suites.split(",") if n.strip()]
    for n in names:
        if n not in SUITES:
            ap.error(f"unknown suite {n!r}: choose from {', '.join(SUITES)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # stop our broker on the way
    label = args.label or ("external" if args.port else "ours")
    out = args.workdir.resolve() / "results" / label
    out.mkdir(parents=True, exist_ok=True)
    only = {t.strip() for t in args.tests.split(",") if t.strip()} if args.tests else None
    results: dict[str, dict] = {}
    status = 0
    with tempfile.TemporaryDirectory(prefix="mqtt-suite-") as tmp:
        commit = extract(args.paho_git, args.ref, Path(tmp))
        src = Path(tmp) / SUITE_DIR
        log(f"paho.mqtt.testing {commit[:12]} ({args.paho_git}); results in {out}")
        for name in names:
            tests = [t for t in test_names(src / f"{SUITES[name][0]}.py")
                     if (only is None or t in only) and t not in args.skip]
            if not tests:
                continue
            if args.port:
                log(f"[{name}] {SUITES[name][1]}: {len(tests)} tests against "
                    f"{args.host}:{args.port}")
                results[name] = run_suite(name, src, args.host, args.port, tests, args, out)
                continue
            from amqpbroker.testing import BrokerProcess
            with tempfile.TemporaryDirectory(prefix=f"mqtt-suite-{name}-data-") as data:
                try:
                    broker = BrokerProcess(data, "--mqtt-port", "-1", "--log-level", "error",
                                           *args.broker_arg,
                                           env={"PYTHONPATH": str(ROOT)}).start()
                except RuntimeError as exc:
                    log(f"[{name}] not run: {exc}")
                    status = 2
                    continue
                try:
                    log(f"[{name}] {SUITES[name][1]}: {len(tests)} tests against amqpbroker "
                        f"(pid {broker.proc.pid}) mqtt={broker.host}:{broker.mqtt_port}")
                    results[name] = run_suite(name, src, broker.host, broker.mqtt_port, tests,
                                              args, out)
                finally:
                    broker.stop()
                    errors = broker.save_output(out / f"{name}.broker.log")
                    log(f"[{name}] the broker logged {errors} lines at level error "
                        f"({name}.broker.log)")
    log()
    log(f"{'suite':14} {'tests':>6} {'passed':>7} {'failed':>7} {'errors':>7}   ({label})")
    for name, res in results.items():
        c = count(res)
        log(f"{name:14} {len(res):>6} {c['passed']:>7} {c['failed']:>7} {c['error']:>7}")
    for name, res in results.items():
        bad = {t: r for t, r in res.items() if r["outcome"] != "passed"}
        if bad:
            log(f"\n[{name}] did not pass:")
            for t, r in bad.items():
                log(f"  {t}: {r['outcome']}: {r['reason']}")
    if args.compare:
        log(f"\npassed in '{args.compare}', not here:")
        for name, res in results.items():
            ref_file = args.workdir.resolve() / "results" / args.compare / f"{name}.json"
            if not ref_file.exists():
                log(f"  [{name}] no '{args.compare}' results")
                continue
            ref = json.loads(ref_file.read_text())
            lost = sorted(t for t, r in ref.items() if r["outcome"] == "passed"
                          and t in res and res[t]["outcome"] != "passed")
            log(f"  [{name}] {len(lost)}")
            for t in lost:
                log(f"    {t}: {res[t]['outcome']}: {res[t]['reason']}")
    return status


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:    # one test (run_test): SUITE TEST SRC HOST PORT FILTER S
        _suite, _test, _src, _host, _port, _filter, _timeout = sys.argv[2:]
        child(_suite, _test, _src, _host, int(_port), _filter, float(_timeout))
    sys.exit(main())
