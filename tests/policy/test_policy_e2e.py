"""Policies end to end: real sockets, curl and raw SOCKS clients, and a twistd reloaded by SIGHUP.

In-process tests use the ``relay`` fixture (broker, sink node ``si``, source node ``so`` on
loopback) with policies written as properties, so the configuration and the enforcement are
tested together. No test sleeps: every wait is a Deferred with a bounded timeout.
"""

from __future__ import annotations

import os
import shutil
import signal

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, serverFromString
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.resource import Resource
from twisted.web.server import Site

from socketeer.config.load import parse_config
from socketeer.passwords import Authenticator
from socketeer.policy import PolicyRef
from socketeer.secret import Secret
from socketeer.sink.resolve import SystemResolver
from socketeer.source.forward import FixedForwardFactory
from socketeer.source.proxy import ProxyFactory, ProxySettings
from socketeer.tunnel.reasons import OpenFailure

from support.net import Collector, connect, connection_ending, echo_server, free_port, listen
from support.properties import Properties, channel_url, relay_properties
from support.twistd import start, stop

CURL = shutil.which("curl")
TIMEOUT = 30
HELLO = b"hello, policy\n"

needs_curl = pytest.mark.skipif(
    CURL is None and not os.environ.get("CI"),
    reason="curl is not installed here (CI installs it, and there these tests must run)",
)


def within(d, seconds: float = TIMEOUT) -> defer.Deferred:
    """A Deferred (or coroutine) that fails if it takes longer than *seconds*."""
    if not isinstance(d, defer.Deferred):
        d = defer.Deferred.fromCoroutine(d)
    return d.addTimeout(seconds, reactor)


# -- policies written as properties ------------------------------------------------------------

URL = channel_url(61626)
NODES = str(Properties().broker().sink("si", URL).proxy("so", URL, 1080))


def policy(props: str, node: str = "so") -> PolicyRef:
    """The policy of node ``so`` (the source) or ``si`` (the sink) that *props* configure."""
    config = parse_config(NODES + props, "e2e.properties")
    assert config.warnings == ()
    return PolicyRef({ss.nodename: ss.policy for ss in config.sourcesinks}[node])


def sink_policy(relay, props: str) -> None:
    relay.sink.policy = policy(props, "si")
    relay.sink.address_resolver = SystemResolver(reactor).addresses


# -- a target that records what reaches it -------------------------------------------------------


class Recorder(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[bytes, bytes]] = []

    def render_GET(self, request) -> bytes:
        self.requests.append((request.getHeader(b"host") or b"", request.uri))
        return HELLO


async def target(relay) -> tuple[Recorder, int]:
    recorder = Recorder()
    site = Site(recorder)
    site.noisy = False
    return recorder, await listen(site, relay.ports)


# -- clients -------------------------------------------------------------------------------------


def curl_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


async def curl(*args: str) -> tuple[bytes, bytes, int]:
    return await within(
        getProcessOutputAndValue(CURL, ["-sS", "--max-time", "20", *args], env=curl_env())
    )


async def http_status(proxy: int, url: str, *extra: str) -> tuple[str, bytes]:
    """Through the HTTP proxy port: the status (of the CONNECT, with -p) and the body."""
    code = "%{http_connect}" if "-p" in extra else "%{http_code}"
    out, err, _ = await curl("-x", f"http://127.0.0.1:{proxy}", "-w", "\n" + code, *extra, url)
    body, _, status = out.rpartition(b"\n")
    return status.decode(), body


def socks5_connect(host: str, port: int) -> bytes:
    name = host.encode()
    return b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big")


async def raw(port: int, data: bytes) -> bytes:
    """Send *data* at once; everything the server answered before it closed."""
    client: Collector = await within(connect(port))
    client.transport.write(data)
    answer = await within(client.eof)
    client.transport.loseConnection()
    return answer


async def socks5(proxy: int, host: str, port: int, methods: bytes = b"\x00") -> bytes:
    """A SOCKS5 CONNECT; the server's reply code (or the method refusal)."""
    answer = await raw(
        proxy, b"\x05" + bytes([len(methods)]) + methods + socks5_connect(host, port)
    )
    if answer[:2] != b"\x05\x00":
        return answer
    return answer[2:4]


