"""Peer sessions authenticated with the Noise Protocol Framework, the way WireGuard does it.

A session between two node incarnations starts with one Noise handshake round trip
(HANDSHAKE carries message 1, HANDSHAKE_OK message 2) and then protects its messages with the two
transport keys the handshake split. Which pattern runs depends on what is configured:

* a channel ``codekey`` only: ``Noise_NNpsk0_25519_AESGCM_SHA256``. Both ends prove
  they hold the codekey (the pre-shared key, derived from it), and every session gets
  fresh keys from two ephemeral X25519 keys: traffic recorded at the broker cannot be
  opened in a later session, nor after a restart (forward secrecy). Any codekey holder can
  still claim any node name: the codekey says "member of the cluster", not "which member".
* node identities (``identity`` and ``peerkeys``), with or without a codekey:
  ``Noise_IKpsk2_25519_AESGCM_SHA256``. The initiator knows the responder's static key
  from its allowlist and sends its own, encrypted; the responder checks it against the
  allowlist entry of the node name the initiator claims. One member can no longer speak
  as another. Without a codekey the pre-shared key is 32 zero bytes, as WireGuard does
  when no preshared key is set: one pattern, one code path, and the security of plain IK.
  With a codekey both must hold: the codekey and an allowed static key.

The prologue binds what the frames around the handshake say in clear: protocol version,
topic, cluster, both node names and both incarnations. A handshake message replayed to a
restarted node (a new incarnation), redirected to another node or cluster, or passed off
as another node's fails.

Transport messages carry their counter in clear (an explicit nonce, as in WireGuard and
the Noise specification's section on out-of-order transport messages), because a STOMP
broker may reorder and duplicate messages across reconnects and failover. The receiver
keeps a sliding replay window over the counters, moved only by messages that
authenticated. Counter exhaustion ends the session: rekeying is a new handshake.

Key confirmation: the initiator knows the session is live when message 2 authenticates;
the responder only when a first transport message from the initiator opens
(``SessionTransport.confirmed``), because message 1 can be replayed to the same responder
incarnation and, with IKpsk2, the psk is only checked by the initiator. A new,
unconfirmed responder session should not displace a confirmed one.

Pure: no Twisted, no sockets, no clock. The handshake itself is the ``noiseprotocol``
library (on ``cryptography``), checked against the published cacophony test vectors in
``tests/wire/test_noise.py``; the transport uses ``cryptography``'s AES-256-GCM (AES-NI) with
the split keys and the Noise nonce encoding. Keys never appear in a repr.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import (
    NoiseHandshakeError,
    NoiseInvalidMessage,
    NoiseMaxNonceError,
    NoiseValueError,
)

from socketeer.secret import Secret
from socketeer.wire.seal import derive_master_key

__all__ = [
    "KEY_SIZE",
    "MAX_COUNTER",
    "MAX_HANDSHAKE_PAYLOAD",
    "PATTERN_IDENTITY",
    "PATTERN_PSK",
    "REKEY_AFTER_MESSAGES",
    "REPLAY_WINDOW",
    "CounterExhausted",
    "HandshakeError",
    "Identity",
    "KeyFormatError",
    "NoiseError",
    "PeerKeyMismatch",
    "Prologue",
    "ReplayRejected",
    "SessionHandshake",
    "SessionTransport",
    "TransportRejected",
    "UnknownPeer",
    "codekey_psk",
    "pattern_for",
    "public_key_from_text",
    "public_key_text",
]

PATTERN_PSK = "Noise_NNpsk0_25519_AESGCM_SHA256"
PATTERN_IDENTITY = "Noise_IKpsk2_25519_AESGCM_SHA256"
#: X25519 keys, pre-shared keys and AES-256-GCM keys: 32 bytes.
KEY_SIZE = 32
#: How many counters behind the newest one a receiver still accepts (reordering).
REPLAY_WINDOW = 2048
#: The last counter a session may use (2**64 - 1 is reserved by the Noise specification).
MAX_COUNTER = 2**64 - 2
#: A sender should start a new session after this many messages (as WireGuard does), long
#: before the counter runs out.
REKEY_AFTER_MESSAGES = 2**60
#: A Noise message is at most 65535 bytes; the largest handshake message adds 96 bytes
#: (IKpsk2 message 1: ephemeral, encrypted static key, payload tag).
MAX_HANDSHAKE_MESSAGE = 65535
MAX_HANDSHAKE_PAYLOAD = MAX_HANDSHAKE_MESSAGE - 96

_ZERO_PSK = bytes(KEY_SIZE)
_PSK_INFO = b"socketeer-noise-1\0psk"
_PROLOGUE_TAG = b"socketeer-session"
_TAG_SIZE = 16


# -- errors ------------------------------------------------------------------------------------


class NoiseError(Exception):
    """Anything this module refuses; ``reason`` is a short word for counting it."""

    reason = "noise"


class KeyFormatError(NoiseError, ValueError):
    """A key in text form is not 32 bytes of standard base64."""

    reason = "key-format"


class HandshakeError(NoiseError):
    """A handshake message that is malformed, fails authentication or comes out of turn."""

    reason = "handshake"


class UnknownPeer(HandshakeError):
    """The peer's node name is not in the allowlist (``peerkeys``)."""

    reason = "unknown-peer"

    def __init__(self, node: str) -> None:
        super().__init__(f"node {node!r} is not in this node's peerkeys")
        self.node = node


