"""The embedded broker: protocol unit tests (StringTransport, Clock), then real loopback sockets.

The socket tests talk to the broker with the third-party stomp.py client (blocking and
threaded, so every call goes through deferToThread while the reactor keeps running), with
small raw Twisted clients, and with plain sockets for the slow-subscriber test.
"""

from __future__ import annotations

import socket
import struct

import pytest
import pytest_twisted
import stomp
from stompest.config import StompConfig
from stompest.protocol import StompSpec
from stompest.sync import Stomp as StompestClient
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent

from socketeer.broker.listeners import with_backlog
from socketeer.broker.protocol import BrokerFactory, BrokerProtocol
from socketeer.broker.router import Router
from socketeer.wire.stompframing import (
    StompFrame,
    StompFrameParser,
    StompLimits,
    encode_frame,
)

from support.net import until

TIMEOUT = 15.0

# -- helpers -----------------------------------------------------------------


def frame(command: str, headers=(), body: bytes = b"", version: str = "1.2") -> bytes:
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    return encode_frame(StompFrame(command, rawHeaders=items, body=body, version=version))


def connect_frame(version: str | None = "1.2", **headers: str) -> bytes:
    items = [("accept-version", version)] if version else []
    items += [(k.replace("_", "-"), v) for k, v in headers.items()]
    return frame("CONNECT", items)


def client_feed(parser: StompFrameParser, data: bytes) -> list[StompFrame]:
    """Parse broker output; after CONNECTED, switch to the version it names."""
    out = []
    items = parser.feed(data)
    while items:
        for item in items:
            if isinstance(item, StompFrame):
                out.append(item)
                if item.command == "CONNECTED":
                    parser.version = item.headers.get("version", "1.0")
        items = parser.feed(b"") if not parser.held else []
    return out


class Peer:
    """A BrokerProtocol driven over a StringTransport, seen from the client side."""

    def __init__(self, factory: BrokerFactory) -> None:
        self.proto: BrokerProtocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.parser = StompFrameParser(server=False)
        self.version = "1.2"

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def sendf(self, command: str, headers=(), body: bytes = b"") -> None:
        self.send(frame(command, headers, body, self.version))

    def raw(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def frames(self) -> list[StompFrame]:
        return client_feed(self.parser, self.raw())

    def connect(self, version: str = "1.2", **headers: str) -> StompFrame:
        self.version = version
        self.send(connect_frame(version, **headers))
        [connected] = self.frames()
        assert connected.command == "CONNECTED", connected.headers
        return connected

    @property
    def closing(self) -> bool:
        return self.transport.disconnecting


def expect_error(peer: Peer, contains: str = "") -> StompFrame:
    frames = peer.frames()
    assert frames, "no ERROR frame"
    error = frames[-1]
    assert error.command == "ERROR"
    assert contains in error.headers["message"]
    assert peer.closing
    assert peer.transport.producer is None  # unregistered, so the close is not held up
    return error


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def factory(clock) -> BrokerFactory:
    return BrokerFactory(Router(), clock)


# -- handshake -----------------------------------------------------------------


@pytest.mark.parametrize(
    "accept,expected",
    [("1.0,1.1", "1.1"), ("1.2,1.1", "1.2"), ("1.1", "1.1"), (" 1.0 , 1.2 ", "1.2")],
)
def test_version_negotiation(factory, accept, expected):
    peer = Peer(factory)
    connected = peer.connect(accept)
    assert connected.headers["version"] == expected
    assert peer.proto.version == expected
    assert connected.headers["heart-beat"] == "10000,10000"
    assert connected.headers["server"].startswith("Socketeer/")
    assert connected.headers["session"]


def test_no_accept_version_means_1_0(factory):
    peer = Peer(factory)
    peer.send(frame("CONNECT", {"login": "x"}, version="1.0"))
    [connected] = peer.frames()
    assert connected.command == "CONNECTED"
    assert "version" not in connected.headers
    assert peer.proto.version == "1.0"


def test_stomp_command_connects(factory):
    peer = Peer(factory)
    peer.send(frame("STOMP", {"accept-version": "1.1,1.2", "host": "10.0.0.1"}))
    assert peer.frames()[0].headers["version"] == "1.2"


@pytest.mark.parametrize("host", [None, "127.0.0.1", "::1", "anything at all", ""])
def test_lenient_host(factory, host):
    peer = Peer(factory)
    headers = {"accept-version": "1.2"} | ({"host": host} if host is not None else {})
    peer.send(frame("CONNECT", headers))
    assert peer.frames()[0].command == "CONNECTED"


def test_no_common_version(factory):
    peer = Peer(factory)
    peer.send(connect_frame("2.0,3.1"))
    error = expect_error(peer, "Supported protocol versions")
    assert error.headers["version"] == "1.0,1.1,1.2"


def test_first_frame_must_be_connect(factory):
    peer = Peer(factory)
    peer.send(frame("SEND", {"destination": "/topic/a"}, b"x"))
    expect_error(peer, "expected CONNECT")


def test_second_connect_is_an_error(factory):
    peer = Peer(factory)
    peer.connect()
    peer.send(connect_frame())
    expect_error(peer, "unexpected CONNECT")


def test_connect_timeout(clock, factory):
    peer = Peer(factory)
    clock.advance(9.9)
    assert peer.raw() == b""
    clock.advance(0.2)
    expect_error(peer, "no CONNECT frame within 10s")
    assert factory.admission.refused == {"handshake-timeout": 1}
    assert not peer.transport.disconnected
    clock.advance(5)
    assert peer.transport.disconnected  # aborted: the peer did not read the ERROR


def test_connect_timer_cancelled_once_connected(clock, factory):
    peer = Peer(factory)
    peer.connect("1.2", heart_beat="0,0")
    clock.advance(100)
    assert not peer.closing


# -- strangers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"CONNECT\naccept-version:1.2\nx-pad:" + b"a" * 9000,  # one endless header line
        b"CONNECT\naccept-version:1.2\n" + (b"x-h:" + b"a" * 1000 + b"\n") * 10,
        b"CONNECT\n" + b"".join(b"h%d:%s\n" % (i, b"v" * 200) for i in range(40)),
        b"CONNECT\naccept-version:1.0\n\n" + b"b" * 9000,  # a body that never ends
    ],
)
def test_connect_frame_larger_than_the_prelogin_limit_is_refused(factory, data):
    peer = Peer(factory)
    peer.send(data)
    expect_error(peer, "CONNECT frame too large (at most 8192 bytes)")
    assert factory.admission.refused == {"connect-too-large": 1}
    assert peer.proto._parser.buffered == 0  # nothing of it is kept


def test_prelogin_limit_is_a_setting_and_large_frames_follow_login(clock):
    f = BrokerFactory(Router(), clock, max_connect_frame=2048)
    sub, pub = Peer(f), Peer(f)
    sub.connect()
    sub.sendf("SUBSCRIBE", {"id": "1", "destination": "/topic/big"})
    big = frame("SEND", {"destination": "/topic/big", "x-h": "v" * 4000}, b"x" * 100_000)
    pub.send(connect_frame("1.2", x_pad="p" * 1500) + big)  # pipelined behind CONNECT
    assert pub.frames()[0].command == "CONNECTED"
    [message] = sub.frames()
    assert len(message.body) == 100_000 and message.headers["x-h"] == "v" * 4000
    peer = Peer(f)
    peer.send(connect_frame("1.2", x_pad="p" * 2100))
    expect_error(peer, "at most 2048 bytes")


def refused_reply(proto, addr=("127.0.0.1", 5000)) -> tuple[StringTransport, list[StompFrame]]:
    transport = StringTransport(peerAddress=IPv4Address("TCP", *addr))
    proto.makeConnection(transport)
    return transport, client_feed(StompFrameParser(server=False), transport.value())


