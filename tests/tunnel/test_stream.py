"""Stream state, ordering and flow control, driven with fakes and StringTransport, through
the relay that joins it to a local socket."""

from __future__ import annotations

from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.stream import DELAYED_ACK, Phase, Stream
from socketeer.wire.envelope import MsgType, decode_params, encode_params

from support.streams import FakeHost, HalfCloseTransport, env


def make(window: int = 1000, rx_seq: int = 0):
    host = FakeHost()
    stream = Stream(host, "peer", "r1", window, rx_seq=rx_seq)
    transport = HalfCloseTransport()
    SocketRelay(lambda relay: stream).makeConnection(transport)
    return host, stream, transport


def test_sender_pauses_at_the_window_and_resumes_on_ack():
    host, stream, transport = make(window=1000)
    stream.write(b"x" * 600)
    assert transport.producerState == "producing"
    stream.write(b"x" * 400)
    assert transport.producerState == "paused"
    assert [k for k, _, _ in host.sent] == [MsgType.DATA, MsgType.DATA]
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 500})))
    assert transport.producerState == "producing"


def test_ack_beyond_what_was_sent_is_clamped():
    host, stream, transport = make(window=1000)
    stream.write(b"x" * 1000)
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 10**9})))
    stream.write(b"x" * 1000)
    assert transport.producerState == "paused"


def test_receiver_acks_only_what_its_socket_took():
    host, stream, transport = make(window=1000)
    stream.pauseProducing()  # the local socket's buffer is full
    stream.receive(env(MsgType.DATA, 0, b"a" * 300))
    assert host.acks() == []
    host.clock.advance(DELAYED_ACK)  # the delayed ACK says what arrived, but grants nothing
    assert host.acks() == [{"n": "0", "s": "1"}]
    stream.resumeProducing()
    assert host.acks()[1:] == [{"n": "300", "s": "1"}]
    assert transport.value() == b"a" * 300


def test_receiver_acks_every_quarter_window():
    host, stream, transport = make(window=1000)
    for i in range(4):
        stream.receive(env(MsgType.DATA, i, b"b" * 250))
    acks = [decode_params(b)["n"] for k, _, b in host.sent if k is MsgType.ACK]
    assert acks == ["250", "500", "750", "1000"]


def test_out_of_order_messages_are_reordered_and_duplicates_dropped():
    host, stream, transport = make()
    stream.receive(env(MsgType.DATA, 1, b"two"))
    stream.receive(env(MsgType.DATA, 2, b"three"))
    assert transport.value() == b""
    stream.receive(env(MsgType.DATA, 0, b"one"))
    assert host.acks() == []  # 11 bytes: less than a quarter window, the ACK is delayed
    stream.receive(env(MsgType.DATA, 1, b"two"))  # duplicate: dropped, answered with an ACK
    assert transport.value() == b"onetwothree"
    assert host.acks() == [{"n": "11", "s": "3"}]
    host.clock.advance(1)
    assert len(host.acks()) == 1  # that ACK said it all: the delayed one was cancelled


def test_eof_half_closes_and_close_finishes():
    host, stream, transport = make()
    stream.receive(env(MsgType.DATA, 0, b"last"))
    stream.receive(env(MsgType.EOF, 1))
    assert transport.write_closed
    assert stream.phase is not Phase.CLOSED
    stream.write(b"reply")  # the other direction still flows
    assert host.sent[-1][:2] == (MsgType.DATA, 0)
    assert host.acks() == []  # the EOF's ACK waits: a CLOSE usually follows
    host.clock.advance(DELAYED_ACK)
    assert host.acks() == [{"n": "4", "s": "2"}]
    stream.receive(env(MsgType.CLOSE, 2))
    assert stream.phase is Phase.CLOSED
    assert host.sent[-1][0] is MsgType.ACK and decode_params(host.sent[-1][2])["s"] == "3"
    assert transport.disconnecting and not transport.aborted  # a FIN: it ended cleanly
    assert host.done == [stream]


