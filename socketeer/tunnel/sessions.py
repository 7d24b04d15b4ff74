"""A node's session keys: Noise handshakes with peer incarnations, and their transports.

With a codekey or node identities, a peer session (``docs/protocol.rst``) is set up by an
authenticated key exchange (:mod:`socketeer.wire.noise`) instead of a plain HELLO_OK, and
every message of the session is sealed with its keys (:mod:`socketeer.wire.sessionframe`).
This module keeps the handshakes in progress and the transports they gave, per peer node and
incarnation; the node decides what a finished handshake means for its streams.

A peer may hold a few transports at once: crossing handshakes (each side initiated), and a
new one replacing an older one while frames sealed with the older are still in flight. The
newest confirmed transport of the peer's current incarnation seals what we send; any of them
opens what we receive (the frame names its session). A responder's transport is not
confirmed until a frame sealed with it has opened: its first message alone may be a replay.

Bounded: ``MAX_TRANSPORTS`` per peer, ``MAX_PEERS`` peers, ``MAX_HANDSHAKES`` in progress.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from socketeer.wire.noise import (
    Identity,
    Prologue,
    ReplayRejected,
    SessionHandshake,
    SessionTransport,
)
from socketeer.wire.sessionframe import session_id

__all__ = ["MAX_TRANSPORTS", "Keys", "SessionKeys"]

MAX_TRANSPORTS = 4
MAX_PEERS = 4096
MAX_HANDSHAKES = 256
#: Handshakes in progress with one peer name (a flood of HELLOs under its name with made-up
#: incarnations pushes out only its own oldest ones).
MAX_HANDSHAKES_PER_PEER = 4
#: First messages remembered (by the initiator's ephemeral key) to refuse a replay of one.
MAX_SEEN_EPHEMERALS = 4096
#: Bytes of a first handshake message that are the initiator's ephemeral public key.
EPHEMERAL_SIZE = 32
#: The prologue's version: bump with any change to what a handshake binds.
PROLOGUE_VERSION = 2


@dataclass
class Keys:
    """One session's transport with one peer incarnation."""

    incarnation: str
    sid: str
    transport: SessionTransport
    #: What the peer said in its handshake message (its window).
    payload: bytes


