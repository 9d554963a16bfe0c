"""Run RabbitMQ's own STOMP test suite (its plugin's Python tests) against amqpbroker, or
against any broker, and count.

    python interop/stomp_suite/run.py --rabbitmq-git PATH --stomppy-git PATH
        [--stomp-port N --amqp-port N --mgmt-url URL] [--broker-arg ARG ...] [--workdir DIR]

What it does:

* takes the suite where it is published: ``deps/rabbitmq_stomp/test/python_SUITE_data/src``
  of rabbitmq-server at tag ``v3.10.8`` (``--rabbitmq-git`` or ``$RABBITMQ_GIT``: a clone,
  a bare one is fine: it is read with ``git archive``), and the client it was written for,
  stomp.py at tag ``v6.1.0`` from its git repository (``--stomppy-git`` or ``$STOMPPY_GIT``),
  as the suite's own Makefile does (PyPI's stomp.py 6.1.0 is a different, yanked release);
* installs the suite's other dependency (pika) and stomp.py's (docopt) in a private venv
  under the work directory;
* starts a fresh amqpbroker on free ports with ``--stomp-port -1``
  (``amqpbroker.testing.BrokerProcess``; more of its arguments in ``--broker-arg``, e.g. the
  split layout: ``--broker-arg=--workers=2 --broker-arg=--frontends=2``); with
  ``--stomp-port`` no broker is started and the suite runs against that one (RabbitMQ with
  ``rabbitmq_stomp``, for reference);
* runs ``main_runner.py`` (the suite's list of modules: 99 tests) as RabbitMQ's CI does,
  with ``STOMP_PORT`` and ``AMQP_PORT``; the suite calls ``rabbitmqctl`` (``$RABBITMQCTL``)
  for two things, answered here by ``ctl_stand_in.py`` over the management API:
  ``set_topic_permissions`` / ``clear_topic_permissions``, and ``eval`` of an Erlang
  expression that switches the plugin's default user on and off around
  ``test_default_user`` (this broker's STOMP default user is always on: answered ok, done
  nothing). Against RabbitMQ, pass ``--rabbitmqctl`` to use the real one;
* reads its ``parsing.py`` with one line changed: the CONNECTED frame it expects names the
  server ``RabbitMQ/<version>``; this broker names itself (``server:amqpbroker/<version>``),
  so that one pattern is ``server:([^\\n]*)``;
* prints the counts and the tests that did not pass; exit status 0 when all passed.

Not part of the default pytest run (about two minutes; it needs the two repositories).
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

SUITE = "deps/rabbitmq_stomp/test/python_SUITE_data/src"
RABBITMQ_TAG = "v3.10.8"
STOMPPY_TAG = "v6.1.0"


def extract(repo: str, tag: str, path: str, into: Path) -> None:
    data = subprocess.run(["git", "-C", repo, "archive", tag, path], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rabbitmq-git", default=os.environ.get("RABBITMQ_GIT"))
    ap.add_argument("--stomppy-git", default=os.environ.get("STOMPPY_GIT"))
    ap.add_argument("--stomp-port", type=int, help="a running broker's STOMP port")
    ap.add_argument("--amqp-port", type=int, default=5672)
    ap.add_argument("--mgmt-url", default="http://guest:guest@127.0.0.1:15672")
    ap.add_argument("--rabbitmqctl", help="the real rabbitmqctl (against RabbitMQ)")
    ap.add_argument("--nodename", default="rabbit@localhost")
    ap.add_argument("--broker-arg", action="append", default=[],
                    help="an argument for our broker (repeatable)")
    ap.add_argument("--workdir", help="kept after the run (default: a temporary one)")
    args = ap.parse_args()
    if not args.rabbitmq_git or not args.stomppy_git:
        ap.error("--rabbitmq-git and --stomppy-git (or $RABBITMQ_GIT, $STOMPPY_GIT) name "
                 "clones of rabbitmq-server and stomp.py")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="stomp-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    extract(args.rabbitmq_git, RABBITMQ_TAG, SUITE, work)
    src = work / SUITE
    extract(args.stomppy_git, STOMPPY_TAG, "stomp", work / "stomppy")
    parsing = src / "parsing.py"
    parsing.write_text(parsing.read_text().replace("'server:RabbitMQ/(.*)\\n'",
                                                   "'server:([^\\n]*)\\n'"))
    venv = work / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "pika", "docopt"],
                       check=True)
    broker = None
    try:
        if args.stomp_port is None:
            from amqpbroker.testing import BrokerProcess
            broker = BrokerProcess(work / "broker-data", "--stomp-port", "-1", *args.broker_arg,
                                   management=True, env={"PYTHONPATH": str(ROOT)}).start()
            stomp_port, amqp_port = broker.stomp_port, broker.port
            mgmt_url = f"http://guest:guest@127.0.0.1:{broker.management_port}"
        else:
            stomp_port, amqp_port, mgmt_url = args.stomp_port, args.amqp_port, args.mgmt_url
        env = dict(os.environ, PYTHONPATH=str(work / "stomppy"), STOMP_PORT=str(stomp_port),
                   AMQP_PORT=str(amqp_port), RABBITMQ_NODENAME=args.nodename,
                   RABBITMQCTL=args.rabbitmqctl or str(HERE / "ctl_stand_in.py"),
                   STAND_IN_MGMT_URL=mgmt_url)
        out = subprocess.run([str(venv / "bin" / "python"), "main_runner.py"], cwd=src,
                             env=env, capture_output=True, text=True, timeout=1800)
    finally:
        if broker is not None:
            broker.stop()
    log = out.stdout + out.stderr
    (work / "suite.log").write_text(log)
    ran = re.search(r"Ran (\d+) tests", log)
    failed = re.findall(r"^(?:FAIL|ERROR): (\S+) \((\S+)\)", log, re.M)
    print(f"ran {ran.group(1) if ran else '?'} tests, {len(failed)} did not pass "
          f"(log: {work / 'suite.log'})")
    for name, where in failed:
        print(f"  {where}")
    if not args.workdir:
        shutil.rmtree(work / "venv", ignore_errors=True)
    return 0 if ran and not failed and out.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
