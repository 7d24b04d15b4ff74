"""Node dispatch, liveness, resumption, counting and snapshot, with a fake link and a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger

from socketeer.tunnel.node import Node
from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.snapshot import ChannelState
from socketeer.tunnel.stream import Phase
from socketeer.wire.envelope import Envelope, MsgType, encode_params
from socketeer.wire.seal import Sealer
from socketeer.wire.stompframing import StompFrameParser

from support.relay import Link
from support.sessions import handshake


class RecordingSink:
    """A sink that only records the requests it is served."""

    def __init__(self) -> None:
        self.opened: list[Envelope] = []
        self.resolves: list[Envelope] = []

    def open(self, request: Envelope) -> None:
        self.opened.append(request)

    def resolve(self, request: Envelope) -> None:
        self.resolves.append(request)


NOW = 1_800_000_000.0


def frame_of(data: bytes):
    (frame,) = StompFrameParser("1.2", server=True).feed(data)
    return frame


def make_node(**kw) -> tuple[Node, Clock, Link]:
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me", **kw)
    link = Link()
    node.channel_ready(link)
    handshake(node)
    return node, clock, link


def from_peer(
    kind: MsgType,
    resource: str,
    seq: int = 0,
    body: bytes = b"",
    inc: str = "p1",
    pinc: str = "me",
    peer: str = "si",
):
    return Envelope(kind, "c", peer, "so", resource, seq, 0, inc, body, pinc)


def open_one(node: Node, link: Link):
    stream = node.open_stream("si", "example.org", 80)
    transport = StringTransport()
    SocketRelay(lambda relay: stream).makeConnection(transport)
    node.envelope_received(from_peer(MsgType.OPEN_OK, stream.resource))
    return stream, transport


def hello_ok(node: Node, peer: str = "si", inc: str = "p1", window: int = 4 << 20) -> None:
    """``peer`` answers ``node``'s HELLO."""
    node.envelope_received(
        from_peer(MsgType.HELLO_OK, "", body=encode_params({"w": window}), inc=inc, peer=peer)
    )


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
    assert link2.kinds() == [MsgType.HELLO]  # nothing resent before the peer says who it is
    hello_ok(node)  # the same incarnation: the session goes on
    assert link2.kinds()[1:] == [MsgType.ACK]
    assert link2.sent[1].params() == {"n": "0", "s": "1", "r": "1"}
    # The peer has our OPEN (s=1), not the DATA: that alone is sent again.
    node.envelope_received(
        from_peer(MsgType.ACK, stream.resource, body=encode_params({"n": 0, "s": 1, "r": 2}))
    )
    assert link2.kinds()[2:] == [MsgType.DATA]
    assert link2.sent[2].body == b"before" and link2.sent[2].peer_incarnation == "p1"


def test_open_while_disconnected_is_sent_once_the_peer_answers_the_hello():
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me")
    stream = node.open_stream("si", "example.org", 80)
    link = Link()
    node.channel_ready(link)
    assert link.kinds() == [MsgType.HELLO]
    hello_ok(node)
    assert link.kinds()[1] is MsgType.OPEN
    assert link.sent[1].resource == stream.resource and link.sent[1].peer_incarnation == "p1"


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
    assert node.stats.streams_expired == 1
    node.stop()


def test_peer_restart_resets_its_old_streams_but_a_stray_message_does_not():
    node, clock, link = make_node()
    stream, transport = open_one(node, link)
    # A late (or forged) message from another incarnation is no restart: dropped, and the
    # sender is told we have no session with it.
    node.envelope_received(from_peer(MsgType.PONG, "", inc="p2"))
    node.envelope_received(from_peer(MsgType.DATA, stream.resource, seq=1, inc="p0"))
    assert stream.phase is Phase.OPEN
    assert link.sent[-1].type is MsgType.SESSION_RESET and link.sent[-1].peer_incarnation == "p0"
    assert node.stats.stale_session == 1
    handshake(node, inc="p2")  # the peer restarted: its old streams died with it
    assert stream.phase is Phase.CLOSED
    assert transport.disconnecting
    assert node.stats.session_resets == 1


