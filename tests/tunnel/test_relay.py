"""The relay between a local socket and a stream: FIN both ways, the end of both, and resets
(RST) both ways when a stream is dropped or a socket reset."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.python.failure import Failure

from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.stream import Phase, Stream
from socketeer.wire.envelope import MsgType, encode_params

from support.net import listen, until
from support.streams import FakeHost, HalfCloseTransport, env


def relayed() -> tuple[FakeHost, Stream, SocketRelay, HalfCloseTransport]:
    host = FakeHost()
    stream = Stream(host, "peer", "r1", 10_000)
    relay = SocketRelay(lambda r: stream)
    transport = HalfCloseTransport()
    relay.makeConnection(transport)
    return host, stream, relay, transport


def test_no_stream_closes_the_socket():
    relay = SocketRelay(lambda r: None)
    transport = HalfCloseTransport()
    relay.makeConnection(transport)
    assert transport.disconnecting


def test_bytes_flow_both_ways_with_producers_registered_both_ways():
    host, stream, relay, transport = relayed()
    assert transport.producer is stream  # the socket's buffer pauses the stream
    relay.dataReceived(b"up")
    stream.receive(env(MsgType.DATA, 0, b"down"))
    assert host.sent[0] == (MsgType.DATA, 0, b"up")
    assert transport.value() == b"down"


def test_the_sockets_fin_is_eof_and_the_peers_eof_half_closes_the_socket():
    host, stream, relay, transport = relayed()
    relay.readConnectionLost()
    assert host.kinds() == [MsgType.EOF]
    assert not transport.disconnecting
    stream.receive(env(MsgType.EOF, 0))
    assert transport.write_closed
    assert transport.producer is None  # dropped first, or Twisted would not half-close


def test_both_halves_closed_end_the_connection_and_then_the_stream():
    host, stream, relay, transport = relayed()
    stream.receive(env(MsgType.EOF, 0))
    relay.writeConnectionLost()  # the socket finished its half-close
    assert not transport.disconnecting  # reading goes on
    relay.readConnectionLost()
    assert transport.disconnecting and not transport.aborted
    relay.connectionLost(None)
    assert host.payload() == [(MsgType.EOF, 0, b""), (MsgType.CLOSE, 1, b"")]
    assert stream.phase is Phase.CLOSING  # until the peer has the CLOSE
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 0, "s": 2})))
    assert stream.phase is Phase.CLOSED and host.done == [stream]


def test_the_streams_end_closes_the_socket():
    host, stream, relay, transport = relayed()
    stream.receive(env(MsgType.CLOSE, 0))
    assert transport.disconnecting and not transport.aborted  # a FIN
    assert transport.producer is None
    relay.connectionLost(None)
    assert host.payload() == []  # the peer closed; nothing to tell it but the ACK
    assert host.acks() == [{"n": "0", "s": "1"}]


def test_a_dropped_stream_resets_the_socket():
    host, stream, relay, transport = relayed()
    stream.receive(env(MsgType.OPEN_OK, 0))
    stream.receive(env(MsgType.RESET, 0))
    assert transport.aborted  # an RST: the client must not take a truncated reply as whole
    assert transport.producer is None
    relay.connectionLost(Failure(ConnectionAborted()))
    assert host.payload() == []  # the stream is gone already: no RESET back


def test_a_socket_that_is_reset_resets_the_stream():
    host, stream, relay, transport = relayed()
    stream.receive(env(MsgType.OPEN_OK, 0))
    relay.dataReceived(b"partial")
    relay.connectionLost(Failure(ConnectionLost("Connection reset by peer")))
    assert host.payload() == [(MsgType.DATA, 0, b"partial"), (MsgType.RESET, 0, b"")]
    assert stream.phase is Phase.CLOSED  # no CLOSE: the peer must not think it ended well
    assert host.done == [stream]


def test_a_socket_closed_cleanly_closes_the_stream():
    host, stream, relay, transport = relayed()
    stream.receive(env(MsgType.OPEN_OK, 0))
    relay.connectionLost(Failure(ConnectionDone()))
    assert host.payload() == [(MsgType.CLOSE, 0, b"")]
    assert stream.phase is Phase.CLOSING


class Ending(protocol.Protocol):
    """A client that records how its connection ended."""

    def __init__(self) -> None:
        self.made: defer.Deferred = defer.Deferred()
        self.lost: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.made.callback(self)

    def connectionLost(self, reason=None) -> None:
        self.lost.callback([reason])  # in a list: a Failure would errback the Deferred


@pytest.mark.parametrize("ending", [MsgType.CLOSE, MsgType.RESET])
@pytest_twisted.ensureDeferred
async def test_a_real_socket_gets_an_rst_when_its_stream_is_dropped_and_a_fin_when_closed(
    ending: MsgType,
):
    host = FakeHost()
    stream = Stream(host, "peer", "r1", 10_000)
    ports: list = []
    port = await listen(protocol.Factory.forProtocol(lambda: SocketRelay(lambda r: stream)), ports)
    client = Ending()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        protocol.Factory.forProtocol(lambda: client)
    )
    try:
        client.transport.write(b"request")
        await until(lambda: host.payload(), "the request on the stream")  # all of it read
        stream.receive(env(MsgType.OPEN_OK, 0))
        stream.receive(env(ending, 1))
        (reason,) = await client.lost.addTimeout(10, reactor)
    finally:
        await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])
    # A clean end is a FIN; a drop an RST (SO_LINGER 0), which the client reads as a reset.
    expected = ConnectionDone if ending is MsgType.CLOSE else ConnectionLost
    assert reason.check(expected) is expected, reason