def test_connections_are_capped_in_total(clock):
    f = BrokerFactory(Router(), clock, max_connections=2)
    first, second = Peer(f), Peer(f)
    refused = f.buildProtocol(IPv4Address("TCP", "10.0.0.9", 1))
    assert not isinstance(refused, BrokerProtocol)
    transport, [error] = refused_reply(refused)
    assert error.command == "ERROR"
    assert error.headers["message"] == "too many connections (at most 2)"
    assert transport.disconnecting
    clock.advance(5)
    assert transport.disconnected  # aborted if it does not read
    assert f.admission.refused == {"connections": 1}
    first.proto.connectionLost()
    assert isinstance(f.buildProtocol(IPv4Address("TCP", "10.0.0.9", 1)), BrokerProtocol)
    second.connect()


def test_connections_are_capped_per_source_address(clock):
    f = BrokerFactory(Router(), clock, max_connections_per_address=2)
    local = [Peer(f), Peer(f)]  # both from 127.0.0.1
    refused = f.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4001))
    _, [error] = refused_reply(refused)
    assert error.headers["message"] == "too many connections from 127.0.0.1 (at most 2)"
    assert isinstance(f.buildProtocol(IPv4Address("TCP", "10.1.1.1", 1)), BrokerProtocol)
    unix = [f.buildProtocol(UNIXAddress(None)) for _ in range(3)]  # no source address
    assert all(isinstance(p, BrokerProtocol) for p in unix)
    local[0].send(b"garbage\n")  # refused for another cause, and then closed
    local[0].proto.connectionLost()
    assert isinstance(f.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4002)), BrokerProtocol)
    assert f.admission.refused == {"connections-per-address": 1, "handshake": 1}
    assert f.admission.open == 6 and f.admission.addresses() == 2


def test_refusals_are_logged_once_per_cause_per_interval(clock):
    f = BrokerFactory(Router(), clock, max_connections=100, max_connections_per_address=1000)
    with capturedLogs() as events:
        peers = [Peer(f) for _ in range(100)]
        for _ in range(50):
            f.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
        clock.advance(10.5)  # every handshake times out
        for _ in range(50):
            f.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
    assert all(p.closing for p in peers)
    # Closing, not yet gone (a StringTransport never reports the loss): still counted.
    assert f.admission.refused == {"handshake-timeout": 100, "connections": 100}
    lines = [formatEvent(e) for e in events if "refused" in formatEvent(e)]
    assert len(lines) == 3, lines
    assert "(connections; 1 so far)" in lines[0]
    assert "(handshake-timeout; 1 so far)" in lines[1]
    assert "(connections; 51 so far, 49 not logged)" in lines[2]


def test_bad_logins_are_counted_and_logged_sparingly(clock):
    f = BrokerFactory(Router(), clock, users={"alice": "pw"})
    with capturedLogs() as events:
        for _ in range(5):
            peer = Peer(f)
            peer.send(connect_frame("1.2", login="mallory", passcode="guess"))
            expect_error(peer, "Authentication failed")
    lines = [formatEvent(e) for e in events if "refused" in formatEvent(e)]
    assert len(lines) == 1 and "authentication failed for login 'mallory'" in lines[0]
    assert f.admission.refused == {"authentication": 5}


def test_pipelined_frames_after_connect_use_the_negotiated_version(factory):
    sub = Peer(factory)
    sub.connect()
    sub.sendf("SUBSCRIBE", {"id": "1", "destination": "/topic/t"})
    pub = Peer(factory)
    pub.send(connect_frame("1.2") + frame("SEND", {"destination": "/topic/t", "k": "a:b"}))
    assert pub.frames()[0].command == "CONNECTED"
    [message] = sub.frames()
    assert message.headers["k"] == "a:b"


# -- authentication ------------------------------------------------------------

USERS = {"alice": "s3cret-passcode"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"login": "alice"},
        {"login": "alice", "passcode": "wrong"},
        {"passcode": "s3cret-passcode"},
        {"login": "bob", "passcode": "s3cret-passcode"},
    ],
)
def test_bad_credentials_refused(clock, headers):
    peer = Peer(BrokerFactory(Router(), clock, users=USERS))
    with capturedLogs() as events:
        peer.send(connect_frame("1.2", **headers))
    expect_error(peer, "Authentication failed")
    assert peer.proto.login is None
    for event in events:
        assert "s3cret" not in formatEvent(event) and "s3cret" not in repr(event)


def test_good_credentials_accepted_and_passcode_not_logged(clock):
    peer = Peer(BrokerFactory(Router(), clock, users=USERS))
    with capturedLogs() as events:
        peer.connect("1.2", login="alice", passcode="s3cret-passcode")
        peer.proto.connectionLost()
    assert peer.proto.login == "alice"
    assert events
    for event in events:
        assert "s3cret" not in formatEvent(event) and "s3cret" not in repr(event)


def test_any_login_accepted_without_users(factory):
    Peer(factory).connect("1.2", login="whoever", passcode="whatever")
    Peer(factory).connect("1.2")


def test_connect_headers_are_not_unescaped(clock):
    peer = Peer(BrokerFactory(Router(), clock, users={"a\\cb": "p:w\\n"}))
    peer.send(b"CONNECT\naccept-version:1.2\nlogin:a\\cb\npasscode:p:w\\n\n\n\x00")
    assert peer.frames()[0].command == "CONNECTED"


# -- messaging -----------------------------------------------------------------


def test_send_becomes_message_with_copied_headers(factory):
    sub, pub = Peer(factory), Peer(factory)
    sub.connect()
    pub.connect()
    sub.sendf("SUBSCRIBE", {"id": "s1", "destination": "/topic/t"})
    pub.sendf(
        "SEND",
        [
            ("destination", "/topic/t"),
            ("foo", "bar"),
            ("foo", "second"),
            ("content-type", "application/octet-stream"),
            ("receipt", "r1"),
        ],
        b"x\x00y",
    )
    [receipt] = pub.frames()
    assert (receipt.command, receipt.headers["receipt-id"]) == ("RECEIPT", "r1")
    [message] = sub.frames()
    assert message.command == "MESSAGE"
    assert message.body == b"x\x00y"
    h = message.headers
    assert (h["destination"], h["subscription"], h["content-length"]) == ("/topic/t", "s1", "3")
    assert h["message-id"]
    assert (h["foo"], h["content-type"]) == ("bar", "application/octet-stream")
    assert "receipt" not in h and "ack" not in h
    assert [v for k, v in message.rawHeaders if k == "foo"] == ["bar"]


def test_empty_body_message_has_content_length(factory):
    sub, pub = Peer(factory), Peer(factory)
    sub.connect()
    pub.connect()
    sub.sendf("SUBSCRIBE", {"id": "s1", "destination": "/topic/t"})
    pub.sendf("SEND", {"destination": "/topic/t"})
    assert b"content-length:0\n" in sub.raw()


def test_send_requires_destination(factory):
    peer = Peer(factory)
    peer.connect()
    peer.sendf("SEND", {"receipt": "r9"}, b"x")
    error = expect_error(peer, "destination")
    assert error.headers["receipt-id"] == "r9"


def test_topic_fans_out_and_queue_round_robins(factory):
    a, b, pub = Peer(factory), Peer(factory), Peer(factory)
    for p in (a, b, pub):
        p.connect()
    for p in (a, b):
        p.sendf("SUBSCRIBE", {"id": "t", "destination": "/topic/x"})
        p.sendf("SUBSCRIBE", {"id": "q", "destination": "/queue/x"})
    pub.sendf("SEND", {"destination": "/topic/x"}, b"fan")
    assert [f.body for f in a.frames()] == [b"fan"]
    assert [f.body for f in b.frames()] == [b"fan"]
    for i in range(4):
        pub.sendf("SEND", {"destination": "/queue/x"}, b"%d" % i)
    assert [f.body for f in a.frames()] == [b"0", b"2"]
    assert [f.body for f in b.frames()] == [b"1", b"3"]


def test_queue_backlog_delivered_on_subscribe(factory):
    pub, sub = Peer(factory), Peer(factory)
    pub.connect()
    for i in range(3):
        pub.sendf("SEND", {"destination": "/queue/later"}, b"%d" % i)
    sub.connect()
    sub.sendf("SUBSCRIBE", {"id": "1", "destination": "/queue/later", "receipt": "sub"})
    frames = sub.frames()
    assert [f.body for f in frames[:3]] == [b"0", b"1", b"2"]
    assert all(f.headers["subscription"] == "1" for f in frames[:3])
    assert frames[3].headers["receipt-id"] == "sub"


