"""The files in etc/examples/ and docs/embedding_example.py, run for real.

Each example runs in this reactor with its well-known ports replaced by free ones. The
Galera example carries a real MariaDB client session (127.0.0.1:3306, which this kind of
machine runs; CI must have it), the SOCKS gateway a real curl, the RabbitMQ one a real
RabbitMQ (CI enables its STOMP plugin).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web import resource, server

from socketeer.cli.main import main as cli_main
from socketeer.config.keys import GENERAL_KEYS
from socketeer.config.load import load_config

from support import ROOT
from support.net import connect, echo_server, free_port, until
from support.ops import start_service
from support.twistd import child_env

EXAMPLES = ROOT / "etc" / "examples"
MARIADB = ("127.0.0.1", 3306)


def reachable(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=2).close()
        return True
    except OSError:
        return False


def example(name: str, replacements: dict[str, str]) -> str:
    """An example file's text with each key of *replacements* (a regex) substituted."""
    text = (EXAMPLES / name).read_text()
    for pattern, repl in replacements.items():
        text, n = re.subn(pattern, repl, text)
        assert n, f"{name}: {pattern!r} not found"
    return text


def free_serverports(text: str) -> tuple[str, dict[str, int]]:
    """Every ``<id>.serverport=`` on a free loopback port; returns the text and id -> port."""
    ports: dict[str, int] = {}

    def repl(m: re.Match) -> str:
        ports[m.group(1)] = free_port()
        return f"sourcesink.{m.group(1)}.serverport=tcp:{ports[m.group(1)]}:interface=127.0.0.1"

    return re.sub(r"sourcesink\.([\w-]+)\.serverport=\S+", repl, text), ports


async def stop_all(roots: list) -> None:
    for root in reversed(roots):
        await root.stopService()


# -- every example is a valid configuration ----------------------------------------------


@pytest.mark.parametrize(
    "path",
    # The TLS example needs its certificates first: test_tls_example makes them.
    [p for p in sorted(EXAMPLES.glob("*.properties")) if not p.name.startswith("tls-")]
    + [ROOT / "etc" / "socketeer.properties"],
)
def test_example_checks_clean(path):
    config = load_config(path)
    assert config.warnings == ()
    out, err = io.StringIO(), io.StringIO()
    assert cli_main(["check", "--strict", str(path)], out, err) == 0, err.getvalue()
    assert "change-this-passcode" not in out.getvalue()  # secrets masked


# -- Galera across two sites, with a real MariaDB client ---------------------------------

need_mariadb = pytest.mark.skipif(
    not os.environ.get("CI") and not (shutil.which("mariadb") and reachable(MARIADB)),
    reason="no MariaDB on 127.0.0.1:3306 or no mariadb client (CI has both)",
)


def galera_site(name: str, broker: int, status: int) -> tuple[str, dict[str, int]]:
    text = example(
        name,
        {
            r"messagingserverinterface=0\.0\.0\.0": "messagingserverinterface=127.0.0.1",
            r"messagingserverport=61626": f"messagingserverport={broker}",
            r"@(127\.0\.0\.1|host-a\.example\.org):61626/": f"@127.0.0.1:{broker}/",
            r"statusserverport=9626": f"statusserverport={status}",
        }
        if "site-a" in name
        else {
            r"@host-a\.example\.org:61626/": f"@127.0.0.1:{broker}/",
            r"statusserverport=9626": f"statusserverport={status}",
        },
    )
    text, ports = free_serverports(text)
    # Both "sites" are this host: each node's loopback address is 127.0.0.1 here.
    return re.sub(r"127\.0\.0\.[23]\b", "127.0.0.1", text), ports


async def mariadb(port: int, query: str) -> str:
    out, err, code = await getProcessOutputAndValue(
        shutil.which("mariadb") or "mariadb",
        ["--protocol=TCP", "-h", "127.0.0.1", "-P", str(port), "-u", "root", "-N", "-B"]
        + ["--connect-timeout=20", "-e", query],
        env=dict(os.environ),
    ).addTimeout(60, reactor)
    assert code == 0, err.decode()
    return out.decode()


