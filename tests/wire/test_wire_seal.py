"""Sealed messages (the channel's codekey): the sealer itself, the node hooks, and a real relay
whose broker capture shows neither target names nor payload, and which drops tampered,
replayed, stale and foreign-key messages while a parallel stream carries on."""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import Clock

from socketeer.secret import Secret
from socketeer.tunnel.node import Node
from socketeer.wire.envelope import Envelope, EnvelopeError, MsgType, encode_send
from socketeer.wire.seal import REPLAY_WINDOW, Sealer, SealRejected, derive_master_key, sealer_for
from socketeer.wire.stompframing import StompFrameParser

from support.net import Echo, connect, listen, until
from support.security import SecureRelay, raw_client

NOW = 1_800_000_000.0


def env(
    kind=MsgType.DATA, body=b"payload bytes", *, src="so", dst="si", res="inc1-7", seq=3, pinc="p9"
):
    return Envelope(kind, "c", src, dst, res, seq, int(NOW * 1000), "inc1", body, pinc)


def frame_of(data: bytes):
    (frame,) = StompFrameParser("1.2", server=True).feed(data)
    return frame


def rewrite(data: bytes, old: bytes, new: bytes) -> bytes:
    head, sep, body = data.partition(b"\n\n")
    assert old in head
    return head.replace(old, new) + sep + body


@pytest.fixture(scope="module")
def pair():
    return Sealer("correct horse", "c", "t"), Sealer(Secret("correct horse"), "c", "t")


# -- the sealer ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        env(),
        env(MsgType.OPEN, b"host=secret.example&port=22&type=0", seq=0),
        env(MsgType.ACK, b"n=5&s=2", seq=0),
        env(MsgType.PING, b"t=1", dst="*", res="", pinc=""),
        env(MsgType.DATA, bytes(range(256)) * 300),
        env(MsgType.EOF, b""),
    ],
)
def test_round_trip(pair, message):
    sender, receiver = pair
    assert receiver.open(frame_of(sender.seal(message)), NOW) == message


def test_only_routing_headers_are_clear(pair):
    sender, _ = pair
    message = env(MsgType.OPEN, b"host=secret.example&port=2222&type=0", res="inc1-42", seq=17)
    data = sender.seal(message)
    head, _, body = data.partition(b"\n\n")
    names = [line.split(b":")[0] for line in head.split(b"\n")[1:]]
    assert names == [
        b"destination",
        b"sk-cluster",
        b"sk-src",
        b"sk-dst",
        b"sk-inc",
        b"sk-pinc",
        b"sk-v",
        b"sk-seal",
        b"content-length",
    ]
    for secret in (b"secret.example", b"2222", b"inc1-42", b"open", b"sk-type", b"sk-seq"):
        assert secret not in data
    assert len(body) == len(message.body) + 16 + 8 + 8 + 1 + 2 + 4 + 7 + 1  # tag, head, NUL


def test_counters_never_repeat_and_epochs_differ():
    a, b = Sealer("k", "c", "t"), Sealer("k", "c", "t")
    seals = [frame_of(a.seal(env())).headers["sk-seal"] for _ in range(5)]
    assert [s.rsplit(".", 1)[1] for s in seals] == ["1", "2", "3", "4", "5"]
    assert a.epoch != b.epoch  # the same node name and incarnation still get fresh keys


@pytest.mark.parametrize(
    "old,new",
    [
        (b"sk-dst:si", b"sk-dst:sx"),  # redirect to another node
        (b"sk-src:so", b"sk-src:sx"),  # pass off as another sender
        (b"sk-inc:inc1", b"sk-inc:inc2"),
        (b"sk-pinc:p9", b"sk-pinc:p8"),  # pass a message of one session off in another
        (b"/topic/t.c.si", b"/topic/t.c.sx"),  # destination header (the receiver checks sk-dst)
    ],
)
def test_rewritten_clear_headers_fail(pair, old, new):
    sender, receiver = pair
    data = rewrite(sender.seal(env()), old, new)
    if old.startswith(b"/topic"):
        assert receiver.open(frame_of(data), NOW).destination == "si"
        return
    with pytest.raises(SealRejected) as e:
        receiver.open(frame_of(data), NOW)
    assert e.value.reason == "auth"