def test_unsubscribe_by_id(factory):
    peer = Peer(factory)
    peer.connect()
    peer.sendf("SUBSCRIBE", {"id": "1", "destination": "/topic/t"})
    peer.sendf("UNSUBSCRIBE", {"id": "1", "receipt": "u"})
    peer.sendf("UNSUBSCRIBE", {"id": "unknown"})
    peer.sendf("SEND", {"destination": "/topic/t"}, b"x")
    assert [f.command for f in peer.frames()] == ["RECEIPT"]
    assert not peer.closing


def test_subscribe_id_required_from_1_1(factory):
    peer = Peer(factory)
    peer.connect("1.1")
    peer.sendf("SUBSCRIBE", {"destination": "/topic/t"})
    expect_error(peer, "no id header")


def test_subscribe_without_id_in_1_0_uses_destination(factory):
    peer = Peer(factory)
    peer.connect("1.0")
    peer.sendf("SUBSCRIBE", {"destination": "/topic/t"})
    peer.sendf("SEND", {"destination": "/topic/t"}, b"x")
    [message] = peer.frames()
    assert message.headers["subscription"] == "/topic/t"
    peer.sendf("UNSUBSCRIBE", {"destination": "/topic/t"})
    peer.sendf("SEND", {"destination": "/topic/t"}, b"y")
    assert peer.frames() == []


def test_duplicate_subscription_id_is_an_error(factory):
    peer = Peer(factory)
    peer.connect()
    peer.sendf("SUBSCRIBE", {"id": "1", "destination": "/topic/a"})
    peer.sendf("SUBSCRIBE", {"id": "1", "destination": "/topic/b"})
    expect_error(peer, "already in use")


def test_client_ack_modes_accepted_and_acks_ignored(factory):
    peer = Peer(factory)
    peer.connect()
    peer.sendf("SUBSCRIBE", {"id": "1", "destination": "/queue/a", "ack": "client-individual"})
    peer.sendf("SEND", {"destination": "/queue/a"}, b"x")
    [message] = peer.frames()
    assert message.headers["ack"] == message.headers["message-id"]
    peer.sendf("ACK", {"id": message.headers["ack"], "receipt": "a"})
    peer.sendf("NACK", {"id": message.headers["ack"]})
    assert [f.command for f in peer.frames()] == ["RECEIPT"]
    peer.sendf("SUBSCRIBE", {"id": "2", "destination": "/queue/b", "ack": "sometimes"})
    expect_error(peer, "ack mode")


# -- transactions --------------------------------------------------------------


def tx_setup(factory: BrokerFactory) -> tuple[Peer, Peer]:
    sub, pub = Peer(factory), Peer(factory)
    sub.connect()
    pub.connect()
    sub.sendf("SUBSCRIBE", {"id": "1", "destination": "/queue/tx"})
    return sub, pub


def test_transaction_commit_delivers_in_order_and_abort_drops(factory):
    sub, pub = tx_setup(factory)
    pub.sendf("BEGIN", {"transaction": "t1", "receipt": "b"})
    pub.sendf("SEND", {"destination": "/queue/tx", "transaction": "t1", "k": "v"}, b"one")
    pub.sendf("SEND", {"destination": "/queue/tx"}, b"outside")
    pub.sendf("SEND", {"destination": "/queue/tx", "transaction": "t1", "receipt": "s"}, b"two")
    assert [f.body for f in sub.frames()] == [b"outside"]
    assert pub.proto.held_bytes > 0
    pub.sendf("COMMIT", {"transaction": "t1", "receipt": "c"})
    messages = sub.frames()
    assert [f.body for f in messages] == [b"one", b"two"]
    assert messages[0].headers["k"] == "v" and "transaction" not in messages[0].headers
    assert [f.headers["receipt-id"] for f in pub.frames()] == ["b", "s", "c"]
    assert pub.proto.held_bytes == 0 and pub.proto.open_transactions == 0

    pub.sendf("BEGIN", {"transaction": "t1"})  # an id may be used again once finished
    pub.sendf("SEND", {"destination": "/queue/tx", "transaction": "t1"}, b"dropped")
    pub.sendf("ACK", {"id": "x", "transaction": "t1"})
    pub.sendf("ABORT", {"transaction": "t1", "receipt": "a"})
    assert sub.frames() == []
    assert [f.headers["receipt-id"] for f in pub.frames()] == ["a"]
    assert pub.proto.held_bytes == 0 and not pub.closing


def test_transactions_are_independent_and_ack_nack_may_join(factory):
    sub, pub = tx_setup(factory)
    pub.sendf("BEGIN", {"transaction": "a"})
    pub.sendf("BEGIN", {"transaction": "b"})
    pub.sendf("SEND", {"destination": "/queue/tx", "transaction": "a"}, b"a")
    pub.sendf("SEND", {"destination": "/queue/tx", "transaction": "b"}, b"b")
    pub.sendf("NACK", {"id": "m1", "transaction": "b"})
    pub.sendf("COMMIT", {"transaction": "b"})
    pub.sendf("ABORT", {"transaction": "a"})
    assert [f.body for f in sub.frames()] == [b"b"]
    assert not pub.closing


def test_disconnect_and_connection_loss_abort_open_transactions(factory):
    sub, pub = tx_setup(factory)
    pub.sendf("BEGIN", {"transaction": "t"})
    pub.sendf("SEND", {"destination": "/queue/tx", "transaction": "t"}, b"never")
    pub.sendf("DISCONNECT", {"receipt": "bye"})
    assert pub.proto.open_transactions == 0 and pub.proto.held_bytes == 0
    other = Peer(factory)
    other.connect()
    other.sendf("BEGIN", {"transaction": "t"})
    other.sendf("SEND", {"destination": "/queue/tx", "transaction": "t"}, b"never")
    other.proto.connectionLost()
    assert other.proto.open_transactions == 0
    assert sub.frames() == []


@pytest.mark.parametrize(
    "frames,message",
    [
        ([("BEGIN", {})], "BEGIN frame has no transaction header"),
        ([("COMMIT", {})], "COMMIT frame has no transaction header"),
        ([("ABORT", {"transaction": ""})], "ABORT frame has no transaction header"),
        ([("BEGIN", {"transaction": "t"}), ("BEGIN", {"transaction": "t"})], "already begun"),
        ([("COMMIT", {"transaction": "nope"})], "unknown transaction 'nope'"),
        ([("ABORT", {"transaction": "nope"})], "unknown transaction 'nope'"),
        ([("SEND", {"destination": "/queue/tx", "transaction": "nope"})], "unknown transaction"),
        ([("ACK", {"id": "1", "transaction": "nope"})], "unknown transaction"),
        (
            [("BEGIN", {"transaction": "t"}), ("COMMIT", {"transaction": "t"})]
            + [("COMMIT", {"transaction": "t"})],
            "unknown transaction 't'",
        ),
    ],
)
def test_transaction_errors(factory, frames, message):
    sub, pub = tx_setup(factory)
    for command, headers in frames[:-1]:
        pub.sendf(command, headers)
    command, headers = frames[-1]
    pub.sendf(command, {**headers, "receipt": "r"})
    error = expect_error(pub, message)
    assert error.headers["receipt-id"] == "r"
    assert factory.admission.refused == {"transaction": 1}


