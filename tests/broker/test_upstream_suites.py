"""stomp.py's and stompest's own test suites, run against the embedded broker.

The embedded broker is a general STOMP broker that other clients may use, so the two Python
STOMP clients' own integration tests must pass against it. Their code is not in this
repository: it is obtained at test time, at a pinned version, from PyPI (reachable from CI;
GitHub is not):

* **stomp.py** ``STOMP_PY``: ``pip download --no-binary :all:`` of its sdist, which ships
  the client and its tests together (``stomp/test``). 4.1.24 is the newest release whose
  sdist has them: from 6.0 the sdists are built by poetry without ``tests/``, and the wheels
  never had them. The suite runs with that version's own client (the extracted sdist comes
  first on ``sys.path``), configured by its own mechanism: ``stomp/test/setup.ini`` (written
  here, every broker section pointing at the embedded broker) and its ``STD_*``,
  ``RABBITMQ_*``, ``STOMPSERVER_*``, ``APOLLO_*`` and ``IPV6_*`` environment variables.
* **stompest** ``STOMPEST``: Socketeer's own dependency, whose distribution ships its tests
  (``stompest.tests``); the installed version must be the pinned one. Its broker settings are
  the module constants of ``stompest.tests`` (the file upstream asks you to edit): a small
  pytest plugin written here sets them (``BROKER = "apollo"``: a login, a passcode and a
  virtual host, and the unicode-header test is not skipped as it is for RabbitMQ).

Each test file runs in its own ``python -m pytest`` process against its own broker (own
router, ports and users), so files run at once without seeing each other's queues; they
mostly wait, so this costs little CPU. The brokers are real :class:`BrokerFactory` services
on loopback ports (plain on 127.0.0.1 and ::1, TLS with a fresh self-signed certificate) with
the users the suites log in as; the admin's passcode is a PBKDF2 hash, so every CONNECT goes
through the off-reactor login path. The server heart-beat is 1 s (the configured default is
10 s), which keeps stompest's heart-beat test at seconds instead of most of a minute.

Left out, each for something that is not the broker's STOMP (see ``EXCLUDED``). In CI (``CI``
set) a failed download fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue

from socketeer.broker.listeners import server_options, tls_server_factory
from socketeer.broker.protocol import BrokerFactory
from socketeer.broker.router import Router
from socketeer.config.model import LoginLimits
from socketeer.logins import Logins
from socketeer.passwords import hash_password

from support.security import make_cert

STOMP_PY = "4.1.24"
STOMPEST = "2.3.0"

#: Upstream tests left out, and why: each needs something that is not STOMP.
EXCLUDED: dict[str, str] = {
    "stomp/test/p2_backward_test.py": "Python 2 only (upstream's own list leaves it out on 3)",
    "stomp/test/ssl_sni_test.py": (
        "needs haproxy routing TLS by SNI and /etc/hosts entries for my.example.com "
        "(see its docstring); SNI routing is a proxy's job, not the broker's"
    ),
    "stomp/test/override_threading_test.py": (
        "races two client threads: its listener reconnects from the receiver thread as the "
        "old connection's loop ends while the test's own thread reconnects too, and one of "
        "them finds the transport's shared current_host_and_port None (TypeError in "
        "on_connecting); it fails about every other run whatever the broker"
    ),
    "stomp/test/basic_test.py::TestBasicSend::test_timeout": (
        "needs a network that silently drops packets to 192.0.2.0 (TEST-NET-1) so that a "
        "connect times out after 5 s; where it is refused at once (EHOSTUNREACH) the "
        "assertion fails. It never reaches a broker"
    ),
}

#: Files that must run one after the other, in one process: their fake server (testutils'
#: TestStompServer, for client-side checks) always binds 127.0.0.1:60000.
FAKE_SERVER = (
    "stomp/test/misc_test.py",
    "stomp/test/s11_test.py",
    "stomp/test/s12_test.py",
    "stomp/test/ss_test.py",
)

#: Files written for a broker that takes anonymous logins (the stompserver gem): theirs has
#: no users.
ANONYMOUS = ("stomp/test/stompserver_test.py",)

#: The logins the suites use (stomp.py's ActiveMQ/Apollo "admin", its RabbitMQ "guest").
ADMIN_PASSWORD = "password"
USERS = {
    "admin": hash_password(ADMIN_PASSWORD, iterations=20000),
    "guest": "guest",
}

#: Wall-clock limit for one upstream test file.
FILE_TIMEOUT = 150
#: Test files running at once.
CONCURRENCY = 8

IN_CI = bool(os.environ.get("CI"))

#: Both suites together take about 70 s (their own sleeps); more headroom than setup.cfg's
#: 180 s for a loaded CI machine.
pytestmark = pytest.mark.timeout(400)


def _unavailable(reason: str) -> None:
    """No upstream tests: a failure in CI, a skip elsewhere."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def ipv6_loopback() -> bool:
    """Can we listen on ::1? (Containers often have no IPv6; stomp.py's IPv6 test then
    cannot run.)"""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# -- brokers -----------------------------------------------------------------------------------


@dataclass
class Ports:
    plain: int
    tls: int
    ipv6: int | None