def sink_node_with_session(**kw) -> tuple[Node, Link]:
    node = Node("c", "si", "t", Clock(), incarnation="sink", **kw)
    link = Link()
    node.channel_ready(link)
    node.envelope_received(
        Envelope(MsgType.HELLO, "c", "so", "*", "", 0, 0, "src", encode_params({"w": 1 << 20}))
    )
    return node, link


def open_request(resource: str, inc: str = "src", pinc: str = "sink") -> Envelope:
    body = encode_params({"host": "h", "port": 1})
    return Envelope(MsgType.OPEN, "c", "so", "si", resource, 0, 0, inc, body, pinc)


def test_an_open_runs_at_most_once_however_often_it_is_resent():
    node, link = sink_node_with_session()
    sink = RecordingSink()
    node.serve(sink)
    opened = sink.opened
    node.envelope_received(open_request("src-5"))
    assert len(opened) == 1
    # The stream ran and ended; the OPEN is resent (its ACK was lost): reset, not rerun.
    node.envelope_received(open_request("src-5"))
    assert len(opened) == 1 and link.kinds()[-1] is MsgType.RESET
    # Older streams than the session remembers are refused too, never run.
    node.envelope_received(open_request("src-100000"))
    node.envelope_received(open_request("src-6"))
    assert len(opened) == 2 and node.stats.repeated_opens == 2
    # An id that is not the sender's incarnation and a counter is malformed.
    node.envelope_received(open_request("other-7"))
    assert len(opened) == 2 and link.kinds()[-1] is MsgType.RESET


def test_resync_for_unknown_stream_is_answered_with_reset():
    node, clock, link = make_node()
    before = len(link.sent)
    node.envelope_received(from_peer(MsgType.ACK, "gone", body=encode_params({"r": 1})))
    assert link.kinds()[before:] == [MsgType.RESET]
    node.envelope_received(from_peer(MsgType.ACK, "gone", body=encode_params({"n": 1})))
    assert link.kinds()[before:] == [MsgType.RESET]  # a plain ACK for an unknown stream: ignored


def test_sink_serves_opens_of_new_streams_only():
    node, link = sink_node_with_session()
    node.envelope_received(open_request("src-1"))
    assert link.kinds()[-1] is MsgType.OPEN_FAIL  # not a sink (yet)
    assert node.stats.open_refused == 1
    sink = RecordingSink()
    node.serve(sink)
    request = open_request("src-2")
    node.envelope_received(request)
    assert sink.opened == [request]
    # An OPEN in a session this node does not have (it is meant for an earlier incarnation
    # of ours): never served, and the sender learns that session is gone.
    node.envelope_received(open_request("src-3", pinc="earlier"))
    assert sink.opened == [request] and link.kinds()[-1] is MsgType.SESSION_RESET


def test_snapshot_shows_channel_peers_streams_and_counters():
    node, clock, link = make_node()
    link.broker = "broker.example:61613"
    clock.advance(10)
    stream, _ = open_one(node, link)
    stream.write(b"12345")
    clock.advance(1)
    node.ping("si")
    (ping,) = [e for e in link.sent if e.type is MsgType.PING]
    clock.advance(0.5)
    node.envelope_received(from_peer(MsgType.PONG, "", body=ping.body))
    node.channel_congested(True)
    snap = node.snapshot()
    assert (snap.cluster, snap.node, snap.incarnation, snap.time) == ("c", "so", "me", 11.5)
    assert snap.channel == ChannelState(True, True, "broker.example:61613", 1)
    (peer,) = snap.peers
    assert (peer.node, peer.incarnation, peer.last_heard, peer.last_pong) == (
        "si",
        "p1",
        11.5,
        11.5,
    )
    assert peer.rtt == 0.5
    (state,) = snap.streams
    assert (state.id, state.peer, state.target, state.phase) == (
        stream.resource,
        "si",
        "example.org:80",
        "open",
    )
    assert (state.sent, state.started, snap.bytes_out, snap.streams_opened) == (5, 10.0, 5, 1)
    assert snap.counts.streams_opened == 1 and snap.counts.pongs == 1
    node.channel_lost()
    assert node.snapshot().channel == ChannelState(False, False, None, 1)
    assert snap.channel.connected  # the earlier snapshot did not change