# -- the tests -----------------------------------------------------------------------------------


@needs_curl
@pytest_twisted.ensureDeferred
async def test_denied_client_gets_its_protocols_refusal(relay, logged):
    recorder, web = await target(relay)
    ref = policy(
        "socketeer.sourcesink.so.accesslist=lan\nsocketeer.accesslist.lan.host=10.0.0.0/8\n"
    )
    proxy = await relay.proxy(policy=ref)

    assert await socks5(proxy, "127.0.0.1", web) == b"\x05\x02"
    socks4 = b"\x04\x01" + web.to_bytes(2, "big") + bytes([127, 0, 0, 1]) + b"me\x00"
    assert (await raw(proxy, socks4))[:2] == b"\x00\x5b"
    status, body = await http_status(proxy, f"http://127.0.0.1:{web}/")
    assert status == "403"
    assert body == b"This proxy does not serve your address.\n"
    out, err, code = await curl("--socks5-hostname", f"127.0.0.1:{proxy}", f"http://x:{web}/")
    assert code != 0

    forward = FixedForwardFactory(relay.source_node, "si", "127.0.0.1", web, policy=ref)
    port = await listen(forward, relay.ports)
    out, err, code = await curl(f"http://127.0.0.1:{port}/")
    assert code != 0  # the connection was closed at once

    assert recorder.requests == []
    assert relay.source_node.stats.denied["accesslist"] == 5
    refusals = [ln for ln in logged if "is not in accesslist lan" in ln]
    assert len(refusals) == 5, refusals


@pytest.mark.parametrize(
    ("interface", "client", "lists", "admitted"),
    [
        ("::1", "::1", "127.0.0.1", True),  # loopback is one place
        ("::1", "::1", "::1/128", True),
        ("::1", "::1", "10.0.0.0/8, 2001:db8::/32", False),
        ("::ffff:127.0.0.1", "127.0.0.1", "127.0.0.0/8", True),  # peer ::ffff:127.0.0.1
        ("::ffff:127.0.0.1", "127.0.0.1", "::ffff:127.0.0.1", True),
        ("::ffff:127.0.0.1", "127.0.0.1", "10.0.0.0/8", False),
    ],
)
@pytest_twisted.ensureDeferred
async def test_access_list_sees_ipv6_and_mapped_peers(relay, interface, client, lists, admitted):
    _, web = await target(relay)
    ref = policy(f"socketeer.sourcesink.so.accesslist=a\nsocketeer.accesslist.a.host={lists}\n")
    factory = ProxyFactory(relay.source_node, ProxySettings("si", policy=ref), reactor)
    escaped = interface.replace(":", "\\:")
    port = await within(serverFromString(reactor, f"tcp6:0:interface={escaped}").listen(factory))
    relay.ports.append(port)
    kind = TCP6ClientEndpoint if ":" in client else TCP4ClientEndpoint
    collector = Collector()
    endpoint = kind(reactor, client, port.getHost().port)
    await within(endpoint.connect(protocol.Factory.forProtocol(lambda: collector)))
    collector.transport.write(b"\x05\x01\x00" + socks5_connect("127.0.0.1", web))
    if admitted:
        collector.transport.write(b"GET / HTTP/1.0\r\n\r\n")
    answer = await within(collector.eof)
    collector.transport.loseConnection()
    assert answer[2:4] == (b"\x05\x00" if admitted else b"\x05\x02")
    assert answer.endswith(HELLO) is admitted
    assert relay.source_node.stats.denied["accesslist"] == (0 if admitted else 1)


@pytest_twisted.ensureDeferred
async def test_denied_client_is_asked_for_no_password(relay):
    _, web = await target(relay)
    ref = policy(
        "socketeer.sourcesink.so.accesslist=lan\nsocketeer.accesslist.lan.host=10.0.0.0/8\n"
    )
    auth = Authenticator({"alice": Secret("pw")})
    proxy = await relay.proxy(policy=ref, authenticator=auth)
    # it may use no-auth (and gets 0x02); offering only username/password, it gets 0xFF
    assert await socks5(proxy, "127.0.0.1", web, b"\x00\x02") == b"\x05\x02"
    assert await socks5(proxy, "127.0.0.1", web, b"\x02") == b"\x05\xff"


