"""Peer sessions and the stream protocol as a node runs it (wire version 2): SESSION_RESET,
stale sessions, session windows and their enforcement, OPEN caps, resent CLOSEs, the
retransmission timer, CLOSING streams, delayed ACKs on the node's clock, shutdown."""

from __future__ import annotations

from twisted.internet.task import Clock

from socketeer.tunnel.handshake import SESSION_RESET_INTERVAL
from socketeer.tunnel.node import RTO_MIN, Node
from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.stream import DELAYED_ACK, Phase, Stream
from socketeer.wire.envelope import Envelope, MsgType, encode_params, encode_send
from socketeer.wire.stompframing import StompFrameParser

from support.relay import Link
from support.sessions import from_peer, handshake, hello_ok, session_messages, source_node
from support.streams import HalfCloseTransport

source = source_node


def open_one(node: Node, port: int = 80) -> tuple[Stream, HalfCloseTransport]:
    stream = node.open_stream("si", "example.org", port)
    transport = HalfCloseTransport()
    SocketRelay(lambda relay: stream).makeConnection(transport)
    node.envelope_received(from_peer(node, MsgType.OPEN_OK, stream.resource))
    return stream, transport


def sink(**kw) -> tuple[Node, Clock, Link]:
    """Sink node ``si`` (``sink``) serving streams, with a session with ``so`` (``src``)."""
    clock = Clock()
    node = Node("c", "si", "t", clock, incarnation="sink", **kw)
    link = Link()
    node.channel_ready(link)

    class Accepting:
        """Accepts every OPEN at once and joins it to a StringTransport 'target'."""

        transports: list[HalfCloseTransport] = []

        def open(self, request: Envelope) -> None:
            stream = node.accept_stream(request)
            node.add_stream(stream)
            transport = HalfCloseTransport()
            self.transports.append(transport)
            SocketRelay(lambda relay: stream).makeConnection(transport)
            stream.accept("192.0.2.1", 80)

        def resolve(self, request: Envelope) -> None:  # pragma: no cover - not asked
            raise AssertionError

    node.serve(Accepting())
    handshake(node, peer="so", inc="src", window=1 << 20)
    return node, clock, link


def to_sink(node: Node, kind: MsgType, resource: str, seq: int = 0, body: bytes = b""):
    node.envelope_received(from_peer(node, kind, resource, seq, body, peer="so", inc="src"))


# -- SESSION_RESET ---------------------------------------------------------------------------


def test_a_session_reset_ends_the_sessions_streams_with_an_rst_and_greets_again():
    node, clock, link = source()
    stream, transport = open_one(node)
    clock.advance(2)  # past the HELLO interval
    # It answers a message of ours addressed to p1, the incarnation our session is with.
    node.envelope_received(
        from_peer(node, MsgType.SESSION_RESET, "", body=encode_params({"was": "p1"}))
    )
    assert stream.phase is Phase.CLOSED and transport.aborted
    assert node.stats.session_resets == 1 and node.peers.session("si") == ""
    assert link.sent[-1].type is MsgType.HELLO and link.sent[-1].destination == "si"
    hello_ok(node)  # the same incarnation, a new session: new streams go out in it
    again, _ = open_one(node, 81)
    assert again.phase is Phase.OPEN


def test_a_session_reset_for_an_earlier_life_of_ours_is_ignored():
    node, clock, link = source()
    stream, transport = open_one(node)
    node.envelope_received(from_peer(node, MsgType.SESSION_RESET, "", pinc="earlier"))
    assert stream.phase is Phase.OPEN and node.peers.session("si") == "p1"


def test_a_session_reset_from_another_incarnation_of_the_peer_is_ignored():
    """p0 has no session with us, but we have none with p0 either: our session is with p1,
    which said nothing. (A late SESSION_RESET of a dead incarnation must not end it.)"""
    node, clock, link = source()
    stream, transport = open_one(node)
    node.envelope_received(from_peer(node, MsgType.SESSION_RESET, "", inc="p0"))
    assert stream.phase is Phase.OPEN and not transport.aborted
    assert node.peers.session("si") == "p1"


