"""Stream state, ordering and flow control, driven with fakes and StringTransport, through
the relay that joins it to a local socket."""

from __future__ import annotations

from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.stream import Phase, Stream
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
    assert not [s for s in host.sent if s[0] is MsgType.ACK]
    stream.resumeProducing()
    acks = [decode_params(b)["n"] for k, _, b in host.sent if k is MsgType.ACK]
    assert acks == ["300"]
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
    stream.receive(env(MsgType.DATA, 1, b"two"))  # duplicate
    assert transport.value() == b"onetwothree"


def test_eof_half_closes_and_close_finishes():
    host, stream, transport = make()
    stream.receive(env(MsgType.DATA, 0, b"last"))
    stream.receive(env(MsgType.EOF, 1))
    assert transport.write_closed
    assert stream.phase is not Phase.CLOSED
    stream.write(b"reply")  # the other direction still flows
    assert host.sent[-1][:2] == (MsgType.DATA, 0)
    stream.receive(env(MsgType.CLOSE, 2))
    assert stream.phase is Phase.CLOSED
    assert transport.disconnecting
    assert host.done == [stream]


def test_local_eof_and_loss_are_sent_once():
    host, stream, transport = make()
    stream.loseWriteConnection()
    stream.loseWriteConnection()
    stream.loseConnection()
    stream.loseConnection()
    assert [(k, s) for k, s, _ in host.sent] == [(MsgType.EOF, 0), (MsgType.CLOSE, 1)]


def test_messages_before_attach_wait_for_the_socket():
    host = FakeHost()
    stream = Stream(host, "peer", "r1", 1000, rx_seq=1)
    stream.receive(env(MsgType.DATA, 1, b"early"))
    stream.receive(env(MsgType.EOF, 2))
    transport = HalfCloseTransport()
    SocketRelay(lambda relay: stream).makeConnection(transport)
    assert transport.value() == b"early"
    assert transport.write_closed


def test_open_ok_and_open_fail():
    host, stream, transport = make()
    opened = []
    stream.on_open = lambda s, params: opened.append(params)
    stream.receive(env(MsgType.OPEN_OK, 0, encode_params({"host": "127.0.0.1", "port": 5})))
    assert stream.phase is Phase.OPEN
    assert opened == [{"host": "127.0.0.1", "port": "5"}]

    host, stream, transport = make()
    stream.receive(env(MsgType.OPEN_FAIL, 0, encode_params({"reason": "refused"})))
    assert stream.phase is Phase.CLOSED
    assert stream.failure is OpenFailure.REFUSED
    assert transport.disconnecting
    assert host.sent == []  # no CLOSE for a stream the peer never opened


def test_reset_aborts():
    host, stream, transport = make()
    stream.receive(env(MsgType.OPEN_OK, 0))
    stream.receive(env(MsgType.RESET, 0))
    assert stream.phase is Phase.CLOSED
    assert transport.disconnecting


def test_open_timer_fails_the_stream():
    host, stream, transport = make()
    stream.open_timer = host.clock.callLater(5, stream.fail, OpenFailure.NO_SINK, "silence")
    host.clock.advance(5)
    assert stream.failure is OpenFailure.NO_SINK
    assert host.sent[-1][0] is MsgType.CLOSE
    assert transport.disconnecting


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


def test_resync_resends_the_outbox_and_asks_for_the_peers():
    host, stream, transport = make(window=10_000)
    stream.receive(env(MsgType.DATA, 0, b"in"))
    stream.write(b"out-1")
    stream.write(b"out-2")
    host.sent.clear()
    stream.resync()
    kinds = [(k, seq, b) for k, seq, b in host.sent]
    assert kinds[:2] == [(MsgType.DATA, 0, b"out-1"), (MsgType.DATA, 1, b"out-2")]
    kind, _, body = kinds[2]
    assert kind is MsgType.ACK
    assert decode_params(body) == {"n": "2", "s": "1", "r": "1"}


def test_resync_request_from_peer_retransmits():
    host, stream, transport = make(window=10_000)
    stream.write(b"lost")
    host.sent.clear()
    stream.receive(env(MsgType.ACK, 0, encode_params({"n": 0, "s": 0, "r": 1})))
    assert host.sent[0] == (MsgType.DATA, 0, b"lost")
    assert [k for k, _, _ in host.sent] == [MsgType.DATA, MsgType.ACK]


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
    acks = [decode_params(b) for k, _, b in host.sent if k is MsgType.ACK]
    assert acks == [{"n": "200", "s": "3"}]


def test_retransmitted_duplicates_are_delivered_once():
    host, stream, transport = make()
    for seq, data in enumerate([b"one", b"two"]):
        stream.receive(env(MsgType.DATA, seq, data))
    for seq, data in enumerate([b"one", b"two", b"three"]):  # a resend after a reconnect
        stream.receive(env(MsgType.DATA, seq, data))
    assert transport.value() == b"onetwothree"


def test_expire_closes_the_local_side():
    host, stream, transport = make()
    stream.receive(env(MsgType.OPEN_OK, 0))
    stream.expire()
    assert stream.phase is Phase.CLOSED
    assert transport.disconnecting
    assert host.sent[-1][0] is MsgType.CLOSE


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
