"""The relay between a local socket and a stream: FIN both ways, and the end of both."""

from __future__ import annotations

from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.stream import Phase, Stream
from socketeer.wire.envelope import MsgType

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
    assert transport.disconnecting
    relay.connectionLost(None)
    assert host.kinds() == [MsgType.EOF, MsgType.CLOSE]
    assert stream.phase is Phase.CLOSED


def test_the_streams_end_closes_the_socket():
    host, stream, relay, transport = relayed()
    stream.receive(env(MsgType.CLOSE, 0))
    assert transport.disconnecting
    assert transport.producer is None
    relay.connectionLost(None)
    assert host.sent == []  # the peer closed; nothing to tell it