def test_open_transactions_and_their_bytes_are_bounded(clock):
    f = BrokerFactory(Router(), clock, max_transactions=2, max_transaction_bytes=4096)
    peer = Peer(f)
    peer.connect()
    for t in ("1", "2", "3"):
        peer.sendf("BEGIN", {"transaction": t})
    expect_error(peer, "more than 2 open transactions")
    peer = Peer(f)
    peer.connect()
    peer.sendf("BEGIN", {"transaction": "t"})
    peer.sendf("SEND", {"destination": "/queue/a", "transaction": "t"}, b"x" * 3000)
    assert peer.frames() == []
    peer.sendf("SEND", {"destination": "/queue/a", "transaction": "t"}, b"x" * 1000)
    expect_error(peer, "would hold more than 4096 bytes")
    for _ in range(20):  # empty frames count too
        peer = Peer(f)
        peer.connect()
        peer.sendf("BEGIN", {"transaction": "t"})
        for _ in range(20):
            peer.sendf("ACK", {"id": "1", "transaction": "t"})
        expect_error(peer, "would hold more than 4096 bytes")
    assert f.admission.refused == {"transactions": 1, "transaction-bytes": 21}


def test_no_transactions_when_the_bound_is_zero(clock):
    peer = Peer(BrokerFactory(Router(), clock, max_transactions=0))
    peer.connect()
    peer.sendf("BEGIN", {"transaction": "t"})
    expect_error(peer, "more than 0 open transactions")


def test_receipts_for_every_frame_kind(factory):
    peer = Peer(factory)
    peer.connect()
    peer.sendf("SUBSCRIBE", {"id": "1", "destination": "/topic/a", "receipt": "1"})
    peer.sendf("SEND", {"destination": "/topic/none", "receipt": "2"})
    peer.sendf("ACK", {"id": "x", "receipt": "3"})
    peer.sendf("UNSUBSCRIBE", {"id": "1", "receipt": "4"})
    peer.sendf("BEGIN", {"transaction": "t", "receipt": "5"})
    peer.sendf("ABORT", {"transaction": "t", "receipt": "6"})
    assert [f.headers["receipt-id"] for f in peer.frames()] == ["1", "2", "3", "4", "5", "6"]


def test_subscription_count_is_bounded(clock):
    peer = Peer(BrokerFactory(Router(), clock, max_subscriptions=2))
    peer.connect()
    for i in range(3):
        peer.sendf("SUBSCRIBE", {"id": str(i), "destination": "/topic/a"})
    expect_error(peer, "more than 2 subscriptions")


# -- escaping per version --------------------------------------------------------


def test_header_escaping_per_version(factory):
    subs = {}
    for version in ("1.0", "1.1", "1.2"):
        subs[version] = Peer(factory)
        subs[version].connect(version)
        subs[version].sendf("SUBSCRIBE", {"id": "s", "destination": "/topic/e"})
    pub = Peer(factory)
    pub.connect("1.2")
    pub.send(b"SEND\ndestination:/topic/e\nnl:a\\nb\ncolon:x\\cy\nslash:p\\\\q\n\n\x00")
    wire = {v: p.raw() for v, p in subs.items()}
    assert b"nl:a\\nb\n" in wire["1.2"] and b"nl:a\\nb\n" in wire["1.1"]
    assert b"colon:x\\cy\n" in wire["1.2"] and b"slash:p\\\\q\n" in wire["1.1"]
    assert b"nl:" not in wire["1.0"]  # a newline cannot be carried by 1.0
    assert b"colon:x:y\n" in wire["1.0"] and b"slash:p\\q\n" in wire["1.0"]
    for version, data in wire.items():
        parser = StompFrameParser(version, server=False)
        [message] = parser.feed(data)
        assert message.headers["colon"] == "x:y" and message.headers["slash"] == "p\\q"

    pub10 = Peer(factory)
    pub10.connect("1.0")
    pub10.send(b"SEND\ndestination:/topic/e\nraw:a\\cb\n\n\x00")
    assert b"raw:a\\\\cb\n" in subs["1.2"].raw()
    assert b"raw:a\\cb\n" in subs["1.0"].raw()


def test_undefined_escape_is_an_error(factory):
    peer = Peer(factory)
    peer.connect("1.2")
    peer.send(b"SEND\ndestination:/topic/a\nk:\\t\n\n\x00")
    expect_error(peer, "escape")


# -- DISCONNECT, errors and limits ---------------------------------------------


def test_disconnect_receipt_follows_earlier_frames(factory):
    peer = Peer(factory)
    peer.connect()
    data = frame("SUBSCRIBE", {"id": "1", "destination": "/queue/me"})
    data += b"".join(frame("SEND", {"destination": "/queue/me"}, b"%d" % i) for i in range(3))
    data += frame("DISCONNECT", {"receipt": "bye"})
    data += frame("SEND", {"destination": "/queue/me"}, b"late")
    peer.send(data)
    frames = peer.frames()
    assert [f.command for f in frames] == ["MESSAGE"] * 3 + ["RECEIPT"]
    assert [f.body for f in frames[:3]] == [b"0", b"1", b"2"]
    assert frames[3].headers["receipt-id"] == "bye"
    assert peer.closing and peer.transport.producer is None
    assert factory.router.subscriptions(peer.proto) == {}
    peer.send(frame("SEND", {"destination": "/queue/me"}, b"ignored"))
    assert peer.raw() == b""


def test_disconnect_without_receipt(factory):
    peer = Peer(factory)
    peer.connect()
    peer.sendf("DISCONNECT")
    assert peer.raw() == b"" and peer.closing


def test_malformed_frame_closes_only_that_client(factory):
    good, bad = Peer(factory), Peer(factory)
    good.connect()
    bad.connect()
    good.sendf("SUBSCRIBE", {"id": "1", "destination": "/topic/t"})
    bad.sendf("SUBSCRIBE", {"id": "1", "destination": "/topic/t"})
    bad.send(frame("SEND", {"destination": "/topic/t"}, b"before") + b"FOO\n\n\x00")
    error = expect_error(bad, "unknown command")
    assert error.body.startswith(b"unknown command")
    assert [f.body for f in good.frames()] == [b"before"]
    bad.proto.connectionLost()
    assert factory.router.subscriber_count("/topic/t") == 1
    good.sendf("SEND", {"destination": "/topic/t"}, b"after")
    assert [f.body for f in good.frames()] == [b"after"]
    assert not good.closing


def test_unexpected_server_frame_from_client(factory):
    peer = Peer(factory)
    peer.connect()
    peer.sendf("MESSAGE", {"destination": "/topic/t"})
    expect_error(peer, "unexpected MESSAGE")


def test_frame_over_size_limit(clock):
    f = BrokerFactory(Router(), clock, limits=StompLimits(max_body=1000, max_head=500))
    peer = Peer(f)
    peer.connect()
    peer.send(b"SEND\ndestination:/topic/a\ncontent-length:5000\n\n")
    expect_error(peer, "body larger than 1000")
    clock.advance(5)
    assert peer.transport.disconnected

    peer = Peer(f)
    peer.connect()
    peer.send(b"SEND\ndestination:/topic/a\n\n" + b"x" * 1001)
    expect_error(peer, "body larger than 1000")

    peer = Peer(f)
    peer.connect()
    peer.send(b"SEND\n" + b"".join(b"h%d:%s\n" % (i, b"v" * 50) for i in range(10)))
    expect_error(peer, "head larger than 500")


def test_error_close_timer_cancelled_when_connection_ends(clock, factory):
    peer = Peer(factory)
    peer.send(b"JUNK\n\n\x00")
    expect_error(peer)
    peer.proto.connectionLost()
    assert clock.getDelayedCalls() == []
    assert peer.proto not in factory.connections


# -- heart-beats -----------------------------------------------------------------


def test_heartbeat_negotiation_and_silent_client_dropped(clock):
    peer = Peer(BrokerFactory(Router(), clock, heartbeat_ms=(1000, 2000)))
    connected = peer.connect("1.2", heart_beat="3000,500")
    assert connected.headers["heart-beat"] == "1000,2000"
    # We send every max(1000, 500) ms; the client every max(3000, 2000) ms, dropped after 6 s.
    clock.advance(1.0)
    assert peer.raw() == b"\n"
    clock.advance(0.5)  # t=1.5
    peer.sendf("SEND", {"destination": "/topic/none", "receipt": "r"})
    assert [f.command for f in peer.frames()] == ["RECEIPT"]
    clock.advance(0.9)  # t=2.4: the RECEIPT counted as output
    assert peer.raw() == b""
    clock.advance(0.2)  # t=2.6
    assert peer.raw() == b"\n"
    clock.advance(4.8)  # t=7.4: silent since 1.5
    assert not peer.closing
    peer.send(b"\n")
    clock.advance(5.9)  # t=13.3: silent for 5.9 s
    assert not peer.closing
    clock.advance(0.2)  # t=13.5: silent for 6.1 s
    expect_error(peer, "heart-beat timeout")
    [abort] = clock.getDelayedCalls()  # only the abort-if-unread timer is left
    assert abort.getTime() == pytest.approx(13.5 + 5)