def test_stale_messages_are_answered_with_session_reset_at_a_rate_limit():
    node, clock, link = source()
    before = len(link.sent)
    for seq in range(3):
        node.envelope_received(from_peer(node, MsgType.DATA, "p0-1", seq, b"x", inc="p0"))
    resets = [e for e in link.sent[before:] if e.type is MsgType.SESSION_RESET]
    assert len(resets) == 1 and resets[0].peer_incarnation == "p0"
    assert node.stats.stale_session == 3
    clock.advance(SESSION_RESET_INTERVAL)
    node.envelope_received(from_peer(node, MsgType.DATA, "p0-1", 3, b"x", inc="p0"))
    assert len([e for e in link.sent[before:] if e.type is MsgType.SESSION_RESET]) == 2
    # A RESET of a stale session is not answered (no ping-pong of resets).
    node.envelope_received(from_peer(node, MsgType.RESET, "p0-1", inc="p0"))
    clock.advance(SESSION_RESET_INTERVAL)
    node.envelope_received(from_peer(node, MsgType.RESET, "p0-2", inc="p0"))
    assert len([e for e in link.sent[before:] if e.type is MsgType.SESSION_RESET]) == 2


def test_a_hello_ok_of_a_new_incarnation_resets_the_old_sessions_streams_too():
    node, clock, link = source()
    stream, transport = open_one(node)
    hello_ok(node, inc="p2")
    assert stream.phase is Phase.CLOSED and transport.aborted  # an RST, never resent
    assert node.peers.session("si") == "p2" and node.stats.session_resets == 1


def test_a_ping_of_another_incarnation_is_no_restart():
    node, clock, link = source()
    stream, transport = open_one(node)
    node.envelope_received(from_peer(node, MsgType.PING, "", body=b"t=1", inc="p2", pinc=""))
    assert stream.phase is Phase.OPEN and node.peers.session("si") == "p1"
    assert link.sent[-1].type is MsgType.PONG


def test_a_frame_of_wire_version_1_is_counted_and_dropped():
    node, clock, link = source()
    env = Envelope(MsgType.PING, "c", "si", "so", "", 0, 0, "p1", b"t=1")
    data = encode_send("t", env).replace(b"sk-v:2\n", b"")
    (frame,) = StompFrameParser("1.2", server=True).feed(data)
    before = len(link.sent)
    node.frame_received(frame)
    assert node.stats.malformed == 1 and len(link.sent) == before  # no PONG


# -- windows -----------------------------------------------------------------------------------


def test_the_session_window_is_the_smaller_of_the_two_nodes():
    node, clock, link = source(window=1 << 20)
    stream, _ = open_one(node)
    assert stream.window == 1 << 20  # si announced 4 MiB: ours is smaller
    hello_ok(node, peer="small", inc="s1", window=64 * 1024)
    assert node.stream_window("small") == 64 * 1024
    small = node.open_stream("small", "example.org", 80)
    assert small.window == 64 * 1024
    (request,) = [e for e in link.sent if e.type is MsgType.OPEN and e.destination == "small"]
    assert request.params()["w"] == str(1 << 20)  # our own window, for the sink to take min


def test_the_sink_takes_the_smaller_of_its_window_and_the_one_asked():
    node, clock, link = sink(window=1 << 20)
    body = encode_params({"host": "h", "port": 1, "w": 32 * 1024})
    to_sink(node, MsgType.OPEN, "src-1", 0, body)
    (stream,) = node.streams.values()
    assert stream.window == 32 * 1024