def test_local_eof_and_loss_are_sent_once():
    host, stream, transport = make()
    stream.loseWriteConnection()
    stream.loseWriteConnection()
    stream.loseConnection()
    stream.loseConnection()
    assert [(k, s) for k, s, _ in host.sent] == [(MsgType.EOF, 0), (MsgType.CLOSE, 1)]
    assert stream.phase is Phase.CLOSING and host.done == []


def test_messages_before_attach_wait_for_the_socket():
    host = FakeHost()
    stream = Stream(host, "peer", "r1", 1000, rx_seq=1)
    stream.receive(env(MsgType.DATA, 1, b"early"))
    stream.receive(env(MsgType.EOF, 2))
    # The EOF is acknowledged at once (s), the DATA's credit waits for its delivery.
    assert host.acks() == [{"n": "0", "s": "3"}]
    transport = HalfCloseTransport()
    SocketRelay(lambda relay: stream).makeConnection(transport)
    assert transport.value() == b"early"
    assert transport.write_closed
    host.clock.advance(DELAYED_ACK)  # the credit for what was delivered follows shortly
    assert host.acks()[-1] == {"n": "5", "s": "3"}


def test_open_ok_and_open_fail():
    host, stream, transport = make()
    opened = []
    stream.on_open = lambda s, params: opened.append(params)
    stream.receive(env(MsgType.OPEN_OK, 0, encode_params({"host": "127.0.0.1", "port": 5})))
    assert stream.phase is Phase.OPEN
    assert opened == [{"host": "127.0.0.1", "port": "5"}]
    assert host.sent == []  # the client hears first; the ACK follows after a short delay
    host.clock.advance(DELAYED_ACK)
    assert host.sent == [(MsgType.ACK, 0, b"n=0&s=1")]

    host, stream, transport = make()
    stream.receive(env(MsgType.OPEN_FAIL, 0, encode_params({"reason": "refused"})))
    assert stream.phase is Phase.CLOSED
    assert stream.failure is OpenFailure.REFUSED
    assert transport.disconnecting and transport.aborted  # the client's socket is reset
    # Acknowledged (the sink may forget it), and no RESET for a stream the peer never opened.
    assert host.sent == [(MsgType.ACK, 0, b"n=0&s=1")]


def test_reset_aborts():
    host, stream, transport = make()
    stream.receive(env(MsgType.OPEN_OK, 0))
    host.sent.clear()
    stream.receive(env(MsgType.RESET, 0))
    assert stream.phase is Phase.CLOSED
    assert transport.disconnecting and transport.aborted  # an RST, never a FIN
    assert host.sent == []  # a RESET is not answered
    assert host.done == [stream]


def test_open_timer_fails_the_stream_and_resets_the_peers_side():
    host, stream, transport = make()
    stream.send(MsgType.OPEN, encode_params({"host": "h", "port": 1}))
    stream.open_timer = host.clock.callLater(5, stream.fail, OpenFailure.NO_SINK, "silence")
    host.clock.advance(5)
    assert stream.failure is OpenFailure.NO_SINK
    assert host.sent[-1] == (MsgType.RESET, 0, b"")  # not a CLOSE: nothing ended cleanly
    assert transport.disconnecting and transport.aborted
    assert stream.unacknowledged == 0


def test_a_failure_before_anything_was_sent_tells_the_peer_nothing():
    host, stream, transport = make()
    stream.fail(OpenFailure.NO_SINK, "silence")
    assert stream.phase is Phase.CLOSED and host.sent == []
    assert transport.aborted


def test_channel_congestion_pauses_reading():
    host, stream, transport = make()
    host.channel_paused = True
    stream.update_reading()
    assert transport.producerState == "paused"
    host.channel_paused = False
    stream.update_reading()
    assert transport.producerState == "producing"