@pytest.mark.parametrize("client_beats", ["0,0", "0,1000", None])
def test_no_receive_deadline_when_client_does_not_beat(clock, client_beats):
    peer = Peer(BrokerFactory(Router(), clock, heartbeat_ms=(1000, 1000)))
    peer.connect("1.2", **({"heart_beat": client_beats} if client_beats else {}))
    clock.pump([1.0] * 1000)
    assert not peer.closing
    beats = peer.raw()
    assert beats == (b"\n" * 1000 if client_beats == "0,1000" else b"")


def test_no_heartbeats_when_broker_disables_them(clock):
    peer = Peer(BrokerFactory(Router(), clock, heartbeat_ms=(0, 0)))
    peer.connect("1.2", heart_beat="100,100")
    clock.advance(1000)
    assert peer.raw() == b"" and not peer.closing


def test_no_heartbeats_in_1_0(clock):
    peer = Peer(BrokerFactory(Router(), clock, heartbeat_ms=(1000, 1000)))
    peer.connect("1.0", heart_beat="1000,1000")
    clock.advance(100)
    assert peer.raw() == b"" and not peer.closing


@pytest.mark.parametrize("value", ["x", "1", "1,2,3", "-1,0"])
def test_bad_heartbeat_header(factory, value):
    peer = Peer(factory)
    peer.send(connect_frame("1.2", heart_beat=value))
    expect_error(peer, "heart-beat")


# -- flow control (unit) -----------------------------------------------------------


def flow_setup(factory: BrokerFactory, subscribers: int = 1):
    pub = Peer(factory)
    pub.connect("1.2", heart_beat="0,0")
    subs = []
    for i in range(subscribers):
        sub = Peer(factory)
        sub.connect("1.2", heart_beat="0,0")
        sub.sendf("SUBSCRIBE", {"id": str(i), "destination": "/topic/flow"})
        subs.append(sub)
    return pub, subs


#: The queue bound of the flow-control unit tests: a few 300-byte messages.
BOUND = 1000


@pytest.fixture
def qfactory(clock) -> BrokerFactory:
    return BrokerFactory(Router(), clock, subscriber_queue=BOUND, slow_subscriber_timeout=30)


def subscribe(factory: BrokerFactory, *destinations: str) -> Peer:
    peer = Peer(factory)
    peer.connect("1.2", heart_beat="0,0")
    for i, destination in enumerate(destinations):
        peer.sendf("SUBSCRIBE", {"id": str(i), "destination": destination})
    return peer


def bodies(peer: Peer) -> list[bytes]:
    return [f.body for f in peer.frames() if f.command == "MESSAGE"]


def test_congested_subscriber_queues_below_its_bound_without_pausing(qfactory):
    pub, [sub] = flow_setup(qfactory)
    sub.proto.pauseProducing()  # what its transport does when its buffer fills
    assert sub.proto.congested
    pub.sendf("SEND", {"destination": "/topic/flow"}, b"1")
    assert sub.raw() == b""  # waits in the broker's queue, not in the transport
    assert 0 < sub.proto.queued_bytes == qfactory.queued_bytes
    assert pub.transport.producerState == "producing" and not pub.proto.paused
    sub.proto.resumeProducing()
    assert bodies(sub) == [b"1"]
    assert sub.proto.queued_bytes == 0


def test_flooder_of_a_frozen_subscriber_is_paused_and_nothing_is_lost(qfactory):
    pub, [frozen, healthy] = flow_setup(qfactory, 2)
    frozen.proto.pauseProducing()  # and never drains
    sent = [b"%03d" % i + b"x" * 300 for i in range(6)]
    for body in sent:
        pub.sendf("SEND", {"destination": "/topic/flow"}, body)
    assert bodies(healthy) == sent  # not delayed by the frozen one
    assert pub.transport.producerState == "paused" and pub.proto.paused
    assert frozen.raw() == b"" and frozen.proto.queued_bytes > BOUND
    frozen.proto.resumeProducing()
    assert bodies(frozen) == sent  # in order, none dropped
    assert pub.transport.producerState == "producing" and not pub.proto.paused


def test_frozen_subscriber_pauses_only_the_publisher_filling_its_queue(qfactory):
    frozen = subscribe(qfactory, "/topic/zz")
    healthy = subscribe(qfactory, "/topic/si")
    flooder, pinger = subscribe(qfactory), subscribe(qfactory)
    frozen.proto.pauseProducing()
    flooded = 0
    for i in range(5):
        if not flooder.proto.paused:  # a paused client is not read any more
            flooder.sendf("SEND", {"destination": "/topic/zz"}, b"f" * 300)
            flooded += 1
        pinger.sendf("SEND", {"destination": "/topic/zz"}, b"ping")  # a little, now and then
        pinger.sendf("SEND", {"destination": "/topic/si"}, b"echo %d" % i)
    assert frozen.proto.queued_bytes > BOUND
    assert flooder.proto.paused and flooder.transport.producerState == "paused"
    assert not pinger.proto.paused and pinger.transport.producerState == "producing"
    assert bodies(healthy) == [b"echo %d" % i for i in range(5)]
    frozen.proto.resumeProducing()
    assert sorted(bodies(frozen)) == sorted([b"f" * 300] * flooded + [b"ping"] * 5)
    assert not flooder.proto.paused


def test_past_twice_the_bound_every_publisher_adding_is_paused(qfactory):
    frozen = subscribe(qfactory, "/topic/zz")
    frozen.proto.pauseProducing()
    publishers = [subscribe(qfactory) for _ in range(8)]
    for pub in publishers:  # each under its fair share, together far past the bound
        pub.sendf("SEND", {"destination": "/topic/zz"}, b"x" * 300)
    assert frozen.proto.queued_bytes > 2 * BOUND
    assert not publishers[0].proto.paused  # it added while the queue was still small
    assert publishers[-1].proto.paused  # it added past twice the bound
    publishers[0].sendf("SEND", {"destination": "/topic/zz"}, b"x")
    assert publishers[0].proto.paused