class PeerKeyMismatch(HandshakeError):
    """The peer proved a static key that is not the one allowed for the name it claims."""

    reason = "peer-key"

    def __init__(self, node: str) -> None:
        super().__init__(
            f"the node claiming to be {node!r} holds a key that is not {node!r}'s in peerkeys"
        )
        self.node = node


class TransportRejected(NoiseError):
    """A transport message that fails authentication or has an impossible counter."""

    reason = "auth"


class ReplayRejected(TransportRejected):
    """A transport message whose counter was seen, or is too old to tell."""

    reason = "replay"

    def __init__(self, counter: int, *, duplicate: bool) -> None:
        what = "duplicate" if duplicate else "too old"
        super().__init__(f"transport message {counter} is a replay ({what})")
        self.counter = counter
        self.duplicate = duplicate


class CounterExhausted(NoiseError):
    """The session has sent ``MAX_COUNTER`` messages: start a new one (a new handshake)."""

    reason = "exhausted"


# -- keys --------------------------------------------------------------------------------------


def _decode_key(text: str, what: str) -> bytes:
    # The message never repeats the text: it may be a private key.
    try:
        raw = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raw = b""
    if len(raw) != KEY_SIZE:
        raise KeyFormatError(
            f"{what} is not a key: expected 32 bytes in standard base64 (44 characters "
            "ending in '=', as `socketeer genkey --identity` prints)"
        )
    return raw


def public_key_text(key: bytes) -> str:
    """A public key as it is written in ``peerkeys``: standard base64 (as WireGuard)."""
    return base64.b64encode(key).decode("ascii")


def public_key_from_text(text: str) -> bytes:
    """The raw 32-byte X25519 public key written as ``text``; KeyFormatError if it is not."""
    return _decode_key(text, "the public key")


class Identity:
    """A node's static X25519 key pair: what peers' allowlists name it by.

    The text form is the 32 private bytes in standard base64, the format of WireGuard's
    ``wg genkey``, so existing key tooling works. The private key shows in no repr.
    """

    __slots__ = ("_private", "public_key")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        #: The raw 32-byte public key, as peers list it.
        self.public_key: bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> Identity:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, private: bytes) -> Identity:
        if len(private) != KEY_SIZE:
            raise KeyFormatError("a private key is 32 bytes")
        return cls(X25519PrivateKey.from_private_bytes(private))

    @classmethod
    def from_text(cls, text: str | Secret) -> Identity:
        """The identity written as ``text`` (see ``to_text``); KeyFormatError naming no key."""
        value = text.value if isinstance(text, Secret) else text
        return cls.from_bytes(_decode_key(value, "the identity"))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def to_text(self) -> str:
        """The private key in the form the ``identity`` key takes: keep it secret."""
        return base64.b64encode(self.private_bytes()).decode("ascii")

    def public_text(self) -> str:
        """The public key in the form ``peerkeys`` takes: give it to the peers."""
        return public_key_text(self.public_key)

    def describe(self) -> str:
        """One line for ``socketeer check``: only the public half."""
        return f"public key {self.public_text()}"

    def __repr__(self) -> str:
        return f"<Identity public={self.public_text()}>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return self.public_key == other.public_key

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __copy__(self) -> Identity:
        return self  # immutable

    def __deepcopy__(self, memo: dict) -> Identity:
        return self