def test_unacknowledged_messages_are_kept_and_trimmed_by_ack():
    host, stream, transport = make(window=10_000)
    stream.write(b"a" * 100)
    stream.write(b"b" * 100)
    stream.loseWriteConnection()
    assert stream.unacknowledged == 3
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 100, "s": 1})))
    assert stream.unacknowledged == 2
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 200, "s": 3})))
    assert stream.unacknowledged == 0


def test_resync_asks_for_the_peers_position_and_resends_only_from_it():
    host, stream, transport = make(window=10_000)
    stream.receive(env(MsgType.DATA, 0, b"in"))
    stream.write(b"out-1")
    stream.write(b"out-2")
    stream.write(b"out-3")
    host.sent.clear()
    stream.resync()
    # Nothing is resent blindly: first the peer says what it has.
    assert host.sent == [(MsgType.ACK, 0, b"n=2&s=1&r=1")]
    host.sent.clear()
    # The peer has out-1 (s=1), resends from our s, and answers with its own s (r=2).
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 5, "s": 1, "r": 2})))
    assert host.sent == [(MsgType.DATA, 1, b"out-2"), (MsgType.DATA, 2, b"out-3")]
    assert stream.unacknowledged == 2


def test_a_stream_not_yet_heard_from_resends_its_outbox_instead_of_asking():
    host, stream, transport = make(window=10_000)
    stream.send(MsgType.OPEN, b"host=h&port=1")
    stream.write(b"early")
    host.sent.clear()
    stream.resync()  # the peer may never have had the OPEN: no ACK it could not place
    assert host.sent == [(MsgType.OPEN, 0, b"host=h&port=1"), (MsgType.DATA, 1, b"early")]


def test_resync_request_from_peer_retransmits_from_its_position():
    host, stream, transport = make(window=10_000)
    stream.receive(env(MsgType.DATA, 0, b"in"))
    stream.write(b"had")
    stream.write(b"lost")
    host.sent.clear()
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 3, "s": 1, "r": 1})))
    # Only what the peer lacks, then our own position (r=2), so it resends what we lack.
    assert host.sent == [(MsgType.DATA, 1, b"lost"), (MsgType.ACK, 0, b"n=2&s=1&r=2")]
    assert stream.unacknowledged == 1  # s=1 acknowledged "had"


def test_resync_request_repeats_our_last_ack_without_new_credit():
    """A lost ACK would leave the peer's window spent for ever (seen across a RabbitMQ
    restart): a resync request gets the last ACK again."""
    host, stream, transport = make(window=800)
    stream.receive(env(MsgType.DATA, 0, b"x" * 100))  # 100 < window // 4: no ACK yet
    stream.receive(env(MsgType.DATA, 1, b"y" * 100))
    acks = [decode_params(b) for k, _, b in host.sent if k is MsgType.ACK]
    assert acks == [{"n": "200", "s": "2"}]  # ... then lost with the broker connection
    transport.producer.pauseProducing()  # our client is slow: no credit for what waits
    stream.receive(env(MsgType.DATA, 2, b"z" * 100))
    host.sent.clear()
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 0, "s": 0, "r": 1})))
    assert host.acks() == [{"n": "200", "s": "3", "r": "2"}]


def test_retransmitted_duplicates_are_delivered_once():
    host, stream, transport = make()
    for seq, data in enumerate([b"one", b"two"]):
        stream.receive(env(MsgType.DATA, seq, data))
    for seq, data in enumerate([b"one", b"two", b"three"]):  # a resend after a reconnect
        stream.receive(env(MsgType.DATA, seq, data))
    assert transport.value() == b"onetwothree"
    # Each duplicate is answered with an ACK (ours may have been lost): s=2 both times.
    assert host.acks() == [{"n": "6", "s": "2"}] * 2


def test_expire_drops_the_stream_and_resets_the_local_socket():
    host, stream, transport = make()
    stream.receive(env(MsgType.OPEN_OK, 0))
    stream.write(b"unacknowledged")
    host.sent.clear()
    stream.expire()
    assert stream.phase is Phase.CLOSED
    assert transport.disconnecting and transport.aborted  # an RST: bytes may be missing
    assert host.sent == []  # the peer is unreachable: nothing is said to it
    assert host.done == [stream]


