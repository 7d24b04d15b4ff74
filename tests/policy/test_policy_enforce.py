"""Where policies are enforced: the sink's checked connect (fake resolver, endpoints and
clock), and reloading the policies of a running service (SIGHUP)."""

from __future__ import annotations

import os
import signal

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport

from socketeer.app import build_service, reload_policies
from socketeer.config.load import parse_config
from socketeer.policy import EMPTY_POLICY, PolicyRef
from socketeer.sink.connect import Sink
from socketeer.tap import Options, makeService
from socketeer.tunnel.node import Node
from socketeer.tunnel.stream import Phase
from socketeer.wire.envelope import Envelope, MsgType, encode_params

from support.properties import Properties, channel_url
from support.relay import Link
from support.sessions import handshake


class Endpoint:
    """Records connects; the test decides how each ends."""

    def __init__(self, attempts: list, address: str, port: int) -> None:
        self.attempts, self.address, self.port = attempts, address, port

    def connect(self, factory) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.attempts.append((self.address, self.port, factory, d))
        return d


def succeed(attempt) -> StringTransport:
    address, port, factory, d = attempt
    proto = factory.buildProtocol(IPv4Address("TCP", address, port))
    transport = StringTransport(hostAddress=IPv4Address("TCP", "192.0.2.99", 40000))
    proto.makeConnection(transport)
    d.callback(proto)
    return transport


def policy(props: str) -> PolicyRef:
    text = (
        "socketeer.sourcesink.si.clustername=c\n"
        "socketeer.sourcesink.si.nodename=si\n"
        "socketeer.sourcesink.si.channel=stomp://127.0.0.1:61626/t\n"
        "socketeer.sourcesink.si.isSpawningAndResolvingSink=true\n" + props
    )
    config = parse_config(text, "sink.properties")
    assert config.warnings == ()
    return PolicyRef(config.sourcesinks[0].policy)


class Harness:
    def __init__(self, props: str, answers: dict[str, list[str]] | None = None) -> None:
        self.clock = Clock()
        self.node = Node("c", "si", "t", self.clock, incarnation="me")
        self.link = Link()
        self.node.channel_ready(self.link)
        handshake(self.node, peer="so", inc="p1")  # the source's session
        self.link.sent.clear()  # the handshake: only what the sink answers OPENs is checked
        self.answers = answers or {}
        self.lookups: list[str] = []
        self.pending: dict[str, defer.Deferred] = {}
        self.attempts: list = []
        self.by_name: list[tuple[str, int]] = []

        def endpoint_for(host: str, port: int):
            self.by_name.append((host, port))
            return Endpoint(self.attempts, host, port)

        self.sink = Sink(
            self.node,
            endpoint_for,
            self.clock,
            connect_timeout=10,
            policy=policy(props),
            address_resolver=self.resolve,
            ip_endpoint_for=lambda a, p: Endpoint(self.attempts, a, p),
        )

    def resolve(self, name: str) -> defer.Deferred:
        self.lookups.append(name)
        if name in self.answers:
            return defer.succeed(self.answers[name])
        d: defer.Deferred = defer.Deferred()
        self.pending[name] = d
        return d

    def open(self, host: str, port: int, resource: str = "p1-1") -> None:
        body = encode_params({"host": host, "port": port, "type": 0})
        self.node.envelope_received(
            Envelope(MsgType.OPEN, "c", "so", "si", resource, 0, 0, "p1", body, "me")
        )

    def send(self, kind: MsgType, seq: int, body: bytes = b"", resource: str = "p1-1") -> None:
        self.node.envelope_received(
            Envelope(kind, "c", "so", "si", resource, seq, 0, "p1", body, "me")
        )

    def close(self, resource: str = "p1-1") -> None:
        self.send(MsgType.CLOSE, 1, resource=resource)

    def reset(self, resource: str = "p1-1") -> None:
        self.send(MsgType.RESET, 0, resource=resource)


LOCAL = "socketeer.sourcesink.si.blacklist=local\nsocketeer.blacklist.local.host=127.0.0.1\n"


def test_a_name_resolving_to_a_forbidden_address_is_denied() -> None:
    h = Harness(LOCAL, {"rebind.example": ["192.0.2.1", "127.0.0.1"]})
    h.open("rebind.example", 80)
    assert h.link.answers() == [
        (MsgType.OPEN_FAIL, {"reason": "denied", "message": "by the policy of node si"})
    ]
    assert h.attempts == [] and h.by_name == []
    assert h.node.stats.denied["blacklist.local"] == 1
    assert not h.node.streams


def test_a_name_blacklisted_by_name_is_not_even_looked_up() -> None:
    h = Harness(LOCAL)
    h.open("LocalHost.", 22)
    assert h.lookups == []
    assert h.link.answers()[0][1]["reason"] == "denied"


@pytest.mark.parametrize("host", ["0x7f000001", "2130706433", "0177.0.0.1", "127.1", "[::1]"])
def test_every_form_of_a_forbidden_address_is_denied(host: str) -> None:
    h = Harness(LOCAL)
    h.open(host, 80)
    assert h.lookups == [] and h.attempts == []
    assert h.link.answers()[0][1]["reason"] == "denied"