class Throttled(StringTransport):
    """A transport whose buffer is full (producer paused) past ``limit`` bytes until read."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.io.getvalue()) > self.limit and self.producer is not None:
            self.producer.pauseProducing()

    def writeSequence(self, seq) -> None:
        self.write(b"".join(seq))

    def drain(self) -> bytes:
        data = self.value()
        self.clear()
        self.producer.resumeProducing()
        return data


def test_paused_publishers_resume_when_the_queue_is_down_to_half_its_bound(clock):
    f = BrokerFactory(Router(), clock, subscriber_queue=BOUND)
    pub = subscribe(f)
    sub = Peer(f)
    sub.transport = Throttled(100)  # full after each message
    sub.proto.makeConnection(sub.transport)
    sub.connect("1.2", heart_beat="0,0")
    sub.sendf("SUBSCRIBE", {"id": "0", "destination": "/topic/flow"})
    sub.transport.clear()
    sub.proto.pauseProducing()
    for _ in range(6):
        pub.sendf("SEND", {"destination": "/topic/flow"}, b"x" * 300)
    assert pub.proto.paused
    received = b""
    while pub.proto.paused:
        received += sub.transport.drain()
        if pub.proto.paused:
            assert sub.proto.queued_bytes > BOUND // 2
    assert sub.proto.queued_bytes <= BOUND // 2 and sub.proto.queued_bytes > 0
    while sub.proto.queued_bytes:
        received += sub.transport.drain()
    received += sub.raw()
    assert [m.body for m in client_feed(sub.parser, received)] == [b"x" * 300] * 6


def test_publisher_paused_by_two_resumes_when_both_drain(qfactory):
    pub, [a, b] = flow_setup(qfactory, 2)
    a.proto.pauseProducing()
    b.proto.pauseProducing()
    for _ in range(4):
        pub.sendf("SEND", {"destination": "/topic/flow"}, b"x" * 300)
    assert pub.transport.producerState == "paused"
    a.proto.resumeProducing()
    assert pub.transport.producerState == "paused"
    b.proto.resumeProducing()
    assert pub.transport.producerState == "producing"


def test_publishing_to_yourself_does_not_pause_you(qfactory):
    _, [sub] = flow_setup(qfactory)
    sub.proto.pauseProducing()
    for _ in range(5):
        sub.sendf("SEND", {"destination": "/topic/flow"}, b"x" * 300)
    assert sub.proto.queued_bytes > BOUND
    assert sub.transport.producerState == "producing"
    assert not sub.proto.paused


def test_uncongested_subscribers_do_not_pause(qfactory):
    pub, [sub] = flow_setup(qfactory)
    for _ in range(5):
        pub.sendf("SEND", {"destination": "/topic/flow"}, b"x" * 300)
    assert pub.transport.producerState == "producing"
    sub.proto.pauseProducing()
    sub.proto.resumeProducing()
    pub.sendf("SEND", {"destination": "/topic/flow"}, b"2")
    assert pub.transport.producerState == "producing"
    assert len(bodies(sub)) == 6 and sub.proto.queued_bytes == 0


def test_subscriber_over_its_bound_too_long_is_disconnected(clock, qfactory):
    pub, [sub, other] = flow_setup(qfactory, 2)
    sub.proto.pauseProducing()
    for _ in range(4):
        pub.sendf("SEND", {"destination": "/topic/flow"}, b"x" * 300)
    assert pub.proto.paused
    with capturedLogs() as events:
        clock.advance(29)
        assert not sub.closing
        clock.advance(1.5)
    error = expect_error(sub, "subscriber too slow")
    assert f"more than {BOUND} bytes queued for it for 30s" in error.headers["message"]
    assert sub.proto.queued_bytes == 0 and qfactory.queued_bytes == 0  # freed
    assert qfactory.counters.slow_disconnects == 1
    assert not pub.proto.paused and pub.transport.producerState == "producing"
    assert qfactory.router.subscriber_count("/topic/flow") == 1
    assert len(bodies(other)) == 4  # the healthy one got everything
    warnings = [formatEvent(e) for e in events if "too slow" in formatEvent(e)]
    assert len(warnings) == 1


def test_draining_below_the_bound_stops_the_slow_subscriber_clock(clock, qfactory):
    pub, [sub] = flow_setup(qfactory)
    sub.proto.pauseProducing()
    for _ in range(4):
        pub.sendf("SEND", {"destination": "/topic/flow"}, b"x" * 300)
    clock.advance(20)
    sub.proto.resumeProducing()
    sub.proto.pauseProducing()
    for _ in range(4):
        pub.sendf("SEND", {"destination": "/topic/flow"}, b"x" * 300)
    clock.advance(20)  # 40 s congested in all, but never 30 s over the bound at a stretch
    assert not sub.closing
    clock.advance(10.5)
    expect_error(sub, "too slow")
    assert qfactory.counters.slow_disconnects == 1


def test_subscriber_congested_too_long_is_dropped(clock):
    f = BrokerFactory(Router(), clock, congestion_timeout=60)
    pub, [sub] = flow_setup(f)
    sub.proto.pauseProducing()
    pub.sendf("SEND", {"destination": "/topic/flow"}, b"1")
    clock.advance(59)
    assert not sub.closing
    sub.proto.resumeProducing()
    sub.proto.pauseProducing()  # a new episode starts a new timer
    clock.advance(59)
    assert not sub.closing
    clock.advance(1.5)
    expect_error(sub, "too slow")
    assert pub.transport.producerState == "producing"
    assert f.router.subscriber_count("/topic/flow") == 0
    assert f.counters.slow_disconnects == 0  # it was never over its queue bound


def test_receipt_and_error_follow_the_queued_messages(qfactory):
    pub, [sub] = flow_setup(qfactory)
    sub.proto.pauseProducing()
    pub.sendf("SEND", {"destination": "/topic/flow"}, b"1")
    sub.sendf("DISCONNECT", {"receipt": "bye"})
    frames = sub.frames()
    assert [f.command for f in frames] == ["MESSAGE", "RECEIPT"]
    assert sub.closing and sub.proto.queued_bytes == 0


def test_paused_publisher_is_not_dropped_for_silence(clock):
    f = BrokerFactory(Router(), clock, heartbeat_ms=(0, 1000), subscriber_queue=BOUND)
    pub = Peer(f)
    pub.connect("1.2", heart_beat="1000,0")
    sub = Peer(f)
    sub.connect("1.2")
    sub.sendf("SUBSCRIBE", {"id": "0", "destination": "/topic/flow"})
    sub.proto.pauseProducing()
    for _ in range(4):
        pub.sendf("SEND", {"destination": "/topic/flow"}, b"x" * 300)
    assert pub.proto.paused
    clock.advance(10)  # we do not read it, so its silence proves nothing
    assert not pub.closing
    sub.proto.resumeProducing()
    clock.advance(1.9)
    assert not pub.closing
    clock.advance(0.2)
    expect_error(pub, "heart-beat timeout")


def test_paused_publisher_going_away_is_forgotten(qfactory):
    pub, [sub] = flow_setup(qfactory)
    sub.proto.pauseProducing()
    for _ in range(4):
        pub.sendf("SEND", {"destination": "/topic/flow"}, b"x" * 300)
    assert pub.proto.paused
    pub.proto.connectionLost()
    sub.proto.resumeProducing()  # must not touch the dead publisher
    assert pub.transport.producerState == "paused"
    assert len(bodies(sub)) == 4  # what it had sent still arrives


def test_congested_subscriber_going_away_releases_publishers(qfactory):
    pub, [sub] = flow_setup(qfactory)
    sub.proto.pauseProducing()
    for _ in range(4):
        pub.sendf("SEND", {"destination": "/topic/flow"}, b"x" * 300)
    assert pub.proto.paused
    sub.proto.connectionLost()
    assert pub.transport.producerState == "producing"
    assert qfactory.queued_bytes == 0


# -- real sockets --------------------------------------------------------------


def within(d: defer.Deferred, seconds: float = TIMEOUT) -> defer.Deferred:
    return d.addTimeout(seconds, reactor)


async def turn(delay: float = 0.001) -> None:
    await task.deferLater(reactor, delay, lambda: None)


class Broker:
    def __init__(self, factory: BrokerFactory, port) -> None:
        self.factory = factory
        self.listening = port
        self.port = port.getHost().port


@pytest_twisted.async_yield_fixture
async def broker():
    factory = BrokerFactory(Router(), reactor)
    port = await serverFromString(reactor, with_backlog("tcp:0:interface=127.0.0.1")).listen(
        factory
    )
    yield Broker(factory, port)
    await port.stopListening()
    for proto in list(factory.connections):
        proto.transport.abortConnection()
    await until(lambda: not factory.connections)


class StompPy(stomp.ConnectionListener):
    """A stomp.py connection whose callbacks land in the reactor thread."""

    CLASSES = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}

    def __init__(self, port: int, version: str = "1.2") -> None:
        self.conn = self.CLASSES[version](
            [("127.0.0.1", port)], auto_decode=False, reconnect_attempts_max=1
        )
        self.conn.set_listener("test", self)
        self.messages: defer.DeferredQueue = defer.DeferredQueue()
        self.errors: defer.DeferredQueue = defer.DeferredQueue()
        self.receipts: defer.DeferredQueue = defer.DeferredQueue()
        self.connected_frame = None
        self.gone: defer.Deferred = defer.Deferred()

    def on_connected(self, frame) -> None:
        self.connected_frame = frame

    def on_message(self, frame) -> None:
        reactor.callFromThread(self.messages.put, frame)

    def on_error(self, frame) -> None:
        reactor.callFromThread(self.errors.put, frame)

    def on_receipt(self, frame) -> None:
        reactor.callFromThread(self.receipts.put, frame)

    def on_disconnected(self) -> None:
        reactor.callFromThread(lambda: self.gone.called or self.gone.callback(None))

    def call(self, method: str, *args, **kwargs) -> defer.Deferred:
        return within(deferToThread(getattr(self.conn, method), *args, **kwargs))

    async def close(self) -> None:
        if self.conn.is_connected():
            await self.call("disconnect", receipt="bye")
        else:
            await within(deferToThread(self.conn.transport.disconnect_socket))


@pytest_twisted.async_yield_fixture
async def stompy(broker):
    clients: list[StompPy] = []

    async def make(version: str = "1.2", **connect_kwargs) -> StompPy:
        client = StompPy(broker.port, version)
        clients.append(client)
        await client.call("connect", wait=True, **connect_kwargs)
        return client

    yield make
    for client in clients:
        await client.close()


class RawClient(protocol.Protocol):
    """A minimal Twisted STOMP client: writes bytes, queues parsed frames."""

    def __init__(self) -> None:
        self.parser = StompFrameParser(server=False)
        self.frames: defer.DeferredQueue = defer.DeferredQueue()
        self.lost: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        for f in client_feed(self.parser, data):
            self.frames.put(f)

    def connectionLost(self, reason=None) -> None:
        self.lost.callback(None)

    def next(self) -> defer.Deferred:
        return within(self.frames.get())


async def raw_client(port: int) -> RawClient:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return await within(endpoint.connect(protocol.Factory.forProtocol(RawClient)))


async def subscribed(client: StompPy, destination: str, sid: str) -> None:
    """Subscribe and wait for the broker's receipt, so later sends are routed to it."""
    await client.call("subscribe", destination, id=sid, headers={"receipt": f"sub-{sid}"})
    receipt = await within(client.receipts.get())
    assert receipt.headers["receipt-id"] == f"sub-{sid}"