def test_expire_of_an_opening_stream_is_an_open_failure():
    host, stream, transport = make()
    stream.send(MsgType.OPEN, b"host=h&port=1")
    host.sent.clear()
    stream.expire()
    assert stream.failure is OpenFailure.NO_SINK and stream.phase is Phase.CLOSED
    assert host.sent == [] and transport.aborted


def test_large_local_writes_are_split_into_bounded_messages():
    from socketeer.tunnel.stream import MAX_DATA_MESSAGE

    host, stream, transport = make(window=10 * MAX_DATA_MESSAGE)
    data = bytes(range(256)) * (MAX_DATA_MESSAGE // 100)
    stream.write(data)
    bodies = [b for k, _, b in host.sent if k is MsgType.DATA]
    assert len(bodies) == -(-len(data) // MAX_DATA_MESSAGE)
    assert all(len(b) <= MAX_DATA_MESSAGE for b in bodies)
    assert b"".join(bodies) == data
    assert [seq for k, seq, _ in host.sent] == list(range(len(bodies)))


# -- delayed acknowledgements --------------------------------------------------------------


def test_data_below_a_quarter_window_is_acknowledged_after_the_delay_in_one_ack():
    host, stream, transport = make(window=1000)
    stream.receive(env(MsgType.DATA, 0, b"a" * 100))
    host.clock.advance(DELAYED_ACK / 2)
    stream.receive(env(MsgType.DATA, 1, b"b" * 100))  # a burst: still one ACK, not two
    assert host.acks() == []
    host.clock.advance(DELAYED_ACK / 2)
    assert host.acks() == [{"n": "200", "s": "2"}]  # the delay counts from the first
    host.clock.advance(1)
    assert len(host.acks()) == 1  # nothing new: no more ACKs


def test_a_quarter_window_is_acknowledged_at_once_and_cancels_the_delayed_ack():
    host, stream, transport = make(window=1000)
    stream.receive(env(MsgType.DATA, 0, b"a" * 100))
    stream.receive(env(MsgType.DATA, 1, b"b" * 150))
    assert host.acks() == [{"n": "250", "s": "2"}]
    host.clock.advance(DELAYED_ACK)
    assert len(host.acks()) == 1
    assert not host.clock.getDelayedCalls()


def test_open_ok_data_and_eof_are_acknowledged_by_one_delayed_ack():
    host, stream, transport = make(window=1000)
    stream.receive(env(MsgType.OPEN_OK, 0))  # delayed (not on the connect's critical path)
    stream.receive(env(MsgType.DATA, 1, b"x"))
    stream.receive(env(MsgType.EOF, 2))  # a CLOSE usually follows: its ACK would say it all
    assert host.acks() == []
    host.clock.advance(DELAYED_ACK)
    assert host.acks() == [{"n": "1", "s": "3"}]


def test_no_delayed_ack_after_the_stream_ended():
    host, stream, transport = make(window=1000)
    stream.receive(env(MsgType.DATA, 0, b"x"))
    stream.receive(env(MsgType.RESET, 0))
    host.clock.advance(DELAYED_ACK)
    assert host.acks() == [] and not host.clock.getDelayedCalls()


# -- flow control: the window is kept by the sender and enforced by the receiver ------------


def test_writes_beyond_the_window_wait_and_go_out_in_order_as_credit_comes():
    host, stream, transport = make(window=1000)
    stream.write(b"a" * 1500)
    stream.loseWriteConnection()  # behind the waiting bytes, not before them
    assert host.sent == [(MsgType.DATA, 0, b"a" * 1000)]
    assert transport.producerState == "paused"
    assert stream.sent == 1500 and stream.buffered == 1500
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 300, "s": 1})))
    assert host.sent[1:] == [(MsgType.DATA, 1, b"a" * 300)]  # as far as the credit goes
    assert transport.producerState == "paused"
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 1000, "s": 2})))
    assert host.sent[2:] == [(MsgType.DATA, 2, b"a" * 200), (MsgType.EOF, 3, b"")]
    assert transport.producerState == "producing"
    # Never more than a window unacknowledged on the wire.
    assert stream.unacknowledged == 2 and stream.buffered == 200