def codekey_psk(codekey: Secret | str, topic: str, cluster: str) -> bytes:
    """The Noise pre-shared key of a cluster's codekey.

    It reuses the sealing layer's scrypt master key (one slow derivation per codekey and
    cluster, already cached there) and expands it with HKDF under its own label, so the
    psk and the sealing keys are independent.
    """
    master = derive_master_key(codekey, topic, cluster)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=_PSK_INFO).derive(
        master
    )


def pattern_for(psk: bytes | None, identity: Identity | None) -> str:
    """The Noise protocol name for what is configured (see the module docstring)."""
    if identity is not None:
        return PATTERN_IDENTITY
    if psk is not None:
        return PATTERN_PSK
    raise ValueError("a session handshake needs a codekey psk, an identity, or both")


# -- handshake ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prologue:
    """What both ends must agree on for a handshake to succeed, from the initiator's side.

    Both ends build the same Prologue: the initiator from what it is about to send, the
    responder from the HELLO's clear headers and its own name and incarnation.
    """

    version: int
    topic: str
    cluster: str
    initiator: str
    initiator_incarnation: str
    responder: str
    responder_incarnation: str

    def encode(self) -> bytes:
        """Length-prefixed fields, so no two different prologues encode the same."""
        fields = (
            str(self.version),
            self.topic,
            self.cluster,
            self.initiator,
            self.initiator_incarnation,
            self.responder,
            self.responder_incarnation,
        )
        parts = [_PROLOGUE_TAG]
        for text in fields:
            data = text.encode("utf-8")
            parts.append(struct.pack("!H", len(data)) + data)
        return b"".join(parts)


class _State(Enum):
    WRITE = "write"
    READ = "read"
    DONE = "done"
    FAILED = "failed"


#: What the library and ``cryptography`` raise on a malformed or forged handshake message.
_LIBRARY_ERRORS = (
    InvalidTag,
    ValueError,
    NoiseValueError,
    NoiseInvalidMessage,
    NoiseHandshakeError,
    NoiseMaxNonceError,
)