@needs_curl
@pytest_twisted.ensureDeferred
async def test_denied_target(relay, logged):
    recorder, web = await target(relay)
    ref = policy(
        "socketeer.sourcesink.so.blacklist=local\n"
        "socketeer.blacklist.local.host=localhost\n"
        f"socketeer.blacklist.local.port={web}\n"
    )
    proxy = await relay.proxy(policy=ref)
    for host in [
        "127.0.0.1",
        "localhost",
        "LOCALHOST.",
        "127.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "::ffff:127.0.0.1",
        "::1",
        "[::1]",
    ]:
        assert await socks5(proxy, host, web) == b"\x05\x02", host
    socks4 = b"\x04\x01" + web.to_bytes(2, "big") + bytes([127, 0, 0, 1]) + b"me\x00"
    assert (await raw(proxy, socks4))[:2] == b"\x00\x5b"
    status, body = await http_status(proxy, f"http://localhost:{web}/")
    assert (status, body) == ("403", f"Access to localhost:{web} is not allowed.\n".encode())
    status, _ = await http_status(proxy, f"http://127.0.0.1:{web}/", "-p")  # CONNECT
    assert status == "403"
    out, err, code = await curl(
        "--socks5-hostname", f"127.0.0.1:{proxy}", f"http://localhost:{web}/"
    )
    assert code != 0 and b"SOCKS5" in err

    assert recorder.requests == []
    assert not relay.sink_node.streams
    denied = relay.source_node.stats.denied["blacklist.local"]
    assert denied == 14
    rule = f"blacklist.local (host=localhost port={web})"
    assert len([ln for ln in logged if rule in ln]) == denied  # once per denial
    # another port is not on the list
    out, err, code = await curl("--socks5-hostname", f"127.0.0.1:{proxy}", "http://127.0.0.1:1/")
    assert code != 0 and relay.source_node.stats.denied["blacklist.local"] == denied


@needs_curl
@pytest_twisted.ensureDeferred
async def test_whitelisted_target_allowed_and_nothing_else(relay):
    recorder, web = await target(relay)
    _, other = await target(relay)
    ref = policy(
        "socketeer.sourcesink.so.whitelist=web\n"
        "socketeer.whitelist.web.host=127.0.0.1\n"
        f"socketeer.whitelist.web.port={web}\n"
    )
    proxy = await relay.proxy(policy=ref)
    out, err, code = await curl(
        "--socks5-hostname", f"127.0.0.1:{proxy}", f"http://127.0.0.1:{web}/a"
    )
    assert (code, out) == (0, HELLO), err
    status, body = await http_status(proxy, f"http://localhost:{web}/b")  # loopback is one place
    assert (status, body) == ("200", HELLO)
    assert [uri for _, uri in recorder.requests] == [b"/a", b"/b"]
    assert await socks5(proxy, "127.0.0.1", other) == b"\x05\x02"
    assert relay.source_node.stats.denied["whitelist"] == 1

    forward = FixedForwardFactory(relay.source_node, "si", "127.0.0.1", other, policy=ref)
    port = await listen(forward, relay.ports)
    out, err, code = await curl(f"http://127.0.0.1:{port}/")
    assert code != 0
    assert relay.source_node.stats.denied["whitelist"] == 2