class Brokers:
    """Embedded brokers on fresh loopback ports, one per upstream test file."""

    def __init__(self, cert_dir: Path) -> None:
        identity = make_cert(cert_dir, "broker", None, ("localhost", "127.0.0.1"))
        self.tls = server_options(str(identity.cert_path), str(identity.key_path))
        self.logins = Logins(LoginLimits(), reactor)
        self.listening: list = []
        self.factories: list[BrokerFactory] = []
        self.ipv6 = ipv6_loopback()

    async def start(self, users: dict[str, str] | None = USERS) -> Ports:
        """A broker of its own; ``users=None``: anyone may log in."""
        factory = BrokerFactory(
            Router(), reactor, users=users, heartbeat_ms=(1000, 1000), logins=self.logins
        )
        self.factories.append(factory)
        plain = reactor.listenTCP(0, factory, interface="127.0.0.1")
        tls = reactor.listenTCP(0, tls_server_factory(self.tls, factory), interface="127.0.0.1")
        self.listening += [plain, tls]
        ipv6 = None
        if self.ipv6:
            v6 = reactor.listenTCP(0, factory, interface="::1")
            self.listening.append(v6)
            ipv6 = v6.getHost().port
        return Ports(plain.getHost().port, tls.getHost().port, ipv6)

    async def stop(self) -> None:
        for factory in self.factories:
            for proto in list(factory.connections):
                proto.transport.abortConnection()
        await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.listening])


@pytest_twisted.async_yield_fixture
async def brokers(tmp_path):
    b = Brokers(tmp_path)
    yield b
    await b.stop()


# -- running upstream files ---------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    passed: int
    failed: int
    skipped: int
    output: str


async def run_pytest(name: str, args: list[str], env: dict[str, str], cwd: Path) -> Outcome:
    """``python -m pytest args`` in *cwd*; counts from its JUnit XML report."""
    report = cwd / f"report-{re.sub(r'[^A-Za-z0-9]+', '_', name)}.xml"
    argv = [
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:twisted",  # the upstream suites are plain threads and sockets
        "-o",
        "python_files=*_test.py",
        "-o",
        "addopts=",
        f"--timeout={FILE_TIMEOUT}",
        f"--junitxml={report}",
        *args,
    ]
    out, err, code = await getProcessOutputAndValue(
        sys.executable, argv, env=env, path=str(cwd), reactor=reactor
    )
    output = (out + err).decode("utf-8", "replace")
    passed = failed = skipped = 0
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            elif case.find("skipped") is not None:
                skipped += 1
            else:
                passed += 1
    if code != 0 and not failed:
        failed = 1  # a crash or a collection error: no report worth the name
    return Outcome(name, passed, failed, skipped, output)


async def run_all(jobs: list) -> list[Outcome]:
    """Run the (name, coroutine factory) jobs, at most CONCURRENCY at once; a job that
    failed runs once more, alone (some upstream tests are timing-sensitive on a loaded
    machine: a failure that is ours fails again, and both outputs are kept)."""
    gate = defer.DeferredSemaphore(CONCURRENCY)
    outcomes = await defer.gatherResults(
        [gate.run(lambda job=job: defer.ensureDeferred(job())) for job in jobs],
        consumeErrors=True,
    )
    for i, (job, outcome) in enumerate(zip(jobs, outcomes, strict=True)):
        if outcome.failed:
            again = await job()
            if again.failed:
                outcomes[i] = again._replace(
                    output=outcome.output + "\n--- again ---\n" + again.output
                )
            else:
                print(f"upstream: {outcome.name} failed once under load, passed alone")
                outcomes[i] = again
    return outcomes


def check(outcomes: list[Outcome], at_least: int) -> None:
    failed = [o for o in outcomes if o.failed]
    report = "\n\n".join(f"== {o.name}\n{o.output[-6000:]}" for o in failed)
    assert not failed, f"upstream tests failed against the embedded broker:\n{report}"
    passed = sum(o.passed for o in outcomes)
    skipped = sum(o.skipped for o in outcomes)
    print(f"upstream: {passed} passed, {skipped} skipped by the suite itself")
    assert passed >= at_least, "fewer upstream tests ran than expected"


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST"))}
    env.update(extra)
    return env


# -- stomp.py -------------------------------------------------------------------------------------


SETUP_INI = """\
# Written by Socketeer's tests/broker/test_upstream_suites.py: every broker section points
# at the embedded broker (hosts and ports also come from the environment).
[default]
host = 127.0.0.1
port = 0
ssl_port = 0
user = admin
password = {password}

[ipv6]
host = ::1
port = 0

[rabbitmq]
host = 127.0.0.1
port = 0
user = guest
password = guest

[stompserver]
host = 127.0.0.1
port = 0

[apollo]
host = 127.0.0.1
port = 0

[sni]
host = my.example.com
ssl_port = 0
"""

#: A pytest plugin for the stomp.py run: Python 3.9 dropped Thread.isAlive, which
#: threading_test's tearDown still calls.
STOMP_PY_COMPAT = """\
import threading

if not hasattr(threading.Thread, "isAlive"):
    threading.Thread.isAlive = threading.Thread.is_alive
"""