def test_a_peer_sending_past_the_window_is_reset_and_counted():
    node, clock, link = sink(window=64 * 1024)
    to_sink(node, MsgType.OPEN, "src-1", 0, encode_params({"host": "h", "port": 1}))
    (stream,) = node.streams.values()
    (target,) = node._sink.transports
    target.producer.pauseProducing()  # the target reads nothing: no credit is granted
    for seq in range(1, 5):  # a window's worth: fine
        to_sink(node, MsgType.DATA, "src-1", seq, b"x" * (16 * 1024))
    assert stream.phase is Phase.OPEN and node.stats.window_violations == 0
    to_sink(node, MsgType.DATA, "src-1", 5, b"y")
    assert stream.phase is Phase.CLOSED and node.stats.window_violations == 1
    assert link.sent[-1].type is MsgType.RESET and target.aborted


# -- OPEN at most once, caps -------------------------------------------------------------------


def test_stream_caps_refuse_new_streams_at_the_source_and_the_sink():
    node, clock, link = source(max_streams_per_peer=1)
    open_one(node)
    second = node.open_stream("si", "example.org", 81)
    assert second.failure is OpenFailure.LIMIT and node.stats.stream_limit == 1
    assert len([e for e in link.sent if e.type is MsgType.OPEN]) == 1

    node, clock, link = sink(max_streams=1)
    to_sink(node, MsgType.OPEN, "src-1", 0, encode_params({"host": "h", "port": 1}))
    to_sink(node, MsgType.OPEN, "src-2", 0, encode_params({"host": "h", "port": 1}))
    refusal = session_messages(link)[-1]
    assert refusal.type is MsgType.OPEN_FAIL and refusal.params()["reason"] == "limit"
    assert len(node.streams) == 1


def test_a_new_session_of_the_same_source_starts_its_counters_afresh():
    node, clock, link = sink()
    to_sink(node, MsgType.OPEN, "src-1", 0, encode_params({"host": "h", "port": 1}))
    node.envelope_received(
        Envelope(MsgType.HELLO, "c", "so", "*", "", 0, 0, "src2", encode_params({"w": 1 << 20}))
    )
    assert not node.streams  # the old session's stream was reset
    body = encode_params({"host": "h", "port": 1})
    node.envelope_received(from_peer(node, MsgType.OPEN, "src2-1", 0, body, peer="so", inc="src2"))
    assert len(node.streams) == 1


# -- closing ---------------------------------------------------------------------------------


def test_a_resent_close_of_a_stream_that_ended_cleanly_is_acknowledged_again():
    node, clock, link = sink()
    to_sink(node, MsgType.OPEN, "src-1", 0, encode_params({"host": "h", "port": 1}))
    to_sink(node, MsgType.CLOSE, "src-1", 1)
    assert not node.streams
    ack = session_messages(link)[-1]
    assert ack.type is MsgType.ACK and ack.params()["s"] == "2"
    to_sink(node, MsgType.CLOSE, "src-1", 1)  # our ACK was lost: the source sends it again
    again = session_messages(link)[-1]
    assert again.type is MsgType.ACK and again.params()["s"] == "2"  # not a RESET
    assert node.stats.unknown_stream == 0


def test_a_closing_stream_stays_until_its_close_is_acknowledged():
    node, clock, link = source()
    stream, transport = open_one(node)
    stream.loseConnection()
    assert transport.disconnecting and not transport.aborted
    assert stream.phase is Phase.CLOSING and stream.key in node.streams
    node.envelope_received(
        from_peer(node, MsgType.ACK, stream.resource, body=encode_params({"n": 0, "s": 2}))
    )
    assert stream.phase is Phase.CLOSED and stream.key not in node.streams
    assert node.stats.streams_closed == 1


def test_a_closing_stream_never_acknowledged_is_let_go_after_the_grace_period():
    node, clock, link = source(grace=20.0, ping_interval=5.0)
    node.start()
    stream, transport = open_one(node)
    stream.loseConnection()
    for _ in range(6):  # the peer answers pings, but never acknowledges our CLOSE
        clock.advance(5)
        node.envelope_received(from_peer(node, MsgType.PONG, "", pinc=""))
    assert stream.phase is Phase.CLOSED and stream.key not in node.streams
    assert not transport.aborted  # its socket was closed cleanly long ago
    node.stop()


# -- retransmission ------------------------------------------------------------------------------


