"""The HTTP proxy front-end through real loopback sockets: client -> proxy -> broker -> sink.

Real twisted.web origins (plain and TLS) report what they received, so the tests can check
what the origin saw (origin-form request line, Host, Via, no hop-by-hop fields) as well as
what the client got. curl is the real-world client; a raw byte-level client checks framing
details curl hides: pipelined requests to two origins on one connection, HEAD/204/304
followed by more requests, bytes behind a CONNECT head, half-close in a tunnel, error
statuses from real situations (refused, unresolvable, timed out, malformed), and that a
response is streamed rather than buffered. No test sleeps: every wait is a Deferred with a
bounded timeout, and every listener and connection a test opens is closed when it ends.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from socketeer.passwords import Authenticator, hash_password
from socketeer.secret import Secret

from support.logs import captured_log
from support.net import Collector, Digest, Echo, MiB, free_port, listen, sha256, silent_port

TIMEOUT = 30
CURL = shutil.which("curl")
PASSWORD = "s3cr3t-pw"

needs_curl = pytest.mark.skipif(
    CURL is None and not os.environ.get("CI"),
    reason="curl is not installed here (CI installs it, and there these tests must run)",
)


def within(d: defer.Deferred, seconds: float = TIMEOUT) -> defer.Deferred:
    return d.addTimeout(seconds, reactor)


async def run_curl(*args: str, timeout: int = 60) -> tuple[bytes, bytes, int]:
    """curl with an empty environment (no *_proxy, no NO_PROXY) and no ~/.curlrc."""
    assert CURL is not None, "curl is required when CI is set"
    return await within(
        getProcessOutputAndValue(
            CURL,
            ["-q", "-sS", "--max-time", str(timeout), *args],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        ),
        timeout + 30,
    )


# -- origins ---------------------------------------------------------------------------------


class Origin(Resource):
    """A twisted.web origin: every path is one behaviour the tests need."""

    isLeaf = True

    def __init__(self, name: str, big: bytes = b"") -> None:
        super().__init__()
        self.name = name
        self.big = big
        self.seen: list[tuple[bytes, bytes]] = []  # (method, uri) of every request
        self.stream_started: defer.Deferred = defer.Deferred()
        self.gate: defer.Deferred = defer.Deferred()  # fired by the test: finish /stream

    def render(self, request) -> Any:
        self.seen.append((request.method, request.uri))
        path = request.path
        if path == b"/big":
            request.setHeader(b"content-type", b"application/octet-stream")
            return self.big
        if path == b"/id":
            request.setHeader(b"content-type", b"text/plain")
            return f"this is {self.name}\n".encode()
        if path == b"/headers":
            return self._headers(request)
        if path == b"/echo":
            return self._echo(request)
        if path == b"/nocontent":
            request.setResponseCode(204)
            return b""
        if path == b"/notmod":
            request.setResponseCode(304)
            request.setHeader(b"etag", b'"v1"')
            return b""
        if path == b"/stream":
            return self._stream(request)
        request.setResponseCode(404)
        return b"no such thing\n"

    def _headers(self, request) -> bytes:
        """What arrived: request line parts and every header field (names lowercased)."""
        headers: dict[str, list[str]] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            key = name.decode("latin-1").lower()
            headers.setdefault(key, []).extend(v.decode("latin-1") for v in values)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {
                "origin": self.name,
                "method": request.method.decode(),
                "uri": request.uri.decode("latin-1"),
                "clientproto": request.clientproto.decode(),
                "headers": headers,
            }
        ).encode()

    def _echo(self, request) -> bytes:
        """The length and sha256 of the request body, and how it was framed."""
        request.content.seek(0)
        digest, length = hashlib.sha256(), 0
        while chunk := request.content.read(MiB):
            digest.update(chunk)
            length += len(chunk)
        request.setHeader(b"content-type", b"application/json")
        te = request.requestHeaders.getRawHeaders(b"transfer-encoding", [b""])[0]
        cl = request.requestHeaders.getRawHeaders(b"content-length", [b""])[0]
        return json.dumps(
            {
                "length": length,
                "sha256": digest.hexdigest(),
                "transfer-encoding": te.decode(),
                "content-length": cl.decode(),
            }
        ).encode()

    def _stream(self, request) -> Any:
        """A chunked response: the first chunk now, the rest when the test fires ``gate``."""
        request.setHeader(b"content-type", b"text/plain")
        request.write(b"first chunk|")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def rest(_: object) -> None:
            if not gone:
                request.write(b"the rest of it")
                request.finish()

        self.gate.addCallback(rest)
        self.stream_started.callback(None)
        return NOT_DONE_YET


def make_site(origin: Origin) -> Site:
    site = Site(origin)
    site.noisy = False
    return site


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for "localhost": (key.pem, cert.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


# -- targets for CONNECT ----------------------------------------------------------------------


# -- a raw client and a strict response parser -----------------------------------------------


@dataclass
class Response:
    version: str
    status: int
    reason: str
    fields: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.fields if n.lower() == name]
        return ", ".join(values) if values else None

    def names(self) -> set[str]:
        return {n.lower() for n, _ in self.fields}


_STATUS_LINE = re.compile(r"(HTTP/1\.[01]) ([0-9]{3}) ?(.*)")


def _dechunk(data: bytes) -> tuple[bytes, int] | None:
    """(body, bytes used) of a complete chunked body at the start of data, else None."""
    pos, body = 0, bytearray()
    while True:
        nl = data.find(b"\r\n", pos)
        if nl < 0:
            return None
        size = int(data[pos:nl].split(b";")[0], 16)
        pos = nl + 2
        if size == 0:
            while True:  # trailer section, up to its empty line
                nl = data.find(b"\r\n", pos)
                if nl < 0:
                    return None
                line, pos = data[pos:nl], nl + 2
                if not line:
                    return bytes(body), pos
        if len(data) < pos + size + 2:
            return None
        body += data[pos : pos + size]
        assert data[pos + size : pos + size + 2] == b"\r\n", "chunk data not followed by CRLF"
        pos += size + 2


def parse_response(data: bytes, *, head: bool = False, eof: bool = False) -> tuple | None:
    """(Response, bytes used) for a complete response at the start of data, else None.

    ``head``: the request was HEAD (no body whatever the fields say). ``eof``: the
    connection has ended, so a body without length ends here. Anything that is not a
    well-formed HTTP/1.x response raises AssertionError.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        assert len(data) < 70000, f"no end of head in {data[:200]!r}"
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    assert match, f"not an HTTP response: {data[:200]!r}"
    fields = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        assert sep and name and name.strip() == name, f"bad header line {line!r}"
        fields.append((name, value.strip()))
    status = int(match[2])
    response = Response(match[1], status, match[3], fields, b"")
    rest = data[end + 4 :]
    used = end + 4
    te = (response.header("transfer-encoding") or "").lower()
    length = response.header("content-length")
    if head or status in (204, 304) or 100 <= status < 200:
        return response, used
    if "chunked" in te:
        dechunked = _dechunk(rest)
        if dechunked is None:
            return None
        response.body, n = dechunked
        return response, used + n
    if length is not None:
        n = int(length)
        if len(rest) < n:
            return None
        response.body = rest[:n]
        return response, used + n
    if eof:
        response.body = rest
        return response, len(data)
    return None