@need_mariadb
@pytest_twisted.ensureDeferred
async def test_galera_example_carries_a_mariadb_session():
    broker = free_port()
    text_a, ports_a = galera_site("galera-site-a.properties", broker, free_port())
    text_b, ports_b = galera_site("galera-site-b.properties", broker, free_port())
    assert set(ports_a) == {"a-mysql", "a-sst", "a-gcomm", "a-ist"}
    roots: list = []
    try:
        roots.append(await start_service(text_a, "galera-site-a.properties"))
        roots.append(await start_service(text_b, "galera-site-b.properties"))
        site_a, site_b = roots
        # Site A's clients reach MariaDB "B" through sink b, and the other way round.
        assert await mariadb(ports_a["a-mysql"], "select 6*7") == "42\n"
        assert await mariadb(ports_b["b-mysql"], "select 6*7, @@port") == "42\t3306\n"
        assert site_a.nodes["a-mysql"].stats.streams_opened == 1
        await until(lambda: site_b.nodes["b"].stats.streams_closed == 1)
        await until(lambda: site_a.nodes["a"].stats.streams_closed == 1)
        # The other three Galera ports are forwarded the same way (a raw TCP session).
        for sid, port in ports_a.items():
            if sid != "a-mysql":
                client = await connect(port)
                client.transport.loseConnection()
    finally:
        await stop_all(roots)


# -- a SOCKS5 gateway for a browser ------------------------------------------------------


class Page(resource.Resource):
    isLeaf = True

    def render_GET(self, request) -> bytes:
        return b"through the gateway\n"


need_curl = pytest.mark.skipif(
    shutil.which("curl") is None and not os.environ.get("CI"), reason="curl is not installed"
)


@need_curl
@pytest_twisted.ensureDeferred
async def test_socks_gateway_example_serves_a_browser():
    broker = free_port()
    web = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(server.Site(Page()))
    exit_text = example(
        "socks-gateway-exit.properties",
        {
            r"messagingserverinterface=0\.0\.0\.0": "messagingserverinterface=127.0.0.1",
            r"messagingserverport=61626": f"messagingserverport={broker}",
            r"@127\.0\.0\.1:61626/": f"@127.0.0.1:{broker}/",
            # The example keeps the browser off the exit's own services; the test's web
            # server is one of them.
            r"host=localhost,": "host=",
        },
    )
    browser_text = example(
        "socks-gateway-browser.properties",
        {
            r"@exit\.example\.org:61626/": f"@127.0.0.1:{broker}/",
            r"serverport=1080": f"serverport={free_port()}",
        },
    )
    browser_text, _ = free_serverports(browser_text)
    proxy = int(re.search(r"serverport=tcp:(\d+)", browser_text).group(1))
    roots: list = []
    try:
        roots.append(await start_service(exit_text))
        roots.append(await start_service(browser_text))
        url = f"http://localhost:{web.getHost().port}/"
        for how in (
            ["--socks5-hostname", f"127.0.0.1:{proxy}"],
            ["-p", "-x", f"127.0.0.1:{proxy}"],
        ):
            out, err, code = await getProcessOutputAndValue(
                shutil.which("curl"), ["-sS", "--max-time", "20", *how, url], env=dict(os.environ)
            )
            assert (code, out) == (0, b"through the gateway\n"), err
        # SOCKS4 is off in this example: a SOCKS4 client is refused.
        out, err, code = await getProcessOutputAndValue(
            shutil.which("curl"),
            ["-sS", "--max-time", "20", "--socks4", f"127.0.0.1:{proxy}", url],
            env=dict(os.environ),
        )
        assert code != 0
    finally:
        await stop_all(roots)
        await web.stopListening()


# -- a failover pair of brokers -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_failover_example_moves_to_the_second_broker():
    listeners: list = []
    echo = await echo_server(listeners)
    b1, b2 = free_port(), free_port()
    broker_1 = example(
        "failover-broker-1.properties",
        {r"interface=0\.0\.0\.0": "interface=127.0.0.1", r"port=61626": f"port={b1}"},
    )
    broker_2 = example(
        "failover-broker-2.properties",
        {r"interface=0\.0\.0\.0": "interface=127.0.0.1", r"port=61627": f"port={b2}"},
    )
    nodes = example(
        "failover-nodes.properties",
        {
            r"broker-1\.example\.org:61626": f"127.0.0.1:{b1}",
            r"broker-2\.example\.org:61627": f"127.0.0.1:{b2}",
            r"fixedPort=8000": f"fixedPort={echo}",
        },
    )
    nodes, ports = free_serverports(nodes)
    roots: list = []
    try:
        first = await start_service(broker_1)
        roots.append(first)
        roots.append(await start_service(broker_2))
        roots.append(await start_service(nodes))
        si, so = roots[2].nodes["si"], roots[2].nodes["so"]

        async def echoes(payload: bytes) -> None:
            client = await connect(ports["so"])
            client.transport.write(payload)
            await until(lambda: bytes(client.data) == payload)
            client.transport.loseConnection()

        await echoes(b"via broker 1")
        assert len(first.getServiceNamed("broker").factory.connections) == 2
        # Broker 1 goes away; both nodes find broker 2 and the forward works again.
        roots.remove(first)
        listener = first.getServiceNamed("broker")
        await first.stopService()
        for proto in list(listener.factory.connections):
            proto.transport.abortConnection()
        await until(lambda: si.connected and so.connected and so.stats.channel_connects == 2)
        assert so.snapshot().channel.broker == f"127.0.0.1:{b2}"
        await echoes(b"via broker 2")
    finally:
        await stop_all(roots)
        for p in listeners:
            await p.stopListening()