def test_flipped_ciphertext_byte_and_counter_fail(pair):
    sender, receiver = pair
    data = bytearray(sender.seal(env()))
    data[-5] ^= 0x01
    with pytest.raises(SealRejected, match="failed authentication"):
        receiver.open(frame_of(bytes(data)), NOW)
    good = sender.seal(env())
    counter = frame_of(good).headers["sk-seal"].rsplit(".", 1)[1].encode()
    bumped = rewrite(good, b"." + counter + b"\n", b"." + str(int(counter) + 9).encode() + b"\n")
    with pytest.raises(SealRejected, match="failed authentication"):
        receiver.open(frame_of(bumped), NOW)
    assert receiver.open(frame_of(good), NOW) == env()  # a failure never moved the window


def test_replays_are_refused_reordering_is_not():
    sender, receiver = Sealer("k", "c", "t"), Sealer("k", "c", "t")
    frames = [frame_of(sender.seal(env(seq=i))) for i in range(5)]
    for i in (0, 3, 1, 4, 2):  # out of order, as two subscriptions may interleave
        assert receiver.open(frames[i], NOW).seq == i
    for i in range(5):
        with pytest.raises(SealRejected) as e:
            receiver.open(frames[i], NOW)
        assert e.value.reason == "replay"


def test_ack_replay_is_refused_though_acks_have_no_seq():
    sender, receiver = Sealer("k", "c", "t"), Sealer("k", "c", "t")
    ack = frame_of(sender.seal(env(MsgType.ACK, b"n=100&s=1", seq=0)))
    receiver.open(ack, NOW)
    with pytest.raises(SealRejected, match="replayed"):
        receiver.open(ack, NOW)


def test_too_old_for_the_window_is_a_replay():
    sender, receiver = Sealer("k", "c", "t"), Sealer("k", "c", "t")
    first = frame_of(sender.seal(env()))
    for _ in range(REPLAY_WINDOW):
        last = sender.seal(env())
    receiver.open(frame_of(last), NOW)
    with pytest.raises(SealRejected, match="replayed"):
        receiver.open(first, NOW)


def test_stale_and_future_timestamps():
    sender = Sealer("k", "c", "t")
    receiver = Sealer("k", "c", "t", max_age=30)
    data = sender.seal(env())
    for now in (NOW + 31, NOW - 31):
        with pytest.raises(SealRejected) as e:
            receiver.open(frame_of(data), now)
        assert e.value.reason == "stale"
    assert receiver.open(frame_of(data), NOW + 29) == env()
    unlimited = Sealer("k", "c", "t", max_age=0)
    assert unlimited.open(frame_of(sender.seal(env())), NOW + 10**6) == env()


def test_foreign_key_cluster_and_unsealed():
    sender = Sealer("k", "c", "t")
    with pytest.raises(SealRejected) as e:
        Sealer("other key", "c", "t").open(frame_of(sender.seal(env())), NOW)
    assert e.value.reason == "auth"
    with pytest.raises(SealRejected) as e:
        Sealer("k", "c2", "t").open(frame_of(sender.seal(env())), NOW)
    assert e.value.reason == "foreign"
    with pytest.raises(SealRejected) as e:
        sender.open(frame_of(encode_send("t", env())), NOW)
    assert e.value.reason == "unsealed"