def test_the_sink_connects_to_the_addresses_it_checked_in_order() -> None:
    h = Harness(LOCAL, {"ok.example": ["192.0.2.7", "::ffff:192.0.2.8", "192.0.2.7"]})
    h.open("ok.example", 443)
    assert h.lookups == ["ok.example"]
    assert [a[:2] for a in h.attempts] == [("192.0.2.7", 443)]
    h.attempts[0][3].errback(ConnectionRefusedError())
    assert [a[:2] for a in h.attempts] == [("192.0.2.7", 443), ("192.0.2.8", 443)]
    succeed(h.attempts[1])
    ((kind, params),) = h.link.answers()  # mw: the sink's window cap (auto-tuning)
    assert (kind, params["host"], params["port"]) == (MsgType.OPEN_OK, "192.0.2.99", "40000")
    assert h.node.streams[("so", "p1-1")].phase is Phase.OPEN
    assert h.lookups == ["ok.example"]  # never a second lookup: nothing to rebind
    assert h.by_name == []


def test_when_every_address_fails_the_last_error_is_the_answer() -> None:
    h = Harness(LOCAL, {"ok.example": ["192.0.2.7", "192.0.2.8"]})
    h.open("ok.example", 443)
    h.attempts[0][3].errback(ConnectionRefusedError())
    h.attempts[1][3].errback(ConnectionRefusedError())
    assert h.link.answers()[0][0] is MsgType.OPEN_FAIL
    assert h.link.answers()[0][1]["reason"] == "refused"


def test_an_address_literal_is_connected_in_its_canonical_form() -> None:
    h = Harness(
        "socketeer.sourcesink.si.whitelist=local\nsocketeer.whitelist.local.host=localhost\n"
    )
    h.open("0x7f000001", 8080)
    h.open("::ffff:127.0.0.2", 8080, "p1-2")
    assert h.lookups == []
    assert [a[:2] for a in h.attempts] == [("127.0.0.1", 8080), ("127.0.0.2", 8080)]


def test_a_whitelist_needs_the_name_or_all_addresses() -> None:
    props = "socketeer.sourcesink.si.whitelist=lan\nsocketeer.whitelist.lan.host=10.0.0.0/8\n"
    h = Harness(props, {"in.example": ["10.0.0.1"], "mixed.example": ["10.0.0.1", "192.0.2.1"]})
    h.open("in.example", 80)
    h.open("mixed.example", 80, "p1-2")
    assert [a[:2] for a in h.attempts] == [("10.0.0.1", 80)]
    assert h.link.answers() == [
        (MsgType.OPEN_FAIL, {"reason": "denied", "message": "by the policy of node si"})
    ]
    assert h.node.stats.denied["whitelist"] == 1


def test_timeout_while_resolving() -> None:
    h = Harness(LOCAL)
    h.open("slow.example", 80)
    h.clock.advance(10)
    assert h.link.answers()[0][1]["reason"] == "timeout"
    assert h.pending["slow.example"].called  # cancelled
    assert h.attempts == []


def test_timeout_while_connecting_tries_no_other_address() -> None:
    h = Harness(LOCAL, {"ok.example": ["192.0.2.7", "192.0.2.8"]})
    h.open("ok.example", 80)
    h.clock.advance(10)
    assert len(h.attempts) == 1
    assert h.link.answers()[0][1]["reason"] == "timeout"


def test_the_source_giving_up_stops_the_lookup() -> None:
    h = Harness(LOCAL)
    h.open("slow.example", 80)
    h.reset()  # the source's open timed out (or its client was reset): RESET
    assert h.pending["slow.example"].called
    assert h.attempts == [] and h.link.answers() == []
    assert not h.clock.getDelayedCalls()
    assert not h.node.streams


def test_a_client_that_closed_while_the_sink_connects_still_gets_its_request_through() -> None:
    h = Harness(LOCAL)
    h.open("slow.example", 80)
    h.send(MsgType.DATA, 1, b"GET / HTTP/1.0\r\n\r\n")
    h.send(MsgType.CLOSE, 2)  # the client sent its request and left (a clean close)
    assert not h.pending["slow.example"].called  # the lookup goes on
    assert h.link.kinds()[-1] is MsgType.ACK  # the CLOSE is acknowledged at once
    h.pending["slow.example"].callback(["192.0.2.7"])
    transport = succeed(h.attempts[0])
    assert transport.value() == b"GET / HTTP/1.0\r\n\r\n"  # the target got the request
    assert transport.disconnecting  # and then the client's FIN
    assert h.link.answers()[0][0] is MsgType.OPEN_OK
    assert not h.node.streams and h.node.stats.streams_closed == 1


def test_resolver_failure_is_name_not_found() -> None:
    h = Harness(LOCAL)
    h.open("nx.example", 80)
    h.pending["nx.example"].errback(OSError("Name or service not known"))
    assert h.link.answers()[0][1]["reason"] == "name-not-found"


