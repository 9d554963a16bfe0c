"""Run the client libraries' own test suites against amqpbroker (or any broker) and count.

    python interop/client_suites/run.py [--suites pika,aiormq,aio-pika,kombu,py-amqp,...]
        [--amqp-url amqp://guest:guest@127.0.0.1:5672/] [--http-url http://127.0.0.1:15672]
        [--stream-port PORT] [--label NAME] [--compare NAME] [--pika-git PATH]
        [--dramatiq-git PATH] [--rstream-git PATH] [--faststream-git PATH]
        [--rabbitmq-amqp-git PATH] [--redis-url URL] [--workdir DIR] [--broker-arg ARG ...] [--saved] [-- extra pytest args]

What it does, per suite:

* fetches the suite where it is published: the PyPI sdists of aiormq 7.2.4, aio-pika 10.2.1,
  kombu 5.7.0, py-amqp 5.4.2, amqpstorm 3.1.4 and rabbitpy 3.0.2 (``pip download
  --no-binary``; their ``tests/``, kombu's ``t/integration/test_py_amqp.py``, py-amqp's
  ``t/integration/test_rmq.py``, amqpstorm's ``amqpstorm/tests/functional``, rabbitpy's
  integration tests), and from a clone of the project's git repository at the release's tag
  where the sdist lacks them: pika 1.4.4's ``tests/acceptance`` (``--pika-git`` or
  ``$PIKA_GIT``), dramatiq 2.2.0's ``tests/test_rabbitmq.py`` (its sdist has no
  ``conftest.py``; ``--dramatiq-git`` or ``$DRAMATIQ_GIT``), rstream 1.0.1's ``tests`` but its
  cluster tests (``--rstream-git`` or ``$RSTREAM_GIT``), FastStream 0.7.4's
  ``tests/brokers/rabbit`` (``-m rabbit``; ``--faststream-git`` or ``$FASTSTREAM_GIT``) and
  rabbitmq-amqp-python-client 0.6.0's ``tests`` (RabbitMQ's AMQP 1.0 client for RabbitMQ 4;
  ``--rabbitmq-amqp-git`` or ``$RABBITMQ_AMQP_GIT``); a bare clone is fine: it is read with
  ``git archive``;
* installs the suites' test dependencies (aiomisc-pytest, twisted, ...) in a private venv
  under the work directory, so they never reach the project's own test run (FastStream's and
  rstream's in venvs of their own: pytest-asyncio and aiomisc-pytest do not mix);
* starts a fresh amqpbroker on free ports for each suite (``amqpbroker.testing.BrokerProcess``,
  with the management API for amqpstorm's and rstream's), but on the standard port where a
  suite's tests name it: 5672 for pika, amqpstorm, dramatiq and FastStream, 5552 (the stream
  port, advertised as ``localhost``) and 15672 (the management API) for rstream, 5672, 5671
  (AMQPS) and 15672 for rabbitmq-amqp-python-client, started as its CI configures RabbitMQ
  (its certificates, renewed from its own CA where they expired, and its OAuth 2 key:
  ``Suite.broker_args``, ``Suite.prepare``); those must be free. With ``--amqp-url`` no
  broker is started and the suites run against that one (RabbitMQ, for reference;
  ``--http-url`` its management API, ``--stream-port`` its stream port); a standard port the reference is not on is reached through a forwarder on it
  (``FaultProxy``, no faults), which must be free;
* tells each suite where the broker is the way the suite reads it, patching none of its
  files: kombu's and py-amqp's ``RABBITMQ_HOST`` / ``RABBITMQ_5672_TCP``, rabbitpy's
  ``RABBITMQ_URL``, amqpstorm's ``AMQP_HOST`` / ``AMQP_URI`` / ``AMQP_HTTP_URL`` (as guest);
  aio-pika's conftest starts RabbitMQ with Docker, so ``DOCKER_HOST`` points at
  ``docker_stand_in.py``, which reports the broker under test as the container; aiormq's tests
  ask for two fixtures its sdist does not define, and dramatiq's conftest imports pylibmc
  (memcached's client, a C build) for tests not run here: ``suite_fixtures.py`` supplies both;
* leaves out what needs TLS certificates the suites do not ship: aiormq's ``amqps`` parameters,
  aio-pika's ``test_amqps.py``, py-amqp's ``tls`` cases and amqpstorm's ``functional/ssl``;
* prints passed / failed / errors / skipped per suite, and saves every test's outcome in
  ``<workdir>/results/<label>/<suite>.json`` (with the pytest log and JUnit XML beside it, and
  what our broker logged at level error in ``<suite>.broker.log``).
  ``--compare rabbitmq`` then lists the tests that passed in the run labelled ``rabbitmq`` and
  not in this one; ``--saved`` runs nothing and counts (and compares) a label's saved results,
  e.g. after running against RabbitMQ only the tests that did not pass here
  (``-- -k "..."``).

Exit status: 0 when every suite ran (failures are counted, not fatal), 2 when one could not.
Not part of the default pytest run: the twelve suites take about an hour on 2 cores.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from docker_stand_in import DockerStandIn  # noqa: E402

TEST_DEPENDENCIES = [
    "pika==1.4.4", "aiormq==7.2.4", "aio-pika==10.2.1", "kombu==5.7.0", "amqp==5.4.2",
    "amqpstorm==3.1.4", "rabbitpy==3.0.2", "dramatiq==2.2.0",
    "pytest", "pytest-timeout", "yarl", "aiomisc", "aiomisc-pytest", "shortuuid",
    "timeout-decorator", "twisted", "tornado", "gevent", "requests", "redis",
]


@dataclass
class Suite:
    name: str
    version: str
    paths: list[str]                       # what pytest runs, inside the unpacked source
    pytest_args: list[str] = field(default_factory=list)
    fixed_ports: tuple[str, ...] = ()      # what its tests reach on localhost's standard
                                           # ports only: "amqp" 5672, "stream" 5552, "http"
                                           # 15672 (the management API)
    package: str = ""                      # its PyPI name, when not the suite's name
    git_tag: str = ""                      # tests from its git repository at this tag (its
    git_paths: tuple[str, ...] = ()        # sdist lacks them): these paths, --<name>-git
    management: bool = False               # its tests use the management HTTP API too
    redis: bool = False                    # its tests keep results in Redis (--redis-url)
    dependencies: tuple[str, ...] = ()     # a venv of its own with these, instead of the
                                           # shared one (pytest plugins that clash with it)
    broker_args: tuple[str, ...] = ()      # our broker configured as the suite's CI
                                           # configures RabbitMQ ({src}: its unpacked source)
    prepare: object = None                 # a function of the unpacked source, run first
                                           # (files those arguments name)

    @property
    def pypi_name(self) -> str:
        return self.package or self.name

    @property
    def source_dir_name(self) -> str:
        return f"{self.pypi_name.replace('-', '_')}-{self.version}"


SUITES = {
    "pika": Suite("pika", "1.4.4", ["tests/acceptance"], fixed_ports=("amqp",), git_tag="1.4.4",
                  git_paths=("tests", "testdata", "pyproject.toml")),
    "aiormq": Suite("aiormq", "7.2.4", ["tests"], ["-k", "not amqps"]),
    "aio-pika": Suite("aio-pika", "10.2.1", ["tests"], ["--ignore", "tests/test_amqps.py"]),
    "kombu": Suite("kombu", "5.7.0", ["t/integration/test_py_amqp.py"]),
    # celery's own AMQP client (kombu's pyamqp transport); its TLS cases need certificates
    # its tox run makes, which the sdist lacks
    "py-amqp": Suite("py-amqp", "5.4.2", ["t/integration/test_rmq.py"], ["-k", "not tls"],
                     package="amqp"),
    # it connects to port 5672 of AMQP_HOST only
    "amqpstorm": Suite("amqpstorm", "3.1.4", ["amqpstorm/tests/functional"],
                       ["--ignore", "amqpstorm/tests/functional/ssl"], fixed_ports=("amqp",),
                       management=True),
    "rabbitpy": Suite("rabbitpy", "3.0.2", ["tests/test_integration.py", "tests/integration"]),
    # dramatiq's RabbitMQ broker tests, from its repository (the sdist has no conftest.py);
    # they connect to 127.0.0.1:5672 only
    "dramatiq": Suite("dramatiq", "2.2.0", ["tests/test_rabbitmq.py"], fixed_ports=("amqp",),
                      git_tag="v2.2.0", git_paths=("tests",)),
    # FastStream's RabbitMQ tests (over aio-pika), from its repository (the sdist has no
    # tests), with its own test dependencies (pytest-asyncio: aio-pika's suite uses
    # aiomisc-pytest); the other brokers' extras only because some test modules import them
    # rstream's own tests (RabbitMQ's Python stream client), from its repository at the tag
    # of its release (the sdist has none): the stream port and the management API on
    # localhost's standard ports (several tests name them), the broker advertising
    # "localhost" (as its CI's RabbitMQ does); not its cluster tests
    "rstream": Suite("rstream", "1.0.1", ["tests"], ["--ignore", "tests/test_cluster.py"],
                     fixed_ports=("stream", "http"), management=True, git_tag="v1.0.1",
                     git_paths=("tests", "pyproject.toml"), dependencies=(
        "rstream==1.0.1", "pytest>=8.4,<9", "pytest-asyncio>=1.2,<2", "pytest-timeout",
        "requests", "yarl")),
    # celery's own integration tests, the broker over py-amqp (celery's default) and the
    # results in Redis (celery's CI pairs them so; --redis-url): not those of the Azure,
    # memcached and SQL result backends, whose services and clients are not here
    "celery": Suite("celery", "5.7.0", ["t/integration"], [
        "-p", "celery.contrib.pytest", "--ignore", "t/integration/test_backend.py",
        "--ignore", "t/integration/test_cache_backend.py",
        "--ignore", "t/integration/test_database_backend.py"], redis=True, dependencies=(
        "celery[redis]==5.7.0", "pytest>=8,<10", "pytest-rerunfailures", "pytest-subtests",
        "pytest-timeout", "pytest-order", "pytest-click", "freezegun", "yarl", "pydantic",
        "cryptography", "django")),
    # RabbitMQ's own AMQP 1.0 client for RabbitMQ 4 (queues, exchanges and bindings through
    # the management node /management, publishers, consumers, streams), from its repository
    # at the tag of its release (the sdist has no tests): AMQP on localhost:5672, AMQPS on
    # 5671 and the management API on 15672 only; its CI's RabbitMQ has the certificates in
    # its .ci/certs and the OAuth 2 backend with one HS256 key (.ci/ubuntu/advanced.config):
    # ours is started so too
    "rabbitmq-amqp": Suite(
        "rabbitmq-amqp", "0.6.0", ["tests"], package="rabbitmq-amqp-python-client",
        fixed_ports=("amqp", "amqps", "http"), management=True, git_tag="v0.6.0",
        git_paths=("tests", "pyproject.toml", ".ci/certs"), dependencies=(
            "rabbitmq-amqp-python-client==0.6.0", "pytest>=8.3,<9", "pytest-asyncio>=1.2,<2",
            "pytest-timeout", "pyjwt>=2.10,<3", "pika>=1.3.2", "requests>=2.31", "yarl"),
        broker_args=(
            "--tls-cert", "{src}/.ci/certs/server_localhost_certificate.pem",
            "--tls-key", "{src}/.ci/certs/server_localhost_key.pem",
            "--tls-ca", "{src}/.ci/certs/ca_certificate.pem", "--tls-verify", "peer",
            "--auth-backends", "internal,oauth2",
            "--oauth2-signing-keys", "token-key={src}/token-key.jwk"),
        prepare=lambda src: prepare_rabbitmq_amqp(src)),
    "faststream": Suite("faststream", "0.7.4", ["tests/brokers/rabbit"], ["-m", "rabbit"],
                        fixed_ports=("amqp",), git_tag="0.7.4", git_paths=("tests", "pyproject.toml"),
                        dependencies=(
        "faststream[rabbit,nats,redis,kafka,confluent,mqtt,cli,prometheus,otel]==0.7.4",
        "aio-pika==10.2.1", "dirty-equals==0.11", "httpx==0.28.1", "pytest==9.0.3",
        "pytest-asyncio==1.3.0", "pytest-timeout", "freezegun", "fastapi==0.140.0",
        "pydantic-settings>=2,<3", "PyYAML", "email-validator", "msgspec", "uvicorn",
        "uvloop", "psutil")),
}


def prepare_rabbitmq_amqp(src: Path) -> None:
    """rabbitmq-amqp-python-client's CI configuration, as our broker reads it: its OAuth 2
    signing key (advanced.config's) as a JWK file, and its certificates renewed."""
    (src / "token-key.jwk").write_text(
        '{"kty": "oct", "alg": "HS256", "kid": "token-key", '
        '"k": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH"}')
    renew_certificates(src / ".ci" / "certs")


def renew_certificates(certs: Path) -> None:
    """rabbitmq-amqp-python-client's test certificates (server_localhost_*, client_localhost_*)
    expired on 2026-03-31, and fail against any broker since: issue them again from its own
    CA (its ca_key.pem), with their names and keys, valid from yesterday for a year, as its
    CI's tls-gen would make them anew."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID
    ca = x509.load_pem_x509_certificate((certs / "ca_certificate.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((certs / "ca_key.pem").read_bytes(), None)
    now = dt.datetime.now(dt.timezone.utc)
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH),
                        ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        old = x509.load_pem_x509_certificate(
            (certs / f"{role}_localhost_certificate.pem").read_bytes())
        key = serialization.load_pem_private_key(
            (certs / f"{role}_localhost_key.pem").read_bytes(), None)
        cert = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                .add_extension(x509.ExtendedKeyUsage([usage]), False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                               False)
                .sign(ca_key, hashes.SHA256()))
        (certs / f"{role}_localhost_certificate.pem").write_bytes(
            cert.public_bytes(serialization.Encoding.PEM))


FIXED = {"amqp": 5672, "amqps": 5671, "stream": 5552, "http": 15672}


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- set-up
def ensure_venv(workdir: Path, suite: Suite) -> Path:
    """A venv with the suite's test dependencies: the shared one (it sees the system's
    packages too), or the suite's own (it sees only what it installs)."""
    own = bool(suite.dependencies)
    venv = workdir / (f"venv-{suite.name}" if own else "venv")
    dependencies = list(suite.dependencies or TEST_DEPENDENCIES)
    python = venv / "bin" / "python"
    stamp = venv / "deps-installed"
    if stamp.exists() and stamp.read_text() == "\n".join(dependencies):
        return python
    log(f"setting up {venv}")
    if not python.exists():       # never recreated: another run may be using it
        subprocess.run([sys.executable, "-m", "venv", *([] if own else
                        ["--system-site-packages"]), str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *dependencies], check=True)
    stamp.write_text("\n".join(dependencies))
    return python