@pytest.mark.parametrize(
    "old,new",
    [
        (b"sk-seal:2.", b"sk-seal:3."),
        (b"sk-seal:2.", b"sk-seal:2.zz"),
        (b"sk-src:so", b"sk-src:s.o"),
        (b"sk-inc:inc1", b"sk-inc:in c1"),
        (b"sk-pinc:p9", b"sk-pinc:p 9"),
        (b"sk-v:2", b"sk-v:1"),  # a node of another wire version
        (b"sk-dst:si", b"sk-dst:s:i"),
    ],
)
def test_malformed_seal_headers_are_envelope_errors(pair, old, new):
    sender, receiver = pair
    with pytest.raises(EnvelopeError) as e:
        receiver.open(frame_of(rewrite(sender.seal(env()), old, new)), NOW)
    assert not isinstance(e.value, SealRejected)


def test_sealed_frame_is_byte_for_byte_the_known_answer():
    """The sealed wire format is fixed: same codekey, epoch and message, same bytes.

    (Seal version 2, wire version 2: the receiver's incarnation is a clear header, and in the
    authenticated data. The answer was taken from that implementation when it was made.)"""
    sender = Sealer("codekey", "c1", "topic")
    sender.epoch = "0123456789abcdef" * 2
    message = Envelope(
        MsgType.DATA, "c1", "so", "si", "ab12-3", 7, 1_700_000_000_000, "inc1", b"payload", "inc2"
    )
    data = sender.seal(message)
    assert data.startswith(
        b"SEND\ndestination:/topic/topic.c1.si\nsk-cluster:c1\nsk-src:so\nsk-dst:si\n"
        b"sk-inc:inc1\nsk-pinc:inc2\nsk-v:2\n"
        b"sk-seal:2.0123456789abcdef0123456789abcdef.1\ncontent-length:52\n\n"
    )
    assert hashlib.sha256(data).hexdigest() == (
        "a295edc300c592492a8539585972eb30e4eef51850ae98e176e8e16dd6e4566e"
    )
    receiver = Sealer("codekey", "c1", "topic", max_age=0)
    assert receiver.open(frame_of(data), 0.0) == message


def test_keys_depend_on_codekey_topic_and_cluster_and_never_show():
    base = derive_master_key("k", "t", "c")
    assert base == derive_master_key(Secret("k"), "t", "c")
    assert len({base, derive_master_key("k", "t", "c2"), derive_master_key("k", "t2", "c")}) == 3
    sealer = Sealer("my-codekey", "c", "t")
    assert "my-codekey" not in repr(sealer) and "my-codekey" not in str(vars(sealer))
    with pytest.raises(ValueError):
        Sealer("", "c", "t")


def test_sealer_for_channel():
    from socketeer.channel.url import parse_channel_url

    assert sealer_for(parse_channel_url("stomp://h/t"), "c") is None
    sealer = sealer_for(parse_channel_url("stomp://h/t?codekey=k"), "c", 60)
    assert (sealer.cluster, sealer.topic, sealer.max_age) == ("c", "t", 60)


def test_rejections_are_logged_at_a_rate_limit():
    sender, receiver = Sealer("other", "c", "t"), Sealer("k", "c", "t")
    refusals = []
    for i in range(5):
        try:
            receiver.open(frame_of(sender.seal(env())), NOW)
        except SealRejected as e:
            refusals.append(receiver.rejected(e, NOW + i))
    assert [r.reason for r in refusals] == ["auth"] * 5
    assert [r.loggable for r in refusals] == [True, False, False, False, False]
    assert not any(r.foreign for r in refusals)
    try:
        receiver.open(frame_of(sender.seal(env())), NOW)
    except SealRejected as e:
        later = receiver.rejected(e, NOW + 20)
    assert later.loggable and later.not_logged == 4 and later.reason == "auth"
    assert receiver.rejected(EnvelopeError("malformed"), NOW) is None


def test_another_clusters_message_is_a_foreign_refusal():
    receiver = Sealer("k", "c", "t")
    try:
        data = rewrite(Sealer("k", "c", "t").seal(env()), b"sk-cluster:c\n", b"sk-cluster:c2\n")
        receiver.open(frame_of(data), NOW)
    except SealRejected as e:
        refusal = receiver.rejected(e, NOW)
    assert refusal.foreign and not refusal.loggable