def test_stream_end_is_counted_as_closed_or_failed_by_reason():
    node, clock, link = make_node()
    stream, _ = open_one(node, link)
    stream.write(b"abc")
    node.envelope_received(from_peer(MsgType.CLOSE, stream.resource, seq=1))
    failing = node.open_stream("si", "example.org", 81)
    node.envelope_received(
        from_peer(MsgType.OPEN_FAIL, failing.resource, body=encode_params({"reason": "refused"}))
    )
    counts = node.snapshot().counts
    assert counts.streams_closed == 1 and counts.bytes_out == 3
    assert counts.open_failed == {OpenFailure.REFUSED: 1}
    assert not node.streams and node.streams.recently_ended(stream.key)


def test_sealed_refusals_are_counted_by_the_node_and_logged_at_a_rate_limit():
    clock = Clock()
    clock.advance(NOW)
    node = Node("c", "si", "t", clock, sealer=Sealer("k", "c", "t"))
    node.channel_ready(Link())
    events: list[dict] = []
    node.log = Logger(observer=events.append)
    forger = Sealer("other", "c", "t")
    ping = Envelope(MsgType.PING, "c", "so", "si", "", 0, int(NOW * 1000), "x", b"")
    for _ in range(5):
        node.frame_received(frame_of(forger.seal(ping)))
    clock.advance(20)
    node.frame_received(frame_of(forger.seal(ping)))
    assert node.stats.seal_refused == {"auth": 6} and node.stats.malformed == 0
    lines = [(e["count"], e["more"]) for e in events if "dropped a message" in e["log_format"]]
    assert lines == [(1, ""), (6, ", 4 not logged")]


# -- new streams ride out a channel outage -------------------------------------------------


def opens(link: Link) -> list[Envelope]:
    return [e for e in link.sent if e.type is MsgType.OPEN]


def test_an_open_waits_for_the_channel_and_goes_out_when_it_is_back():
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me", channel_wait=10)
    stream = node.open_stream("si", "example.org", 80)
    failed: list = []
    stream.on_open_failed = lambda s, reason, message: failed.append(reason)
    assert node.snapshot().channel.waiting == 1
    clock.advance(9.9)
    link = Link()
    node.channel_ready(link)
    hello_ok(node)
    (sent,) = opens(link)
    assert sent.resource == stream.resource and node.snapshot().channel.waiting == 0
    node.envelope_received(from_peer(MsgType.OPEN_OK, stream.resource))
    assert stream.phase is Phase.OPEN and not failed
    assert node.stats.channel_waits == 1


def test_an_open_fails_when_the_channel_stays_down_for_channel_wait():
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me", channel_wait=10)
    stream = node.open_stream("si", "example.org", 80)
    failed: list = []
    stream.on_open_failed = lambda s, reason, message: failed.append((reason, message))
    clock.advance(10)
    assert failed == [(OpenFailure.CHANNEL_LOST, "no channel to the broker for 10s")]
    assert node.stats.channel_wait_expired == 1 and node.snapshot().channel.waiting == 0
    link = Link()
    node.channel_ready(link)
    assert opens(link) == []  # given up: never sent


