"""Proxy logins through real sockets: the SOCKS5 and HTTP handshakes wait for a verdict that
comes later (the hash runs off the reactor thread), survive a client that leaves meanwhile,
keep their handshake timeout, and refuse a locked-out address with the protocol's own reply.

A held runner (the tests release it) stands in for the thread pool where the order of events
matters; the lockout tests use the real thread pool.
"""

from __future__ import annotations

import base64

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from socketeer.config.model import LoginLimits
from socketeer.logins import Logins
from socketeer.passwords import hash_password
from socketeer.secret import Secret
from socketeer.source.proxy import ProxyFactory, ProxySettings

from support.logs import captured_log
from support.net import connect, echo_server, listen, until

PASSWORD = "s3cr3t-pw"
USERS = {"alice": Secret(hash_password(PASSWORD, iterations=1000))}
TIMEOUT = 20


class HeldRunner:
    """verify() computed at once, its answer held until release()."""

    def __init__(self) -> None:
        self.held: list[tuple[defer.Deferred, bool]] = []

    def __call__(self, f, *args) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.held.append((d, f(*args)))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for d, ok in held:
            d.callback(ok)


def socks5_auth(user: str, password: str) -> bytes:
    u, p = user.encode(), password.encode()
    return b"\x05\x01\x02" + b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p


def socks5_connect(port: int) -> bytes:
    return b"\x05\x01\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big")


async def closed_by_server(client) -> bytes:
    """Wait for the server's FIN, then close our side; everything the client received."""
    data = await client.eof.addTimeout(TIMEOUT, reactor)
    client.transport.loseConnection()
    await client.lost.addTimeout(TIMEOUT, reactor)
    return data