@needs_curl
@pytest_twisted.ensureDeferred
async def test_maplist_redirect_is_observed_on_the_target(relay, logged):
    recorder, web = await target(relay)
    ref = policy(
        "socketeer.sourcesink.so.maplist=m\n"
        "socketeer.maplist.m.orghost=www.example.invalid\n"
        "socketeer.maplist.m.orgport=80\n"
        "socketeer.maplist.m.maphost=127.0.0.1\n"
        f"socketeer.maplist.m.mapport={web}\n"
    )
    proxy = await relay.proxy(policy=ref)
    status, body = await http_status(proxy, "http://www.example.invalid/forward")
    assert (status, body) == ("200", HELLO)
    out, err, code = await curl(
        "--socks5-hostname", f"127.0.0.1:{proxy}", "http://www.example.invalid/socks"
    )
    assert (code, out) == (0, HELLO), err
    forward = FixedForwardFactory(relay.source_node, "si", "www.example.invalid", 80, policy=ref)
    port = await listen(forward, relay.ports)
    out, err, code = await curl("-H", "Host: fixed.example", f"http://127.0.0.1:{port}/fixed")
    assert (code, out) == (0, HELLO), err
    assert recorder.requests == [
        (b"www.example.invalid", b"/forward"),
        (b"www.example.invalid", b"/socks"),
        (b"fixed.example", b"/fixed"),
    ]
    rewrites = [ln for ln in logged if f"www.example.invalid:80 mapped to 127.0.0.1:{web}" in ln]
    assert len(rewrites) == 3  # logged (at debug level) once per stream
    assert all("by maplist.m (orghost=www.example.invalid orgport=80" in ln for ln in rewrites)


@needs_curl
@pytest_twisted.ensureDeferred
async def test_sink_maplist(relay):
    recorder, web = await target(relay)
    sink_policy(
        relay,
        "socketeer.sourcesink.si.maplist=m\n"
        "socketeer.maplist.m.orghost=db.invalid\n"
        "socketeer.maplist.m.maphost=127.0.0.1\n"
        f"socketeer.maplist.m.mapport={web}\n",
    )
    proxy = await relay.proxy()
    out, err, code = await curl("--socks5-hostname", f"127.0.0.1:{proxy}", "http://db.invalid:5/x")
    assert (code, out) == (0, HELLO), err
    assert recorder.requests == [(b"db.invalid:5", b"/x")]


@needs_curl
@pytest_twisted.ensureDeferred
async def test_sink_denies_a_target_the_source_allowed(relay, logged):
    recorder, web = await target(relay)
    sink_policy(
        relay,
        "socketeer.sourcesink.si.blacklist=local\n"
        "socketeer.blacklist.local.host=127.0.0.0/8\n"
        f"socketeer.blacklist.local.port={web}\n",
    )
    proxy = await relay.proxy()  # no policy at the source: it sends whatever it is asked
    for host in [
        "127.0.0.1",
        "localhost",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "LOCALHOST.",
        "::ffff:127.0.0.1",
    ]:
        assert await socks5(proxy, host, web) == b"\x05\x02", host
    status, body = await http_status(proxy, f"http://localhost:{web}/")
    assert status == "403"
    out, err, code = await curl(
        "--socks5-hostname", f"127.0.0.1:{proxy}", f"http://localhost:{web}/"
    )
    assert code != 0
    assert recorder.requests == []
    denied = relay.sink_node.stats.denied["blacklist.local"]
    assert denied == 10
    assert relay.source_node.stats.open_failed[OpenFailure.DENIED] == 10
    rule = f"blacklist.local (host=127.0.0.0/8 port={web})"
    assert len([ln for ln in logged if rule in ln]) == denied
    assert not [ln for ln in logged if rule in ln and "from node so" not in ln]


@pytest_twisted.ensureDeferred
async def test_sink_judges_what_a_name_resolves_to(relay):
    recorder, web = await target(relay)
    sink_policy(
        relay,
        "socketeer.sourcesink.si.blacklist=local\nsocketeer.blacklist.local.host=127.0.0.1\n",
    )
    answers = {
        "rebind.test": ["192.0.2.1", "127.0.0.1"],  # one forbidden address is enough
        "inside.test": ["::ffff:127.0.0.1"],
        "ok.test": ["127.0.0.1"],
    }
    lookups: list[str] = []

    def resolver(name: str) -> defer.Deferred:
        lookups.append(name)
        return defer.succeed(answers[name])

    relay.sink.address_resolver = resolver
    proxy = await relay.proxy()
    assert await socks5(proxy, "rebind.test", web) == b"\x05\x02"
    assert await socks5(proxy, "inside.test", web) == b"\x05\x02"
    # with loopback allowed, the sink connects to the address it checked, not to the name
    relay.sink.policy = policy(
        "socketeer.sourcesink.si.blacklist=lan\nsocketeer.blacklist.lan.host=10.0.0.0/8\n", "si"
    )
    client: Collector = await within(connect(proxy))
    client.transport.write(b"\x05\x01\x00" + socks5_connect("ok.test", web))
    client.transport.write(b"GET /checked HTTP/1.0\r\nHost: ok.test\r\n\r\n")
    answer = await within(client.eof)
    client.transport.loseConnection()
    assert answer[2:4] == b"\x05\x00"
    assert answer.endswith(HELLO)
    assert recorder.requests == [(b"ok.test", b"/checked")]
    assert lookups == ["rebind.test", "inside.test", "ok.test"]  # one lookup per stream
    assert relay.sink_node.stats.denied["blacklist.local"] == 2


