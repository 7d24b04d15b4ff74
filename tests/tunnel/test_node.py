"""Node dispatch, liveness and resumption, with a fake channel link and a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from socketeer.tunnel.node import Node
from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.stream import Phase
from socketeer.wire.envelope import Envelope, MsgType, encode_params

from support.relay import Link


def make_node(**kw) -> tuple[Node, Clock, Link]:
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me", **kw)
    link = Link()
    node.channel_ready(link)
    return node, clock, link


def from_peer(kind: MsgType, resource: str, seq: int = 0, body: bytes = b"", inc: str = "p1"):
    return Envelope(kind, "c", "si", "so", resource, seq, 0, inc, body)


def open_one(node: Node, link: Link):
    stream = node.open_stream("si", "example.org", 80)
    transport = StringTransport()
    SocketRelay(lambda relay: stream).makeConnection(transport)
    node.envelope_received(from_peer(MsgType.OPEN_OK, stream.resource))
    return stream, transport


def test_streams_survive_a_channel_loss_and_resend_on_reconnect():
    node, clock, link = make_node()
    stream, transport = open_one(node, link)
    stream.write(b"before")
    node.channel_lost()
    assert transport.producerState == "paused"  # the client is not read meanwhile
    assert stream.phase is Phase.OPEN
    link2 = Link()
    node.channel_ready(link2)
    assert transport.producerState == "producing"
    assert link2.kinds() == [MsgType.OPEN, MsgType.DATA, MsgType.ACK]
    assert link2.sent[1].body == b"before"


def test_open_while_disconnected_is_sent_when_the_channel_comes():
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me")
    stream = node.open_stream("si", "example.org", 80)
    link = Link()
    node.channel_ready(link)
    assert link.kinds()[0] is MsgType.OPEN
    assert link.sent[0].resource == stream.resource


def test_silent_peer_is_pinged_then_its_streams_expire():
    node, clock, link = make_node(grace=20.0, ping_interval=5.0)
    node.start()
    stream, transport = open_one(node, link)
    clock.advance(5)
    assert MsgType.PING in link.kinds()
    node.envelope_received(from_peer(MsgType.PONG, ""))
    clock.advance(15)
    assert stream.phase is Phase.OPEN  # heard 15 s ago: fine
    clock.advance(25)
    assert stream.phase is Phase.CLOSED
    assert transport.disconnecting
    assert node.stats["streams-expired"] == 1
    node.stop()


def test_peer_restart_resets_its_old_streams():
    node, clock, link = make_node()
    stream, transport = open_one(node, link)
    node.envelope_received(from_peer(MsgType.PONG, "", inc="p2"))
    assert stream.phase is Phase.CLOSED
    assert transport.disconnecting


def test_retransmitted_open_of_an_ended_stream_is_reset():
    clock = Clock()
    node = Node("c", "si", "t", clock, incarnation="sink")
    link = Link()
    node.channel_ready(link)
    opened = []
    node.open_handler = opened.append
    env = Envelope(MsgType.OPEN, "c", "so", "si", "r1", 0, 0, "src", encode_params({}))
    node.envelope_received(env)
    assert len(opened) == 1
    node._recently_closed[("so", "r1")] = None  # the stream ran and ended
    node.envelope_received(env)
    assert len(opened) == 1
    assert link.kinds()[-1] is MsgType.RESET


def test_resync_for_unknown_stream_is_answered_with_reset():
    node, clock, link = make_node()
    node.envelope_received(from_peer(MsgType.ACK, "gone", body=encode_params({"r": 1})))
    assert link.kinds() == [MsgType.RESET]
    node.envelope_received(from_peer(MsgType.ACK, "gone", body=encode_params({"n": 1})))
    assert link.kinds() == [MsgType.RESET]  # a plain ACK for an unknown stream: ignored
