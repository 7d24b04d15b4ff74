"""Peer sessions, the node's side: the HELLO handshake, and with keys the Noise one.

A session is (our incarnation, the peer's incarnation); ``docs/protocol.rst`` says what sets
one up, what ends one, and what a message from outside the current session gets. This mixin
is the part of :class:`socketeer.tunnel.node.Node` that does it: it greets peers, answers and
starts handshakes, opens frames sealed in a session (``wire.sessionframe``, with the keys of
``tunnel.sessions``), and, when a session with a new incarnation of a peer comes up, resets
the old session's streams and sends what waited for the new one. Everything it touches is the
node's (``_send``, the peer table, the streams), so it lives on the node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from socketeer.config.defaults import WINDOW_RANGE
from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.stream import Phase
from socketeer.wire.envelope import (
    EnvelopeError,
    MsgType,
    decode_params,
    encode_params,
)
from socketeer.wire.noise import NoiseError
from socketeer.wire.sessionframe import SessionFrame, open_session_frame

if TYPE_CHECKING:
    from socketeer.wire.envelope import Envelope

__all__ = [
    "HANDSHAKES",
    "HELLO_INTERVAL",
    "MAX_HANDSHAKES_PER_SECOND",
    "MIN_PEER_WINDOW",
    "PeerSessions",
    "SESSION_RESET_INTERVAL",
]

#: The smallest window a peer may announce (a smaller one is refused as malformed).
MIN_PEER_WINDOW = 1024
#: Handshakes a node starts per second, at most (with keys): a bound on the work a flood
#: of forged HELLOs can cause.
MAX_HANDSHAKES_PER_SECOND = 64
#: Seconds between HELLOs to one peer that has not answered.
HELLO_INTERVAL = 1.0
#: A SESSION_RESET goes to one stale (peer, incarnation) at most once per this many seconds.
SESSION_RESET_INTERVAL = 1.0
#: Node messages that set up a keyed session: sealed with the codekey (if any), never in one.
HANDSHAKES = frozenset({MsgType.HANDSHAKE, MsgType.HANDSHAKE_OK})


class PeerSessions:
    """The session handling of a :class:`~socketeer.tunnel.node.Node` (a mixin)."""

    # -- sessions ------------------------------------------------------------------------

    def _hello_body(self) -> bytes:
        return encode_params({"w": self.window})

    def _hello(self, peer: str) -> None:
        """Ask ``peer`` for a handshake (at most once per HELLO_INTERVAL)."""
        if self._link is not None and self.peers.hello_due(
            peer, self.clock.seconds(), HELLO_INTERVAL
        ):
            self._send(MsgType.HELLO, peer, "", 0, self._hello_body())

    def _peer_window(self, env: Envelope) -> int | None:
        return self._window_in(env.body)

    def _on_hello(self, env: Envelope, *, answer: bool) -> None:
        """A HELLO (``answer``: reply HELLO_OK) or a HELLO_OK from ``env.source``."""
        window = self._peer_window(env)
        if window is None:
            self.stats.malformed += 1
            return
        if self.peers.retired(env.source, env.incarnation):
            self.stats.stale_session += 1  # a late HELLO of a dead incarnation
            return
        if self.keys is not None:
            # With keys a HELLO only asks for a handshake: we start it (the peer answers);
            # a HELLO_OK counts only sealed in the session (``_session_frame``).
            if answer:
                self._initiate(env.source, env.incarnation)
            return
        if answer:
            self._send(MsgType.HELLO_OK, env.source, "", 0, self._hello_body(), env.incarnation)
            # Heard since our channel came up, so it names the peer's current incarnation;
            # our HELLO_OK reaches the peer before anything we send in the session.
            self._session_up(env.source, env.incarnation, window, confirmed=True, resync=True)
        elif env.peer_incarnation == self.incarnation:
            self._session_up(env.source, env.incarnation, window, confirmed=True)

    def _session_up(
        self, peer: str, incarnation: str, window: int, *, confirmed: bool, resync: bool = False
    ) -> None:
        """A handshake with ``peer`` (``incarnation``): end an older session's streams,
        send what waited for this one, and resynchronise the others: when the session was
        not confirmed since our channel came up, or (``resync``) when the peer greeted us,
        having just come on its channel (it may have missed what we sent)."""
        was_confirmed = self.peers.confirmed(peer) and not resync
        replaced = self.peers.set_session(
            peer, incarnation, window, self.clock.seconds(), confirmed=confirmed
        )
        if self.keys is not None:
            self.keys.keep_only(peer, incarnation)
        if replaced:
            self._end_session(peer, replaced, f"node {peer} restarted")
        if not (self.peers.confirmed(peer) and self._link is not None):
            return
        session_window = self.stream_window(peer)
        for stream in self._streams.of_peer(peer):
            if not stream.peer_incarnation:
                stream.start_session(incarnation, session_window)
                waiting = self._waiting.pop(stream.key, None)
                if waiting is not None and waiting.active():
                    waiting.cancel()
                if stream.retry_timer is None and stream.phase is Phase.OPENING:
                    self._schedule_retry(stream, self._first_retry(peer))
            elif not was_confirmed and stream.peer_incarnation == incarnation:
                stream.resync()
        for key, body in list(self._resolve_bodies.items()):
            if key[0] != peer:
                continue
            waiting = self._waiting.pop(key, None)
            if waiting is not None:
                if waiting.active():
                    waiting.cancel()
                self._send(MsgType.RESOLVE, peer, key[1], 0, body, incarnation)
                self._schedule_resolve_retry(key, self._first_retry(peer))
            elif not was_confirmed:
                self._send(MsgType.RESOLVE, peer, key[1], 0, body, incarnation)

    def _end_session(self, peer: str, incarnation: str, why: str) -> None:
        """Reset every stream of our session with ``peer``'s ``incarnation``: they died with
        it (or it never knew them); none is resent to another incarnation."""
        stale = [s for s in self._streams.of_peer(peer) if s.peer_incarnation == incarnation]
        if stale:
            self.log.info("{why}: resetting {n} streams", why=why, n=len(stale))
            self.stats.session_resets += len(stale)
        for stream in stale:
            if stream.phase is Phase.OPENING:
                stream.fail(OpenFailure.NO_SINK, why, notify_peer=False)
            else:
                stream.abort()

    def _session_reset(self, env: Envelope) -> None:
        """The peer has no session with this incarnation of ours (it restarted, or forgot us).

        With keys it is not taken (anyone could send it); a HELLO does that job there."""
        if env.peer_incarnation != self.incarnation or self.keys is not None:
            return
        session = self.peers.session(env.source)
        # It answers a message addressed to one incarnation of the peer (``was``): only if
        # that is the one our session is with does it end it (a late answer about an
        # incarnation we have already replaced must not end the new session).
        try:
            was = env.params().get("was", "")
        except EnvelopeError:
            return
        if not session or was != session:
            return
        self.peers.end_session(env.source)
        self._end_session(env.source, session, f"node {env.source} lost our session")
        self._hello(env.source)

    # -- keyed sessions (a codekey or node identities) --------------------------------------

    def _initiate(self, peer: str, incarnation: str) -> None:
        """Start a Noise handshake with ``peer``'s ``incarnation`` (at most once a second)."""
        key = (peer, incarnation)
        now = self.clock.seconds()
        last = self._initiated.get(key)
        if last is not None and now - last < HELLO_INTERVAL:
            return
        # And a bounded number a second in all, whatever incarnations HELLOs claim: a flood
        # of forged ones with made-up incarnations costs a bounded amount of work. (Not per
        # peer name: an impostor's HELLOs under a name must not starve the real node's.)
        if now - self._handshake_second >= 1.0:
            self._handshake_second, self._handshakes_started = now, 0
        if self._handshakes_started >= MAX_HANDSHAKES_PER_SECOND:
            self.stats.handshake_limit += 1
            return
        self._handshakes_started += 1
        self._initiated[key] = now
        self._initiated.move_to_end(key)
        if len(self._initiated) > 1024:
            self._initiated.popitem(last=False)
        try:
            message = self.keys.initiate(peer, incarnation, self._hello_body())
        except NoiseError as e:
            self._key_refusal(peer, e)
            return
        self._send(MsgType.HANDSHAKE, peer, "", 0, message, incarnation)

    def _on_handshake(self, env: Envelope) -> None:
        """A peer's first handshake message: answer it (the session waits for confirmation:
        a frame sealed in it, which only the real initiator can make)."""
        if self.keys is None or env.peer_incarnation != self.incarnation:
            self.stats.stale_session += 1
            return
        try:
            answer, _ = self.keys.respond(env.source, env.incarnation, env.body, self._hello_body())
        except NoiseError as e:
            self._key_refusal(env.source, e)
            return
        self._send(MsgType.HANDSHAKE_OK, env.source, "", 0, answer, env.incarnation)

    def _on_handshake_ok(self, env: Envelope) -> None:
        """The answer to our handshake: the session is up here; a HELLO_OK sealed in it
        confirms it to the peer."""
        if self.keys is None or env.peer_incarnation != self.incarnation:
            self.stats.stale_session += 1
            return
        try:
            keys = self.keys.complete(env.source, env.incarnation, env.body)
        except NoiseError as e:
            self._key_refusal(env.source, e)
            return
        if keys is None:
            return  # not ours (an old or repeated answer)
        window = self._window_in(keys.payload)
        if window is None:
            self.stats.malformed += 1
            return
        self._send(MsgType.HELLO_OK, env.source, "", 0, self._hello_body(), env.incarnation)
        self._session_up(env.source, env.incarnation, window, confirmed=True, resync=True)

    def _session_frame(self, clear: SessionFrame, body: bytes) -> None:
        """A frame sealed in a session: open it with that session's keys, or refuse it."""
        stats = self.stats
        if self.keys is None:
            stats.malformed += 1
            return
        if (
            clear.cluster != self.cluster
            or clear.destination != self.name
            or clear.source == self.name
        ):
            stats.foreign += 1
            return
        keys = None
        if clear.peer_incarnation == self.incarnation:
            keys = self.keys.receiver(clear.source, clear.incarnation, clear.sid)
        if keys is None:
            stats.stale_session += 1
            self._tell_stale(clear.source, clear.incarnation, clear.peer_incarnation)
            return
        try:
            env = open_session_frame(self.topic, clear, body, keys.transport)
        except NoiseError as e:
            self._key_refusal(clear.source, e)
            return
        except EnvelopeError:
            stats.malformed += 1
            return
        peer = env.source
        if self.peers.session(peer) != env.incarnation or not self.peers.confirmed(peer):
            window = self._window_in(keys.payload)
            if window is not None:  # the first frame of a session we answered: it is real
                self._session_up(peer, env.incarnation, window, confirmed=True)
        if env.type is not MsgType.HELLO_OK:
            self.envelope_received(env)
        else:
            self._heard(env)

    def _window_in(self, body: bytes) -> int | None:
        try:
            window = int(decode_params(body).get("w", ""))
        except (ValueError, EnvelopeError):
            return None
        # Not the configuration's range: an embedding (or a test) may run small windows.
        return window if MIN_PEER_WINDOW <= window <= WINDOW_RANGE[1] else None

    def _key_refusal(self, peer: str, error: NoiseError) -> None:
        """Count (and, rate-limited by the sealer's rule, log) a refused handshake or frame."""
        stats = self.stats
        stats.seal_refused[error.reason] += 1
        count = stats.seal_refused[error.reason]
        if count <= 10 or count % 1000 == 0:
            self.log.warn(
                "refused a session message from node {peer} ({reason}; {count} so far): {problem}",
                peer=peer,
                reason=error.reason,
                count=count,
                problem=str(error),
            )

    def _tell_stale(
        self, source: str, incarnation: str, addressed: str, kind: MsgType | None = None
    ) -> None:
        """Answer a message of a session we do not have (rate-limited): SESSION_RESET, or
        with keys (where an unauthenticated reset would be a forgery's tool) a HELLO, which
        makes the peer start a handshake with the incarnation we are now."""
        if kind in (MsgType.RESET, MsgType.RESOLVED):
            return
        key = (source, incarnation)
        now = self.clock.seconds()
        told = self._told_stale.get(key)
        if told is not None and now - told < SESSION_RESET_INTERVAL:
            return
        self._told_stale[key] = now
        self._told_stale.move_to_end(key)
        if len(self._told_stale) > 1024:
            self._told_stale.popitem(last=False)
        if self.keys is not None:
            self._hello(source)
        else:
            body = encode_params({"was": addressed})
            self._send(MsgType.SESSION_RESET, source, "", 0, body, incarnation)
