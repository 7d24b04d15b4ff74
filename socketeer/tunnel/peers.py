"""The peer table: which nodes a node talks to, when each was last heard, restarts, round trips.

Pure bookkeeping with the time passed in; the node acts on what it says (pings a quiet peer,
expires the streams of a silent one, resets the streams of a restarted one).

Liveness: a peer that has been quiet for ``ping_interval`` seconds is pinged; one silent for
more than ``grace`` seconds is gone, and the streams it carried end. A peer whose messages
come with a new incarnation id has restarted: the streams it knew died with its old process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from socketeer.config.defaults import DEFAULT_GRACE_PERIOD, DEFAULT_PING_INTERVAL
from socketeer.tunnel.snapshot import PeerState

__all__ = ["MAX_RTT", "Liveness", "PeerTable"]

#: A round trip longer than this (or negative) is not our ping's timestamp coming back.
MAX_RTT = 3600.0


class Liveness(Enum):
    """What to do about a peer that carries streams."""

    ALIVE = "alive"
    PING = "ping"  # quiet for a ping interval: ask it for a pong
    GONE = "gone"  # silent for longer than the grace period: end its streams


@dataclass
class _Peer:
    heard: float
    incarnation: str
    pong: float | None = None
    rtt: float | None = None
    #: Silence is not counted before this (we could not hear anyone while disconnected).
    since: float = 0.0


class PeerTable:
    """Every peer node heard from (or about to be talked to), by name."""

    def __init__(
        self, *, grace: float = DEFAULT_GRACE_PERIOD, ping_interval: float = DEFAULT_PING_INTERVAL
    ) -> None:
        self.grace = grace
        self.ping_interval = ping_interval
        self._peers: dict[str, _Peer] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._peers

    def __iter__(self) -> Iterator[str]:
        return iter(self._peers)

    def __len__(self) -> int:
        return len(self._peers)

    def heard(self, name: str, incarnation: str, now: float) -> bool:
        """A message from ``name`` arrived; True when it shows the peer restarted.

        A restart is a new incarnation id where another one was known before.
        """
        peer = self._peers.get(name)
        if peer is None:
            self._peers[name] = _Peer(now, incarnation)
            return False
        previous, peer.heard, peer.incarnation = peer.incarnation, now, incarnation
        return bool(previous and incarnation and previous != incarnation)

    def expect(self, name: str, now: float) -> None:
        """We are about to talk to ``name``: its silence counts from now if it is new."""
        if name not in self._peers:
            self._peers[name] = _Peer(now, "")

    def incarnation(self, name: str) -> str:
        """The peer's incarnation id ("" if unknown)."""
        peer = self._peers.get(name)
        return "" if peer is None else peer.incarnation

    def silence(self, name: str, now: float) -> float:
        """Seconds since ``name`` was last heard (0 for a peer never met)."""
        peer = self._peers.get(name)
        return 0.0 if peer is None else now - max(peer.heard, peer.since)

    def reset_silence(self, now: float) -> None:
        """Our channel is back: count every peer's silence from ``now``, not from before the
        outage, so that streams just resent are not expired before the peer can answer."""
        for peer in self._peers.values():
            peer.since = now

    def liveness(self, name: str, now: float) -> Liveness:
        silence = self.silence(name, now)
        if silence > self.grace:
            return Liveness.GONE
        if silence >= self.ping_interval:
            return Liveness.PING
        return Liveness.ALIVE

    def pong(self, name: str, pinged: float, now: float) -> None:
        """A PONG from ``name`` echoed our ping's time ``pinged``: note the round trip."""
        rtt = now - pinged
        peer = self._peers.get(name)
        if peer is not None and 0 <= rtt < MAX_RTT:
            peer.pong, peer.rtt = now, rtt

    def rtt(self, name: str) -> float | None:
        """The last round trip measured to ``name``, if any."""
        peer = self._peers.get(name)
        return None if peer is None else peer.rtt

    def states(self) -> tuple[PeerState, ...]:
        """Every peer, by name."""
        return tuple(
            PeerState(name, p.incarnation, p.heard, p.pong, p.rtt)
            for name, p in sorted(self._peers.items())
        )
