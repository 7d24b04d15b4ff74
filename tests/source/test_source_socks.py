"""The SOCKS front-end through real loopback sockets: client -> proxy port -> broker -> sink.

Real clients (curl, python-socks) and a raw byte-level SOCKS client check what goes over
the wire: reply codes from real situations (a refused port, an unresolvable name, a full
accept queue), the bound address, authentication, disabled protocols, Tor's RESOLVE
extensions, half-close, and the handshake timeout. No test sleeps: every wait is a
Deferred with a bounded timeout.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import struct
from dataclasses import dataclass

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data
from zope.interface import implementer

from socketeer.passwords import Authenticator, hash_password
from socketeer.secret import Secret
from socketeer.source.proxy import ProxyFactory, ProxySettings

from support.logs import captured_log
from support.net import Collector, Digest, MiB, free_port, listen, sha256, silent_port

TIMEOUT = 30
CURL = shutil.which("curl")
HELLO = b"hello through socks\n"
PASSWORD = "s3cr3t-pw"
WRONG_PASSWORD = "s3cr3t-wr0ng-pw"  # distinctive too: a failed attempt must not leak it

needs_curl = pytest.mark.skipif(
    CURL is None and not os.environ.get("CI"),
    reason="curl is not installed here (CI installs it, and there these tests must run)",
)


def within(d: defer.Deferred, seconds: float = TIMEOUT) -> defer.Deferred:
    return d.addTimeout(seconds, reactor)


# -- a target web server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def body() -> bytes:
    """20 MiB of random bytes, made once for the module."""
    return os.urandom(20 * MiB)


def web_site(body: bytes) -> Site:
    root = Resource()
    root.putChild(b"blob", Data(body, "application/octet-stream"))
    root.putChild(b"small", Data(body[:MiB], "application/octet-stream"))
    root.putChild(b"hello", Data(HELLO, "text/plain"))
    site = Site(root)
    site.noisy = False
    return site


async def web_server(relay, body: bytes) -> int:
    """A twisted.web server on 127.0.0.1 (closed with the relay's ports)."""
    return await listen(web_site(body), relay.ports)


# -- a raw SOCKS client ----------------------------------------------------------------------


@implementer(IHalfCloseableProtocol)
class SocksClient(Collector):
    """A byte-level client: ``received(n)`` fires with the first n bytes once they are in."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: list[tuple[int, defer.Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        for n, d in list(self._waiters):
            if len(self.data) >= n:
                self._waiters.remove((n, d))
                d.callback(bytes(self.data[:n]))

    def received(self, n: int) -> defer.Deferred:
        if len(self.data) >= n:
            return defer.succeed(bytes(self.data[:n]))
        if self.eof.called:
            return defer.fail(ConnectionDone(f"closed after {bytes(self.data)!r}"))
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((n, d))
        return d

    def _fail_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(ConnectionDone(f"closed after {bytes(self.data)!r}"))

    def readConnectionLost(self) -> None:
        super().readConnectionLost()
        self._fail_waiters()

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        self._fail_waiters()


async def socks_client(port: int) -> SocksClient:
    client = SocksClient()
    await within(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(lambda: client)
        )
    )
    return client


async def closed_by_server(client: Collector) -> bytes:
    """Wait for the server to close, close our side too; everything the client received."""
    data = await within(client.eof)
    client.transport.loseConnection()
    await within(client.lost)
    return data


def ipv4(host: str) -> bytes:
    return b"\x01" + socket.inet_aton(host)


def name(host: str) -> bytes:
    raw = host.encode("ascii")
    return b"\x03" + bytes([len(raw)]) + raw


def socks4_request(host: str, port: int, userid: bytes = b"") -> bytes:
    return b"\x04\x01" + struct.pack("!H", port) + socket.inet_aton(host) + userid + b"\x00"


SOCKS4_REJECTED_REPLY = b"\x00\x5b" + bytes(6)
NO_AUTH = b"\x05\x01\x00"  # greeting: version 5, one method, "no authentication"


@dataclass(frozen=True)
class Reply5:
    rep: int
    atyp: int
    host: str
    port: int
    raw: bytes


async def read_reply5(client: SocksClient, offset: int) -> Reply5:
    """Parse the SOCKS5 reply that starts at ``offset`` of what the client received."""
    head = await within(client.received(offset + 4))
    version, rep, rsv, atyp = head[offset : offset + 4]
    assert (version, rsv) == (5, 0), head[offset:]
    if atyp == 1:
        length = 4
    elif atyp == 4:
        length = 16
    elif atyp == 3:
        length = 1 + (await within(client.received(offset + 5)))[offset + 4]
    else:
        pytest.fail(f"reply with unknown ATYP 0x{atyp:02x}: {head[offset:]!r}")
    raw = (await within(client.received(offset + 4 + length + 2)))[offset:]
    addr = raw[4 : 4 + length]
    if atyp == 1:
        host = socket.inet_ntoa(addr)
    elif atyp == 4:
        host = str(ipaddress.IPv6Address(addr))
    else:
        assert 1 <= addr[0] == len(addr) - 1, raw
        host = addr[1:].decode("ascii")
    (port,) = struct.unpack("!H", raw[-2:])
    return Reply5(rep, atyp, host, port, raw)


async def socks5_request(proxy: int, cmd: int, address: bytes, port: int):
    """Greet without auth, send one request; (client, reply). The reply starts at byte 2."""
    client = await socks_client(proxy)
    client.transport.write(NO_AUTH + bytes([5, cmd, 0]) + address + struct.pack("!H", port))
    assert await within(client.received(2)) == b"\x05\x00"
    return client, await read_reply5(client, 2)


async def socks5_refused(proxy: int, cmd: int, address: bytes, port: int) -> Reply5:
    """A request the proxy must refuse: the reply, then the proxy closes (nothing else sent)."""
    client, reply = await socks5_request(proxy, cmd, address, port)
    assert await closed_by_server(client) == b"\x05\x00" + reply.raw
    return reply


async def http_get_via_socks5(proxy: int, address: bytes, port: int, path: bytes) -> bytes:
    """A full SOCKS5 CONNECT then an HTTP/1.0 GET; the raw response (the target closes)."""
    client, reply = await socks5_request(proxy, 1, address, port)
    assert reply.rep == 0, reply
    start = len(client.data)
    client.transport.write(b"GET " + path + b" HTTP/1.0\r\nHost: test\r\n\r\n")
    data = await closed_by_server(client)
    return data[start:]


def http_body(response: bytes) -> bytes:
    head, sep, content = response.partition(b"\r\n\r\n")
    assert sep, response[:200]
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], head
    return content


# -- target protocols ------------------------------------------------------------------------


class ProbeFactory(ProxyFactory):
    """A ProxyFactory that tells the test when its connections have received bytes."""

    def __init__(self, node, settings, clock, expect: int = 1) -> None:
        super().__init__(node, settings, clock)
        self.protocols: list = []
        self.expect = expect
        self.received: defer.Deferred = defer.Deferred()
        self._reporting = 0

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        self.protocols.append(proto)
        original = proto.dataReceived
        first = [True]

        def watch(data: bytes) -> None:
            original(data)
            if first[0]:
                first[0] = False
                self._reporting += 1
                if self._reporting == self.expect and not self.received.called:
                    self.received.callback(self.protocols)

        proto.dataReceived = watch
        proto.probe_lost = defer.Deferred()
        lost = proto.connectionLost

        def watch_lost(reason=None) -> None:
            lost(reason)
            proto.probe_lost.callback(None)

        proto.connectionLost = watch_lost
        return proto


async def run_curl(*args: str) -> tuple[bytes, bytes, int]:
    """curl with a clean environment and no ~/.curlrc; (stdout, stderr, exit code)."""
    assert CURL is not None, "curl is required in CI"
    return await within(
        getProcessOutputAndValue(
            CURL,
            ["-q", "-sS", "--fail", "--max-time", "60", *args],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        ),
        90,
    )


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- 1, 2: curl ------------------------------------------------------------------------------


@needs_curl
@pytest.mark.parametrize(
    "flag, host",
    [
        ("--socks4", "127.0.0.1"),
        ("--socks4a", "localhost"),
        ("--socks5", "127.0.0.1"),
        ("--socks5-hostname", "localhost"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_socks_front_curl_fetches_20mib(relay, body, tmp_path, flag, host):
    web = await web_server(relay, body)
    proxy = await relay.proxy()
    out = tmp_path / "out"
    stdout, stderr, code = await run_curl(
        flag, f"127.0.0.1:{proxy}", "-o", str(out), f"http://{host}:{web}/blob"
    )
    assert code == 0, stderr
    data = out.read_bytes()
    assert len(data) == len(body)
    assert sha256(data) == sha256(body)


@needs_curl
@pytest.mark.skipif(not ipv6_loopback_available(), reason="::1 cannot be bound on this machine")
@pytest_twisted.ensureDeferred
async def test_socks_front_curl_ipv6_target(relay, body, tmp_path):
    port = await serverFromString(reactor, r"tcp6:0:interface=\:\:1").listen(web_site(body))
    relay.ports.append(port)
    web = port.getHost().port
    proxy = await relay.proxy()
    out = tmp_path / "out"
    stdout, stderr, code = await run_curl(
        "-g", "--socks5", f"127.0.0.1:{proxy}", "-o", str(out), f"http://[::1]:{web}/small"
    )
    assert code == 0, stderr
    assert sha256(out.read_bytes()) == sha256(body[:MiB])


# -- 3: reply codes from real situations -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_socks5_front_refused_port_is_0x05(relay):
    proxy = await relay.proxy()
    reply = await socks5_refused(proxy, 1, ipv4("127.0.0.1"), free_port())
    assert reply.rep == 0x05


@pytest_twisted.ensureDeferred
async def test_socks5_front_unresolvable_name_is_0x04(relay):
    proxy = await relay.proxy()
    reply = await socks5_refused(proxy, 1, name("nonexistent.invalid"), 80)
    assert reply.rep == 0x04


@pytest_twisted.ensureDeferred
async def test_socks5_front_connect_timeout_is_0x06(relay):
    """A target whose accept queue is full drops SYNs: the sink's connect times out."""
    with silent_port() as port:
        relay.sink.connect_timeout = 0.5
        proxy = await relay.proxy()
        reply = await socks5_refused(proxy, 1, ipv4("127.0.0.1"), port)
        if reply.rep == 0:  # not an AssertionError: a broken setup must not pass as the xfail
            raise RuntimeError("the target accepted: its accept queue was not full")
        assert reply.rep == 0x06


@pytest_twisted.ensureDeferred
async def test_socks5_front_bind_is_0x07(relay):
    proxy = await relay.proxy()
    reply = await socks5_refused(proxy, 2, ipv4("0.0.0.0"), 0)
    assert reply.rep == 0x07


@pytest_twisted.ensureDeferred
async def test_socks5_front_udp_associate_is_0x07(relay):
    proxy = await relay.proxy()
    reply = await socks5_refused(proxy, 3, ipv4("0.0.0.0"), 0)
    assert reply.rep == 0x07


@pytest_twisted.ensureDeferred
async def test_socks5_front_unknown_atyp_is_0x08(relay):
    proxy = await relay.proxy()
    client = await socks_client(proxy)
    client.transport.write(NO_AUTH + b"\x05\x01\x00\x02" + bytes(6))
    data = await closed_by_server(client)
    assert data[:2] == b"\x05\x00"
    assert data[2:4] == b"\x05\x08"
    assert len(data) == 2 + 10  # a well-formed reply: ATYP 1, 0.0.0.0:0
    assert data[5] == 1


@pytest_twisted.ensureDeferred
async def test_socks5_front_userpass_only_without_auth_is_05ff(relay):
    proxy = await relay.proxy()
    client = await socks_client(proxy)
    client.transport.write(b"\x05\x01\x02")
    assert await closed_by_server(client) == b"\x05\xff"


@pytest_twisted.ensureDeferred
async def test_socks5_front_bound_address_is_sinks_outbound_socket(relay):
    accepted: defer.Deferred = defer.Deferred()

    def make() -> Collector:
        target = Collector()
        target.made.addCallback(lambda t: accepted.callback(t))
        return target

    web = await listen(protocol.Factory.forProtocol(make), relay.ports)
    proxy = await relay.proxy()
    client, reply = await socks5_request(proxy, 1, ipv4("127.0.0.1"), web)
    target = await within(accepted)
    peer = target.transport.getPeer()
    assert reply.rep == 0
    assert reply.atyp == 1
    assert (reply.host, reply.port) == (peer.host, peer.port)
    client.transport.write(b"through")
    client.transport.loseWriteConnection()
    assert await within(target.eof) == b"through"
    target.transport.loseConnection()
    await within(target.lost)
    assert await closed_by_server(client) == b"\x05\x00" + reply.raw


# -- 4: authentication -----------------------------------------------------------------------


async def auth_proxy(relay) -> int:
    users = {"alice": Secret(hash_password(PASSWORD, iterations=1000))}
    return await relay.proxy(authenticator=Authenticator(users))


def assert_no_password_in(logged: list[str]) -> None:
    assert any("authentication failed" in text for text in logged), logged
    leaks = [text for text in logged if PASSWORD in text or WRONG_PASSWORD in text]
    assert not leaks


@needs_curl
@pytest_twisted.ensureDeferred
async def test_socks_front_auth_curl(relay, body, tmp_path):
    web = await web_server(relay, body)
    proxy = await auth_proxy(relay)
    url = f"http://localhost:{web}/hello"
    with captured_log(with_fields=True) as logged:
        # The right password: curl gets through.
        good = tmp_path / "good"
        stdout, stderr, code = await run_curl(
            "--socks5-hostname",
            f"127.0.0.1:{proxy}",
            "--proxy-user",
            f"alice:{PASSWORD}",
            "-o",
            str(good),
            url,
        )
        assert code == 0, stderr
        assert good.read_bytes() == HELLO

        # A wrong password: curl fails, and nothing is written.
        bad = tmp_path / "bad"
        stdout, stderr, code = await run_curl(
            "--socks5-hostname",
            f"127.0.0.1:{proxy}",
            "--proxy-user",
            f"alice:{WRONG_PASSWORD}",
            "-o",
            str(bad),
            url,
        )
        assert code != 0
        assert not bad.exists() or bad.read_bytes() == b""
    assert_no_password_in(logged)


@pytest_twisted.ensureDeferred
async def test_socks5_front_auth_raw(relay, body):
    web = await web_server(relay, body)
    proxy = await auth_proxy(relay)
    with captured_log(with_fields=True) as logged:
        # A wrong password: RFC 1929 status 0x01, then the proxy closes.
        client = await socks_client(proxy)
        client.transport.write(b"\x05\x01\x02")
        assert await within(client.received(2)) == b"\x05\x02"
        wrong = WRONG_PASSWORD.encode()
        client.transport.write(b"\x01\x05alice" + bytes([len(wrong)]) + wrong)
        assert await closed_by_server(client) == b"\x05\x02\x01\x01"

        # An unknown user: the same answer.
        client = await socks_client(proxy)
        client.transport.write(b"\x05\x01\x02\x01\x03bob" + bytes([len(wrong)]) + wrong)
        assert await closed_by_server(client) == b"\x05\x02\x01\x01"

        # The right password, then a CONNECT and a page.
        client = await socks_client(proxy)
        secret = PASSWORD.encode()
        client.transport.write(b"\x05\x01\x02\x01\x05alice" + bytes([len(secret)]) + secret)
        assert await within(client.received(4)) == b"\x05\x02\x01\x00"
        client.transport.write(b"\x05\x01\x00" + ipv4("127.0.0.1") + struct.pack("!H", web))
        reply = await read_reply5(client, 4)
        assert reply.rep == 0
        client.transport.write(b"GET /hello HTTP/1.0\r\n\r\n")
        response = await closed_by_server(client)
        assert http_body(response[4 + len(reply.raw) :]) == HELLO

        # SOCKS4 cannot carry a password: refused at once.
        client = await socks_client(proxy)
        client.transport.write(socks4_request("127.0.0.1", web, b"alice"))
        assert await closed_by_server(client) == SOCKS4_REJECTED_REPLY

        # A client offering only "no authentication" is refused.
        client = await socks_client(proxy)
        client.transport.write(NO_AUTH)
        assert await closed_by_server(client) == b"\x05\xff"
    assert_no_password_in(logged)


# -- 5: disabled protocols -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_socks_front_socks4_disabled(relay, body):
    web = await web_server(relay, body)
    proxy = await relay.proxy(socks4=False)
    client = await socks_client(proxy)
    client.transport.write(socks4_request("127.0.0.1", web))
    assert await closed_by_server(client) == SOCKS4_REJECTED_REPLY


@pytest_twisted.ensureDeferred
async def test_socks_front_socks5_disabled(relay):
    proxy = await relay.proxy(socks5=False)
    client = await socks_client(proxy)
    client.transport.write(NO_AUTH)
    assert await closed_by_server(client) == b"\x05\xff"


# -- 6: Tor's RESOLVE and RESOLVE_PTR --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_socks5_front_resolve_localhost(relay):
    proxy = await relay.proxy()
    reply = await socks5_refused(proxy, 0xF0, name("localhost"), 0)
    assert reply.rep == 0
    assert reply.atyp in (1, 4)
    address = ipaddress.ip_address(reply.host)
    assert address in ipaddress.ip_network("127.0.0.0/8") or address == ipaddress.ip_address("::1")


@pytest_twisted.ensureDeferred
async def test_socks5_front_resolve_unknown_name_is_0x04(relay):
    proxy = await relay.proxy()
    reply = await socks5_refused(proxy, 0xF0, name("nonexistent.invalid"), 0)
    assert reply.rep == 0x04


@pytest_twisted.ensureDeferred
async def test_socks5_front_resolve_ptr(relay):
    def reverse() -> str | None:
        try:
            return socket.gethostbyaddr("127.0.0.1")[0]
        except OSError:
            return None

    expected = await within(deferToThread(reverse))
    proxy = await relay.proxy()
    reply = await socks5_refused(proxy, 0xF1, ipv4("127.0.0.1"), 0)
    if expected is None:  # this machine has no reverse entry for 127.0.0.1
        assert reply.rep == 0x04
        assert reply.atyp == 1
    else:
        assert reply.rep == 0
        assert reply.atyp == 3
        assert reply.host == expected


# -- 7: half-close ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_socks5_front_upload_4mib_with_half_close(relay):
    target = await listen(protocol.Factory.forProtocol(Digest), relay.ports)
    proxy = await relay.proxy()
    payload = os.urandom(4 * MiB)
    client, reply = await socks5_request(proxy, 1, ipv4("127.0.0.1"), target)
    assert reply.rep == 0
    start = len(client.data)
    client.transport.write(payload)
    client.transport.loseWriteConnection()
    answer = await within(client.lost, 60)
    assert answer[start:].decode() == f"{len(payload)} {sha256(payload)}"


@pytest_twisted.ensureDeferred
async def test_socks5_front_pipelined_request_and_payload(relay):
    """Greeting, request and payload in one write: the payload waits for the tunnel."""
    target = await listen(protocol.Factory.forProtocol(Digest), relay.ports)
    proxy = await relay.proxy()
    payload = os.urandom(64 * 1024)
    client = await socks_client(proxy)
    request = b"\x05\x01\x00" + ipv4("127.0.0.1") + struct.pack("!H", target)
    client.transport.write(NO_AUTH + request + payload)
    client.transport.loseWriteConnection()
    reply = await read_reply5(client, 2)
    assert reply.rep == 0
    answer = await within(client.lost)
    assert answer[: 2 + len(reply.raw)] == b"\x05\x00" + reply.raw
    assert answer[2 + len(reply.raw) :].decode() == f"{len(payload)} {sha256(payload)}"


# -- 8: a Python SOCKS client library --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_socks_front_python_socks_client(relay, body):
    from python_socks.sync import Proxy

    web = await web_server(relay, body)
    factory = ProbeFactory(relay.source_node, ProxySettings(peer="si"), reactor)
    proxy = await listen(factory, relay.ports)

    def fetch() -> bytes:
        # python-socks spells socks5h as socks5 with rdns=True (it rejects "socks5h://").
        sock = Proxy.from_url(f"socks5://127.0.0.1:{proxy}", rdns=True).connect(
            dest_host="localhost", dest_port=web, timeout=TIMEOUT
        )
        with sock:
            sock.settimeout(TIMEOUT)
            sock.sendall(b"GET /hello HTTP/1.0\r\nHost: localhost\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    response = await within(deferToThread(fetch), TIMEOUT + 10)
    assert http_body(response) == HELLO
    (server,) = factory.protocols
    assert server.stream.target == f"localhost:{web}"  # the name went to the sink unresolved
    await within(server.probe_lost)


# -- 9, 10: handshake timeout and stalled handshakes -----------------------------------------


@pytest_twisted.ensureDeferred
async def test_socks_front_handshake_timeout(relay):
    clock = Clock()
    factory = ProbeFactory(relay.source_node, ProxySettings(peer="si", handshake_timeout=5), clock)
    proxy = await listen(factory, relay.ports)
    client = await socks_client(proxy)
    client.transport.write(b"\x05")
    (server,) = await within(factory.received)
    clock.advance(4.9)
    assert not server.closed
    assert not client.lost.called
    clock.advance(0.1)
    assert await within(client.lost) == b""
    await within(server.probe_lost)
    assert server.closed


@pytest_twisted.ensureDeferred
async def test_socks_front_stalled_handshakes_do_not_block(relay, body):
    web = await web_server(relay, body)
    stalled_count = 200
    factory = ProbeFactory(
        relay.source_node, ProxySettings(peer="si", open_timeout=10), reactor, stalled_count + 1
    )
    proxy = await listen(factory, relay.ports)
    stalled: list[SocksClient] = []
    try:
        for _ in range(0, stalled_count, 20):  # in batches, so the listen backlog never fills
            batch = await defer.gatherResults(
                [defer.ensureDeferred(socks_client(proxy)) for _ in range(20)]
            )
            for client in batch:
                client.transport.write(b"\x05\x02")  # two methods announced, none sent
            stalled.extend(batch)
        response = await http_get_via_socks5(proxy, ipv4("127.0.0.1"), web, b"/hello")
        assert http_body(response) == HELLO
        await within(factory.received)  # all 201 connections reached the proxy
        assert len(factory.protocols) == stalled_count + 1
        assert not any(c.lost.called for c in stalled)
        (relayed,) = [p for p in factory.protocols if p.stream is not None]
        await within(relayed.probe_lost)
        waiting = [p for p in factory.protocols if p is not relayed]
        assert not any(p.closed for p in waiting)
        assert all(p.handler.server.buffered == 2 for p in waiting)  # still mid-greeting
    finally:
        for client in stalled:
            client.transport.loseConnection()
        await within(defer.gatherResults([c.lost for c in stalled]))
    await within(defer.gatherResults([p.probe_lost for p in factory.protocols]))