class Recorded(ProxyFactory):
    """A proxy factory that keeps its connections, so a test can wait for one to end."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.built: list = []

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        self.built.append(proto)
        return proto


async def recorded_proxy(relay, **settings) -> tuple[Recorded, int]:
    factory = Recorded(
        relay.source_node, ProxySettings(peer="si", open_timeout=10, **settings), reactor
    )
    return factory, await listen(factory, relay.ports)


def no_tracebacks(logged: list[str]) -> None:
    bad = [line for line in logged if "Traceback" in line or "Unhandled" in line]
    assert not bad, bad


@pytest_twisted.ensureDeferred
async def test_socks5_waits_for_the_verdict_then_relays(relay):
    runner = HeldRunner()
    logins = Logins(LoginLimits(), reactor, run=runner)
    proxy = await relay.proxy(authenticator=logins.door("proxy", USERS))
    echo = await echo_server(relay.ports)
    client = await connect(proxy)
    # Greeting, credentials and the request in one write: the request waits for the verdict.
    client.transport.write(socks5_auth("alice", PASSWORD) + socks5_connect(echo))
    await until(lambda: runner.held, "the hash")
    await until(lambda: bytes(client.data) == b"\x05\x02", "the method choice")
    runner.release()
    await until(lambda: len(client.data) >= 4 + 10, "the CONNECT reply")
    assert bytes(client.data[:4]) == b"\x05\x02\x01\x00"
    assert client.data[5] == 0  # succeeded
    client.transport.write(b"ping")
    await until(lambda: bytes(client.data).endswith(b"ping"), "the echo")
    client.transport.loseConnection()
    await client.lost.addTimeout(TIMEOUT, reactor)
    assert logins.counts["proxy", "ok"] == 1


@pytest_twisted.ensureDeferred
async def test_socks5_client_that_leaves_during_the_check_is_forgotten(relay):
    runner = HeldRunner()
    logins = Logins(LoginLimits(), reactor, run=runner)
    factory, proxy = await recorded_proxy(relay, authenticator=logins.door("proxy", USERS))
    echo = await echo_server(relay.ports)
    opened = relay.source_node.stats.streams_opened
    with captured_log() as logged:
        client = await connect(proxy)
        client.transport.write(socks5_auth("alice", PASSWORD) + socks5_connect(echo))
        await until(lambda: runner.held, "the hash")
        client.transport.loseConnection()
        await client.lost.addTimeout(TIMEOUT, reactor)
        await until(lambda: factory.built[0].closed, "the proxy to see the client leave")
        runner.release()  # the verdict for a connection that is gone
    assert relay.source_node.stats.streams_opened == opened
    no_tracebacks(logged)


@pytest_twisted.ensureDeferred
async def test_socks5_handshake_timeout_runs_during_the_check(relay):
    runner = HeldRunner()
    logins = Logins(LoginLimits(), reactor, run=runner)
    proxy = await relay.proxy(authenticator=logins.door("proxy", USERS), handshake_timeout=0.3)
    with captured_log() as logged:
        client = await connect(proxy)
        client.transport.write(socks5_auth("alice", PASSWORD))
        assert await closed_by_server(client) == b"\x05\x02"  # never answered
        runner.release()
    no_tracebacks(logged)


@pytest_twisted.ensureDeferred
async def test_socks5_locked_out_address_gets_the_auth_failure(relay):
    logins = Logins(LoginLimits(max_failures=2), reactor)  # the real thread pool
    proxy = await relay.proxy(authenticator=logins.door("proxy", USERS))
    for password, answer in [
        ("wrong", b"\x01\x01"),
        ("wrong", b"\x01\x01"),
        (PASSWORD, b"\x01\x01"),
    ]:
        client = await connect(proxy)
        client.transport.write(socks5_auth("alice", password))
        assert await closed_by_server(client) == b"\x05\x02" + answer
    assert logins.counts["proxy", "failed"] == 2
    assert logins.counts["proxy", "locked-out"] == 1


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


async def origin(relay) -> int:
    root = Resource()
    root.putChild(b"hello", Data(b"hello\n", "text/plain"))
    site = Site(root)
    site.noisy = False
    return await listen(site, relay.ports)


@pytest_twisted.ensureDeferred
async def test_http_request_waits_for_the_verdict(relay):
    runner = HeldRunner()
    logins = Logins(LoginLimits(), reactor, run=runner)
    proxy = await relay.proxy(authenticator=logins.door("proxy", USERS))
    web = await origin(relay)
    client = await connect(proxy)
    client.transport.write(
        f"GET http://127.0.0.1:{web}/hello HTTP/1.1\r\nHost: 127.0.0.1:{web}\r\n"
        f"Proxy-Authorization: Basic {basic('alice', PASSWORD)}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    await until(lambda: runner.held, "the hash")
    assert client.data == b""
    runner.release()
    answer = await closed_by_server(client)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert answer.endswith(b"hello\n")


@pytest_twisted.ensureDeferred
async def test_http_client_that_leaves_during_the_check_is_forgotten(relay):
    runner = HeldRunner()
    logins = Logins(LoginLimits(), reactor, run=runner)
    factory, proxy = await recorded_proxy(relay, authenticator=logins.door("proxy", USERS))
    opened = relay.source_node.stats.streams_opened
    with captured_log() as logged:
        client = await connect(proxy)
        client.transport.write(
            f"CONNECT 127.0.0.1:9 HTTP/1.1\r\n"
            f"Proxy-Authorization: Basic {basic('alice', PASSWORD)}\r\n\r\n".encode()
        )
        await until(lambda: runner.held, "the hash")
        client.transport.loseConnection()
        await client.lost.addTimeout(TIMEOUT, reactor)
        await until(lambda: factory.built[0].closed, "the proxy to see the client leave")
        runner.release()
    assert relay.source_node.stats.streams_opened == opened
    no_tracebacks(logged)


@pytest_twisted.ensureDeferred
async def test_http_locked_out_address_gets_407(relay):
    logins = Logins(LoginLimits(max_failures=1), reactor)
    proxy = await relay.proxy(authenticator=logins.door("proxy", USERS))
    web = await origin(relay)
    for password in ("wrong", PASSWORD):
        client = await connect(proxy)
        client.transport.write(
            f"GET http://127.0.0.1:{web}/hello HTTP/1.1\r\nHost: x\r\n"
            f"Proxy-Authorization: Basic {basic('alice', password)}\r\n\r\n".encode()
        )
        answer = await closed_by_server(client)
        assert answer.startswith(b"HTTP/1.1 407"), answer
    assert logins.counts["proxy", "locked-out"] == 1
