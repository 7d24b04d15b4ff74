"""Peer session handshakes and transport (socketeer/wire/noise.py): the published Noise test
vectors, allowlists, tampering, replay windows, forward secrecy, prologue binding, and
fuzzing that only the module's own errors come out."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketeer.secret import Secret
from socketeer.wire.noise import (
    MAX_COUNTER,
    PATTERN_IDENTITY,
    PATTERN_PSK,
    REKEY_AFTER_MESSAGES,
    REPLAY_WINDOW,
    CounterExhausted,
    HandshakeError,
    Identity,
    KeyFormatError,
    NoiseError,
    PeerKeyMismatch,
    Prologue,
    ReplayRejected,
    SessionHandshake,
    SessionTransport,
    TransportRejected,
    UnknownPeer,
    codekey_psk,
    pattern_for,
    public_key_from_text,
)

VECTORS = json.loads((Path(__file__).parent / "noise_vectors.json").read_text())["vectors"]

PSK = codekey_psk(Secret("the cluster codekey"), "t", "c")
A, B, C = Identity.generate(), Identity.generate(), Identity.generate()
KEYS = {"a": A.public_key, "b": B.public_key, "c": C.public_key}


def prologue(**changes: object) -> Prologue:
    fields: dict = dict(
        version=2,
        topic="t",
        cluster="c",
        initiator="a",
        initiator_incarnation="inc-a",
        responder="b",
        responder_incarnation="inc-b",
    )
    fields.update(changes)
    return Prologue(**fields)


def pair(mode: str, *, init_prologue: Prologue | None = None, resp_prologue=None):
    """An initiator ``a`` and a responder ``b`` for ``mode``: psk, identity or both."""
    psk = PSK if mode in ("psk", "both") else None
    ids = mode in ("identity", "both")
    i = SessionHandshake.initiator(
        init_prologue or prologue(),
        psk=psk,
        identity=A if ids else None,
        peer_keys=KEYS if ids else None,
    )
    r = SessionHandshake.responder(
        resp_prologue or prologue(),
        psk=psk,
        identity=B if ids else None,
        peer_keys=KEYS if ids else None,
    )
    return i, r


def handshake(mode: str = "both") -> tuple[SessionTransport, SessionTransport]:
    i, r = pair(mode)
    assert r.read_message(i.write_message(b"w=4194304")) == b"w=4194304"
    assert i.read_message(r.write_message(b"w=1048576")) == b"w=1048576"
    return i.transport(), r.transport()


# -- published test vectors --------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_cacophony_vectors(vector: dict) -> None:
    """Each pattern we use gives, byte for byte, the published handshake messages,
    handshake hash and transport messages (our explicit counters 0, 1 are Noise's nonces)."""
    h = bytes.fromhex
    peer_keys = None
    init_id = resp_id = None
    if "init_static" in vector:
        init_id = Identity.from_bytes(h(vector["init_static"]))
        resp_id = Identity.from_bytes(h(vector["resp_static"]))
        assert resp_id.public_key == h(vector["init_remote_static"])
        peer_keys = {"init": init_id.public_key, "resp": resp_id.public_key}
    i = SessionHandshake(
        initiator=True,
        prologue=h(vector["init_prologue"]),
        psk=h(vector["init_psks"][0]),
        identity=init_id,
        peer_name="resp",
        peer_keys=peer_keys,
        ephemeral=h(vector["init_ephemeral"]),
    )
    r = SessionHandshake(
        initiator=False,
        prologue=h(vector["resp_prologue"]),
        psk=h(vector["resp_psks"][0]),
        identity=resp_id,
        peer_name="init",
        peer_keys=peer_keys,
        ephemeral=h(vector["resp_ephemeral"]),
    )
    assert i.protocol_name == r.protocol_name == vector["protocol_name"]
    m1, m2, *transport = vector["messages"]
    assert i.write_message(h(m1["payload"])) == h(m1["ciphertext"])
    assert r.read_message(h(m1["ciphertext"])) == h(m1["payload"])
    assert r.write_message(h(m2["payload"])) == h(m2["ciphertext"])
    assert i.read_message(h(m2["ciphertext"])) == h(m2["payload"])
    ti, tr = i.transport(), r.transport()
    assert ti.handshake_hash == tr.handshake_hash == h(vector["handshake_hash"])
    for k, message in enumerate(transport):
        sender, receiver = (ti, tr) if k % 2 == 0 else (tr, ti)
        counter, ciphertext = sender.seal(h(message["payload"]))
        assert (counter, ciphertext) == (k // 2, h(message["ciphertext"]))
        assert receiver.open(counter, ciphertext) == h(message["payload"])


# -- handshakes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "pattern"),
    [("psk", PATTERN_PSK), ("identity", PATTERN_IDENTITY), ("both", PATTERN_IDENTITY)],
)
def test_handshake_end_to_end(mode: str, pattern: str) -> None:
    i, r = pair(mode)
    assert i.protocol_name == r.protocol_name == pattern
    assert not i.done and not r.done
    m1 = i.write_message(b"hello")
    assert b"hello" not in m1
    assert r.read_message(m1) == b"hello"
    m2 = r.write_message(b"hello ok")
    assert i.read_message(m2) == b"hello ok"
    assert i.done and r.done
    if mode != "psk":
        assert r.remote_static == A.public_key and i.remote_static == B.public_key
    ti, tr = i.transport(), r.transport()
    assert ti.handshake_hash == tr.handshake_hash
    assert ti.confirmed and not tr.confirmed  # the responder waits for a first message
    for sender, receiver in ((ti, tr), (tr, ti)):
        counter, sealed = sender.seal(b"payload", b"clear headers")
        assert counter == 0 and b"payload" not in sealed
        assert receiver.open(counter, sealed, b"clear headers") == b"payload"
    assert tr.confirmed


def test_pattern_choice() -> None:
    assert pattern_for(PSK, None) == PATTERN_PSK
    assert pattern_for(PSK, A) == pattern_for(None, A) == PATTERN_IDENTITY
    with pytest.raises(ValueError):
        pattern_for(None, None)
    with pytest.raises(ValueError, match="peer_keys"):
        SessionHandshake.initiator(prologue(), identity=A)


def test_codekey_psk_is_per_cluster_and_not_the_master_key() -> None:
    from socketeer.wire.seal import derive_master_key

    assert len(PSK) == 32
    assert PSK == codekey_psk("the cluster codekey", "t", "c")
    assert PSK != codekey_psk("the cluster codekey", "t", "c2")
    assert PSK != codekey_psk("another codekey", "t", "c")
    assert PSK != derive_master_key("the cluster codekey", "t", "c")


def test_out_of_turn_calls_are_handshake_errors() -> None:
    i, r = pair("both")
    with pytest.raises(HandshakeError):
        i.transport()
    with pytest.raises(HandshakeError):
        r.write_message(b"")
    with pytest.raises(HandshakeError):
        i.read_message(b"x" * 100)
    m1 = i.write_message(b"")
    with pytest.raises(HandshakeError):
        i.write_message(b"")
    r.read_message(m1)
    i.read_message(r.write_message(b""))
    with pytest.raises(HandshakeError):
        i.read_message(b"")  # a duplicate HELLO_OK after the session is up


# -- allowlists --------------------------------------------------------------------------------


def test_initiator_refuses_a_responder_not_in_its_allowlist() -> None:
    with pytest.raises(UnknownPeer) as info:
        SessionHandshake.initiator(prologue(responder="z"), identity=A, peer_keys=KEYS)
    assert info.value.node == "z" and info.value.reason == "unknown-peer"


def test_responder_refuses_an_unknown_node() -> None:
    keys = {**KEYS, "z": Identity.generate().public_key}
    stranger = Identity.generate()
    i = SessionHandshake.initiator(prologue(initiator="z"), identity=stranger, peer_keys=keys)
    r = SessionHandshake.responder(prologue(initiator="z"), identity=B, peer_keys=KEYS)
    with pytest.raises(UnknownPeer) as info:
        r.read_message(i.write_message(b""))
    assert info.value.node == "z"
    with pytest.raises(HandshakeError):
        r.write_message(b"")  # a refused responder is done for


def test_responder_refuses_a_wrong_key_for_a_known_name() -> None:
    rogue = Identity.generate()
    keys = dict(KEYS)
    i = SessionHandshake.initiator(prologue(), identity=rogue, peer_keys=keys)
    r = SessionHandshake.responder(prologue(), identity=B, peer_keys=KEYS)
    with pytest.raises(PeerKeyMismatch) as info:
        r.read_message(i.write_message(b""))
    assert info.value.node == "a" and info.value.reason == "peer-key"


@pytest.mark.parametrize("codekey", [True, False])
def test_a_member_cannot_claim_another_members_name(codekey: bool) -> None:
    """Node c, allowed and holding the codekey, says it is node a: refused, because the
    static key it proves is c's, not a's."""
    psk = PSK if codekey else None
    i = SessionHandshake.initiator(prologue(initiator="a"), psk=psk, identity=C, peer_keys=KEYS)
    r = SessionHandshake.responder(prologue(initiator="a"), psk=psk, identity=B, peer_keys=KEYS)
    with pytest.raises(PeerKeyMismatch):
        r.read_message(i.write_message(b""))


def test_a_member_cannot_answer_for_another_member() -> None:
    """Node c gets a's HELLO for b (a broker redirecting it) and answers as b: it cannot
    even read message 1, which is encrypted to b's static key."""
    i = SessionHandshake.initiator(prologue(), psk=PSK, identity=A, peer_keys=KEYS)
    r = SessionHandshake.responder(prologue(), psk=PSK, identity=C, peer_keys=KEYS)
    with pytest.raises(HandshakeError):
        r.read_message(i.write_message(b"secret hello"))


def test_initiator_with_a_wrong_key_for_the_responder_fails() -> None:
    keys = {**KEYS, "b": C.public_key}  # a thinks b is C's key
    i = SessionHandshake.initiator(prologue(), identity=A, peer_keys=keys)
    r = SessionHandshake.responder(prologue(), identity=B, peer_keys=KEYS)
    with pytest.raises(HandshakeError):
        r.read_message(i.write_message(b""))


def test_codekey_and_identity_both_required_when_both_configured() -> None:
    """IKpsk2 mixes the psk in at the end of message 2 (as WireGuard): a responder with
    another codekey answers, the initiator refuses the answer, and the responder's session
    never opens a message (nor becomes confirmed)."""
    i = SessionHandshake.initiator(prologue(), psk=PSK, identity=A, peer_keys=KEYS)
    r = SessionHandshake.responder(
        prologue(), psk=codekey_psk("other", "t", "c"), identity=B, peer_keys=KEYS
    )
    r.read_message(i.write_message(b""))
    with pytest.raises(HandshakeError):
        i.read_message(r.write_message(b""))
    responder = r.transport()
    assert not responder.confirmed
    with pytest.raises(TransportRejected):
        responder.open(*SessionTransport(b"k" * 32, b"k" * 32, b"").seal(b"x"))
    assert not responder.confirmed
    # one end with an identity, the other with the codekey only: no handshake either
    i, _ = pair("both")
    _, r = pair("psk")
    with pytest.raises(HandshakeError):
        r.read_message(i.write_message(b""))


# -- tampering and prologue binding ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["psk", "identity", "both"])
def test_tampered_message_1_fails(mode: str) -> None:
    i, _ = pair(mode)
    m1 = i.write_message(b"payload")
    for position in (0, 31, 32, len(m1) // 2, len(m1) - 1):
        tampered = bytearray(m1)
        tampered[position] ^= 0x01
        _, r = pair(mode)
        with pytest.raises(HandshakeError):
            r.read_message(bytes(tampered))
    for cut in (m1[:-1], m1[:20], b"", m1 + b"x", m1 + bytes(65536)):
        _, r = pair(mode)
        with pytest.raises(HandshakeError):
            r.read_message(cut)


@pytest.mark.parametrize("mode", ["psk", "identity", "both"])
def test_tampered_message_2_fails_but_the_initiator_still_takes_the_real_one(mode: str) -> None:
    i, r = pair(mode)
    r.read_message(i.write_message(b"hello"))
    m2 = r.write_message(b"ok")
    for position in (0, 32, len(m2) - 1):
        tampered = bytearray(m2)
        tampered[position] ^= 0x80
        with pytest.raises(HandshakeError):
            i.read_message(bytes(tampered))
    with pytest.raises(HandshakeError):
        i.read_message(b"\0" * 48)  # an all-zero (low-order) ephemeral key
    with pytest.raises(HandshakeError):
        i.read_message(m2 + bytes(65536))
    assert i.read_message(m2) == b"ok"
    ti, tr = i.transport(), r.transport()
    assert tr.open(*ti.seal(b"x")) == b"x"


@pytest.mark.parametrize(
    "change",
    [
        {"initiator_incarnation": "inc-a2"},
        {"responder_incarnation": "inc-b2"},  # the responder restarted: replayed HELLO fails
        {"version": 3},
        {"topic": "t2"},
        {"cluster": "c2"},
    ],
    ids=lambda c: next(iter(c)),
)
@pytest.mark.parametrize("mode", ["psk", "identity", "both"])
def test_prologue_mismatch_fails(mode: str, change: dict) -> None:
    i, r = pair(mode, resp_prologue=prologue(**change))
    with pytest.raises(HandshakeError):
        r.read_message(i.write_message(b""))


def test_message_1_replayed_to_another_node_fails() -> None:
    """A HELLO for b, redirected to c (who has a's key too): c's prologue names c."""
    i = SessionHandshake.initiator(prologue(), identity=A, peer_keys=KEYS)
    r = SessionHandshake.responder(prologue(responder="c"), identity=C, peer_keys=KEYS)
    with pytest.raises(HandshakeError):
        r.read_message(i.write_message(b""))


def test_prologue_fields_are_unambiguous() -> None:
    one = prologue(initiator="ab", initiator_incarnation="c")
    two = prologue(initiator="a", initiator_incarnation="bc")
    assert one.encode() != two.encode()


# -- transport ---------------------------------------------------------------------------------


def test_transport_seal_open_and_associated_data() -> None:
    ti, tr = handshake()
    counters = []
    for k in range(5):
        counter, sealed = ti.seal(b"m%d" % k, b"ad")
        counters.append(counter)
        assert tr.open(counter, sealed, b"ad") == b"m%d" % k
    assert counters == [0, 1, 2, 3, 4] and ti.sent == 5
    counter, sealed = ti.seal(b"secret", b"sk-dst:b")
    with pytest.raises(TransportRejected):
        tr.open(counter, sealed, b"sk-dst:c")  # a rewritten clear header
    with pytest.raises(TransportRejected):
        tr.open(counter + 1, sealed, b"sk-dst:b")  # a rewritten counter
    with pytest.raises(TransportRejected):
        ti.open(counter, sealed, b"sk-dst:b")  # reflected back to its sender
    assert tr.open(counter, sealed, b"sk-dst:b") == b"secret"  # failures moved nothing


def test_replay_and_duplicates_are_refused() -> None:
    ti, tr = handshake()
    frames = [ti.seal(b"m%d" % k) for k in range(3)]
    for counter, sealed in frames:
        tr.open(counter, sealed)
    for counter, sealed in frames:
        with pytest.raises(ReplayRejected) as info:
            tr.open(counter, sealed)
        assert info.value.duplicate and info.value.reason == "replay"


def test_reordering_within_the_window_is_accepted() -> None:
    ti, tr = handshake()
    frames = [ti.seal(b"m%d" % k) for k in range(REPLAY_WINDOW + 10)]
    newest = frames[-1]
    assert tr.open(*newest) == b"m%d" % (REPLAY_WINDOW + 9)
    # the oldest ones still inside the window arrive late, in reverse order: accepted once
    inside = frames[10:-1]
    for counter, sealed in reversed(inside):
        assert tr.open(counter, sealed) == b"m%d" % counter
    for counter, sealed in inside[:3]:
        with pytest.raises(ReplayRejected):
            tr.open(counter, sealed)
    for counter, sealed in frames[:10]:  # fell out of the window
        with pytest.raises(ReplayRejected) as info:
            tr.open(counter, sealed)
        assert not info.value.duplicate


def test_forged_messages_do_not_move_the_window() -> None:
    ti, tr = handshake()
    counter, sealed = ti.seal(b"first")
    with pytest.raises(TransportRejected):
        tr.open(10**6, b"\0" * 40)  # a forgery far ahead would push counter 0 out
    assert tr.open(counter, sealed) == b"first"


def test_a_huge_counter_jump_costs_nothing() -> None:
    ti, tr = handshake()
    ti._next = MAX_COUNTER - 1  # noqa: SLF001  (a test may wind the counter)
    counter, sealed = ti.seal(b"late")
    assert tr.open(counter, sealed) == b"late"
    assert tr._seen == 1  # noqa: SLF001  (the bitmap did not grow by 2**64 bits)


def test_counter_exhaustion_ends_the_session() -> None:
    ti, tr = handshake()
    assert not ti.should_rekey
    ti._next = REKEY_AFTER_MESSAGES  # noqa: SLF001
    assert ti.should_rekey
    ti._next = MAX_COUNTER  # noqa: SLF001
    counter, sealed = ti.seal(b"last")
    assert counter == MAX_COUNTER and tr.open(counter, sealed) == b"last"
    with pytest.raises(CounterExhausted):
        ti.seal(b"one too many")
    with pytest.raises(TransportRejected):
        tr.open(MAX_COUNTER + 1, sealed)


# -- forward secrecy ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["psk", "identity", "both"])
def test_forward_secrecy_every_session_has_fresh_keys(mode: str) -> None:
    """Same static keys, same psk, same prologue (a restart with the same incarnations,
    even): two sessions still have different keys, and a frame recorded in the first
    cannot be opened in the second."""
    t1i, t1r = handshake(mode)
    t2i, t2r = handshake(mode)
    assert t1i.handshake_hash != t2i.handshake_hash
    c1, recorded = t1i.seal(b"POST /api/payments")
    c2, again = t2i.seal(b"POST /api/payments")
    assert c1 == c2 == 0 and recorded != again  # same nonce, same text: different keys
    with pytest.raises(TransportRejected):
        t2r.open(c1, recorded)
    assert t1r.open(c1, recorded) == b"POST /api/payments"


# -- keys in text, and never in a repr ---------------------------------------------------------


def test_identity_text_round_trip_and_wireguard_format() -> None:
    text = A.to_text()
    assert len(text) == 44 and text.endswith("=")
    assert len(base64.b64decode(text)) == 32
    again = Identity.from_text(text)
    assert again == A and again.public_key == A.public_key
    assert Identity.from_text(Secret(text + "\n")).public_text() == A.public_text()
    assert public_key_from_text(A.public_text()) == A.public_key
    assert Identity.generate() != A


@pytest.mark.parametrize(
    "text", ["", "abc", "A" * 44, base64.b64encode(b"x" * 31).decode(), "é" * 44, "AA==AA=="]
)
def test_bad_key_text(text: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        Identity.from_text(text)
    assert isinstance(info.value, ValueError)
    if text:
        assert text not in str(info.value)
    with pytest.raises(KeyFormatError):
        public_key_from_text(text)


def test_keys_never_appear_in_repr() -> None:
    i, r = pair("both")
    r.read_message(i.write_message(b""))
    i.read_message(r.write_message(b""))
    private = A.to_text()
    texts = [repr(A), str(A), A.describe(), repr(i), repr(r), repr(i.transport())]
    for text in texts:
        assert private not in text
        assert A.private_bytes().hex() not in text
    assert A.public_text() in repr(A)
    with pytest.raises(TypeError):
        pickle.dumps(A)


# -- fuzzing: nothing but NoiseError comes out -------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["psk", "identity", "both"]), st.binary(max_size=300))
def test_responder_read_raises_only_noise_errors(mode: str, data: bytes) -> None:
    _, r = pair(mode)
    try:
        r.read_message(data)
    except NoiseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["psk", "identity", "both"]), st.lists(st.binary(max_size=200), max_size=4))
def test_initiator_read_raises_only_noise_errors(mode: str, replies: list[bytes]) -> None:
    i, r = pair(mode)
    r.read_message(i.write_message(b""))
    for data in replies:
        try:
            i.read_message(data)
        except NoiseError:
            pass
    assert i.read_message(r.write_message(b"real")) == b"real"


TRANSPORTS = handshake()


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, 1, 2047])),
    st.binary(max_size=200),
    st.binary(max_size=50),
)
def test_open_raises_only_noise_errors(counter: int, data: bytes, ad: bytes) -> None:
    try:
        TRANSPORTS[1].open(counter, data, ad)
    except NoiseError:
        pass
    else:
        raise AssertionError("a random message authenticated")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_key_text_raises_only_key_format_errors(text: str) -> None:
    try:
        Identity.from_text(text)
    except KeyFormatError:
        pass