def test_no_resolver_is_name_not_found() -> None:
    h = Harness(LOCAL)
    h.sink.address_resolver = None
    h.open("x.example", 80)
    assert h.link.answers()[0][1]["reason"] == "name-not-found"


def test_the_single_address_resolver_is_used_when_there_is_no_other() -> None:
    h = Harness(LOCAL)
    h.sink.address_resolver = None
    h.sink.resolver = lambda name, reverse: defer.succeed("127.0.0.1")
    h.open("x.example", 80)
    assert h.link.answers()[0][1]["reason"] == "denied"


def test_a_maplist_alone_keeps_connecting_by_name() -> None:
    h = Harness(
        "socketeer.sourcesink.si.maplist=m\n"
        "socketeer.maplist.m.orghost=db\n"
        "socketeer.maplist.m.maphost=db.internal.example\n"
        "socketeer.maplist.m.mapport=5432\n"
    )
    h.open("db", 1)
    assert h.by_name == [("db.internal.example", 5432)]
    assert h.node.streams[("so", "p1-1")].target == "db.internal.example:5432"


def test_no_policy_means_the_old_path() -> None:
    h = Harness("")
    assert h.sink.policy.policy is EMPTY_POLICY
    h.open("anything.example", 80)
    assert h.by_name == [("anything.example", 80)] and h.lookups == []


def test_a_rule_for_another_source_node_does_not_apply() -> None:
    h = Harness(
        "socketeer.sourcesink.si.blacklist=b\n"
        "socketeer.blacklist.b.node=other\n"
        "socketeer.blacklist.b.host=10.0.0.1\n"
    )
    h.open("10.0.0.1", 80)
    assert [a[:2] for a in h.attempts] == [("10.0.0.1", 80)]


# -- reloading -----------------------------------------------------------------------------------

URL = channel_url(61626)
CONFIG = str(Properties().broker().sink("si", URL).proxy("px", URL, 1080))
LISTS = (
    "socketeer.sourcesink.px.blacklist=b\n"
    "socketeer.sourcesink.si.blacklist=b\n"
    "socketeer.blacklist.b.host=10.0.0.0/8\n"
)


def test_the_service_tree_shares_one_holder_per_sourcesink(tmp_path) -> None:
    path = tmp_path / "s.properties"
    path.write_text(CONFIG + LISTS)
    root = build_service(parse_config(path.read_text(), str(path)), MemoryReactorClock())
    assert root.sinks["si"].policy is root.policies["si"]
    factory = root.getServiceNamed("sourcesink-px").getServiceNamed("listener").factory
    assert factory.settings.policy is root.policies["px"]
    assert not root.policies["px"].policy.evaluate("10.1.1.1", 80).allowed


def test_reload_swaps_policies_and_reports_what_it_cannot(tmp_path, logged) -> None:
    path = tmp_path / "s.properties"
    path.write_text(CONFIG)
    root = build_service(parse_config(path.read_text(), str(path)), MemoryReactorClock())
    holders = dict(root.policies)
    assert all(h.policy is EMPTY_POLICY for h in holders.values())

    path.write_text(CONFIG + LISTS)
    assert reload_policies(root, str(path))
    assert root.policies == holders and root.policies["px"] is holders["px"]
    assert not holders["px"].policy.evaluate("10.1.1.1", 80).allowed
    assert not holders["si"].policy.evaluate("10.1.1.1", 80).allowed
    assert any("reloaded policies from" in ln and "px: 1 blacklist" in ln for ln in logged)

    before = holders["px"].policy
    path.write_text(CONFIG + LISTS + "socketeer.blacklist.b.port=0\n")
    assert not reload_policies(root, str(path))
    assert holders["px"].policy is before
    assert any(
        "reload failed, keeping the current policies" in ln
        and f"{path}:14: socketeer.blacklist.b.port: invalid port '0': out of range" in ln
        for ln in logged
    )

    changed = CONFIG.replace("px.serverport=1080", "px.serverport=1081")
    path.write_text(changed.replace("socketeer.sourcesink.si.", "socketeer.sourcesink.s2.") + "")
    assert reload_policies(root, str(path))
    assert any("sourcesink si is gone from" in ln for ln in logged)
    assert any("new sourcesink s2 starts at the next restart" in ln for ln in logged)
    assert any("sourcesink px has changes besides its lists" in ln for ln in logged)
    assert holders["px"].policy is EMPTY_POLICY
    assert holders["si"].policy is not EMPTY_POLICY  # kept: si is no longer in the file


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_the_service_made_by_make_service(tmp_path, logged):
    path = tmp_path / "s.properties"
    path.write_text(CONFIG)
    options = Options()
    options.parseOptions(["-c", str(path)])
    previous = signal.getsignal(signal.SIGHUP)
    try:
        root = makeService(options)
        path.write_text(CONFIG + LISTS)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):  # reactor turns, not time: the reload is queued for the reactor
            if not root.policies["px"].policy.empty:
                break
            await deferLater(reactor, 0, lambda: None)
        assert not root.policies["px"].policy.evaluate("10.0.0.1", 1).allowed
    finally:
        signal.signal(signal.SIGHUP, previous)