class SessionKeys:
    """Handshakes and session transports of one node incarnation."""

    def __init__(
        self,
        topic: str,
        cluster: str,
        name: str,
        incarnation: str,
        *,
        psk: bytes | None = None,
        identity: Identity | None = None,
        peer_keys: Mapping[str, bytes] | None = None,
    ) -> None:
        if psk is None and identity is None:
            raise ValueError("session keys need a codekey, an identity, or both")
        self.topic = topic
        self.cluster = cluster
        self.name = name
        self.incarnation = incarnation
        self._psk = psk
        self._identity = identity
        self._peer_keys = peer_keys
        self._pending: OrderedDict[tuple[str, str], SessionHandshake] = OrderedDict()
        self._keys: OrderedDict[str, list[Keys]] = OrderedDict()
        self._ephemerals: OrderedDict[bytes, None] = OrderedDict()

    def __repr__(self) -> str:
        return f"<SessionKeys {self.cluster}/{self.name} {len(self._keys)} peers>"

    @property
    def authenticates_nodes(self) -> bool:
        """Node identities are configured: a session proves which node the peer is."""
        return self._identity is not None

    def _prologue(self, initiator: str, i_inc: str, responder: str, r_inc: str) -> Prologue:
        return Prologue(
            PROLOGUE_VERSION, self.topic, self.cluster, initiator, i_inc, responder, r_inc
        )

    # -- handshakes --------------------------------------------------------------------------

    def initiate(self, peer: str, incarnation: str, payload: bytes) -> bytes:
        """Start a handshake with ``peer``'s ``incarnation``: its first message.

        Raises NoiseError (UnknownPeer: ``peer`` has no key in our allowlist).
        """
        handshake = SessionHandshake.initiator(
            self._prologue(self.name, self.incarnation, peer, incarnation),
            psk=self._psk,
            identity=self._identity,
            peer_keys=self._peer_keys,
        )
        message = handshake.write_message(payload)
        key = (peer, incarnation)
        self._pending[key] = handshake
        self._pending.move_to_end(key)
        mine = [k for k in self._pending if k[0] == peer]
        for old in mine[: max(0, len(mine) - MAX_HANDSHAKES_PER_PEER)]:
            del self._pending[old]
        while len(self._pending) > MAX_HANDSHAKES:
            self._pending.popitem(last=False)
        return message

    def respond(
        self, peer: str, incarnation: str, message: bytes, payload: bytes
    ) -> tuple[bytes, bytes]:
        """Answer ``peer``'s first handshake message: (our answer, its payload).

        The transport is kept unconfirmed. Raises NoiseError if the message does not
        authenticate (another codekey, a key not allowed for ``peer``, tampering).
        """
        ephemeral = bytes(message[:EPHEMERAL_SIZE])
        if ephemeral in self._ephemerals:
            raise ReplayRejected(0, duplicate=True)  # a recorded first message, sent again
        handshake = SessionHandshake.responder(
            self._prologue(peer, incarnation, self.name, self.incarnation),
            psk=self._psk,
            identity=self._identity,
            peer_keys=self._peer_keys,
        )
        theirs = handshake.read_message(message)
        # Remembered once it authenticated (a forgery cannot fill the memory).
        self._ephemerals[ephemeral] = None
        if len(self._ephemerals) > MAX_SEEN_EPHEMERALS:
            self._ephemerals.popitem(last=False)
        answer = handshake.write_message(payload)
        self._add(peer, Keys(incarnation, "", handshake.transport(), theirs))
        return answer, theirs

    def complete(self, peer: str, incarnation: str, message: bytes) -> Keys | None:
        """The answer to our handshake with ``peer``'s ``incarnation``: the confirmed
        session's keys, or None if we started no such handshake. Raises NoiseError if the
        answer does not authenticate (the handshake stays open for the real one)."""
        key = (peer, incarnation)
        handshake = self._pending.get(key)
        if handshake is None:
            return None
        theirs = handshake.read_message(message)
        del self._pending[key]
        keys = Keys(incarnation, "", handshake.transport(), theirs)
        self._add(peer, keys)
        return keys

    def _add(self, peer: str, keys: Keys) -> None:
        keys.sid = session_id(keys.transport)
        held = self._keys.get(peer)
        if held is None:
            held = self._keys[peer] = []
            while len(self._keys) > MAX_PEERS:
                self._keys.popitem(last=False)
        held[:] = [k for k in held if k.sid != keys.sid]
        held.append(keys)
        if len(held) > MAX_TRANSPORTS:
            # Never the new one: the oldest unconfirmed other (a replayed first message, a
            # handshake that crossed ours) goes first, else the oldest.
            for i, k in enumerate(held[:-1]):
                if not k.transport.confirmed:
                    del held[i]
                    break
            else:
                del held[0]
        self._keys.move_to_end(peer)

    # -- transports --------------------------------------------------------------------------

    def sender(self, peer: str, incarnation: str) -> Keys | None:
        """The newest confirmed session with ``peer``'s ``incarnation``, to seal with."""
        for keys in reversed(self._keys.get(peer, ())):
            if keys.incarnation == incarnation and keys.transport.confirmed:
                return keys
        return None

    def receiver(self, peer: str, incarnation: str, sid: str) -> Keys | None:
        """The session a frame names, to open it with."""
        for keys in self._keys.get(peer, ()):
            if keys.sid == sid and keys.incarnation == incarnation:
                return keys
        return None

    def keep_only(self, peer: str, incarnation: str) -> None:
        """``peer`` is now ``incarnation``: forget the keys of its other incarnations."""
        held = self._keys.get(peer)
        if held is not None:
            held[:] = [k for k in held if k.incarnation == incarnation]
        for key in [k for k in self._pending if k[0] == peer and k[1] != incarnation]:
            del self._pending[key]

    def peers(self) -> int:
        return len(self._keys)