@pytest_twisted.ensureDeferred
async def test_stomppy_topic_fans_out_to_two_subscribers(broker, stompy):
    a, b, pub = await stompy(), await stompy(), await stompy()
    await subscribed(a, "/topic/news", "a")
    await subscribed(b, "/topic/news", "b")
    await pub.call("send", "/topic/news", b"hello", headers={"x-custom": "1"})
    for client, sid in ((a, "a"), (b, "b")):
        message = await within(client.messages.get())
        assert message.body == b"hello"
        assert message.headers["subscription"] == sid
        assert message.headers["x-custom"] == "1"
        assert message.headers["destination"] == "/topic/news"


@pytest_twisted.ensureDeferred
async def test_stomppy_queue_delivers_each_message_once(broker, stompy):
    a, b, pub = await stompy(), await stompy(), await stompy()
    await subscribed(a, "/queue/work", "1")
    await subscribed(b, "/queue/work", "2")
    for i in range(10):
        await pub.call("send", "/queue/work", b"job-%d" % i)
    await until(lambda: len(a.messages.pending) + len(b.messages.pending) >= 10)
    got_a = [m.body for m in a.messages.pending]
    got_b = [m.body for m in b.messages.pending]
    assert sorted(got_a + got_b) == sorted(b"job-%d" % i for i in range(10))
    assert len(got_a) == len(got_b) == 5  # round-robin


@pytest_twisted.ensureDeferred
async def test_stomppy_binary_body_with_nuls(broker, stompy):
    sub, pub = await stompy(), await stompy("1.1")
    await subscribed(sub, "/topic/bin", "1")
    body = bytes(range(256)) * 40 + b"\x00\x00"
    await pub.call("send", "/topic/bin", body)
    message = await within(sub.messages.get())
    assert message.body == body
    assert message.headers["content-length"] == str(len(body))


@pytest_twisted.ensureDeferred
async def test_stomppy_receipts(broker, stompy):
    client = await stompy()
    await client.call("subscribe", "/queue/r", id="1", headers={"receipt": "r-sub"})
    await client.call("send", "/topic/x", b"x", headers={"receipt": "r-send"})
    await client.call("unsubscribe", "1", headers={"receipt": "r-unsub"})
    ids = [(await within(client.receipts.get())).headers["receipt-id"] for _ in range(3)]
    assert ids == ["r-sub", "r-send", "r-unsub"]


@pytest_twisted.ensureDeferred
async def test_stomppy_transactions_commit_and_abort(broker, stompy):
    sub, pub = await stompy(), await stompy()
    await subscribed(sub, "/queue/tx", "1")
    tx = await pub.call("begin")
    await pub.call("send", "/queue/tx", b"first", transaction=tx)
    await pub.call("send", "/queue/tx", b"second", transaction=tx)
    aborted = await pub.call("begin")
    await pub.call("send", "/queue/tx", b"never", transaction=aborted)
    await pub.call("abort", aborted)
    await pub.call("send", "/queue/tx", b"marker", headers={"receipt": "m"})
    assert (await within(pub.receipts.get())).headers["receipt-id"] == "m"
    assert (await within(sub.messages.get())).body == b"marker"  # the rest is held
    await pub.call("commit", tx, headers={"receipt": "c"})
    assert (await within(pub.receipts.get())).headers["receipt-id"] == "c"
    assert [(await within(sub.messages.get())).body for _ in range(2)] == [b"first", b"second"]
    await pub.call("send", "/queue/tx", b"end", headers={"receipt": "e"})
    await within(pub.receipts.get())
    assert (await within(sub.messages.get())).body == b"end"  # "never" never came
    await pub.call("commit", "no-such-tx")
    error = await within(pub.errors.get())
    assert error.headers["message"] == "unknown transaction 'no-such-tx'"


def stompest_transactions(port: int) -> list[bytes]:
    """stompest's blocking client: BEGIN/SEND/COMMIT and BEGIN/SEND/ABORT (run in a thread)."""
    config = StompConfig(f"tcp://127.0.0.1:{port}", version=StompSpec.VERSION_1_2)
    sub, pub = StompestClient(config), StompestClient(config)
    for client in (sub, pub):
        client.connect(heartBeats=(0, 0), host="127.0.0.1", connectedTimeout=TIMEOUT)
    try:
        sub.subscribe("/queue/stompest", {"id": "1"}, receipt="s")
        assert sub.receiveFrame().headers["receipt-id"] == "s"
        with pub.transaction(receipt="t") as tx:
            assert pub.receiveFrame().headers["receipt-id"] == "t-begin"
            pub.send("/queue/stompest", b"one", headers={"transaction": tx})
            pub.send("/queue/stompest", b"two", headers={"transaction": tx})
            pub.send("/queue/stompest", b"marker", receipt="m")
            assert pub.receiveFrame().headers["receipt-id"] == "m"
            received = [sub.receiveFrame().body]  # the marker: the rest is held
        assert pub.receiveFrame().headers["receipt-id"] == "t-commit"
        received += [sub.receiveFrame().body, sub.receiveFrame().body]
        pub.begin("gone")
        pub.send("/queue/stompest", b"dropped", headers={"transaction": "gone"})
        pub.abort("gone", receipt="a")
        assert pub.receiveFrame().headers["receipt-id"] == "a"
        pub.send("/queue/stompest", b"three", receipt="3")
        assert pub.receiveFrame().headers["receipt-id"] == "3"
        received.append(sub.receiveFrame().body)
        return received
    finally:
        for client in (sub, pub):
            client.disconnect()
            client.close()


@pytest_twisted.ensureDeferred
async def test_stompest_transactions_commit_and_abort(broker):
    received = await within(deferToThread(stompest_transactions, broker.port))
    assert received == [b"marker", b"one", b"two", b"three"]