def test_an_outbox_unacknowledged_for_an_rto_resyncs_once_per_rto():
    node, clock, link = source(ping_interval=1.0)
    stream, transport = open_one(node)
    stream.write(b"lost on the way")
    before = len(link.sent)
    clock.advance(RTO_MIN / 2)
    node.check_peers()
    resyncs = [e for e in link.sent[before:] if e.type is MsgType.ACK and "r" in e.params()]
    assert resyncs == []  # not yet
    clock.advance(RTO_MIN)
    node.check_peers()
    resync = link.sent[-1]
    assert resync.type is MsgType.ACK and resync.params()["r"] == "1"
    assert node.stats.retransmits == 1
    node.check_peers()  # the same instant: not again
    assert node.stats.retransmits == 1
    # The peer had the OPEN only (s=1): it answers r=2, and just the DATA goes again.
    node.envelope_received(
        from_peer(node, MsgType.ACK, stream.resource, body=encode_params({"s": 1, "r": 2}))
    )
    resent = [e for e in link.sent[before:] if e.type is MsgType.DATA]
    assert [(e.seq, e.body) for e in resent] == [(1, b"lost on the way")]


def test_delayed_acks_run_on_the_nodes_clock():
    node, clock, link = sink()
    to_sink(node, MsgType.OPEN, "src-1", 0, encode_params({"host": "h", "port": 1}))
    before = len(link.sent)
    to_sink(node, MsgType.DATA, "src-1", 1, b"small request")
    assert len(link.sent) == before
    clock.advance(DELAYED_ACK)
    (ack,) = link.sent[before:]
    assert ack.type is MsgType.ACK and ack.params() == {"n": "13", "s": "2"}


def test_shutdown_resets_every_stream_at_both_ends():
    node, clock, link = source()
    one, t1 = open_one(node)
    two, t2 = open_one(node, 81)
    node.shutdown()
    resets = [e.resource for e in link.sent if e.type is MsgType.RESET]
    assert sorted(resets) == sorted([one.resource, two.resource])
    assert t1.aborted and t2.aborted and not node.streams


def test_a_session_reset_answering_a_message_for_the_peers_previous_life_spares_the_new_session():
    """The peer restarted (p1 -> p2). Our DATA for p1 was on its way; p2 answers it with
    SESSION_RESET. p2's HELLO came by the cluster destination, the SESSION_RESET by ours: no
    order between them. When the HELLO wins, the session with p2 is already up (and carries a
    new stream) when the SESSION_RESET arrives; that SESSION_RESET is about the old session
    only, and must not end the new one."""
    node, clock, link = source()
    old, _ = open_one(node)
    old.write(b"for p1")
    (stale,) = [e for e in link.sent if e.type is MsgType.DATA]
    assert stale.peer_incarnation == "p1"

    restarted = Node("c", "si", "t", Clock(), incarnation="p2")
    peer_link = Link()
    restarted.channel_ready(peer_link)
    (hello,) = peer_link.sent
    node.envelope_received(hello)  # the HELLO first: old streams reset, session with p2
    assert old.phase is Phase.CLOSED and node.peers.session("si") == "p2"
    fresh = node.open_stream("si", "example.org", 81)
    assert fresh.peer_incarnation == "p2"

    restarted.envelope_received(stale)  # then our stale DATA reaches p2 ...
    reset = peer_link.sent[-1]
    assert reset.type is MsgType.SESSION_RESET
    node.envelope_received(reset)  # ... and its SESSION_RESET reaches us
    assert fresh.phase is Phase.OPENING and fresh.failure is None
    assert node.peers.session("si") == "p2"