# -- RabbitMQ as the broker -----------------------------------------------------------------

RABBIT = ("127.0.0.1", 61613)


@pytest.mark.skipif(
    not os.environ.get("CI") and not reachable(RABBIT),
    reason="RabbitMQ STOMP is not on 127.0.0.1:61613 (CI enables rabbitmq_stomp)",
)
@pytest_twisted.ensureDeferred
async def test_rabbitmq_example():
    listeners: list = []
    echo = await echo_server(listeners)
    topic = "ex" + os.urandom(6).hex()  # runs never see each other
    text = example(
        "rabbitmq.properties",
        {r"/socketeer\?vhost=/": f"/{topic}?vhost=/", r"fixedPort=8000": f"fixedPort={echo}"},
    )
    text, ports = free_serverports(text)
    root = await start_service(text)
    try:
        client = await connect(ports["so"])
        client.transport.write(b"through RabbitMQ")
        await until(lambda: bytes(client.data) == b"through RabbitMQ")
        client.transport.loseConnection()
    finally:
        await root.stopService()
        for p in listeners:
            await p.stopListening()


# -- TLS with a private CA ------------------------------------------------------------------

BROKER_TLS_KEYS = "socketeer.general.messagingserversslport" in GENERAL_KEYS


@pytest.mark.skipif(
    not BROKER_TLS_KEYS, reason="this tree has no broker TLS keys (channel security work)"
)
@pytest.mark.skipif(
    shutil.which("openssl") is None and not os.environ.get("CI"), reason="no openssl"
)
@pytest_twisted.ensureDeferred
async def test_tls_example_with_a_private_ca(tmp_path):
    listeners: list = []
    echo = await echo_server(listeners)
    out, err, code = await getProcessOutputAndValue(
        "/bin/sh",
        [str(EXAMPLES / "tls" / "make-certs.sh"), str(tmp_path / "tls"), "broker.example.org"],
        env=dict(os.environ),
    ).addTimeout(60, reactor)
    assert code == 0, err
    tls_port = free_port()
    broker = example(
        "tls-broker.properties",
        {r"interface=0\.0\.0\.0": "interface=127.0.0.1", r"61627": str(tls_port)},
    )
    source = example(
        "tls-source.properties",
        # The certificate covers localhost as well as the broker's name.
        {
            r"broker\.example\.org:61627": f"localhost:{tls_port}",
            r"fixedPort=8000": f"fixedPort={echo}",
        },
    )
    source, ports = free_serverports(source)
    roots: list = []
    try:
        for name, text in (("tls-broker.properties", broker), ("tls-source.properties", source)):
            path = tmp_path / name  # relative certificate paths resolve next to it
            path.write_text(text)
            out, err = io.StringIO(), io.StringIO()
            assert cli_main(["check", "--strict", "-q", str(path)], out, err) == 0, err.getvalue()
            roots.append(await start_service(text, str(path)))
        config = load_config(tmp_path / "tls-broker.properties")
        assert config.broker.listen is None and config.broker.tls.client_ca
        client = await connect(ports["so"])
        client.transport.write(b"over TLS")
        await until(lambda: bytes(client.data) == b"over TLS")
        client.transport.loseConnection()
    finally:
        await stop_all(roots)
        for p in listeners:
            await p.stopListening()


# -- embedding ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_embedding_example_runs():
    out, err, code = await getProcessOutputAndValue(
        sys.executable, [str(ROOT / "docs" / "embedding_example.py")], env=child_env()
    ).addTimeout(60, reactor)
    assert code == 0, err.decode()
    assert out.decode().splitlines() == [
        "configured forward: hello, configured forward",
        "own listener: hello, own listener",
        "streams opened by node fwd: 2",
    ]


def test_examples_are_listed_in_their_readme():
    listed = (EXAMPLES / "README.rst").read_text()
    for path in EXAMPLES.iterdir():
        if path.name != "README.rst":
            assert path.name in listed, path.name