def test_close_waits_behind_queued_data_and_the_stream_stays_closing_until_all_is_acked():
    host, stream, transport = make(window=1000)
    stream.write(b"a" * 1200)
    stream.loseConnection()
    assert stream.phase is Phase.CLOSING and transport.disconnecting
    assert host.kinds() == [MsgType.DATA]
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 1000, "s": 1})))
    assert host.sent[1:] == [(MsgType.DATA, 1, b"a" * 200), (MsgType.CLOSE, 2, b"")]
    assert stream.phase is Phase.CLOSING
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 1200, "s": 3})))
    assert stream.phase is Phase.CLOSED and host.done == [stream]


def test_a_peer_sending_past_the_window_has_its_stream_reset():
    host, stream, transport = make(window=1000)
    stream.receive(env(MsgType.OPEN_OK, 0))
    stream.receive(env(MsgType.DATA, 1, b"a" * 1000))  # exactly the window: fine
    assert stream.phase is Phase.OPEN and host.violations == []
    transport.producer.pauseProducing()  # our socket is full: no credit is granted
    stream.receive(env(MsgType.DATA, 2, b"b"))
    assert host.acks()[-1] == {"n": "1000", "s": "2"}  # credit for the window's first bytes
    stream.receive(env(MsgType.DATA, 3, b"c" * 1000))  # 1001 bytes beyond our last credit
    assert host.violations == [stream]
    assert stream.phase is Phase.CLOSED
    assert host.sent[-1] == (MsgType.RESET, 0, b"")
    assert transport.aborted


def test_a_peer_that_keeps_to_its_credit_is_never_reset():
    host, stream, transport = make(window=1000)
    for i in range(12):  # 3000 bytes, a quarter window at a time, each one acknowledged
        stream.receive(env(MsgType.DATA, i, b"x" * 250))
    assert stream.phase is Phase.OPENING and host.violations == []
    assert len(transport.value()) == 3000


def test_an_early_message_past_the_window_is_a_violation_too():
    host, stream, transport = make(window=1000)
    stream.receive(env(MsgType.DATA, 1, b"a" * 600))  # seq 0 not here yet
    stream.receive(env(MsgType.DATA, 2, b"b" * 600))  # 1200 bytes held, none acknowledged
    assert host.violations == [stream] and stream.phase is Phase.CLOSED
    assert host.sent[-1][0] is MsgType.RESET and transport.aborted


def test_the_session_narrows_the_window_of_a_stream_that_waited_for_it():
    host = FakeHost()
    stream = Stream(host, "peer", "r1", 1000)
    stream.send(MsgType.OPEN, b"host=h&port=1")
    stream.write(b"a" * 800)  # held for the handshake (the host dropped it)
    host.sent.clear()
    stream.start_session("p1", 500)
    assert stream.peer_incarnation == "p1" and stream.window == 500
    assert host.sent == [
        (MsgType.OPEN, 0, b"host=h&port=1"),
        (MsgType.DATA, 1, b"a" * 500),
        (MsgType.ACK, 0, b"n=0&s=0&b=1"),  # blocked on credit below its cap: it says so
    ]
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 500, "s": 2})))
    assert host.sent[3:] == [(MsgType.DATA, 2, b"a" * 300)]


# -- closing: CLOSING until the peer has our CLOSE ------------------------------------------