@pytest_twisted.ensureDeferred
async def test_stomppy_bad_login_gets_error_then_close():
    factory = BrokerFactory(Router(), reactor, users={"alice": "pw"})
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    client = StompPy(port.getHost().port)
    try:
        with pytest.raises(stomp.exception.ConnectFailedException):
            await client.call("connect", username="alice", passcode="nope", wait=True)
        error = await within(client.errors.get())
        assert error.headers["message"] == "Authentication failed"
        await within(client.gone)
        await until(lambda: not factory.connections)
        good = StompPy(port.getHost().port)
        await good.call("connect", username="alice", passcode="pw", wait=True)
        await good.close()
    finally:
        await client.close()
        await port.stopListening()


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
@pytest_twisted.ensureDeferred
async def test_stomppy_negotiates(broker, stompy, version):
    client = await stompy(version)
    assert client.connected_frame.headers.get("version", "1.0") == version
    [proto] = broker.factory.connections
    assert proto.version == version
    await subscribed(client, "/topic/v", "1")
    await client.call("send", "/topic/v", b"v" + version.encode())
    assert (await within(client.messages.get())).body == b"v" + version.encode()


@pytest_twisted.ensureDeferred
async def test_no_common_version_over_a_socket(broker):
    client = await raw_client(broker.port)
    client.transport.write(connect_frame("0.9,2.0"))
    error = await client.next()
    assert error.command == "ERROR"
    assert error.headers["version"] == "1.0,1.1,1.2"
    await within(client.lost)


@pytest_twisted.ensureDeferred
async def test_malformed_frame_over_a_socket_leaves_others_alone(broker, stompy):
    sub, pub = await stompy(), await stompy()
    await subscribed(sub, "/topic/ok", "1")
    bad = await raw_client(broker.port)
    bad.transport.write(connect_frame("1.2"))
    assert (await bad.next()).command == "CONNECTED"
    bad.transport.write(b"SEND\ndestination:/topic/ok\ncontent-length:zz\n\n\x00")
    error = await bad.next()
    assert error.command == "ERROR" and "content-length" in error.headers["message"]
    await within(bad.lost)
    await pub.call("send", "/topic/ok", b"still fine")
    assert (await within(sub.messages.get())).body == b"still fine"


@pytest_twisted.ensureDeferred
async def test_connection_caps_over_sockets():
    factory = BrokerFactory(Router(), reactor, max_connections=3, max_connections_per_address=2)
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    clients = []
    try:
        for _ in range(2):
            clients.append(await raw_client(port.getHost().port))
        over = await raw_client(port.getHost().port)
        error = await over.next()
        assert error.headers["message"] == "too many connections from 127.0.0.1 (at most 2)"
        await within(over.lost)
        # Another loopback address is another source: one more fits, then the total cap.
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port, bindAddress=("127.0.0.2", 0)
        )
        factory_ = protocol.Factory.forProtocol(RawClient)
        clients.append(await within(endpoint.connect(factory_)))
        full = await within(endpoint.connect(factory_))
        error = await full.next()
        assert error.headers["message"] == "too many connections (at most 3)"
        await within(full.lost)
        assert factory.admission.refused == {"connections-per-address": 1, "connections": 1}
        for client in clients:
            client.transport.write(connect_frame("1.2", heart_beat="0,0"))
            assert (await client.next()).command == "CONNECTED"
    finally:
        for client in clients:
            client.transport.loseConnection()
        await within(defer.gatherResults([c.lost for c in clients]))
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_200_clients_connect_at_once():
    factory = BrokerFactory(Router(), reactor, max_connections_per_address=200)
    port = await serverFromString(reactor, with_backlog("tcp:0:interface=127.0.0.1")).listen(
        factory
    )
    broker = Broker(factory, port)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", broker.port, timeout=TIMEOUT)
    connecting = [endpoint.connect(protocol.Factory.forProtocol(RawClient)) for _ in range(200)]
    clients = await within(defer.gatherResults(connecting))
    try:
        for client in clients:
            client.transport.write(connect_frame("1.2", heart_beat="0,0"))
        replies = await within(defer.gatherResults([c.next() for c in clients]))
        assert [r.command for r in replies] == ["CONNECTED"] * 200
        assert len({r.headers["session"] for r in replies}) == 200
        assert len(broker.factory.connections) == 200
    finally:
        for client in clients:
            client.transport.loseConnection()
        await within(defer.gatherResults([c.lost for c in clients]))
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_slow_subscriber_pauses_publisher_until_it_reads():
    factory = BrokerFactory(Router(), reactor, heartbeat_ms=(0, 0), subscriber_queue=64 * 1024)
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    # Accepted sockets inherit these: small kernel buffers make congestion quick.
    port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    address = ("127.0.0.1", port.getHost().port)
    sockets: list[socket.socket] = []

    def open_socket() -> socket.socket:
        s = socket.socket()
        sockets.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.connect(address)  # loopback: completes in the kernel's backlog
        s.setblocking(False)
        return s

    try:
        sub = open_socket()
        sub.send(connect_frame("1.2") + frame("SUBSCRIBE", {"id": "0", "destination": "/queue/s"}))
        await until(lambda: factory.router.subscriber_count("/queue/s") == 1)
        [sub_proto] = factory.connections
        pub = open_socket()
        await until(lambda: len(factory.connections) == 2)
        [pub_proto] = factory.connections - {sub_proto}

        count, size = 150, 32 * 1024
        bodies = [struct.pack("!I", i) + bytes([i % 256, 0]) * (size // 2) for i in range(count)]
        data = connect_frame("1.2") + b"".join(
            frame("SEND", {"destination": "/queue/s"}, b) for b in bodies
        )
        sent = 0

        def push() -> bool:
            """Send what the kernel takes; False once the socket would block."""
            nonlocal sent
            while sent < len(data):
                try:
                    sent += pub.send(data[sent : sent + 65536])
                except BlockingIOError:
                    return False
            return True

        # Phase 1: the subscriber reads nothing; the publisher must get paused.
        deadline = reactor.seconds() + TIMEOUT
        while not pub_proto.paused:
            assert not push(), "everything was accepted without any back-pressure"
            assert reactor.seconds() < deadline
            await turn()
        assert sub_proto.congested and sub_proto.queued_bytes > 64 * 1024
        received = pub_proto.bytes_received
        blocked = 0
        for _ in range(30):
            blocked += not push()
            await turn(0.005)
        assert pub_proto.bytes_received == received  # the broker stopped reading it
        assert blocked == 30  # and its socket buffers are full
        assert sent < len(data)

        # Phase 2: the subscriber reads; everything arrives, intact and in order.
        parser = StompFrameParser(server=False)
        messages: list[StompFrame] = []
        deadline = reactor.seconds() + 60
        while len(messages) < count:
            assert reactor.seconds() < deadline, f"only {len(messages)} messages arrived"
            push()
            while True:
                try:
                    chunk = sub.recv(65536)
                except BlockingIOError:
                    break
                assert chunk, "broker closed the subscriber"
                messages += [m for m in client_feed(parser, chunk) if m.command == "MESSAGE"]
            await turn()
        assert [m.body for m in messages] == bodies
        assert not pub_proto.paused and not sub_proto.congested
    finally:
        for s in sockets:
            s.close()
        await port.stopListening()
        await until(lambda: not factory.connections)


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
@pytest.mark.parametrize("ack", ["auto", "client"])
def test_plain_and_escaped_deliveries_carry_the_same_message(factory, version, ack):
    """The plain-header fast path and the careful path give the subscriber the same frame."""
    results = []
    for extra in [("x-plain", "value"), ("x-colon", "a:b")]:  # the colon forces escaping
        sub, pub = Peer(factory), Peer(factory)
        sub.connect(version)
        pub.connect()
        sub.sendf("SUBSCRIBE", {"id": "s1", "destination": "/topic/f", "ack": ack})
        pub.sendf("SEND", [("destination", "/topic/f"), ("sk-type", "data"), extra], b"\x00b")
        [message] = sub.frames()
        headers = dict(message.headers)
        headers.pop("message-id")
        headers.pop("ack", None)
        headers.pop(extra[0])
        results.append((message.command, headers, message.body))
    assert results[0] == results[1]
    assert results[0][1]["content-length"] == "2" and results[0][1]["sk-type"] == "data"