def test_a_client_that_gives_up_while_waiting_leaves_nothing_behind():
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me", channel_wait=10)
    stream = node.open_stream("si", "example.org", 80)
    stream.reset()
    assert node.snapshot().channel.waiting == 0 and not node.streams
    link = Link()
    node.channel_ready(link)
    hello_ok(node)
    assert opens(link) == []


def test_waiting_opens_are_bounded_and_the_excess_refused_on_the_next_turn():
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me", max_waiting=2)
    streams = [node.open_stream("si", "example.org", 80 + i) for i in range(3)]
    failed: list = []
    for s in streams:
        s.on_open_failed = lambda s, reason, message: failed.append((s, reason))
    assert failed == []  # the caller's callbacks are set before the refusal comes
    clock.advance(0)
    assert failed == [(streams[2], OpenFailure.CHANNEL_LOST)]
    assert node.stats.channel_wait_refused == 1 and node.snapshot().channel.waiting == 2


def test_an_unanswered_open_is_sent_again_until_the_peer_is_heard():
    node, clock, link = make_node()
    stream = node.open_stream("si", "example.org", 80)
    clock.advance(0.5)
    clock.advance(1)
    assert len(opens(link)) == 3 and {e.seq for e in opens(link)} == {0}
    assert node.stats.retransmits == 2
    # The sink answers the resync request with an ACK: it has the OPEN, so no more copies.
    node.envelope_received(
        from_peer(MsgType.ACK, stream.resource, body=encode_params({"n": 0, "s": 1}))
    )
    clock.advance(20)  # still within the open timeout (30 s)
    assert len(opens(link)) == 3 and stream.phase is Phase.OPENING


def test_an_answered_open_is_never_sent_again():
    node, clock, link = make_node()
    stream, _ = open_one(node, link)
    clock.advance(60)
    assert len(opens(link)) == 1 and stream.retry_timer is None


def test_the_sink_executes_a_repeated_open_once():
    sink_node, link = sink_node_with_session()
    served: list[Envelope] = []

    class Sink:
        def open(self, request: Envelope) -> None:
            served.append(request)
            sink_node.add_stream(sink_node.accept_stream(request))

        def resolve(self, request: Envelope) -> None:  # pragma: no cover - not asked
            raise AssertionError

    sink_node.serve(Sink())
    for _ in range(3):
        sink_node.envelope_received(open_request("src-1"))
    assert len(served) == 1
    # The live stream answers each copy with an ACK (so the source stops resending).
    assert link.kinds()[-2:] == [MsgType.ACK, MsgType.ACK]


def test_a_waiting_open_is_not_expired_by_a_peer_silent_since_the_outage():
    clock = Clock()
    node = Node("c", "so", "t", clock, incarnation="me", grace=60, ping_interval=5)
    link = Link()
    node.channel_ready(link)
    node.envelope_received(from_peer(MsgType.PONG, "", body=encode_params({"t": 0})))
    node.channel_lost()
    clock.advance(56)  # the peer was last heard 56 s ago, just before the outage
    stream = node.open_stream("si", "example.org", 80, timeout=90)
    failed: list = []
    stream.on_open_failed = lambda s, reason, message: failed.append(reason)
    for _ in range(8):  # 8 s: the grace period passes while the OPEN waits
        clock.advance(1)
        node.check_peers()
    assert failed == [] and stream.phase is Phase.OPENING
    node.channel_ready(Link())  # back: the peer answers, the OPEN goes out, a fresh grace
    hello_ok(node)
    for _ in range(10):
        clock.advance(1)
        node.check_peers()
    assert failed == [] and stream.phase is Phase.OPENING


def test_a_new_stream_to_a_peer_idle_for_long_is_not_expired_at_once():
    node, clock, link = make_node(grace=60, ping_interval=5)
    clock.advance(3600)  # an hour without a word from the peer (no streams: no pings)
    stream = node.open_stream("si", "example.org", 80, timeout=90)
    node.check_peers()
    assert stream.phase is Phase.OPENING and link.kinds()[-1] is MsgType.PING