def test_lose_connection_is_closing_until_the_close_is_acknowledged():
    host, stream, transport = make(window=1000)
    stream.receive(env(MsgType.OPEN_OK, 0))
    stream.write(b"last words")
    stream.loseConnection()
    assert stream.phase is Phase.CLOSING
    assert transport.disconnecting and not transport.aborted  # the socket gets its FIN now
    assert host.done == [] and stream.unacknowledged == 2
    stream.write(b"too late")
    assert host.payload()[-1] == (MsgType.CLOSE, 1, b"")
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 10, "s": 1})))
    assert stream.phase is Phase.CLOSING  # the DATA arrived, the CLOSE not yet
    stream.resync()  # e.g. after an outage: the CLOSE can still be resent
    stream.receive(env(MsgType.ACK, 0, encode_params({"s": 1, "r": 2})))
    assert host.payload()[-1] == (MsgType.CLOSE, 1, b"")
    assert [m for m in host.payload() if m[0] is MsgType.CLOSE] == [(MsgType.CLOSE, 1, b"")] * 2
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 10, "s": 2})))
    assert stream.phase is Phase.CLOSED and host.done == [stream]
    assert stream.failure is None


def test_a_closing_stream_acknowledges_what_the_peer_still_sends_and_ends_on_its_close():
    host, stream, transport = make(window=1000)
    stream.receive(env(MsgType.OPEN_OK, 0))
    stream.loseConnection()
    host.sent.clear()
    stream.receive(env(MsgType.DATA, 1, b"in flight"))
    assert transport.value() == b""  # nowhere to go: the socket is closed
    assert host.acks() == [{"n": "9", "s": "2"}]  # but its window and outbox drain
    stream.receive(env(MsgType.CLOSE, 2))
    assert host.acks()[-1] == {"n": "9", "s": "3"}
    assert stream.phase is Phase.CLOSED and host.done == [stream]
    assert stream.final_rx_seq == 3


def test_a_reset_while_closing_ends_the_stream_without_touching_the_closed_socket():
    host, stream, transport = make(window=1000)
    stream.receive(env(MsgType.OPEN_OK, 0))
    stream.loseConnection()
    stream.receive(env(MsgType.RESET, 0))
    assert stream.phase is Phase.CLOSED and host.done == [stream]
    assert not transport.aborted  # closed cleanly before; the RESET does not undo that


def test_abort_while_closing_ends_the_stream_quietly():
    host, stream, transport = make(window=1000)
    stream.receive(env(MsgType.OPEN_OK, 0))
    stream.loseConnection()
    host.sent.clear()
    stream.abort()
    assert stream.phase is Phase.CLOSED and host.sent == [] and not transport.aborted


def test_reset_tells_the_peer_and_resets_the_socket():
    host, stream, transport = make(window=1000)
    stream.receive(env(MsgType.OPEN_OK, 0))
    host.sent.clear()
    stream.reset()
    stream.reset()
    assert host.sent == [(MsgType.RESET, 0, b"")]
    assert stream.phase is Phase.CLOSED and transport.aborted


def test_shutdown_resets_both_ends_rather_than_closing_cleanly():
    host, stream, transport = make(window=1000)
    stream.receive(env(MsgType.OPEN_OK, 0))
    host.sent.clear()
    stream.shutdown()
    assert host.sent == [(MsgType.RESET, 0, b"")]
    assert transport.aborted


# -- window auto-tuning ----------------------------------------------------------------------


class Budget:
    """A node's window budget, for a FakeHost: ``left`` bytes of growth remain."""

    def __init__(self, left: int) -> None:
        self.left = left

    def grow_window(self, stream: Stream, wanted: int) -> int:
        granted = min(wanted, self.left)
        self.left -= granted
        return granted


def test_a_sender_blocked_on_credit_says_so_once_per_window():
    host, stream, transport = make(window=1000)
    stream.max_window = 8000
    stream.write(b"x" * 2500)  # 1000 go, 1500 wait for credit
    blocked = [b for k, _, b in host.sent if k is MsgType.ACK]
    assert blocked == [b"n=0&s=0&b=1"]
    stream.write(b"y")  # still blocked within the same window: not again
    assert len([k for k, _, _ in host.sent if k is MsgType.ACK]) == 1