class Wire:
    """Two nodes on one Clock whose links are joined: ``pump`` carries what each sent to the
    other until both are quiet."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.a = Node("c", "so", "t", self.clock, incarnation="me", ping_interval=1.0)
        self.b = Node("c", "si", "t", self.clock, incarnation="sink", ping_interval=1.0)
        self.links = {self.a: Link(), self.b: Link()}
        self.carried = {self.a: 0, self.b: 0}
        self.targets: list[HalfCloseTransport] = []
        b = self.b

        class Accepting:
            def open(inner, request: Envelope) -> None:
                stream = b.accept_stream(request)
                b.add_stream(stream)
                transport = HalfCloseTransport()
                self.targets.append(transport)
                SocketRelay(lambda relay: stream).makeConnection(transport)
                stream.accept("192.0.2.1", 25)

            def resolve(inner, request: Envelope) -> None:  # pragma: no cover - not asked
                raise AssertionError

        b.serve(Accepting())
        self.a.channel_ready(self.links[self.a])
        self.b.channel_ready(self.links[self.b])
        self.pump()

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for sender, receiver in ((self.a, self.b), (self.b, self.a)):
                sent = self.links[sender].sent
                while self.carried[sender] < len(sent):
                    env = sent[self.carried[sender]]
                    self.carried[sender] += 1
                    receiver.envelope_received(env)
                    moved = True

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.pump()


def test_an_idle_stream_whose_open_was_answered_is_not_resynchronised():
    """A server-speaks-first target (SMTP, MySQL): the client sends nothing at first. The
    OPEN arrived and was answered, so once the nodes are quiet nothing of the source's is
    unacknowledged, and its retransmission timer has no cause to resynchronise."""
    wire = Wire()
    stream = wire.a.open_stream("si", "mail.example", 25)
    transport = HalfCloseTransport()
    SocketRelay(lambda relay: stream).makeConnection(transport)
    wire.pump()
    assert stream.phase is Phase.OPEN
    (target,) = wire.targets
    wire.b.streams[("so", stream.resource)].write(b"220 mail.example ESMTP\r\n")  # the banner
    wire.advance(DELAYED_ACK)
    assert transport.value() == b"220 mail.example ESMTP\r\n"
    for _ in range(int(3 * RTO_MIN)):
        wire.advance(1)
        wire.a.check_peers()
        wire.b.check_peers()
        wire.pump()
    assert wire.a.stats.retransmits == 0 and wire.b.stats.retransmits == 0
    assert stream.unacknowledged == 0


def test_a_sink_answers_a_repeated_open_with_an_ack():
    """The OPEN_OK acknowledges the OPEN; while the sink is still connecting, a repeated
    OPEN (the source's resend) is answered with an ACK, which stops the resends."""
    node, clock, link = sink()
    to_sink(node, MsgType.OPEN, "src-1", 0, encode_params({"host": "h", "port": 1}))
    to_sink(node, MsgType.OPEN, "src-1", 0, encode_params({"host": "h", "port": 1}))
    acks = [e for e in session_messages(link) if e.type is MsgType.ACK]
    assert [a.params()["s"] for a in acks] == ["1"]


def test_a_whole_stream_between_two_nodes_ends_cleanly_at_both_ends():
    wire = Wire()
    stream = wire.a.open_stream("si", "example.org", 80)
    client = HalfCloseTransport()
    relay = SocketRelay(lambda r: stream)
    relay.makeConnection(client)
    relay.dataReceived(b"request")
    wire.pump()
    (target,) = wire.targets
    assert target.value() == b"request"
    (sink_stream,) = wire.b.streams.values()
    sink_stream.write(b"reply")
    wire.advance(DELAYED_ACK)
    assert client.value() == b"reply"
    relay.connectionLost(None)  # the client closes: CLOSE, CLOSING until acknowledged
    assert stream.phase is Phase.CLOSING
    wire.pump()
    assert target.disconnecting and not target.aborted  # the target gets a FIN
    assert stream.phase is Phase.CLOSED and sink_stream.phase is Phase.CLOSED
    assert not wire.a.streams and not wire.b.streams
    kinds = [e.type for link in wire.links.values() for e in link.sent]
    assert MsgType.RESET not in kinds and MsgType.SESSION_RESET not in kinds
    assert wire.a.stats.streams_closed == 1 and wire.b.stats.streams_closed == 1