# -- Tor's RESOLVE and RESOLVE_PTR ---------------------------------------------------------------


def socks5_resolve(host: str, ptr: bool = False) -> bytes:
    """No-auth greeting and a RESOLVE (0xF0) of a name or RESOLVE_PTR (0xF1) of an IPv4."""
    if ptr:
        return b"\x05\x01\x00\x05\xf1\x00\x01" + bytes(map(int, host.split("."))) + b"\x00\x00"
    name = host.encode()
    return b"\x05\x01\x00\x05\xf0\x00\x03" + bytes([len(name)]) + name + b"\x00\x00"


async def resolve_code(proxy: int, host: str, ptr: bool = False) -> int:
    answer = await raw(proxy, socks5_resolve(host, ptr))
    assert answer[:2] == b"\x05\x00", answer
    return answer[3]


@pytest_twisted.ensureDeferred
async def test_source_policy_judges_resolve_and_resolve_ptr(relay, logged):
    lookups: list[tuple[str, bool]] = []

    def resolver(name: str, reverse: bool) -> defer.Deferred:
        lookups.append((name, reverse))
        return defer.succeed("name.test" if reverse else "192.0.2.7")

    relay.sink.resolver = resolver
    ref = policy(
        "socketeer.sourcesink.so.blacklist=secret,ssh\n"
        "socketeer.blacklist.secret.host=*.secret.test\n"
        "socketeer.blacklist.ssh.host=ssh.test\n"
        "socketeer.blacklist.ssh.port=22\n"  # only port 22: the name may still be looked up
        "socketeer.sourcesink.so.whitelist=open\n"
        "socketeer.whitelist.open.host=*.test,192.0.2.0/24\n"
    )
    proxy = await relay.proxy(policy=ref)
    assert await resolve_code(proxy, "db.secret.test") == 0x02
    assert await resolve_code(proxy, "elsewhere.example") == 0x02
    assert await resolve_code(proxy, "198.51.100.1", ptr=True) == 0x02
    assert lookups == []  # nothing denied reached the sink
    assert await resolve_code(proxy, "ssh.test") == 0x00
    assert await resolve_code(proxy, "www.test") == 0x00
    assert await resolve_code(proxy, "192.0.2.9", ptr=True) == 0x00
    assert lookups == [("ssh.test", False), ("www.test", False), ("192.0.2.9", True)]
    denied = relay.source_node.stats.denied
    assert denied["blacklist.secret"] == 1
    assert denied["whitelist"] == 2
    assert len([ln for ln in logged if "lookup of db.secret.test" in ln]) == 1


@pytest_twisted.ensureDeferred
async def test_sink_policy_judges_resolve_and_its_answer(relay, logged):
    answers = {"inside.test": "10.1.2.3", "outside.test": "192.0.2.1"}
    lookups: list[str] = []

    def resolver(name: str, reverse: bool) -> defer.Deferred:
        lookups.append(name)
        return defer.succeed(answers.get(name, "name.test"))

    relay.sink.resolver = resolver
    sink_policy(
        relay,
        "socketeer.sourcesink.si.blacklist=lan,corp\n"
        "socketeer.blacklist.lan.host=10.0.0.0/8\n"
        "socketeer.blacklist.corp.host=*.corp.test\n",
    )
    proxy = await relay.proxy()  # no policy at the source
    assert await resolve_code(proxy, "db.corp.test") == 0x02  # the name itself
    assert await resolve_code(proxy, "10.9.9.9", ptr=True) == 0x02  # the address of a PTR
    assert lookups == []
    assert await resolve_code(proxy, "inside.test") == 0x02  # what it resolved to
    assert await resolve_code(proxy, "outside.test") == 0x00
    assert lookups == ["inside.test", "outside.test"]
    denied = relay.sink_node.stats.denied
    assert (denied["blacklist.corp"], denied["blacklist.lan"]) == (1, 2)
    assert [ln for ln in logged if "refused a lookup for node so" in ln]