@implementer(IHalfCloseableProtocol)
class Raw(Collector):
    """A byte-level client: write requests, wait for conditions on what came back."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = 0  # how much of ``data`` earlier exchanges consumed
        self._waits: list[tuple[Callable[[bytes], Any], defer.Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self._check()

    def readConnectionLost(self) -> None:
        super().readConnectionLost()
        self._check(closed=True)

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        self._check(closed=True)

    def until(self, condition: Callable[[bytes], Any], seconds: float = TIMEOUT):
        """Fires with condition(data) once it is not None (an exception fails the wait)."""
        d: defer.Deferred = defer.Deferred()
        self._waits.append((condition, d))
        self._check()
        return within(d, seconds)

    def _check(self, closed: bool = False) -> None:
        data = bytes(self.data)
        for entry in list(self._waits):
            condition, d = entry
            if d.called:
                self._waits.remove(entry)
                continue
            try:
                result = condition(data)
            except Exception as e:  # a malformed response: handed to the waiting test
                self._waits.remove(entry)
                d.errback(e)
                continue
            if result is not None:
                self._waits.remove(entry)
                d.callback(result)
            elif closed:
                self._waits.remove(entry)
                d.errback(AssertionError(f"connection ended; received {data[:300]!r}"))

    async def exchange(self, request: bytes, *, head: bool = False) -> Response:
        """Send one request; the next complete response after earlier ones."""
        if request:
            self.transport.write(request)
        response, used = await self.until(lambda d: parse_response(d[self.pos :], head=head))
        self.pos += used
        return response


class Net:
    """What one test opened: origins and raw clients; all closed at teardown."""

    def __init__(self, relay) -> None:
        self.relay = relay
        self.ports: list = []
        self.clients: list[Raw] = []

    async def origin(self, origin: Origin) -> int:
        return await listen(make_site(origin), self.ports)

    async def serve(self, proto: type[protocol.Protocol]) -> int:
        return await listen(protocol.Factory.forProtocol(proto), self.ports)

    async def raw(self, port: int) -> Raw:
        client = Raw()
        await within(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
                protocol.Factory.forProtocol(lambda: client)
            )
        )
        self.clients.append(client)
        return client

    async def one_shot(self, port: int, request: bytes) -> Response:
        """Send request on a new connection; the response, which must end the connection."""
        client = await self.raw(port)
        client.transport.write(request)
        data = await within(client.eof)  # the proxy closed (or reset) the connection
        parsed = parse_response(data, eof=True)
        assert parsed is not None, f"incomplete response {data[:300]!r}"
        response, used = parsed
        assert used == len(data), f"bytes after the response: {data[used:][:100]!r}"
        return response

    async def close(self) -> None:
        for client in self.clients:
            if not client.lost.called and client.transport is not None:
                client.transport.abortConnection()
        await within(defer.gatherResults([c.lost for c in self.clients]))
        await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])


@pytest_twisted.async_yield_fixture
async def net(relay):
    n = Net(relay)
    try:
        yield n
    finally:
        await n.close()


@pytest.fixture(scope="module")
def big() -> bytes:
    return os.urandom(20 * MiB)


def request_to(port: int, path: str = "/id", *, method: str = "GET", extra: str = "") -> bytes:
    authority = f"127.0.0.1:{port}"
    return (
        f"{method} http://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n"
    ).encode()


def assert_proxy_error(response: Response, status: int | tuple[int, ...]) -> None:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status in statuses, response
    assert (response.header("content-type") or "").startswith("text/plain"), response
    assert response.header("connection") == "close"
    assert 0 < len(response.body) < 512, response.body


# -- 1, 2: big bodies through curl ------------------------------------------------------------


@needs_curl
@pytest_twisted.ensureDeferred
async def test_curl_downloads_20mib(relay, net, big, tmp_path):
    origin = Origin("big", big)
    port = await net.origin(origin)
    proxy = await relay.proxy()
    out_file = tmp_path / "big.bin"
    out, err, code = await run_curl(
        "-x",
        f"http://127.0.0.1:{proxy}",
        "-o",
        str(out_file),
        "-w",
        "%{http_code} %{size_download}",
        f"http://localhost:{port}/big",
    )
    assert code == 0, err
    assert out.decode() == f"200 {len(big)}"
    assert sha256(out_file.read_bytes()) == sha256(big)
    assert origin.seen == [(b"GET", b"/big")]


@needs_curl
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest_twisted.ensureDeferred
async def test_curl_uploads_20mib(relay, net, big, tmp_path, chunked):
    origin = Origin("echo")
    port = await net.origin(origin)
    proxy = await relay.proxy()
    upload = tmp_path / "upload.bin"
    upload.write_bytes(big)
    extra = ["-H", "Transfer-Encoding: chunked"] if chunked else []
    out, err, code = await run_curl(
        "-x",
        f"http://127.0.0.1:{proxy}",
        "--fail",
        "-H",
        "Content-Type: application/octet-stream",
        *extra,
        "--data-binary",
        f"@{upload}",
        f"http://localhost:{port}/echo",
        timeout=90,
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["sha256"] == sha256(big)
    assert report["length"] == len(big)
    if chunked:
        assert report["transfer-encoding"] == "chunked"
        assert report["content-length"] == ""
    else:
        assert report["transfer-encoding"] == ""
        assert report["content-length"] == str(len(big))


# -- 3: what the origin sees -------------------------------------------------------------------


@needs_curl
@pytest_twisted.ensureDeferred
async def test_origin_sees_a_clean_origin_form_request(relay, net):
    origin = Origin("headers")
    port = await net.origin(origin)
    proxy = await relay.proxy()  # no authenticator: credentials are still not forwarded
    out, err, code = await run_curl(
        "-x",
        f"http://127.0.0.1:{proxy}",
        "--fail",
        "--proxy-user",
        "bob:proxy-only-secret",
        "-H",
        "Proxy-Connection: keep-alive",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "Connection: keep-alive, X-Hop",
        "-H",
        "X-Hop: hop-by-hop by Connection",
        "-H",
        "X-End-To-End: kept",
        "-H",
        "Host: somewhere.else.example:1234",
        f"http://localhost:{port}/headers?q=1&r=2",
    )
    assert code == 0, err
    seen = json.loads(out)
    headers = seen["headers"]
    assert seen["method"] == "GET"
    assert seen["uri"] == "/headers?q=1&r=2"  # origin-form, query kept
    assert seen["uri"].startswith("/")
    assert seen["clientproto"] == "HTTP/1.1"
    assert headers["host"] == [f"localhost:{port}"]  # the URI's authority, not the client's
    for hop in ("proxy-authorization", "proxy-connection", "keep-alive", "x-hop"):
        assert hop not in headers, (hop, headers)
    assert headers["connection"] == ["close"]
    assert any("socketeer" in via for via in headers["via"]), headers["via"]
    assert headers["via"] == ["1.1 socketeer"]
    assert headers["x-end-to-end"] == ["kept"]
    assert origin.seen == [(b"GET", b"/headers?q=1&r=2")]


# -- 4: keep-alive across origins ---------------------------------------------------------------


@needs_curl
@pytest_twisted.ensureDeferred
async def test_curl_keeps_the_proxy_connection_across_origins(relay, net, tmp_path):
    first, second = Origin("origin one"), Origin("origin two")
    port1, port2 = await net.origin(first), await net.origin(second)
    proxy = await relay.proxy()
    out, err, code = await run_curl(
        "-x",
        f"http://127.0.0.1:{proxy}",
        "--fail",
        "-w",
        "%{num_connects} %{http_code}\\n",
        "-o",
        str(tmp_path / "one"),
        "-o",
        str(tmp_path / "two"),
        f"http://localhost:{port1}/id",
        f"http://localhost:{port2}/id",
    )
    assert code == 0, err
    assert out.decode().splitlines() == ["1 200", "0 200"]  # one connection to the proxy
    assert (tmp_path / "one").read_bytes() == b"this is origin one\n"
    assert (tmp_path / "two").read_bytes() == b"this is origin two\n"
    assert first.seen == [(b"GET", b"/id")]
    assert second.seen == [(b"GET", b"/id")]


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_to_two_origins_on_one_connection(relay, net):
    first, second = Origin("origin one"), Origin("origin two")
    port1, port2 = await net.origin(first), await net.origin(second)
    proxy = await relay.proxy()
    client = await net.raw(proxy)
    client.transport.write(request_to(port1) + request_to(port2))  # one write, two requests
    one = await client.exchange(b"")
    two = await client.exchange(b"")
    assert (one.status, one.body) == (200, b"this is origin one\n")
    assert (two.status, two.body) == (200, b"this is origin two\n")
    assert one.header("connection") == two.header("connection") == "keep-alive"
    # The connection still carries requests afterwards.
    three = await client.exchange(request_to(port1, "/id?again"))
    assert (three.status, three.body) == (200, b"this is origin one\n")
    assert client.pos == len(client.data)
    assert first.seen == [(b"GET", b"/id"), (b"GET", b"/id?again")]
    assert second.seen == [(b"GET", b"/id")]
    assert not client.eof.called


# -- 5: HTTP/1.0 ------------------------------------------------------------------------------


@needs_curl
@pytest_twisted.ensureDeferred
async def test_http10_client_with_curl(relay, net, tmp_path):
    origin = Origin("old")
    port = await net.origin(origin)
    proxy = await relay.proxy()
    head_file = tmp_path / "head.txt"
    out, err, code = await run_curl(
        "-0",
        "-x",
        f"http://127.0.0.1:{proxy}",
        "--fail",
        "-D",
        str(head_file),
        f"http://localhost:{port}/headers",
    )
    assert code == 0, err
    seen = json.loads(out)
    assert seen["clientproto"] == "HTTP/1.0"  # the version is kept on the way up
    assert seen["headers"]["via"] == ["1.0 socketeer"]
    assert seen["headers"]["host"] == [f"localhost:{port}"]
    head = parse_response(head_file.read_bytes(), head=True)
    assert head is not None
    assert head[0].status == 200
    assert head[0].header("transfer-encoding") is None  # never chunked to a 1.0 client
    assert head[0].header("content-length") == str(len(out))


@needs_curl
@pytest_twisted.ensureDeferred
async def test_http10_curl_connection_closes_after_the_response(relay, net, tmp_path):
    first, second = Origin("old one"), Origin("old two")
    port1, port2 = await net.origin(first), await net.origin(second)
    proxy = await relay.proxy()
    head_file = tmp_path / "heads.txt"
    out, err, code = await run_curl(
        "-0",
        "-x",
        f"http://127.0.0.1:{proxy}",
        "--fail",
        "-D",
        str(head_file),
        "-o",
        os.devnull,
        "-o",
        os.devnull,
        "-w",
        "%{num_connects} %{http_code}\\n",
        f"http://localhost:{port1}/id",
        f"http://localhost:{port2}/id",
    )
    assert code == 0, err
    assert first.seen == second.seen == [(b"GET", b"/id")]
    heads = head_file.read_bytes()
    one = parse_response(heads, head=True)
    assert one is not None
    two = parse_response(heads[one[1] :], head=True)
    assert two is not None
    assert one[0].header("connection") == two[0].header("connection") == "close"
    assert out.decode().splitlines() == ["1 200", "1 200"]  # a new connection each time


@pytest_twisted.ensureDeferred
async def test_http10_connection_closes_after_the_response(relay, net):
    port = await net.origin(Origin("old"))
    proxy = await relay.proxy()
    response = await net.one_shot(
        proxy, f"GET http://127.0.0.1:{port}/id HTTP/1.0\r\n\r\n".encode()
    )
    assert response.status == 200
    assert response.body == b"this is old\n"
    assert response.header("connection") == "close"


# -- 6: responses without bodies ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_head_204_304_then_more_on_one_connection(relay, net):
    origin = Origin("bodiless")
    port = await net.origin(origin)
    proxy = await relay.proxy()
    client = await net.raw(proxy)

    head = await client.exchange(request_to(port, method="HEAD"), head=True)
    assert head.status == 200
    assert head.header("content-length") == str(len(b"this is bodiless\n"))
    assert head.header("connection") == "keep-alive"

    nocontent = await client.exchange(request_to(port, "/nocontent"))
    assert (nocontent.status, nocontent.body) == (204, b"")
    assert nocontent.header("connection") == "keep-alive"

    notmod = await client.exchange(request_to(port, "/notmod", extra='If-None-Match: "v1"\r\n'))
    assert (notmod.status, notmod.body) == (304, b"")
    assert notmod.header("etag") == '"v1"'
    assert notmod.header("connection") == "keep-alive"

    get = await client.exchange(request_to(port))
    assert (get.status, get.body) == (200, b"this is bodiless\n")
    assert client.pos == len(client.data)  # no stray body bytes anywhere
    assert origin.seen == [
        (b"HEAD", b"/id"),
        (b"GET", b"/nocontent"),
        (b"GET", b"/notmod"),
        (b"GET", b"/id"),
    ]
    assert not client.eof.called


# -- 7, 8, 9: CONNECT ---------------------------------------------------------------------------


@needs_curl
@pytest_twisted.ensureDeferred
async def test_https_through_connect(relay, net, tmp_path):
    key, cert = make_cert(tmp_path)
    origin = Origin("tls origin")
    port_obj = await serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    ).listen(make_site(origin))
    net.ports.append(port_obj)
    port = port_obj.getHost().port
    proxy = await relay.proxy()
    out, err, code = await run_curl(
        "--fail",
        "--cacert",
        str(cert),
        "-x",
        f"http://127.0.0.1:{proxy}",
        f"https://localhost:{port}/id",
    )
    assert code == 0, err
    assert out == b"this is tls origin\n"
    assert origin.seen == [(b"GET", b"/id")]


@pytest_twisted.ensureDeferred
async def test_bytes_behind_the_connect_head_are_kept(relay, net):
    target = await net.serve(Echo)
    proxy = await relay.proxy()
    client = await net.raw(proxy)
    client.transport.write(
        f"CONNECT 127.0.0.1:{target} HTTP/1.1\r\nHost: 127.0.0.1:{target}\r\n\r\nPING".encode()
    )
    expected = b"HTTP/1.1 200 Connection established\r\n\r\nPING"
    data = await client.until(lambda d: d if len(d) >= len(expected) else None)
    assert data == expected
    client.transport.write(b"PONG?")
    assert await client.until(lambda d: d if d.endswith(b"PONG?") else None) == expected + b"PONG?"


@pytest_twisted.ensureDeferred
async def test_half_close_through_connect(relay, net):
    target = await net.serve(Digest)
    proxy = await relay.proxy()
    client = await net.raw(proxy)
    client.transport.write(f"CONNECT 127.0.0.1:{target} HTTP/1.1\r\n\r\n".encode())
    established = b"HTTP/1.1 200 Connection established\r\n\r\n"
    await client.until(lambda d: d if d.endswith(b"\r\n\r\n") else None)
    assert bytes(client.data) == established
    payload = os.urandom(4 * MiB)
    client.transport.write(payload)
    client.transport.loseWriteConnection()
    data = await within(client.eof, 60)
    assert data == established + f"{len(payload)} {sha256(payload)}".encode()


# -- 10: proxy authentication -------------------------------------------------------------------


@needs_curl
@pytest_twisted.ensureDeferred
async def test_proxy_authentication(relay, net):
    origin = Origin("guarded")
    port = await net.origin(origin)
    authenticator = Authenticator({"alice": Secret(hash_password(PASSWORD, iterations=1000))})
    proxy = await relay.proxy(authenticator=authenticator)
    good = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    bad = base64.b64encode(b"alice:wrong-pw-123").decode()

    with captured_log(with_fields=True) as log:
        # No credentials: 407 with a Basic challenge, then the connection ends.
        refused = await net.one_shot(proxy, request_to(port, "/headers"))
        assert_proxy_error(refused, 407)
        challenge = refused.header("proxy-authenticate")
        assert re.fullmatch(r'Basic realm="[^"]+"', challenge), challenge

        # curl with the right password; the origin never sees the credentials.
        out, err, code = await run_curl(
            "-x",
            f"http://127.0.0.1:{proxy}",
            "--proxy-user",
            f"alice:{PASSWORD}",
            "-w",
            "\\n%{http_code}",
            f"http://localhost:{port}/headers",
        )
        assert code == 0, err
        body, status = out.rsplit(b"\n", 1)
        assert status == b"200"
        seen = json.loads(body)
        assert "proxy-authorization" not in seen["headers"]
        assert seen["headers"]["host"] == [f"localhost:{port}"]

        # curl without credentials gets the 407 too.
        out, err, code = await run_curl(
            "-x",
            f"http://127.0.0.1:{proxy}",
            "-o",
            os.devnull,
            "-w",
            "%{http_code}",
            f"http://localhost:{port}/headers",
        )
        assert (code, out) == (0, b"407"), err

        # The scheme name is case-insensitive (RFC 9110 section 11.1).
        client = await net.raw(proxy)
        lower = await client.exchange(
            request_to(port, "/headers", extra=f"Proxy-Authorization: basic {good}\r\n")
        )
        assert lower.status == 200
        assert "proxy-authorization" not in json.loads(lower.body)["headers"]

        # A wrong password is a 407, and so is an unknown user.
        wrong = await net.one_shot(
            proxy, request_to(port, "/headers", extra=f"Proxy-Authorization: Basic {bad}\r\n")
        )
        assert_proxy_error(wrong, 407)
        stranger = base64.b64encode(f"mallory:{PASSWORD}".encode()).decode()
        unknown = await net.one_shot(
            proxy,
            request_to(port, "/headers", extra=f"Proxy-Authorization: Basic {stranger}\r\n"),
        )
        assert_proxy_error(unknown, 407)

    assert len(origin.seen) == 2  # only the two authenticated requests got through
    text = "\n".join(log)
    assert "alice" in text  # the failed attempt was logged (so the capture works) ...
    assert PASSWORD not in text  # ... but no password, plain or base64, ever
    assert "wrong-pw-123" not in text
    assert good not in text and bad not in text and stranger not in text


# -- 11: errors from real situations ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_nothing_listening_is_502(relay, net):
    proxy = await relay.proxy()
    response = await net.one_shot(proxy, request_to(free_port()))
    assert_proxy_error(response, 502)


@pytest_twisted.ensureDeferred
async def test_unresolvable_name_is_502(relay, net):
    proxy = await relay.proxy()
    response = await net.one_shot(
        proxy, b"GET http://nonexistent.invalid/ HTTP/1.1\r\nHost: nonexistent.invalid\r\n\r\n"
    )
    assert_proxy_error(response, 502)


@pytest_twisted.ensureDeferred
async def test_unresolvable_name_through_connect_is_502(relay, net):
    proxy = await relay.proxy()
    response = await net.one_shot(proxy, b"CONNECT nonexistent.invalid:443 HTTP/1.1\r\n\r\n")
    assert_proxy_error(response, 502)


@pytest_twisted.ensureDeferred
async def test_connect_timeout_is_504(relay, net):
    with silent_port() as port:
        relay.sink.connect_timeout = 0.5
        proxy = await relay.proxy()
        started = reactor.seconds()
        response = await net.one_shot(proxy, request_to(port))
        assert reactor.seconds() - started >= 0.4  # the answer came from the timeout
        assert b"refused" not in response.body
        assert_proxy_error(response, 504)
        tunnel = await net.one_shot(proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        assert_proxy_error(tunnel, 504)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, id="origin-form"),
        pytest.param(
            b"TRACE http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n", (501, 405), id="trace"
        ),
        pytest.param(b"GET  http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n", 400, id="two-spaces"),
        pytest.param(b"GET http://127.0.0.1:{port}/\r\n\r\n", 400, id="no-version"),
        pytest.param(b"HELLO THERE\r\n\r\n", 400, id="garbage"),
        pytest.param(
            b"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n",
            (431, 400),
            id="70KiB-header",
        ),
        pytest.param(
            b"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            id="cl-and-te",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_requests(relay, net, request_bytes, status):
    origin = Origin("never reached")
    port = await net.origin(origin)
    proxy = await relay.proxy()
    response = await net.one_shot(proxy, request_bytes.replace(b"{port}", str(port).encode()))
    assert_proxy_error(response, status)
    assert origin.seen == []


@pytest_twisted.ensureDeferred
async def test_http_disabled_is_501_and_close(relay, net):
    origin = Origin("never reached")
    port = await net.origin(origin)
    proxy = await relay.proxy(http=False)
    response = await net.one_shot(proxy, request_to(port))
    assert_proxy_error(response, 501)
    tunnel = await net.one_shot(proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    assert_proxy_error(tunnel, 501)
    assert origin.seen == []


# -- 12: responses are streamed ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_response_is_streamed_not_buffered(relay, net):
    origin = Origin("slow")
    port = await net.origin(origin)
    proxy = await relay.proxy()
    client = await net.raw(proxy)
    try:
        client.transport.write(request_to(port, "/stream"))
        await within(origin.stream_started)

        def head_and_first_chunk(data: bytes) -> bytes | None:
            end = data.find(b"\r\n\r\n")
            return data if end >= 0 and b"first chunk|" in data[end:] else None

        early = await client.until(head_and_first_chunk)
        assert not origin.gate.called  # the response is not finished at the origin yet
        head = parse_response(early, head=True)
        assert head is not None
        assert head[0].status == 200
        assert head[0].header("transfer-encoding") == "chunked"
        assert parse_response(early) is None  # incomplete: the last chunk has not come
        origin.gate.callback(None)
        response = await client.exchange(b"")
        assert response.body == b"first chunk|the rest of it"
        assert response.header("connection") == "keep-alive"
        assert client.pos == len(client.data)
    finally:
        if not origin.gate.called:
            origin.gate.callback(None)