# -- the node hooks --------------------------------------------------------------------------


class RawLink:
    """Records the bytes a node sends, undecoded (sealed frames open only with the key)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)


def test_node_seals_what_it_sends_and_opens_what_it_receives():
    clock = Clock()
    clock.advance(NOW)
    a = Node("c", "so", "t", clock, sealer=Sealer("k", "c", "t"))
    b = Node("c", "si", "t", clock, sealer=Sealer("k", "c", "t"))
    link_a, link_b = RawLink(), RawLink()
    a.channel_ready(link_a)
    b.channel_ready(link_b)
    # The session handshake is sealed too: a's HELLO, b's HELLO_OK.
    (hello,) = link_a.sent
    assert b"sk-type" not in hello and b"sk-seal" in hello
    link_b.sent.clear()
    b.frame_received(frame_of(hello))
    (hello_ok,) = link_b.sent
    a.frame_received(frame_of(hello_ok))
    assert a.peers.confirmed("si") and a.peers.session("si") == b.incarnation
    link_a.sent.clear()
    link_b.sent.clear()
    a.ping("si")
    (data,) = link_a.sent
    assert b"sk-type" not in data and b"sk-seal" in data
    b.frame_received(frame_of(data))
    (pong,) = link_b.sent  # si answered the ping, sealed too
    a.frame_received(frame_of(pong))
    assert a.stats.pongs == 1
    b.frame_received(frame_of(data))  # the same ping again: a replay
    assert b.stats.seal_refused["replay"] == 1 and len(link_b.sent) == 1
    b.frame_received(frame_of(encode_send("t", env(MsgType.PING, b"", res=""))))
    assert b.stats.seal_refused["unsealed"] == 1
    assert b.stats.malformed == 0


def test_node_without_sealer_is_unchanged():
    clock = Clock()
    clock.advance(NOW)
    node = Node("c", "so", "t", clock)
    link = RawLink()
    node.channel_ready(link)
    link.sent.clear()  # the HELLO
    node.ping("si")
    (data,) = link.sent
    assert data.startswith(b"SEND\ndestination:/topic/t.c.si\nsk-type:ping\n")
    node.frame_received(frame_of(Sealer("k", "c", "t").seal(env(MsgType.PING, b"", res=""))))
    assert node.stats.malformed == 1  # a sealed message is opaque to a node without key


# -- a real relay ----------------------------------------------------------------------------


async def sealed_relay(codekey: str | None) -> SecureRelay:
    relay = SecureRelay()
    await relay.start_broker()
    relay.add_node("si", codekey=codekey, sink=True)
    relay.add_node("so", codekey=codekey)
    await defer.gatherResults([n.when_ready() for n in relay.nodes.values()])
    return relay


TARGET_NAME = "very-secret-target.invalid"
RESOLVE_NAME = "very-secret-name.invalid"
RESOLVED = "10.98.76.54"
PAYLOAD = b"TOP-SECRET-PAYLOAD-" + os.urandom(8).hex().encode()


@pytest.mark.parametrize("codekey", [None, "correct horse battery staple"])
@pytest_twisted.ensureDeferred
async def test_broker_capture_shows_no_target_and_no_payload(codekey):
    relay = await sealed_relay(codekey)
    try:
        target = await listen(protocol.Factory.forProtocol(Echo), relay.ports)
        relay.aliases[TARGET_NAME] = "127.0.0.1"
        relay.names[RESOLVE_NAME] = RESOLVED
        port = await relay.forward("so", target, host=TARGET_NAME)
        client = await connect(port)
        client.transport.write(PAYLOAD * 50)
        client.transport.loseWriteConnection()
        assert await client.lost.addTimeout(20, reactor) == PAYLOAD * 50
        answer = await relay.nodes["so"].resolve("si", RESOLVE_NAME).addTimeout(20, reactor)
        assert answer == RESOLVED
        captured = relay.capture.data
        secrets = (PAYLOAD, TARGET_NAME.encode(), RESOLVE_NAME.encode(), RESOLVED.encode())
        if codekey is None:  # the control: without a codekey the broker sees everything
            assert all(s in captured for s in secrets)
        else:
            for secret in secrets:
                assert secret not in captured
            assert b"sk-type" not in captured and b"sk-seal:2." in captured
            assert codekey.encode() not in captured
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_tampered_replayed_stale_and_foreign_messages_are_dropped():
    relay = await sealed_relay("k1")
    si = relay.nodes["si"]
    try:
        target = await listen(protocol.Factory.forProtocol(Echo), relay.ports)
        port = await relay.forward("so", target)
        client = await connect(port)
        client.transport.write(b"first half|")
        await until(lambda: client.data == b"first half|")

        # Frames the source node sent to the sink, as the broker saw them.
        to_sink = [
            f
            for f in relay.capture.frames()
            if f.command == "SEND"
            and f.headers.get("sk-src") == "so"
            and f.headers["destination"].endswith(".si")
        ]
        assert to_sink
        attacker = await raw_client(relay.broker_port)
        attacker.send("CONNECT", {"accept-version": "1.2", "host": "x"})
        await attacker.expect("CONNECTED")

        def resend(frame, body: bytes | None = None, **changed: str) -> None:
            headers = {k: v for k, v in frame.headers.items() if k != "content-length"}
            headers.update({k.replace("_", "-"): v for k, v in changed.items()})
            data = frame.body if body is None else body
            headers["content-length"] = str(len(data))
            attacker.send("SEND", headers, data)

        for frame in to_sink:
            resend(frame)  # replayed verbatim
        # Tampered: a counter the sink has not seen yet (else it is just a replay), a flipped bit.
        forged = to_sink[-1]
        version, epoch, counter = forged.headers["sk-seal"].split(".")
        tampered = bytearray(forged.body)
        tampered[0] ^= 0x80
        resend(forged, bytes(tampered), sk_seal=f"{version}.{epoch}.{int(counter) + 1000}")
        stale = Sealer("k1", "c", "testtopic")
        old = Envelope(MsgType.PING, "c", "so", "si", "", 0, int((reactor.seconds() - 3600) * 1000))
        attacker.transport.write(stale.seal(old))
        # A node with another codekey tries to open a stream through the sink.
        mallory = relay.add_node("mallory", codekey="not the key")
        await mallory.when_ready()
        mallory.open_stream("si", "127.0.0.1", target, timeout=30)

        await until(
            lambda: (
                si.stats.seal_refused["replay"] >= len(to_sink)
                and si.stats.seal_refused["auth"] >= 2
                and si.stats.seal_refused["stale"] >= 1
            )
        )
        assert si.stats.seal_refused["replay"] == len(to_sink)
        assert si.stats.seal_refused["stale"] == 1
        assert not si.stats.malformed
        assert [s.peer for s in si.streams.values()] == ["so"]  # mallory opened nothing

        # The stream that was open all along is intact.
        client.transport.write(b"second half")
        client.transport.loseWriteConnection()
        assert await client.lost.addTimeout(20, reactor) == b"first half|second half"
        attacker.transport.loseConnection()
    finally:
        await relay.stop()


def test_a_huge_counter_jump_costs_no_more_than_a_small_one():
    """Issue 13 item 8: the replay window's cost must not grow with the counter's jump."""
    from socketeer.wire.seal import REPLAY_WINDOW, _Window

    window = _Window(cipher=None)
    window.mark(5)
    window.mark(2**47)  # a 2**47-bit shift would need 16 TiB
    assert window.highest == 2**47 and window.seen.bit_length() <= REPLAY_WINDOW
    assert not window.check(2**47) and window.check(2**47 + 1) and not window.check(5)
