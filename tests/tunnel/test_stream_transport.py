"""The stream as a transport: a plain Twisted protocol on it gets what a TCP protocol gets."""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.stream import DELAYED_ACK, Phase, Stream, StreamAddress
from socketeer.wire.envelope import MsgType, encode_params

from support.streams import FakeHost, env


class Recorder(Protocol):
    """A plain protocol: no half-close, so EOF ends it (as on TCP)."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.data = bytearray()

    def connectionMade(self) -> None:
        self.events.append("made")

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.events.append(("lost", reason.type if reason is not None else None))


@implementer(IHalfCloseableProtocol)
class HalfCloser(Recorder):
    def readConnectionLost(self) -> None:
        self.events.append("read-closed")

    def writeConnectionLost(self) -> None:
        self.events.append("write-closed")


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.state = "producing"

    def pauseProducing(self) -> None:
        self.state = "paused"

    def resumeProducing(self) -> None:
        self.state = "producing"

    def stopProducing(self) -> None:
        self.state = "stopped"


def attached(protocol: Protocol, window: int = 1000) -> tuple[FakeHost, Stream]:
    host = FakeHost()
    stream = Stream(host, "peer", "r1", window)
    stream.attach_protocol(protocol)
    return host, stream


def test_a_stream_provides_the_transport_interfaces():
    stream = Stream(FakeHost(), "peer", "r1", 1000)
    for interface in (ITransport, IConsumer, IPushProducer):
        assert interface.providedBy(stream)
    assert stream.getPeer() == StreamAddress("peer", "r1")
    assert stream.getHost() == StreamAddress("peer", "r1")


def test_a_plain_protocol_is_connected_and_receives_in_order():
    proto = Recorder()
    host, stream = attached(proto)
    assert proto.transport is stream
    assert proto.events == ["made"]
    stream.receive(env(MsgType.DATA, 1, b"two"))
    stream.receive(env(MsgType.DATA, 0, b"one "))
    assert proto.data == b"one two"


def test_what_arrives_before_the_protocol_waits_for_it():
    host = FakeHost()
    stream = Stream(host, "peer", "r1", 1000)
    stream.receive(env(MsgType.DATA, 0, b"early"))
    stream.receive(env(MsgType.EOF, 1))
    proto = HalfCloser()
    stream.attach_protocol(proto)
    assert proto.data == b"early"
    assert proto.events == ["made", "read-closed"]


def test_write_and_write_sequence_send_data():
    host, stream = attached(Recorder(), window=10_000)
    stream.write(b"abc")
    stream.writeSequence([b"d", b"ef"])
    assert [(k, b) for k, _, b in host.sent] == [(MsgType.DATA, b"abc"), (MsgType.DATA, b"def")]
    assert stream.sent == 6


def test_peer_eof_is_read_connection_lost_and_writing_goes_on():
    proto = HalfCloser()
    host, stream = attached(proto)
    stream.receive(env(MsgType.EOF, 0))
    assert proto.events == ["made", "read-closed"]
    assert stream.phase is not Phase.CLOSED
    stream.write(b"reply")
    assert host.kinds() == [MsgType.DATA]  # the EOF's ACK waits (a CLOSE usually follows)
    host.clock.advance(DELAYED_ACK)
    assert host.kinds() == [MsgType.DATA, MsgType.ACK]


def test_peer_eof_ends_a_protocol_that_cannot_half_close():
    proto = Recorder()
    host, stream = attached(proto)
    stream.receive(env(MsgType.EOF, 0))
    assert proto.events == ["made", ("lost", ConnectionDone)]
    assert host.kinds() == [MsgType.CLOSE]  # the peer ends on it: no ACK of its EOF needed
    assert stream.phase is Phase.CLOSING  # until the peer acknowledges the CLOSE
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 0, "s": 1})))
    assert stream.phase is Phase.CLOSED


def test_lose_write_connection_sends_eof_once_and_reading_goes_on():
    proto = HalfCloser()
    host, stream = attached(proto)
    stream.loseWriteConnection()
    stream.loseWriteConnection()
    stream.write(b"too late")
    assert host.kinds() == [MsgType.EOF]
    assert proto.events == ["made", "write-closed"]
    stream.receive(env(MsgType.DATA, 0, b"still"))
    assert proto.data == b"still"


def test_lose_connection_sends_close_and_reports_connection_lost_once():
    proto = Recorder()
    host, stream = attached(proto)
    stream.loseConnection()
    stream.loseConnection()
    assert host.kinds() == [MsgType.CLOSE]
    assert proto.events == ["made", ("lost", ConnectionDone)]
    assert stream.phase is Phase.CLOSING and host.done == []  # kept until acknowledged
    stream.write(b"after")
    assert host.kinds() == [MsgType.CLOSE]
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 0, "s": 1})))
    assert stream.phase is Phase.CLOSED and host.done == [stream]
    assert proto.events == ["made", ("lost", ConnectionDone)]  # told once


def test_peer_close_is_connection_lost():
    proto = HalfCloser()
    host, stream = attached(proto)
    stream.receive(env(MsgType.CLOSE, 0))
    assert proto.events == ["made", ("lost", ConnectionDone)]
    assert host.sent == [(MsgType.ACK, 0, b"n=0&s=1")]  # acknowledged at once, nothing else
    assert stream.phase is Phase.CLOSED and stream.final_rx_seq == 1


def test_a_reset_is_connection_lost_with_a_dropped_reason():
    proto = Recorder()
    host, stream = attached(proto)
    stream.receive(env(MsgType.RESET, 0))
    assert proto.events == ["made", ("lost", ConnectionLost)]
    assert host.sent == [] and stream.phase is Phase.CLOSED


def test_abort_connection_resets_both_ends():
    proto = Recorder()
    host, stream = attached(proto)
    stream.abortConnection()
    assert host.sent == [(MsgType.RESET, 0, b"")]
    assert proto.events == ["made", ("lost", ConnectionLost)]


def test_a_failed_open_tells_the_waiter_then_the_protocol():
    order: list[str] = []
    proto = Recorder()
    host, stream = attached(proto)
    stream.on_open_failed = lambda s, reason, message: order.append(f"failed {reason.value}")
    stream.receive(env(MsgType.OPEN_FAIL, 0, encode_params({"reason": "refused"})))
    order.extend(str(e) for e in proto.events[1:])
    assert order[0] == "failed refused"
    assert len(order) == 2 and order[1].startswith("('lost'")
    assert stream.failure is OpenFailure.REFUSED


def test_the_window_pauses_the_registered_producer_until_acknowledged():
    host, stream = attached(Recorder(), window=1000)
    producer = Producer()
    stream.registerProducer(producer, True)
    stream.write(b"x" * 999)
    assert producer.state == "producing"
    stream.write(b"x")
    assert producer.state == "paused"
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 1000})))
    assert producer.state == "producing"
    stream.unregisterProducer()
    stream.write(b"x" * 2000)
    assert producer.state == "producing"  # no longer ours to pause


def test_a_congested_channel_pauses_the_producer_at_once():
    host = FakeHost()
    host.channel_paused = True
    stream = Stream(host, "peer", "r1", 1000)
    stream.attach_protocol(Recorder())
    producer = Producer()
    stream.registerProducer(producer, True)
    assert producer.state == "paused"


def test_producer_registration_follows_the_consumer_rules():
    host, stream = attached(Recorder())
    with pytest.raises(ValueError):
        stream.registerProducer(Producer(), False)  # pull producers are not taken
    stream.registerProducer(Producer(), True)
    with pytest.raises(RuntimeError):
        stream.registerProducer(Producer(), True)


def test_pausing_the_stream_withholds_credit_until_resumed():
    proto = Recorder()
    host, stream = attached(proto, window=1000)
    stream.pauseProducing()  # what a full consumer (the client's socket) does
    stream.receive(env(MsgType.DATA, 0, b"a" * 600))
    assert proto.data == b"a" * 600  # already in flight: delivered, but not credited
    assert MsgType.ACK not in host.kinds()
    host.clock.advance(1)  # the delayed ACK tells the sender what arrived, not more credit
    assert host.acks() == [{"n": "0", "s": "1"}]
    stream.resumeProducing()
    assert host.acks()[1:] == [{"n": "600", "s": "1"}]


@pytest.mark.parametrize("how", ["failed", "closed", "reset"])
def test_attaching_to_an_ended_stream_reports_how_it_ended(how: str):
    host = FakeHost()
    stream = Stream(host, "peer", "r1", 1000)
    if how == "failed":
        stream.fail(OpenFailure.REFUSED, "refused", notify_peer=False)
    elif how == "reset":
        stream.receive(env(MsgType.RESET, 0))
    else:
        stream.receive(env(MsgType.CLOSE, 0))
        # A CLOSE waits for the protocol like the data before it (the target gets what the
        # client sent before it left), acknowledged at once.
        assert stream.phase is Phase.OPENING and host.acks() == [{"n": "0", "s": "1"}]
    proto = Recorder()
    stream.attach_protocol(proto)
    lost = ConnectionDone if how == "closed" else ConnectionLost
    assert proto.events == ["made", ("lost", lost)]
    assert stream.phase is Phase.CLOSED