def fetch(suite: Suite, workdir: Path, label: str, git_clones: dict[str, str]) -> Path:
    """Unpack the suite's published source into ``<workdir>/src/<label>`` (afresh every run;
    one directory per label, so runs against two brokers can go on side by side)."""
    src = workdir / "src" / label / suite.source_dir_name
    if src.exists():
        shutil.rmtree(src)
    src.parent.mkdir(parents=True, exist_ok=True)
    if suite.git_tag:
        clone = git_clones.get(suite.name)
        if not clone:
            option = f"--{suite.name}-git"
            raise SystemExit(f"{suite.name}'s sdist lacks its tests: give a clone of its git "
                             f"repository with {option} PATH (or "
                             f"{option[2:].upper().replace('-', '_')}=PATH)")
        git_dir = ["--git-dir", clone] if Path(clone, "HEAD").exists() else ["-C", clone]
        src.mkdir()
        archive = subprocess.run(["git", *git_dir, "archive", suite.git_tag, *suite.git_paths],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "x", "-C", str(src)], input=archive, check=True)
        return src
    sdists = workdir / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    name = suite.pypi_name
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--no-binary", name, f"{name}=={suite.version}",
                    "-d", str(sdists)], check=True)
    [sdist] = [p for p in sdists.glob("*.tar.gz")
               if p.name.lower().replace("_", "-") == f"{name}-{suite.version}.tar.gz"]
    with tarfile.open(sdist) as tar:
        tar.extractall(src.parent, filter="data")
    return src


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ----------------------------------------------------------------------------- running
def run_suite(suite: Suite, src: Path, python: Path, host: str, port: int, http_url: str,
              out: Path, timeout: int, extra: list[str], redis_url: str = "") -> dict:
    env = dict(os.environ)
    url = f"amqp://guest:guest@{host}:{port}/%2F"
    if redis_url:                                                           # celery
        r = urllib.parse.urlparse(redis_url)
        env.update({"TEST_BROKER": f"pyamqp://guest:guest@{host}:{port}//",
                    "TEST_BACKEND": redis_url, "REDIS_HOST": r.hostname or "127.0.0.1",
                    "REDIS_PORT": str(r.port or 6379)})
    env.update({
        "CLIENT_SUITES_AMQP_HOST": host, "CLIENT_SUITES_AMQP_PORT": str(port),
        "RABBITMQ_HOST": host, "RABBITMQ_5672_TCP": str(port),            # kombu, py-amqp
        "RABBITMQ_URL": url,                                               # rabbitpy
        "AMQP_HOST": host, "AMQP_USERNAME": "guest", "AMQP_PASSWORD": "guest",  # amqpstorm
        "AMQP_URI": url, "AMQP_HTTP_URL": http_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    junit = out / f"{suite.name}.xml"
    cmd = [str(python), "-m", "pytest", *suite.paths, "-p", "suite_fixtures",
           "-p", "no:cacheprovider", "-q", "-rN", f"--junitxml={junit}",
           f"--timeout={timeout}", *suite.pytest_args, *extra]
    with DockerStandIn(port) as docker, open(out / f"{suite.name}.log", "w") as logf:
        env["DOCKER_HOST"] = f"tcp://127.0.0.1:{docker.port}"
        log(f"[{suite.name}] {' '.join(cmd[1:])}  (in {src})")
        subprocess.run(cmd, cwd=src, env=env, stdout=logf, stderr=subprocess.STDOUT)
    outcomes = parse_junit(junit) if junit.exists() else {}
    (out / f"{suite.name}.json").write_text(json.dumps(outcomes, indent=0, sort_keys=True))
    return outcomes


RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def parse_junit(path: Path) -> dict[str, str]:
    """test id -> passed | failed | error | skipped."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "error" in kinds:
            outcome = "error"
        elif "failure" in kinds:
            outcome = "failed"
        elif "skipped" in kinds:
            outcome = "skipped"
        else:
            outcome = "passed"
        if RANK[outcomes.get(test_id, "passed")] > RANK[outcome]:
            continue            # the same id twice (a teardown error): keep the worse
        outcomes[test_id] = outcome
    return outcomes


def count(outcomes: dict) -> dict:
    c = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for v in outcomes.values():
        c[v] += 1
    return c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suites", help=f"default: all ({','.join(SUITES)}; celery only with "
                    "--redis-url)")
    ap.add_argument("--amqp-url", help="run against this broker instead of starting ours")
    ap.add_argument("--label", help="name of this run's results (default: ours / external)")
    ap.add_argument("--compare", help="list tests that passed in the run with this label only")
    for suite in SUITES.values():
        if suite.git_tag:       # --pika-git, --dramatiq-git, --rstream-git, --faststream-git
            ap.add_argument(f"--{suite.name}-git",
                            default=os.environ.get(f"{suite.name.upper().replace('-', '_')}_GIT"),
                            help=f"a clone of {suite.name}'s git repository (its sdist lacks "
                                 f"the tests run here)")
    ap.add_argument("--http-url", help="with --amqp-url: that broker's management API "
                    "(default: port 15672 of its host)")
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL"),
                    help="a Redis server for celery's results (redis://127.0.0.1:6379/0; "
                         "flushed by nothing here: give one of its own)")
    ap.add_argument("--stream-port", type=int, default=5552,
                    help="with --amqp-url: that broker's stream protocol port (rstream)")
    ap.add_argument("--workdir", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "amqpbroker-client-suites")
    ap.add_argument("--timeout", type=int, default=120, help="per-test timeout (seconds)")
    ap.add_argument("--broker-arg", action="append", default=[],
                    help="extra argument for our broker (repeatable), e.g. --broker-arg=--workers=2")
    ap.add_argument("--saved", action="store_true",
                    help="run nothing: count (and --compare) the results saved under --label")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # stop our brokers on the way
    names = [n.strip() for n in (args.suites or ",".join(
        n for n, x in SUITES.items() if args.redis_url or not x.redis)).split(",") if n.strip()]
    for n in names:
        if n not in SUITES:
            ap.error(f"unknown suite {n!r}: choose from {', '.join(SUITES)}")
    label = args.label or ("external" if args.amqp_url else "ours")
    workdir = args.workdir.resolve()
    out = workdir / "results" / label
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    status = 0
    if args.saved:              # count (and compare) what an earlier run saved, run nothing
        for name in names:
            saved = out / f"{name}.json"
            if saved.exists():
                results[name] = json.loads(saved.read_text())
        names = []
    for name in names:
        suite = SUITES[name]
        redis_url = args.redis_url if suite.redis else ""
        if suite.redis and not redis_url:
            log(f"[{name}] not run: its tests keep results in Redis: give --redis-url")
            status = 2
            continue
        python = ensure_venv(workdir, suite)
        src = fetch(suite, workdir, label, {n: getattr(args, f"{n.replace('-', '_')}_git")
                                            for n, x in SUITES.items() if x.git_tag})
        if suite.prepare is not None:
            suite.prepare(src)
        if args.amqp_url:
            u = urllib.parse.urlparse(args.amqp_url)
            host, port = u.hostname or "127.0.0.1", u.port or 5672
            http_url = args.http_url or f"http://{host}:15672"
            h = urllib.parse.urlparse(http_url)
            where = {"amqp": (host, port), "amqps": (host, FIXED["amqps"]),
                     "stream": (host, args.stream_port),
                     "http": (h.hostname or host, h.port or 80)}
            forwards = [(FIXED[kind], *where[kind]) for kind in suite.fixed_ports
                        if where[kind][1] != FIXED[kind]]
            busy = [listen for listen, _, _ in forwards if not port_free(listen)]
            if busy:
                log(f"[{name}] not run: its tests connect to localhost:{busy[0]}, which is in "
                    f"use (and the broker is elsewhere)")
                status = 2
                continue
            with contextlib.ExitStack() as stack:
                from amqpbroker.testing import FaultProxy
                for listen, to_host, to_port in forwards:
                    # its tests connect to localhost's standard port only: forward it
                    log(f"[{name}] forwarding localhost:{listen} to {to_host}:{to_port}")
                    stack.enter_context(FaultProxy(to_host, to_port, listen_port=listen))
                if "amqp" in suite.fixed_ports:
                    host, port = "127.0.0.1", FIXED["amqp"]
                if "http" in suite.fixed_ports:
                    http_url = f"http://127.0.0.1:{FIXED['http']}"
                results[name] = run_suite(suite, src, python, host, port, http_url, out,
                                          args.timeout, args.pytest_args, redis_url)
            continue
        from amqpbroker.testing import BrokerProcess
        busy = [FIXED[kind] for kind in suite.fixed_ports if not port_free(FIXED[kind])]
        if busy:
            log(f"[{name}] not run: its tests connect to localhost:{busy[0]}, which is in use")
            status = 2
            continue
        with tempfile.TemporaryDirectory(prefix=f"client-suite-{name}-") as data:
            broker_args = ["--log-level", "error", *args.broker_arg]
            if "amqp" in suite.fixed_ports:
                broker_args += ["--port", str(FIXED["amqp"])]
            if "stream" in suite.fixed_ports:
                broker_args += ["--stream-port", str(FIXED["stream"]),
                                "--stream-advertised-host", "localhost"]
            if "http" in suite.fixed_ports:
                broker_args += ["--management-port", str(FIXED["http"])]
            if "amqps" in suite.fixed_ports:
                broker_args += ["--tls-port", str(FIXED["amqps"])]
            broker_args += [a.replace("{src}", str(src)) for a in suite.broker_args]
            broker = BrokerProcess(data, *broker_args, management=suite.management,
                                   env={"PYTHONPATH": str(ROOT)}).start()
            try:
                http_url = f"http://{broker.host}:{broker.management_port}"
                results[name] = run_suite(suite, src, python, broker.host, broker.port,
                                          http_url, out, args.timeout, args.pytest_args,
                                          redis_url)
            finally:
                broker.stop()
                # what the broker logged at level error (a suite may pass over a broker error)
                errors = broker.save_output(out / f"{name}.broker.log")
                log(f"[{name}] the broker logged {errors} lines at level error "
                    f"({name}.broker.log)")
    log("")
    log(f"{'suite':10} {'tests':>6} {'passed':>7} {'failed':>7} {'errors':>7} {'skipped':>8}"
        f"   ({label}; logs in {out})")
    total = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for name, outcomes in results.items():
        c = count(outcomes)
        for k in total:
            total[k] += c[k]
        log(f"{name:10} {len(outcomes):>6} {c['passed']:>7} {c['failed']:>7} {c['error']:>7} "
            f"{c['skipped']:>8}")
    log(f"{'total':10} {sum(total.values()):>6} {total['passed']:>7} {total['failed']:>7} "
        f"{total['error']:>7} {total['skipped']:>8}")
    if args.compare:
        log(f"\npassed in '{args.compare}', not here:")
        for name, outcomes in results.items():
            ref_file = workdir / "results" / args.compare / f"{name}.json"
            if not ref_file.exists():
                log(f"  [{name}] no '{args.compare}' results")
                continue
            ref = json.loads(ref_file.read_text())
            lost = sorted(t for t, o in ref.items() if o == "passed"
                          and outcomes.get(t) != "passed")
            # a reference run of only some tests (-k) checks only those: say what it missed
            unchecked = sorted(t for t, o in outcomes.items()
                               if o in ("failed", "error") and t not in ref)
            log(f"  [{name}] {len(lost)}" + (f" (and {len(unchecked)} that failed here were "
                                            f"not run in '{args.compare}')" if unchecked else ""))
            for t in lost:
                log(f"    {t}: {outcomes.get(t, 'not run')}")
    return status


if __name__ == "__main__":
    sys.exit(main())