@pytest.fixture(scope="module")
def stomp_py_tree(tmp_path_factory) -> Path:
    """stomp.py's sdist (client and tests), downloaded and unpacked."""
    where = tmp_path_factory.mktemp("stomp_py")
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"stomp.py=={STOMP_PY}",
                "-d",
                str(where),
            ],
            check=True,
            capture_output=True,
            timeout=240,
        )
    except (subprocess.SubprocessError, OSError) as e:
        detail = getattr(e, "stderr", b"") or b""
        _unavailable(
            f"cannot download stomp.py {STOMP_PY}'s sdist from PyPI: {e} "
            f"{detail.decode(errors='replace')[-500:]}"
        )
    (sdist,) = where.glob("stomp*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(where, filter="data")
    tree = where / f"stomp.py-{STOMP_PY}"
    (tree / "stomp" / "test" / "setup.ini").write_text(SETUP_INI.format(password=ADMIN_PASSWORD))
    (tree / "stomp_py_compat.py").write_text(STOMP_PY_COMPAT)
    return tree


@pytest_twisted.ensureDeferred
async def test_stomp_py_suite(stomp_py_tree, brokers):
    tree = stomp_py_tree
    tests = sorted(p.relative_to(tree).as_posix() for p in (tree / "stomp/test").glob("*_test.py"))
    files = [t for t in tests if t not in EXCLUDED]
    deselect = [f"--deselect={k}" for k in EXCLUDED if "::" in k]
    assert len(files) >= 20 and set(FAKE_SERVER + ANONYMOUS) <= set(files), tests
    groups = [[f] for f in files if f not in FAKE_SERVER] + [list(FAKE_SERVER)]

    def job(paths: list[str]):
        async def run() -> Outcome:
            anonymous = any(path in ANONYMOUS for path in paths)
            ports = await brokers.start(users=None if anonymous else USERS)
            env = child_env(
                STD_HOST="127.0.0.1",
                STD_PORT=str(ports.plain),
                STD_SSL_PORT=str(ports.tls),
                STD_USER="admin",
                STD_PASSWORD=ADMIN_PASSWORD,
                RABBITMQ_HOST="127.0.0.1",
                RABBITMQ_PORT=str(ports.plain),
                STOMPSERVER_HOST="127.0.0.1",
                STOMPSERVER_PORT=str(ports.plain),
                APOLLO_HOST="127.0.0.1",
                APOLLO_PORT=str(ports.plain),
                IPV6_HOST="::1",
                IPV6_PORT=str(ports.ipv6 or 1),
                PYTHONPATH=str(tree),  # this stomp.py, not the one installed
            )
            args = ["-p", "stomp_py_compat", *deselect, *paths]
            if ports.ipv6 is None:
                args.append("--deselect=stomp/test/local_test.py::TestIPV6Send::test_ipv6")
            return await run_pytest(" ".join(paths), args, env, tree)

        return run

    outcomes = await run_all([job(group) for group in groups])
    check(outcomes, at_least=60)


# -- stompest -------------------------------------------------------------------------------------


#: The plugin that points stompest's tests at the broker: the constants of stompest.tests,
#: and the two failover URIs of test_3_timeout that name localhost:61613 itself.
STOMPEST_SETTINGS = """\
import os

import stompest.config
import stompest.tests as settings

settings.HOST = "127.0.0.1"
settings.PORT = int(os.environ["SOCKETEER_BROKER_PORT"])
settings.PORT_SSL = int(os.environ["SOCKETEER_BROKER_SSL_PORT"])
settings.BROKER = "apollo"
settings.LOGIN, settings.PASSCODE, settings.VIRTUALHOST = "admin", {password!r}, "mybroker"

_init = stompest.config.StompConfig.__init__


def _config(self, uri, *args, **kwargs):
    _init(self, uri.replace("localhost:61613", "127.0.0.1:%d" % settings.PORT), *args, **kwargs)


stompest.config.StompConfig.__init__ = _config
"""


@pytest_twisted.ensureDeferred
async def test_stompest_suite(brokers, tmp_path):
    try:
        version = metadata.version("stompest")
    except metadata.PackageNotFoundError:
        version = None
    if version != STOMPEST:
        _unavailable(f"stompest {STOMPEST} is not installed (found {version})")
    for port in (61610, 61611):  # test_3_timeout needs nothing to listen there
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"stompest's test_3_timeout needs 127.0.0.1:{port} closed")
    (tmp_path / "stompest_socketeer.py").write_text(
        STOMPEST_SETTINGS.format(password=ADMIN_PASSWORD)
    )
    ports = await brokers.start()
    env = child_env(
        SOCKETEER_BROKER_PORT=str(ports.plain),
        SOCKETEER_BROKER_SSL_PORT=str(ports.tls),
        PYTHONPATH=str(tmp_path),
    )
    args = ["-p", "stompest_socketeer", "--pyargs", "stompest.tests.sync_client_integration_test"]
    outcome = await run_pytest("stompest", args, env, tmp_path)
    check([outcome], at_least=16)