class SessionHandshake:
    """One side of one session handshake (one round trip), then ``transport()``.

    Use ``initiator`` or ``responder``. The initiator writes message 1, reads message 2; the
    responder reads message 1, writes message 2. A responder whose read fails is done for
    (make a new one for the next HELLO). An initiator whose read fails keeps waiting for
    the real answer: a forged or garbled reply cannot cancel its handshake.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        prologue: bytes,
        psk: bytes | None,
        identity: Identity | None,
        peer_name: str,
        peer_keys: Mapping[str, bytes] | None,
        ephemeral: bytes | None = None,
    ) -> None:
        """The raw constructor: ``prologue`` as bytes; ``ephemeral`` fixes the ephemeral
        private key (published test vectors only; a real session draws a fresh one)."""
        if psk is not None and len(psk) != KEY_SIZE:
            raise ValueError("the psk is 32 bytes")
        self.protocol_name = pattern_for(psk, identity)
        self.initiator = initiator
        self.peer_name = peer_name
        self._prologue = prologue
        self._identity = identity
        self._peer_keys = peer_keys
        self._psk = psk if psk is not None else _ZERO_PSK
        #: The peer's static public key, once known (identities only).
        self.remote_static: bytes | None = None
        if identity is not None:
            if peer_keys is None:
                raise ValueError("an identity needs peer_keys (the allowlist)")
            if initiator:
                self.remote_static = self._allowed_key(peer_name)
        if ephemeral is None:
            ephemeral = X25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        self._ephemeral = ephemeral
        self._message1_payload = b""
        self._conn = self._connection()
        self._state = _State.WRITE if initiator else _State.READ
        self._transport: SessionTransport | None = None

    @classmethod
    def initiator(
        cls,
        prologue: Prologue,
        *,
        psk: bytes | None = None,
        identity: Identity | None = None,
        peer_keys: Mapping[str, bytes] | None = None,
    ) -> SessionHandshake:
        """The side that starts the handshake (HANDSHAKE, having heard the peer's HELLO).
        With an identity, ``peer_keys`` must list the responder (UnknownPeer otherwise): IK
        encrypts to its static key."""
        return cls(
            initiator=True,
            prologue=prologue.encode(),
            psk=psk,
            identity=identity,
            peer_name=prologue.responder,
            peer_keys=peer_keys,
        )

    @classmethod
    def responder(
        cls,
        prologue: Prologue,
        *,
        psk: bytes | None = None,
        identity: Identity | None = None,
        peer_keys: Mapping[str, bytes] | None = None,
    ) -> SessionHandshake:
        """The side that answers a HANDSHAKE with HANDSHAKE_OK."""
        return cls(
            initiator=False,
            prologue=prologue.encode(),
            psk=psk,
            identity=identity,
            peer_name=prologue.initiator,
            peer_keys=peer_keys,
        )

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        state = self._state.value
        return f"<SessionHandshake {self.protocol_name} {role} {self.peer_name!r} {state}>"

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    def _allowed_key(self, node: str) -> bytes:
        assert self._peer_keys is not None
        key = self._peer_keys.get(node)
        if key is None:
            raise UnknownPeer(node)
        return key

    def _connection(self) -> NoiseConnection:
        conn = NoiseConnection.from_name(self.protocol_name.encode("ascii"))
        conn.set_psks(self._psk)
        if self.initiator:
            conn.set_as_initiator()
        else:
            conn.set_as_responder()
        conn.set_prologue(self._prologue)
        if self._identity is not None:
            conn.set_keypair_from_private_bytes(Keypair.STATIC, self._identity.private_bytes())
            if self.remote_static is not None:
                conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, self.remote_static)
        # The ephemeral key is set by us (so that a failed read can be undone by replaying
        # message 1 with it); the library warns about a preset ephemeral key.
        conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, self._ephemeral)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            conn.start_handshake()
        return conn

    def write_message(self, payload: bytes = b"") -> bytes:
        """The next handshake message, carrying ``payload`` encrypted. In message 1 the
        payload is authenticated (by the psk, or the initiator's static key) but neither
        forward secret nor safe from replay to the same responder incarnation; in message
        2 it is forward secret. Keep secrets for the transport."""
        if self._state is not _State.WRITE:
            raise HandshakeError(f"cannot write a handshake message now ({self._state.value})")
        if len(payload) > MAX_HANDSHAKE_PAYLOAD:
            raise ValueError(f"a handshake payload is at most {MAX_HANDSHAKE_PAYLOAD} bytes")
        message = bytes(self._conn.write_message(bytes(payload)))
        if self.initiator:
            self._message1_payload = bytes(payload)
            self._state = _State.READ
        else:
            self._finish()
        return message

    def read_message(self, message: bytes) -> bytes:
        """The payload of the peer's handshake message; HandshakeError (or its UnknownPeer,
        PeerKeyMismatch) if it is not a valid message from an allowed peer."""
        if self._state is not _State.READ:
            raise HandshakeError(f"cannot read a handshake message now ({self._state.value})")
        if (
            not self.initiator
            and self._identity is not None
            and (self._peer_keys is None or self.peer_name not in self._peer_keys)
        ):
            self._state = _State.FAILED
            raise UnknownPeer(self.peer_name)  # refused before any work
        if not isinstance(message, bytes | bytearray) or len(message) > MAX_HANDSHAKE_MESSAGE:
            if not self.initiator:
                self._state = _State.FAILED
            raise HandshakeError("a handshake message is bytes, at most 65535 of them")
        try:
            payload = bytes(self._conn.read_message(bytes(message)))
        except _LIBRARY_ERRORS:
            self._failed()
            raise HandshakeError(
                "handshake message failed authentication (do both nodes have the same "
                "codekey, and identities the other lists in peerkeys?)"
            ) from None
        if self.initiator:
            self._finish()
            return payload
        if self._identity is not None:
            rs = self._conn.noise_protocol.handshake_state.rs.public_bytes
            if not hmac.compare_digest(rs, self._allowed_key(self.peer_name)):
                self._state = _State.FAILED
                raise PeerKeyMismatch(self.peer_name)
            self.remote_static = rs
        self._state = _State.WRITE
        return payload

    def _failed(self) -> None:
        """After the library refused a message: the responder is done for; the initiator
        goes back to waiting for message 2."""
        if self.initiator:
            # Undo the library's half-consumed state: message 1 again, same ephemeral key,
            # gives the same state, ready for the real reply.
            self._conn = self._connection()
            self._conn.write_message(self._message1_payload)
        else:
            self._state = _State.FAILED

    def _finish(self) -> None:
        protocol = self._conn.noise_protocol
        self._transport = SessionTransport(
            protocol.cipher_state_encrypt.k,
            protocol.cipher_state_decrypt.k,
            bytes(self._conn.get_handshake_hash()),
            confirmed=self.initiator,
        )
        self._conn = None  # type: ignore[assignment]  # the handshake keys go with it
        self._ephemeral = b""
        self._state = _State.DONE

    def transport(self) -> SessionTransport:
        """The session's transport, once the handshake is done (HandshakeError before)."""
        if self._transport is None:
            raise HandshakeError("the handshake is not finished")
        return self._transport


# -- transport ---------------------------------------------------------------------------------


def _nonce(counter: int) -> bytes:
    # Noise's AESGCM nonce: 32 zero bits, then the 64-bit counter big-endian.
    return b"\0\0\0\0" + counter.to_bytes(8, "big")


class SessionTransport:
    """A session's two directions: seal with an explicit counter, open with a replay window.

    ``seal`` numbers messages 0, 1, 2, ...; the receiver accepts each counter once, in any
    order within ``REPLAY_WINDOW`` of the newest it has accepted. The window moves only
    after a message authenticated, so forged messages cannot push real ones out of it.
    """

    __slots__ = ("_send", "_recv", "_next", "_highest", "_seen", "handshake_hash", "confirmed")

    def __init__(
        self, send_key: bytes, recv_key: bytes, handshake_hash: bytes, *, confirmed: bool = True
    ) -> None:
        self._send = AESGCM(send_key)
        self._recv = AESGCM(recv_key)
        self._next = 0
        self._highest = -1  # the newest accepted counter (-1: none yet)
        self._seen = 0  # bit i set: counter (highest - i) accepted
        #: Noise's handshake hash: the same on both ends, unique per session (a session id).
        self.handshake_hash = handshake_hash
        #: The peer has shown it holds the session keys. True on the initiator (message 2
        #: proved it); on the responder only once a message from the initiator opened:
        #: message 1 alone may be a replay (same incarnations), or, with IKpsk2, come from
        #: a node with an allowed key but another codekey. Until then, let this session
        #: replace no confirmed one.
        self.confirmed = confirmed

    def __repr__(self) -> str:
        return f"<SessionTransport sent={self._next} highest_received={self._highest}>"

    @property
    def sent(self) -> int:
        """Messages sealed so far (the next counter)."""
        return self._next

    @property
    def should_rekey(self) -> bool:
        """Time to start a new session (as WireGuard, long before the counter runs out)."""
        return self._next >= REKEY_AFTER_MESSAGES

    def seal(self, plaintext: bytes, ad: bytes = b"") -> tuple[int, bytes]:
        """(counter, ciphertext) for ``plaintext``; ``ad`` (the clear headers) is
        authenticated too and must be given again to ``open``."""
        n = self._next
        if n > MAX_COUNTER:
            raise CounterExhausted("this session has used all its counters: start a new one")
        self._next = n + 1
        return n, self._send.encrypt(_nonce(n), plaintext, ad)

    def open(self, counter: int, ciphertext: bytes, ad: bytes = b"") -> bytes:
        """The plaintext; ReplayRejected for a counter seen or too old, TransportRejected
        for anything that fails authentication."""
        if type(counter) is not int or not 0 <= counter <= MAX_COUNTER:
            raise TransportRejected("transport counter out of range")
        if not isinstance(ciphertext, bytes | bytearray) or len(ciphertext) < _TAG_SIZE:
            raise TransportRejected("transport message too short")
        self._check(counter)
        try:
            plaintext = self._recv.decrypt(_nonce(counter), bytes(ciphertext), bytes(ad))
        except (InvalidTag, ValueError, OverflowError):
            raise TransportRejected(f"transport message {counter} failed authentication") from None
        self._mark(counter)
        self.confirmed = True
        return plaintext

    def _check(self, n: int) -> None:
        if n > self._highest:
            return
        offset = self._highest - n
        if offset >= REPLAY_WINDOW:
            raise ReplayRejected(n, duplicate=False)
        if (self._seen >> offset) & 1:
            raise ReplayRejected(n, duplicate=True)

    def _mark(self, n: int) -> None:
        if n > self._highest:
            shift = n - self._highest
            # A jump past the window forgets it at once: the cost never grows with the jump.
            if shift >= REPLAY_WINDOW:
                self._seen = 1
            else:
                self._seen = ((self._seen << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self._highest = n
        else:
            self._seen |= 1 << (self._highest - n)