# -- SIGHUP: a real twistd ---------------------------------------------------------------------


class EchoClient(Collector):
    """A client that can wait for its echo."""

    def __init__(self) -> None:
        super().__init__()
        self._waiter: tuple[int, defer.Deferred] | None = None

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self._waiter is not None and len(self.data) >= self._waiter[0]:
            d, self._waiter = self._waiter[1], None
            d.callback(None)

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        if self._waiter is not None:
            d, self._waiter = self._waiter[1], None
            d.errback(RuntimeError(f"closed after {bytes(self.data)!r}"))

    async def echoed(self, data: bytes) -> None:
        """Write *data* and wait until its echo has come back."""
        start = len(self.data)
        d: defer.Deferred = defer.Deferred()
        self._waiter = (start + len(data), d)
        self.transport.write(data)
        await within(d)
        assert bytes(self.data[start:]) == data


async def echo_client(port: int) -> EchoClient:
    client = EchoClient()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await within(endpoint.connect(protocol.Factory.forProtocol(lambda: client)))
    return client


@needs_curl
@pytest_twisted.ensureDeferred
async def test_sighup_reloads_policies_and_keeps_streams(tmp_path):
    listeners: list = []
    recorder = Recorder()
    web = await listen(Site(recorder), listeners)
    echo = await echo_server(listeners)
    broker, forward, proxy = free_port(), free_port(), free_port()
    config = tmp_path / "reload.properties"
    config.write_text(relay_properties(broker, forward, echo, proxy=proxy))
    proc = start(config, 3)
    client = None
    try:
        await proc.ready.addTimeout(TIMEOUT, reactor)
        url = f"http://127.0.0.1:{web}/"
        status, body = await http_status(proxy, url)
        assert (status, body) == ("200", HELLO)
        client = await echo_client(forward)
        await client.echoed(b"before the reload\n")

        # The sink now refuses the web server and the echo server; the proxy port refuses
        # the web server itself. The stream already open to the echo server stays up.
        config.write_text(
            relay_properties(
                broker,
                forward,
                echo,
                "socketeer.sourcesink.si.blacklist=targets\n"
                f"socketeer.blacklist.targets.port={web}, {echo}\n"
                "socketeer.sourcesink.px.blacklist=web\n"
                f"socketeer.blacklist.web.port={web}\n",
                proxy=proxy,
            )
        )
        proc.transport.signalProcess("HUP")
        await proc.seen(b"reloaded policies from")
        status, body = await http_status(proxy, url)
        assert status == "403"
        assert b"denied blacklist.web" in proc.output  # decided at the source
        # The sink refused it: the client's connection is reset (what it sent went nowhere).
        assert (await within(connection_ending(forward)))[0] == "reset"
        assert b"denied blacklist.targets" in proc.output
        await client.echoed(b"after the reload\n")

        # An invalid file keeps the policy in force and says why.
        invalid = relay_properties(
            broker, forward, echo, "socketeer.blacklist.web.port=99999\n", proxy=proxy
        )
        config.write_text(invalid)
        proc.transport.signalProcess(signal.SIGHUP)
        await proc.seen(b"reload failed, keeping the current policies")
        where = f"{config}:{invalid.count(chr(10))}: socketeer.blacklist.web.port: invalid port"
        assert where.encode() in proc.output
        status, body = await http_status(proxy, url)
        assert status == "403"
        await client.echoed(b"still here\n")
        assert len(recorder.requests) == 1
    finally:
        if client is not None:
            client.transport.loseConnection()
        await stop(proc)
        for port in listeners:
            await port.stopListening()
    assert b"Traceback" not in proc.output, proc.output.decode()