def open_with_data(stream: Stream, size: int) -> int:
    """The stream is open (the peer's cap as high as ours) and ``size`` bytes arrived; the
    next sequence number."""
    stream.receive(env(MsgType.OPEN_OK, 0, b"mw=%d" % stream.max_window))
    stream.receive(env(MsgType.DATA, 1, b"d" * size))
    return 2


def test_a_blocked_sender_with_a_reader_that_keeps_up_gets_a_doubled_window():
    host, stream, transport = make(window=1000)
    host.grow_window = Budget(10_000).grow_window
    stream.max_window = 3000
    stream.receive(env(MsgType.ACK, 0, b"n=0&s=0&b=1"))  # not open, nothing arrived: no
    assert stream.rx_window == 1000
    seq = open_with_data(stream, 600)
    stream.receive(env(MsgType.ACK, 0, b"n=0&s=0&b=1"))  # the peer waits for our credit
    assert stream.rx_window == 2000
    assert host.acks()[-1]["w"] == "2000"
    stream.receive(env(MsgType.ACK, 0, b"n=0&s=0&b=1"))  # said again: no new evidence
    assert stream.rx_window == 2000
    stream.receive(env(MsgType.DATA, seq, b"d" * 1000))
    stream.receive(env(MsgType.ACK, 0, b"n=0&s=0&b=1"))
    assert stream.rx_window == 3000  # the cap
    stream.receive(env(MsgType.DATA, seq + 1, b"d" * 1500))
    stream.receive(env(MsgType.ACK, 0, b"n=0&s=0&b=1"))
    assert stream.rx_window == 3000 and stream.grown == 2000


def test_no_growth_while_our_reader_is_slow_or_the_budget_is_spent():
    host, stream, transport = make(window=1000)
    budget = Budget(500)
    host.grow_window = budget.grow_window
    stream.max_window = 8000
    open_with_data(stream, 600)
    stream.pauseProducing()  # the local socket is full: the window is not the bottleneck
    stream.receive(env(MsgType.ACK, 0, b"n=0&s=0&b=1"))
    assert stream.rx_window == 1000
    stream.resumeProducing()
    stream.receive(env(MsgType.ACK, 0, b"n=0&s=0&b=1"))
    assert stream.rx_window == 1500 and budget.left == 0  # what the budget had left


def test_a_granted_window_lets_the_sender_send_more_and_the_receiver_enforces_the_grant():
    host, stream, transport = make(window=1000)
    stream.max_window = 4000
    stream.write(b"x" * 3000)
    assert sum(len(b) for k, _, b in host.sent if k is MsgType.DATA) == 1000
    stream.receive(env(MsgType.ACK, 0, b"n=0&s=0&w=3000"))  # the peer grants 3000
    assert sum(len(b) for k, _, b in host.sent if k is MsgType.DATA) == 3000
    # A grant beyond our own cap is capped.
    stream.receive(env(MsgType.ACK, 0, b"n=0&s=0&w=100000"))
    assert stream.window == 4000
    # The receiver: what it grew it enforces; past it, the stream is reset.
    host2, receiver, _ = make(window=1000)
    host2.grow_window = Budget(10_000).grow_window
    receiver.max_window = 4000
    seq = open_with_data(receiver, 600)  # delivered and acknowledged (n=600)
    receiver.receive(env(MsgType.ACK, 0, b"n=0&s=0&b=1"))
    assert receiver.rx_window == 2000
    receiver.pauseProducing()  # nothing acknowledged from here on
    receiver.receive(env(MsgType.DATA, seq, b"d" * 2000))
    assert receiver.phase is not Phase.CLOSED
    receiver.receive(env(MsgType.DATA, seq + 1, b"d"))
    assert receiver.phase is Phase.CLOSED and host2.violations == [receiver]
