"""ChannelProtocol as a STOMP client: handshake, subscriptions, heart-beats, errors (Clock)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from socketeer.channel.client import CONNECT_TIMEOUT, ChannelProtocol
from socketeer.channel.url import parse_channel_url
from socketeer.tunnel.node import Node
from socketeer.wire.envelope import Envelope, MsgType, encode_send
from socketeer.wire.stompframing import StompFrameParser, StompLimits


def setup(url: str = "stomp://user:secret@127.0.0.1:61626/top?heartbeat=1000"):
    clock = Clock()
    spec = parse_channel_url(url)
    node = Node("c", "n1", spec.topic, clock)
    proto = ChannelProtocol(node, spec, clock, StompLimits())
    transport = StringTransport()
    proto.makeConnection(transport)
    return clock, node, proto, transport


def sent_frames(transport: StringTransport, version: str = "1.0"):
    frames = StompFrameParser(version, server=True).feed(transport.value())
    transport.clear()
    return [f for f in frames if hasattr(f, "command")]


def test_connect_subscribe_ready():
    clock, node, proto, transport = setup()
    (connect,) = sent_frames(transport)
    assert connect.command == "CONNECT"
    assert connect.headers["login"] == "user"
    assert connect.headers["passcode"] == "secret"
    assert connect.headers["accept-version"] == "1.0,1.1,1.2"
    assert connect.headers["heart-beat"] == "1000,1000"
    assert node.channel_paused
    proto.dataReceived(b"CONNECTED\nversion:1.2\nheart-beat:2000,500\n\n\x00")
    subs = sent_frames(transport, "1.2")
    assert [f.command for f in subs] == ["SUBSCRIBE", "SUBSCRIBE"]
    assert [f.headers["destination"] for f in subs] == ["/topic/top.c.n1", "/topic/top.c"]
    assert node.channel_paused  # not before the receipt
    receipt = subs[-1].headers["receipt"]
    proto.dataReceived(f"RECEIPT\nreceipt-id:{receipt}\n\n\x00".encode())
    assert not node.channel_paused
    ready = node.when_ready()
    assert ready.called


def test_heartbeats_sent_and_silent_broker_dropped():
    clock, node, proto, transport = setup()
    proto.dataReceived(b"CONNECTED\nversion:1.2\nheart-beat:2000,500\n\n\x00")
    transport.clear()
    # We promised 1000, the broker wants 500: we send every max(1000, 500) = 1 s.
    clock.advance(1.0)
    assert transport.value() == b"\n"
    # The broker promised 2000 > our 1000: silence beyond 2 x 2 s drops it.
    clock.advance(3.0)
    assert not transport.disconnected
    clock.advance(2.0)
    assert transport.disconnected


def test_traffic_from_broker_keeps_connection():
    clock, node, proto, transport = setup()
    proto.dataReceived(b"CONNECTED\nversion:1.2\nheart-beat:2000,500\n\n\x00")
    for _ in range(10):
        clock.advance(2.0)
        proto.dataReceived(b"\n")
    assert not transport.disconnected


def test_connect_timeout():
    clock, node, proto, transport = setup()
    clock.advance(CONNECT_TIMEOUT)
    assert transport.disconnected


def test_error_frame_closes():
    clock, node, proto, transport = setup()
    proto.dataReceived(b"ERROR\nmessage:Authentication failed\n\n\x00")
    assert transport.disconnecting


def test_malformed_broker_output_aborts():
    clock, node, proto, transport = setup()
    proto.dataReceived(b"BOGUS\n\n\x00")
    assert transport.disconnected


def test_messages_for_other_nodes_are_counted_not_delivered():
    clock, node, proto, transport = setup()
    env = Envelope(MsgType.PING, "other", "x", "n1", "", 0, 0, "i", b"")
    frame = encode_send("top", env).replace(b"SEND", b"MESSAGE", 1)
    proto.dataReceived(frame)
    assert node.stats.foreign == 1
    proto.dataReceived(b"MESSAGE\ndestination:/topic/top.c.n1\n\nnot ours\x00")
    assert node.stats.malformed == 1
